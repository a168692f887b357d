"""The guest on its own, in real QEMU (TCG), without gdb.

Each case boots one guest variant with a given CPU, memory size and command
line, waits for it to leave through isa-debug-exit, and checks the exit status
and the serial-log lines that prove which path the guest took (the CPU
features it saw, NX, lowmem size, how many page-table pages it allocated).

Expected values come from the facts (kernel-facts.md, docs/guest-contract.md)
and from the QEMU command line, never from the guest's own output. The QEMU
command line and the process hygiene are harness/qemu.py's, as in every run.
"""
from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from harness import qemu

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "guest"
VARIANTS = ("nopae-patched", "nopae-prepatch", "pae-patched", "pae-prepatch")
NOPAE = VARIANTS[:2]
PAE = VARIANTS[2:]

# A hard limit against a hung guest, generous for a loaded TCG host. It is not
# a speed check: boot times are measured by guest/bench_boot.py.
BOOT_TIMEOUT = float(os.environ.get("PTHARNESS_BOOT_TIMEOUT", "60"))

# QEMU exit status = (guest code << 1) | 1 (docs/guest-contract.md).
PASS, SELFCHECK_FAILED, EXCEPTION, UNSUPPORTED_CPU, BAD_CMDLINE = 1, 3, 5, 7, 9

MiB = 1 << 20
MAXMEM_PFN = 896 * MiB >> 12  # 0x38000
CR4_PSE, CR4_PAE, CR4_PGE = 1 << 4, 1 << 5, 1 << 7
EFER_NXE = 1 << 11


def onoff(flag: bool) -> str:
    return "on" if flag else "off"


def cpu(pse=True, pge=True, pae=True, nx=True) -> dict[str, bool]:
    """QEMU -cpu feature flags on top of qemu32."""
    return {"pse": pse, "pge": pge, "pae": pae, "nx": nx}


@dataclass
class Boot:
    variant: str
    command: list[str]
    status: int
    log: str

    @property
    def lines(self) -> list[str]:
        return self.log.splitlines()

    def event(self, name: str) -> dict[str, str]:
        """key=value words of the first log line that starts with `name`."""
        words = name.split()
        for line in self.lines:
            parts = shlex.split(line)
            if parts[: len(words)] == words:
                return dict(p.split("=", 1) for p in parts[len(words):] if "=" in p)
        raise AssertionError(f"no '{name}' line in the serial log\n{self.context()}")

    def number(self, event: str, key: str) -> int:
        return int(self.event(event)[key], 0)

    def context(self) -> str:
        return (f"variant {self.variant}, QEMU status {self.status}\n"
                f"reproduce: {shlex.join(self.command)}\n--- serial log ---\n{self.log}")


def boot(tmp_path: Path, variant: str, cpu_flags: dict[str, bool] | None = None,
         memory: str = "128M", append: str = "", kernel: Path | None = None) -> Boot:
    """kernel: another build of the variant (a mutant's); default guest/build's."""
    serial = tmp_path / f"{variant}.serial.log"
    machine = qemu.Machine(kernel=kernel or GUEST / "build" / variant / "kernel.elf", memory=memory,
                           cpu=cpu_flags or cpu(), append=append)
    command = machine.arguments(serial, gdb_option=None)
    proc = qemu.spawn(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                      stderr=subprocess.STDOUT)
    try:
        output, _ = proc.communicate(timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        qemu.stop(proc)
        log = serial.read_text(errors="replace") if serial.exists() else ""
        pytest.fail(f"QEMU still running after {BOOT_TIMEOUT:.0f}s, killed\n"
                    f"reproduce: {shlex.join(command)}\n--- serial log ---\n{log}")
    finally:
        qemu.stop(proc)
    log = serial.read_text(errors="replace") if serial.exists() else ""
    if output.strip():
        log += f"--- QEMU output ---\n{output.decode(errors='replace')}"
    return Boot(variant, command, proc.returncode, log)


@pytest.fixture(scope="session", autouse=True)
def guest_build():
    """Build every variant once (make is a no-op when up to date). A lock keeps
    xdist workers from building the same objects at the same time."""
    if shutil.which("qemu-system-i386") is None:
        pytest.fail("qemu-system-i386 is not on PATH (scripts/bootstrap installs it); "
                    "deselect these tests with -m 'not qemu'")
    (GUEST / "build").mkdir(exist_ok=True)
    with open(GUEST / "build" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "-C", str(GUEST), f"-j{os.cpu_count() or 1}"], check=True)


def elf_build_id(variant: str) -> str:
    with open(GUEST / "build" / variant / "kernel.elf", "rb") as f:
        for note in ELFFile(f).get_section_by_name(".note.gnu.build-id").iter_notes():
            return note["n_desc"]
    raise AssertionError("no build id note")


def elf_function(variant: str, name: str) -> range:
    with open(GUEST / "build" / variant / "kernel.elf", "rb") as f:
        sym = ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]
        return range(sym["st_value"], sym["st_value"] + sym["st_size"])


def assert_exit(b: Boot, status: int, last_line: str) -> None:
    assert b.status == status, f"expected QEMU status {status}, got {b.status}\n{b.context()}"
    assert b.lines and b.lines[-1] == last_line, \
        f"last log line should be '{last_line}'\n{b.context()}"


def assert_passed(b: Boot) -> None:
    assert_exit(b, PASS, "exit code=0 pass")
    assert "selfcheck ok" in b.lines, b.context()
    banner = b.event("guest")
    assert banner["variant"] == b.variant, b.context()
    assert banner["build_id"] == elf_build_id(b.variant), b.context()


def expected_lowmem(b: Boot, total: int, maxmem_pfn: int = MAXMEM_PFN) -> tuple[int, int]:
    """max_pfn from the loader's mem_upper (KiB above 1 MiB), max_low_pfn capped at MAXMEM.
    SeaBIOS keeps a little at the top of RAM, so mem_upper is within 1 MiB below the size."""
    mem_upper_kb = b.number("mem", "mem_upper_kb")
    assert total - 2 * MiB < MiB + mem_upper_kb * 1024 <= total, \
        f"mem_upper_kb={mem_upper_kb} does not fit -m {total // MiB}M\n{b.context()}"
    max_pfn = (MiB + mem_upper_kb * 1024) >> 12
    return max_pfn, min(max_pfn, maxmem_pfn)


def expected_alloc_pt(b: Boot, pae: bool, pse: bool, max_low_pfn: int) -> int:
    """Page tables pagetable_init must allocate (kernel-facts.md section 5): one per
    lowmem pmd without PSE (non-PAE reuses head.S's pg0 pages), plus one for the
    fixmap and one for the pkmap pmd."""
    if pse:
        lowmem_tables = 0
    elif pae:
        lowmem_tables = -(-max_low_pfn // 512)
    else:
        pdes = -(-max_low_pfn // 1024)
        lowmem_tables = pdes - min(pdes, b.number("boot", "pg0_pages"))
    return lowmem_tables + 2


# --- CPU features select the paths -------------------------------------------------

FEATURE_CASES = (
    [pytest.param(v, dict(pse=pse, pge=pge), id=f"{v}-pse-{onoff(pse)}-pge-{onoff(pge)}")
     for v in NOPAE for pse in (True, False) for pge in (True, False)]
    + [pytest.param(v, dict(pse=pse, nx=nx), id=f"{v}-pse-{onoff(pse)}-nx-{onoff(nx)}")
       for v in PAE for pse in (True, False) for nx in (True, False)]
)


@pytest.mark.parametrize("variant,features", FEATURE_CASES)
def test_cpu_features_select_paths(tmp_path, variant, features):
    want = dict(pse=True, pge=True, pae=True, nx=True) | features
    pae_build = variant in PAE
    b = boot(tmp_path, variant, cpu(**want))
    assert_passed(b)

    seen = b.event("cpu")
    for flag in ("pse", "pge", "pae", "nx"):
        assert seen[flag] == str(int(want[flag])), \
            f"QEMU had {flag}={onoff(want[flag])}, guest saw {flag}={seen[flag]}\n{b.context()}"

    done = b.event("paging_init done")
    cr4, efer = int(done["cr4"], 0), int(done["efer"], 0)
    assert bool(cr4 & CR4_PSE) == want["pse"], f"cr4={cr4:#x}\n{b.context()}"
    assert bool(cr4 & CR4_PGE) == want["pge"], f"cr4={cr4:#x}\n{b.context()}"
    assert bool(cr4 & CR4_PAE) == pae_build, f"cr4={cr4:#x}\n{b.context()}"
    nx_on = pae_build and want["nx"]
    assert b.event("nx")["enabled"] == str(int(nx_on)), b.context()
    assert bool(efer & EFER_NXE) == nx_on, f"efer={efer:#x}\n{b.context()}"

    _, max_low_pfn = expected_lowmem(b, 128 * MiB)
    assert int(done["alloc_pd"]) == 1, b.context()  # swapper_pg_dir / the kernel pmd
    assert int(done["alloc_pt"]) == expected_alloc_pt(b, pae_build, want["pse"], max_low_pfn), \
        b.context()


# --- Memory sizes --------------------------------------------------------------------

MEMORY_CASES = [
    pytest.param(v, size, pse, id=f"{v}-{size}-pse-{onoff(pse)}")
    for v in VARIANTS for size in ("16M", "128M", "896M", "1G", "3G") for pse in (True, False)
]


@pytest.mark.parametrize("variant,size,pse", MEMORY_CASES)
def test_memory_sizes(tmp_path, variant, size, pse):
    total = int(size[:-1]) * (1 << 30 if size.endswith("G") else MiB)
    b = boot(tmp_path, variant, cpu(pse=pse), memory=size)
    assert_passed(b)
    max_pfn, max_low_pfn = expected_lowmem(b, total)
    mem = b.event("mem")
    assert int(mem["max_pfn"], 0) == max_pfn, b.context()
    assert int(mem["max_low_pfn"], 0) == max_low_pfn, b.context()
    assert int(mem["highmem_pages"]) == max_pfn - max_low_pfn, b.context()
    assert int(b.event("selfcheck lowmem")["pages"]) == max_low_pfn, b.context()
    assert b.number("paging_init done", "alloc_pt") == \
        expected_alloc_pt(b, variant in PAE, pse, max_low_pfn), b.context()


@pytest.mark.parametrize("variant", VARIANTS)
def test_mem_knob_caps_memory(tmp_path, variant):
    b = boot(tmp_path, variant, memory="128M", append="mem=64M")
    assert_passed(b)
    assert b.number("mem", "max_pfn") == 64 * MiB >> 12, b.context()
    assert b.number("mem", "max_low_pfn") == 64 * MiB >> 12, b.context()


# --- reservetop= -----------------------------------------------------------------------

# FIXADDR_TOP = -64M - 4K; MAXMEM = 896M - 64M. PKMAP_BASE by kernel-facts.md section 3.
RESERVETOP_PKMAP = {"nopae": 0xFB800000, "pae": 0xFBC00000}
# Pre-patch page_table_range_init(vaddr, 0) also covers every pmd from the fixmap's
# end to 4 GiB (kernel-facts.md section 6B): 16 more pte pages non-PAE, 32 PAE.
PREPATCH_EXTRA_TABLES = {"nopae": 16, "pae": 32}


@pytest.mark.parametrize("variant", VARIANTS)
def test_reservetop_lowers_fixmap_and_lowmem(tmp_path, variant):
    mode = variant.split("-")[0]
    b = boot(tmp_path, variant, cpu(pse=True), memory="1G", append="reservetop=64M")
    assert_passed(b)
    fixmap = b.event("fixmap")
    assert int(fixmap["fixaddr_top"], 0) == 0xFBFFF000, b.context()
    assert int(fixmap["vmalloc_reserve"], 0) == (128 + 64) * MiB, b.context()
    assert int(fixmap["pkmap_base"], 0) == RESERVETOP_PKMAP[mode], b.context()
    assert b.number("mem", "max_low_pfn") == 832 * MiB >> 12, b.context()
    assert b.number("selfcheck fixmap", "end") == 0xFC000000, b.context()
    extra = PREPATCH_EXTRA_TABLES[mode] if variant.endswith("prepatch") else 0
    assert b.number("paging_init done", "alloc_pt") == 2 + extra, b.context()


# --- NX --------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", PAE)
def test_noexec_off_keeps_nx_disabled(tmp_path, variant):
    b = boot(tmp_path, variant, cpu(nx=True), append="noexec=off")
    assert_passed(b)
    assert b.event("cpu")["nx"] == "1", b.context()
    assert b.event("nx")["enabled"] == "0", b.context()
    assert not b.number("paging_init done", "efer") & EFER_NXE, b.context()


# --- Refusals and failures ----------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_pae_build_needs_a_pae_cpu(tmp_path, variant):
    b = boot(tmp_path, variant, cpu(pae=False))
    assert b.event("cpu")["pae"] == "0", b.context()
    if variant in PAE:
        assert_exit(b, UNSUPPORTED_CPU, "exit code=3 unsupported-cpu")
        assert any(line.startswith("unsupported cpu") for line in b.lines), b.context()
        assert not any(line.startswith("pagetable_init") for line in b.lines), b.context()
    else:
        assert_passed(b)  # a non-PAE kernel has no use for PAE


@pytest.mark.parametrize("variant", VARIANTS)
def test_exception_names_vector_and_eip(tmp_path, variant):
    # 0x40000000 is user space: no mapping in any variant after paging_init.
    b = boot(tmp_path, variant, append="fault=0x40000000")
    assert_exit(b, EXCEPTION, "exit code=2 exception")
    assert "paging_init done" in b.log, b.context()
    exc = b.event("exception")
    assert exc["vector"] == "14", b.context()
    assert exc["cr2"] == "0x40000000", b.context()
    assert int(exc["error"], 0) == 0, b.context()  # not present, read, supervisor
    eip = int(exc["eip"], 0)
    probe = elf_function(variant, "fault_probe")
    assert eip in probe, f"eip={eip:#x} is not in fault_probe [{probe.start:#x}, {probe.stop:#x})\n" \
        + b.context()


@pytest.mark.parametrize("append,word", [
    pytest.param("pv=foo", "pv=foo", id="pv-unknown-backend"),
    pytest.param("reservtop=64M", "reservtop=64M", id="unknown-knob"),
    pytest.param("mem=lots", "mem=lots", id="mem-not-a-size"),
    pytest.param("noexec=maybe", "noexec=maybe", id="noexec-not-on-off"),
    pytest.param("reservetop=1G", "reservetop=1G", id="reservetop-too-big"),
    pytest.param("fault=0xzz", "fault=0xzz", id="fault-not-hex"),
])
def test_bad_command_line(tmp_path, append, word):
    b = boot(tmp_path, "pae-patched", append=f"pv=native {append}")
    assert_exit(b, BAD_CMDLINE, "exit code=4 bad-cmdline")
    assert b.event("cmdline error")["word"] == word, b.context()
    assert "pagetable_init" not in b.log, b.context()


# --- Test-only mutants (docs/guest.md) ---------------------------------------------

def test_default_build_has_no_mutant(tmp_path):
    b = boot(tmp_path, "nopae-patched")
    assert_passed(b)
    assert b.event("guest")["mutant"] == "none", b.context()


def test_mutant_build_names_itself(tmp_path):
    """MUTANT= builds into BUILD=, apart from the normal builds, and says so."""
    subprocess.run(["make", "-s", "-C", str(GUEST), "MUTANT=kmap-pte-off", f"BUILD={tmp_path}",
                    "VARIANT=pae-patched"], check=True)
    kernel = tmp_path / "pae-patched" / "kernel.elf"
    b = boot(tmp_path, "pae-patched", kernel=kernel)
    assert b.event("guest")["mutant"] == "kmap-pte-off", b.context()
    # The guest's own check catches this one: kmap_pte is the next slot's pte.
    assert_exit(b, SELFCHECK_FAILED, "exit code=1 selfcheck-failed")
    assert "kmap_pte is not the pte of FIX_KMAP_BEGIN" in b.log, b.context()


def test_unknown_mutant_is_a_make_error(tmp_path):
    r = subprocess.run(["make", "-s", "-C", str(GUEST), "MUTANT=no-such-bug", f"BUILD={tmp_path}"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "unknown MUTANT 'no-such-bug'" in r.stderr and "boot-pde-flags" in r.stderr, r.stderr


# --- poison= (docs/guest-contract.md "poison=") -----------------------------------------

POISON = 0xA5A5A5A4
# swapper_pg_dir has 1024 u32 words; the first 8 (the PAE PDPT's bytes) are left
# alone, and head.S's PAGE_OFFSET PDEs (768 + i, one per pg0 page) are not zero.
SWAPPER_WORDS_PAST_PDPT = 1024 - 8


@pytest.mark.parametrize("variant,pse", [
    pytest.param(v, pse, id=f"{v}-pse-{onoff(pse)}")
    for v in ("nopae-patched", "pae-patched") for pse in (True, False)])
def test_poison_is_accepted_and_logged(tmp_path, variant, pse):
    b = boot(tmp_path, variant, cpu(pse=pse), append=f"poison={POISON:#x}")
    assert_passed(b)  # the allocator still hands out zeroed pages
    poison = b.event("poison")
    free = (b.number("boot", "init_map_end") - b.number("boot", "boot_alloc_start")) // 4096
    assert int(poison["pattern"], 0) == POISON, b.context()
    assert int(poison["pages"]) == free, b.context()
    assert int(poison["entries"]) == SWAPPER_WORDS_PAST_PDPT - b.number("boot", "pg0_pages"), \
        b.context()
    _, max_low_pfn = expected_lowmem(b, 128 * MiB)
    assert b.number("paging_init done", "alloc_pt") == \
        expected_alloc_pt(b, variant in PAE, pse, max_low_pfn), b.context()


# What 2.6.21's pmd_none makes of the junk (docs/guest.md "Poison and the pre-patch
# builds"): non-PAE with PSE the fixmap and pkmap PDEs stay junk (the self-check
# finds them); without PSE a junk PDE is taken for a pte table at __va(junk), which
# with this pattern is user space: the first pte store faults. PAE's pmd page is a
# fresh zeroed one: no junk reaches the tables.
@pytest.mark.parametrize("variant,pse,status", [
    pytest.param("nopae-prepatch", True, SELFCHECK_FAILED, id="nopae-prepatch-pse-on"),
    pytest.param("nopae-prepatch", False, EXCEPTION, id="nopae-prepatch-pse-off"),
    pytest.param("pae-prepatch", True, PASS, id="pae-prepatch-pse-on"),
    pytest.param("pae-prepatch", False, PASS, id="pae-prepatch-pse-off"),
])
def test_poison_and_the_prepatch_builds(tmp_path, variant, pse, status):
    b = boot(tmp_path, variant, cpu(pse=pse), append=f"poison={POISON:#x}")
    assert b.status == status, b.context()
    if status == SELFCHECK_FAILED:
        err = b.event("selfcheck error")
        assert err["level"] == "pgd" and int(err["entry"], 0) == POISON, b.context()
    elif status == EXCEPTION:
        exc = b.event("exception")
        assert exc["vector"] == "14" and int(exc["cr2"], 0) == \
            ((POISON & ~0xFFF) + 0xC0000000) & 0xFFFFFFFF, b.context()  # __va(junk)
    else:
        assert_passed(b)


@pytest.mark.parametrize("value", ["0", "0x0", "0xa5a5a5a5", "1", "0xwxyz", "poison",
                                   "0x1a5a5a5a4"])
def test_bad_poison_is_refused(tmp_path, value):
    b = boot(tmp_path, "nopae-patched", append=f"poison={value}")
    assert_exit(b, BAD_CMDLINE, "exit code=4 bad-cmdline")
    err = b.event("cmdline error")
    assert err["word"] == f"poison={value}" and "bit 0 clear" in err["reason"], b.context()
    assert "pagetable_init" not in b.log, b.context()


def test_mem_below_boot_mapping_is_refused(tmp_path):
    # A PAE build's head.S maps 12 MiB; lowmem must cover it.
    b = boot(tmp_path, "pae-patched", append="mem=8M")
    assert_exit(b, BAD_CMDLINE, "exit code=4 bad-cmdline")
    assert "boot error" in b.log, b.context()
