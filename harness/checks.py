"""The check layers. Each turns evidence into findings and can fail a scenario
on its own:

- model:       the tables after paging_init equal model(before), entry by entry,
               plus the allocations and the paravirt hook log;
- invariants:  properties stated from kernel-facts.md, computed here from the
               scenario alone (never from the model or the guest's variables);
- oracle:      the walker agrees with QEMU's own `info tlb` / `info mem`;
- content:     kernel text read through its virtual addresses equals the ELF;
- guest:       the boot ended the way the scenario expects (exit code, self-check).

A finding names its check and rule, the paging level, the VA it concerns and
expected against actual; report.py groups them into ranges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from . import x86
from .scenarios import EXCEPTION, PASS, UNSUPPORTED, Scenario
from .snapshot import Snapshot
from .walker import CpuState, Range, TablePage

ADDR_MASK_PAE = 0x000FFFFFFFFFF000
ADDR_MASK_2L = 0xFFFFF000
VA_TOP = 1 << 32

CHECKS = ("model", "invariants", "oracle", "content", "guest")


@dataclass(frozen=True)
class Finding:
    check: str
    rule: str
    expected: str
    actual: str
    level: str | None = None
    va: int | None = None
    span: int = 0                 # bytes of VA one finding covers (one entry's reach)
    entry_addr: int | None = None
    expected_value: int | None = None
    actual_value: int | None = None
    detail: str = ""


# --------------------------------------------------------------------------------------
# Table entries indexed by the VA they cover
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    level: str
    va: int
    span: int
    value: int
    addr: int  # physical address of the entry


def _span(level: str, pae: bool) -> int:
    geo = x86.geometry(pae)
    return {"pgd": geo.pgdir_size, "pmd": geo.pmd_size, "pte": x86.PAGE_SIZE}[level]


def is_leaf(level: str, value: int, cpu: CpuState) -> bool:
    if level == "pte":
        return True
    if level == "pmd":
        return bool(value & x86.PSE)
    # pgd: a leaf only as a 2-level 4 MiB page with CR4.PSE on
    return not cpu.pae and bool(value & x86.PSE) and cpu.pse


def entries_by_va(tables: list[TablePage], cpu: CpuState) -> dict[tuple[str, int], Entry]:
    """Every non-zero entry reachable from CR3, keyed by (level, first VA it covers).

    A table page reached through two parents (PAE slot 0 and slot 3 share the
    kernel PMD) appears under both VAs, as the CPU sees it.
    """
    if not cpu.paging:
        return {}
    pae = cpu.pae
    size = 8 if pae else 4
    by_key = {(t.level, t.phys): t for t in tables}
    root = cpu.cr3 & (0xFFFFFFE0 if pae else 0xFFFFF000)
    child_level = {"pgd": "pmd" if pae else "pte", "pmd": "pte"}
    mask = ADDR_MASK_PAE if pae else ADDR_MASK_2L
    out: dict[tuple[str, int], Entry] = {}

    def visit(level: str, phys: int, va_base: int) -> None:
        page = by_key.get((level, phys))
        if page is None:
            return
        span = _span(level, pae)
        for idx, value in page.entries.items():
            va = va_base + idx * span
            out[(level, va)] = Entry(level, va, span, value, phys + idx * size)
            if value & x86.PRESENT and not is_leaf(level, value, cpu):
                visit(child_level[level], value & mask, va)

    visit("pgd", root, 0)
    return out


# --------------------------------------------------------------------------------------
# Describing a difference between two entries
# --------------------------------------------------------------------------------------
_BIT_WORDS = (
    (x86.NX, "NX", "executable"),
    (x86.RW, "writable", "read-only"),
    (x86.USER, "user", "supervisor"),
    (x86.GLOBAL, "global", "not global"),
    (x86.PSE, "large page", "no PS bit"),
    (x86.PWT, "write-through", "write-back"),
    (x86.PCD, "cache disabled", "cached"),
)


def compare_mask(level: str, pae: bool) -> int:
    """Bits that must match exactly: all but A/D, which hardware may set.
    (PAE PDPT entries have no A/D: bits 5 and 6 are reserved there.)"""
    if pae and level == "pgd":
        return (1 << 64) - 1
    return ((1 << 64) - 1) & ~x86.HW_MANAGED


def describe(level: str, expected: int, actual: int, pae: bool, leaf: bool) -> tuple[str, str] | None:
    """(expected, actual) phrases for the bits that differ, or None if equal."""
    m = compare_mask(level, pae)
    if (expected & m) == (actual & m):
        return None
    if not expected & x86.PRESENT and actual & x86.PRESENT:
        return "not present", "present"
    if expected & x86.PRESENT and not actual & x86.PRESENT:
        return "present", "not present" if actual == 0 else "not present (non-zero)"
    exp, act = [], []
    for bit, on, off in _BIT_WORDS:
        if (expected ^ actual) & bit & m:
            exp.append(on if expected & bit else off)
            act.append(on if actual & bit else off)
    amask = ADDR_MASK_PAE if pae else ADDR_MASK_2L
    ea, aa = expected & amask, actual & amask
    if ea != aa:
        what = "frame" if leaf else "table"
        exp.append(f"{what} as modelled")
        delta = aa - ea
        act.append(f"{what} at {'+' if delta >= 0 else '-'}{abs(delta):#x} from it")
    other = (expected ^ actual) & m & ~amask & ~sum(b for b, _, _ in _BIT_WORDS)
    if other:
        exp.append(f"bits {expected & other:#x}")
        act.append(f"bits {actual & other:#x}")
    return ", ".join(exp), ", ".join(act)


# --------------------------------------------------------------------------------------
# Layer 1: the model
# --------------------------------------------------------------------------------------
def compare_tables(check: str, expected: dict[tuple[str, int], Entry],
                   actual: dict[tuple[str, int], Entry], cpu: CpuState) -> list[Finding]:
    out = []
    seen: set[int] = set()
    # Kernel VAs first: an entry reached through the PAE low alias too (slot 0
    # shares the kernel PMD) is reported once, under its kernel address.
    for key in sorted(set(expected) | set(actual), key=lambda k: (k[1] < x86.PAGE_OFFSET, k[1], k[0])):
        e, a = expected.get(key), actual.get(key)
        level, va = key
        ev, av = (e.value if e else 0), (a.value if a else 0)
        leaf = is_leaf(level, ev or av, cpu)
        d = describe(level, ev, av, cpu.pae, leaf)
        if d is None:
            continue
        addr = (a or e).addr
        if addr in seen and e and a and e.addr == a.addr:
            continue
        seen.add(addr)
        out.append(Finding(check, "entries", d[0], d[1], level=level, va=va,
                           span=(e or a).span, entry_addr=(a or e).addr,
                           expected_value=ev, actual_value=av))
    return out


def check_model(before: Snapshot, after: Snapshot, predicted_cpu: CpuState, predicted_tables: list[TablePage],
                predicted_allocs: list[int], predicted_hooks: list[tuple[int, int]]) -> list[Finding]:
    out: list[Finding] = []
    for reg, exp, act in (("cr3", predicted_cpu.cr3, after.cpu.cr3),
                          ("cr4", predicted_cpu.cr4, after.cpu.cr4),
                          ("efer.nxe", predicted_cpu.efer & x86.EFER_NXE,
                           after.cpu.efer & x86.EFER_NXE),
                          ("cr0.pg", predicted_cpu.cr0 & x86.CR0_PG, after.cpu.cr0 & x86.CR0_PG)):
        if exp != act:
            out.append(Finding("model", "registers", f"{reg}={exp:#x}", f"{reg}={act:#x}"))
    if predicted_cpu.pae != after.cpu.pae:
        return out  # different modes: the entries cannot be compared one by one
    out += compare_tables("model", entries_by_va(predicted_tables, predicted_cpu),
                          entries_by_va(after.tables, after.cpu), after.cpu)
    start = (before.guest or {}).get("boot_alloc_cursor")
    cursor = (after.guest or {}).get("boot_alloc_cursor")
    if cursor is not None and start is not None:
        actual_allocs = list(range(start, cursor, x86.PAGE_SIZE))
        if actual_allocs != predicted_allocs:
            out.append(Finding(
                "model", "allocations",
                f"{len(predicted_allocs)} pages {_page_span(predicted_allocs)}",
                f"{len(actual_allocs)} pages {_page_span(actual_allocs)}"))
    hooks = (after.guest or {}).get("hook_log")
    if hooks is not None:
        # Only the calls made since the "before" point belong to pagetable_init.
        done_before = len((before.guest or {}).get("hook_log") or [])
        actual_hooks = [tuple(h) for h in hooks[done_before:]]
        if actual_hooks != [tuple(h) for h in predicted_hooks]:
            i = next((i for i, (x, y) in enumerate(zip(predicted_hooks, actual_hooks))
                      if tuple(x) != tuple(y)), min(len(predicted_hooks), len(actual_hooks)))
            out.append(Finding(
                "model", "hook-log",
                f"{len(predicted_hooks)} calls; #{i}: {_hook(predicted_hooks, i)}",
                f"{len(actual_hooks)} calls; #{i}: {_hook(actual_hooks, i)}"))
    return out


HOOK_NAMES = {1: "alloc_pd", 2: "alloc_pt", 3: "pin"}


def _hook(log, i) -> str:
    if i >= len(log):
        return "(none)"
    op, pfn = log[i]
    return f"{HOOK_NAMES.get(op, op)}(pfn {pfn:#x})"


def _page_span(pages: list[int]) -> str:
    return f"{pages[0]:#x}..{pages[-1]:#x}" if pages else ""


# --------------------------------------------------------------------------------------
# Layer 2: invariants stated from the spec
# --------------------------------------------------------------------------------------
FIXMAP_ENTRIES = 32   # __end_of_fixed_addresses, docs/guest-contract.md
VMALLOC_RESERVE = 128 << 20


@dataclass(frozen=True)
class SpecLayout:
    """What kernel-facts.md says the address space must look like for a scenario."""

    pae: bool
    pse: bool
    pge: bool
    nx_active: bool
    max_pfn: int
    max_low_pfn: int
    fixaddr_top: int
    fix_start: int
    fix_end: int        # exclusive; 1 << 32 when the range runs to the wrap
    pkmap_base: int
    pkmap_end: int
    text_end: int       # __init_end: executable up to and including its page

    @classmethod
    def of(cls, s: Scenario, init_end: int, ram_bytes: int | None = None) -> "SpecLayout":
        """ram_bytes: the RAM the firmware reports (default: QEMU's -m)."""
        geo = x86.geometry(s.pae)
        ram = s.memory if ram_bytes is None else ram_bytes
        if s.mem_limit is not None:
            ram = min(ram, s.mem_limit)
        max_pfn = ram >> x86.PAGE_SHIFT
        maxmem = VA_TOP - x86.PAGE_OFFSET - (VMALLOC_RESERVE + s.reservetop)
        top = (VA_TOP - s.reservetop - x86.PAGE_SIZE) if s.reservetop else 0xFFFFF000
        fix_start = (top - ((FIXMAP_ENTRIES - 1) << x86.PAGE_SHIFT)) & geo.pmd_mask
        fix_end = (top + geo.pmd_size - 1) & ~(geo.pmd_size - 1)  # may reach 1 << 32
        boot_start = top - (FIXMAP_ENTRIES << x86.PAGE_SHIFT)
        pkmap = (boot_start - x86.PAGE_SIZE * (geo.last_pkmap + 1)) & geo.pmd_mask
        return cls(pae=s.pae, pse=s.pse, pge=s.pge, nx_active=s.nx_active, max_pfn=max_pfn,
                   max_low_pfn=min(max_pfn, maxmem >> x86.PAGE_SHIFT), fixaddr_top=top,
                   fix_start=fix_start, fix_end=fix_end, pkmap_base=pkmap,
                   pkmap_end=pkmap + x86.PAGE_SIZE * geo.last_pkmap, text_end=init_end)

    @property
    def geo(self) -> x86.Geometry:
        return x86.geometry(self.pae)

    @property
    def lowmem_end(self) -> int:
        return x86.PAGE_OFFSET + (self.max_low_pfn << x86.PAGE_SHIFT)

    @property
    def leaf_size(self) -> int:
        return self.geo.pmd_size if self.pse else x86.PAGE_SIZE

    @property
    def linear_end(self) -> int:
        """End of the linear map: the last large page may run past max_low_pfn."""
        ls = self.leaf_size
        return (self.lowmem_end + ls - 1) // ls * ls

    def executable(self, va: int, size: int) -> bool:
        """is_kernel_text of the page's first or (large pages) last byte."""
        def text(a: int) -> bool:
            return x86.PAGE_OFFSET <= a <= self.text_end
        return text(va) or (size > x86.PAGE_SIZE and text(va + size - 1))

    def kernel_flags(self, va: int, size: int) -> int:
        flags = x86.PAGE_KERNEL_EXEC
        if self.pge:
            flags |= x86.GLOBAL
        if size > x86.PAGE_SIZE:
            flags |= x86.PSE
        if self.nx_active and not self.executable(va, size):
            flags |= x86.NX
        return flags & ~x86.HW_MANAGED

    def table_chunks(self) -> set[int]:
        """PMD-sized chunks that must have a PTE page: fixmap and pkmap ranges,
        and the linear map when it is built from 4 KiB pages."""
        ps = self.geo.pmd_size
        chunks = set(range(self.fix_start, self.fix_end, ps))
        chunks |= set(range(self.pkmap_base, self.pkmap_end, ps))
        if not self.pse:
            chunks |= set(range(x86.PAGE_OFFSET, self.linear_end, ps))
        return chunks


def _leaves(entries: dict[tuple[str, int], Entry], cpu: CpuState) -> list[Entry]:
    return sorted((e for (lvl, _), e in entries.items()
                   if e.value & x86.PRESENT and is_leaf(lvl, e.value, cpu)),
                  key=lambda e: e.va)


def check_invariants(s: Scenario, layout: SpecLayout, swapper_pa: int, after: Snapshot,
                     before: Snapshot | None) -> list[Finding]:
    cpu = after.cpu
    out: list[Finding] = []

    def bad(rule, expected, actual, **kw):
        out.append(Finding("invariants", rule, expected, actual, **kw))

    # Registers: the mode and features the spec turns on.
    want = {"cr3": swapper_pa, "cr4.pae": s.pae, "cr4.pse": s.pse, "cr4.pge": s.pge,
            "efer.nxe": layout.nx_active}
    got = {"cr3": cpu.cr3 & ~0xFFF if not cpu.pae else cpu.cr3 & ~0x1F, "cr4.pae": cpu.pae,
           "cr4.pse": cpu.pse, "cr4.pge": cpu.pge, "efer.nxe": cpu.nxe}
    for k in want:
        if int(want[k]) != int(got[k]):
            bad("registers", f"{k}={int(want[k]):#x}", f"{k}={int(got[k]):#x}")
    if cpu.pae != s.pae:
        return out

    entries = entries_by_va(after.tables, cpu)
    leaves = _leaves(entries, cpu)

    # Every lowmem page at PAGE_OFFSET + pa, kernel protections, exec up to __init_end.
    covered = x86.PAGE_OFFSET
    for e in leaves:
        if e.va < x86.PAGE_OFFSET or e.va >= layout.linear_end:
            continue
        if e.va > covered:
            bad("lowmem-mapped", "mapped", "not mapped", va=covered, span=e.va - covered,
                level="pte")
        covered = max(covered, e.va + e.span)
        pa = e.value & (ADDR_MASK_PAE if cpu.pae else ADDR_MASK_2L)
        if e.span > x86.PAGE_SIZE and not cpu.pae:
            pa = (e.value & 0xFFC00000) | (((e.value >> 13) & 0xFF) << 32)
        elif e.span > x86.PAGE_SIZE:
            pa &= ~(e.span - 1)
        if pa != e.va - x86.PAGE_OFFSET:
            bad("lowmem-linear", f"pa {e.va - x86.PAGE_OFFSET:#x}", f"pa {pa:#x}",
                level=e.level, va=e.va, span=e.span, entry_addr=e.addr, actual_value=e.value)
        if e.span != layout.leaf_size:
            bad("page-size", f"{layout.leaf_size >> 10} KiB pages", f"{e.span >> 10} KiB page",
                level=e.level, va=e.va, span=e.span, entry_addr=e.addr, actual_value=e.value)
        want_flags = layout.kernel_flags(e.va, e.span)
        d = describe(e.level, want_flags | x86.PRESENT, e.value & ~ADDR_MASK_PAE | x86.PRESENT,
                     cpu.pae, True)
        if d is not None and e.span == layout.leaf_size:
            rule = "nx" if (want_flags ^ e.value) & x86.NX else "protections"
            bad(rule, d[0], d[1], level=e.level, va=e.va, span=e.span, entry_addr=e.addr,
                expected_value=want_flags, actual_value=e.value)
    if covered < layout.lowmem_end:
        bad("lowmem-mapped", "mapped", "not mapped", va=covered,
            span=layout.lowmem_end - covered, level="pte")

    # Effective permissions: no user access anywhere in kernel space.
    for r in after.ranges:
        if r.va + r.size > x86.PAGE_OFFSET and r.user:
            bad("no-user-in-kernel", "supervisor", "user-accessible", va=max(r.va, x86.PAGE_OFFSET),
                span=r.va + r.size - max(r.va, x86.PAGE_OFFSET))

    # Nothing mapped beyond what the spec maps; low mappings are identity.
    for e in leaves:
        if e.va >= x86.PAGE_OFFSET and e.va >= layout.linear_end:
            bad("nothing-beyond", "not mapped", "mapped", level=e.level, va=e.va, span=e.span,
                entry_addr=e.addr, actual_value=e.value)
        elif e.va < x86.PAGE_OFFSET:
            pa = e.value & (ADDR_MASK_PAE if cpu.pae else ADDR_MASK_2L) & ~(e.span - 1)
            if pa != e.va:
                bad("low-identity", f"pa {e.va:#x}", f"pa {pa:#x}", level=e.level, va=e.va,
                    span=e.span, entry_addr=e.addr, actual_value=e.value)

    # Tables exactly where the spec puts them in kernel space.
    pt_parent = "pmd" if cpu.pae else "pgd"
    chunks = layout.table_chunks()
    have = {va for (lvl, va), e in entries.items()
            if lvl == pt_parent and va >= x86.PAGE_OFFSET and e.value & x86.PRESENT
            and not is_leaf(lvl, e.value, cpu)}
    for va in sorted(chunks - have):
        bad("tables-present", "PTE page", "none", level=pt_parent, va=va,
            span=layout.geo.pmd_size,
            detail=_chunk_role(layout, va))
    for va in sorted(have - chunks):
        e = entries[(pt_parent, va)]
        bad("tables-beyond", "no PTE page", "PTE page", level=pt_parent, va=va,
            span=layout.geo.pmd_size, entry_addr=e.addr, actual_value=e.value,
            detail="above FIXADDR_TOP" if va >= layout.fix_end else "")

    if cpu.pae:
        pdpt = {va >> 30: e for (lvl, va), e in entries.items() if lvl == "pgd"}
        for i, e in sorted(pdpt.items()):
            if e.value & x86.PRESENT and e.value & ~ADDR_MASK_PAE & ~x86.PDPTE_ALLOWED_LOW:
                bad("pdpt-legal", "P, PWT, PCD and address only", f"{e.value:#x}", level="pgd",
                    va=e.va, span=e.span, entry_addr=e.addr, actual_value=e.value)
        kern = pdpt.get(3)
        slot0 = pdpt.get(0)
        if kern is None or slot0 is None or \
                (slot0.value & ADDR_MASK_PAE) != (kern.value & ADDR_MASK_PAE):
            bad("pae-low-identity", "PDPT[0] shares PDPT[3]'s PMD page",
                f"PDPT[0]={(slot0.value if slot0 else 0):#x} PDPT[3]={(kern.value if kern else 0):#x}",
                level="pgd", va=0, span=1 << 30)
    for p in after.problems:
        bad("cpu-would-fault", "legal entry", p.what, level=p.level, va=p.va,
            entry_addr=p.entry_addr, actual_value=p.value)

    # Tables present before setup are reused, not replaced (same paging mode only:
    # a native PAE boot starts on 2-level tables that PAE cannot reuse).
    if before is not None and before.cpu.paging and before.cpu.pae == cpu.pae:
        old = entries_by_va(before.tables, before.cpu)
        mask = ADDR_MASK_PAE if cpu.pae else ADDR_MASK_2L
        for key, e in old.items():
            lvl, va = key
            if not e.value & x86.PRESENT or is_leaf(lvl, e.value, before.cpu):
                continue
            now = entries.get(key)
            if now is not None and is_leaf(lvl, now.value, cpu):
                continue  # the spec replaces it with a large page (PSE linear map)
            if lvl == "pgd" and cpu.pae and va < x86.PAGE_OFFSET:
                continue  # user PDPT slots: setup_start / setup_done own them
            if now is None or (now.value & mask) != (e.value & mask):
                bad("tables-reused", f"table at {e.value & mask:#x} kept",
                    f"{'gone' if now is None else f'table at {now.value & mask:#x}'}",
                    level=lvl, va=va, span=e.span, entry_addr=e.addr, expected_value=e.value,
                    actual_value=now.value if now else 0)
    return out


def _chunk_role(layout: SpecLayout, va: int) -> str:
    if layout.fix_start <= va < layout.fix_end:
        return "fixmap"
    if layout.pkmap_base <= va < layout.pkmap_end:
        return "pkmap"
    return "linear map"


# --------------------------------------------------------------------------------------
# Layers 3-5: oracle, content, guest outcome
# --------------------------------------------------------------------------------------
def check_oracle(disagreements: Iterable) -> list[Finding]:
    """Findings from oracle.compare()'s disagreements (each has va, size, what,
    walker and qemu descriptions)."""
    out = []
    for d in disagreements:
        out.append(Finding("oracle", getattr(d, "source", "qemu"), getattr(d, "qemu", "?"),
                           getattr(d, "walker", "?"), va=getattr(d, "va", None),
                           span=getattr(d, "size", 0), detail=getattr(d, "what", str(d))))
    return out


@dataclass
class TextRegion:
    va: int
    expected: bytes
    actual: bytes


def check_content(regions: Iterable[TextRegion], disassemble=None) -> list[Finding]:
    out = []
    for r in regions:
        if r.expected == r.actual:
            continue
        first = next(i for i, (x, y) in enumerate(zip(r.expected, r.actual)) if x != y) \
            if any(x != y for x, y in zip(r.expected, r.actual)) else min(len(r.expected), len(r.actual))
        ndiff = sum(1 for x, y in zip(r.expected, r.actual) if x != y)
        detail = ""
        if disassemble is not None:
            detail = disassemble(r.va + first, r.expected[first:first + 16], r.actual[first:first + 16])
        out.append(Finding("content", "text-equals-elf", f"ELF bytes {r.expected[first:first + 8].hex()}",
                           f"{r.actual[first:first + 8].hex()}", va=r.va + first, span=1,
                           detail=f"{ndiff} byte(s) differ in {len(r.expected)}; {detail}"))
    return out


EXIT_NAMES = {1: "pass", 3: "self-check failed", 5: "cpu exception", 7: "unsupported cpu",
              9: "bad command line", 0: "never reached the exit device", 124: "timeout"}
EXPECTED_EXIT = {PASS: 1, UNSUPPORTED: 7, EXCEPTION: 5}


def check_guest(s: Scenario, exit_status: int | None, serial: str) -> list[Finding]:
    want = EXPECTED_EXIT[s.expect]
    out = []
    if exit_status != want:
        out.append(Finding("guest", "exit-code", f"{want} ({EXIT_NAMES[want]})",
                           f"{exit_status} ({EXIT_NAMES.get(exit_status, 'unknown')})",
                           detail=_tail(serial)))
    if s.expect == PASS and "selfcheck ok" not in serial and exit_status == want:
        out.append(Finding("guest", "self-check", "selfcheck ok in the serial log", "missing",
                           detail=_tail(serial)))
    if s.expect == EXCEPTION and "exception vector=14" not in serial:
        out.append(Finding("guest", "exception-report", "a #PF report (vector=14) on serial",
                           "none", detail=_tail(serial)))
    return out


def _tail(text: str, n: int = 6) -> str:
    lines = text.strip().splitlines()[-n:]
    return " | ".join(lines)


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def failed_checks(self) -> list[str]:
        return sorted({f.check for f in self.findings}, key=CHECKS.index)

    @property
    def ok(self) -> bool:
        return not self.findings
