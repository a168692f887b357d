"""The walker on page tables built in memory images, one test per mode and
corner. Expected values are stated from the Intel SDM (vol. 3A ch. 4), not
computed by the walker's own helpers."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness import x86  # noqa: E402
from harness.walker import (CpuState, ImageMemory, Leaf, Leaves, Range, merge, walk,  # noqa: E402
                            walk_va)


def leaves_by_va(w):
    return {lf.va: lf for lf in w.leaves}


def perms(lf: Leaf) -> tuple:
    return (lf.pa, lf.size, lf.writable, lf.user, lf.executable, lf.global_)


def test_paging_off_maps_nothing():
    w = walk(ImageMemory(), CpuState(cr0=0x11, cr3=0x1000, cr4=0))
    assert (w.tables, list(w.leaves), w.problems) == ([], [], [])
    assert walk_va(ImageMemory(), CpuState(cr0=0x11, cr3=0, cr4=0), 0x1234) == []


def test_two_level_pse_off_ignores_the_ps_bit():
    w = walk(g.two_level(pse=False).memory(), g.two_level(pse=False).cpu)
    got = {va: perms(lf) for va, lf in leaves_by_va(w).items()}
    assert got == {
        0xC0000000: (0x100000, 0x1000, True, False, True, True),    # G with CR4.PGE
        0xC0001000: (0x101000, 0x1000, False, False, True, False),  # read-only PTE
        0xC0003000: (0x200000, 0x1000, True, True, True, False),    # user under user PDE
        0xC0004000: (0x201000, 0x1000, True, True, True, False),    # bit 7 is PAT: still 4 KiB
        0xC0405000: (0x300000, 0x1000, True, False, True, False),   # PS ignored: table at 0x12000
        0xC0C00000: (0x500000, 0x1000, True, False, True, False),
    }
    assert w.problems == []
    levels = sorted((t.level, t.phys) for t in w.tables)
    # PDE 0x302 (a 4 MiB page with PSE on) points to an empty table at 0x802000.
    assert levels == [("pgd", 0x10000), ("pte", 0x11000), ("pte", 0x12000), ("pte", 0x13000),
                      ("pte", 0x802000)]


def test_two_level_pse_on_maps_4m_pages_with_pse36_bits():
    lay = g.two_level(pse=True)
    got = {va: perms(lf) for va, lf in leaves_by_va(walk(lay.memory(), lay.cpu)).items()}
    # PDE 0x12000|0xE3: PS with bits 13 and 16 set -> PA bits 32 and 35.
    assert got[0xC0400000] == (0x9_0000_0000, 0x400000, True, False, True, False)
    # PDE 0x800000|1<<13|0xE3 -> PA 0x1_00800000.
    assert got[0xC0800000] == (0x1_0080_0000, 0x400000, True, False, True, False)
    assert 0xC0405000 not in got  # the table at 0x12000 is not used
    steps = walk_va(lay.memory(), lay.cpu, 0xC0812345)
    assert [s.level for s in steps] == ["pgd"]
    assert steps[0].pa == 0x1_0080_0000 + 0x12345 and "4 MiB page" in steps[0].what


def test_two_level_pse36_bits_above_maxphyaddr_are_reserved():
    mem = ImageMemory()
    mem.write_entry(0x1000 + 0x300 * 4, 4, 0x00400000 | (1 << 17) | 0x083)  # PA bit 36
    mem.write_entry(0x1000 + 0x301 * 4, 4, 0x00800000 | (1 << 21) | 0x083)  # bit 21
    cpu = CpuState(cr0=g.CR0_PAGING, cr3=0x1000, cr4=x86.CR4_PSE)
    w = walk(mem, cpu, phys_bits=36)
    assert list(w.leaves) == []
    assert [(p.level, p.va, p.entry_addr) for p in w.problems] == [
        ("pgd", 0xC0000000, 0x1000 + 0x300 * 4), ("pgd", 0xC0400000, 0x1000 + 0x301 * 4)]
    # With MAXPHYADDR 40 bit 17 is an address bit (PA bit 36); bit 21 stays reserved.
    w40 = walk(mem, cpu, phys_bits=40)
    assert [lf.pa for lf in w40.leaves] == [0x10_0040_0000]
    assert len(w40.problems) == 1


def test_parent_permissions_are_anded():
    lay = g.two_level_parent_permissions()
    w = walk(lay.memory(), lay.cpu)
    got = leaves_by_va(w)
    # RW user PTEs under a present-only PDE: read-only supervisor.
    for k in range(16):
        assert perms(got[0x40000000 + k * 0x1000]) == (0x400000 + k * 0x1000, 0x1000, False, False, True, False)
    # RO user PTE under a RW user PDE: read-only user.
    assert perms(got[0x40400000]) == (0x600000, 0x1000, False, True, True, False)
    assert merge(w.leaves) == [
        Range(0x40000000, 0x400000, 0x10000, 0x1000, 0x007, False, False, True, False),
        Range(0x40400000, 0x600000, 0x1000, 0x1000, 0x005, False, True, True, False)]


@pytest.mark.parametrize("nxe", [False, True])
def test_pae_root_at_a_32_byte_offset(nxe):
    lay = g.pae(nxe)
    assert lay.cr3 & 0xFFF == 0x20
    w = walk(lay.memory(), lay.cpu)
    got = {va: perms(lf) for va, lf in leaves_by_va(w).items()}
    x_pte1 = not nxe   # PTE with NX: executable only while NXE is off
    x_2m = not nxe     # 2 MiB page with NX
    assert got == {
        0xC0000000: (0x100000, 0x1000, True, False, True, True),
        0xC0001000: (0x101000, 0x1000, True, False, x_pte1, False),
        0xC0002000: (0x102000, 0x1000, False, False, True, False),
        0xC0003000: (0x103000, 0x1000, True, False, True, False),   # PTE says user, PDE not
        0xC0200000: (0x400000, 0x200000, True, False, True, True),  # 2 MiB, global
        0xC0400000: (0x600000, 0x200000, True, False, x_2m, False),
        0xC0600000: (0x800000, 0x1000, False, False, not nxe, False),  # RO NX parent over RW child
    }
    # The decoy at the page start (what CR3 & ~0xfff would give) maps nothing here.
    assert all(lf.pa != 0xA00000 for lf in w.leaves)
    pgd = [t for t in w.tables if t.level == "pgd"]
    assert [(t.phys, t.entries) for t in pgd] == [(0x30020, {3: 0x31001})]


def test_nx_without_nxe_is_a_reserved_bit():
    lay = g.pae_nx_without_nxe()
    w = walk(lay.memory(), lay.cpu)
    assert [(lf.va, lf.executable) for lf in w.leaves] == [(0xC0000000, True)]
    assert sorted((p.level, p.va, p.entry_addr) for p in w.problems) == [
        ("pmd", 0xC0200000, 0x41008), ("pte", 0xC0001000, 0x42008)]
    assert all("0x8000000000000000" in p.what for p in w.problems)
    # With NXE the same tables are legal and the pages are not executable.
    cpu = CpuState(cr0=lay.cpu.cr0, cr3=lay.cr3, cr4=lay.cr4, efer=x86.EFER_NXE)
    w2 = walk(lay.memory(), cpu)
    assert w2.problems == []
    assert {lf.va: lf.executable for lf in w2.leaves} == {
        0xC0000000: True, 0xC0001000: False, 0xC0200000: False}


def test_pae_reserved_bits():
    lay = g.pae_reserved()
    w = walk(lay.memory(), lay.cpu)
    assert sorted((p.level, p.va, p.entry_addr, p.value) for p in w.problems) == [
        ("pgd", 0x00000000, 0x50000, 0x51003),                        # RW in a PDPTE
        ("pmd", 0xC0000000, 0x52000, 0x00402000 | 0x0E3),             # bit 13 of a 2 MiB PDE
        ("pte", 0xC0201000, 0x53008, (1 << 40) | 0x00101000 | 0x063),  # above MAXPHYADDR
    ]
    # The SDM has the CR3 load fault on RW in a PDPTE; QEMU's TCG uses the entry,
    # so the walk follows it (the tables the emulated CPU really uses) and says both.
    assert [(lf.va, lf.pa) for lf in w.leaves] == [(0x00000000, 0x200000), (0xC0200000, 0x100000)]
    pdpt_problem = next(p for p in w.problems if p.level == "pgd")
    assert "#GP" in pdpt_problem.what and "QEMU" in pdpt_problem.what
    steps = walk_va(lay.memory(), lay.cpu, 0x00001000)
    assert [s.level for s in steps] == ["pgd", "pmd"] and "reserved bits 0x2" in steps[0].what
    assert steps[-1].pa == 0x201000


def test_walk_va_pae_levels():
    lay = g.pae(True)
    steps = walk_va(lay.memory(), lay.cpu, 0xC0001ABC)
    assert [(s.level, s.table, s.index, s.entry_addr) for s in steps] == [
        ("pgd", 0x30020, 3, 0x30038), ("pmd", 0x31000, 0, 0x31000), ("pte", 0x32000, 1, 0x32008)]
    assert steps[-1].pa == 0x101ABC
    miss = walk_va(lay.memory(), lay.cpu, 0x12345678)
    assert [(s.level, s.what) for s in miss] == [("pgd", "not present")]


def test_a_page_table_shared_by_two_pdes_is_one_table_and_two_mappings():
    mem = ImageMemory()
    mem.write_entry(0x1000 + 0 * 4, 4, 0x2000 | 0x007)      # identity (head.S style)
    mem.write_entry(0x1000 + 768 * 4, 4, 0x2000 | 0x007)    # PAGE_OFFSET alias
    for k in range(1024):
        mem.write_entry(0x2000 + k * 4, 4, (k << 12) | 0x007)
    w = walk(mem, CpuState(cr0=g.CR0_PAGING, cr3=0x1000, cr4=0))
    assert [(t.level, t.phys) for t in w.tables] == [("pgd", 0x1000), ("pte", 0x2000)]
    assert len(w.leaves) == 2048
    assert merge(w.leaves) == [
        Range(0x00000000, 0, 0x400000, 0x1000, 0x007, True, True, True, False),
        Range(0xC0000000, 0, 0x400000, 0x1000, 0x007, True, True, True, False)]


def test_leaves_sequence_matches_a_per_entry_walk():
    """The run-compressed leaves expand to exactly the per-entry translations,
    including A/D differences that break runs but not ranges."""
    mem = ImageMemory()
    mem.write_entry(0x1000 + 3 * 8, 8, 0x2000 | 1)
    mem.write_entry(0x2000, 8, 0x3000 | 0x063)
    entries = [(0x100000 + k * 0x1000) | (0x063 if k % 3 else 0x003) for k in range(512)]
    entries[100] = 0          # a hole
    entries[200] |= x86.NX    # a different leaf
    for k, e in enumerate(entries):
        mem.write_entry(0x3000 + k * 8, 8, e)
    w = walk(mem, CpuState(cr0=g.CR0_PAGING, cr3=0x1000, cr4=x86.CR4_PAE, efer=x86.EFER_NXE))
    expect = [(0xC0000000 + k * 0x1000, e & 0xFFFFF000, e, 0x3000 + k * 8)
              for k, e in enumerate(entries) if e]
    assert [(lf.va, lf.pa, lf.entry, lf.entry_addr) for lf in w.leaves] == expect
    assert isinstance(w.leaves, Leaves)
    assert w.leaves[100].va == 0xC0000000 + 101 * 0x1000 and w.leaves[-1].va == 0xC01FF000
    assert [(r.va, r.size, r.executable) for r in merge(w.leaves)] == [
        (0xC0000000, 100 * 0x1000, True), (0xC0065000, 99 * 0x1000, True),
        (0xC00C8000, 0x1000, False), (0xC00C9000, 311 * 0x1000, True)]
    assert merge(list(w.leaves)) == merge(w.leaves)


def test_benchmark_state_is_one_range():
    lay = g.kernel_map_4k(896)
    w = walk(lay.memory(), lay.cpu)
    assert len([t for t in w.tables if t.level == "pte"]) == 448
    assert len(w.leaves) == 896 * 256
    # Range flags leave out A/D (0x060).
    assert merge(w.leaves) == [Range(0xC0000000, 0, 896 << 20, 0x1000, 0x103 | x86.NX,
                                     True, False, False, True)]


def test_a_uniform_pte_page_is_kept_as_a_series_equal_to_its_entries():
    """A PTE page mapping 512 consecutive pages with one set of flags is a
    Series; one entry off (a hole, a flag, an address) makes it a plain dict.
    Either way the entries read as the page holds them."""
    from harness.walker import Series
    lay = g.kernel_map_4k(4)  # two PTE pages at 0x200000 and 0x201000
    mem = lay.memory()
    w = walk(mem, lay.cpu)
    ptes = [t for t in w.tables if t.level == "pte"]
    assert [type(t.entries) for t in ptes] == [Series, Series]
    first = 0x163 | x86.NX
    as_dict = {k: first + k * 0x1000 for k in range(512)}
    assert ptes[0].entries == as_dict and as_dict == ptes[0].entries
    assert ptes[0].entries[511] == first + 511 * 0x1000 and 512 not in ptes[0].entries
    assert dict(ptes[0].entries.items()) == as_dict and len(ptes[0].entries) == 512
    assert ptes[0].entries != ptes[1].entries
    import pickle
    assert pickle.loads(pickle.dumps(ptes[1].entries)) == ptes[1].entries
    for k, value in ((7, 0), (7, first + 7 * 0x1000 + 0x1000), (511, (first + 511 * 0x1000) ^ x86.RW)):
        broken = lay.memory()
        broken.write_entry(0x200000 + 8 * k, 8, value)
        page = next(t for t in walk(broken, lay.cpu).tables if t.phys == 0x200000)
        assert type(page.entries) is dict
        assert page.entries == {i: v for i, v in {**as_dict, k: value}.items() if v}
