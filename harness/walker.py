"""x86-32 page walker: the tables the CPU really uses, read from physical memory.

Data types are fixed here (the model, the checks and the snapshot speak them);
the walk itself is implemented below them.
"""
from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from . import x86


class PhysMemory(Protocol):
    """Where the walker reads physical memory from (gdb, a memory image...)."""

    def read_pages(self, addrs: list[int]) -> dict[int, bytes]:
        """Return the 4 KiB page at each page-aligned address. Implementations
        batch adjacent pages into as few reads as they can."""
        ...


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
        return self.cr3 & (0xFFFFFFE0 if self.pae else 0xFFFFF000)

    @property
    def mode(self) -> str:
        if not self.paging:
            return "off"
        return "pae" if self.pae else "2-level"


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
    entries: dict[int, int] = field(default_factory=dict)


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
# A run is `count` consecutive leaves that differ only in their address: leaf k
# maps va + k*size to pa + k*size through entry + k*size, stored at
# entry_addr + k*entry_size.  A 896 MiB kernel mapping is a few hundred runs
# instead of 229376 Leaf objects (1.5 us each to build): walk() stays fast and
# Leaf objects are made only for whoever iterates.
# (va, pa, count, size, entry, writable, user, executable, global_, entry_addr, entry_size)
_Run = tuple


class Leaves(Sequence):
    """The leaves of a walk in VA order: a read-only sequence of Leaf."""

    __slots__ = ("runs", "_starts", "_len")

    def __init__(self, runs: list[_Run]):
        self.runs = runs
        starts, n = [], 0
        for r in runs:
            starts.append(n)
            n += r[2]
        self._starts = starts
        self._len = n

    def __len__(self) -> int:
        return self._len

    @staticmethod
    def _leaf(r: _Run, k: int) -> Leaf:
        va, pa, _, size, entry, w, u, x, g, ea, es = r
        off = k * size
        return Leaf(va + off, pa + off, size, entry + off, w, u, x, g, ea + k * es)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._len))]
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError("leaf index out of range")
        ri = bisect.bisect_right(self._starts, i) - 1
        return self._leaf(self.runs[ri], i - self._starts[ri])

    def __iter__(self) -> Iterator[Leaf]:
        mk = self._leaf
        for r in self.runs:
            for k in range(r[2]):
                yield mk(r, k)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence) or len(other) != self._len:
            return NotImplemented if not isinstance(other, Sequence) else False
        return all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"<Leaves: {self._len} leaves in {len(self.runs)} runs>"


def leaf_flags(entry: int) -> int:
    """A leaf entry's attribute bits without the address and without A/D
    (the CPU sets those by itself)."""
    return (entry & (0xFFF | x86.NX)) & ~x86.HW_MANAGED


def merge(leaves: Iterable[Leaf]) -> list[Range]:
    """Merge leaves into ranges of contiguous VA and PA with the same page size,
    leaf flags and effective permissions."""
    if isinstance(leaves, Leaves):
        pieces = [(r[0], r[1], r[2] * r[3], r[3], leaf_flags(r[4]), r[5], r[6], r[7], r[8])
                  for r in leaves.runs]
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


# --------------------------------------------------------------------------------------
# The walk
# --------------------------------------------------------------------------------------
_KIB4, _MIB2, _MIB4 = 0x1000, 0x200000, 0x400000
_PAE_ADDR = 0x000FFFFFFFFFF000  # bits 51:12 (what is above MAXPHYADDR is reserved)
# Reserved low bits of a PAE PDPT entry: 1-2 and 6-8. The SDM reserves bit 5
# too, but QEMU's TCG sets it (as Accessed) in the PDPTE it walks and goes on
# using the entry: the CPU under test does not fault on it, so neither do we.
_PDPTE_RSVD_LOW = 0x1C6


def pdpte_reserved_text(rsvd: int) -> str:
    """What reserved bits in a present PDPT entry do: the SDM and QEMU 7.2's TCG
    differ, and the walk follows what the emulated CPU really does."""
    if rsvd & ~_PDPTE_RSVD_LOW:
        return (f"reserved bits {rsvd:#x} set in a PDPT entry: the SDM has the load of CR3 "
                "raise #GP; QEMU raises a reserved-bit #PF on every access through it")
    return (f"reserved bits {rsvd:#x} set in a PDPT entry: the SDM has the load of CR3 raise "
            "#GP; QEMU's TCG raises none and uses the entry (the walk follows it)")


def _high_reserved(phys_bits: int) -> int:
    """Address bits at or above MAXPHYADDR up to bit 62."""
    return ((1 << 63) - 1) & ~((1 << phys_bits) - 1)


def _pse36_reserved(phys_bits: int) -> int:
    """Reserved bits of a 4 MiB PDE: bit 21, and bits 20:13 that would hold
    physical address bits at or above MAXPHYADDR (PSE-36 gives bits 39:32)."""
    m = min(max(phys_bits, 32), 40)
    return 0x200000 | (0x1FE000 & ~((1 << (13 + m - 32)) - 1))


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


class _Walker:
    """One walk: the mode's rules, the output lists, reads one level at a time."""

    def __init__(self, mem: PhysMemory, cpu: CpuState, phys_bits: int):
        self.mem, self.cpu, self.phys_bits = mem, cpu, phys_bits
        self.pae = cpu.pae
        self.esize = 8 if self.pae else 4
        self.tables: list[TablePage] = []
        self.runs: list[_Run] = []
        self.problems: list[Problem] = []
        self._seen: set[tuple[str, int]] = set()
        self.pge = cpu.pge
        self.nxe = self.pae and cpu.nxe
        if self.pae:
            self.addr_mask = _PAE_ADDR
            self.rsvd = _high_reserved(phys_bits) | (0 if self.nxe else x86.NX)
        else:
            self.addr_mask = 0xFFFFF000
            self.rsvd = 0

    def table(self, level: str, phys: int, vals: list[int]) -> None:
        if (level, phys) not in self._seen:
            self._seen.add((level, phys))
            self.tables.append(TablePage(level, phys, _nonzero(vals)))

    def problem(self, level: str, entry_addr: int, va: int, value: int, what: str) -> None:
        self.problems.append(Problem(level, entry_addr, va, value, what))

    def read(self, addrs: Iterable[int]) -> dict[int, bytes]:
        return self.mem.read_pages(sorted(set(addrs)))

    def leaf_run(self, va: int, entry: int, count: int, size: int, pa: int, entry_addr: int,
                 w: bool, u: bool, x: bool) -> None:
        """`count` leaves like `entry`, parent permissions w/u/x already ANDed in."""
        self.runs.append((va, pa, count, size, entry, w and bool(entry & x86.RW),
                          u and bool(entry & x86.USER),
                          x and not (self.nxe and entry & x86.NX),
                          self.pge and bool(entry & x86.GLOBAL), entry_addr, self.esize))

    def pte_table(self, vals: list[int], table: int, base_va: int, w: bool, u: bool, x: bool,
                  level: str = "pte") -> None:
        """The leaves of one page table (4 KiB pages)."""
        n, es, rsvd, mask = len(vals), self.esize, self.rsvd, self.addr_mask
        e0, last = vals[0], vals[-1]
        # Fast path: the whole table maps one contiguous range with one set of flags.
        if (e0 & x86.PRESENT and last == e0 + (n - 1) * _KIB4 and not (e0 | last) & rsvd
                and vals == list(range(e0, last + 1, _KIB4))):
            self.leaf_run(base_va, e0, n, _KIB4, e0 & mask, table, w, u, x)
            return
        start = prev = None
        for j, e in enumerate(vals):
            if start is not None and e == prev + _KIB4 and not e & rsvd:
                prev = e
                continue
            if start is not None:
                cnt = j - start
                self.leaf_run(base_va + start * _KIB4, vals[start], cnt, _KIB4,
                              vals[start] & mask, table + start * es, w, u, x)
                start = None
            if not e & x86.PRESENT:
                continue
            if e & rsvd:
                self.problem(level, table + j * es, base_va + j * _KIB4, e,
                             f"reserved bits {e & rsvd:#x} set in a PTE")
                continue
            start, prev = j, e
        if start is not None:
            self.leaf_run(base_va + start * _KIB4, vals[start], n - start, _KIB4,
                          vals[start] & mask, table + start * es, w, u, x)

    # -- 2-level ---------------------------------------------------------------------------
    def walk_2level(self) -> None:
        root = self.cpu.cr3 & 0xFFFFF000
        pgd = _entries(self.read([root])[root], 4)
        self.table("pgd", root, pgd)
        pts: list[tuple[int, int]] = []
        for i, e in enumerate(pgd):
            if not e & x86.PRESENT:
                continue
            va = i << 22
            if e & x86.PSE and self.cpu.pse:
                rsvd = e & _pse36_reserved(self.phys_bits)
                if rsvd:
                    self.problem("pgd", root + 4 * i, va, e,
                                 f"reserved bits {rsvd:#x} set in a 4 MiB PDE")
                    continue
                pa = (e & 0xFFC00000) | (((e >> 13) & 0xFF) << 32)
                self.leaf_run(va, e, 1, _MIB4, pa, root + 4 * i, True, True, True)
            else:
                # PS is ignored when CR4.PSE=0: the entry points to a page table.
                pts.append((i, e))
        pages = self.read(e & 0xFFFFF000 for _, e in pts)
        for i, e in pts:
            pt = e & 0xFFFFF000
            vals = _entries(pages[pt], 4)
            self.table("pte", pt, vals)
            self.pte_table(vals, pt, i << 22, bool(e & x86.RW), bool(e & x86.USER), True)

    # -- PAE -------------------------------------------------------------------------------
    def walk_pae(self) -> None:
        pdpt = self.cpu.cr3 & 0xFFFFFFE0  # 32-byte aligned, not page aligned
        page = self.read([pdpt & ~0xFFF])[pdpt & ~0xFFF]
        slots = _entries(page, 8, pdpt & 0xFFF, 4)
        self.table("pgd", pdpt, slots)
        pdpte_rsvd = _PDPTE_RSVD_LOW | _high_reserved(self.phys_bits) | x86.NX
        pds: list[tuple[int, int]] = []
        for s, e in enumerate(slots):
            if not e & x86.PRESENT:
                continue
            rsvd = e & pdpte_rsvd
            if rsvd:
                self.problem("pgd", pdpt + 8 * s, s << 30, e, pdpte_reserved_text(rsvd))
                if rsvd & ~_PDPTE_RSVD_LOW:
                    continue  # no translation through it, even under QEMU
            pds.append((s, e & _PAE_ADDR))
        pd_pages = self.read(pd for _, pd in pds)
        pts: list[tuple[int, int, int]] = []
        for s, pd in pds:
            vals = _entries(pd_pages[pd], 8)
            self.table("pmd", pd, vals)
            for j, e in enumerate(vals):
                if not e & x86.PRESENT:
                    continue
                va = (s << 30) | (j << 21)
                rsvd = e & (self.rsvd | (0x1FE000 if e & x86.PSE else 0))
                if rsvd:
                    kind = "2 MiB PDE" if e & x86.PSE else "PDE"
                    self.problem("pmd", pd + 8 * j, va, e, f"reserved bits {rsvd:#x} set in a {kind}")
                    continue
                if e & x86.PSE:
                    self.leaf_run(va, e, 1, _MIB2, e & _PAE_ADDR & ~(_MIB2 - 1), pd + 8 * j,
                                  True, True, True)
                else:
                    pts.append((va, e, e & _PAE_ADDR))
        pt_pages = self.read(pt for _, _, pt in pts)
        for va, e, pt in pts:
            vals = _entries(pt_pages[pt], 8)
            self.table("pte", pt, vals)
            self.pte_table(vals, pt, va, bool(e & x86.RW), bool(e & x86.USER),
                           not (self.nxe and e & x86.NX))


def walk(mem: PhysMemory, cpu: CpuState, *, phys_bits: int = 36) -> Walk:
    """Walk every mapping reachable from cpu.cr3 in the mode the registers select.

    Each level's table pages are read in one read_pages() call. phys_bits is
    MAXPHYADDR (36 for QEMU's 32-bit CPUs with PAE or PSE-36): address bits at
    or above it are reserved.
    """
    w = _Walker(mem, cpu, phys_bits)
    if cpu.paging:
        if cpu.pae:
            w.walk_pae()
        else:
            w.walk_2level()
    w.runs.sort(key=lambda r: r[0])
    return Walk(cpu, w.tables, Leaves(w.runs), w.problems)


def problem_span(problem: Problem, cpu: CpuState) -> int:
    """How many bytes of VA a rejected entry at `problem.level` leaves unmapped."""
    if problem.level == "pte":
        return _KIB4
    if problem.level == "pmd":
        return _MIB2
    return 1 << 30 if cpu.pae else _MIB4


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


def walk_va(mem: PhysMemory, cpu: CpuState, va: int, *, phys_bits: int = 36) -> list[Step]:
    """The walk of one virtual address, level by level (what `ptharness walk
    --va` shows). Effective permissions are those of walk()'s leaf for it."""
    va &= 0xFFFFFFFF
    if not cpu.paging:
        return []
    steps: list[Step] = []

    def entry(table: int, index: int, size: int) -> int:
        addr = table + index * size
        page = mem.read_pages([addr & ~0xFFF])[addr & ~0xFFF]
        return int.from_bytes(page[addr & 0xFFF:(addr & 0xFFF) + size], "little")

    def leaf_text(size: int, e: int, pa: int) -> str:
        unit = {_KIB4: "4 KiB", _MIB2: "2 MiB", _MIB4: "4 MiB"}[size]
        return f"{unit} page at {pa & ~(size - 1):#x} flags {leaf_flags(e):#x}"

    if not cpu.pae:
        pgd = cpu.cr3 & 0xFFFFF000
        i = va >> 22
        e = entry(pgd, i, 4)
        if not e & x86.PRESENT:
            return [Step("pgd", pgd, i, pgd + 4 * i, e, "not present")]
        if e & x86.PSE and cpu.pse:
            rsvd = e & _pse36_reserved(phys_bits)
            if rsvd:
                return [Step("pgd", pgd, i, pgd + 4 * i, e, f"reserved bits {rsvd:#x} set")]
            pa = (e & 0xFFC00000) | (((e >> 13) & 0xFF) << 32) | (va & (_MIB4 - 1))
            return [Step("pgd", pgd, i, pgd + 4 * i, e, leaf_text(_MIB4, e, pa), pa)]
        pt = e & 0xFFFFF000
        ignored = " (PS ignored: CR4.PSE=0)" if e & x86.PSE else ""
        steps.append(Step("pgd", pgd, i, pgd + 4 * i, e, f"page table at {pt:#x}{ignored}"))
        j = (va >> 12) & 0x3FF
        e = entry(pt, j, 4)
        if not e & x86.PRESENT:
            steps.append(Step("pte", pt, j, pt + 4 * j, e, "not present"))
        else:
            pa = (e & 0xFFFFF000) | (va & 0xFFF)
            steps.append(Step("pte", pt, j, pt + 4 * j, e, leaf_text(_KIB4, e, pa), pa))
        return steps

    nxe = cpu.nxe
    rsvd_common = _high_reserved(phys_bits) | (0 if nxe else x86.NX)
    pdpt = cpu.cr3 & 0xFFFFFFE0
    s = va >> 30
    e = entry(pdpt, s, 8)
    if not e & x86.PRESENT:
        return [Step("pgd", pdpt, s, pdpt + 8 * s, e, "not present")]
    rsvd = e & (_PDPTE_RSVD_LOW | _high_reserved(phys_bits) | x86.NX)
    if rsvd & ~_PDPTE_RSVD_LOW:
        return [Step("pgd", pdpt, s, pdpt + 8 * s, e, pdpte_reserved_text(rsvd))]
    pd = e & _PAE_ADDR
    note = f"; {pdpte_reserved_text(rsvd)}" if rsvd else ""
    steps.append(Step("pgd", pdpt, s, pdpt + 8 * s, e, f"page directory at {pd:#x}{note}"))
    j = (va >> 21) & 0x1FF
    e = entry(pd, j, 8)
    if not e & x86.PRESENT:
        steps.append(Step("pmd", pd, j, pd + 8 * j, e, "not present"))
        return steps
    rsvd = e & (rsvd_common | (0x1FE000 if e & x86.PSE else 0))
    if rsvd:
        steps.append(Step("pmd", pd, j, pd + 8 * j, e, f"reserved bits {rsvd:#x} set"))
        return steps
    if e & x86.PSE:
        pa = (e & _PAE_ADDR & ~(_MIB2 - 1)) | (va & (_MIB2 - 1))
        steps.append(Step("pmd", pd, j, pd + 8 * j, e, leaf_text(_MIB2, e, pa), pa))
        return steps
    pt = e & _PAE_ADDR
    steps.append(Step("pmd", pd, j, pd + 8 * j, e, f"page table at {pt:#x}"))
    k = (va >> 12) & 0x1FF
    e = entry(pt, k, 8)
    if not e & x86.PRESENT:
        steps.append(Step("pte", pt, k, pt + 8 * k, e, "not present"))
    elif e & rsvd_common:
        steps.append(Step("pte", pt, k, pt + 8 * k, e, f"reserved bits {e & rsvd_common:#x} set"))
    else:
        pa = (e & _PAE_ADDR) | (va & 0xFFF)
        steps.append(Step("pte", pt, k, pt + 8 * k, e, leaf_text(_KIB4, e, pa), pa))
    return steps
