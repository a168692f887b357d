"""The hypervisor boundary in real QEMU (docs/xen.md "The hypervisor boundary"):
under pv=xen the kernel cannot write the hypervisor's state. The test-only knob
poke=ADDR (docs/guest-contract.md) makes the kernel write one word at ADDR (the
value it holds) after paging_init_done. A word of the hypervisor's
(hyp_mmu_update_count, from the ELF) must fault with a write to a present page;
the same poke natively, or at an ordinary kernel variable under pv=xen, must not.
"""
from __future__ import annotations

import pytest

from .test_guest_boot import BAD_CMDLINE, EXCEPTION, PASS, assert_exit, boot, cpu, elf_function, guest_build
from .test_guest_xen import symbol, violations, xen_boot

pytestmark = pytest.mark.qemu
__all__ = ["guest_build"]

PF_PRESENT, PF_WRITE = 1, 2
VARIANTS = ("nopae-patched", "pae-patched")


@pytest.mark.parametrize("name", ("hyp_mmu_update_count", "hyp_violations", "hyp_idt"))
@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_write_to_hypervisor_state_faults(tmp_path, variant, name):
    va = symbol(variant, name)
    assert symbol(variant, "__hyp_start") <= va < symbol(variant, "__hyp_end")
    b = xen_boot(tmp_path, variant, append=f"poke={va:#x}")
    assert_exit(b, EXCEPTION, "exit code=2 exception")
    exc = b.event("exception")
    assert exc["vector"] == "14", b.context()
    assert int(exc["cr2"], 0) == va, b.context()
    assert int(exc["error"], 0) == PF_PRESENT | PF_WRITE, b.context()
    assert int(exc["eip"], 0) in elf_function(variant, "poke_probe"), b.context()
    assert "faulted=0" not in b.event("poke probe"), b.context()
    # The hypervisor's record is intact and still reported at the exit.
    assert violations(b) == (0, []), b.context()


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_same_write_natively_does_not_fault(tmp_path, variant):
    va = symbol(variant, "hyp_mmu_update_count")
    b = boot(tmp_path, variant, cpu(pse=True, pge=True), append=f"poke={va:#x}")
    assert_exit(b, PASS, "exit code=0 pass")
    assert f"poke probe va={va:#010x} faulted=0" in b.lines, b.context()


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_write_to_a_kernel_variable_under_xen_does_not_fault(tmp_path, variant):
    va = symbol(variant, "max_pfn")
    b = xen_boot(tmp_path, variant, append=f"poke={va:#x}")
    assert_exit(b, PASS, "exit code=0 pass")
    assert f"poke probe va={va:#010x} faulted=0" in b.lines, b.context()
    assert violations(b) == (0, []), b.context()


def test_poke_needs_an_aligned_address(tmp_path):
    b = boot(tmp_path, "nopae-patched", append="poke=0xc0100001")
    assert_exit(b, BAD_CMDLINE, "exit code=4 bad-cmdline")
    assert b.event("cmdline error")["word"] == "poke=0xc0100001", b.context()
