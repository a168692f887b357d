"""Snapshots: a walk saved as versioned JSON loads back the same, and its
table pages rebuild memory that walks to the same ranges."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness import walker, x86  # noqa: E402
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
    assert data["format"] == "ptharness-snapshot" and data["version"] == 1


def test_nx_entries_survive_json(tmp_path):
    lay = g.pae(True)
    snap = Snapshot.from_walk(walker.walk(lay.memory(), lay.cpu), "t")
    text = snap.to_json()
    assert '"0x8000000000101063"' in text  # hex strings: no 53-bit float rounding
    assert Snapshot.from_dict(json.loads(text)).table("pte", 0x32000).entries[1] == x86.NX | 0x101063


def test_bad_documents(tmp_path):
    with pytest.raises(SnapshotError, match="not a ptharness snapshot"):
        Snapshot.from_dict({"format": "other"})
    with pytest.raises(SnapshotError, match="version 99"):
        Snapshot.from_dict({"format": "ptharness-snapshot", "version": 99})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        Snapshot.load(bad)
