"""Semantic difference of two snapshots: address ranges gained, lost and
changed (translation or attributes), table pages gained and lost per level,
and register changes. Works on any two snapshots, e.g. the before and after
of one run, or the same scenario on two guest builds."""
from __future__ import annotations

from dataclasses import dataclass

from . import walker, x86
from .snapshot import Snapshot
from .walker import Range
from .x86 import size_text


@dataclass(frozen=True)
class Change:
    kind: str      # "gained", "lost", "changed"
    va: int
    end: int       # exclusive
    old: str
    new: str

    def line(self) -> str:
        mark = {"gained": "+", "lost": "-", "changed": "~"}[self.kind]
        span = f"{self.va:08x}-{self.end - 1:08x}"
        size = size_text(self.end - self.va)
        if self.kind == "gained":
            return f"{mark} {span} {size:>8}  {self.new}"
        if self.kind == "lost":
            return f"{mark} {span} {size:>8}  {self.old}"
        return f"{mark} {span} {size:>8}  {self.old}  ->  {self.new}"


def _attrs(r: Range) -> str:
    return (f"{x86.rwx(r.writable, r.executable)} {'user' if r.user else 'kern'}{' global' if r.global_ else ''} "
            f"{size_text(r.page_size)}-pages flags={r.flags:#x}")


def _span(r: Range) -> tuple[int, int]:
    return r.va, r.va + r.size


def _same(a: Range, b: Range, va: int) -> bool:
    return (a.pa + (va - a.va) == b.pa + (va - b.va) and a.page_size == b.page_size
            and a.flags == b.flags and a.writable == b.writable and a.user == b.user
            and a.executable == b.executable and a.global_ == b.global_)


def range_changes(old: list[Range], new: list[Range]) -> list[Change]:
    """Sweep both range lists over their common breakpoints."""
    out: list[Change] = []
    for lo, hi, a, b in walker.sweep(old, new, _span, _span):
        if a is None and b is None:
            continue
        if a is None:
            ch = Change("gained", lo, hi, "", _attrs(b))
        elif b is None:
            ch = Change("lost", lo, hi, _attrs(a), "")
        elif _same(a, b, lo):
            continue
        else:
            # A moved translation is told as the shift of its frame, so that
            # a run of pages moved alike merges into one line.
            shift = (b.pa - b.va) - (a.pa - a.va)
            ch = Change("changed", lo, hi, _attrs(a),
                        _attrs(b) + (f", frame {shift:+#x}" if shift else ""))
        prev = out[-1] if out else None
        if (prev is not None and prev.end == ch.va and prev.kind == ch.kind
                and prev.old == ch.old and prev.new == ch.new):
            out[-1] = Change(prev.kind, prev.va, ch.end, prev.old, prev.new)
        else:
            out.append(ch)
    return out


@dataclass
class SnapshotDiff:
    registers: list[tuple[str, int | None, int | None]]
    tables_gained: dict[str, list[int]]
    tables_lost: dict[str, list[int]]
    ranges: list[Change]

    def to_dict(self, a_name: str = "A", b_name: str = "B") -> dict:
        """`ptharness diff --json`: format ptharness-diff, version 1 (docs/json.md)."""
        return {
            "format": "ptharness-diff", "version": 1, "a": a_name, "b": b_name,
            "same": self.empty,
            "registers": [{"name": n, "a": None if x is None else f"{x:#x}",
                           "b": None if y is None else f"{y:#x}"} for n, x, y in self.registers],
            "tables": {level: {"gained": [f"{p:#x}" for p in self.tables_gained.get(level, [])],
                               "lost": [f"{p:#x}" for p in self.tables_lost.get(level, [])]}
                       for level in sorted(set(self.tables_gained) | set(self.tables_lost))},
            "ranges": [{"kind": c.kind, "va": f"{c.va:#x}", "end": f"{c.end:#x}", "a": c.old,
                        "b": c.new} for c in self.ranges],
        }

    @property
    def empty(self) -> bool:
        return not (self.registers or any(self.tables_gained.values())
                    or any(self.tables_lost.values()) or self.ranges)

    def render(self, a_name: str = "A", b_name: str = "B") -> str:
        lines = [f"--- {a_name}", f"+++ {b_name}"]
        if self.empty:
            lines.append("no difference: same registers, table pages and mappings")
            return "\n".join(lines)
        for name, x, y in self.registers:
            fx = "-" if x is None else f"{x:#x}"
            fy = "-" if y is None else f"{y:#x}"
            lines.append(f"register {name}: {fx} -> {fy}")
        for level in sorted(set(self.tables_gained) | set(self.tables_lost)):
            g, l_ = self.tables_gained.get(level, []), self.tables_lost.get(level, [])
            if g or l_:
                lines.append(f"{level} table pages: +{len(g)} -{len(l_)}"
                             + (f"  gained {_pages(g)}" if g else "")
                             + (f"  lost {_pages(l_)}" if l_ else ""))
        if self.ranges:
            lines.append(f"mappings: {len(self.ranges)} range(s) differ")
            lines += ["  " + c.line() for c in self.ranges]
        return "\n".join(lines)


def _pages(addrs: list[int], limit: int = 6) -> str:
    shown = ", ".join(f"{a:#x}" for a in addrs[:limit])
    return shown + (f", ... ({len(addrs)} in all)" if len(addrs) > limit else "")


def diff(a: Snapshot, b: Snapshot) -> SnapshotDiff:
    regs = []
    for name in sorted(set(a.registers) | set(b.registers)):
        if name == "eip":
            continue  # where the CPU stopped is not part of the paging state
        x, y = a.registers.get(name), b.registers.get(name)
        if x != y:
            regs.append((name, x, y))
    ta = {(t.level, t.phys) for t in a.tables}
    tb = {(t.level, t.phys) for t in b.tables}
    gained: dict[str, list[int]] = {}
    lost: dict[str, list[int]] = {}
    for level, phys in sorted(tb - ta):
        gained.setdefault(level, []).append(phys)
    for level, phys in sorted(ta - tb):
        lost.setdefault(level, []).append(phys)
    return SnapshotDiff(regs, gained, lost, range_changes(a.ranges, b.ranges))
