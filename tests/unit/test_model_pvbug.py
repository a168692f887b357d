"""The model's kernel-side mutants of the Xen-like backend (KernelConfig.pvbug) and its
hypercall counters, against docs/xen.md's audit rules, no QEMU.

Before-states from bootstate_xen.py; every record and count below is worked by hand
from docs/xen.md (the hypervisor's rules) and docs/model.md (the mutants' definitions),
never taken from a model run.  Layout at 128 MiB (-m 128: nr_pages 0x7FE0 = max_low_pfn),
bootstate.SYMBOLS (swapper_pg_dir 0x234000, empty_zero_page 0x235000, __init_end
0xC0234000):

  non-PAE: start-info 0x244000, shared-info 0x245000, A 0x246000, B 0x247000,
           PGD 0x248000, kernel PTE pages 0x249000 (PDE 768: PA 0-4M) and 0x24A000
           (PDE 769: 4M-8M); cursor 0x24B000.  The lowmem chunks 770..799 get new PTE
           pages 0x24B000.. in order, so the first alloc_pt is for PDE 770 (VA
           0xC0800000), page 0x24B000, linked at 0x234000 + 770*4 = 0x234C08.
  PAE:     start-info 0x245000, shared-info 0x246000, A 0x247000, B 0x248000,
           PDPT 0x249000, PMD 0x24A000, PTE pages 0x24B000 (PMD 0: 0-2M), 0x24C000
           (PMD 1: 2M-4M), 0x24D000, 0x24E000; cursor 0x24F000.  The first allocation
           is the PMD copy 0x24F000 (alloc_pd), so the first alloc_pt is for kernel PMD
           entry 4 (VA 0xC0800000), page 0x250000, linked at 0x24F000 + 4*8 = 0x24F020.

Where a frame's linear-map leaf sits (the hypervisor's mapping, all 4 KiB, 0x063 unless
a table or the start-info page): non-PAE PA x in PTE page 0x249000 at index x >> 12 for
x < 4M; PAE PA x in [2M, 4M) in PTE page 0x24C000 at index (x >> 12) & 511.
kernel_physical_mapping_init rewrites chunk 0 (and in PAE chunk 1) long before the first
new PTE page is allocated, so the leaves of 0x234000, 0x24B000 and 0x250000 have been
rewritten (pfn | 0x063, the keep-RW rule keeping RW) by the time anything below happens.
"""
from __future__ import annotations

import pytest

import bootstate as bs
import bootstate_xen as bx
from harness import model, x86
from harness.model import ModelError, Violation, predict
from model_paging import entry, translate
from test_model_xen import cfg, ram, run  # the same Xen start-of-day helpers

NX = 1 << 63
SWAPPER = 0x234000


def records(p):
    return [(v.kind, v.entry_pa, v.value, v.frame_pa, v.va) for v in p.hypervisor_flags]


# ------------------------------------------------------------------------------ config
def test_pvbug_values_and_pv_xen_only():
    for bug in ("writable-pt", "writable-root", "unannounced-pt", "batch-hv-write"):
        assert cfg(pvbug=bug).pvbug == bug
    assert cfg().pvbug is None
    with pytest.raises(ModelError, match="pvbug=writable-pt needs pv=xen"):
        cfg(pv="native", pvbug="writable-pt")
    with pytest.raises(ModelError, match="unknown pvbug='nonsense'"):
        cfg(pvbug="nonsense")


# ------------------------------------------------------------------- the mutants' records
# Each case: (pvbug, pae, nx, expected records in order).
CASES = [
    # writable-pt, non-PAE.  alloc_pt(0x24B) announces the frame but leaves its leaf
    # (0x249000 + 0x24B*4, 0x24B063 after the chunk-0 rewrite) RW.  Link time: set_pmd
    # of PDE 770, a non-leaf entry to a known table whose linear leaf (current CR3 =
    # swapper) is RW -> kind 1, frame the PTE page, va the chunk it covers.  Pin time:
    # root 0x234000 (RO), PTE pages in table order 0x249000, 0x24A000 (RO), 0x24B000
    # (RW) -> kind 1 with entry_pa 0, value the RW leaf, va PAGE_OFFSET + frame.
    ("writable-pt", False, False, [
        (1, 0x234C08, 0x24B067, 0x24B000, 0xC0800000),
        (1, 0, 0x24B063, 0x24B000, 0xC024B000)]),
    # writable-pt, PAE: the same with page 0x250000 at kernel PMD entry 4; at pin its
    # leaf (in 0x24C000, index 0x50) is 0x250063, with NX when NX is active (0xC0250000
    # lies above __init_end).
    ("writable-pt", True, False, [
        (1, 0x24F020, 0x250067, 0x250000, 0xC0800000),
        (1, 0, 0x250063, 0x250000, 0xC0250000)]),
    ("writable-pt", True, True, [
        (1, 0x24F020, 0x250067, 0x250000, 0xC0800000),
        (1, 0, NX | 0x250063, 0x250000, 0xC0250000)]),
    # writable-root, non-PAE: swapper_pg_dir (announced by alloc_pd and loaded as the
    # root by hyp_new_baseptr in setup_start) keeps its RW leaf 0x234063 in 0x249000
    # (index 0x234: entry 0x2498D0).  kernel_physical_mapping_init then rewrites that
    # leaf: pfn_pte(0x234, PAGE_KERNEL_EXEC: 0xC0234000 is __init_end, inclusive text) =
    # 0x234063, RW kept -> a leaf written with RW mapping a table frame: kind 1, va
    # 0xC0234000.  Pin: the root comes first, its leaf RW -> kind 1.  (Nothing at link
    # time: the root is never linked as a non-leaf entry.)
    ("writable-root", False, False, [
        (1, 0x2498D0, 0x234063, SWAPPER, 0xC0234000),
        (1, 0, 0x234063, SWAPPER, 0xC0234000)]),
    # writable-root, PAE: 0x234000 lies in [2M, 4M): leaf in 0x24C000 at index 0x34,
    # entry 0x24C1A0; text, so no NX either way.
    ("writable-root", True, False, [
        (1, 0x24C1A0, 0x234063, SWAPPER, 0xC0234000),
        (1, 0, 0x234063, SWAPPER, 0xC0234000)]),
    ("writable-root", True, True, [
        (1, 0x24C1A0, 0x234063, SWAPPER, 0xC0234000),
        (1, 0, 0x234063, SWAPPER, 0xC0234000)]),
    # unannounced-pt: alloc_pt makes the first page read-only (a leaf written RO: no
    # finding) but never announces it, so its link is a non-leaf entry to a frame the
    # hypervisor does not know: kind 3, frame the target.  The PTEs the kernel then
    # writes into it are updates of a non-table frame: plain writes, not audited.  At
    # pin its leaf is RO: nothing (pin looks for RW leaves and the area, not for
    # unknown frames).
    ("unannounced-pt", False, False, [(3, 0x234C08, 0x24B067, 0x24B000, 0xC0800000)]),
    ("unannounced-pt", True, False, [(3, 0x24F020, 0x250067, 0x250000, 0xC0800000)]),
    # batch-hv-write: the first setup-time set_pte is kernel_physical_mapping_init's
    # first PTE, pfn 0 at VA 0xC0000000 (text): 0x063, old 0x063 so RW stays: 0x063.
    # The extra update writes 0x063 to entry 2 of A: non-PAE 0x246000 + 2*4 = 0x246008,
    # PAE 0x247000 + 2*8 = 0x247010, covering HVS + 2 pages.  An entry of A -> kind 2,
    # frame the page written (A); it is a leaf mapping frame 0, not a table: no kind 1.
    # Performed, so at pin A's entry 2 differs from what was built (0): kind 2 again
    # with the value found.
    ("batch-hv-write", False, False, [
        (2, 0x246008, 0x063, 0x246000, 0xFC002000),
        (2, 0x246008, 0x063, 0x246000, 0xFC002000)]),
    ("batch-hv-write", True, False, [
        (2, 0x247010, 0x063, 0x247000, 0xF5802000),
        (2, 0x247010, 0x063, 0x247000, 0xF5802000)]),
]


@pytest.mark.parametrize("bug, pae, nx, want", CASES)
def test_pvbug_records(bug, pae, nx, want):
    _, p = run(pae=pae, cpu_nx=nx, pvbug=bug)
    assert records(p) == want
    assert all(isinstance(v, Violation) for v in p.hypervisor_flags)
    assert p.bug == "" and p.hook_log[-1] == (3, SWAPPER >> 12)


@pytest.mark.parametrize("pae", [False, True])
@pytest.mark.parametrize("bug", model.PVBUGS)
def test_pvbug_keeps_allocations_and_hook_log(pae, bug):
    # None of the mutants changes what is allocated or the hook log: unannounced-pt's
    # alloc_pt is still logged (Kernel.paravirt_alloc_pt logs before delegating).
    _, plain = run(pae=pae)
    _, p = run(pae=pae, pvbug=bug)
    assert p.allocations == plain.allocations
    assert p.hook_log == plain.hook_log


@pytest.mark.parametrize("pae, first", [(False, 0x24B000), (True, 0x250000)])
def test_writable_pt_leaves_the_page_writable_in_the_final_tables(pae, first):
    _, p = run(pae=pae, pvbug="writable-pt")
    t = translate(p.memory, p.cpu, 0xC0000000 + first)
    assert t.pa == first and t.leaf & x86.RW
    assert p.hypervisor_tables[first] == "pte"
    # The second new PTE page is read-only as usual.
    assert not translate(p.memory, p.cpu, 0xC0000000 + first + 4096).leaf & x86.RW


@pytest.mark.parametrize("pae", [False, True])
def test_writable_root_leaves_swapper_writable(pae):
    _, p = run(pae=pae, pvbug="writable-root")
    assert translate(p.memory, p.cpu, 0xC0000000 + SWAPPER).leaf & x86.RW
    assert not translate(p.memory, p.cpu, 0xC0235000).leaf & x86.RW  # the zero page: RO


@pytest.mark.parametrize("pae, first", [(False, 0x24B000), (True, 0x250000)])
def test_unannounced_pt_unknown_to_the_hypervisor_but_read_only(pae, first):
    _, p = run(pae=pae, pvbug="unannounced-pt")
    assert first not in p.hypervisor_tables
    assert first + 4096 in p.hypervisor_tables
    assert not translate(p.memory, p.cpu, 0xC0000000 + first).leaf & x86.RW
    # Its PTEs were written all the same: VA 0xC0800000 maps PA 8M through it.
    t = translate(p.memory, p.cpu, 0xC0800000)
    assert t.pa == 0x800000 and t.chain[-2] & 0xFFFFF000 == first


@pytest.mark.parametrize("pae", [False, True])
def test_batch_hv_write_lands_in_page_a(pae):
    xs, p = run(pae=pae, pvbug="batch-hv-write")
    es = 8 if pae else 4
    assert entry(p.memory, xs.pte_a, 2, es) == 0x063
    t = translate(p.memory, p.cpu, bx.HVS[pae] + 2 * 4096)
    assert t.pa == 0 and t.leaf == 0x063


def test_writable_pt_prepatch_nonpae_with_bug_b_order():
    # Pre-patch non-PAE with writable-pt: kernel_physical_mapping_init links PDE 770
    # first (kind 1 at link, as patched); then the fixmap range-init writes PDEs
    # 1009..1022 (kind 2 each, bug B: PTE pages 0x24B000 + (31 + j) * 4K after the 30
    # lowmem ones and PDE 1007's).  Pin: kind 1 for the frames first (0x24B000 only),
    # then kind 2 for the 14 changed area entries.
    _, p = run(prepatch=True, pvbug="writable-pt")
    c = 0x24B000
    area = [(2, SWAPPER + 4 * i, (c + (31 + j) * 4096) | 0x067, SWAPPER, i << 22)
            for j, i in enumerate(range(1009, 1023))]
    assert records(p) == ([(1, 0x234C08, 0x24B067, 0x24B000, 0xC0800000)] + area
                          + [(1, 0, 0x24B063, 0x24B000, 0xC024B000)] + area)


def test_pvbug_pae_prepatch_stops_at_bug_c_first():
    # Pre-patch PAE ends in one_md_table_init's BUG before any alloc_pt or set_pte, so
    # three mutants never act; writable-root does (setup_start: one mmu_update fewer)
    # but nothing shows: no leaf of swapper is rewritten and there is no pin.  The only
    # record is the refused slot-3 link (kind 4), after alloc_pd made the new PMD page
    # read-only (one mmu_update).
    for bug in model.PVBUGS:
        _, p = run(pae=True, prepatch=True, pvbug=bug)
        assert [v.kind for v in p.hypervisor_flags] == [4] and p.bug
        assert (p.mmu_updates, p.pins) == (8 if bug == "writable-root" else 9, 0)


# ----------------------------------------------------------------------- the counters
# hyp_mmu_update calls (each batched entry one, refused ones included) and hyp_pin calls,
# from docs/xen.md's backend:
#   setup_start  non-PAE: make the zero page and swapper read-only: 2 (alloc_pd and
#                hyp_new_baseptr are no mmu_updates, the PGD copy is a memcpy).
#                PAE: set_pgd(0) for the absent slots 0..2: 3; slot 3: the copy made
#                read-only + set_pgd: 2; zero page and swapper read-only: 2 -> 7.
#   linear map   one set_pte (= one mmu_update) per lowmem page, max_low_pfn of them;
#                each new PTE page: alloc_pt's read-only step + the set_pmd link: 2.
#   fixmap, pkmap one new PTE page each: 2 + 2.
#   setup_done   the shared-info fixmap PTE: 1.  Then one hyp_pin.
# non-PAE 128M: max_low_pfn 0x7FE0 = 32736, PDEs 768..799, 30 new:
#               2 + 32736 + 60 + 4 + 1 = 32803.
# non-PAE 896M: nr_pages 0x37FE0, max_low_pfn = MAXMEM >> 12 = 0x33FFE = 212990, PDEs
#               768..975 (208), 206 new: 2 + 212990 + 412 + 4 + 1 = 213409.
# PAE 128M:     32736 leaves, PMD 0..63, 60 new: 7 + 32736 + 120 + 4 + 1 = 32868.
# PAE 896M:     max_low_pfn 0x2D7FE = 186366, PMD 0..363 (364), 360 new:
#               7 + 186366 + 720 + 4 + 1 = 187098.
@pytest.mark.parametrize("pae, mib, updates", [
    (False, 128, 32803), (False, 896, 213409), (True, 128, 32868), (True, 896, 187098)])
def test_hypercall_counts(pae, mib, updates):
    _, p = run(pae=pae, ram_bytes=ram(mib))
    assert (p.mmu_updates, p.pins) == (updates, 1)


@pytest.mark.parametrize("pae, base", [(False, 32803), (True, 32868)])
@pytest.mark.parametrize("bug, delta", [
    ("writable-pt", -1),  # one read-only step skipped
    ("writable-root", -1),  # likewise
    ("unannounced-pt", 0),  # only hyp_announce skipped, which is no mmu_update
    ("batch-hv-write", +1),  # the extra update of A's entry 2
])
def test_hypercall_counts_with_pvbug(pae, base, bug, delta):
    _, p = run(pae=pae, pvbug=bug)
    assert (p.mmu_updates, p.pins) == (base + delta, 1)


def test_hypercall_counts_prepatch():
    # Non-PAE bug B: 14 more PTE pages (1009..1022), each read-only + link: 32803 + 28.
    _, p = run(prepatch=True)
    assert (p.mmu_updates, p.pins) == (32803 + 28, 1)
    # PAE bug C: setup_start's 7, one_md_table_init's alloc_pd making the fresh PMD
    # page read-only (1), then the refused slot-3 link (counted): 9, no pin.
    _, p = run(pae=True, prepatch=True)
    assert (p.mmu_updates, p.pins) == (9, 0)


def test_hypercall_counts_native_are_zero():
    p = predict(bs.head_s_state(False), cfg(pv="native"), bs.image())
    assert (p.mmu_updates, p.pins) == (0, 0)


# ------------------------------------------------------- runs of PTEs = one set_pte each
def _outcome(p):
    return (p.memory.pages, p.allocations, p.hook_log, p.hypervisor_flags, p.cpu,
            p.mmu_updates, p.pins, p.bug, p.hypervisor_tables)


@pytest.mark.parametrize("pae", [False, True])
@pytest.mark.parametrize("prepatch", [False, True])
@pytest.mark.parametrize("bug", [None, *model.PVBUGS])
def test_pte_runs_same_as_entry_by_entry(monkeypatch, pae, prepatch, bug):
    # Kernel.set_ptes hands a run of PTEs to the backend's set_ptes (one audit pass and
    # one slice); without it every PTE goes through set_pte and mmu_update alone.  Both
    # must give the very same prediction, records and counts included.
    _, fast = run(pae=pae, prepatch=prepatch, pvbug=bug, cpu_nx=pae)
    monkeypatch.delattr(model.XenBackend, "set_ptes")
    _, slow = run(pae=pae, prepatch=prepatch, pvbug=bug, cpu_nx=pae)
    assert _outcome(fast) == _outcome(slow)


@pytest.mark.parametrize("pae", [False, True])
def test_native_pte_runs_same_as_entry_by_entry(monkeypatch, pae):
    config = cfg(pv="native", pae=pae, cpu_pse=False, cpu_nx=pae)
    fast = predict(bs.head_s_state(pae), config, bs.image())
    monkeypatch.delattr(model.NativeBackend, "set_ptes")
    slow = predict(bs.head_s_state(pae), config, bs.image())
    assert _outcome(fast) == _outcome(slow)
