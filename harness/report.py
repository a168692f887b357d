"""Findings turned into something a person reads: mismatches grouped into VA
ranges, expected against actual, and the commands that reproduce the case and
reopen it in gdb."""
from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from . import walker, x86
from .x86 import size_text

if TYPE_CHECKING:  # the checks are loaded only where findings are shown: `walk` needs none
    from .checks import Finding, Verdict

LEVEL_UNITS = {"pte": ("PTE", "PTEs"), "pmd": ("PMD entry", "PMD entries"),
               "pgd": ("PGD entry", "PGD entries"), None: ("item", "items")}


@dataclass
class Group:
    check: str
    rule: str
    level: str | None
    expected: str
    actual: str
    va: int | None
    end: int | None          # exclusive
    count: int
    first: Finding
    details: list[str] = field(default_factory=list)

    def va_text(self) -> str:
        if self.va is None:
            return "-"
        if self.end is None or self.end <= self.va + 1:
            return f"{self.va:08x}"
        return f"{self.va:08x}-{self.end - 1:08x}"

    def line(self) -> str:
        one, many = LEVEL_UNITS.get(self.level, (self.level, self.level))
        n = f"{self.count} {one if self.count == 1 else many}"
        head = f"{self.va_text()}, {n}" if self.va is not None else n
        return f"{head}: expected {self.expected}, got {self.actual}"

    def sample(self) -> str:
        f = self.first
        bits = []
        if f.entry_addr is not None:
            bits.append(f"entry at pa {f.entry_addr:#x}")
        if f.expected_value is not None or f.actual_value is not None:
            e = f"{f.expected_value:#x}" if f.expected_value is not None else "-"
            a = f"{f.actual_value:#x}" if f.actual_value is not None else "-"
            bits.append(f"expected {e}, actual {a}")
        if f.detail:
            bits.append(f.detail)
        return "; ".join(bits)


def group(findings: list[Finding]) -> list[Group]:
    """Merge findings that say the same thing about adjacent VAs."""
    from .checks import CHECKS

    def key(f: Finding):
        return (CHECKS.index(f.check) if f.check in CHECKS else 99, f.rule, f.level or "",
                f.expected, f.actual, f.va if f.va is not None else -1)

    groups: list[Group] = []
    for f in sorted(findings, key=key):
        g = groups[-1] if groups else None
        if (g is not None and g.check == f.check and g.rule == f.rule and g.level == f.level
                and g.expected == f.expected and g.actual == f.actual and f.va is not None
                and g.end is not None and f.va == g.end):
            g.end = f.va + max(f.span, 1)
            g.count += f.count
            continue
        end = f.va + max(f.span, 1) if f.va is not None else None
        groups.append(Group(f.check, f.rule, f.level, f.expected, f.actual, f.va, end, f.count, f))
    return groups


def render(title: str, verdict: Verdict, *, reproduce: str = "", debug: str = "",
           artifacts: str = "", serial_tail: str = "", fault: str = "",
           max_groups: int = 12) -> str:
    lines = [title]
    groups = group(verdict.findings)
    from .checks import CHECKS
    for check in CHECKS:
        if check in verdict.skipped:
            lines.append(f"  {check:<11} skipped: {verdict.skipped[check]}")
            continue
        if check not in verdict.ran:
            continue
        mine = [g for g in groups if g.check == check]
        if not mine:
            figures = verdict.figures.get(check)
            lines.append(f"  {check:<11} ok" + (f" ({figures})" if figures else ""))
            continue
        lines.append(f"  {check:<11} FAILED: {len(mine)} range(s)")
        for g in mine[:max_groups]:
            lines.append(f"    [{g.rule}] {g.line()}")
            s = g.sample()
            if s:
                lines.append(f"        {s}")
        if len(mine) > max_groups:
            lines.append(f"    ... {len(mine) - max_groups} more (see report.txt in the artifacts)")
    if fault:
        lines.append(fault)
    if serial_tail:
        lines.append("  guest log (tail):")
        lines += [f"    | {ln}" for ln in serial_tail.rstrip().splitlines()[-8:]]
    if artifacts:
        lines.append(f"  artifacts: {artifacts}")
    if reproduce:
        lines.append(f"  reproduce: {reproduce}")
    if debug:
        lines.append(f"  debug:     {debug}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------
# Address spaces for a person (ptharness walk, the gdb `pt` commands)
# ------------------------------------------------------------------------------------


def format_ranges(ranges: list[walker.Range]) -> list[str]:
    lines = [f"{'VA':<21} {'PA':<23} {'size':>6} {'page':>4} perm user global flags"]
    for r in ranges:
        perm = x86.rwx(r.writable, r.executable)
        lines.append(f"{r.va:08x}-{r.va + r.size - 1:08x}  {r.pa:09x}-{r.pa + r.size - 1:09x}"
                     f"  {size_text(r.size):>6} {size_text(r.page_size):>4} {perm}  "
                     f"{'u' if r.user else 's':<4} {'g' if r.global_ else '-':<6} {r.flags:#x}")
    return lines


def format_cpu(cpu: walker.CpuState) -> str:
    bits = [name for name, on in (("PSE", cpu.pse), ("PGE", cpu.pge), ("NXE", cpu.nxe)) if on]
    return (f"paging {cpu.mode}  cr0={cpu.cr0:#x} cr3={cpu.cr3:#x} cr4={cpu.cr4:#x} "
            f"efer={cpu.efer:#x}  {' '.join(bits)}").rstrip()



def format_va_walk(walk: walker.Walk, mem: walker.PhysMemory, va: int, *,
                   phys_bits: int = 36) -> list[str]:
    """The walk of one address, level by level, and where it ends."""
    lines = [f"walk of {va:#010x}:"]
    steps = walker.walk_va(mem, walk.cpu, va, phys_bits=phys_bits)
    if not steps:
        lines.append("  paging is off")
    for s in steps:
        lines.append(f"  {s.level:<3} table {s.table:#x} [{s.index}] entry {s.entry:#x} "
                     f"at {s.entry_addr:#x}: {s.what}")
    if steps and steps[-1].pa is not None:
        leaf = walker.leaf_at(walk.leaves, va)
        perms = ""
        if leaf is not None:
            perms = (" " + x86.rwx(leaf.writable, leaf.executable)
                     + (" user" if leaf.user else " supervisor"))
        lines.append(f"  -> PA {steps[-1].pa:#x}{perms}")
    return lines
