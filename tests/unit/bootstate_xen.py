"""Xen-like "before" states built in Python from docs/xen.md, for the model's unit
tests (no QEMU).

At pagetable_init entry under pv=xen the CPU runs on the hypervisor's start-of-day
pagetable, already in the build's paging mode (CR3 = __pa(pt_base)).  Its frames come
in one contiguous run from PAGE_ALIGN(end of head.S's pg0 tables): start-info page,
shared-info page, hypervisor PTE page A (linked at the chunk of HYPERVISOR_VIRT_START),
PTE page B (linked at the last chunk), then pt_base (the PGD, or the PDPT followed by
the one PMD page of slot 3 in PAE) and the PTE pages of the kernel mapping.  The kernel
mapping covers [0, xen_map_end) with 4 KiB pages, xen_map_end = min(nr_pages * 4096,
round_up(end of the run + 4 MiB, 4 MiB)); leaves are 0x063 except the table frames,
the start-info page and the hypervisor's own pages [__hyp_start, __hyp_end) (0x061).  A maps the start-info and shared-info frames from HVS,
B maps A's frame at its chunk's first page (0x061 each).

The layout itself is harness.bootstate.xen_start_of_day (which knows nothing of
harness.model: the independent description the model is tested against).
"""
from __future__ import annotations

import bootstate as bs
from harness import bootstate
from harness.bootstate import XenStart  # noqa: F401 (used by tests)

HVS = bootstate.XEN_HVS
RESERVE = bootstate.XEN_RESERVE
MAGIC = bootstate.XEN_MAGIC
CR0 = bootstate.XEN_CR0
M = 1 << 20


# The hypervisor stage's own pages in the unit tests' image (kernel.lds puts them at
# the end of the bss, page aligned): mapped read-only like the tables.
HYP_SYMBOLS = {"__hyp_start": 0xC023C000, "__hyp_end": 0xC0241000}
HYP_FRAMES = (0x23C000, 0x241000)


def image():
    """The unit tests' kernel image with the hypervisor's section."""
    return bs.image(**HYP_SYMBOLS)


def start_of_day(pae: bool, nr_pages: int, poison: int | None = None) -> XenStart:
    """The layout for the unit tests' kernel image: the run starts right after
    head.S's pg0 tables (bootstate.CURSOR)."""
    return bootstate.xen_start_of_day(pae, nr_pages, bs.CURSOR[pae], poison,
                                      bootstate.xen_hyp_frames(HYP_SYMBOLS))
