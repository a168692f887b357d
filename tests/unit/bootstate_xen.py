"""Xen-like "before" states built in Python from docs/xen.md, for the model's unit
tests (no QEMU).

At pagetable_init entry under pv=xen the CPU runs on the hypervisor's start-of-day
pagetable, already in the build's paging mode (CR3 = __pa(pt_base)).  Its frames come
in one contiguous run from PAGE_ALIGN(end of head.S's pg0 tables): start-info page,
shared-info page, hypervisor PTE page A (linked at the chunk of HYPERVISOR_VIRT_START),
PTE page B (linked at the last chunk), then pt_base (the PGD, or the PDPT followed by
the one PMD page of slot 3 in PAE) and the PTE pages of the kernel mapping.  The kernel
mapping covers [0, xen_map_end) with 4 KiB pages, xen_map_end = min(nr_pages * 4096,
round_up(end of the run + 4 MiB, 4 MiB)); leaves are 0x063 except the table frames and
the start-info page (0x061).  A maps the start-info and shared-info frames from HVS,
B maps A's frame at its chunk's first page (0x061 each).

This module knows nothing of harness.model: it is the independent description the
model is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass

import bootstate as bs
from harness import x86
from harness.snapshot import Snapshot
from harness.walker import TablePage

HVS = {False: 0xFC000000, True: 0xF5800000}
RESERVE = {False: 0x04002000, True: 0x0A802000}  # -HVS + 2 pages
MAGIC = 0x584E4558  # "XENX"
CR0 = x86.CR0_PG | x86.CR0_WP | 0x11  # PG | WP | ET | PE: read-only holds in ring 0 too
M = 1 << 20


@dataclass
class XenStart:
    """The start-of-day layout and the snapshot at pagetable_init entry."""

    pae: bool
    nr_pages: int
    start_info: int  # physical frames, in run order
    shared_info: int
    pte_a: int
    pte_b: int
    pt_base: int
    pmd: int | None  # PAE: the PMD page of slot 3
    kernel_ptes: list[int]  # PTE pages of the kernel mapping, chunk 0 first
    xen_map_end: int  # physical end of the kernel mapping
    run_end: int
    before: Snapshot

    @property
    def nr_pt_frames(self) -> int:
        return (self.run_end - self.pt_base) // x86.PAGE_SIZE

    @property
    def table_frames(self) -> set[int]:
        """Frames the hypervisor built as tables (items 3-5 of docs/xen.md)."""
        own = {self.pte_a, self.pte_b, self.pt_base, *self.kernel_ptes}
        return own | ({self.pmd} if self.pmd is not None else set())

    @property
    def readonly_frames(self) -> set[int]:
        return self.table_frames | {self.start_info}

    @property
    def area_first(self) -> int:
        """First hypervisor-area index: PGD 1008 non-PAE, kernel PMD 428 PAE."""
        return (HVS[self.pae] - (0xC0000000 if self.pae else 0)) >> (21 if self.pae else 22)


def _round_up(v: int, to: int) -> int:
    return (v + to - 1) // to * to


def start_of_day(pae: bool, nr_pages: int) -> XenStart:
    run = bs.CURSOR[pae]  # end of head.S's pg0 tables, page aligned (bootstate.py)
    start_info, shared_info, pte_a, pte_b, pt_base = (run + i * 0x1000 for i in range(5))
    pmd = pt_base + 0x1000 if pae else None
    first_pte = pt_base + (0x2000 if pae else 0x1000)
    chunk = 2 * M if pae else 4 * M  # what one PTE page maps
    # xen_map_end depends on the end of the run, which depends on the number of PTE
    # pages: take the smallest count that covers the mapping it implies.
    for n in range(1, 64):
        run_end = first_pte + n * 0x1000
        xen_map_end = min(nr_pages * 0x1000, _round_up(run_end + 4 * M, 4 * M))
        if _round_up(xen_map_end, chunk) // chunk == n:
            break
    else:
        raise AssertionError("no consistent start-of-day layout")
    kernel_ptes = [first_pte + i * 0x1000 for i in range(n)]

    per_pte = 512 if pae else 1024
    readonly = {pte_a, pte_b, pt_base, start_info, *kernel_ptes} | ({pmd} if pae else set())
    tables: list[TablePage] = []
    pde: dict[int, int] = {}  # the entries of the table that holds the PTE pages
    for i, page in enumerate(kernel_ptes):
        entries = {}
        for j in range(per_pte):
            pa = (i * per_pte + j) * 0x1000
            if pa >= xen_map_end:
                break
            entries[j] = pa | (0x061 if pa in readonly else 0x063)
        tables.append(TablePage("pte", page, entries))
        pde[(0 if pae else 768) + i] = page | 0x067
    first_area = (HVS[pae] - (0xC0000000 if pae else 0)) >> (21 if pae else 22)
    pde[first_area] = pte_a | 0x067
    pde[(512 if pae else 1024) - 1] = pte_b | 0x067
    tables.append(TablePage("pte", pte_a, {0: start_info | 0x061, 1: shared_info | 0x061}))
    tables.append(TablePage("pte", pte_b, {0: pte_a | 0x061}))
    if pae:
        tables.insert(0, TablePage("pmd", pmd, pde))
        tables.insert(0, TablePage("pgd", pt_base, {3: pmd | 0x001}))
    else:
        tables.insert(0, TablePage("pgd", pt_base, pde))

    info = {"magic": MAGIC, "nr_pages": nr_pages, "shared_info": shared_info,
            "pt_base": 0xC0000000 + pt_base, "nr_pt_frames": (run_end - pt_base) // 0x1000,
            "hypervisor_virt_start": HVS[pae], "reserve_top": RESERVE[pae], "flags": 0}
    before = Snapshot(
        label="before",
        registers={"cr0": CR0, "cr3": pt_base, "cr4": x86.CR4_PAE if pae else 0, "efer": 0},
        tables=tables, ranges=[],
        guest={"boot_alloc_cursor": run_end, "init_pg_tables_end": run_end,
               "boot_alloc_start": run_end, "start_info": info})
    return XenStart(pae=pae, nr_pages=nr_pages, start_info=start_info,
                    shared_info=shared_info, pte_a=pte_a, pte_b=pte_b, pt_base=pt_base,
                    pmd=pmd, kernel_ptes=kernel_ptes, xen_map_end=xen_map_end,
                    run_end=run_end, before=before)
