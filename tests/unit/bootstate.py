"""Head.S-style "before" states built in Python from kernel-facts.md §4, for the
model's unit tests (no QEMU).

At pagetable_init entry a native kernel runs on swapper_pg_dir in non-PAE mode,
even in a PAE build.  head.S put page tables pg0, pg0+1, ... right after _end
(page aligned); each PTE maps phys | 0x007 counting up from 0; each pg0 page is
entered as pg0_phys | 0x007 at PDE i (identity) and i + 768 (PAGE_OFFSET).  It
keeps adding 4 MiB units while the mapped end is below the end of the tables
plus INIT_MAP_BEYOND_END, and the boot allocator starts right after the tables.

The states themselves come from harness.bootstate (which knows nothing of
harness.model: the independent description the model is tested against); this
module adds the small kernel image the unit tests use and the numbers worked
out by hand for it.
"""
from __future__ import annotations

from harness import bootstate
from harness.bootstate import CR0_BOOT, INIT_MAP_BEYOND_END  # noqa: F401 (used by tests)
from harness.elf import KernelImage
from harness.snapshot import Snapshot

PAGE_OFFSET = 0xC0000000

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


def image(**overrides: int) -> KernelImage:
    return KernelImage(symbols={**SYMBOLS, **overrides})


def head_s_state(pae_build: bool, symbols: dict[str, int] | None = None,
                 extra_pgd: dict[int, int] | None = None) -> Snapshot:
    """The tables and registers at pagetable_init entry, as head.S leaves them
    (harness.bootstate, written from the same section of the spec).

    extra_pgd: PDE index -> raw value planted on top (to model junk entries).
    """
    before = bootstate.head_s(pae_build, {**SYMBOLS, **(symbols or {})}).before
    before.tables[0].entries.update(extra_pgd or {})  # tables[0]: swapper_pg_dir
    return before
