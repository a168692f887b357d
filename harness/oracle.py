"""QEMU's own view of the address space (`info tlb`, `info mem`), parsed and
compared with a Walk.

`info tlb` lists every leaf: its VA, a "PA" column and the leaf's flags. The
column is the raw entry masked below the page offset, so in PAE it also holds
bit 63 (NX) and bits 52-62; for a 4 MiB page it keeps only bits 21-31 (QEMU
drops the PSE-36 bits 32-39); and for 4 KiB pages the flags never show P
(bit 7 is PAT there).  `info mem` lists ranges of effective user/write
permission (the AND over the levels), with no execute column and no PA.

Neither command checks reserved bits, so the VA ranges under an entry the walk
reports as a problem are left out of the comparison.  compare() needs no gdb:
the checks layer can use it on recorded text.
"""
from __future__ import annotations

import re
import sys
from array import array
from dataclasses import dataclass

from . import walker, x86
from .walker import Leaf, Leaves, Walk, problem_span

_TLB_RE = re.compile(r"^([0-9a-f]+): ([0-9a-f]+) ([X-])([G-])([P-])([D-])([A-])([C-])([T-])([U-])([W-])$")
_MEM_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) ([0-9a-f]+) ([u-])r([w-])$")
_TLB_FLAGS = ((x86.NX, "X"), (x86.GLOBAL, "G"), (x86.PSE, "P"), (x86.DIRTY, "D"),
              (x86.ACCESSED, "A"), (x86.PCD, "C"), (x86.PWT, "T"), (x86.USER, "U"), (x86.RW, "W"))


class OracleError(Exception):
    """QEMU's output could not be read."""


@dataclass(frozen=True)
class TlbEntry:
    va: int
    column: int  # QEMU's "PA" column as printed (may hold NX and high bits)
    flags: str   # XGPDACTUW with '-' for clear bits


@dataclass(frozen=True)
class MemRange:
    start: int
    end: int
    user: bool
    writable: bool


@dataclass(frozen=True)
class Disagreement:
    """One place where the walker and QEMU differ."""

    kind: str  # tlb-missing | tlb-extra | tlb-pa | tlb-flags | mem
    va: int
    size: int
    walker: str
    qemu: str

    def __str__(self) -> str:
        return (f"{self.kind} at VA {self.va:#010x} (+{self.size:#x}): "
                f"walker says {self.walker}; QEMU says {self.qemu}")


def _lines(text: str) -> list[str]:
    return [ln.strip() for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]


def parse_tlb(text: str) -> dict[int, TlbEntry]:
    """`info tlb` output -> VA -> entry. Empty when paging is off."""
    out: dict[int, TlbEntry] = {}
    for ln in _lines(text):
        m = _TLB_RE.match(ln)
        if m:
            va = int(m.group(1), 16)
            out[va] = TlbEntry(va, int(m.group(2), 16), "".join(m.groups()[2:]))
        elif ln != "PG disabled":
            raise OracleError(f"unexpected line in `info tlb` output: {ln[:120]!r}")
    return out


def parse_mem(text: str) -> list[MemRange]:
    """`info mem` output -> ranges of effective permission."""
    out = []
    for ln in _lines(text):
        m = _MEM_RE.match(ln)
        if m:
            out.append(MemRange(int(m.group(1), 16), int(m.group(2), 16),
                                m.group(4) == "u", m.group(5) == "w"))
        elif ln != "PG disabled":
            raise OracleError(f"unexpected line in `info mem` output: {ln[:120]!r}")
    return out


def expected_tlb_flags(leaf: Leaf) -> str:
    """The flags `info tlb` prints for a leaf: its raw entry bits, except
    that bit 7 of a 4 KiB PTE (PAT) never shows as P."""
    entry = leaf.entry if leaf.size != x86.PAGE_SIZE else leaf.entry & ~x86.PSE
    return "".join(c if entry & bit else "-" for bit, c in _TLB_FLAGS)


def _column_pa(column: int, size: int, pae: bool) -> int:
    """The physical address in QEMU's column (NX and bits 52-62 stripped)."""
    mask = 0x000FFFFFFFFFF000 if pae else 0xFFFFF000
    return column & mask & ~(size - 1)


def _excluded(walk: Walk) -> list[tuple[int, int]]:
    spans = sorted((p.va, p.va + problem_span(p, walk.cpu)) for p in walk.problems)
    return spans


def _inside(va: int, spans: list[tuple[int, int]]) -> bool:
    return any(a <= va < b for a, b in spans)


def expected_tlb_text(walk: Walk) -> str | None:
    """`info tlb` as QEMU must print it for this walk, line for line (None when
    the walk is not kept as runs, or has problems whose ranges QEMU still lists)."""
    text = expected_tlb_bytes(walk)
    return None if text is None else text.decode()


def expected_tlb_bytes(walk: Walk) -> bytes | None:
    """expected_tlb_text as bytes, built column by column: every line is
    "VA: COLUMN FLAGS\r\n" with two 16-digit hex fields, so the hex of all VAs
    (and of all columns) comes from one array each, and each character
    position of the lines is filled with one strided slice. 896 MiB of 4 KiB
    PAE pages (458752 lines, 21 MB) take about 0.1 s instead of 0.25 s of
    per-line formatting. Comparing the whole text with QEMU's at once is what
    keeps the oracle cheap; only when they differ does compare() parse QEMU's
    lines."""
    if not isinstance(walk.leaves, Leaves) or walk.problems:
        return None
    if not walk.cpu.paging:
        return b"PG disabled\r\n"
    mask_all = 0xFFFFFFFFFFFFFFFF if walk.cpu.pae else 0xFFFFFFFF
    vas, columns, tails = array("Q"), array("Q"), []
    for r in sorted(walk.leaves.runs, key=lambda r: r.va):
        shown = r.entry if r.size != x86.PAGE_SIZE else r.entry & ~x86.PSE
        column = r.entry & ~(r.size - 1) & mask_all
        vas.extend(range(r.va, r.end, r.size))
        columns.extend(range(column, column + r.count * r.size, r.size))
        tails.append((" " + "".join(c if shown & bit else "-" for bit, c in _TLB_FLAGS)
                      + "\r\n", r.count))
    return _lines_of(vas, columns, tails)


_HEX_DIGITS = 16  # QEMU prints both fields of `info tlb` as %016" PRIx64


def _lines_of(vas: array, columns: array, tails: list[tuple[str, int]]) -> bytes:
    """Lines "VA: COLUMN TAIL" (tails: each text with how many lines it ends)."""
    n, tail_len = len(vas), len(tails[0][0]) if tails else 0
    width = 2 * _HEX_DIGITS + 2 + tail_len
    out = bytearray(width * n)
    if sys.byteorder == "little":
        vas.byteswap()  # most significant byte first: digits in print order
        columns.byteswap()
    for start, values in ((0, vas), (_HEX_DIGITS + 2, columns)):
        digits = values.tobytes().hex().encode()
        for d in range(_HEX_DIGITS):
            out[start + d::width] = digits[d::_HEX_DIGITS]
    out[_HEX_DIGITS::width] = b":" * n
    out[_HEX_DIGITS + 1::width] = b" " * n
    for k in range(tail_len):
        out[2 * _HEX_DIGITS + 2 + k::width] = "".join(t[k] * c for t, c in tails).encode()
    return bytes(out)


def compare(walk: Walk, tlb_text: str | bytes, mem_text: str, *, limit: int = 200,
            expected: bytes | None = None) -> list[Disagreement]:
    """Every disagreement between the walk and QEMU's `info tlb` / `info mem`,
    in address order (the first `limit` of them; 0 for all). `expected`: the
    walk's expected_tlb_bytes, if already built."""
    mem = parse_mem(mem_text)
    spans = _excluded(walk)
    out: list[Disagreement] = []
    got = tlb_text.encode() if isinstance(tlb_text, str) else tlb_text
    if got != (expected if expected is not None else expected_tlb_bytes(walk)):
        out += _compare_tlb(walk, parse_tlb(got.decode(errors="replace")), spans)
    out += _compare_mem(walk, mem, spans)
    out.sort(key=lambda d: (d.va, d.kind))
    return out[:limit] if limit else out


def _compare_tlb(walk: Walk, tlb: dict[int, TlbEntry], spans) -> list[Disagreement]:
    out: list[Disagreement] = []
    pae = walk.cpu.pae
    seen: set[int] = set()
    for lf in walk.leaves:
        seen.add(lf.va)
        q = tlb.get(lf.va)
        if q is None:
            out.append(Disagreement("tlb-missing", lf.va, lf.size,
                                    f"maps it to {lf.pa:#x} (entry {lf.entry:#x} at {lf.entry_addr:#x})",
                                    "no such line in `info tlb`"))
            continue
        got_pa = _column_pa(q.column, lf.size, pae)
        want_pa = lf.pa if pae or lf.size != 0x400000 else lf.pa & 0xFFFFFFFF
        if got_pa != want_pa:
            out.append(Disagreement("tlb-pa", lf.va, lf.size, f"PA {want_pa:#x}",
                                    f"PA {got_pa:#x} (column {q.column:#x})"))
        want = expected_tlb_flags(lf)
        if q.flags != want:
            out.append(Disagreement("tlb-flags", lf.va, lf.size,
                                    f"flags {want} (entry {lf.entry:#x} at {lf.entry_addr:#x})",
                                    f"flags {q.flags}"))
    for va, q in tlb.items():
        if va not in seen and not _inside(va, spans):
            out.append(Disagreement("tlb-extra", va, x86.PAGE_SIZE, "no mapping",
                                    f"maps it ({q.column:#x} {q.flags})"))
    return out


def _walker_perm_ranges(walk: Walk) -> list[MemRange]:
    """Leaves merged by VA contiguity and (user, writable), as `info mem` merges."""
    if isinstance(walk.leaves, Leaves):
        pieces = [(r.va, r.end, r.user, r.writable) for r in walk.leaves.runs]
    else:
        pieces = [(lf.va, lf.va + lf.size, lf.user, lf.writable) for lf in walk.leaves]
    pieces.sort()
    out: list[MemRange] = []
    for start, end, user, writable in pieces:
        if out and out[-1].end == start and (out[-1].user, out[-1].writable) == (user, writable):
            out[-1] = MemRange(out[-1].start, end, user, writable)
        else:
            out.append(MemRange(start, end, user, writable))
    return out


def _describe(r: MemRange | None) -> str:
    if r is None:
        return "not mapped"
    return ("user" if r.user else "supervisor") + (" read-write" if r.writable else " read-only")


def _mem_span(r: MemRange) -> tuple[int, int]:
    return r.start, r.end


def _compare_mem(walk: Walk, mem: list[MemRange], spans) -> list[Disagreement]:
    """Sweep both range lists over their boundaries; report each VA stretch
    where the effective permissions differ (problem spans excluded)."""
    out: list[Disagreement] = []
    cuts = [va for span in spans for va in span]
    for a, b, w, q in walker.sweep(_walker_perm_ranges(walk), mem, _mem_span, _mem_span, cuts):
        if _inside(a, spans):
            continue
        wk = None if w is None else (w.user, w.writable)
        qk = None if q is None else (q.user, q.writable)
        if wk != qk:
            if out and out[-1].va + out[-1].size == a and out[-1].walker == _describe(w) \
                    and out[-1].qemu == _describe(q):
                last = out.pop()
                out.append(Disagreement("mem", last.va, last.size + (b - a), last.walker, last.qemu))
            else:
                out.append(Disagreement("mem", a, b - a, _describe(w), _describe(q)))
    return out


def fetch(session, timeout: float = 600.0) -> tuple[str, str]:
    """`info tlb` and `info mem` through gdb's monitor (the target stopped)."""
    return session.monitor("info tlb", timeout), session.monitor("info mem", timeout)
