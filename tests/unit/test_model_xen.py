"""The reference model under pv=xen against docs/xen.md, no QEMU.

Before-states come from bootstate_xen.py (the hypervisor's start-of-day pagetable as
docs/xen.md describes it, independent of the model); expected numbers are worked by
hand in the comments, never taken from a model run.

Layout with bootstate.SYMBOLS (swapper_pg_dir 0x234000, empty_zero_page 0x235000,
__init_end 0xC0234000, head.S's pg0 tables end at 0x244000 non-PAE / 0x245000 PAE):

  non-PAE: start-info 0x244000, shared-info 0x245000, A 0x246000, B 0x247000,
           PGD 0x248000, kernel PTE pages 0x249000 (PDE 768) and 0x24A000 (PDE 769);
           run end 0x24B000: 0x24B000 + 4M rounds up to 8M = 2 PTE pages, consistent.
           A at PDE 1008 (0xFC000000), B at PDE 1023.  Cursor 0x24B000.
  PAE:     start-info 0x245000, shared-info 0x246000, A 0x247000, B 0x248000,
           PDPT 0x249000, PMD 0x24A000, PTE pages 0x24B000..0x24E000 (PMD 0..3);
           run end 0x24F000 -> 8M = 4 PTE pages of 2M, consistent.  A at PMD 428
           ((0xF5800000 - 0xC0000000) >> 21), B at PMD 511.  Cursor 0x24F000.

RAM as the firmware reports it: QEMU -m minus 128 KiB (docs/xen.md), nr_pages the same.
"""
from __future__ import annotations

import pytest

import bootstate as bs
import bootstate_xen as bx
from harness import model, walker, x86
from harness.model import KernelConfig, ModelError, predict
from harness.walker import CpuState
from model_paging import entry, translate

M = 1 << 20
K = 1 << 10
NX = 1 << 63
SWAPPER, ZERO = 0x234000, 0x235000
INIT_END = bs.SYMBOLS["__init_end"]
ADDR = 0xFFFFF000


def ram(mib: int) -> int:
    return mib * M - 128 * K  # what the multiboot info reports for -m mib


def cfg(**kw) -> KernelConfig:
    base = dict(pae=False, prepatch=False, cpu_pse=True, cpu_pge=True, cpu_pae=True,
                cpu_nx=False, ram_bytes=ram(128), pv="xen")
    base.update(kw)
    return KernelConfig(**base)


def run(**kw):
    config = cfg(**kw)
    xs = bx.start_of_day(config.pae, config.ram_bytes >> 12)
    return xs, predict(xs.before, config, bx.image())


def top(p, idx):
    """Entry idx of the final top-level table (PAE: the PDPT)."""
    return entry(p.memory, p.cpu.cr3 & ~0x1F, idx, p.entry_size)


def kernel_pmd(p, idx):
    """PAE: entry idx of the live PMD page behind PDPT slot 3."""
    return entry(p.memory, top(p, 3) & ADDR, idx, 8)


def chunk_entry(p, va):
    """The final entry that holds the PTE page for va (PDE non-PAE, kernel PMD PAE)."""
    if p.layout.geometry.ptrs_per_pmd > 1:
        return kernel_pmd(p, (va >> 21) & 511)
    return top(p, va >> 22)


def tree_frames(mem, cpu):
    """Every table frame reachable from CR3 (4 KiB pages only: the Xen case has no PSE)."""
    pae = cpu.pae
    root = cpu.cr3 & ~0x1F if pae else cpu.cr3 & ADDR
    frames = {root & ADDR}
    pmds = [entry(mem, root, i, 8) & ADDR for i in range(4) if entry(mem, root, i, 8) & 1] \
        if pae else [root]
    frames |= set(pmds)
    for pmd in pmds:
        for i in range(512 if pae else 1024):
            e = entry(mem, pmd, i, 8 if pae else 4)
            if e & 1:
                assert not e & 0x80, f"large page in {pmd:#x}[{i}] = {e:#x}"
                frames.add(e & ADDR)
    return frames


# --------------------------------------------------------------------------- layout numbers
@pytest.mark.parametrize("pae, fixaddr_top, vmalloc, maxmem, fix_start, fix_end, pkmap", [
    # reserve 0x04002000: FIXADDR_TOP = -0x04002000 - 0x1000 = 0xFBFFD000; last fixmap slot
    # 0xFBFFD000 - 31*4K = 0xFBFDE000 -> 0xFBC00000; end (0xFBFFD000 + 4M-1) & ~(4M-1) =
    # 0xFC000000; PKMAP (0xFBFDD000 - 1025*4K = 0xFBBDC000) & ~(4M-1) = 0xFB800000.
    (False, 0xFBFFD000, 0x0C002000, 0x33FFE000, 0xFBC00000, 0xFC000000, 0xFB800000),
    # reserve 0x0A802000: 0xF57FD000; 0xF57DE000 -> 0xF5600000; end 0xF5800000;
    # PKMAP (0xF57DD000 - 513*4K = 0xF55DC000) & ~(2M-1) = 0xF5400000.
    (True, 0xF57FD000, 0x12802000, 0x2D7FE000, 0xF5600000, 0xF5800000, 0xF5400000),
])
def test_layout_constants(pae, fixaddr_top, vmalloc, maxmem, fix_start, fix_end, pkmap):
    lay = model.compute_layout(cfg(pae=pae, ram_bytes=1024 * M), bx.image())
    assert lay.hypervisor_virt_start == bx.HVS[pae]
    assert lay.fixaddr_top == fixaddr_top
    assert lay.vmalloc_reserve == vmalloc and lay.maxmem == maxmem
    assert lay.max_low_pfn == maxmem >> 12
    assert (lay.fixmap_start, lay.fixmap_end, lay.pkmap_base) == (fix_start, fix_end, pkmap)
    # Pre-patch: the same start, but the range runs to the wrap.
    lay = model.compute_layout(cfg(pae=pae, prepatch=True), bx.image())
    assert (lay.fixmap_start, lay.fixmap_end) == (fix_start, 0)


def test_layout_max_pfn_from_nr_pages_and_mem_limit():
    # nr_pages wins over ram_bytes; mem= still caps it.
    lay = model.compute_layout(cfg(ram_bytes=ram(128)), bx.image(), nr_pages=0x4000)
    assert (lay.max_pfn, lay.max_low_pfn) == (0x4000, 0x4000)
    lay = model.compute_layout(cfg(mem_limit=32 * M), bx.image(), nr_pages=0x7FE0)
    assert (lay.max_pfn, lay.max_low_pfn) == (0x2000, 0x2000)


def test_cpuid_masking_hides_pse_and_pge():
    c = cfg(cpu_pse=True, cpu_pge=True)
    assert not c.kernel_pse and not c.kernel_pge
    native = KernelConfig(**{**c.__dict__, "pv": "native"})
    assert native.kernel_pse and native.kernel_pge


# ------------------------------------------------------------------ allocations, hook log
@pytest.mark.parametrize("pae, mib, count", [
    # non-PAE 128M: max_low_pfn 0x7FE0 -> PDEs 768..799; 768/769 are the hypervisor's,
    # 770..799 new (30); fixmap PDE 1007, pkmap PDE 1006: 32.
    (False, 128, 32),
    # non-PAE 896M: max_low_pfn = MAXMEM >> 12 = 0x33FFE -> PDEs 768..975 (0x33FFD >> 10 =
    # 207); new 770..975 = 206; + 2 = 208.
    (False, 896, 208),
    # PAE 128M: the PMD copy; PMD 0..63 (0x7FDF >> 9 = 63), 0..3 the hypervisor's, 60 new;
    # fixmap PMD 427, pkmap PMD 426: 1 + 60 + 2 = 63.
    (True, 128, 63),
    # PAE 896M: max_low_pfn 0x2D7FE -> PMD 0..363 (0x2D7FD >> 9); 360 new; 1 + 360 + 2.
    (True, 896, 363),
])
def test_allocation_count_and_hook_log(pae, mib, count):
    xs, p = run(pae=pae, ram_bytes=ram(mib))
    c = xs.run_end  # 0x24B000 / 0x24F000
    assert p.allocations == [c + i * 4096 for i in range(count)]
    assert p.cursor_after == c + count * 4096
    if pae:
        # alloc_pd for the PMD copy first, then alloc_pt for each PTE page, pin last.
        log = [(1, c >> 12)] + [(2, (c >> 12) + i) for i in range(1, count)]
    else:
        # alloc_pd(swapper_pg_dir) in setup_start, then one alloc_pt per page, pin last.
        log = [(1, 0x234)] + [(2, (c >> 12) + i) for i in range(count)]
    assert p.hook_log == log + [(3, 0x234)]


@pytest.mark.parametrize("pae", [False, True])
def test_shared_pte_pages_reused_new_ones_only_beyond_the_mapping(pae):
    xs, p = run(pae=pae)
    chunk = 2 * M if pae else 4 * M
    allocated = set(p.allocations)
    for i, va in enumerate(range(0xC0000000, 0xC0000000 + ram(128), chunk)):
        e = chunk_entry(p, va)
        assert e & 0xFFF == 0x067, f"chunk {va:#x}: {e:#x}"
        if va - 0xC0000000 < xs.xen_map_end:
            # The hypervisor's PTE page, shared with its own pagetable at pt_base.
            assert e & ADDR == xs.kernel_ptes[i], f"chunk {va:#x} not the provided page"
        else:
            assert e & ADDR in allocated, f"chunk {va:#x}: {e:#x} is not a new page"
    fix = chunk_entry(p, p.layout.fixmap_start) & ADDR
    pkmap = chunk_entry(p, p.layout.pkmap_base) & ADDR
    new_ptes = [a for a in p.allocations if a not in ((xs.run_end,) if pae else ())]
    lowmem_new = -(-(ram(128) - xs.xen_map_end) // chunk)  # rounded up: 30 non-PAE, 60 PAE
    assert lowmem_new == (60 if pae else 30)
    assert new_ptes[lowmem_new:] == [fix, pkmap]
    # Shared: the old tree (CR3 = pt_base) and the new one reach the same PTE page.
    old_cpu = CpuState(cr0=bx.CR0, cr3=xs.pt_base, cr4=x86.CR4_PAE if pae else 0)
    for va in (0xC0000000, 0xC0000000 + xs.xen_map_end - 4096):
        assert translate(p.memory, old_cpu, va).chain[-2] == \
            translate(p.memory, p.cpu, va).chain[-2]


# -------------------------------------------------------------------- read-only tables
@pytest.mark.parametrize("pae", [False, True])
@pytest.mark.parametrize("mib", [128, 896])
def test_every_table_frame_read_only_in_the_final_linear_map(pae, mib):
    xs, p = run(pae=pae, ram_bytes=ram(mib))
    frames = tree_frames(p.memory, p.cpu) | xs.table_frames | set(p.allocations)
    assert SWAPPER in frames
    for frame in sorted(frames | {ZERO, xs.start_info}):
        t = translate(p.memory, p.cpu, 0xC0000000 + frame)
        assert t is not None and t.pa == frame, f"frame {frame:#x} not in the linear map"
        assert not t.leaf & x86.RW, f"frame {frame:#x} mapped writable: leaf {t.leaf:#x}"
    # The hypervisor knows every one of them as a table.
    assert set(p.hypervisor_tables) >= tree_frames(p.memory, p.cpu)


@pytest.mark.parametrize("pae, nx", [(False, False), (True, False), (True, True)])
def test_keep_rw_rule_and_leaf_flags(pae, nx):
    # Every lowmem leaf: pfn | 0x061, RW iff the hypervisor left it RW and the kernel did
    # not make the frame a table (or the zero page / swapper_pg_dir) -- a setup-time
    # set_pte over a present entry keeps its RW bit; beyond xen_map_end plain 0x063.
    # NX on every page above __init_end when NX is active; never GLOBAL.
    xs, p = run(pae=pae, cpu_nx=nx)
    made_ro = {ZERO, SWAPPER} | set(p.allocations)
    for pfn in range(ram(128) >> 12):
        pa, va = pfn << 12, 0xC0000000 + (pfn << 12)
        t = translate(p.memory, p.cpu, va)
        assert t is not None and t.pa == pa and t.size == 4096, f"VA {va:#x}"
        rw = pa >= xs.xen_map_end or (pa not in xs.readonly_frames and pa not in made_ro)
        want = 0x061 | (x86.RW if rw else 0) | (NX if nx and va > INIT_END else 0)
        assert t.leaf & (0xFFF | NX) == want, \
            f"leaf for VA {va:#x}: {t.leaf & (0xFFF | NX):#x}, expected {want:#x}"


@pytest.mark.parametrize("pae", [False, True])
def test_hypervisor_area_unchanged(pae):
    xs, p = run(pae=pae)
    before = xs.before.memory()
    es, n = (8, 512) if pae else (4, 1024)
    old_area = xs.pmd if pae else xs.pt_base
    new_area = top(p, 3) & ADDR if pae else p.cpu.cr3
    assert new_area != old_area  # the kernel's own copy ...
    for i in range(xs.area_first, n):  # ... holds the same entries, bit for bit
        assert entry(p.memory, new_area, i, es) == entry(before, old_area, i, es), f"entry {i}"
    assert entry(p.memory, new_area, xs.area_first, es) == xs.pte_a | 0x067
    for page in (xs.pte_a, xs.pte_b, xs.pt_base) + ((xs.pmd,) if pae else ()):
        assert p.memory.pages[page] == before.pages[page], f"hypervisor page {page:#x} changed"
    assert p.hypervisor_flags == []


@pytest.mark.parametrize("pae", [False, True])
def test_no_global_no_large_pages_no_identity(pae):
    xs, p = run(pae=pae, cpu_pse=True, cpu_pge=True)
    assert not p.cpu.cr4 & (x86.CR4_PSE | x86.CR4_PGE)
    assert p.cpu.cr4 == (x86.CR4_PAE if pae else 0)
    assert p.cpu.cr3 == SWAPPER and p.cpu.cr0 == bx.CR0
    tree_frames(p.memory, p.cpu)  # asserts no PSE entry anywhere
    for frame in tree_frames(p.memory, p.cpu):
        page = p.memory.pages[frame]
        for off in range(0, 4096, 8 if pae else 4):
            assert not int.from_bytes(page[off:off + 4], "little") & 0x100, \
                f"GLOBAL in {frame:#x}+{off:#x}"
    # No low identity mapping: PDPT slots 0..2 empty (PAE), PDE 0 empty (non-PAE).
    if pae:
        assert [top(p, i) for i in range(3)] == [0, 0, 0]
    else:
        assert all(top(p, i) == 0 for i in range(768))


@pytest.mark.parametrize("pae, nx, noexec_off, efer", [
    (False, True, False, 0), (True, True, False, 0x800), (True, True, True, 0),
    (True, False, False, 0)])
def test_nx_as_configured(pae, nx, noexec_off, efer):
    xs, p = run(pae=pae, cpu_nx=nx, noexec_off=noexec_off)
    assert p.cpu.efer == efer and p.layout.nx_active == bool(efer)
    t = translate(p.memory, p.cpu, 0xC0000000 + xs.xen_map_end)  # a new page, above text
    assert bool(t.leaf & NX) == bool(efer)
    t = translate(p.memory, p.cpu, INIT_END)  # inclusive end of "text": executable
    assert not t.leaf & NX


@pytest.mark.parametrize("pae, nx, va", [
    # __fix_to_virt(55) = FIXADDR_TOP - 55*4K: 0xFBFFD000 - 0x37000 / 0xF57FD000 - 0x37000.
    (False, False, 0xFBFC6000), (True, True, 0xF57C6000), (True, False, 0xF57C6000)])
def test_shared_info_fixmap_pte(pae, nx, va):
    xs, p = run(pae=pae, cpu_nx=nx)
    t = translate(p.memory, p.cpu, va)
    assert t is not None and t.pa == xs.shared_info
    assert t.leaf & (0xFFF | NX) == 0x063 | (NX if nx else 0)  # PAGE_KERNEL, no GLOBAL
    # It sits in the fixmap PTE page (the range-init's first allocation past lowmem).
    assert t.chain[-2] & ADDR == chunk_entry(p, p.layout.fixmap_start) & ADDR
    # The only leaf in that page: no other fixmap slot is set.
    fix_page = t.chain[-2] & ADDR
    n = 512 if pae else 1024
    assert [i for i in range(n) if entry(p.memory, fix_page, i, 8 if pae else 4)] == \
        [(va >> 12) & (n - 1)]


def test_pin_is_last_and_once():
    for pae in (False, True):
        _, p = run(pae=pae)
        assert [h for h in p.hook_log if h[0] == 3] == [(3, 0x234)]
        assert p.hook_log[-1] == (3, 0x234)


# ------------------------------------------------------------- pre-patch under pv=xen
def test_prepatch_nonpae_bug_b_tables_in_the_hypervisor_area():
    # Range-init from PDE 1007 to the wrap: 1008 (A) and 1023 (B) are present and kept,
    # 1009..1022 get new PTE pages (14), performed despite being kind-2 violations.
    xs, p = run(prepatch=True)
    c = xs.run_end
    # Allocation order: 30 lowmem, PDE 1007, PDEs 1009..1022, pkmap PDE 1006: 46.
    assert p.allocations == [c + i * 4096 for i in range(46)]
    assert top(p, 1007) == (c + 30 * 4096) | 0x067
    assert top(p, 1008) == xs.pte_a | 0x067 and top(p, 1023) == xs.pte_b | 0x067
    for j, pde in enumerate(range(1009, 1023)):
        assert top(p, pde) == (c + (31 + j) * 4096) | 0x067
    assert top(p, 1006) == (c + 45 * 4096) | 0x067
    # Flagged kind 2 when written (PDE i of swapper_pg_dir at 0x234000 + 4i, covering
    # i << 22), and again at pin, where they differ from what the hypervisor built.
    area = [(v.kind, v.entry_pa, v.va) for v in p.hypervisor_flags]
    written = [(model.HYP_AREA_WRITE, SWAPPER + 4 * i, i << 22) for i in range(1009, 1023)]
    assert area == written + written
    assert p.hook_log[-1] == (3, 0x234)


def test_prepatch_pae_bug_c_ends_in_the_kernels_bug():
    xs, p = run(pae=True, prepatch=True)
    c = xs.run_end  # 0x24F000
    copy, detached = c, c + 4096
    # setup_start copies the kernel PMD (alloc_pd #1); the pre-patch one_md_table_init
    # then allocates a fresh PMD for slot 3 (alloc_pd #2) and tries to link it ...
    assert p.allocations == [copy, detached]
    assert p.hook_log == [(1, copy >> 12), (1, detached >> 12)]
    refused = [v for v in p.hypervisor_flags if v.kind == model.KERNEL_PMD_REPLACED]
    assert [(v.entry_pa, v.value, v.frame_pa, v.va) for v in refused] == \
        [(SWAPPER + 24, detached | 0x001, detached, 0xC0000000)]
    # ... the hypervisor refuses, so slot 3 still holds the copy, and 2.6.21's own
    # check (pmd_table != pmd_offset(pud, 0)) BUGs: the run ends there (docs/xen.md).
    assert top(p, 3) == copy | 0x001
    assert "BUG in one_md_table_init" in p.bug and f"{detached:#x}" in p.bug
    # Nothing of the linear map or the fixmap was built: no pin either.
    assert kernel_pmd(p, 427) == 0 and all(op != 3 for op, _ in p.hook_log)


# ------------------------------------------------------------------ poisoned memory (poison=)
# docs/xen.md / guest-contract.md "poison=": the hypervisor stage writes P into every
# non-present entry of the PGD below 1008 (non-PAE) or of the slot-3 PMD page below 428
# (PAE) and of the kernel-mapping PTE pages (past xen_map_end); never the PDPT, A, B or
# anything at or above HVS.  PAE: the 64-bit value P.  Free pages hold P too, but the
# allocator hands out zeroed pages.
P = 0xDEAD0002


def poisoned(pae: bool, mib: int) -> bx.XenStart:
    xs = bx.start_of_day(pae, ram(mib) >> 12)
    area_table = xs.pmd if pae else xs.pt_base
    for t in xs.before.tables:
        if t.phys == area_table:
            limit = xs.area_first
        elif t.phys in xs.kernel_ptes:
            limit = 512 if pae else 1024
        else:
            continue
        for i in range(limit):
            if not t.entries.get(i, 0) & 1:
                t.entries[i] = P
    return xs


@pytest.mark.parametrize("pae", [False, True])
@pytest.mark.parametrize("mib", [6, 128])
def test_poison_patched_same_prediction(pae, mib):
    # Patched: a junk entry is not PRESENT, so a table is allocated where it was (PDE
    # 770..799 / kernel PMD 4..63 and the fixmap and pkmap chunks), never followed; the
    # junk PTEs past xen_map_end (at 6 MiB: past nr_pages, never rewritten) are not
    # present, so the keep-RW rule does not apply to them.  Everything the kernel builds,
    # the records (none) and the hypercall counts are the unpoisoned ones.
    config = cfg(pae=pae, ram_bytes=ram(mib), cpu_nx=pae)
    clean = predict(bx.start_of_day(pae, ram(mib) >> 12).before, config, bx.image())
    xs = poisoned(pae, mib)
    dirty = predict(xs.before, config, bx.image())
    assert dirty.allocations == clean.allocations and dirty.hook_log == clean.hook_log
    assert (dirty.mmu_updates, dirty.pins) == (clean.mmu_updates, clean.pins)
    assert dirty.hypervisor_flags == [] and dirty.cpu == clean.cpu
    for va in range(0xC0000000, 0xC0000000 + ram(mib), 4096):
        assert translate(dirty.memory, dirty.cpu, va) == translate(clean.memory, clean.cpu, va)
    for va in (dirty.layout.fix_to_virt(15), dirty.layout.pkmap_base):
        assert translate(dirty.memory, dirty.cpu, va) == translate(clean.memory, clean.cpu, va)
    assert dirty.pkmap_page_table == clean.pkmap_page_table
    pages = list(dirty.allocations)
    if pae:
        # The PMD copy is a memcpy of the junk too: entries left empty hold P below 428.
        copy = pages.pop(0)
        for i in range(512):
            want = entry(clean.memory, copy, i, 8)
            got = entry(dirty.memory, copy, i, 8)
            assert got == (P if want == 0 and i < 428 else want), f"pmd copy entry {i}"
    for page in pages:  # zeroed when handed out, then written alike
        assert dirty.memory.pages[page] == clean.memory.pages[page], f"page {page:#x}"


def test_poison_prepatch_nonpae_junk_linear_map_pde_is_a_wild_pointer():
    # 128 MiB: PDE 770 holds P; 2.6.21's pmd_none keeps it and kernel_physical_mapping_init
    # would write PTEs through 0xDEAD0000, outside lowmem (0x7FE0000): the kernel faults.
    xs = poisoned(False, 128)
    with pytest.raises(model.WildTablePointer, match="0xdead0000 is outside lowmem"):
        predict(xs.before, cfg(prepatch=True), bx.image())


def test_poison_prepatch_nonpae_small_ram_faults_in_set_fixmap():
    # 6 MiB: the hypervisor's PTE pages (PDE 768, 769) cover all of lowmem, so the linear
    # map needs no junk.  The fixmap range-init keeps PDE 1007 (P) and pkmap keeps 1006 (P)
    # -- pointers derived only -- and links PDEs 1009..1022 (zero, bug B).  Then
    # setup_done's set_fixmap(FIX_PARAVIRT_BOOTMAP = 55) at 0xFBFC6000 goes through PDE 1007
    # to the derived page 0xDEAD0000 and writes entry 0x3C6 there: outside lowmem.
    xs = poisoned(False, 6)
    with pytest.raises(model.WildTablePointer, match=r"0xdead0f18 is outside lowmem"):
        predict(xs.before, cfg(prepatch=True, ram_bytes=ram(6)), bx.image())


# ------------------------------------------------------------ the walker on the prediction
@pytest.mark.parametrize("pae", [False, True])
def test_walker_sees_read_only_tables_in_the_prediction(pae):
    xs, p = run(pae=pae, cpu_nx=True)
    w = walker.walk(p.memory, p.cpu)
    assert w.problems == []
    leaves = {leaf.va: leaf for leaf in w.leaves}
    frames = {t.phys & ADDR for t in w.tables}
    assert frames == tree_frames(p.memory, p.cpu)
    for frame in frames:
        leaf = leaves[0xC0000000 + frame]
        assert leaf.pa == frame and not leaf.writable, f"table frame {frame:#x} writable"
    # Lowmem mapped, 4 KiB pages only, nothing global, nothing below PAGE_OFFSET.
    assert all(0xC0000000 + pa in leaves for pa in range(0, ram(128), 4096))
    assert all(leaf.size == 4096 and not leaf.global_ for leaf in w.leaves)
    assert min(leaves) == 0xC0000000


# ------------------------------------------------------------------------------ bad input
def test_reservetop_not_allowed_with_xen():
    with pytest.raises(ModelError, match="reservetop= is not allowed with pv=xen"):
        cfg(reservetop=64 * M)


def _predict(xs, **kw):
    return predict(xs.before, cfg(pae=xs.pae, **kw), bx.image())


def test_missing_start_info():
    xs = bx.start_of_day(False, ram(128) >> 12)
    del xs.before.guest["start_info"]
    with pytest.raises(ModelError, match="lacks guest variable 'start_info'"):
        _predict(xs)


@pytest.mark.parametrize("field, value, msg", [
    ("magic", 0x1234, "start_info.magic=0x1234"),
    ("hypervisor_virt_start", 0xF5800000, "hypervisor_virt_start=0xf5800000"),
    ("pt_base", 0xC0300000, r"CR3=0x248000, expected __pa\(pt_base\)=0x300000"),
    ("nr_pages", 0, "nr_pages=0"),
    ("nr_pages", "zero", "not a number"),
])
def test_bad_start_info(field, value, msg):
    xs = bx.start_of_day(False, ram(128) >> 12)
    xs.before.guest["start_info"][field] = value
    with pytest.raises(ModelError, match=msg):
        _predict(xs)


def test_start_info_as_hex_strings_from_json():
    xs = bx.start_of_day(True, ram(128) >> 12)
    info = xs.before.guest["start_info"]
    for name in info:
        info[name] = hex(info[name])
    assert len(_predict(xs).allocations) == 63


def test_wrong_paging_mode_at_entry():
    xs = bx.start_of_day(True, ram(128) >> 12)
    xs.before.registers["cr4"] = 0
    with pytest.raises(ModelError, match="CR4.PAE=0, but under pv=xen a PAE build"):
        _predict(xs)


def test_pae_without_kernel_slot():
    xs = bx.start_of_day(True, ram(128) >> 12)
    xs.before.tables[0].entries.clear()  # the PDPT
    with pytest.raises(ModelError, match="no PMD for slot 3"):
        _predict(xs)
