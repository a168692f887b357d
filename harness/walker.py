"""x86-32 page walker: the tables the CPU really uses, read from physical memory.

Data types are fixed here (the model, the checks and the snapshot speak them);
the walk itself is implemented below them.
"""
from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, TypeVar

from . import x86


T = TypeVar("T")
U = TypeVar("U")


class PhysMemory(Protocol):
    """Where the walker reads physical memory from (gdb, a memory image...)."""

    def read_pages(self, addrs: list[int]) -> dict[int, bytes]:
        """Return the 4 KiB page at each page-aligned address. Implementations
        batch adjacent pages into as few reads as they can."""
        ...


class PagedMemory:
    """PhysMemory over a target's physical reads, for one stop of the target:
    adjacent pages are read together (at most max_pages at once) and each page
    is read once, so several walks of one stop share their reads.

    read_runs(runs) returns the bytes of each (address, size) run; it may batch
    them (one switch to physical mode, one monitor command each...)."""

    def __init__(self, read_runs: Callable[[list[tuple[int, int]]], list[bytes]],
                 max_pages: int = 1024):
        self.read_runs, self.max_pages = read_runs, max_pages
        self.pages: dict[int, bytes] = {}
        self.reads = 0  # runs read from the target, for benchmarks

    def read_pages(self, addrs: list[int]) -> dict[int, bytes]:
        missing = sorted({a for a in addrs if a not in self.pages})
        runs = list(x86.page_runs(missing, self.max_pages))
        if runs:
            datas = self.read_runs([(start, count * x86.PAGE_SIZE) for start, count in runs])
            self.reads += len(runs)
            for (start, count), data in zip(runs, datas):
                for k in range(count):
                    self.pages[start + k * x86.PAGE_SIZE] = \
                        data[k * x86.PAGE_SIZE:(k + 1) * x86.PAGE_SIZE]
        return {a: self.pages[a] for a in addrs}


class ImageMemory:
    """Sparse physical memory: page address -> 4096 bytes; absent pages read as zero."""

    def __init__(self, pages: dict[int, bytes] | None = None):
        self.pages: dict[int, bytearray] = {a: bytearray(b) for a, b in (pages or {}).items()}

    def read_pages(self, addrs: list[int]) -> dict[int, bytes]:
        return {a: bytes(self.pages.get(a, bytes(x86.PAGE_SIZE))) for a in addrs}

    def page(self, addr: int) -> bytearray:
        base = addr & ~(x86.PAGE_SIZE - 1)
        if base not in self.pages:
            self.pages[base] = bytearray(x86.PAGE_SIZE)
        return self.pages[base]

    def read_entry(self, addr: int, size: int) -> int:
        off = addr & (x86.PAGE_SIZE - 1)
        return int.from_bytes(self.page(addr)[off:off + size], "little")

    def write_entry(self, addr: int, size: int, value: int) -> None:
        off = addr & (x86.PAGE_SIZE - 1)
        self.page(addr)[off:off + size] = value.to_bytes(size, "little")


@dataclass(frozen=True)
class CpuState:
    """The control registers that decide how the CPU walks."""

    cr0: int
    cr3: int
    cr4: int
    efer: int = 0

    @property
    def paging(self) -> bool:
        return bool(self.cr0 & x86.CR0_PG)

    @property
    def pae(self) -> bool:
        return bool(self.cr4 & x86.CR4_PAE)

    @property
    def pse(self) -> bool:
        return bool(self.cr4 & x86.CR4_PSE)

    @property
    def pge(self) -> bool:
        return bool(self.cr4 & x86.CR4_PGE)

    @property
    def nxe(self) -> bool:
        return bool(self.efer & x86.EFER_NXE)

    @property
    def root(self) -> int:
        """Physical address of the root table: a PAE PDPT is 32-byte aligned."""
        return self.cr3 & x86.geometry(self.pae).root_mask

    @property
    def mode(self) -> str:
        if not self.paging:
            return "off"
        return "pae" if self.pae else "2-level"


class Series(Mapping):
    """Table entries first, first + step, first + 2*step, ... at indexes
    start..start+count-1: the kernel's linear map, one per PTE page. A read-only
    mapping like the dict it stands for (equal to it, too), kept as three
    numbers: a 896 MiB walk would otherwise build 229376 ints in 448 dicts,
    most of its time, only to compare them with the model's and save them."""

    __slots__ = ("start", "count", "first", "step")

    def __init__(self, start: int, count: int, first: int, step: int):
        self.start, self.count, self.first, self.step = start, count, first, step

    def __getitem__(self, i: int) -> int:
        k = i - self.start if isinstance(i, int) else -1
        if not 0 <= k < self.count:
            raise KeyError(i)
        return self.first + k * self.step

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.start + self.count))

    def __len__(self) -> int:
        return self.count

    def __contains__(self, i) -> bool:
        return isinstance(i, int) and 0 <= i - self.start < self.count

    def values(self):
        return range(self.first, self.first + self.count * self.step, self.step) \
            if self.step else [self.first] * self.count

    def items(self):
        return zip(self, self.values())

    def __eq__(self, other) -> bool:
        if isinstance(other, Series):
            return ((self.start, self.count, self.first, self.step)
                    == (other.start, other.count, other.first, other.step))
        if isinstance(other, Mapping):
            return len(other) == self.count and dict(self.items()) == dict(other.items())
        return NotImplemented

    __hash__ = None  # like a dict

    def __repr__(self) -> str:
        return (f"Series({self.start}..{self.start + self.count - 1}: "
                f"{self.first:#x} + k*{self.step:#x})")

    def __reduce__(self):
        return Series, (self.start, self.count, self.first, self.step)


@dataclass
class TablePage:
    """One page-table page as the CPU sees it.

    level: "pgd" (2-level page directory or PAE PDPT), "pmd" (PAE page
    directory) or "pte". entries: index -> raw value, non-zero entries only.
    For the PAE pgd (the PDPT) only its 4 entries at CR3 & ~0x1f count;
    phys is then that 32-byte aligned address, not the page.
    """

    level: str
    phys: int
    entries: Mapping[int, int] = field(default_factory=dict)  # a dict or a Series


@dataclass(frozen=True)
class Leaf:
    """One translation: a 4 KiB, 2 MiB or 4 MiB page.

    entry: the raw leaf entry; the effective permissions are ANDed across
    every level of the walk (X is False only through NX with EFER.NXE=1).
    """

    va: int
    pa: int
    size: int
    entry: int
    writable: bool
    user: bool
    executable: bool
    global_: bool
    entry_addr: int  # physical address of the leaf entry


@dataclass(frozen=True)
class Range:
    """Consecutive leaves with contiguous VA and PA and identical attributes."""

    va: int
    pa: int
    size: int
    page_size: int
    flags: int  # leaf entry bits other than the address and A/D
    writable: bool
    user: bool
    executable: bool
    global_: bool


@dataclass(frozen=True)
class Problem:
    """Something the CPU would reject: reserved bits, an illegal PDPT entry..."""

    level: str
    entry_addr: int
    va: int
    value: int
    what: str


@dataclass
class Walk:
    """tables: every table page reached, in walk order (a page shared by several
    parents is listed once per level). leaves: every translation in VA order
    (a `Leaves` sequence from walk(): read-only, built on access).
    problems: entries the CPU would reject; nothing below them is mapped."""

    cpu: CpuState
    tables: list[TablePage]
    leaves: Sequence[Leaf]
    problems: list[Problem]

    @property
    def mode(self) -> str:
        return self.cpu.mode


# --------------------------------------------------------------------------------------
# Leaves, stored as runs
# --------------------------------------------------------------------------------------
class Run(NamedTuple):
    """`count` consecutive leaves that differ only in their address: leaf k maps
    va + k*size to pa + k*size through entry + k*size, stored at entry_addr +
    k*entry_size. A 896 MiB kernel mapping is a few hundred runs instead of
    229376 Leaf objects (1.5 us each to build): walk() stays fast and Leaf
    objects are made only for whoever iterates."""

    va: int
    pa: int
    count: int
    size: int
    entry: int
    writable: bool
    user: bool
    executable: bool
    global_: bool
    entry_addr: int
    entry_size: int

    @property
    def end(self) -> int:
        return self.va + self.count * self.size

    def leaf(self, k: int) -> Leaf:
        off = k * self.size
        return Leaf(self.va + off, self.pa + off, self.size, self.entry + off, self.writable,
                    self.user, self.executable, self.global_,
                    self.entry_addr + k * self.entry_size)


class Leaves(Sequence):
    """The leaves of a walk in VA order: a read-only sequence of Leaf."""

    __slots__ = ("runs", "_starts", "_len")

    def __init__(self, runs: list[Run]):
        self.runs = runs
        starts, n = [], 0
        for r in runs:
            starts.append(n)
            n += r.count
        self._starts = starts
        self._len = n

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("leaf index out of range")
        ri = bisect.bisect_right(self._starts, i) - 1
        return self.runs[ri].leaf(i - self._starts[ri])

    def __iter__(self) -> Iterator[Leaf]:
        for r in self.runs:
            for k in range(r.count):
                yield r.leaf(k)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != self._len:
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"<Leaves: {self._len} leaves in {len(self.runs)} runs>"


def leaf_at(leaves: Sequence[Leaf], va: int) -> Leaf | None:
    """The leaf that maps va, if any."""
    if isinstance(leaves, Leaves):
        return next((r.leaf((va - r.va) // r.size) for r in leaves.runs if r.va <= va < r.end),
                    None)
    return next((lf for lf in leaves if lf.va <= va < lf.va + lf.size), None)


def leaf_flags(entry: int) -> int:
    """A leaf entry's attribute bits without the address and without A/D
    (the CPU sets those by itself)."""
    return (entry & (x86.PAGE_SIZE - 1 | x86.NX)) & ~x86.HW_MANAGED


def merge(leaves: Iterable[Leaf]) -> list[Range]:
    """Merge leaves into ranges of contiguous VA and PA with the same page size,
    leaf flags and effective permissions."""
    if isinstance(leaves, Leaves):
        pieces = [(r.va, r.pa, r.count * r.size, r.size, leaf_flags(r.entry), r.writable, r.user,
                   r.executable, r.global_) for r in leaves.runs]
    else:
        pieces = [(lf.va, lf.pa, lf.size, lf.size, leaf_flags(lf.entry), lf.writable, lf.user,
                   lf.executable, lf.global_) for lf in leaves]
    pieces.sort(key=lambda p: p[0])
    out: list[Range] = []
    if not pieces:
        return out
    va, pa, size, *attrs = pieces[0]
    for p in pieces[1:]:
        if va + size == p[0] and pa + size == p[1] and attrs == list(p[3:]):
            size += p[2]
            continue
        out.append(Range(va, pa, size, *attrs))
        va, pa, size, *attrs = p
    out.append(Range(va, pa, size, *attrs))
    return out


def sweep(a: Sequence[T], b: Sequence[U], span_a: Callable[[T], tuple[int, int]],
          span_b: Callable[[U], tuple[int, int]], points: Iterable[int] = ()
          ) -> Iterator[tuple[int, int, T | None, U | None]]:
    """Two lists of disjoint VA intervals, walked together over every boundary
    of either (and `points`) from 0 to 4 GiB: each stretch [lo, hi) with the
    item of each list that covers it, or None. What the diff of two snapshots
    and the oracle's `info mem` comparison are made of."""
    a = sorted(a, key=lambda r: span_a(r)[0])
    b = sorted(b, key=lambda r: span_b(r)[0])
    cuts = {0, x86.VA_MASK + 1, *points}
    for items, span in ((a, span_a), (b, span_b)):
        for r in items:
            cuts.update(span(r))
    cuts = sorted(c for c in cuts if 0 <= c <= x86.VA_MASK + 1)
    ia = ib = 0
    for lo, hi in zip(cuts, cuts[1:]):
        while ia < len(a) and span_a(a[ia])[1] <= lo:
            ia += 1
        while ib < len(b) and span_b(b[ib])[1] <= lo:
            ib += 1
        yield (lo, hi, a[ia] if ia < len(a) and span_a(a[ia])[0] <= lo else None,
               b[ib] if ib < len(b) and span_b(b[ib])[0] <= lo else None)


# --------------------------------------------------------------------------------------
# The walk: one loop over the levels x86.Geometry describes
# --------------------------------------------------------------------------------------
def pdpte_reserved_text(rsvd: int) -> str:
    """What reserved bits in a present PDPT entry do: the SDM and QEMU 7.2's TCG
    differ, and the walk follows what the emulated CPU really does."""
    if rsvd & ~x86.PDPTE_RSVD_LOW:
        return (f"reserved bits {rsvd:#x} set in a PDPT entry: the SDM has the load of CR3 "
                "raise #GP; QEMU raises a reserved-bit #PF on every access through it")
    return (f"reserved bits {rsvd:#x} set in a PDPT entry: the SDM has the load of CR3 raise "
            "#GP; QEMU's TCG raises none and uses the entry (the walk follows it)")


def _entries(page: bytes, entry_size: int, offset: int = 0, count: int | None = None) -> list[int]:
    a = array("Q" if entry_size == 8 else "I")
    n = (len(page) - offset) // entry_size if count is None else count
    a.frombytes(page[offset:offset + n * entry_size])
    if array("I", [1]).tobytes() != b"\x01\x00\x00\x00":  # pragma: no cover - big-endian host
        a.byteswap()
    return a.tolist()


def _nonzero(vals: list[int]) -> dict[int, int]:
    if 0 not in vals:
        return dict(enumerate(vals))
    return {i: v for i, v in enumerate(vals) if v}


def _series(entry_size: int) -> tuple[int, int]:
    """S = sum 2^(bits*k) and T = sum k * 2^(bits*k) over one page's entries: a
    page holding e0, e0 + d, e0 + 2d, ... is, read as one little-endian integer,
    e0 * S + d * T (no entry overflows into the next)."""
    bits, n = 8 * entry_size, x86.PAGE_SIZE // entry_size
    return (sum(1 << (bits * k) for k in range(n)), sum(k << (bits * k) for k in range(n)))


_SERIES = {4: _series(4), 8: _series(8)}


def _uniform(page: bytes, entry_size: int, rsvd: int) -> int | None:
    """The first entry of a page table whose entries map consecutive 4 KiB
    pages with identical flags (the kernel's linear map), else None. One
    big-integer comparison instead of a Python loop over 512 entries."""
    e0 = int.from_bytes(page[:entry_size], "little")
    last = e0 + (x86.PAGE_SIZE // entry_size - 1) * x86.SIZE_4K
    if not e0 & x86.PRESENT or (e0 | last) & rsvd or last >> (8 * entry_size):
        return None
    s, t = _SERIES[entry_size]
    return e0 if int.from_bytes(page, "little") == e0 * s + x86.SIZE_4K * t else None


class _Rules(NamedTuple):
    """How the CPU reads a present entry of one level, worked out once per walk."""

    large_ok: bool     # PS set makes the entry a leaf
    rsvd_table: int    # reserved bits of an entry pointing to a table
    rsvd_large: int    # reserved bits of a large-page entry
    tolerated: int     # reserved bits the emulated CPU walks through

    def judge(self, e: int) -> tuple[bool, int, bool]:
        """(maps a large page, reserved bits set, the walk stops here)."""
        large = self.large_ok and bool(e & x86.PSE)
        rsvd = e & (self.rsvd_large if large else self.rsvd_table)
        return large, rsvd, bool(rsvd & ~self.tolerated)


def _rules(geo: x86.Geometry, level: x86.Level, cpu: CpuState, phys_bits: int) -> _Rules:
    nxe = cpu.pae and cpu.nxe
    return _Rules(level.large and (cpu.pse or not geo.large_needs_pse()),
                  geo.reserved_mask(level.name, large=False, phys_bits=phys_bits, nxe=nxe),
                  geo.reserved_mask(level.name, large=True, phys_bits=phys_bits, nxe=nxe),
                  geo.tolerated(level.name))


# A table still to decode: its address, the VA it starts at, its entries, and
# the access its parents grant (R/W, U/S, X).
_Pending = tuple[int, int, list[int], bool, bool, bool]


class _Walker:
    """One walk: the mode's geometry, the output lists, reads one level at a time."""

    def __init__(self, mem: PhysMemory, cpu: CpuState, phys_bits: int):
        self.mem, self.cpu, self.phys_bits = mem, cpu, phys_bits
        self.geo = x86.geometry(cpu.pae)
        self.esize = self.geo.entry_size
        self.tables: list[TablePage] = []
        self.runs: list[Run] = []
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, int]] = set()
        self.pge = cpu.pge
        self.nxe = cpu.pae and cpu.nxe
        self.pte_rsvd = self.geo.reserved_mask("pte", large=False, phys_bits=phys_bits,
                                               nxe=self.nxe)

    def table(self, level: str, phys: int, vals: list[int] | None,
              entries: Mapping[int, int] | None = None) -> None:
        """Record a table page once, from its entries' values or as `entries`."""
        if (level, phys) not in self._seen:
            self._seen.add((level, phys))
            self.tables.append(TablePage(level, phys, _nonzero(vals) if entries is None
                                         else entries))

    def read(self, addrs: Iterable[int]) -> dict[int, bytes]:
        return self.mem.read_pages(sorted(set(addrs)))

    def leaf_run(self, va: int, entry: int, count: int, size: int, pa: int, entry_addr: int,
                 w: bool, u: bool, x: bool) -> None:
        """`count` leaves like `entry`, parent permissions w/u/x already ANDed in."""
        self.runs.append(Run(va, pa, count, size, entry, w and bool(entry & x86.RW),
                             u and bool(entry & x86.USER),
                             x and not (self.nxe and entry & x86.NX),
                             self.pge and bool(entry & x86.GLOBAL), entry_addr, self.esize))

    def run(self) -> None:
        geo, levels = self.geo, self.geo.walk_levels
        root = self.cpu.cr3 & geo.root_mask
        page = root & ~(x86.PAGE_SIZE - 1)
        vals = _entries(self.read([page])[page], self.esize, root - page, levels[0].entries)
        self.table(levels[0].name, root, vals)
        pending: list[_Pending] = [(root, 0, vals, True, True, True)]
        for level, child in zip(levels, levels[1:]):
            children: list[tuple[int, int, bool, bool, bool]] = []
            for table in pending:
                self.directory(level, table, children)
            pages = self.read(c[0] for c in children)
            if child is levels[-1]:
                for pa, va, w, u, x in children:
                    self.pte_page(pa, va, pages[pa], w, u, x)
                return
            pending = []
            for pa, va, w, u, x in children:
                vals = _entries(pages[pa], self.esize)
                self.table(child.name, pa, vals)
                pending.append((pa, va, vals, w, u, x))

    def directory(self, level: x86.Level, table: _Pending, children: list) -> None:
        """The entries of one table above the last level: large pages become
        leaves, the rest name the tables of the next level."""
        geo, es = self.geo, self.esize
        phys, base_va, vals, w, u, x = table
        access = geo.grants_access(level.name)
        rules = _rules(geo, level, self.cpu, self.phys_bits)
        for i, e in enumerate(vals):
            if not e & x86.PRESENT:
                continue
            va, addr = base_va + (i << level.shift), phys + i * es
            large, rsvd, fatal = rules.judge(e)
            if rsvd:
                what = (pdpte_reserved_text(rsvd) if rules.tolerated else
                        f"reserved bits {rsvd:#x} set in a {geo.entry_name(level.name, large)}")
                self.problems.append(Problem(level.name, addr, va, e, what))
                if fatal:
                    continue
            if large:
                self.leaf_run(va, e, 1, level.span, geo.large_pa(e), addr, w, u, x)
            elif access:
                # PS is ignored when CR4.PSE=0: the entry points to a page table.
                children.append((e & geo.addr_mask, va, w and bool(e & x86.RW),
                                 u and bool(e & x86.USER), x and not (self.nxe and e & x86.NX)))
            else:
                children.append((e & geo.addr_mask, va, w, u, x))

    def pte_page(self, table: int, base_va: int, page: bytes, w: bool, u: bool,
                 x: bool) -> None:
        """The leaves of one page table (4 KiB pages)."""
        e0 = _uniform(page, self.esize, self.pte_rsvd)
        if e0 is not None:  # one contiguous range with one set of flags
            n, step = len(page) // self.esize, x86.SIZE_4K
            self.table("pte", table, None, Series(0, n, e0, step))
            self.leaf_run(base_va, e0, n, step, e0 & self.geo.addr_mask, table, w, u, x)
            return
        vals = _entries(page, self.esize)
        self.table("pte", table, vals)
        self.pte_table(table, base_va, vals, w, u, x)

    def pte_table(self, table: int, base_va: int, vals: list[int], w: bool, u: bool,
                  x: bool) -> None:
        """The leaves of one page table's entries, as runs."""
        es, rsvd, mask, step = self.esize, self.pte_rsvd, self.geo.addr_mask, x86.SIZE_4K
        start = prev = None
        for j, e in enumerate(vals + [0]):  # the 0 closes the last run
            if start is not None and e == prev + step and not e & rsvd:
                prev = e
                continue
            if start is not None:
                self.leaf_run(base_va + start * step, vals[start], j - start, step,
                              vals[start] & mask, table + start * es, w, u, x)
                start = None
            if not e & x86.PRESENT:
                continue
            if e & rsvd:
                self.problems.append(Problem("pte", table + j * es, base_va + j * step, e,
                                             f"reserved bits {e & rsvd:#x} set in a PTE"))
                continue
            start, prev = j, e


def walk(mem: PhysMemory, cpu: CpuState, *, phys_bits: int = 36) -> Walk:
    """Walk every mapping reachable from cpu.cr3 in the mode the registers select.

    Each level's table pages are read in one read_pages() call. phys_bits is
    MAXPHYADDR (36 for QEMU's 32-bit CPUs with PAE or PSE-36): address bits at
    or above it are reserved.
    """
    w = _Walker(mem, cpu, phys_bits)
    if cpu.paging:
        w.run()
    w.runs.sort(key=lambda r: r.va)
    return Walk(cpu, w.tables, Leaves(w.runs), w.problems)


def problem_span(problem: Problem, cpu: CpuState) -> int:
    """How many bytes of VA a rejected entry at `problem.level` leaves unmapped."""
    geo = x86.geometry(cpu.pae)
    return next(lv.span for lv in geo.walk_levels if lv.name == problem.level)


# --------------------------------------------------------------------------------------
# One address, level by level
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """One level of the walk of a single address.

    table: the table's physical address (the PDPT's 32-byte aligned one);
    what: the entry as the CPU reads it ("table at ...", "4 KiB page at ...",
    "not present", "reserved bits ... set"); pa: the translated address on the
    last step of a successful walk.
    """

    level: str
    table: int
    index: int
    entry_addr: int
    entry: int
    what: str
    pa: int | None = None


def _read_entry(mem: PhysMemory, addr: int, size: int) -> int:
    page = addr & ~(x86.PAGE_SIZE - 1)
    off = addr - page
    return int.from_bytes(mem.read_pages([page])[page][off:off + size], "little")


def walk_va(mem: PhysMemory, cpu: CpuState, va: int, *, phys_bits: int = 36) -> list[Step]:
    """The walk of one virtual address, level by level (what `ptharness walk
    --va` shows). Effective permissions are those of walk()'s leaf for it."""
    va &= x86.VA_MASK
    if not cpu.paging:
        return []
    geo, steps = x86.geometry(cpu.pae), []
    levels = geo.walk_levels
    table = cpu.cr3 & geo.root_mask
    for depth, level in enumerate(levels):
        i = level.index(va)
        addr = table + i * geo.entry_size
        e = _read_entry(mem, addr, geo.entry_size)

        def step(what: str, pa: int | None = None) -> Step:
            return Step(level.name, table, i, addr, e, what, pa)
        if not e & x86.PRESENT:
            return steps + [step("not present")]
        rules = _rules(geo, level, cpu, phys_bits)
        large, rsvd, fatal = rules.judge(e)
        if fatal:
            return steps + [step(pdpte_reserved_text(rsvd) if rules.tolerated
                                 else f"reserved bits {rsvd:#x} set")]
        if large or depth == len(levels) - 1:
            pa = (geo.large_pa(e) if large else e & geo.addr_mask) | (va & (level.span - 1))
            return steps + [step(f"{x86.page_size_name(level.span)} page at "
                                 f"{pa & ~(level.span - 1):#x} flags {leaf_flags(e):#x}", pa)]
        child = e & geo.addr_mask
        what = f"{levels[depth + 1].table_kind} at {child:#x}"
        if level.large and e & x86.PSE:
            what += " (PS ignored: CR4.PSE=0)"
        if rsvd:
            what += f"; {pdpte_reserved_text(rsvd)}"
        steps.append(step(what))
        table = child
    return steps
