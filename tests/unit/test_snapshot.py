"""Snapshots: a walk saved as versioned JSON loads back the same, and its
table pages rebuild memory that walks to the same ranges; format v2 (entries
as runs) is written, v1 (the recorded snapshots) is still read."""
from __future__ import annotations

import gzip
import json
import random
import sys
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness import snapshot, walker, x86  # noqa: E402
from harness.snapshot import Snapshot, SnapshotError  # noqa: E402


@pytest.mark.parametrize("case", ["2level-pse", "pae-nx", "pae-reserved"])
def test_round_trip(case, tmp_path):
    lay = g.CORNER_CASES[case]()
    w = walker.walk(lay.memory(), lay.cpu)
    snap = Snapshot.from_walk(w, "t", provenance={"qemu": "7.2"})
    path = tmp_path / "s.json"
    snap.save(path)
    back = Snapshot.load(path)
    assert back.registers == snap.registers and back.cpu == lay.cpu
    assert back.ranges == walker.merge(w.leaves) and back.problems == w.problems
    assert [(t.level, t.phys, t.entries) for t in back.tables] == [
        (t.level, t.phys, t.entries) for t in w.tables]
    again = walker.walk(back.memory(), back.cpu)
    assert walker.merge(again.leaves) == back.ranges and again.problems == w.problems
    data = json.loads(path.read_text())
    assert data["format"] == "ptharness-snapshot" and data["version"] == 2


def test_nx_entries_survive_json(tmp_path):
    lay = g.pae(True)
    snap = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "t")
    text = snap.to_json()
    assert ":0x8000000000101063" in text  # hex strings: no 53-bit float rounding
    assert Snapshot.from_dict(json.loads(text)).table("pte", 0x32000).entries[1] == x86.NX | 0x101063


def test_bad_documents(tmp_path):
    with pytest.raises(SnapshotError, match="not a ptharness snapshot"):
        Snapshot.from_dict({"format": "other"})
    with pytest.raises(SnapshotError, match="version 99 is not one this ptharness reads"):
        Snapshot.from_dict({"format": "ptharness-snapshot", "version": 99})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        Snapshot.load(bad)


# -- format v2 ------------------------------------------------------------------------
DATA = Path(__file__).resolve().parents[1] / "data" / "snapshots"
RECORDED = sorted(p for p in DATA.glob("*@*/*.json.gz"))


def same_state(a: Snapshot, b: Snapshot) -> None:
    """Field by field, so a failure says which part differs."""
    assert a.registers == b.registers
    assert [(t.level, t.phys) for t in a.tables] == [(t.level, t.phys) for t in b.tables]
    for ta, tb in zip(a.tables, b.tables):
        assert ta.entries == tb.entries, (ta.level, hex(ta.phys))
    assert a.ranges == b.ranges and a.problems == b.problems
    assert (a.label, a.provenance, a.scenario, a.guest) == (b.label, b.provenance, b.scenario, b.guest)
    assert a == b


def two_level_mixed() -> walker.Walk:
    """896 MiB of 2-level 4 KiB pages with what breaks runs: a read-only stretch
    inside a page, holes, scattered odd entries, a 4 MiB PDE, a page of noise."""
    mem, rng = walker.ImageMemory(), random.Random(13)
    pgd = 0x100000
    for i in range(224):
        pt = 0x200000 + i * 0x1000
        vals = [(i << 22) + (k << 12) | 0x163 for k in range(1024)]
        if i == 1:
            vals[100:300] = [v & ~x86.RW for v in vals[100:300]]
        if i == 2:
            vals[500:520] = [0] * 20
            vals[7] = 0x12345067
        if i == 3:
            vals = [rng.getrandbits(32) | 1 for _ in range(1024)]
        mem.page(pt)[:] = array("I", vals).tobytes()
        mem.write_entry(pgd + 4 * (768 + i), 4, pt | 0x063)
    mem.write_entry(pgd + 4 * 1000, 4, 0x3C000000 | 0x1E3)  # 4 MiB page
    cpu = walker.CpuState(cr0=g.CR0_PAGING, cr3=pgd, cr4=x86.CR4_PSE | x86.CR4_PGE)
    return walker.walk(mem, cpu)


@pytest.mark.parametrize("case", ["896M-pae-4k", "896M-2level-mixed", "pae-nx", "pae-reserved",
                                  "2level-pse"])
def test_v2_round_trip_is_the_same_state(case, tmp_path):
    if case == "896M-pae-4k":
        lay = g.kernel_map_4k(896)
        w = walker.walk(lay.memory(), lay.cpu)
    elif case == "896M-2level-mixed":
        w = two_level_mixed()
    else:
        lay = g.CORNER_CASES[case]()
        w = walker.walk(lay.memory(), lay.cpu)
    snap = Snapshot.from_walk(w, case, provenance={"tool": "t"}, scenario={"id": case},
                              guest={"boot": {"x": "0x1"}}, registers={"eip": 0xC0100000})
    snap.save(tmp_path / "s.json")
    back = Snapshot.load(tmp_path / "s.json")
    same_state(back, snap)
    again = walker.walk(back.memory(), back.cpu)
    assert walker.merge(again.leaves) == back.ranges and again.problems == w.problems


def test_v2_keeps_the_pae_pdpt_at_its_32_byte_address(tmp_path):
    lay = g.pae(True, root_offset=0x60)
    snap = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "t")
    doc = json.loads(snap.to_json())
    pgd = next(t for t in doc["tables"] if t["level"] == "pgd")
    assert int(pgd["phys"], 16) == lay.cr3 & ~0x1F and int(pgd["phys"], 16) & 0xFFF == 0x60
    back = Snapshot.from_dict(doc)
    assert back.table("pgd", lay.cr3 & ~0x1F).entries == snap.table("pgd", lay.cr3 & ~0x1F).entries
    assert walker.merge(walker.walk(back.memory(), back.cpu).leaves) == snap.ranges
    pgd["entries"] = "4:0x1001"  # a PDPT has 4 entries
    with pytest.raises(SnapshotError, match=r"tables\[0\]\.entries: '4:0x1001': index 4 beyond"):
        Snapshot.from_dict(doc)


def test_v2_stores_each_table_page_as_one_short_string():
    """The structure that makes a large state small: one string of runs per page,
    a lowmem PTE page one run; the readable parts stay plain JSON."""
    lay = g.kernel_map_4k(896)
    snap = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "big")
    v1, v2 = snap.to_json(version=1), snap.to_json()
    doc = json.loads(v2)
    assert len(doc["tables"]) == 450 and all(isinstance(t["entries"], str) for t in doc["tables"])
    ptes = [t["entries"] for t in doc["tables"] if t["level"] == "pte"]
    assert ptes[1] == "0-511:0x8000000000200163+0x1000"
    assert all(" " not in e for e in ptes)  # 512 entries, one run each
    assert doc["registers"]["cr3"] == "0x1020" and doc["ranges"][0]["rwx"] == "rw-"
    assert len(v2) * 50 < len(v1)


def test_v1_load_save_v2_load_is_the_same_snapshot(tmp_path):
    """Every recorded (v1) snapshot: loads, and comes back the same through v2."""
    assert len(RECORDED) >= 24
    for path in RECORDED:
        doc = json.loads(gzip.open(path).read())
        assert doc["version"] == 1
        old = Snapshot.from_dict(doc)
        old.save(tmp_path / "v2.json")
        assert json.loads((tmp_path / "v2.json").read_text())["version"] == 2
        same_state(Snapshot.load(tmp_path / "v2.json"), old)


def test_recorded_v2_snapshots_read_as_their_v1_originals():
    """tests/data/snapshots/v2 holds v2 files converted from recorded v1 ones:
    the v2 reader must keep reading what v2 writers wrote."""
    paths = sorted((DATA / "v2").glob("*.json.gz"))
    assert len(paths) >= 3
    for path in paths:
        case, label = path.name[:-len(".json.gz")].rsplit("-", 1)
        v1 = Snapshot.from_dict(json.loads(gzip.open(DATA / case / f"{label}.json.gz").read()))
        doc = json.loads(gzip.open(path).read())
        assert doc["version"] == 2
        same_state(Snapshot.from_dict(doc), v1)


def test_v1_is_still_written_on_request(tmp_path):
    lay = g.pae(True)
    snap = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "t")
    snap.save(tmp_path / "v1.json", version=1)
    doc = json.loads((tmp_path / "v1.json").read_text())
    pte = next(t for t in doc["tables"] if t["phys"] == "0x32000")
    assert doc["version"] == 1 and pte["entries"]["1"] == "0x8000000000101063"
    same_state(Snapshot.load(tmp_path / "v1.json"), snap)
    with pytest.raises(ValueError, match="version 3"):
        snap.to_dict(version=3)


def _v2_doc():
    lay = g.pae(True)
    return json.loads(Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "t").to_json())


@pytest.mark.parametrize("where, value, message", [
    (("tables",), {}, r"tables: a JSON dict, not a list"),
    (("tables", 1), "x", r"tables\[1\]: a JSON str, not an object"),
    (("tables", 1, "entries"), ["0:0x1"], r"tables\[1\]\.entries: is a JSON list"),
    (("tables", 1, "entries"), "0:0x1 zz", r"tables\[1\]\.entries: 'zz' is not INDEX:VALUE"),
    (("tables", 1, "entries"), "3-1:0x1+0x1000", r"tables\[1\]\.entries: '3-1:.*increasing"),
    (("tables", 1, "entries"), "5:0x1 2:0x3", r"tables\[1\]\.entries: '2:0x3'.*increasing"),
    (("tables", 1, "entries"), "0-9:0x1", r"tables\[1\]\.entries: '0-9:0x1' is not"),
    (("tables", 1, "entries"), "0:0x1+0x1", r"tables\[1\]\.entries: '0:0x1\+0x1' is not"),
    (("tables", 1, "entries"), "0-511:0xffffffffffff0000+0x1000",
     r"tables\[1\]\.entries: .*outside 0\.\.2\*\*64-1"),
    (("tables", 1, "entries"), "0:-0x5", r"tables\[1\]\.entries: '0:-0x5': a value outside"),
    (("tables", 1, "entries"), "600:0x1",
     r"tables\[1\]\.entries: '600:0x1': index 600 beyond the table's 512 entries"),
    (("tables", 1, "phys"), "page", r"tables\[1\]\.phys: 'page' is not a number"),
    (("tables", 1, "level"), "pud", r"tables\[1\]\.level: 'pud' is not pgd, pmd or pte"),
    (("ranges", 0, "va"), "zz", r"ranges\[0\]: invalid literal"),
])
def test_malformed_v2_names_the_field(where, value, message):
    doc = _v2_doc()
    target = doc
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    with pytest.raises(SnapshotError, match="malformed snapshot: " + message):
        Snapshot.from_dict(doc)


@pytest.mark.parametrize("field_", ["level", "phys", "entries"])
def test_missing_v2_table_field_is_named(field_):
    doc = _v2_doc()
    del doc["tables"][2][field_]
    with pytest.raises(SnapshotError, match=rf"tables\[2\]: field '{field_}' is missing"):
        Snapshot.from_dict(doc)
    del doc["tables"]
    with pytest.raises(SnapshotError, match="field 'tables' is missing"):
        Snapshot.from_dict(doc)


_entries = st.dictionaries(st.integers(0, 511), st.one_of(
    st.integers(1, (1 << 64) - 1), st.sampled_from([0x1063, 0x1163, 0x8000000000001163])),
    max_size=64)


@settings(max_examples=300, deadline=None)
@given(_entries, st.integers(0, 511), st.integers(0, 64), st.sampled_from([0, 0x1000, 0x200000, 1]),
       st.integers(1, 1 << 63))
def test_entries_encode_decode(entries, start, count, step, v0):
    """Any page (random entries, with a run laid over them, in any insertion order)
    decodes to the same entries."""
    for k in range(start, min(start + count, 512)):
        if v0 + (k - start) * step < 1 << 64:
            entries[k] = v0 + (k - start) * step
    entries = {k: v for k, v in entries.items() if v}
    shuffled = dict(random.Random(len(entries)).sample(sorted(entries.items()), len(entries)))
    for d in (entries, shuffled, dict(sorted(entries.items()))):
        text = snapshot.encode_entries(d)
        assert snapshot.decode_entries(text, 512) == entries
        assert list(snapshot.decode_entries(text, 512)) == sorted(entries)
