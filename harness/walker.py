"""x86-32 page walker: the tables the CPU really uses, read from physical memory.

Data types are fixed here (the model, the checks and the snapshot speak them);
the walk itself is implemented below them.
"""
from __future__ import annotations

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
    cpu: CpuState
    tables: list[TablePage]
    leaves: list[Leaf]
    problems: list[Problem]

    @property
    def mode(self) -> str:
        return self.cpu.mode


def leaf_flags(entry: int) -> int:
    """A leaf entry's attribute bits without the address and without A/D
    (the CPU sets those by itself)."""
    return (entry & (0xFFF | x86.NX)) & ~x86.HW_MANAGED


def merge(leaves: list[Leaf]) -> list[Range]:
    """Merge leaves into ranges of contiguous VA and PA with the same page size,
    leaf flags and effective permissions."""
    out: list[Range] = []
    for lf in sorted(leaves, key=lambda x: x.va):
        flags = leaf_flags(lf.entry)
        if out:
            r = out[-1]
            if (r.va + r.size == lf.va and r.pa + r.size == lf.pa and r.page_size == lf.size
                    and r.flags == flags and r.writable == lf.writable and r.user == lf.user
                    and r.executable == lf.executable and r.global_ == lf.global_):
                out[-1] = Range(r.va, r.pa, r.size + lf.size, r.page_size, flags,
                                r.writable, r.user, r.executable, r.global_)
                continue
        out.append(Range(lf.va, lf.pa, lf.size, lf.size, flags,
                         lf.writable, lf.user, lf.executable, lf.global_))
    return out


def walk(mem: PhysMemory, cpu: CpuState) -> Walk:
    """Walk every mapping reachable from cpu.cr3 in the mode the registers select."""
    raise NotImplementedError("walker: implemented by the harness-core work (issue 3)")
