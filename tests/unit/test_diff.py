"""Snapshot diff on hand-made ranges: each case states what a person must read."""
from harness.diff import diff, range_changes
from harness.snapshot import Snapshot
from harness.walker import Range, TablePage

K = 0xC0000000


def rng(va, size, pa, *, w=True, x=True, u=False, g=False, flags=0x003, ps=0x1000):
    return Range(va=va, pa=pa, size=size, page_size=ps, flags=flags, writable=w, user=u,
                 executable=x, global_=g)


def test_identical_is_empty():
    a = [rng(K, 0x400000, 0)]
    assert range_changes(a, list(a)) == []


def test_nx_on_part_of_a_range_is_one_changed_line():
    old = [rng(K, 0x200000, 0)]
    new = [rng(K, 0x112000, 0), rng(K + 0x112000, 0xEE000, 0x112000, x=False,
                                    flags=(1 << 63) | 0x003)]
    ch = range_changes(old, new)
    assert len(ch) == 1
    c = ch[0]
    assert (c.kind, c.va, c.end) == ("changed", K + 0x112000, K + 0x200000)
    assert "rwx" in c.old and "rw-" in c.new
    assert c.line().startswith("~ c0112000-c01fffff")


def test_gained_lost_and_moved_frames():
    old = [rng(K, 0x1000, 0), rng(0xFF800000, 0x2000, 0x5000)]
    new = [rng(K, 0x1000, 0x1000), rng(0xFC000000, 0x1000, 0x9000)]
    kinds = [(c.kind, hex(c.va)) for c in range_changes(old, new)]
    assert kinds == [("changed", hex(K)), ("gained", "0xfc000000"), ("lost", "0xff800000")]
    moved = range_changes(old, new)[0]
    assert "frame +0x1000" in moved.new


def test_diff_reports_registers_and_table_pages():
    a = Snapshot("a", {"cr0": 0x80000011, "cr3": 0x104000, "cr4": 0, "efer": 0, "eip": 1},
                 [TablePage("pgd", 0x104000, {768: 0x105007})], [rng(K, 0x1000, 0)])
    b = Snapshot("b", {"cr0": 0x80000011, "cr3": 0x104000, "cr4": 0x20, "efer": 0, "eip": 2},
                 [TablePage("pgd", 0x104000, {}), TablePage("pmd", 0x200000, {})],
                 [rng(K, 0x1000, 0)])
    d = diff(a, b)
    assert d.registers == [("cr4", 0, 0x20)]          # eip is not paging state
    assert d.tables_gained == {"pmd": [0x200000]} and d.tables_lost == {}
    text = d.render()
    assert "register cr4: 0x0 -> 0x20" in text and "pmd table pages: +1 -0" in text
    assert diff(a, a).empty
