"""A snapshot: the paging state of one moment as a versioned JSON document.

This module owns the Snapshot type and its file format (docs/json.md).  A
snapshot holds the control registers, every table page the CPU would walk
(non-zero entries only), the leaf mappings merged into ranges, anything the
CPU would reject, and where it came from.  Numbers are written as hex strings
so that 64-bit PAE entries survive any JSON reader.

Version 2 (written) stores each table page's entries as one string of runs
("0-511:0x8000000000200163+0x1000": entries 0 to 511 hold that value, each
the previous plus 0x1000), so 896 MiB of 4 KiB pages is a few hundred short
strings instead of 229,888 JSON pairs.  Version 1 (entries as an
"index": "value" object) is still read.
"""
from __future__ import annotations

import functools
import json
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import x86
from .walker import CpuState, ImageMemory, Problem, Range, Series, TablePage, Walk, merge

FORMAT = "ptharness-snapshot"
VERSION = 2
READS = (1, 2)  # versions load() accepts

_U64 = 1 << 64


class SnapshotError(Exception):
    pass


class _Malformed(Exception):
    """A v2 field that does not parse; the message names the field."""


def _hex(v: int) -> str:
    return f"{v:#x}"


def _int(v: Any) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


# -- table entries as runs (v2) ---------------------------------------------------------
# A run of n entries v0, v0+s, ... is built and checked as one integer of n
# 64-bit lanes, v0 * (1 + 2**64 + 2**128 ...) + s * (0 + 1*2**64 + 2*2**128 ...),
# converted to and from bytes in C: no Python loop over 229,888 entries, and
# no range() over values above 2**63 (NX set), which Python iterates slowly.
_BIG_ENDIAN = array("I", [1]).tobytes() != b"\x01\x00\x00\x00"
_KEYS = list(range(1024))  # shared index objects: slices compare and zip without new ints


@functools.lru_cache(maxsize=None)
def _lanes(n: int) -> tuple[int, int]:
    """(sum of 2**(64k), sum of k * 2**(64k)) for k < n."""
    return (int.from_bytes(array("Q", [1]).tobytes() * n, "little"),
            int.from_bytes(array("Q", range(n)).tobytes(), "little"))


def _run(v0: int, step: int, n: int) -> array:
    """array('Q') of v0, v0+step, ... (n values); the caller ensures the last < 2**64."""
    ones, ks = _lanes(n)
    a = array("Q")
    a.frombytes((v0 * ones + step * ks).to_bytes(8 * n, "little"))
    if _BIG_ENDIAN:  # pragma: no cover
        a.byteswap()
    return a


def encode_entries(entries: dict[int, int]) -> str:
    """One table page's non-zero entries as space-separated runs, in index order:
    `I:V` (entry I holds V) or `I-J:V+S` (entries I..J hold V, V+S, V+2S, ...)."""
    if not entries:
        return ""
    if isinstance(entries, Series) and entries.count >= 3:  # the walker's uniform pages
        return (f"{entries.start}-{entries.start + entries.count - 1}:"
                f"{entries.first:#x}+{entries.step:#x}")
    idx, vals = list(entries), list(entries.values())
    n, i0, v0 = len(idx), idx[0], vals[0]
    # Fast path: consecutive entries with one stride, what a lowmem PTE page (or
    # a PMD of consecutively allocated tables) is; the walker's dicts are in index order.
    if n >= 3 and idx == _KEYS[i0:i0 + n]:
        step = vals[1] - v0
        if step >= 0 and vals[-1] == v0 + (n - 1) * step < _U64:
            try:
                if array("Q", vals) == _run(v0, step, n):
                    return f"{i0}-{idx[-1]}:{v0:#x}+{step:#x}"
            except OverflowError:  # a negative value in a hand-built page
                pass
    if any(a >= b for a, b in zip(idx, idx[1:])):  # hand-built pages may be unordered
        pairs = sorted(entries.items())
        idx, vals = [p[0] for p in pairs], [p[1] for p in pairs]
    out = []
    k = 0
    while k < n:
        i, v = idx[k], vals[k]
        if k + 2 < n and idx[k + 2] == i + 2:  # sorted and unique: k..k+2 are consecutive
            step = vals[k + 1] - v
            if step >= 0 and vals[k + 2] - vals[k + 1] == step:
                m = k + 3
                while m < n and idx[m] == idx[m - 1] + 1 and vals[m] - vals[m - 1] == step:
                    m += 1
                out.append(f"{i}-{idx[m - 1]}:{v:#x}+{step:#x}")
                k = m
                continue
        out.append(f"{i}:{v:#x}")
        k += 1
    return " ".join(out)


_SYNTAX = "is not INDEX:VALUE or FIRST-LAST:VALUE+STEP"


def decode_entries(text: str, limit: int) -> dict[int, int]:
    """encode_entries' inverse; `limit` is how many entries the table has.
    Raises _Malformed saying what is wrong."""
    if not isinstance(text, str):
        raise _Malformed(f"is a JSON {type(text).__name__}, not a string of runs")
    out: dict[int, int] = {}
    nxt = 0  # runs come in increasing index order and do not overlap
    tokens = text.split()
    for tok in tokens:
        head, colon, value = tok.partition(":")
        first, dash, last = head.partition("-")
        try:
            if not colon:
                raise ValueError
            i = int(first)
            if dash:
                j = int(last)
                v, plus, s = value.partition("+")
                if not plus:
                    raise ValueError
                v, step = int(v, 0), int(s, 0)
            else:
                j, v, step = i, int(value, 0), 0
        except ValueError:
            raise _Malformed(f"{tok!r} {_SYNTAX}") from None
        if i < nxt or j < i:
            raise _Malformed(f"{tok!r}: runs must be in increasing index order, not overlapping")
        if j >= limit:
            raise _Malformed(f"{tok!r}: index {j} beyond the table's {limit} entries")
        if v < 0 or step < 0 or v + (j - i) * step >= _U64:
            raise _Malformed(f"{tok!r}: a value outside 0..2**64-1")
        if i == j:
            out[i] = v
        elif len(tokens) == 1:
            return Series(i, j - i + 1, v, step)  # one run: kept as the walker keeps it
        else:
            out.update(zip(_KEYS[i:j + 1], _run(v, step, j - i + 1).tolist()))
        nxt = j + 1
    return out


def _each(d: dict[str, Any], name: str, parse, default: list | None = None) -> list:
    """parse() over the list d[name]; an error names the element (`ranges[3]: ...`)."""
    items = d[name] if default is None else d.get(name, default)
    if not isinstance(items, list):
        raise _Malformed(f"{name}: a JSON {type(items).__name__}, not a list")
    out = []
    for k, item in enumerate(items):
        try:
            out.append(parse(item))
        except KeyError as e:
            raise _Malformed(f"{name}[{k}]: field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise _Malformed(f"{name}[{k}]: {e}") from None
    return out


def _entries_per_table(cpu: CpuState, level: str) -> int:
    if cpu.pae:
        return 4 if level == "pgd" else 512  # the PDPT: 4 entries at CR3 & ~0x1f
    return 1024


@dataclass
class Snapshot:
    label: str
    registers: dict[str, int]
    tables: list[TablePage]
    ranges: list[Range]
    problems: list[Problem] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    scenario: dict[str, Any] | None = None
    guest: dict[str, Any] | None = None

    @classmethod
    def from_walk(cls, walk: Walk, label: str, *, registers: dict[str, int] | None = None,
                  provenance: dict[str, Any] | None = None, scenario: dict[str, Any] | None = None,
                  guest: dict[str, Any] | None = None) -> "Snapshot":
        regs = {"cr0": walk.cpu.cr0, "cr3": walk.cpu.cr3, "cr4": walk.cpu.cr4, "efer": walk.cpu.efer}
        regs.update(registers or {})
        return cls(label=label, registers=regs, tables=walk.tables, ranges=merge(walk.leaves),
                   problems=walk.problems, provenance=dict(provenance or {}), scenario=scenario,
                   guest=guest)

    # -- derived views -------------------------------------------------------------
    @property
    def cpu(self) -> CpuState:
        r = self.registers
        return CpuState(cr0=r["cr0"], cr3=r["cr3"], cr4=r["cr4"], efer=r.get("efer", 0))

    @property
    def mode(self) -> str:
        return self.cpu.mode

    def table(self, level: str, phys: int) -> TablePage | None:
        for t in self.tables:
            if t.level == level and t.phys == phys:
                return t
        return None

    def memory(self) -> ImageMemory:
        """The table pages rebuilt as physical memory (entries at their offsets).

        Only what the snapshot recorded is there: other bytes read as zero.
        """
        size = x86.geometry(self.cpu.pae).entry_size if self.cpu.paging else 4
        fmt = "<Q" if size == 8 else "<I"
        mem = ImageMemory()
        for t in self.tables:
            page, off = mem.page(t.phys), t.phys & (x86.PAGE_SIZE - 1)
            for idx, val in t.entries.items():
                struct.pack_into(fmt, page, off + idx * size, val)
        return mem

    # -- JSON ----------------------------------------------------------------------
    def to_dict(self, version: int = VERSION) -> dict[str, Any]:
        """The document of docs/json.md; version=1 writes the old layout (for
        readers that predate v2, and to measure one against the other)."""
        if version not in READS:
            raise ValueError(f"snapshot version {version} cannot be written (only {READS})")
        if version == 1:
            tables = [{"level": t.level, "phys": _hex(t.phys),
                       "entries": {str(i): _hex(v) for i, v in sorted(t.entries.items())}}
                      for t in self.tables]
        else:
            tables = [{"level": t.level, "phys": _hex(t.phys), "entries": encode_entries(t.entries)}
                      for t in self.tables]
        return {
            "format": FORMAT,
            "version": version,
            "label": self.label,
            "mode": self.mode,
            "registers": {k: _hex(v) for k, v in self.registers.items()},
            "provenance": self.provenance,
            "scenario": self.scenario,
            "guest": self.guest,
            "tables": tables,
            "ranges": [
                {"va": _hex(r.va), "pa": _hex(r.pa), "size": _hex(r.size),
                 "page_size": _hex(r.page_size), "flags": _hex(r.flags),
                 "rwx": x86.rwx(r.writable, r.executable), "user": r.user, "global": r.global_}
                for r in self.ranges
            ],
            "problems": [
                {"level": p.level, "entry_addr": _hex(p.entry_addr), "va": _hex(p.va),
                 "value": _hex(p.value), "what": p.what}
                for p in self.problems
            ],
        }

    def to_json(self, version: int = VERSION) -> str:
        # indent=1 throughout: with entries as one string per page a v2 document
        # is a few thousand values, so the pure-Python indenting encoder is cheap.
        return json.dumps(self.to_dict(version), indent=1)

    def save(self, path: str | Path, version: int = VERSION) -> None:
        Path(path).write_text(self.to_json(version) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Snapshot":
        """Version 1 or 2; raises SnapshotError naming what is missing or malformed."""
        if not isinstance(d, dict):
            raise SnapshotError(f"not a ptharness snapshot (a JSON {type(d).__name__}, not an object)")
        if d.get("format") != FORMAT:
            raise SnapshotError(f"not a ptharness snapshot (format={d.get('format')!r})")
        version = d.get("version")
        if version not in READS:
            raise SnapshotError(f"snapshot version {version!r} is not one this ptharness reads "
                                f"({' or '.join(map(str, READS))}): written by a newer one?")
        try:
            return cls._parse(d, version)
        except _Malformed as e:
            raise SnapshotError(f"malformed snapshot: {e}") from None
        except KeyError as e:
            raise SnapshotError(f"malformed snapshot: field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SnapshotError(f"malformed snapshot: {e}") from None

    @classmethod
    def _parse(cls, d: dict[str, Any], version: int) -> "Snapshot":
        registers = {k: _int(v) for k, v in d["registers"].items()}
        if version == 1:
            tables = _each(d, "tables", lambda t: TablePage(
                t["level"], _int(t["phys"]), {int(i): _int(v) for i, v in t["entries"].items()}))
        else:
            tables = cls._tables_v2(d["tables"], registers)
        return cls(
            label=d["label"],
            registers=registers,
            tables=tables,
            ranges=_each(d, "ranges", lambda r: Range(
                va=_int(r["va"]), pa=_int(r["pa"]), size=_int(r["size"]),
                page_size=_int(r["page_size"]), flags=_int(r["flags"]),
                writable="w" in r["rwx"], user=r["user"], executable="x" in r["rwx"],
                global_=r["global"])),
            problems=_each(d, "problems", lambda p: Problem(
                p["level"], _int(p["entry_addr"]), _int(p["va"]), _int(p["value"]), p["what"]),
                default=[]),
            provenance=d.get("provenance") or {},
            scenario=d.get("scenario"),
            guest=d.get("guest"),
        )

    @staticmethod
    def _tables_v2(tables: Any, registers: dict[str, int]) -> list[TablePage]:
        if not isinstance(tables, list):
            raise _Malformed(f"tables: a JSON {type(tables).__name__}, not a list")
        cpu = CpuState(cr0=registers["cr0"], cr3=registers["cr3"], cr4=registers["cr4"],
                       efer=registers.get("efer", 0))
        out = []
        for k, t in enumerate(tables):
            where = f"tables[{k}]"
            if not isinstance(t, dict):
                raise _Malformed(f"{where}: a JSON {type(t).__name__}, not an object")
            for name in ("level", "phys", "entries"):
                if name not in t:
                    raise _Malformed(f"{where}: field {name!r} is missing")
            level = t["level"]
            if level not in ("pgd", "pmd", "pte"):
                raise _Malformed(f"{where}.level: {level!r} is not pgd, pmd or pte")
            try:
                phys = _int(t["phys"])
            except (TypeError, ValueError):
                raise _Malformed(f"{where}.phys: {t['phys']!r} is not a number") from None
            try:
                entries = decode_entries(t["entries"], _entries_per_table(cpu, level))
            except _Malformed as e:
                raise _Malformed(f"{where}.entries: {e}") from None
            out.append(TablePage(level, phys, entries))
        return out

    @classmethod
    def load(cls, path: str | Path) -> "Snapshot":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise SnapshotError(f"cannot read snapshot {path}: {e}") from e
        try:
            return cls.from_dict(data)
        except SnapshotError as e:
            raise SnapshotError(f"{path}: {e}") from None
