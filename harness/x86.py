"""x86-32 paging vocabulary shared by every layer: entry bits, control-register
bits and the geometry of the two paging modes.

Values are from the Intel SDM vol. 3A ch. 4 and Linux 2.6.22's include/asm-i386
headers (see shared/spec/kernel-facts.md).  Nothing here knows about gdb, QEMU
or the guest, so any layer may import it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

PAGE_SIZE = 0x1000
PAGE_SHIFT = 12
PAGE_OFFSET = 0xC0000000

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


TWO_LEVEL = Geometry(
    name="2-level",
    entry_size=4,
    pgdir_shift=22,
    ptrs_per_pgd=1024,
    pmd_shift=22,
    ptrs_per_pmd=1,
    ptrs_per_pte=1024,
    levels=("pgd", "pte"),
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
