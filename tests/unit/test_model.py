"""The reference model against the spec (kernel-facts.md, seed patch), no QEMU.

Before-states come from bootstate.py (head.S's layout per kernel-facts §4);
every expected number is worked by hand from the spec in the comments, never
taken from a model run.

Shared layout (bootstate.SYMBOLS): __init_end = swapper_pg_dir = 0xC0234000
(phys 0x234000), empty_zero_page phys 0x235000, _end 0xC02418A4, so pg0 sits at
0x242000.  Non-PAE build: 2 pg0 tables (PDE 0,1 / 768,769), cursor 0x244000.
PAE build: 3 pg0 tables, cursor 0x245000.
"""
from __future__ import annotations

import pytest

import bootstate as bs
from harness import model
from harness.model import KernelConfig, ModelError, WildTablePointer, predict
from harness.walker import TablePage
from model_paging import entry, translate

M = 1 << 20
NX = 1 << 63
CUR = bs.CURSOR  # boot allocator cursor at entry, by build (PAE?)


def cfg(**kw) -> KernelConfig:
    base = dict(pae=False, prepatch=False, cpu_pse=False, cpu_pge=False, cpu_pae=True,
                cpu_nx=False, ram_bytes=128 * M)
    base.update(kw)
    return KernelConfig(**base)


def run(config: KernelConfig, *, symbols=None, extra_pgd=None):
    before = bs.head_s_state(config.pae, symbols=symbols, extra_pgd=extra_pgd)
    return predict(before, config, bs.image(**(symbols or {})))


def pde(p, idx):
    """Entry idx of the final top-level table (PAE: the PDPT)."""
    return entry(p.memory, p.cpu.cr3 & ~0x1F, idx, p.entry_size)


def kernel_pmd(p, idx):
    """PAE: entry idx of the PMD page behind PDPT slot 3."""
    return entry(p.memory, pde(p, 3) & 0xFFFFF000, idx, 8)


# ----------------------------------------------------------------------------- layout numbers
@pytest.mark.parametrize("pae, fixmap_start, pkmap_base", [
    # FIXADDR_TOP 0xFFFFF000; last fixmap slot 0xFFFFF000 - 31*4K = 0xFFFE0000, PMD aligned.
    # PKMAP_BASE = (0xFFFFF000 - 32*4K - 4K*(LAST_PKMAP+1)) & PMD_MASK:
    #   non-PAE 0xFFFDF000 - 0x401000 = 0xFFBDE000 -> 0xFF800000
    #   PAE     0xFFFDF000 - 0x201000 = 0xFFDDE000 -> 0xFFC00000
    (False, 0xFFC00000, 0xFF800000),
    (True, 0xFFE00000, 0xFFC00000),
])
def test_layout_default_top(pae, fixmap_start, pkmap_base):
    lay = model.compute_layout(cfg(pae=pae, ram_bytes=1024 * M), bs.image())
    assert lay.fixaddr_top == 0xFFFFF000
    assert lay.vmalloc_reserve == 128 * M
    assert lay.maxmem == 896 * M
    assert lay.max_pfn == 0x40000 and lay.max_low_pfn == 0x38000  # 1 GiB capped at 896 MiB
    assert lay.fixmap_start == fixmap_start
    assert lay.fixmap_end == 0  # (0xFFFFF000 + PMD_SIZE - 1) & PMD_MASK wraps to 0
    assert lay.pkmap_base == pkmap_base
    assert lay.pkmap_end - lay.pkmap_base == (4 if not pae else 2) * M  # exactly one PMD
    assert lay.swapper_pg_dir == 0x234000 and lay.empty_zero_page == 0x235000


@pytest.mark.parametrize("pae, prepatch, start, end, pkmap_base", [
    # reservetop=64M: FIXADDR_TOP = -0x4000000 - 0x1000 = 0xFBFFF000; last slot 0xFBFE0000.
    # end = (0xFBFFF000 + PMD_SIZE - 1) & PMD_MASK = 0xFC000000 (patched), 0 (pre-patch).
    # PKMAP_BASE: non-PAE (0xFBFDF000 - 0x401000) & 0xFFC00000 = 0xFBBDE000 -> 0xFB800000;
    #             PAE     (0xFBFDF000 - 0x201000) & 0xFFE00000 = 0xFBDDE000 -> 0xFBC00000.
    (False, False, 0xFBC00000, 0xFC000000, 0xFB800000),
    (False, True, 0xFBC00000, 0, 0xFB800000),
    (True, False, 0xFBE00000, 0xFC000000, 0xFBC00000),
    (True, True, 0xFBE00000, 0, 0xFBC00000),
])
def test_layout_reservetop(pae, prepatch, start, end, pkmap_base):
    lay = model.compute_layout(cfg(pae=pae, prepatch=prepatch, ram_bytes=1024 * M,
                                   reservetop=64 * M), bs.image())
    assert lay.fixaddr_top == 0xFBFFF000
    assert lay.vmalloc_reserve == 192 * M
    # MAXMEM = 1 GiB - 192 MiB = 832 MiB = 0x34000 pages.
    assert lay.max_low_pfn == 0x34000
    assert (lay.fixmap_start, lay.fixmap_end, lay.pkmap_base) == (start, end, pkmap_base)


def test_layout_mem_limit_and_small_ram():
    # mem=64M on 1 GiB: max_pfn = 0x4000, below MAXMEM, so max_low_pfn too.
    lay = model.compute_layout(cfg(ram_bytes=1024 * M, mem_limit=64 * M), bs.image())
    assert (lay.max_pfn, lay.max_low_pfn) == (0x4000, 0x4000)
    # mem= above the RAM changes nothing: 128 MiB = 0x8000 pages.
    lay = model.compute_layout(cfg(ram_bytes=128 * M, mem_limit=512 * M), bs.image())
    assert (lay.max_pfn, lay.max_low_pfn) == (0x8000, 0x8000)


def test_layout_smp_fixmap_size_same_ranges():
    # 194 slots: last at 0xFFFFF000 - 193*4K = 0xFFF3E000 -> 0xFFC00000 / 0xFFE00000;
    # FIXADDR_BOOT_START 0xFFF3D000; PKMAP: 0xFFB3C000 -> 0xFF800000 / 0xFFD3C000 -> 0xFFC00000.
    lay = model.compute_layout(cfg(fixmap_entries=194), bs.image())
    assert (lay.fixmap_start, lay.pkmap_base) == (0xFFC00000, 0xFF800000)
    lay = model.compute_layout(cfg(pae=True, fixmap_entries=194), bs.image())
    assert (lay.fixmap_start, lay.pkmap_base) == (0xFFE00000, 0xFFC00000)


@pytest.mark.parametrize("pae, pkmap_base", [
    # 1023 fixmap slots put FIXADDR_BOOT_START = 0xFFFFF000 - 1023*4K = 0xFFC00000 right on
    # a PMD boundary, so the "+1" guard page of PKMAP_BASE matters:
    #   non-PAE (0xFFC00000 - 1025*4K) & 0xFFC00000 = 0xFF7FF000 -> 0xFF400000
    #   PAE     (0xFFC00000 -  513*4K) & 0xFFE00000 = 0xFF9FF000 -> 0xFF800000
    # (without the guard page: 0xFF800000 -> 0xFF800000 and 0xFFA00000 -> 0xFFA00000).
    (False, 0xFF400000),
    (True, 0xFF800000),
])
def test_layout_pkmap_guard_page(pae, pkmap_base):
    lay = model.compute_layout(cfg(pae=pae, fixmap_entries=1023), bs.image())
    assert lay.fixaddr_boot_start == 0xFFC00000
    assert lay.pkmap_base == pkmap_base
    # Last slot 0xFFFFF000 - 1022*4K = 0xFFC01000 -> the range-init starts at 0xFFC00000.
    assert lay.fixmap_start == 0xFFC00000


# ------------------------------------------------------------------ every lowmem page mapped
COMBOS = [(pae, pse, pge, nx) for pae in (False, True) for pse in (False, True)
          for pge in (False, True) for nx in (False, True)]


@pytest.mark.parametrize("pae, pse, pge, nx", COMBOS)
def test_every_lowmem_page_mapped_with_kernel_protection(pae, pse, pge, nx):
    p = run(cfg(pae=pae, cpu_pse=pse, cpu_pge=pge, cpu_nx=nx))
    nx_on = pae and nx  # NX exists only with PAE; noexec=off not given
    init_end = bs.SYMBOLS["__init_end"]
    for pfn in range(0x8000):  # 128 MiB of lowmem
        va = 0xC0000000 + (pfn << 12)
        t = translate(p.memory, p.cpu, va)
        assert t is not None, f"VA {va:#x} (pfn {pfn:#x}) is not mapped"
        assert t.pa == pfn << 12, f"VA {va:#x} maps {t.pa:#x}"
        if pse:
            assert t.size == (2 * M if pae else 4 * M)
            chunk_va = va & ~(t.size - 1)
            executable = chunk_va <= init_end  # text test on the large page's first byte
            want = 0x0E3  # P|RW|A|D|PSE
        else:
            assert t.size == 4096
            executable = va <= init_end  # inclusive of __init_end, from PAGE_OFFSET
            want = 0x063
        if pge:
            want |= 0x100
        if nx_on and not executable:
            want |= NX
        assert t.leaf & (0xFFF | NX) == want, (
            f"leaf for VA {va:#x}: flags {t.leaf & (0xFFF | NX):#x}, expected {want:#x}")
        assert all(not e & 0x100 for e in t.chain[:-1]), "GLOBAL in a non-leaf entry"


def test_nothing_mapped_above_lowmem_but_fixmap_tables():
    # 128 MiB: PAGE_OFFSET + 128 MiB has no mapping (tables exist only up to lowmem).
    p = run(cfg(pae=True))
    assert translate(p.memory, p.cpu, 0xC8000000) is None
    assert kernel_pmd(p, 64) == 0


# ------------------------------------------------------------- allocations: count and order
@pytest.mark.parametrize("pae, pse, ram, count", [
    # non-PAE: lowmem spans 128M/4M = 32 PDEs (768..799) or 896M/4M = 224 (768..991).
    # head.S's pg0 already backs 768 and 769, so 30 / 222 new PTE pages without PSE,
    # none with PSE; plus one fixmap PTE page (PDE 1023) and one pkmap (PDE 1022).
    (False, False, 128 * M, 30 + 2),
    (False, True, 128 * M, 2),
    (False, False, 1024 * M, 222 + 2),
    (False, True, 1024 * M, 2),
    # PAE: one PMD page for slot 3, then 128M/2M = 64 or 896M/2M = 448 PTE pages without
    # PSE, plus fixmap (pmd 511) and pkmap (pmd 510).
    (True, False, 128 * M, 1 + 64 + 2),
    (True, True, 128 * M, 1 + 2),
    (True, False, 1024 * M, 1 + 448 + 2),
    (True, True, 1024 * M, 1 + 2),
])
@pytest.mark.parametrize("prepatch", [False, True])
def test_allocation_count_and_order(pae, pse, ram, count, prepatch):
    p = run(cfg(pae=pae, cpu_pse=pse, ram_bytes=ram, prepatch=prepatch))
    c = CUR[pae]
    assert p.allocations == [c + i * 4096 for i in range(count)]
    assert p.cursor_after == c + count * 4096
    if pae:
        # alloc_pd for the kernel PMD page (before it is linked), then alloc_pt for every
        # PTE page in allocation order.
        expected_log = [(1, c >> 12)] + [(2, (c >> 12) + i) for i in range(1, count)]
    else:
        # alloc_pd(__pa(swapper_pg_dir) >> 12) = 0x234 first, then one alloc_pt each.
        expected_log = [(1, 0x234)] + [(2, (c >> 12) + i) for i in range(count)]
    assert p.hook_log == expected_log


def test_nonpae_tables_linked_where_expected():
    p = run(cfg())  # non-PAE, no PSE, 128 MiB
    c = CUR[False]  # 0x244000
    assert pde(p, 768) == 0x242007 and pde(p, 769) == 0x243007  # head.S's pg0, reused as is
    for i in range(30):  # PDE 770..799 get allocations 0..29, P|RW|U|A|D
        assert pde(p, 770 + i) == (c + i * 4096) | 0x067
    assert pde(p, 800) == 0 and pde(p, 1021) == 0
    assert pde(p, 1023) == (c + 30 * 4096) | 0x067  # fixmap first (0x262000)
    assert pde(p, 1022) == (c + 31 * 4096) | 0x067  # then pkmap (0x263000)
    assert p.pkmap_page_table == c + 31 * 4096
    # The identity PDEs of head.S stay (non-PAE needs no setup_done work).
    assert pde(p, 0) == 0x242007 and pde(p, 1) == 0x243007


def test_pae_tables_linked_where_expected():
    p = run(cfg(pae=True))  # PAE, no PSE, 128 MiB
    c = CUR[True]  # 0x245000
    assert p.cpu.cr3 == 0x234000
    assert pde(p, 3) == c | 0x001  # the kernel PMD page, first allocation
    assert pde(p, 0) == c | 0x001  # setup_done: slot 0 shares it
    assert pde(p, 1) == pde(p, 2) == 0x235001  # the zero page
    for i in range(64):
        assert kernel_pmd(p, i) == (c + (1 + i) * 4096) | 0x067
    assert kernel_pmd(p, 511) == (c + 65 * 4096) | 0x067 == 0x286067  # fixmap
    assert kernel_pmd(p, 510) == (c + 66 * 4096) | 0x067 == 0x287067  # pkmap
    assert all(kernel_pmd(p, i) == 0 for i in range(64, 510))
    assert p.pkmap_page_table == 0x287000
    assert 0x235000 in p.memory.pages and not any(p.memory.pages[0x235000])


# ---------------------------------------------------------------------- registers and the switch
@pytest.mark.parametrize("pae, pse, pge, nx, cr4, efer", [
    (False, False, False, False, 0x00, 0),
    (False, True, True, True, 0x90, 0),  # PSE|PGE; no NX without PAE
    (True, False, False, False, 0x20, 0),  # PAE
    (True, True, True, False, 0xB0, 0),
    (True, True, True, True, 0xB0, 0x800),  # EFER.NXE (bit 11)
])
def test_final_registers(pae, pse, pge, nx, cr4, efer):
    p = run(cfg(pae=pae, cpu_pse=pse, cpu_pge=pge, cpu_nx=nx))
    assert p.cpu.cr3 == 0x234000  # __pa(swapper_pg_dir)
    assert p.cpu.cr0 == bs.CR0_BOOT
    assert (p.cpu.cr4, p.cpu.efer) == (cr4, efer)
    assert p.layout.nx_active == (pae and nx)


def test_noexec_off_keeps_nx_off():
    p = run(cfg(pae=True, cpu_nx=True, noexec_off=True))
    assert p.cpu.efer == 0 and not p.layout.nx_active
    for page in p.allocations[1:]:  # the PTE pages: no entry carries bit 63
        assert not any(entry(p.memory, page, j, 8) & NX for j in range(512))


def test_pae_in_place_switch_keeps_kernel_pdes():
    before = bs.head_s_state(True)
    before_page = bytes(before.memory().pages[0x234000])
    p = predict(before, cfg(pae=True, cpu_pse=True), bs.image())
    after_page = bytes(p.memory.pages[0x234000])
    # Only the first 32 bytes (the PDPT) change; the stale non-PAE PDEs 8.. (incl. the
    # kernel's 768..770 at offset 3072) stay as head.S wrote them.
    assert after_page[32:] == before_page[32:]
    assert int.from_bytes(after_page[3072:3076], "little") == 0x242007
    pdpt = [int.from_bytes(after_page[i * 8:i * 8 + 8], "little") for i in range(4)]
    c = CUR[True]
    assert pdpt == [c | 1, 0x235001, 0x235001, c | 1]
    # Every PDPT entry is legal: only P and the address.
    assert all(e & ~0xFFFFF000 == 1 for e in pdpt)


def test_pae_pse_large_pages_in_kernel_pmd():
    p = run(cfg(pae=True, cpu_pse=True, cpu_pge=True, cpu_nx=True))
    # 64 large pages of 2 MiB; __init_end 0xC0234000 is in chunk 1, so chunks 0 and 1 are
    # "text" (exec), chunks 2.. NX.
    for i in range(64):
        want = (i << 21) | 0x1E3 | (NX if i >= 2 else 0)
        assert kernel_pmd(p, i) == want, f"pmd {i}: {kernel_pmd(p, i):#x} != {want:#x}"
    assert p.direct_map_end_pfn == 0x8000


def test_headS_tables_reused_and_leaves_rewritten():
    p = run(cfg(cpu_pge=True))  # non-PAE, no PSE
    # PDE 768 still points at pg0 with head.S's 0x007 flags, but its PTEs were rewritten
    # with the kernel protection 0x063 | GLOBAL (the identity PDE 0 sees the same page).
    assert pde(p, 768) == 0x242007
    for j in (0, 1, 0x234, 1023):
        assert entry(p.memory, 0x242000, j, 4) == (j << 12) | 0x163
    assert entry(p.memory, 0x243000, 5, 4) == ((1024 + 5) << 12) | 0x163


def test_pse_last_large_page_runs_past_max_low_pfn():
    # non-PAE, 130 MiB: max_low_pfn 0x8200; 4 MiB pages at pfn 0, 0x400, ..., 0x8000 ->
    # 33 pages (PDE 768..800); the last covers 128..132 MiB, past the end of RAM.
    p = run(cfg(cpu_pse=True, ram_bytes=130 * M))
    assert pde(p, 800) == 0x8000000 | 0x0E3
    assert pde(p, 801) == 0
    assert p.direct_map_end_pfn == 0x8400
    # PAE, 129 MiB: max_low_pfn 0x8100; 2 MiB pages up to pfn 0x8000 -> pmd 0..64.
    p = run(cfg(pae=True, cpu_pse=True, ram_bytes=129 * M))
    assert kernel_pmd(p, 64) == 0x8000000 | 0x0E3
    assert kernel_pmd(p, 65) == 0
    assert p.direct_map_end_pfn == 0x8200


def test_4k_path_stops_at_max_low_pfn():
    # non-PAE, 130 MiB, no PSE: PDE 800 is a new PTE page holding pfn 0x8000..0x81FF only.
    p = run(cfg(ram_bytes=130 * M))
    table = pde(p, 800) & 0xFFFFF000
    assert entry(p.memory, table, 0x1FF, 4) == (0x81FF << 12) | 0x063
    assert entry(p.memory, table, 0x200, 4) == 0
    assert p.direct_map_end_pfn == 0x8200


# ------------------------------------------------------------ pre-patch behaviours (§6 A-C)
def test_bug_a_stale_address_makes_chunk_above_init_end_executable():
    # PAE, NX, no PSE.  __init_end 0xC0234000 lies in the chunk 0xC0200000-0xC03FFFFF
    # (pmd 1).  Patched: PTE j of that chunk is exec iff 0xC0200000 + j*4K <= 0xC0234000,
    # i.e. j <= 0x34.  Pre-patch: `address` stays at the chunk start (text), so all 512
    # PTEs are exec.
    config = dict(pae=True, cpu_nx=True)
    new, old = run(cfg(**config)), run(cfg(prepatch=True, **config))
    t_new = kernel_pmd(new, 1) & 0xFFFFF000
    t_old = kernel_pmd(old, 1) & 0xFFFFF000
    for j in range(512):
        pa = (0x200 + j) << 12
        assert entry(new.memory, t_new, j, 8) == pa | 0x063 | (NX if j > 0x34 else 0)
        assert entry(old.memory, t_old, j, 8) == pa | 0x063, f"pre-patch pte {j:#x}"


def test_bug_a_chunk_starting_at_init_end():
    # __init_end (= bss start = swapper_pg_dir) exactly at 0xC0400000, the start of pmd 2.
    # Patched: only PTE 0 (the page at __init_end, inclusive) is exec.  Pre-patch: the
    # chunk's first address is "text", so all of pmd 2 is exec.
    syms = {"__init_end": 0xC0400000, "swapper_pg_dir": 0xC0400000,
            "empty_zero_page": 0xC0401000, "_end": 0xC0410000}
    config = dict(pae=True, cpu_nx=True)
    new = run(cfg(**config), symbols=syms)
    old = run(cfg(prepatch=True, **config), symbols=syms)
    t_new, t_old = kernel_pmd(new, 2) & 0xFFFFF000, kernel_pmd(old, 2) & 0xFFFFF000
    assert entry(new.memory, t_new, 0, 8) == 0x400063
    assert all(entry(new.memory, t_new, j, 8) & NX for j in range(1, 512))
    assert not any(entry(old.memory, t_old, j, 8) & NX for j in range(512))
    # The chunk below is exec in both, the chunk above NX in both.
    assert not entry(new.memory, kernel_pmd(new, 1) & 0xFFFFF000, 511, 8) & NX
    assert entry(old.memory, kernel_pmd(old, 3) & 0xFFFFF000, 0, 8) & NX


@pytest.mark.parametrize("pae, first, extra", [
    # non-PAE: fixmap range starts at PDE 0xFBC00000 >> 22 = 1007; patched stops at
    # 0xFC000000 (PDE 1008), pre-patch goes on to the wrap: PDEs 1008..1023 = 16 extra.
    (False, 1008, 16),
    # PAE: pmd index of 0xFBE00000 is 479; 0xFC000000 is pmd 480; 480..511 = 32 extra.
    (True, 480, 32),
])
def test_bug_b_range_init_to_the_wrap_with_lowered_top(pae, first, extra):
    config = dict(pae=pae, cpu_pse=True, reservetop=64 * M)
    new, old = run(cfg(**config)), run(cfg(prepatch=True, **config))
    # PSE: no PTE pages for lowmem.  Patched: (PAE: 1 PMD) + fixmap + pkmap.
    base = 1 if pae else 0
    assert len(new.allocations) == base + 2
    assert len(old.allocations) == base + 2 + extra
    top = kernel_pmd if pae else pde
    n = 512 if pae else 1024
    assert all(top(new, i) == 0 for i in range(first, n)), "patched reached past FIXADDR_TOP"
    assert all(top(old, i) & 0xFFF == 0x067 for i in range(first, n)), "pre-patch stopped early"
    # The pre-patch extra pages are the fixmap range's, in address order, up to the top.
    assert [top(old, i) & 0xFFFFF000 for i in range(first - 1, n)] == \
        old.allocations[base:base + extra + 1]


def test_bug_c_pmd_none_keeps_junk_entry():
    # non-PAE with PSE (no lowmem PTE pages): PDE 1023 (the fixmap PMD) holds 0xDEAD0002,
    # non-zero but not present.  Patched: not PRESENT -> a fresh PTE page at the cursor
    # 0x244000, then pkmap gets 0x245000.  Pre-patch: pmd_none is false, the junk stays,
    # and pkmap gets 0x244000.
    junk = {1023: 0xDEAD0002}
    new = run(cfg(cpu_pse=True), extra_pgd=junk)
    old = run(cfg(cpu_pse=True, prepatch=True), extra_pgd=junk)
    assert pde(new, 1023) == 0x244067 and pde(new, 1022) == 0x245067
    assert pde(old, 1023) == 0xDEAD0002 and pde(old, 1022) == 0x244067
    assert old.allocations == [0x244000]
    assert old.hook_log == [(1, 0x234), (2, 0x244)]


def test_bug_c_junk_in_lowmem_pmd_is_a_wild_pointer_pre_patch():
    # 256 MiB, no PSE: PDE 800 (VA 0xC8000000) holds 0xDEAD0002.  Pre-patch keeps it and
    # would write PTEs into "table" 0xDEAD0000, far outside lowmem (0x10000000).
    junk = {800: 0xDEAD0002}
    with pytest.raises(WildTablePointer, match="0xdead0000 is outside lowmem"):
        run(cfg(ram_bytes=256 * M, prepatch=True), extra_pgd=junk)
    new = run(cfg(ram_bytes=256 * M), extra_pgd=junk)
    assert pde(new, 800) & 0xFFF == 0x067
    assert translate(new.memory, new.cpu, 0xC8000000).pa == 0x8000000


# ------------------------------------------------------------------ poisoned memory (poison=)
# guest-contract.md "poison=": before pagetable_init every zero u32 word of swapper_pg_dir at
# byte offset >= 32 holds P (non-PAE PDE indices >= 8; the PAE build's head.S tables are
# non-PAE too), and the free pages the allocator may hand out are filled with P (the
# allocator still zeroes what it hands out).  P is non-zero with bit 0 clear: never present.
P = 0xDEAD0002


def poisoned_pgd(pae: bool) -> dict[int, int]:
    """PDE index -> P for every empty entry at offset >= 32 of head.S's swapper_pg_dir."""
    n = bs.PG0_TABLES[pae]  # pg0 tables at PDE 0.. and 768..
    used = set(range(n)) | set(range(768, 768 + n))
    return {i: P for i in range(8, 1024) if i not in used}


def test_poison_patched_pse_fresh_tables_where_junk_was():
    # non-PAE with PSE, 128 MiB: the linear map is large pages (set_pmd overwrites the junk
    # at PDE 770..799); fixmap PDE 1023 and pkmap PDE 1022 hold P, not PRESENT -> fresh PTE
    # pages 0x244000 and 0x245000 (zeroed), exactly as without poison; 800..1021 keep P.
    p = run(cfg(cpu_pse=True), extra_pgd=poisoned_pgd(False))
    assert p.allocations == [0x244000, 0x245000]
    assert pde(p, 1023) == 0x244067 and pde(p, 1022) == 0x245067
    assert p.pkmap_page_table == 0x245000
    assert all(pde(p, 768 + i) == (i << 22) | 0x0E3 for i in range(32))
    assert pde(p, 800) == P and pde(p, 1021) == P and pde(p, 8) == P
    assert not any(p.memory.pages[0x244000]) and not any(p.memory.pages[0x245000])


def test_poison_prepatch_pse_junk_kept_pointers_only_derived():
    # The same before-state pre-patch: pmd_none(0xDEAD0002) is false, so the fixmap and
    # pkmap entries are kept and no PTE page is allocated; one_page_table_init and
    # permanent_kmaps_init only derive pointers from them (pkmap_page_table 0xDEAD0000),
    # nothing is stored through them: the prediction succeeds.
    p = run(cfg(cpu_pse=True, prepatch=True), extra_pgd=poisoned_pgd(False))
    assert p.allocations == [] and p.hook_log == [(1, 0x234)]
    assert pde(p, 1023) == P and pde(p, 1022) == P
    assert p.pkmap_page_table == 0xDEAD0000
    assert all(pde(p, 768 + i) == (i << 22) | 0x0E3 for i in range(32))


def test_poison_prepatch_4k_junk_in_linear_map_pde_is_a_wild_pointer():
    # non-PAE, no PSE, 128 MiB: PDE 770 (VA 0xC0800000) holds P.  Pre-patch keeps it, and
    # kernel_physical_mapping_init writes its PTEs through 0xDEAD0000 (far outside lowmem,
    # which ends at 0x8000000): the kernel faults.  Patched: a fresh page, 32 allocations
    # as without poison.
    with pytest.raises(WildTablePointer, match="0xdead0000 is outside lowmem"):
        run(cfg(prepatch=True), extra_pgd=poisoned_pgd(False))
    p = run(cfg(), extra_pgd=poisoned_pgd(False))
    assert p.allocations == [0x244000 + i * 4096 for i in range(32)]
    assert pde(p, 770) == 0x244067


@pytest.mark.parametrize("pae, pse, prepatch", [
    (False, False, False), (False, True, False), (True, False, False), (True, True, False),
    (True, False, True), (True, True, True), (False, True, True)])
def test_poison_changes_nothing_the_kernel_builds(pae, pse, prepatch):
    # Wherever the kernel does not keep junk (patched; PAE either way, as its kernel PMD
    # page is always fresh and the PDPT bytes below offset 32 are not poisoned), the
    # prediction is the unpoisoned one, except that the poisoned words stay in
    # swapper_pg_dir.  (Non-PAE pre-patch with PSE keeps its fixmap/pkmap junk, above.)
    config = cfg(pae=pae, cpu_pse=pse, prepatch=prepatch, cpu_nx=pae)
    clean, dirty = run(config), run(config, extra_pgd=poisoned_pgd(pae))
    if not pae and prepatch:
        assert dirty.allocations == [] != clean.allocations
        return
    assert dirty.allocations == clean.allocations and dirty.hook_log == clean.hook_log
    assert dirty.cpu == clean.cpu and dirty.pkmap_page_table == clean.pkmap_page_table
    assert set(dirty.memory.pages) == set(clean.memory.pages)
    for page in clean.memory.pages:
        if page == 0x234000:
            continue
        assert dirty.memory.pages[page] == clean.memory.pages[page], f"page {page:#x}"
    # swapper_pg_dir: the live entries agree; the rest holds P (non-PAE) or is ignored
    # stale non-PAE PDEs (PAE: the PDPT is the first 32 bytes only).
    for i in range(1024 if not pae else 4):
        want = entry(clean.memory, 0x234000, i, 4 if not pae else 8)
        got = entry(dirty.memory, 0x234000, i, 4 if not pae else 8)
        assert got == (P if want == 0 and not pae and i >= 8 else want), f"entry {i}"


def test_allocated_pages_are_zero_whatever_the_before_state_held():
    # A stale, unreachable page in the before-state at the cursor, full of P (as the free
    # pages are under poison=): the allocator may hand it out -- it is no live boot
    # table -- and zeroes it.  non-PAE with PSE: 0x244000 becomes the fixmap PTE page, in
    # which natively nothing is written, so it must be all zero.
    before = bs.head_s_state(False)
    before.tables.append(TablePage("pte", 0x244000, {j: P for j in range(1024)}))
    p = predict(before, cfg(cpu_pse=True), bs.image())
    assert p.allocations[0] == 0x244000 and pde(p, 1023) == 0x244067
    assert not any(p.memory.pages[0x244000])


def _same(a, b):
    return (a.memory.pages == b.memory.pages and a.allocations == b.allocations
            and a.hook_log == b.hook_log and a.cpu == b.cpu and a.cursor_after == b.cursor_after)


@pytest.mark.parametrize("pse", [False, True])
@pytest.mark.parametrize("pge", [False, True])
@pytest.mark.parametrize("ram", [128 * M, 1024 * M])
def test_nonpae_default_top_prepatch_identical(pse, pge, ram):
    # §6: natively with the default top a non-PAE boot gives the same tables either way.
    config = dict(cpu_pse=pse, cpu_pge=pge, cpu_nx=True, ram_bytes=ram)
    assert _same(run(cfg(**config)), run(cfg(prepatch=True, **config)))


@pytest.mark.parametrize("pse, nx", [(True, True), (False, False), (True, False)])
def test_pae_prepatch_identical_without_bug_a_conditions(pse, nx):
    config = dict(pae=True, cpu_pse=pse, cpu_nx=nx, cpu_pge=True)
    assert _same(run(cfg(**config)), run(cfg(prepatch=True, **config)))


def test_pae_prepatch_differs_only_through_bug_a():
    config = dict(pae=True, cpu_nx=True)
    new, old = run(cfg(**config)), run(cfg(prepatch=True, **config))
    assert new.allocations == old.allocations and new.hook_log == old.hook_log
    assert new.cpu == old.cpu
    diffs = []
    for page in sorted(new.memory.pages):
        for j in range(512):
            a, b = entry(new.memory, page, j, 8), entry(old.memory, page, j, 8)
            if a != b:
                diffs.append((page, j, a ^ b))
    # PTE page of pmd 1 is allocation 2 (PMD, pmd 0, pmd 1): 0x247000; entries 0x35..0x1FF
    # differ, by the NX bit only.
    assert diffs == [(0x247000, j, NX) for j in range(0x35, 0x200)]


# ------------------------------------------------------------------------------ bad input
def test_pae_build_on_cpu_without_pae_is_refused():
    with pytest.raises(ModelError, match="PAE build on a CPU without PAE"):
        run(cfg(pae=True, cpu_pae=False))


def test_unknown_backend():
    with pytest.raises(ModelError, match="unknown paravirt backend pv='foo'"):
        run(cfg(pv="foo"))


@pytest.mark.parametrize("pae", [False, True])
def test_prepatch_goes_through_the_backend_hooks(monkeypatch, pae):
    # docs/xen.md: the prepatch build calls paravirt_pagetable_setup_start/done at the
    # 2.6.22 points, with 2.6.21's inline code in the native backend's hooks.  A backend
    # that only records the calls and defers to the native one gives the native result.
    calls = []

    class Recording(model.NativeBackend):
        def pagetable_setup_start(self, k, base):
            calls.append(("start", base, len(k.allocations)))
            super().pagetable_setup_start(k, base)

        def pagetable_setup_done(self, k, base):
            calls.append(("done", base, len(k.allocations)))
            super().pagetable_setup_done(k, base)

    monkeypatch.setitem(model.BACKENDS, "other", Recording)
    rec = run(cfg(pae=pae, pv="other", prepatch=True))
    # start before any allocation; done after all of them (32 non-PAE, 1 + 64 + 2 PAE).
    assert calls == [("start", 0x234000, 0), ("done", 0x234000, 67 if pae else 32)]
    assert _same(rec, run(cfg(pae=pae, prepatch=True)))


@pytest.mark.parametrize("kw, msg", [
    (dict(ram_bytes=0), "ram_bytes must be positive"),
    (dict(mem_limit=0), "mem_limit"),
    (dict(reservetop=-1), "reservetop"),
    (dict(reservetop=896 * M), "reservetop"),
    (dict(fixmap_entries=0), "fixmap_entries"),
])
def test_bad_config(kw, msg):
    with pytest.raises(ModelError, match=msg):
        cfg(**kw)


def test_missing_cursor():
    before = bs.head_s_state(False)
    before.guest = {}
    with pytest.raises(ModelError, match="boot_alloc_cursor"):
        predict(before, cfg(), bs.image())


def test_cursor_inside_kernel_image():
    before = bs.head_s_state(False)
    before.guest["boot_alloc_cursor"] = 0x200000
    with pytest.raises(ModelError, match=r"0x200000 lies inside the kernel image"):
        predict(before, cfg(), bs.image())


def test_cursor_on_a_boot_table():
    before = bs.head_s_state(False)
    before.guest["boot_alloc_cursor"] = 0x243000  # pg0's second table
    with pytest.raises(ModelError, match="0x243000 .* already holds a boot page table"):
        predict(before, cfg(), bs.image())


def test_cursor_as_hex_string_from_json():
    before = bs.head_s_state(False)
    before.guest["boot_alloc_cursor"] = "0x244000"
    assert predict(before, cfg(), bs.image()).allocations[0] == 0x244000


def test_missing_symbol():
    syms = dict(bs.SYMBOLS)
    del syms["empty_zero_page"]
    with pytest.raises(ModelError, match="empty_zero_page"):
        predict(bs.head_s_state(False), cfg(), model.KernelImage(symbols=syms))


def test_before_state_not_on_swapper_pg_dir():
    before = bs.head_s_state(False)
    before.registers["cr3"] = 0x100000
    with pytest.raises(ModelError, match=r"CR3=0x100000, expected .*0x234000"):
        predict(before, cfg(), bs.image())


def test_allocator_runs_out_of_lowmem():
    # mem= 0x245000: lowmem ends at 0x245000.  non-PAE, no PSE: pg0 covers the first 8 MiB
    # so the direct map needs no page; fixmap takes 0x244000, pkmap would need 0x245000.
    with pytest.raises(ModelError, match="out of low memory: next page 0x245000"):
        run(cfg(mem_limit=0x245000))
