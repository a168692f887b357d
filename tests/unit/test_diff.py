"""Snapshot diff on hand-made ranges: each case states what a person must read;
and `ptharness diff` across snapshot format versions."""
import gzip
import json
import subprocess
import sys
from pathlib import Path

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


# -- across snapshot format versions -----------------------------------------------------
DATA = Path(__file__).resolve().parents[1] / "data" / "snapshots"
BIN = Path(sys.executable).parent


def _ptharness_diff(*paths) -> tuple[int, dict]:
    r = subprocess.run([str(BIN / "ptharness"), "diff", *map(str, paths), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    assert doc["same"] == (r.returncode == 0)
    return r.returncode, {k: v for k, v in doc.items() if k not in ("a", "b")}


def test_diff_across_format_versions(tmp_path):
    """A v1 file and the v2 file of the same state are identical to `ptharness diff`;
    a real change reads the same whichever versions the two sides are in."""
    case = DATA / "pae-nopse-pge-nx-16M@patched"
    files = {}
    for label in ("before", "after"):
        raw = gzip.open(case / f"{label}.json.gz").read()
        assert json.loads(raw)["version"] == 1
        files[label, 1] = tmp_path / f"{label}-v1.json"
        files[label, 1].write_bytes(raw)
        files[label, 2] = tmp_path / f"{label}-v2.json"
        Snapshot.load(files[label, 1]).save(files[label, 2])
        assert json.loads(files[label, 2].read_text())["version"] == 2
    for label in ("before", "after"):
        rc, doc = _ptharness_diff(files[label, 1], files[label, 2])
        assert rc == 0 and doc["same"] and not doc["ranges"] and not doc["tables"]
    rc, reference = _ptharness_diff(files["before", 1], files["after", 1])
    assert rc == 1 and reference["ranges"]
    for va, vb in ((1, 2), (2, 1), (2, 2)):
        assert _ptharness_diff(files["before", va], files["after", vb]) == (rc, reference)


def test_one_entry_changed_in_a_large_v2_state_is_reported_against_v1(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
    import stubguest as g
    from harness import walker, x86

    lay = g.kernel_map_4k(896)
    old = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "old")
    old.save(tmp_path / "old-v1.json", version=1)
    mem = lay.memory()
    pte = 0x200000 + 5 * 0x1000 + 7 * 8          # VA 0xC0000000 + 5*2 MiB + 7*4 KiB
    mem.write_entry(pte, 8, mem.read_entry(pte, 8) & ~x86.NX)
    new = Snapshot.from_walk(walker.walk(mem, lay.cpu), "new")
    new.save(tmp_path / "new-v2.json")
    rc, doc = _ptharness_diff(tmp_path / "old-v1.json", tmp_path / "new-v2.json")
    va = 0xC0000000 + 5 * 0x200000 + 7 * 0x1000
    assert rc == 1 and [(c["kind"], int(c["va"], 16), int(c["end"], 16)) for c in doc["ranges"]] \
        == [("changed", va, va + 0x1000)]
    assert "rw-" in doc["ranges"][0]["a"] and "rwx" in doc["ranges"][0]["b"]
