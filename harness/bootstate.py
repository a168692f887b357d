"""The state at pagetable_init entry as the spec describes it, built from the
text alone: head.S of 2.6.22 natively (kernel-facts.md §4), the hypervisor's
start-of-day pagetable under pv=xen (docs/xen.md), and the `poison=` knob's
pattern where docs/guest-contract.md puts it.

The boot check layer holds the guest's "before" snapshot to these states, and
the model can start from them instead of the snapshot, so that a wrong boot
stage is no longer absorbed into the prediction. Knows nothing of harness.model:
it is also the independent description the model's unit tests start from.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import x86
from .snapshot import Snapshot
from .walker import TablePage

INIT_MAP_BEYOND_END = {False: 0x424000, True: 0x828000}  # 2.6.22, by build (PAE?)
BOOT_FLAGS = 0x007           # head.S's PTEs and PDEs: present, rw, user
PDPT_BYTES = 32              # the in-place PDPT of a PAE build: never poisoned
CR0_BOOT = x86.CR0_PG | 0x11  # PG | ET | PE

XEN_HVS = {False: 0xFC000000, True: 0xF5800000}       # HYPERVISOR_VIRT_START
XEN_RESERVE = {False: 0x04002000, True: 0x0A802000}   # -HVS + 2 pages
XEN_MAGIC = 0x584E4558  # "XENX"
XEN_CR0 = x86.CR0_PG | x86.CR0_WP | 0x11  # read-only holds in ring 0 too
XEN_TABLE, XEN_RW, XEN_RO = 0x067, 0x063, 0x061
MiB = 1 << 20


def _round_up(v: int, to: int) -> int:
    return (v + to - 1) // to * to


@dataclass(frozen=True)
class HeadS:
    """What head.S leaves behind natively."""

    pae_build: bool
    swapper: int        # physical addresses
    pg0: int
    pg0_pages: int
    tables_end: int     # init_pg_tables_end: the boot allocator starts here
    map_end: int        # init_map_end: identity and PAGE_OFFSET mappings end here
    poisoned_entries: int
    before: Snapshot


def head_s(pae_build: bool, symbols: dict[str, int], poison: int | None = None) -> HeadS:
    """head.S's boot tables: pg0 pages right after _end (page aligned), each PTE
    phys | 0x007 counting up from 0, each page entered at PDE i and 768 + i,
    whole 4 MiB units until the tables plus INIT_MAP_BEYOND_END are covered.
    The tables are non-PAE even in a PAE build."""
    swapper = symbols["swapper_pg_dir"] - x86.PAGE_OFFSET
    pg0 = _round_up(symbols["_end"] - x86.PAGE_OFFSET, x86.PAGE_SIZE)
    beyond = INIT_MAP_BEYOND_END[pae_build]
    kernel_pde = x86.PAGE_OFFSET >> 22
    pgd: dict[int, int] = {}
    tables: list[TablePage] = []
    n = 0
    while True:
        table = pg0 + n * x86.PAGE_SIZE
        tables.append(TablePage("pte", table, {j: ((n << 22) + (j << 12)) | BOOT_FLAGS
                                               for j in range(1024)}))
        pgd[n] = pgd[kernel_pde + n] = table | BOOT_FLAGS
        n += 1
        tables_end = pg0 + n * x86.PAGE_SIZE
        if (n << 22) >= tables_end + beyond:
            break
    poisoned = 0
    if poison is not None:
        # Every zero word of swapper_pg_dir past the PDPT's bytes (guest-contract.md).
        for i in range(PDPT_BYTES // 4, 1024):
            if i not in pgd:
                pgd[i] = poison
                poisoned += 1
    tables.insert(0, TablePage("pgd", swapper, pgd))
    before = Snapshot(
        label="before", registers={"cr0": CR0_BOOT, "cr3": swapper, "cr4": 0, "efer": 0},
        tables=tables, ranges=[],
        guest={"boot_alloc_cursor": tables_end, "init_pg_tables_end": tables_end,
               "boot_alloc_start": tables_end, "init_map_end": n << 22})
    return HeadS(pae_build=pae_build, swapper=swapper, pg0=pg0, pg0_pages=n,
                 tables_end=tables_end, map_end=n << 22, poisoned_entries=poisoned,
                 before=before)


@dataclass(frozen=True)
class XenStart:
    """The hypervisor's start-of-day layout (docs/xen.md) and the snapshot at
    pagetable_init entry."""

    pae: bool
    nr_pages: int
    start_info: int     # physical frames, in run order
    shared_info: int
    pte_a: int
    pte_b: int
    pt_base: int
    pmd: int | None     # PAE: the PMD page of slot 3
    kernel_ptes: list[int]  # PTE pages of the kernel mapping, chunk 0 first
    xen_map_end: int    # physical end of the kernel mapping
    run_end: int
    poisoned_entries: int
    before: Snapshot
    hyp_frames: tuple[int, int] = (0, 0)  # the hypervisor's own pages, physical [start, end)

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
        """Mapped 0x061: the table frames, the start info, the hypervisor's own pages."""
        own = range(self.hyp_frames[0], self.hyp_frames[1], x86.PAGE_SIZE)
        return self.table_frames | {self.start_info} | set(own)

    @property
    def area_first(self) -> int:
        """First hypervisor-area index: PGD 1008 non-PAE, kernel PMD 428 PAE."""
        return xen_area_first(self.pae)

    @property
    def start_info_fields(self) -> dict[str, int]:
        return self.before.guest["start_info"]


def xen_area_first(pae: bool) -> int:
    return (XEN_HVS[pae] - (x86.PAGE_OFFSET if pae else 0)) >> (21 if pae else 22)


def xen_hyp_frames(symbols: dict[str, int]) -> tuple[int, int]:
    """The hypervisor stage's own pages, physical [start, end), from the image's
    __hyp_start/__hyp_end (kernel.lds); (0, 0) for an image without them."""
    if "__hyp_start" not in symbols or "__hyp_end" not in symbols:
        return 0, 0
    return (symbols["__hyp_start"] - x86.PAGE_OFFSET,
            _round_up(symbols["__hyp_end"] - x86.PAGE_OFFSET, x86.PAGE_SIZE))


def _xen_run(pae: bool, nr_pages: int, run_start: int) -> tuple[list[int], int, int]:
    """The run's frames before the kernel PTE pages (start info, shared info, A, B,
    pt_base[, PMD]), the kernel PTE pages' count and xen_map_end. The run's end
    depends on the number of PTE pages, which depends on the mapping's end: the
    least fixed point, counting up from none."""
    fixed = [run_start + i * x86.PAGE_SIZE for i in range(6 if pae else 5)]
    first_pte = fixed[-1] + x86.PAGE_SIZE
    chunk = 2 * MiB if pae else 4 * MiB  # what one PTE page maps
    n = 0
    while True:
        run_end = first_pte + n * x86.PAGE_SIZE
        xen_map_end = min(nr_pages * x86.PAGE_SIZE, _round_up(run_end + 4 * MiB, 4 * MiB))
        need = _round_up(xen_map_end, chunk) // chunk
        if need == n:
            return fixed, n, xen_map_end
        n = need


def _xen_kernel_ptes(pae: bool, kernel_ptes: list[int], xen_map_end: int, readonly,
                     poison: int | None) -> tuple[list[TablePage], dict[int, int], int]:
    """The PTE pages of the kernel mapping, the directory entries linking them and
    how many entries poison= filled."""
    per_pte = 512 if pae else 1024
    tables, pde, poisoned = [], {}, 0
    for i, page in enumerate(kernel_ptes):
        entries = {}
        for j in range(per_pte):
            pa = (i * per_pte + j) * x86.PAGE_SIZE
            if pa < xen_map_end:
                entries[j] = pa | (XEN_RO if readonly(pa) else XEN_RW)
            elif poison is not None:
                entries[j] = poison
                poisoned += 1
        tables.append(TablePage("pte", page, entries))
        pde[(0 if pae else x86.PAGE_OFFSET >> 22) + i] = page | XEN_TABLE
    return tables, pde, poisoned


def xen_start_of_day(pae: bool, nr_pages: int, run_start: int, poison: int | None = None,
                     hyp_frames: tuple[int, int] = (0, 0)) -> XenStart:
    """The frames come in one run from run_start (PAGE_ALIGN of the end of head.S's
    pg0 tables): start info, shared info, PTE pages A and B, pt_base (PGD, or PDPT
    then the slot-3 PMD page), the PTE pages of the kernel mapping. That mapping
    covers [0, xen_map_end), xen_map_end = min(RAM, round_up(run end + 4 MiB, 4 MiB)),
    with 4 KiB pages: 0x063, 0x061 for table frames, the start info and the
    hypervisor's own pages (hyp_frames: xen_hyp_frames of the image)."""
    fixed, n, xen_map_end = _xen_run(pae, nr_pages, run_start)
    start_info, shared_info, pte_a, pte_b, pt_base = fixed[:5]
    pmd = fixed[5] if pae else None
    first_pte = fixed[-1] + x86.PAGE_SIZE
    kernel_ptes = [first_pte + i * x86.PAGE_SIZE for i in range(n)]
    run_end = first_pte + n * x86.PAGE_SIZE
    tables_ro = set(fixed[2:]) | set(kernel_ptes) | {start_info}
    tables, pde, poisoned = _xen_kernel_ptes(
        pae, kernel_ptes, xen_map_end,
        lambda pa: pa in tables_ro or hyp_frames[0] <= pa < hyp_frames[1], poison)
    first_area, per_pte = xen_area_first(pae), 512 if pae else 1024
    if poison is not None:
        # Non-present entries below the hypervisor's area (guest-contract.md).
        for i in (i for i in range(first_area) if i not in pde):
            pde[i] = poison
            poisoned += 1
    pde[first_area] = pte_a | XEN_TABLE
    pde[per_pte - 1] = pte_b | XEN_TABLE  # the last chunk
    tables.append(TablePage("pte", pte_a, {0: start_info | XEN_RO, 1: shared_info | XEN_RO}))
    tables.append(TablePage("pte", pte_b, {0: pte_a | XEN_RO}))
    if pae:
        tables[:0] = [TablePage("pgd", pt_base, {3: pmd | x86.PRESENT}), TablePage("pmd", pmd, pde)]
    else:
        tables.insert(0, TablePage("pgd", pt_base, pde))
    return XenStart(pae=pae, nr_pages=nr_pages, start_info=start_info, shared_info=shared_info,
                    pte_a=pte_a, pte_b=pte_b, pt_base=pt_base, pmd=pmd, kernel_ptes=kernel_ptes,
                    xen_map_end=xen_map_end, run_end=run_end, poisoned_entries=poisoned,
                    hyp_frames=hyp_frames,
                    before=_xen_before(pae, nr_pages, tables, pt_base, run_end, xen_map_end,
                                       shared_info))


def _xen_before(pae: bool, nr_pages: int, tables: list[TablePage], pt_base: int, run_end: int,
                xen_map_end: int, shared_info: int) -> Snapshot:
    info = {"magic": XEN_MAGIC, "nr_pages": nr_pages, "shared_info": shared_info,
            "pt_base": x86.PAGE_OFFSET + pt_base, "nr_pt_frames": (run_end - pt_base) // x86.PAGE_SIZE,
            "hypervisor_virt_start": XEN_HVS[pae], "reserve_top": XEN_RESERVE[pae], "flags": 0}
    return Snapshot(
        label="before",
        registers={"cr0": XEN_CR0, "cr3": pt_base, "cr4": x86.CR4_PAE if pae else 0, "efer": 0},
        tables=tables, ranges=[],
        guest={"boot_alloc_cursor": run_end, "init_pg_tables_end": run_end,
               "boot_alloc_start": run_end, "init_map_end": xen_map_end, "start_info": info})
