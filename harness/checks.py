"""The check layers. Each turns evidence into findings and can fail a scenario
on its own:

- boot:        the state at pagetable_init entry as the spec's boot stage leaves
               it (harness/boot.py);
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

import bisect
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from . import bootstate, fixmap, records, x86
from .scenarios import AUDIT, EXCEPTION, PASS, PVBUGS, UNSUPPORTED, Scenario
from .snapshot import Snapshot
from .walker import CpuState, Range, TablePage

ADDR_MASK_PAE = 0x000FFFFFFFFFF000
ADDR_MASK_2L = 0xFFFFF000
VA_TOP = 1 << 32

CHECKS = ("boot", "model", "invariants", "hypervisor", "oracle", "content", "work", "smp", "probes",
          "guest")


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
    count: int = 1                # how many entries/pages it stands for


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


def pages_by_va(tables: list[TablePage], cpu: CpuState) -> dict[tuple[str, int], TablePage]:
    """Every table page reachable from CR3, keyed by (level, first VA it covers).

    Only non-leaf entries are followed, so this is cheap even for 896 MiB of
    4 KiB pages. A page reached through two parents (PAE slot 0 and slot 3
    share the kernel PMD) appears under both VAs, as the CPU sees it.
    """
    if not cpu.paging:
        return {}
    pae = cpu.pae
    by_key = {(t.level, t.phys): t for t in tables}
    child_level = {"pgd": "pmd" if pae else "pte", "pmd": "pte"}
    mask = ADDR_MASK_PAE if pae else ADDR_MASK_2L
    out: dict[tuple[str, int], TablePage] = {}

    def visit(level: str, phys: int, va_base: int) -> None:
        page = by_key.get((level, phys))
        if page is None:
            return
        out[(level, va_base)] = page
        if level == "pte":
            return
        span = _span(level, pae)
        for idx, value in page.entries.items():
            if value & x86.PRESENT and not is_leaf(level, value, cpu):
                visit(child_level[level], value & mask, va_base + idx * span)

    visit("pgd", cpu.root, 0)
    return out


def entries_by_va(tables: list[TablePage], cpu: CpuState, *, leaves: bool = True,
                  va_min: int = 0) -> dict[tuple[str, int], Entry]:
    """Every non-zero entry reachable from CR3 (optionally only non-leaf ones,
    or only those covering VAs from va_min up), keyed by (level, first VA)."""
    size = 8 if cpu.pae else 4
    out: dict[tuple[str, int], Entry] = {}
    for (level, base), page in pages_by_va(tables, cpu).items():
        span = _span(level, cpu.pae)
        if level == "pte" and not leaves:
            continue
        if base + span * len_of(level, cpu) <= va_min:
            continue
        for idx, value in page.entries.items():
            va = base + idx * span
            if va + span <= va_min or (not leaves and is_leaf(level, value, cpu)):
                continue
            out[(level, va)] = Entry(level, va, span, value, page.phys + idx * size)
    return out


def len_of(level: str, cpu: CpuState) -> int:
    """Entries per table page at a level."""
    geo = x86.geometry(cpu.pae)
    return {"pgd": geo.ptrs_per_pgd, "pmd": geo.ptrs_per_pmd, "pte": geo.ptrs_per_pte}[level]


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
    PAE PDPT entries have no A/D (bits 5 and 6 are reserved there), but QEMU's
    TCG sets bit 5 in the PDPTE it walks, so that one bit may differ too."""
    if pae and level == "pgd":
        return ((1 << 64) - 1) & ~x86.ACCESSED
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
def compare_tables(check: str, expected: list[TablePage], expected_cpu: CpuState,
                   actual: list[TablePage], actual_cpu: CpuState) -> list[Finding]:
    """Entry by entry, page by page, matched by the VA each table page covers
    (so a page allocated elsewhere is compared with its counterpart, and the
    pointer to it reported as pointing elsewhere). Equal pages cost one dict
    comparison."""
    cpu = actual_cpu
    size = 8 if cpu.pae else 4
    exp_pages, act_pages = pages_by_va(expected, expected_cpu), pages_by_va(actual, actual_cpu)
    out: list[Finding] = []
    compared: set[tuple[int, int]] = set()
    # Kernel VAs first: a page reached through the PAE low alias too (slot 0
    # shares the kernel PMD) is reported once, under its kernel address.
    for key in sorted(set(exp_pages) | set(act_pages),
                      key=lambda k: (k[1] < x86.PAGE_OFFSET, k[1], k[0])):
        level, base = key
        pe, pa = exp_pages.get(key), act_pages.get(key)
        pair = (pe.phys if pe else -1, pa.phys if pa else -1)
        if pair in compared:
            continue
        compared.add(pair)
        ee, ae = (pe.entries if pe else {}), (pa.entries if pa else {})
        if ee == ae:
            continue
        m = compare_mask(level, cpu.pae)
        span = _span(level, cpu.pae)
        for idx in sorted(set(ee) | set(ae)):
            ev, av = ee.get(idx, 0), ae.get(idx, 0)
            if (ev ^ av) & m == 0:
                continue
            d = describe(level, ev, av, cpu.pae, is_leaf(level, ev or av, cpu))
            page = pa or pe
            out.append(Finding(check, "entries", d[0], d[1], level=level, va=base + idx * span,
                               span=span, entry_addr=page.phys + idx * size,
                               expected_value=ev, actual_value=av,
                               detail="" if pa else "the whole table page is missing"))
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
    out += compare_tables("model", predicted_tables, predicted_cpu, after.tables, after.cpu)
    return out + check_progress(before, after.guest or {}, predicted_allocs, predicted_hooks)


def check_progress(before: Snapshot, state: dict, predicted_allocs: list[int],
                   predicted_hooks: list[tuple[int, int]], *, check: str = "model",
                   rule_prefix: str = "") -> list[Finding]:
    """The allocations (cursor) and the hook calls made since the before point,
    against the model's; also what the kernel did up to its own BUG(), as read
    when it exited. The work layer holds its phase to the same (check "work",
    from paging_init_done on)."""
    out = []
    start = (before.guest or {}).get("boot_alloc_cursor")
    cursor = state.get("boot_alloc_cursor")
    if start is not None and cursor is not None:
        actual = list(range(start, cursor, x86.PAGE_SIZE))
        if actual != predicted_allocs:
            out.append(Finding(check, f"{rule_prefix}allocations",
                               f"{len(predicted_allocs)} pages {_page_span(predicted_allocs)}",
                               f"{len(actual)} pages {_page_span(actual)}"))
    if state.get("hook_log") is None:
        return out
    # Only the calls made since the "before" point belong to pagetable_init.
    done_before = len((before.guest or {}).get("hook_log") or [])
    hooks = [tuple(h) for h in state["hook_log"][done_before:]]
    want = [tuple(h) for h in predicted_hooks]
    if hooks != want:
        i = next((i for i, (x, y) in enumerate(zip(want, hooks)) if x != y), min(len(want), len(hooks)))
        out.append(Finding(check, f"{rule_prefix}hook-log", f"{len(want)} calls; #{i}: {_hook(want, i)}",
                           f"{len(hooks)} calls; #{i}: {_hook(hooks, i)}"))
    return out


def _hook(log, i) -> str:
    return records.hook_name(log[i]) if i < len(log) else "(none)"


def _page_span(pages: list[int]) -> str:
    return f"{pages[0]:#x}..{pages[-1]:#x}" if pages else ""


# --------------------------------------------------------------------------------------
# Layer 2: invariants stated from the spec
# --------------------------------------------------------------------------------------
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
    hvs: int = 0        # HYPERVISOR_VIRT_START under pv=xen, 0 natively

    @classmethod
    def of(cls, s: Scenario, init_end: int, ram_bytes: int | None = None,
           start_info: dict | None = None) -> "SpecLayout":
        """ram_bytes: the RAM the firmware reports (default: QEMU's -m); under
        pv=xen the hypervisor's start info says (nr_pages) instead."""
        geo = x86.geometry(s.pae)
        ram = s.memory if ram_bytes is None else ram_bytes
        hvs = 0
        reserve = s.reservetop
        pse, pge = s.pse, s.pge
        if s.pv == "xen":
            # kernel-facts 7: Xen hides PSE and PGE; the guest reserves the top.
            hvs = bootstate.XEN_HVS[s.pae]
            reserve = VA_TOP - hvs + 2 * x86.PAGE_SIZE
            pse = pge = False
            if start_info is not None:
                ram = start_info["nr_pages"] << x86.PAGE_SHIFT
        if s.mem_limit is not None:
            ram = min(ram, s.mem_limit)
        max_pfn = ram >> x86.PAGE_SHIFT
        maxmem = VA_TOP - x86.PAGE_OFFSET - (VMALLOC_RESERVE + reserve)
        top = (VA_TOP - reserve - x86.PAGE_SIZE) if reserve else 0xFFFFF000
        fix_start = (top - ((fixmap.END - 1) << x86.PAGE_SHIFT)) & geo.pmd_mask
        fix_end = (top + geo.pmd_size - 1) & ~(geo.pmd_size - 1)  # may reach 1 << 32
        boot_start = top - (fixmap.END << x86.PAGE_SHIFT)
        pkmap = (boot_start - x86.PAGE_SIZE * (geo.last_pkmap + 1)) & geo.pmd_mask
        return cls(pae=s.pae, pse=pse, pge=pge, nx_active=s.nx_active, max_pfn=max_pfn,
                   max_low_pfn=min(max_pfn, maxmem >> x86.PAGE_SHIFT), fixaddr_top=top,
                   fix_start=fix_start, fix_end=fix_end, pkmap_base=pkmap,
                   pkmap_end=pkmap + x86.PAGE_SIZE * geo.last_pkmap, text_end=init_end, hvs=hvs)

    def fix_to_virt(self, idx: int) -> int:
        return self.fixaddr_top - (idx << x86.PAGE_SHIFT)

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

    def exec_end(self, page_size: int) -> int:
        """First VA whose page is not kernel text: pages starting at or below
        __init_end are executable (is_kernel_text of their first byte)."""
        return (self.text_end // page_size) * page_size + page_size

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


def _cut(lo: int, hi: int, point: int) -> list[tuple[int, int]]:
    return [(lo, hi)] if not lo < point < hi else [(lo, point), (point, hi)]


def _range_at(ranges: list[Range], starts: list[int], va: int) -> Range | None:
    i = bisect.bisect_right(starts, va) - 1
    if i >= 0 and ranges[i].va <= va < ranges[i].va + ranges[i].size:
        return ranges[i]
    return None


@dataclass
class _Judged:
    """What every invariant looks at, worked out once from the snapshot after
    paging_init; `bad` records a finding of the layer."""

    s: Scenario
    layout: SpecLayout
    after: Snapshot
    before: Snapshot | None
    cpu: CpuState
    xen: bool
    out: list[Finding]
    nonleaf: dict = field(default_factory=dict)
    pages: dict = field(default_factory=dict)
    ranges: list[Range] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    large_level: str = "pgd"
    table_frames: set[int] = field(default_factory=set)
    may_be_ro: set[int] = field(default_factory=set)
    hyp_frames: tuple[int, int] = (0, 0)  # pv=xen: the hypervisor's own pages [start, end)
    shared_va: int | None = None

    def bad(self, rule: str, expected: str, actual: str, **kw) -> None:
        self.out.append(Finding("invariants", rule, expected, actual, **kw))


def _registers(j: _Judged, swapper_pa: int) -> None:
    layout, cpu, s = j.layout, j.cpu, j.s
    want = {"cr3": swapper_pa, "cr4.pae": s.pae, "cr4.pse": layout.pse, "cr4.pge": layout.pge,
            "efer.nxe": layout.nx_active}
    got = {"cr3": cpu.root, "cr4.pae": cpu.pae,
           "cr4.pse": cpu.pse, "cr4.pge": cpu.pge, "efer.nxe": cpu.nxe}
    for k in want:
        if int(want[k]) != int(got[k]):
            j.bad("registers", f"{k}={int(want[k]):#x}", f"{k}={int(got[k]):#x}")


def _lowmem(j: _Judged) -> None:
    layout, cpu, xen = j.layout, j.cpu, j.xen
    covered = x86.PAGE_OFFSET
    for r in j.ranges:
        lo, hi = max(r.va, x86.PAGE_OFFSET), min(r.va + r.size, layout.linear_end)
        if lo >= hi:
            continue
        level = "pte" if r.page_size == x86.PAGE_SIZE else j.large_level
        n = (hi - lo) // r.page_size
        if lo > covered:
            j.bad("lowmem-mapped", "mapped", "not mapped", va=covered, span=lo - covered,
                  level="pte", count=(lo - covered) // x86.PAGE_SIZE)
        covered = max(covered, hi)
        shift = r.pa - r.va
        if lo + shift != lo - x86.PAGE_OFFSET:
            j.bad("lowmem-linear", "pa = va - PAGE_OFFSET",
                  f"pa = va {shift + x86.PAGE_OFFSET:+#x} - PAGE_OFFSET",
                  level=level, va=lo, span=hi - lo, count=n)
        if r.page_size != layout.leaf_size:
            j.bad("page-size", f"{layout.leaf_size >> 10} KiB pages", f"{r.page_size >> 10} KiB pages",
                  level=level, va=lo, span=hi - lo, count=n)
            continue
        for seg_lo, seg_hi in _cut(lo, hi, layout.exec_end(r.page_size)):
            want_flags = layout.kernel_flags(seg_lo, r.page_size)
            have = r.flags
            if xen and not r.writable:
                # Read-only is right for table frames and the hypervisor's own.
                wrong = [f for f in range(seg_lo + shift, seg_hi + shift, x86.PAGE_SIZE)
                         if f not in j.may_be_ro]
                for f0, n in x86.page_runs(wrong, len(wrong)):
                    j.bad("protections", "writable", "read-only (not a table page)", level=level,
                          va=f0 - shift, span=n * x86.PAGE_SIZE, count=n)
                have |= x86.RW
            d = describe(level, want_flags | x86.PRESENT, have | x86.PRESENT, cpu.pae, True)
            if d is not None:
                rule = "nx" if (want_flags ^ have) & x86.NX else "protections"
                j.bad(rule, d[0], d[1], level=level, va=seg_lo, span=seg_hi - seg_lo,
                      expected_value=want_flags, actual_value=have,
                      count=(seg_hi - seg_lo) // r.page_size)
    if covered < layout.lowmem_end:
        j.bad("lowmem-mapped", "mapped", "not mapped", va=covered, span=layout.lowmem_end - covered,
              level="pte", count=(layout.lowmem_end - covered) // x86.PAGE_SIZE)


def _tables_read_only(j: _Judged) -> None:
    if not j.xen:
        return
    for f in sorted(j.table_frames):
        va = x86.PAGE_OFFSET + f
        r = _range_at(j.ranges, j.starts, va) if va < j.layout.linear_end else None
        if r is not None and r.writable:
            j.bad("tables-read-only", "table page mapped read-only", "writable", level="pte",
                  va=va, span=x86.PAGE_SIZE, detail=f"table frame {f:#x}")
    # The hypervisor's own pages: read-only from its start-of-day table on.
    lo, hi = j.hyp_frames
    for f in range(lo, min(hi, j.layout.linear_end - x86.PAGE_OFFSET), x86.PAGE_SIZE):
        r = _range_at(j.ranges, j.starts, x86.PAGE_OFFSET + f)
        if r is not None and r.writable:
            j.bad("hypervisor-read-only", "hypervisor page mapped read-only", "writable",
                  level="pte", va=x86.PAGE_OFFSET + f, span=x86.PAGE_SIZE,
                  detail=f"hypervisor frame {f:#x}")


def _no_user_in_kernel(j: _Judged) -> None:
    for r in j.ranges:
        if r.va + r.size > x86.PAGE_OFFSET and r.user:
            lo = max(r.va, x86.PAGE_OFFSET)
            j.bad("no-user-in-kernel", "supervisor", "user-accessible", va=lo,
                  span=r.va + r.size - lo, count=(r.va + r.size - lo) // r.page_size)


def _nothing_beyond(j: _Judged) -> None:
    layout = j.layout
    for r in j.ranges:
        level = "pte" if r.page_size == x86.PAGE_SIZE else j.large_level
        for lo, hi in ((r.va, min(r.va + r.size, x86.PAGE_OFFSET)),
                       (max(r.va, layout.linear_end), r.va + r.size)):
            if lo >= hi:
                continue
            if layout.hvs:
                hi = min(hi, layout.hvs)  # the hypervisor's own: checked bit for bit (xen)
            if j.shared_va is not None and lo <= j.shared_va < hi:
                for part in ((lo, j.shared_va), (j.shared_va + x86.PAGE_SIZE, hi)):
                    _beyond(j.bad, r, level, *part, j.xen)
                continue
            _beyond(j.bad, r, level, lo, hi, j.xen)


def _tables_placed(j: _Judged) -> None:
    layout = j.layout
    pt_parent = "pmd" if j.cpu.pae else "pgd"
    chunks = layout.table_chunks()
    have_tables = {va for (lvl, va) in j.pages if lvl == "pte" and va >= x86.PAGE_OFFSET
                   and not (layout.hvs and va >= layout.hvs)}
    for va in sorted(chunks - have_tables):
        j.bad("tables-present", "PTE page", "none", level=pt_parent, va=va,
              span=layout.geo.pmd_size, detail=_chunk_role(layout, va))
    for va in sorted(have_tables - chunks):
        if j.xen and va < layout.linear_end:
            continue  # the hypervisor's PTE pages of the kernel mapping, shared
        e = j.nonleaf.get((pt_parent, va))
        j.bad("tables-beyond", "no PTE page", "PTE page", level=pt_parent, va=va,
              span=layout.geo.pmd_size, entry_addr=e.addr if e else None,
              actual_value=e.value if e else None,
              detail="above FIXADDR_TOP" if va >= layout.fix_end else "")


def _pdpt(j: _Judged) -> None:
    if not j.cpu.pae:
        return
    pdpt = {va >> 30: e for (lvl, va), e in j.nonleaf.items() if lvl == "pgd"}
    for i, e in sorted(pdpt.items()):
        # QEMU's TCG sets A (bit 5) in the PDPTE it walks, as real CPUs do not;
        # what the kernel wrote was legal if only that bit is extra.
        extra = e.value & ~ADDR_MASK_PAE & ~(x86.PDPTE_ALLOWED_LOW | x86.ACCESSED)
        if e.value & x86.PRESENT and extra:
            j.bad("pdpt-legal", "P, PWT, PCD and address only", f"{e.value:#x}", level="pgd",
                  va=e.va, span=e.span, entry_addr=e.addr, actual_value=e.value)
    kern, slot0 = pdpt.get(3), pdpt.get(0)
    if not j.xen and (kern is None or slot0 is None
                      or (slot0.value & ADDR_MASK_PAE) != (kern.value & ADDR_MASK_PAE)):
        j.bad("pae-low-identity", "PDPT[0] shares PDPT[3]'s PMD page",
              f"PDPT[0]={(slot0.value if slot0 else 0):#x} PDPT[3]={(kern.value if kern else 0):#x}",
              level="pgd", va=0, span=1 << 30)


def _legal_entries(j: _Judged) -> None:
    for p in j.after.problems:
        if j.cpu.pae and p.level == "pgd" and _pdpte_accessed_only(p):
            continue
        j.bad("cpu-would-fault", "legal entry", p.what, level=p.level, va=p.va,
              entry_addr=p.entry_addr, actual_value=p.value)


def _xen(j: _Judged) -> None:
    if j.xen:
        j.out.extend(_xen_invariants(j.layout, j.after, j.before, j.shared_va))


def _tables_reused(j: _Judged) -> None:
    # Same paging mode only: a native PAE boot starts on 2-level tables PAE cannot reuse.
    before, cpu = j.before, j.cpu
    if before is None or not before.cpu.paging or before.cpu.pae != cpu.pae:
        return
    amask = ADDR_MASK_PAE if cpu.pae else ADDR_MASK_2L
    old = entries_by_va(before.tables, before.cpu, leaves=False)
    now_all = {**j.nonleaf, **_large_leaves(j.after, cpu)}
    for key, e in old.items():
        lvl, va = key
        if not e.value & x86.PRESENT:
            continue
        now = now_all.get(key)
        if now is not None and is_leaf(lvl, now.value, cpu):
            continue  # the spec replaces it with a large page (PSE linear map)
        if lvl == "pgd" and cpu.pae and (va < x86.PAGE_OFFSET or j.xen):
            continue  # PDPT slots: setup_start owns them (Xen copies the PMD pages)
        if now is None or (now.value & amask) != (e.value & amask):
            j.bad("tables-reused", f"table at {e.value & amask:#x} kept",
                  f"{'gone' if now is None else f'table at {now.value & amask:#x}'}",
                  level=lvl, va=va, span=e.span, entry_addr=e.addr, expected_value=e.value,
                  actual_value=now.value if now else 0)


# The invariants of the tables after paging_init, each with the fact it states.
INVARIANTS: tuple[tuple[str, str, Callable[[_Judged], None]], ...] = (
    ("lowmem", "kernel-facts §3, §5: every lowmem page at PAGE_OFFSET + pa with the kernel's "
               "protections, executable up to and including __init_end's page, NX above iff "
               "NX is active, GLOBAL iff PGE; 4 KiB or large pages as PSE says", _lowmem),
    ("tables-read-only", "kernel-facts §7: under Xen every page-table page is mapped "
                         "read-only; docs/xen.md: so are the hypervisor's own pages",
     _tables_read_only),
    ("no-user-in-kernel", "kernel-facts §2: no user access anywhere above PAGE_OFFSET",
     _no_user_in_kernel),
    ("beyond", "kernel-facts §4, §5: nothing mapped beyond lowmem, the fixmap and pkmap; "
               "low mappings are identity (none under Xen)", _nothing_beyond),
    ("tables-placed", "kernel-facts §5: PTE pages exactly for lowmem, the fixmap range and "
                      "pkmap, none above FIXADDR_TOP", _tables_placed),
    ("pdpt", "kernel-facts §1, §5: legal PDPT entries; natively PDPT[0] shares the kernel "
             "PMD page (setup_done's low identity)", _pdpt),
    ("legal-entries", "kernel-facts §1: no entry the CPU would reject", _legal_entries),
    ("xen", "docs/xen.md: the hypervisor's area and PTE pages untouched, its PTE pages of the "
            "kernel mapping kept, the shared-info page mapped", _xen),
    ("tables-reused", "kernel-facts §5: tables present before setup are reused, not replaced",
     _tables_reused),
)


def check_invariants(s: Scenario, layout: SpecLayout, swapper_pa: int, after: Snapshot,
                     before: Snapshot | None, *, zero_pa: int | None = None,
                     start_info_pa: int | None = None) -> list[Finding]:
    """Spec properties of the tables after paging_init (INVARIANTS; the registers
    first). Leaf properties are checked on the merged ranges, so 896 MiB of 4 KiB
    pages costs a few hundred comparisons."""
    cpu = after.cpu
    j = _Judged(s=s, layout=layout, after=after, before=before, cpu=cpu, xen=s.pv == "xen",
                out=[])
    _registers(j, swapper_pa)
    if cpu.pae != s.pae:
        return j.out  # another paging mode: nothing below can be compared
    j.nonleaf = entries_by_va(after.tables, cpu, leaves=False)
    j.pages = pages_by_va(after.tables, cpu)
    j.ranges = sorted(after.ranges, key=lambda r: r.va)
    j.starts = [r.va for r in j.ranges]
    j.large_level = "pmd" if cpu.pae else "pgd"
    j.table_frames = {t.phys & ~0xFFF for t in after.tables}
    if j.xen:
        # Under Xen, table frames are read-only; so may stay the hypervisor's own
        # frames (its tables, the start info, its state) and the zero page (docs/xen.md).
        j.may_be_ro = j.table_frames | {t.phys & ~0xFFF for t in (before.tables if before else [])}
        j.may_be_ro |= {f for f in (zero_pa, start_info_pa) if f is not None}
        # Its own pages, as the image places them (records.read: hyp_frames).
        lo, hi = ((before.guest or {}).get("hyp_frames") or (0, 0)) if before else (0, 0)
        j.hyp_frames = (lo, hi)
        j.may_be_ro |= set(range(lo, hi, x86.PAGE_SIZE))
        j.shared_va = layout.fix_to_virt(fixmap.FIX_PARAVIRT_BOOTMAP)
    for _name, _fact, rule in INVARIANTS:
        rule(j)
    return j.out


CPU_FEATURE_BITS = {"pse": 0, "pge": 1, "pae": 2, "nx": 3}  # guest_cpu_features


def check_variables(s: Scenario, layout: SpecLayout, after: Snapshot) -> list[Finding]:
    """The guest's recorded variables after paging_init against the spec (kernel-facts
    §1, §3, §5; docs/xen.md): wrong values whose effect on the tables a PMD's
    rounding would hide still show here."""
    guest = after.guest or {}
    reserve = VA_TOP - layout.fixaddr_top - x86.PAGE_SIZE  # FIXADDR_TOP = -reserve - 4096
    features = {"pse": layout.pse, "pge": layout.pge,  # as the kernel sees them (Xen hides both)
                "pae": s.cpu_flags["pae"], "nx": s.cpu_flags["nx"]}
    want = {"fixaddr_top": layout.fixaddr_top,
            "vmalloc_reserve": VMALLOC_RESERVE + reserve,
            "max_pfn": layout.max_pfn, "max_low_pfn": layout.max_low_pfn,
            "nx_enabled": int(layout.nx_active),
            "guest_cpu_features": sum(1 << b for k, b in CPU_FEATURE_BITS.items() if features[k])}
    kmap = _pte_va(after, layout.fix_to_virt(fixmap.FIX_KMAP_BEGIN))
    if kmap is not None:
        want["kmap_pte"] = kmap
    out = []
    for name, value in want.items():
        have = guest.get(name)
        if have is not None and have != value:
            out.append(Finding("invariants", "variables", f"{name}={value:#x}", f"{name}={have:#x}"))
    return out


def _pte_va(snap: Snapshot, va: int) -> int | None:
    """The kernel virtual address of the PTE that maps `va` (the __va of its
    physical address in the tables the CPU uses), or None without a PTE page."""
    cpu = snap.cpu
    geo = x86.geometry(cpu.pae)
    page = pages_by_va(snap.tables, cpu).get(("pte", va & geo.pmd_mask))
    if page is None:
        return None
    idx = (va >> x86.PAGE_SHIFT) & (geo.ptrs_per_pte - 1)
    return x86.PAGE_OFFSET + page.phys + idx * geo.entry_size


def _large_leaves(snap: Snapshot, cpu: CpuState) -> dict[tuple[str, int], Entry]:
    """The large-page leaves (PSE) of a snapshot, without touching PTE pages."""
    out = {}
    size = 8 if cpu.pae else 4
    for (level, base), page in pages_by_va(snap.tables, cpu).items():
        if level == "pte":
            continue
        span = _span(level, cpu.pae)
        for idx, value in page.entries.items():
            if value & x86.PRESENT and is_leaf(level, value, cpu):
                va = base + idx * span
                out[(level, va)] = Entry(level, va, span, value, page.phys + idx * size)
    return out


def _beyond(bad, r: Range, level: str, lo: int, hi: int, xen: bool) -> None:
    if lo >= hi:
        return
    n = (hi - lo) // r.page_size
    shift = r.pa - r.va
    if lo >= x86.PAGE_OFFSET:
        bad("nothing-beyond", "not mapped", "mapped", level=level, va=lo, span=hi - lo, count=n,
            detail=f"pa {lo + shift:#x}")
    elif xen:
        bad("nothing-below-page-offset", "not mapped", "mapped", level=level, va=lo,
            span=hi - lo, count=n, detail=f"pa {lo + shift:#x}")
    elif shift != 0:
        bad("low-identity", "pa = va", f"pa = va {shift:+#x}", level=level, va=lo,
            span=hi - lo, count=n)


def _pdpte_accessed_only(p) -> bool:
    return (p.value & ~ADDR_MASK_PAE & ~(x86.PDPTE_ALLOWED_LOW | x86.ACCESSED)) == 0


def _xen_invariants(layout: SpecLayout, after: Snapshot, before: Snapshot | None,
                    shared_va: int | None) -> list[Finding]:
    out: list[Finding] = []
    cpu = after.cpu
    low = min(layout.hvs, shared_va or layout.hvs)
    entries = entries_by_va(after.tables, cpu, va_min=low)
    # The hypervisor's area: every entry at or above HYPERVISOR_VIRT_START bit for bit.
    if before is not None:
        old = entries_by_va(before.tables, before.cpu, va_min=layout.hvs)
        keys = {k for k in set(old) | set(entries) if k[1] >= layout.hvs}
        for key in sorted(keys, key=lambda k: (k[1], k[0])):
            e, a = old.get(key), entries.get(key)
            ev, av = (e.value if e else 0), (a.value if a else 0)
            if ev != av:
                what = "new entry" if not ev else ("entry gone" if not av else "entry changed")
                out.append(Finding("invariants", "hypervisor-area", "untouched", what,
                                   level=key[0], va=key[1], span=(e or a).span,
                                   entry_addr=(a or e).addr, expected_value=ev, actual_value=av))
    # The shared-info page at its fixmap slot with kernel protections.
    si = (before.guest or {}).get("start_info") if before is not None else None
    if si is not None and shared_va is not None:
        e = entries.get(("pte", shared_va))
        want = si["shared_info"] | x86.PAGE_KERNEL_EXEC | (x86.NX if layout.nx_active else 0)
        have = e.value if e else 0
        d = describe("pte", want, have, cpu.pae, True)
        if d is not None:
            out.append(Finding("invariants", "shared-info-fixmap", d[0], d[1], level="pte",
                               va=shared_va, span=x86.PAGE_SIZE,
                               entry_addr=e.addr if e else None, expected_value=want,
                               actual_value=have))
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
    """Findings from oracle.compare(): where the walker and QEMU's own `info
    tlb` / `info mem` disagree (expected = QEMU, actual = the walker)."""
    return [Finding("oracle", d.kind, f"QEMU: {d.qemu}", f"walker: {d.walker}", va=d.va,
                    span=d.size) for d in disagreements]


VIOLATION_RULES = {1: "writable-table", 2: "hypervisor-area-write", 3: "unannounced-table",
                   4: "kernel-pmd-replaced"}
VIOLATION_KINDS = {1: "writable mapping of a table page", 2: "write into the hypervisor area",
                   3: "table page linked without alloc_pt/alloc_pd", 4: "kernel PMD replaced (refused)"}


def check_hypervisor_audit(state: dict, pae: bool) -> list[Finding]:
    """The hypervisor stage's own record (docs/xen.md): a correct kernel leaves
    none. The pin re-finds what a write already broke; that is one finding.
    A kind-2 write lands in a PGD (2-level) or PMD (PAE) entry: one chunk each."""
    chunk_level, chunk = ("pmd", 1 << 21) if pae else ("pgd", 1 << 22)
    out: list[Finding] = []
    seen: dict[tuple, int] = {}
    for r in state.get("violations") or []:
        kind = r["kind"]
        key = (kind, r["va"], r["frame"])
        if key in seen:
            f = out[seen[key]]
            if "again at pin" not in f.detail:
                out[seen[key]] = replace(f, detail=f.detail + "; found again at pin")
            continue
        seen[key] = len(out)
        span = {1: x86.PAGE_SIZE, 2: chunk, 4: 1 << 30}.get(kind, 0)
        what = VIOLATION_KINDS.get(kind, f"violation kind {kind}")
        if kind == 2:  # one range per table: swapper_pg_dir's, a second pagetable's copy
            what += f" (table {r['frame']:#x})"
        out.append(Finding(
            "hypervisor", VIOLATION_RULES.get(kind, f"kind-{kind}"), "no violation", what,
            level=chunk_level if kind == 2 else None,
            va=r["va"] or None, span=span, entry_addr=r["entry_pa"] or None,
            actual_value=r["value"], detail=f"frame {r['frame']:#x}"))
    extra = state.get("violation_count", 0) - len(state.get("violations") or [])
    if extra > 0:
        out.append(Finding("hypervisor", "record-full", "no violation",
                           f"{extra} more violations (record full)"))
    return out


def _record(kind: int, entry_pa: int, value: int, frame: int, va: int) -> tuple:
    # A pin-time record carries the leaf as found: the CPU may have set A/D on it.
    return kind, entry_pa, value & ~x86.HW_MANAGED, frame, va


def _record_text(r: tuple | None) -> str:
    if r is None:
        return "no record"
    kind, entry_pa, value, frame, va = r
    where = f"entry {entry_pa:#x}" if entry_pa else "at pin"
    return (f"{VIOLATION_RULES.get(kind, kind)} {where} value {value:#x} frame {frame:#x}"
            f" va {va:#x}")


def check_audit_record(state: dict, expected: list, pvbug: str) -> list[Finding]:
    """pvbug= scenarios: the hypervisor's record must be exactly what the model's
    hypervisor flags for that kernel (kind, entry, value, frame, VA, in order):
    an audit that misses a pin-time, link-time or batched violation shows here."""
    want = [_record(v.kind, v.entry_pa, v.value, v.frame_pa, v.va) for v in expected]
    have = [_record(r["kind"], r["entry_pa"], r["value"], r["frame"], r["va"])
            for r in state.get("violations") or []]
    if not want:
        return [Finding("hypervisor", "audit-record", f"a record for pvbug={pvbug}",
                        "the model's hypervisor flags nothing")]
    out = []
    for i in range(max(len(want), len(have))):
        w = want[i] if i < len(want) else None
        h = have[i] if i < len(have) else None
        if w != h:
            ref = w or h
            out.append(Finding("hypervisor", "audit-record", _record_text(w), _record_text(h),
                               va=ref[4] or None, span=x86.PAGE_SIZE,
                               entry_addr=ref[1] or None, detail=f"record #{i} of {len(want)}"))
    return out


def check_hypervisor_counters(before: dict, after: dict, mmu_updates: int | None,
                              pins: int | None) -> list[Finding]:
    """The hypervisor's own counts of mmu updates and pins made by pagetable_init
    (from the before point to the after point) against the model's."""
    out = []
    for name, want in (("hyp_mmu_update_count", mmu_updates), ("hyp_pin_count", pins)):
        if want is None or name not in before or name not in after:
            continue
        have = after[name] - before[name]
        if have != want:
            out.append(Finding("hypervisor", "counters", f"{name[4:]}: {want}",
                               f"{name[4:]}: {have}",
                               detail="hypercalls made from pagetable_init entry to the after point"))
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


def expected_exit(s: Scenario) -> int:
    if s.expect == AUDIT:
        return PVBUGS[s.pvbug][0] if s.pvbug in PVBUGS else 1
    return EXPECTED_EXIT[s.expect]


def check_guest(s: Scenario, exit_status: int | None, serial: str,
                predicted_bug: str = "") -> list[Finding]:
    """The boot ends as the scenario expects; when the model predicts that the
    kernel's own BUG() fires, the guest must end through it (self-check code)."""
    want = 3 if predicted_bug else expected_exit(s)
    out = []
    if predicted_bug and exit_status == want and "BUG at" not in serial:
        out.append(Finding("guest", "bug", "a BUG line on serial (" + predicted_bug + ")",
                           "none", detail=_tail(serial)))
        return out
    if exit_status != want:
        out.append(Finding("guest", "exit-code", f"{want} ({EXIT_NAMES[want]})",
                           f"{exit_status} ({EXIT_NAMES.get(exit_status, 'unknown')})",
                           detail=_tail(serial)))
    if s.expect == PASS and not predicted_bug and "selfcheck ok" not in serial \
            and exit_status == want:
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
    figures: dict[str, str] = field(default_factory=dict)  # check -> what it measured
    seconds: dict[str, float] = field(default_factory=dict)  # layer -> time judging

    def failed_rules(self) -> frozenset[tuple[str, str]]:
        return frozenset((f.check, f.rule) for f in self.findings)

    def failed_checks(self) -> list[str]:
        return sorted({f.check for f in self.findings}, key=CHECKS.index)

    @property
    def ok(self) -> bool:
        return not self.findings
