"""x86-32 paging vocabulary shared by every layer: entry bits, control-register
bits and the geometry of the two paging modes.

Values are from the Intel SDM vol. 3A ch. 4 and Linux 2.6.22's include/asm-i386
headers (see shared/spec/kernel-facts.md).  Nothing here knows about gdb, QEMU
or the guest, so any layer may import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterator

PAGE_SIZE = 0x1000
PAGE_SHIFT = 12
PAGE_OFFSET = 0xC0000000
VA_MASK = 0xFFFFFFFF  # a 32-bit linear address

# Page-table entry bits.
PRESENT = 0x001
RW = 0x002
USER = 0x004
PWT = 0x008
PCD = 0x010
ACCESSED = 0x020
DIRTY = 0x040
PSE = 0x080  # large page in a PDE; PAT in a 4 KiB PTE
GLOBAL = 0x100
NX = 1 << 63  # PAE only

# The two bits the CPU may set by itself while it uses the tables.
HW_MANAGED = ACCESSED | DIRTY

# Composite protections of the era (kernel-facts.md section 2).
PAGE_TABLE = PRESENT | RW | USER | ACCESSED | DIRTY  # 0x067
KERNPG_TABLE = PRESENT | RW | ACCESSED | DIRTY  # 0x063
PAGE_KERNEL_EXEC = PRESENT | RW | ACCESSED | DIRTY  # 0x063
PAGE_KERNEL = PAGE_KERNEL_EXEC | NX  # NX survives only where supported

# Control registers.
CR0_WP = 1 << 16
CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_PGE = 1 << 7
EFER_NXE = 1 << 11
MSR_EFER = 0xC0000080

# A present PAE PDPT entry may carry only P, PWT, PCD, bits 9-11 and the address.
PDPTE_ALLOWED_LOW = PRESENT | PWT | PCD | 0xE00


# Page sizes, and the address bits of an entry in each mode.
SIZE_4K = 0x1000
SIZE_2M = 0x200000
SIZE_4M = 0x400000
ADDR_2LEVEL = 0xFFFFF000
ADDR_PAE = 0x000FFFFFFFFFF000  # bits 51:12; what is above MAXPHYADDR is reserved

# Reserved low bits of a present PAE PDPT entry: 1-2 and 6-8. The SDM reserves
# bit 5 too, but QEMU's TCG sets it (as Accessed) in the PDPTE it walks and goes
# on using the entry: the CPU under test does not fault on it, so neither do we.
PDPTE_RSVD_LOW = 0x1C6
# Bits 20:13 of a 2 MiB PAE PDE (between PAT and the address) are reserved.
PDE_2M_RSVD = 0x1FE000


def high_reserved(phys_bits: int) -> int:
    """PAE: address bits at or above MAXPHYADDR, up to bit 62."""
    return ((1 << 63) - 1) & ~((1 << phys_bits) - 1)


def pse36_reserved(phys_bits: int) -> int:
    """Reserved bits of a 4 MiB PDE: bit 21, and bits 20:13 that would hold
    physical address bits at or above MAXPHYADDR (PSE-36 gives bits 39:32)."""
    m = min(max(phys_bits, 32), 40)
    return 0x200000 | (0x1FE000 & ~((1 << (13 + m - 32)) - 1))


def page_size_name(size: int) -> str:
    return f"{size >> 10} KiB" if size < 1 << 20 else f"{size >> 20} MiB"


@dataclass(frozen=True)
class Level:
    """One level of a walk: its name, the VA bits below its index, its table size."""

    name: str      # "pgd", "pmd" or "pte"
    shift: int     # an entry covers 1 << shift bytes of VA
    entries: int   # entries in one table of this level
    large: bool    # an entry with PS set can be a leaf here
    table_kind: str  # what the parent's entry points to, for a person

    @property
    def span(self) -> int:
        return 1 << self.shift

    def index(self, va: int) -> int:
        return (va >> self.shift) & (self.entries - 1)


@dataclass(frozen=True)
class Geometry:
    """Shape of one paging mode, named after the kernel's levels.

    The middle level ("pmd") is folded away in 2-level mode: there a pgd entry
    is the pmd entry.
    """

    name: str
    entry_size: int
    pgdir_shift: int
    ptrs_per_pgd: int
    pmd_shift: int
    ptrs_per_pmd: int
    ptrs_per_pte: int
    levels: tuple[str, ...]
    addr_mask: int   # the address bits of a table entry
    root_mask: int   # CR3's root address: a PAE PDPT is 32-byte aligned

    @property
    def pae(self) -> bool:
        return self.entry_size == 8

    @property
    def pmd_size(self) -> int:
        return 1 << self.pmd_shift

    @property
    def pmd_mask(self) -> int:
        return ~(self.pmd_size - 1) & 0xFFFFFFFF

    @property
    def pgdir_size(self) -> int:
        return 1 << self.pgdir_shift

    @property
    def user_ptrs_per_pgd(self) -> int:
        return PAGE_OFFSET // self.pgdir_size

    @property
    def kernel_pgd_ptrs(self) -> int:
        return self.ptrs_per_pgd - self.user_ptrs_per_pgd

    @property
    def last_pkmap(self) -> int:
        return self.ptrs_per_pte

    def pgd_index(self, va: int) -> int:
        return (va >> self.pgdir_shift) & (self.ptrs_per_pgd - 1)

    def pmd_index(self, va: int) -> int:
        return (va >> self.pmd_shift) & (self.ptrs_per_pmd - 1)

    def pte_index(self, va: int) -> int:
        return (va >> PAGE_SHIFT) & (self.ptrs_per_pte - 1)

    # -- what the CPU's walk needs (SDM vol. 3A 4.3, 4.4) ----------------------------------
    @cached_property
    def walk_levels(self) -> tuple[Level, ...]:
        """The levels the CPU walks, root first. A PAE PDPT entry never maps a
        page; a 2-level PDE does with PS (if CR4.PSE), a PAE PDE with PS always."""
        pte = Level("pte", PAGE_SHIFT, self.ptrs_per_pte, False, "page table")
        if self.pae:
            return (Level("pgd", self.pgdir_shift, self.ptrs_per_pgd, False, "PDPT"),
                    Level("pmd", self.pmd_shift, self.ptrs_per_pmd, True, "page directory"),
                    pte)
        return Level("pgd", self.pgdir_shift, self.ptrs_per_pgd, True, "page directory"), pte

    def large_needs_pse(self) -> bool:
        """2-level: PS means a 4 MiB page only with CR4.PSE (else it is ignored)."""
        return not self.pae

    def grants_access(self, level: str) -> bool:
        """Whether an entry of this level carries R/W, U/S and NX (a PDPTE does not)."""
        return not (self.pae and level == "pgd")

    def large_pa(self, entry: int) -> int:
        """The physical address of a large page's entry (PSE-36 in 2-level mode)."""
        if self.pae:
            return entry & ADDR_PAE & ~(SIZE_2M - 1)
        return (entry & 0xFFC00000) | (((entry >> 13) & 0xFF) << 32)

    def reserved_mask(self, level: str, *, large: bool, phys_bits: int, nxe: bool) -> int:
        """Bits that must be 0 in a present entry of this level."""
        if not self.pae:
            return pse36_reserved(phys_bits) if large else 0
        if level == "pgd":
            return PDPTE_RSVD_LOW | high_reserved(phys_bits) | NX
        return high_reserved(phys_bits) | (0 if nxe else NX) | (PDE_2M_RSVD if large else 0)

    def tolerated(self, level: str) -> int:
        """Reserved bits the emulated CPU ignores at this level (PDPTE_RSVD_LOW)."""
        return PDPTE_RSVD_LOW if self.pae and level == "pgd" else 0

    def entry_name(self, level: str, large: bool) -> str:
        if level == "pte":
            return "PTE"
        if level == "pgd" and self.pae:
            return "PDPT entry"
        return f"{page_size_name(self.pmd_size)} PDE" if large else "PDE"


TWO_LEVEL = Geometry(
    name="2-level",
    entry_size=4,
    pgdir_shift=22,
    ptrs_per_pgd=1024,
    pmd_shift=22,
    ptrs_per_pmd=1,
    ptrs_per_pte=1024,
    levels=("pgd", "pte"),
    addr_mask=ADDR_2LEVEL,
    root_mask=ADDR_2LEVEL,
)

PAE = Geometry(
    name="pae",
    entry_size=8,
    pgdir_shift=30,
    ptrs_per_pgd=4,
    pmd_shift=21,
    ptrs_per_pmd=512,
    ptrs_per_pte=512,
    levels=("pgd", "pmd", "pte"),
    addr_mask=ADDR_PAE,
    root_mask=0xFFFFFFE0,
)


def size_text(n: int) -> str:
    """A byte count the way a person reads it: 4K, 2M, 1G, or hex."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n:#x}"


def rwx(writable: bool, executable: bool) -> str:
    """Effective access as `ls` shows it: every present mapping is readable."""
    return "r" + ("w" if writable else "-") + ("x" if executable else "-")


def geometry(pae: bool) -> Geometry:
    return PAE if pae else TWO_LEVEL


def page_runs(pages: list[int], max_pages: int) -> Iterator[tuple[int, int]]:
    """Sorted page addresses as (start, count) runs of adjacent pages, at most
    max_pages long (one read each)."""
    if not pages:
        return
    start = prev = pages[0]
    count = 1
    for p in pages[1:]:
        if p == prev + PAGE_SIZE and count < max_pages:
            count += 1
        else:
            yield start, count
            start, count = p, 1
        prev = p
    yield start, count
