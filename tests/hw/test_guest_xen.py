"""The guest's pv=xen mode (docs/xen.md) in real QEMU (TCG), without gdb.

The hypervisor stage builds the start-of-day pagetable, the kernel's Xen-like
backend builds its own on top of it, and the hypervisor records every
violation. Each case checks the exit status and the serial-log lines that
prove the path: the layout of the hypervisor's frames, what the kernel saw
(PSE and PGE hidden, the top reserved), how many PTE pages were reused and
allocated, and the violation record printed at exit.

Expected values come from docs/xen.md, kernel-facts.md and the ELF's symbols,
never from the guest's own output.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from elftools.elf.elffile import ELFFile

from harness import fixmap

from .test_guest_boot import (BAD_CMDLINE, EXCEPTION, GUEST, MiB, PASS, SELFCHECK_FAILED,
                              UNSUPPORTED_CPU, Boot, assert_exit, assert_passed, boot, cpu,
                              elf_function, guest_build)

pytestmark = pytest.mark.qemu
__all__ = ["guest_build"]  # the session fixture that builds the guest

PAGE = 4096
PAGE_OFFSET = 0xC0000000
KiB = 1 << 10
CR0_WP, CR0_PG = 1 << 16, 1 << 31
CR4_PSE, CR4_PAE, CR4_PGE = 1 << 4, 1 << 5, 1 << 7
EFER_NXE = 1 << 11
NX = 1 << 63
FIX_PARAVIRT_BOOTMAP = fixmap.FIX_PARAVIRT_BOOTMAP
WRITABLE_TABLE, HYP_AREA_WRITE, UNANNOUNCED_TABLE, KERNEL_PMD_REPLACED = 1, 2, 3, 4


@dataclass(frozen=True)
class Mode:
    """One paging mode's constants (docs/xen.md "Constants", kernel-facts.md)."""
    name: str
    hvs: int               # HYPERVISOR_VIRT_START
    entries: int           # entries per table page
    pmd_shift: int
    dir_frames: int        # pt_base's frames: the PGD, or the PDPT and the slot-3 pmd page
    head_beyond_end: int   # head.S's INIT_MAP_BEYOND_END
    pkmap_base: int
    fixmap: tuple[int, int]
    area_first: int        # first directory entry at or above HVS
    last_chunk: int        # VA where PTE page B is linked

    @property
    def reserve(self) -> int:
        return (-self.hvs + 2 * PAGE) & 0xFFFFFFFF

    @property
    def fixaddr_top(self) -> int:
        return (-self.reserve - PAGE) & 0xFFFFFFFF

    @property
    def maxmem(self) -> int:
        return 896 * MiB - self.reserve

    @property
    def chunk(self) -> int:
        return 1 << self.pmd_shift


NOPAE = Mode("nopae", 0xFC000000, 1024, 22, 1, 0x424000, 0xFB800000, (0xFBC00000, 0xFC000000),
             1008, 0xFFC00000)
PAE = Mode("pae", 0xF5800000, 512, 21, 2, 0x828000, 0xF5400000, (0xF5600000, 0xF5800000),
           428, 0xFFE00000)
MODES = {"nopae": NOPAE, "pae": PAE}


def mode_of(variant: str) -> Mode:
    return MODES[variant.split("-")[0]]


def symbol(variant: str, name: str) -> int:
    with open(GUEST / "build" / variant / "kernel.elf", "rb") as f:
        return ELFFile(f).get_section_by_name(".symtab").get_symbol_by_name(name)[0]["st_value"]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class Layout:
    """Where the hypervisor must put its frames, from docs/xen.md."""
    ram_pages: int
    start_info: int  # physical addresses from here on
    shared_info: int
    area_pte: tuple[int, int]
    pt_base: int
    kernel_ptes: int  # PTE pages of the start-of-day kernel mapping
    tables_end: int
    map_end: int      # xen_map_end

    @property
    def nr_pt_frames(self) -> int:
        return (self.tables_end - self.pt_base) // PAGE


def expected_layout(b: Boot, total: int) -> Layout:
    m = mode_of(b.variant)
    mem_upper_kb = b.number("mem", "mem_upper_kb")
    assert total - 2 * MiB < MiB + mem_upper_kb * KiB <= total, \
        f"mem_upper_kb={mem_upper_kb} does not fit -m {total // MiB}M\n{b.context()}"
    ram_pages = (MiB + mem_upper_kb * KiB) // PAGE
    # head.S's pg0 pages (kernel-facts.md section 4): whole 4 MiB units until
    # the mapping covers the tables plus INIT_MAP_BEYOND_END.
    pg0 = symbol(b.variant, "pg0") - PAGE_OFFSET
    pages = 1
    while pages * 4 * MiB < pg0 + pages * PAGE + m.head_beyond_end:
        pages += 1
    first = pg0 + pages * PAGE
    pt_base = first + 4 * PAGE
    ptes = 0
    while True:  # the least PTE-page count that covers the mapping it is part of
        run_end = pt_base + (m.dir_frames + ptes) * PAGE
        map_end = min(ram_pages * PAGE, ceil_div(run_end + 4 * MiB, 4 * MiB) * 4 * MiB)
        need = ceil_div(map_end, m.chunk)
        if need == ptes:
            break
        ptes = need
    return Layout(ram_pages, first, first + PAGE, (first + 2 * PAGE, first + 3 * PAGE), pt_base,
                  ptes, run_end, map_end)


def violations(b: Boot) -> tuple[int, list[dict[str, int]]]:
    """The count and the shown records of the report printed at exit."""
    count = b.number("xen violations", "count")
    shown = []
    for line in b.lines:
        if line.startswith("xen violation "):
            words = dict(w.split("=", 1) for w in line.split()[2:])
            shown.append({k: (int(v, 0) if k != "name" else v) for k, v in words.items()})
    assert len(shown) == min(count, 16) == b.number("xen violations", "shown"), b.context()
    return count, shown


def xen_boot(tmp_path, variant: str, memory: str = "128M", nx: bool = True, append: str = "",
             pae_cpu: bool = True) -> Boot:
    # QEMU offers PSE and PGE: the hypervisor must hide them from the kernel.
    return boot(tmp_path, variant, cpu(pse=True, pge=True, pae=pae_cpu, nx=nx), memory=memory,
                append=f"pv=xen {append}".strip())


def size_bytes(size: str) -> int:
    return int(size[:-1]) * (1 << 30 if size.endswith("G") else MiB)


# --- The patched build: a clean boot with zero violations -------------------------------

PASS_CASES = (
    [pytest.param(v, size, True, id=f"{v}-{size}")
     for v in ("nopae-patched", "pae-patched") for size in ("16M", "128M", "896M", "1G", "3G")]
    + [pytest.param("pae-patched", size, False, id=f"pae-patched-{size}-nx-off")
       for size in ("128M", "1G")]
)


@pytest.mark.parametrize("variant,size,nx", PASS_CASES)
def test_patched_boots_with_zero_violations(tmp_path, variant, size, nx):
    m = mode_of(variant)
    pae = m is PAE
    b = xen_boot(tmp_path, variant, size, nx=nx)
    assert_passed(b)
    assert violations(b) == (0, []), b.context()
    lay = expected_layout(b, size_bytes(size))

    # The hypervisor's frames and numbers.
    hyp = b.event("xen hypervisor")
    for key, want in (("hvs", m.hvs), ("nr_pages", lay.ram_pages), ("start_info", lay.start_info),
                      ("shared_info", lay.shared_info), ("pt_base", PAGE_OFFSET + lay.pt_base),
                      ("nr_pt_frames", lay.nr_pt_frames), ("xen_map_end", lay.map_end),
                      ("tables_end", lay.tables_end)):
        assert int(hyp[key], 0) == want, f"hypervisor {key}={hyp[key]}, expected {want:#x}\n" \
            + b.context()
    assert [int(x, 16) for x in hyp["area_pte"].split(",")] == list(lay.area_pte), b.context()
    si = b.event("xen start_info")
    assert int(si["magic"], 0) == 0x584E4558 and int(si["flags"]) == 0, b.context()
    assert int(si["reserve_top"], 0) == m.reserve, b.context()
    assert int(si["hypervisor_virt_start"], 0) == m.hvs, b.context()

    # What the kernel saw: PSE and PGE hidden, the top reserved for the hypervisor.
    assert b.event("pv")["backend"] == "xen", b.context()
    seen = b.event("cpu")
    assert (seen["pse"], seen["pge"], seen["pae"], seen["nx"]) == ("0", "0", "1", str(int(nx))), \
        f"the kernel must see pse=0 pge=0 (QEMU has both on)\n{b.context()}"
    line = b.event("fixmap")
    assert int(line["fixaddr_top"], 0) == m.fixaddr_top, b.context()
    assert int(line["vmalloc_reserve"], 0) == 128 * MiB + m.reserve, b.context()
    assert int(line["pkmap_base"], 0) == m.pkmap_base, b.context()
    assert int(line["end_of_fixed_addresses"]) == fixmap.END, b.context()
    mem = b.event("mem")
    max_low_pfn = min(lay.ram_pages, m.maxmem // PAGE)
    assert int(mem["maxmem"], 0) == m.maxmem, b.context()
    assert int(mem["max_pfn"], 0) == lay.ram_pages, b.context()
    assert int(mem["max_low_pfn"], 0) == max_low_pfn, b.context()
    boot_line = b.event("boot")
    assert int(boot_line["init_pg_tables_end"], 0) == lay.tables_end, b.context()
    assert int(boot_line["boot_alloc_start"], 0) == lay.tables_end, b.context()
    assert int(boot_line["init_map_end"], 0) == lay.map_end, b.context()

    # Reuse what is present, allocate only what is missing: lowmem PTE pages
    # beyond the hypervisor's, then the fixmap and the pkmap page.
    lowmem_ptes = ceil_div(max_low_pfn, m.entries)
    reused = min(lay.kernel_ptes, lowmem_ptes)
    allocated = lowmem_ptes - reused + 2
    done = b.event("xen pagetable_setup_done")
    assert (int(done["pte_reused"]), int(done["pte_allocated"])) == (reused, allocated), \
        f"expected {reused} PTE pages reused, {allocated} allocated\n{b.context()}"
    assert int(done["shared_info_va"], 0) == m.fixaddr_top - FIX_PARAVIRT_BOOTMAP * PAGE, \
        b.context()
    swapper = symbol(variant, "swapper_pg_dir") - PAGE_OFFSET
    assert int(done["pin_pfn"], 0) == swapper // PAGE, b.context()
    pmd_copies = 1 if pae else 0  # PAE: a copy of the hypervisor's slot-3 pmd page
    assert b.number("pagetable_init done", "pages") == pmd_copies + allocated, b.context()

    paging = b.event("paging_init done")
    cr0, cr3, cr4 = (int(paging[k], 0) for k in ("cr0", "cr3", "cr4"))
    assert cr0 & CR0_WP and cr0 & CR0_PG, f"cr0={cr0:#x}: WP must stay on\n{b.context()}"
    assert cr3 == swapper, f"cr3={cr3:#x}, expected __pa(swapper_pg_dir)={swapper:#x}\n" \
        + b.context()
    assert cr4 & (CR4_PSE | CR4_PGE) == 0 and bool(cr4 & CR4_PAE) == pae, \
        f"cr4={cr4:#x}\n{b.context()}"
    assert bool(int(paging["efer"], 0) & EFER_NXE) == (pae and nx), b.context()
    assert (int(paging["alloc_pd"]), int(paging["alloc_pt"])) == (1, allocated), b.context()

    # Read-only: the start-info page, every table page (the hypervisor's and
    # the kernel's), swapper_pg_dir and empty_zero_page.
    hyp_tables = (lay.tables_end - lay.area_pte[0]) // PAGE
    ro = b.event("selfcheck xen")
    assert int(ro["read_only_pages"]) == 1 + hyp_tables + pmd_copies + allocated + 2, b.context()
    # ... and the hypervisor's own pages, none of them writable.
    hyp_pages = (symbol(variant, "__hyp_end") - symbol(variant, "__hyp_start")) // PAGE
    assert hyp_pages > 0 and int(ro["hyp_pages"]) == hyp_pages, b.context()
    assert b.number("selfcheck lowmem", "pages") == max_low_pfn, b.context()
    fix = b.event("selfcheck fixmap")
    assert (int(fix["start"], 0), int(fix["end"], 0)) == m.fixmap, b.context()
    assert b.number("selfcheck pkmap", "start") == m.pkmap_base, b.context()


def test_nopae_domain_on_a_cpu_without_pae(tmp_path):
    b = xen_boot(tmp_path, "nopae-patched", pae_cpu=False)
    assert_passed(b)
    assert violations(b) == (0, []), b.context()
    assert b.event("cpu")["pae"] == "0", b.context()


def test_pae_domain_needs_a_pae_cpu(tmp_path):
    b = xen_boot(tmp_path, "pae-patched", pae_cpu=False)
    assert_exit(b, UNSUPPORTED_CPU, "exit code=3 unsupported-cpu")
    assert b.event("xen hypervisor error")["reason"] == "a PAE domain needs a CPU with PAE", \
        b.context()
    assert "xen start_info" not in b.log, b.context()


# --- The pre-patch build: the seed's bugs, seen by the hypervisor ------------------------

def test_prepatch_nopae_writes_into_the_hypervisor_area(tmp_path):
    """Bug B: the fixmap range-init runs to the 4 GiB wrap and links PTE pages at
    PGD entries 1009..1022 (1008 and 1023 hold the hypervisor's own): recorded
    and performed, then found again when the root is pinned -- and a third
    time when the second pagetable, which copies them, is pinned."""
    b = xen_boot(tmp_path, "nopae-prepatch")
    assert_exit(b, PASS, "exit code=0 pass")  # the kernel's own mappings are right
    swapper = symbol("nopae-prepatch", "swapper_pg_dir") - PAGE_OFFSET
    entries = list(range(NOPAE.area_first + 1, 1023))
    count, shown = violations(b)
    assert count == 3 * len(entries), f"expected {3 * len(entries)} violations\n{b.context()}"
    expected = entries + entries[:16 - len(entries)]  # the updates, then the pin's findings
    for rec, idx in zip(shown, expected):
        assert rec["kind"] == HYP_AREA_WRITE and rec["name"] == "HYP_AREA_WRITE", b.context()
        assert rec["entry_pa"] == swapper + 4 * idx, f"record {rec}: pgd entry {idx}\n" \
            + b.context()
        assert rec["frame"] == swapper and rec["va"] == idx << 22, b.context()
        assert rec["value"] & 0xFFF == 0x067, b.context()  # a PTE page linked as _PAGE_TABLE
    # Each linked PTE page is a fresh one from the boot allocator, in order.
    pages = [rec["value"] & ~0xFFF for rec in shown[:len(entries)]]
    assert pages == sorted(pages) and len(set(pages)) == len(pages), b.context()


def test_prepatch_pae_kernel_pmd_replacement_is_refused(tmp_path):
    """Bug C: 2.6.21 allocates a fresh pmd page for PDPT slot 3 and links it; the
    hypervisor refuses (it lacks the area's entries), and 2.6.21's own check
    that the slot now holds the new page fires (BUG)."""
    b = xen_boot(tmp_path, "pae-prepatch")
    assert_exit(b, SELFCHECK_FAILED, "exit code=1 selfcheck-failed")
    assert any(line.startswith("BUG at init.c") and "pmd_table != pmd_offset" in line
               for line in b.lines), b.context()
    assert "paging_init done" not in b.log, b.context()
    swapper = symbol("pae-prepatch", "swapper_pg_dir") - PAGE_OFFSET
    alloc_start = b.number("boot", "boot_alloc_start")
    count, shown = violations(b)
    assert count == 1, b.context()
    rec = shown[0]
    # The second boot page: the first is setup_start's copy of the hypervisor's pmd.
    fresh = alloc_start + PAGE
    assert rec == {"n": 0, "kind": KERNEL_PMD_REPLACED, "name": "KERNEL_PMD_REPLACED",
                   "entry_pa": swapper + 3 * 8, "value": fresh | 0x001, "frame": fresh,
                   "va": 0xC0000000}, f"record {rec}\n{b.context()}"


# --- The mutant: a PTE page left writable ----------------------------------------------

@pytest.mark.parametrize("variant", ("nopae-patched", "pae-patched"))
def test_writable_pt_mutant_is_recorded(tmp_path, variant):
    m = mode_of(variant)
    pae = m is PAE
    b = xen_boot(tmp_path, variant, append="pvbug=writable-pt")
    alloc_start = b.number("boot", "boot_alloc_start")
    lay = expected_layout(b, 128 * MiB)
    # The first PTE page alloc_pt gets: lowmem right after the hypervisor's PTE pages.
    page = alloc_start + (PAGE if pae else 0)
    assert b.number("xen pvbug writable-pt", "pfn") == page // PAGE, b.context()
    swapper = symbol(variant, "swapper_pg_dir") - PAGE_OFFSET
    directory = alloc_start if pae else swapper  # PAE: the kernel's copy of the slot-3 pmd
    index = lay.kernel_ptes + (0 if pae else 768)
    va = PAGE_OFFSET + lay.kernel_ptes * m.chunk
    count, shown = violations(b)
    assert count == 2, b.context()
    link, pin = shown
    assert link == {"n": 0, "kind": WRITABLE_TABLE, "name": "WRITABLE_TABLE",
                    "entry_pa": directory + index * (8 if pae else 4), "value": page | 0x067,
                    "frame": page, "va": va}, f"link-time record {link}\n{b.context()}"
    leaf = page | 0x063 | (NX if pae else 0)
    assert pin == {"n": 1, "kind": WRITABLE_TABLE, "name": "WRITABLE_TABLE", "entry_pa": 0,
                   "value": leaf, "frame": page, "va": PAGE_OFFSET + page}, \
        f"pin-time record {pin}\n{b.context()}"
    # The kernel's self-check sees the same writable table page in the final tables.
    assert_exit(b, SELFCHECK_FAILED, "exit code=1 selfcheck-failed")
    err = b.event("selfcheck error")
    assert int(err["va"], 0) == PAGE_OFFSET + page, b.context()
    assert err["problem"] == "page-table page writable", b.context()


# --- More backend bugs: the records each must produce (docs/xen.md "Mutants") ------------

def first_alloc_pt_link(b: Boot, variant: str, lay: Layout) -> tuple[int, int, int, int]:
    """The first PTE page alloc_pt gets and where it is linked: (page, entry_pa, value, va).
    It is lowmem's first pmd past the hypervisor's PTE pages; PAE's directory is the
    kernel's copy of the slot-3 pmd (the first boot page), non-PAE swapper_pg_dir."""
    m = mode_of(variant)
    pae = m is PAE
    alloc_start = b.number("boot", "boot_alloc_start")
    page = alloc_start + (PAGE if pae else 0)
    directory = alloc_start if pae else symbol(variant, "swapper_pg_dir") - PAGE_OFFSET
    index = lay.kernel_ptes + (0 if pae else 768)
    return page, directory + index * (8 if pae else 4), page | 0x067, \
        PAGE_OFFSET + lay.kernel_ptes * m.chunk


@pytest.mark.parametrize("variant", ("nopae-patched", "pae-patched"))
@pytest.mark.parametrize("bug", ("writable-root", "unannounced-pt", "batch-hv-write"))
def test_pvbug_records(tmp_path, variant, bug):
    m = mode_of(variant)
    esize = 4 if m is NOPAE else 8
    b = xen_boot(tmp_path, variant, append=f"pvbug={bug}")
    lay = expected_layout(b, 128 * MiB)
    count, shown = violations(b)
    for rec in shown:
        del rec["n"]
    if bug == "writable-root":
        # swapper_pg_dir stays writable: its leaf (rewritten, batched, by
        # kernel_physical_mapping_init in the first kernel PTE page; __init_end is
        # kernel text, so no NX) and again at pin time. The self-check sees it too.
        swapper = symbol(variant, "swapper_pg_dir") - PAGE_OFFSET
        assert b.number("xen pvbug writable-root", "pfn") == swapper // PAGE, b.context()
        first_kernel_pte = lay.pt_base + m.dir_frames * PAGE
        leaf = {"kind": WRITABLE_TABLE, "name": "WRITABLE_TABLE", "value": swapper | 0x063,
                "frame": swapper, "va": PAGE_OFFSET + swapper}
        assert (count, shown) == (2, [
            leaf | {"entry_pa": first_kernel_pte + (swapper // PAGE) * esize},
            leaf | {"entry_pa": 0}]), b.context()
        assert_exit(b, SELFCHECK_FAILED, "exit code=1 selfcheck-failed")
        err = b.event("selfcheck error")
        assert int(err["va"], 0) == PAGE_OFFSET + swapper, b.context()
    elif bug == "unannounced-pt":
        # Linked before the hypervisor knows it is a table: kind 3 at the link.
        # It is read-only, so the pin finds nothing.
        page, entry_pa, value, va = first_alloc_pt_link(b, variant, lay)
        assert b.number("xen pvbug unannounced-pt", "pfn") == page // PAGE, b.context()
        assert (count, shown) == (1, [{"kind": UNANNOUNCED_TABLE, "name": "UNANNOUNCED_TABLE",
                                       "entry_pa": entry_pa, "value": value, "frame": page,
                                       "va": va}]), b.context()
        assert_exit(b, PASS, "exit code=0 pass")
    else:
        # The first set_pte's value (pfn 0, kernel text: 0x063) also goes to entry 2
        # of PTE page A, through the batch: kind 2 at the update, kind 2 at pin.
        a = lay.area_pte[0]
        assert b.number("xen pvbug batch-hv-write", "value") == 0x063, b.context()
        rec = {"kind": HYP_AREA_WRITE, "name": "HYP_AREA_WRITE", "entry_pa": a + 2 * esize,
               "value": 0x063, "frame": a, "va": m.hvs + 2 * PAGE}
        assert (count, shown) == (2, [rec, rec]), b.context()
        assert_exit(b, PASS, "exit code=0 pass")


# --- The hypervisor's counters (docs/xen.md "What the harness reads") ---------------------

@pytest.mark.parametrize("variant", ("nopae-patched", "pae-patched"))
def test_hypervisor_counters(tmp_path, variant):
    """hyp_mmu_update_count and hyp_pin_count are u32s in the hypervisor's own
    pages [__hyp_start, __hyp_end), local symbols of its relocatable (nothing
    of the kernel can link to them); the log's mmu_updates= is the former.
    writable-pt skips exactly one hypercall (the make-read-only of that page),
    batch-hv-write adds exactly one entry."""
    with open(GUEST / "build" / variant / "kernel.elf", "rb") as f:
        elf = ELFFile(f)
        hyp = elf.get_section_by_name(".hyp")
        assert hyp["sh_addr"] == symbol(variant, "__hyp_start")
        assert hyp["sh_addr"] + hyp["sh_size"] <= symbol(variant, "__hyp_end")
        for name in ("hyp_mmu_update_count", "hyp_pin_count"):
            sym = elf.get_section_by_name(".symtab").get_symbol_by_name(name)[0]
            assert sym["st_size"] == 4 and sym["st_info"]["bind"] == "STB_LOCAL", name
            assert hyp["sh_addr"] <= sym["st_value"] < hyp["sh_addr"] + hyp["sh_size"], name
    updates = {}
    for bug in ("", "writable-pt", "batch-hv-write"):
        b = xen_boot(tmp_path, variant, append=f"pvbug={bug}" if bug else "")
        updates[bug] = b.number("xen violations", "mmu_updates")
    assert updates["writable-pt"] == updates[""] - 1, updates
    assert updates["batch-hv-write"] == updates[""] + 1, updates


# --- poison= under pv=xen ------------------------------------------------------------------

POISON = 0xA5A5A5A4


@pytest.mark.parametrize("variant,size", [
    pytest.param(v, size, id=f"{v}-{size}")
    for v in ("nopae-patched", "pae-patched") for size in ("16M", "128M")])
def test_poison_under_xen(tmp_path, variant, size):
    """The hypervisor poisons the empty entries of its directory below the area
    and of its kernel-mapping PTE pages; the kernel the free pages. The patched
    kernel still passes, and the pin finds the area as built."""
    m = mode_of(variant)
    b = xen_boot(tmp_path, variant, size, append=f"poison={POISON:#x}")
    assert_passed(b)
    assert violations(b) == (0, []), b.context()
    lay = expected_layout(b, size_bytes(size))
    empty_ptes = lay.kernel_ptes * m.entries - lay.map_end // PAGE  # past xen_map_end
    poison = b.event("poison")
    assert int(poison["pattern"], 0) == POISON, b.context()
    assert int(poison["pages"]) == (lay.map_end - lay.tables_end) // PAGE, b.context()
    assert int(poison["entries"]) == m.area_first - lay.kernel_ptes + empty_ptes, b.context()


def test_poison_prepatch_nopae_under_xen_faults(tmp_path):
    """2.6.21's pmd_none takes a poisoned PGD entry for a PTE page at __va(junk)."""
    b = xen_boot(tmp_path, "nopae-prepatch", append=f"poison={POISON:#x}")
    assert_exit(b, EXCEPTION, "exit code=2 exception")
    exc = b.event("exception")
    assert exc["vector"] == "14" and int(exc["cr2"], 0) == \
        ((POISON & ~0xFFF) + PAGE_OFFSET) & 0xFFFFFFFF, b.context()
    assert violations(b) == (0, []), b.context()


# --- The command line and the exception path --------------------------------------------

@pytest.mark.parametrize("variant,append,word", [
    pytest.param("pae-patched", "pv=xen reservetop=64M", "reservetop=64M", id="reservetop-with-xen"),
    pytest.param("nopae-patched", "reservetop=16M pv=xen", "reservetop=16M", id="reservetop-first"),
    pytest.param("pae-patched", "pvbug=writable-pt", "pvbug=writable-pt", id="pvbug-without-xen"),
    pytest.param("pae-patched", "pv=xen pvbug=readonly", "pvbug=readonly", id="pvbug-unknown"),
    pytest.param("nopae-patched", "pvbug=writable-root", "pvbug=writable-root",
                 id="writable-root-without-xen"),
    pytest.param("pae-patched", "pv=native pvbug=unannounced-pt", "pvbug=unannounced-pt",
                 id="unannounced-pt-native"),
    pytest.param("pae-patched", "pvbug=batch-hv-write", "pvbug=batch-hv-write",
                 id="batch-hv-write-without-xen"),
])
def test_bad_xen_command_line(tmp_path, variant, append, word):
    b = boot(tmp_path, variant, append=append)
    assert_exit(b, BAD_CMDLINE, "exit code=4 bad-cmdline")
    assert b.event("cmdline error")["word"] == word, b.context()
    assert "xen hypervisor" not in b.log, b.context()


@pytest.mark.parametrize("variant", ("nopae-patched", "pae-patched"))
def test_exception_under_xen_prints_the_record(tmp_path, variant):
    b = xen_boot(tmp_path, variant, append="fault=0x40000000")
    assert_exit(b, EXCEPTION, "exit code=2 exception")
    exc = b.event("exception")
    assert exc["vector"] == "14" and exc["cr2"] == "0x40000000", b.context()
    assert int(exc["eip"], 0) in elf_function(variant, "fault_probe"), b.context()
    assert violations(b) == (0, []), b.context()
    assert b.lines[-2].startswith("xen violations "), b.context()
