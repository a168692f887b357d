"""The hypervisor stage and the kernel link only through the boundary
(docs/xen.md "The hypervisor boundary"): the built hyp.o relocatable exports its
entry and nothing else, refers to nothing of the kernel but the domain's entry
(and kernel.lds's layout symbols for its own pages), and no kernel object refers
to a symbol the hypervisor's objects define. Read from the build's objects with
pyelftools, so a future direct call fails here."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "guest"
VARIANTS = ("nopae-patched", "pae-patched", "nopae-prepatch", "pae-prepatch")
HYP_ENTRY = {"hyp_start_domain"}
HYP_IMPORTS = {"xen_start_kernel", "__hyp_start", "__hyp_end"}
# What the harness reads of the hypervisor by name (docs/xen.md "What the harness reads").
HARNESS_READS = ("hyp_mmu_update_count", "hyp_pin_count", "hyp_violations",
                 "hyp_violation_count", "hyp_domain")


@pytest.fixture(scope="module", autouse=True)
def built():
    subprocess.run(["make", "-s", "-C", str(GUEST)], check=True)


def symbols(path: Path) -> tuple[set[str], set[str], dict[str, str]]:
    """(global definitions, undefined references, binding by defined name)."""
    defined, undefined, binding = set(), set(), {}
    with open(path, "rb") as f:
        for sym in ELFFile(f).get_section_by_name(".symtab").iter_symbols():
            info = sym["st_info"]
            if not sym.name or info["type"] in ("STT_SECTION", "STT_FILE"):
                continue
            if sym["st_shndx"] == "SHN_UNDEF":
                undefined.add(sym.name)
                continue
            binding.setdefault(sym.name, info["bind"])
            if info["bind"] != "STB_LOCAL":
                defined.add(sym.name)
    return defined, undefined, binding


def kernel_objects(build: Path) -> list[Path]:
    """The kernel's objects: everything but hyp.o and build/VARIANT/hyp/ (the
    hypervisor's objects and its lib copy)."""
    return [p for p in build.rglob("*.o")
            if p.name != "hyp.o" and p.relative_to(build).parts[0] != "hyp"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_hyp_relocatable_exports_only_its_entry(variant):
    build = GUEST / "build" / variant
    defined, undefined, binding = symbols(build / "hyp.o")
    assert defined == HYP_ENTRY
    assert undefined == HYP_IMPORTS
    for name in HARNESS_READS:  # still there for the harness, but local
        assert binding.get(name) == "STB_LOCAL", name


@pytest.mark.parametrize("variant", VARIANTS)
def test_kernel_objects_reference_no_hypervisor_symbol(variant):
    build = GUEST / "build" / variant
    hyp_defined = set()
    for p in (build / "hyp").glob("*.o"):
        hyp_defined |= symbols(p)[0]
    assert "hyp_mmu_update" in hyp_defined and "hyp_start_domain" in hyp_defined
    used = {}
    for p in kernel_objects(build):
        for name in symbols(p)[1] & hyp_defined - HYP_ENTRY:
            used.setdefault(name, []).append(p.name)
    assert used == {}, f"kernel objects calling into the hypervisor directly: {used}"
    # ... and the hypervisor's objects call nothing of the kernel's but its entry.
    kernel_defined = set()
    for p in kernel_objects(build):
        kernel_defined |= symbols(p)[0]
    lib = {"printk", "guest_exit", "guest_bug", "memset", "memcpy", "memcmp", "strcmp",
           "strlen", "strncpy", "serial_putc", "serial_init", "guest_exit_notifier"}
    for p in (build / "hyp").glob("*.o"):
        wrong = symbols(p)[1] & kernel_defined - HYP_IMPORTS - lib
        assert wrong == set(), f"{p.name} uses kernel symbols {wrong}"


@pytest.mark.parametrize("variant", VARIANTS)
def test_final_image_keeps_the_hypervisor_state_in_its_pages(variant):
    """Every data object of hyp.o lies in [__hyp_start, __hyp_end), page aligned,
    and the kernel's own guest_exit is the only symbol of that name."""
    with open(GUEST / "build" / variant / "kernel.elf", "rb") as f:
        elf = ELFFile(f)
        syms = {}
        for s in elf.get_section_by_name(".symtab").iter_symbols():
            syms.setdefault(s.name, []).append(s)
        lo, hi = syms["__hyp_start"][0]["st_value"], syms["__hyp_end"][0]["st_value"]
        assert lo % 4096 == 0 and hi % 4096 == 0 and lo < hi
        assert elf.get_section_by_name(".hyp")["sh_addr"] == lo
        for name in HARNESS_READS + ("hyp_idt",):
            (s,) = syms[name]
            assert lo <= s["st_value"] < hi and s["st_info"]["bind"] == "STB_LOCAL", name
        # One guest_exit, printk, ... in the image: gdb's `*guest_exit` (the harness's
        # exit stop point) must not resolve to the hypervisor's private copy.
        for name in ("guest_exit", "printk", "memcpy"):
            assert [s["st_info"]["bind"] for s in syms[name]] == ["STB_GLOBAL"], name
            assert [s["st_info"]["bind"] for s in syms[f"hyp_lib_{name}"]] == ["STB_LOCAL"], name
