"""Head.S-style "before" states built in Python from kernel-facts.md §4, for the
model's unit tests (no QEMU).

At pagetable_init entry a native kernel runs on swapper_pg_dir in non-PAE mode,
even in a PAE build.  head.S put page tables pg0, pg0+1, ... right after _end
(page aligned); each PTE maps phys | 0x007 counting up from 0; each pg0 page is
entered as pg0_phys | 0x007 at PDE i (identity) and i + 768 (PAGE_OFFSET).  It
keeps adding 4 MiB units while the mapped end is below the end of the tables
plus INIT_MAP_BEYOND_END, and the boot allocator starts right after the tables.

This module knows nothing of harness.model: it is the independent description
the model is tested against.
"""
from __future__ import annotations

from harness import x86
from harness.elf import KernelImage
from harness.snapshot import Snapshot
from harness.walker import TablePage

PAGE_OFFSET = 0xC0000000
INIT_MAP_BEYOND_END = {False: 0x424000, True: 0x828000}  # 2.6.22, by build (PAE?)

# A small kernel like the guest: text at 1 MiB, __init_end == bss start == swapper_pg_dir,
# the zero page after it, _end not page aligned (pg0 goes to the next page).
SYMBOLS = {
    "_text": 0xC0100000,
    "_etext": 0xC01A3456,
    "__init_end": 0xC0234000,
    "swapper_pg_dir": 0xC0234000,
    "empty_zero_page": 0xC0235000,
    "_end": 0xC02418A4,
}
SWAPPER_PA = 0x234000
ZERO_PAGE_PA = 0x235000
PG0_PA = 0x242000

# Worked from the loop above with pg0 at 0x242000:
#  non-PAE: after table 1 mapped 4M < 0x243000 + 0x424000 = 0x667000, go on;
#           after table 2 mapped 8M >= 0x244000 + 0x424000 = 0x668000, stop.
#  PAE:     8M < 0x244000 + 0x828000 = 0xA6C000, go on; 12M >= 0xA6D000, stop.
PG0_TABLES = {False: 2, True: 3}
CURSOR = {False: 0x244000, True: 0x245000}

CR0_BOOT = x86.CR0_PG | 0x11  # PG | ET | PE


def image(**overrides: int) -> KernelImage:
    return KernelImage(symbols={**SYMBOLS, **overrides})


def head_s_state(pae_build: bool, symbols: dict[str, int] | None = None,
                 extra_pgd: dict[int, int] | None = None) -> Snapshot:
    """The tables and registers at pagetable_init entry, as head.S leaves them.

    extra_pgd: PDE index -> raw value planted on top (to model junk entries).
    """
    syms = {**SYMBOLS, **(symbols or {})}
    swapper = syms["swapper_pg_dir"] - PAGE_OFFSET
    pg0 = (syms["_end"] - PAGE_OFFSET + 0xFFF) & ~0xFFF
    beyond = INIT_MAP_BEYOND_END[pae_build]

    pgd: dict[int, int] = {}
    tables: list[TablePage] = []
    n = 0
    while True:
        table = pg0 + n * 0x1000
        tables.append(TablePage("pte", table,
                                {j: ((n << 22) + (j << 12)) | 0x007 for j in range(1024)}))
        pgd[n] = table | 0x007
        pgd[n + 768] = table | 0x007
        n += 1
        tables_end = pg0 + n * 0x1000
        if (n << 22) >= tables_end + beyond:
            break
    pgd.update(extra_pgd or {})
    tables.insert(0, TablePage("pgd", swapper, pgd))
    return Snapshot(
        label="before",
        registers={"cr0": CR0_BOOT, "cr3": swapper, "cr4": 0, "efer": 0},
        tables=tables, ranges=[],
        guest={"boot_alloc_cursor": tables_end, "init_pg_tables_end": tables_end,
               "boot_alloc_start": tables_end},
    )
