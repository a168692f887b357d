"""The oracle on `info tlb` / `info mem` text recorded from QEMU 7.2 for each
layout of tests/guests/stubguest.py (tests/data/record.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness import oracle, walker, x86  # noqa: E402

TLB = Path(__file__).resolve().parents[1] / "data" / "tlb"


def recorded(case: str) -> tuple[str, str]:
    return (TLB / f"{case}.tlb").read_text(), (TLB / f"{case}.mem").read_text()


@pytest.mark.parametrize("case", sorted(g.CORNER_CASES))
def test_walk_of_each_layout_agrees_with_qemus_recording(case):
    lay = g.CORNER_CASES[case]()
    tlb, mem = recorded(case)
    assert oracle.compare(walker.walk(lay.memory(), lay.cpu), tlb, mem) == []


def test_pae_nx_column_holds_bit_63():
    tlb = oracle.parse_tlb(recorded("pae-nx")[0])
    e = tlb[0xC0001000]
    assert e.column == x86.NX | 0x101000 and e.flags[0] == "X"
    assert tlb[0xC0000000].flags == "-G-DA---W"


def test_pse36_page_shows_only_the_low_address_bits():
    tlb = oracle.parse_tlb(recorded("2level-pse")[0])
    # The walker maps 0xC0800000 to 0x1_00800000; QEMU prints 0x800000 and flag P.
    assert tlb[0xC0800000].column == 0x800000 and tlb[0xC0800000].flags == "--PDA---W"


def test_reserved_entries_are_left_out_but_qemu_lists_them():
    lay = g.pae_reserved()
    tlb, mem = recorded("pae-reserved")
    assert 0x00000000 in oracle.parse_tlb(tlb)  # under the PDPTE with RW set
    w = walker.walk(lay.memory(), lay.cpu)
    assert oracle.compare(w, tlb, mem) == []


def test_a_wrong_leaf_is_reported_with_its_address():
    lay = g.pae(True)
    lay.put64(0x32000 + 2 * 8, 0x00102000 | 0x063)   # the walker now sees RW, QEMU saw RO
    lay.put64(0x32000 + 0 * 8, 0x00105000 | 0x163)   # and another PA
    found = oracle.compare(walker.walk(lay.memory(), lay.cpu), *recorded("pae-nx"))
    got = {(d.kind, d.va) for d in found}
    assert got == {("tlb-pa", 0xC0000000), ("tlb-flags", 0xC0002000), ("mem", 0xC0002000)}
    mem_d = next(d for d in found if d.kind == "mem")
    assert (mem_d.size, mem_d.walker, mem_d.qemu) == (0x1000, "supervisor read-write",
                                                      "supervisor read-only")
    assert "tlb-pa at VA 0xc0000000" in str(next(d for d in found if d.kind == "tlb-pa"))


def test_missing_and_extra_mappings():
    lay = g.two_level_parent_permissions()
    lay.put32(0x21000 + 15 * 4, 0)                  # the walker lost one page
    lay.put32(0x21000 + 16 * 4, 0x00410000 | 0x007)  # and gained one
    found = oracle.compare(walker.walk(lay.memory(), lay.cpu), *recorded("2level-parent-perms"))
    kinds = sorted((d.kind, d.va) for d in found)
    assert kinds == [("mem", 0x4000F000), ("mem", 0x40010000), ("tlb-extra", 0x4000F000),
                     ("tlb-missing", 0x40010000)]


def test_bad_output_is_an_error():
    with pytest.raises(oracle.OracleError, match="unexpected line"):
        oracle.parse_tlb("unknown command: 'info tlbx'\n")
    assert oracle.parse_tlb("PG disabled\r\n") == {}


@pytest.mark.parametrize("case", sorted(g.CORNER_CASES))
def test_the_expected_text_is_qemus_byte_for_byte(case):
    """The fast path of compare(): what the walk says QEMU must print is the
    recorded `info tlb` exactly, so a passing run never falls back to parsing;
    a walk with rejected entries has no such text. (QEMU ends its lines with
    CRLF, as QMP hands them over; the recordings came through gdb's monitor,
    which kept only the LF.)"""
    lay = g.CORNER_CASES[case]()
    walk = walker.walk(lay.memory(), lay.cpu)
    expected = oracle.expected_tlb_bytes(walk)
    if walk.problems:
        assert expected is None
        return
    qemu = (TLB / f"{case}.tlb").read_bytes()
    assert b"\r" not in qemu
    assert expected == qemu.replace(b"\n", b"\r\n")
    # and one entry different is one line different
    wrong = walker.walk(g.CORNER_CASES[case]().memory(), lay.cpu)
    run = wrong.leaves.runs[0]
    wrong.leaves.runs[0] = run._replace(entry=run.entry ^ x86.RW)
    changed = [a != b for a, b in zip(oracle.expected_tlb_bytes(wrong).split(b"\r\n"),
                                      expected.split(b"\r\n"))]
    assert sum(changed) == run.count
