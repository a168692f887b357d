"""A snapshot: the paging state of one moment as a versioned JSON document.

It holds the control registers, every table page the CPU would walk (non-zero
entries only), the leaf mappings merged into ranges, anything the CPU would
reject, and where it came from.  Numbers are written as hex strings so that
64-bit PAE entries survive any JSON reader.
"""
from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import x86
from .walker import CpuState, ImageMemory, Problem, Range, TablePage, Walk, merge

FORMAT = "ptharness-snapshot"
VERSION = 1


class SnapshotError(Exception):
    pass


def _hex(v: int) -> str:
    return f"{v:#x}"


def _int(v: Any) -> int:
    return int(v, 0) if isinstance(v, str) else int(v)


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
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "label": self.label,
            "mode": self.mode,
            "registers": {k: _hex(v) for k, v in self.registers.items()},
            "provenance": self.provenance,
            "scenario": self.scenario,
            "guest": self.guest,
            "tables": [
                {"level": t.level, "phys": _hex(t.phys),
                 "entries": {str(i): _hex(v) for i, v in sorted(t.entries.items())}}
                for t in self.tables
            ],
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

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Snapshot":
        """Raises SnapshotError naming what is missing or malformed."""
        if not isinstance(d, dict):
            raise SnapshotError(f"not a ptharness snapshot (a JSON {type(d).__name__}, not an object)")
        if d.get("format") != FORMAT:
            raise SnapshotError(f"not a ptharness snapshot (format={d.get('format')!r})")
        if d.get("version") != VERSION:
            raise SnapshotError(f"snapshot version {d.get('version')} is not {VERSION}")
        try:
            return cls._parse(d)
        except KeyError as e:
            raise SnapshotError(f"malformed snapshot: field {e.args[0]!r} is missing") from None
        except (TypeError, ValueError, AttributeError) as e:
            raise SnapshotError(f"malformed snapshot: {e}") from None

    @classmethod
    def _parse(cls, d: dict[str, Any]) -> "Snapshot":
        return cls(
            label=d["label"],
            registers={k: _int(v) for k, v in d["registers"].items()},
            tables=[TablePage(t["level"], _int(t["phys"]),
                              {int(i): _int(v) for i, v in t["entries"].items()})
                    for t in d["tables"]],
            ranges=[Range(va=_int(r["va"]), pa=_int(r["pa"]), size=_int(r["size"]),
                          page_size=_int(r["page_size"]), flags=_int(r["flags"]),
                          writable="w" in r["rwx"], user=r["user"],
                          executable="x" in r["rwx"], global_=r["global"])
                    for r in d["ranges"]],
            problems=[Problem(p["level"], _int(p["entry_addr"]), _int(p["va"]), _int(p["value"]),
                              p["what"]) for p in d.get("problems", [])],
            provenance=d.get("provenance") or {},
            scenario=d.get("scenario"),
            guest=d.get("guest"),
        )

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

