"""Reference model: what Linux's i386 pagetable_init must leave in memory.

The patched algorithm (2.6.22, the `+` lines of the seed patch) and the
pre-patch one (2.6.21, the `-` lines) run here in Python over a simulated
physical memory, starting from the "before" snapshot taken at the entry of
pagetable_init.  The prediction is the final registers, every table page,
every page the boot allocator hands out (in order) and the paravirt hook log.

Two paravirt backends: native (bare hardware) and the Xen-like one of
docs/xen.md, whose hypervisor side (which frames are tables, the refused
update) is simulated as far as it changes the outcome.

Written from shared/spec/kernel-facts.md and the seed patch only, never from
the guest, so that a misreading on either side shows up as a mismatch.  The
functions carry the kernel's names and the pre/post-patch differences sit at
the exact places the patch changes, each marked "pre-patch:".

Accessed/Dirty are not predicted beyond what the algorithm writes; the checks
treat them as "may be set".
"""
from __future__ import annotations

import struct

from dataclasses import dataclass, field
from typing import Callable, Protocol

from . import bootstate, fixmap, records, x86
from .elf import ElfError, KernelImage
from .snapshot import Snapshot
from .walker import CpuState, ImageMemory

MASK32 = 0xFFFF_FFFF
PAGE_MASK = MASK32 & ~(x86.PAGE_SIZE - 1)  # an unsigned long: drops bits 32-63 of PAE entries
VMALLOC_RESERVE_DEFAULT = 128 << 20

# Paravirt hook log ops (docs/guest-contract.md).
HOOK_ALLOC_PD = 1
HOOK_ALLOC_PT = 2
HOOK_PIN = 3
HOOK_ALLOC_PD_CLONE = 4  # pgd_alloc's paravirt_alloc_pd_clone (non-PAE)

# The Xen-like case (docs/xen.md), by build (PAE?).
XEN_HYPERVISOR_VIRT_START = {False: 0xFC000000, True: 0xF5800000}
XEN_START_INFO_MAGIC = 0x584E4558  # "XENX"
XEN_START_INFO_FIELDS = records.START_INFO_FIELDS  # the contract's layout, one place

# Kernel-side mutants of the Xen-like backend (KernelConfig.pvbug, docs/model.md):
#   writable-pt     alloc_pt skips "make read-only" for the first PTE page it is given
#   writable-root   setup_start skips "make base (swapper_pg_dir) read-only"
#   unannounced-pt  alloc_pt skips hyp_announce for the first PTE page it is given
#   batch-hv-write  the first setup-time set_pte also writes its value to entry 2 of
#                   hypervisor PTE page A (the entry covering HYPERVISOR_VIRT_START + 2 pages)
PVBUGS = ("writable-pt", "writable-root", "unannounced-pt", "batch-hv-write")

# Hypervisor audit kinds (docs/xen.md, violation record).
WRITABLE_TABLE = 1
HYP_AREA_WRITE = 2
UNANNOUNCED_TABLE = 3
KERNEL_PMD_REPLACED = 4
VIOLATION_NAMES = {WRITABLE_TABLE: "WRITABLE_TABLE", HYP_AREA_WRITE: "HYP_AREA_WRITE",
                   UNANNOUNCED_TABLE: "UNANNOUNCED_TABLE",
                   KERNEL_PMD_REPLACED: "KERNEL_PMD_REPLACED"}


def xen_reserve(pae: bool) -> int:
    """What the Xen-like start reserves at the top: -HYPERVISOR_VIRT_START + 2 pages."""
    return (-XEN_HYPERVISOR_VIRT_START[pae] + 2 * x86.PAGE_SIZE) & MASK32


# Layout symbols the model needs from the guest ELF.
REQUIRED_SYMBOLS = ("swapper_pg_dir", "empty_zero_page", "_text", "_etext", "__init_end", "_end")


class ModelError(Exception):
    """The model cannot predict this run: bad or unsupported input, or a state
    in which the kernel itself could not go on."""


class WildTablePointer(ModelError):
    """The kernel would access a table through a pointer derived from a bogus
    entry (pre-patch pmd_none keeps non-present junk): on hardware, a fault."""


class KernelBug(ModelError):
    """The kernel's own BUG() check would fire: the run ends there (the guest
    prints "BUG at ..." and exits with the self-check code)."""


def virt_to_phys(va: int) -> int:
    """__pa(): lowmem virtual to physical."""
    return (va - x86.PAGE_OFFSET) & MASK32


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelConfig:
    """One scenario as the kernel sees it: the build, the CPU (QEMU's -cpu flags; the
    Xen-like backend's CPUID masking is applied by the model), the memory the firmware
    reports and the command-line knobs."""

    pae: bool  # CONFIG_X86_PAE
    prepatch: bool  # the `-` lines of the seed patch
    cpu_pse: bool
    cpu_pge: bool
    cpu_pae: bool
    cpu_nx: bool
    ram_bytes: int  # RAM the kernel is told about (the firmware's multiboot report)
    pv: str = "native"
    mem_limit: int | None = None  # mem=, bytes
    reservetop: int = 0  # reservetop=, bytes
    noexec_off: bool = False  # noexec=off
    fixmap_entries: int = fixmap.END  # __end_of_fixed_addresses
    pvbug: str | None = None  # pv=xen only: one of PVBUGS, a mutant of the Xen-like backend

    def __post_init__(self) -> None:
        if self.ram_bytes <= 0:
            raise ModelError(f"ram_bytes must be positive, got {self.ram_bytes}")
        if self.mem_limit is not None and self.mem_limit <= 0:
            raise ModelError(f"mem_limit must be positive or None, got {self.mem_limit}")
        if not 0 <= self.reservetop < (1 << 32) - x86.PAGE_OFFSET - VMALLOC_RESERVE_DEFAULT:
            raise ModelError(f"reservetop={self.reservetop:#x} leaves no room for lowmem"
                             " (MAXMEM would not be positive)")
        if not 1 <= self.fixmap_entries <= 1024:
            raise ModelError(f"fixmap_entries must be in 1..1024, got {self.fixmap_entries}")
        if self.pv == "xen" and self.reservetop:
            raise ModelError("reservetop= is not allowed with pv=xen (the guest exits with"
                             " code 4): Xen sets the top of the address space itself")
        if self.pvbug is not None:
            if self.pv != "xen":
                raise ModelError(f"pvbug={self.pvbug} needs pv=xen (the guest exits with"
                                 " code 4)")
            if self.pvbug not in PVBUGS:
                raise ModelError(f"unknown pvbug={self.pvbug!r}; known: {', '.join(PVBUGS)}")

    # CPUID as the kernel sees it: Xen hides PSE and PGE from PV guests (docs/xen.md).
    @property
    def kernel_pse(self) -> bool:
        return self.cpu_pse and self.pv != "xen"

    @property
    def kernel_pge(self) -> bool:
        return self.cpu_pge and self.pv != "xen"

    @property
    def reserve(self) -> int:
        """reserve_top_address(): reservetop= natively, the hypervisor's area under Xen."""
        return xen_reserve(self.pae) if self.pv == "xen" else self.reservetop


@dataclass(frozen=True)
class Layout:
    """Every number the configuration and the image fix before any table is built.
    The checks state their invariants with these."""

    geometry: x86.Geometry
    max_pfn: int
    max_low_pfn: int
    vmalloc_reserve: int
    maxmem: int
    fixaddr_top: int
    fixaddr_boot_start: int
    fixmap_start: int  # start of the fixmap page_table_range_init (PMD aligned)
    fixmap_end: int  # its end as the variant passes it (0 = up to the 32-bit wrap)
    pkmap_base: int
    pkmap_end: int
    nx_active: bool
    supported_pte_mask: int
    prot_kernel: int  # 4 KiB leaf protection of non-text lowmem, as written (NX masked)
    prot_kernel_exec: int  # same for kernel "text" (PAGE_OFFSET..__init_end inclusive)
    swapper_pg_dir: int  # physical
    empty_zero_page: int  # physical
    init_end: int  # virtual __init_end, the inclusive end of is_kernel_text
    hypervisor_virt_start: int = 0  # pv=xen: where the hypervisor's area starts (else 0)
    # pv=xen: the hypervisor stage's own pages, physical [start, end) from the image's
    # __hyp_start/__hyp_end (docs/xen.md); (0, 0) natively or without them
    hyp_frames: tuple[int, int] = (0, 0)

    def fix_to_virt(self, idx: int) -> int:
        return (self.fixaddr_top - (idx << x86.PAGE_SHIFT)) & MASK32

    def is_kernel_text(self, addr: int) -> bool:
        # Inclusive of __init_end and starting at PAGE_OFFSET, not _text (kernel-facts §3).
        return x86.PAGE_OFFSET <= addr <= self.init_end


def compute_layout(config: KernelConfig, image: KernelImage,
                   nr_pages: int | None = None) -> Layout:
    """nr_pages: under pv=xen, the start-info's page count (max_pfn comes from it;
    without it, from ram_bytes, which the contract makes equal)."""
    g = x86.geometry(config.pae)
    syms = {}
    for name in REQUIRED_SYMBOLS:
        try:
            syms[name] = image.symbol(name)
        except ElfError as e:
            raise ModelError(f"kernel image lacks a layout symbol: {e}") from None

    xen = config.pv == "xen"
    if xen and nr_pages is not None:
        max_pfn = nr_pages  # xen_start_kernel: max_pfn from the start info
    else:
        max_pfn = config.ram_bytes >> x86.PAGE_SHIFT
    if config.mem_limit is not None:
        max_pfn = min(max_pfn, config.mem_limit >> x86.PAGE_SHIFT)  # mem= caps max_pfn
    reserve = config.reserve
    vmalloc_reserve = VMALLOC_RESERVE_DEFAULT + reserve  # reserve_top_address()
    maxmem = (1 << 32) - x86.PAGE_OFFSET - vmalloc_reserve
    max_low_pfn = min(max_pfn, maxmem >> x86.PAGE_SHIFT)

    fixaddr_top = (-reserve - x86.PAGE_SIZE) & MASK32
    fixaddr_boot_start = (fixaddr_top - (config.fixmap_entries << x86.PAGE_SHIFT)) & MASK32
    last_fix = (fixaddr_top - ((config.fixmap_entries - 1) << x86.PAGE_SHIFT)) & MASK32
    fixmap_start = last_fix & g.pmd_mask
    # Patched: the explicit end; with the default top it wraps to 0 like the pre-patch call.
    fixmap_end = 0 if config.prepatch else (fixaddr_top + g.pmd_size - 1) & g.pmd_mask & MASK32
    pkmap_base = (fixaddr_boot_start - x86.PAGE_SIZE * (g.last_pkmap + 1)) & g.pmd_mask
    pkmap_end = pkmap_base + x86.PAGE_SIZE * g.last_pkmap

    nx_active = config.pae and config.cpu_nx and not config.noexec_off
    if config.pae:
        supported = (1 << 64) - 1 if nx_active else ((1 << 64) - 1) & ~x86.NX
    else:
        supported = MASK32  # the 2-level builders apply no mask
    glob = x86.GLOBAL if config.kernel_pge else 0
    kernel = x86.PAGE_KERNEL_EXEC | glob | (x86.NX if config.pae else 0)
    return Layout(
        geometry=g, max_pfn=max_pfn, max_low_pfn=max_low_pfn, vmalloc_reserve=vmalloc_reserve,
        maxmem=maxmem, fixaddr_top=fixaddr_top, fixaddr_boot_start=fixaddr_boot_start,
        fixmap_start=fixmap_start, fixmap_end=fixmap_end, pkmap_base=pkmap_base,
        pkmap_end=pkmap_end, nx_active=nx_active, supported_pte_mask=supported,
        prot_kernel=kernel & supported, prot_kernel_exec=(x86.PAGE_KERNEL_EXEC | glob),
        swapper_pg_dir=virt_to_phys(syms["swapper_pg_dir"]),
        empty_zero_page=virt_to_phys(syms["empty_zero_page"]),
        init_end=syms["__init_end"],
        hypervisor_virt_start=XEN_HYPERVISOR_VIRT_START[config.pae] if xen else 0,
        hyp_frames=bootstate.xen_hyp_frames(image.symbols) if xen else (0, 0))


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Violation:
    """One finding of the Xen-like hypervisor's audit (docs/xen.md), as the model's
    hypervisor would flag it.  A correct run has none; in pvbug scenarios the
    harness compares the guest's record with them exactly.  frame_pa is the physical
    address of the frame concerned (the table frame mapped writable, the unannounced
    target, the PMD page refused, or the table page written in the hypervisor's
    area)."""

    kind: int
    entry_pa: int  # the entry written (0 for pin-time findings of kind 1)
    value: int  # the value written (or found)
    frame_pa: int
    va: int  # the VA the entry covers (0 if unknown)

    def __str__(self) -> str:
        return (f"{VIOLATION_NAMES.get(self.kind, self.kind)}: entry {self.entry_pa:#x} ="
                f" {self.value:#x}, frame {self.frame_pa:#x}, va {self.va:#x}")


@dataclass
class Prediction:
    """What paging_init must leave behind.

    memory holds every table page (the before pages, the allocated ones and, natively
    in PAE, the zero page used as user PMD); allocations are physical addresses in
    hand-out order; hook_log is (op, pfn) pairs in call order; roles says what
    each allocated page became (for messages).  Under pv=xen, hypervisor_tables
    is every frame the hypervisor knows as a table at the end (physical address ->
    "pdpt", "pgd", "pmd" or "pte") and hypervisor_flags what its audit would flag.
    """

    config: KernelConfig
    layout: Layout
    cpu: CpuState
    memory: ImageMemory
    allocations: list[int]
    hook_log: list[tuple[int, int]]
    cursor_after: int
    roles: dict[int, str] = field(default_factory=dict)
    direct_map_end_pfn: int = 0  # where kernel_physical_mapping_init stopped (PSE may overshoot)
    pkmap_page_table: int = 0  # physical address of the pkmap PTE page
    hypervisor_tables: dict[int, str] = field(default_factory=dict)
    hypervisor_flags: list[Violation] = field(default_factory=list)
    # pv=xen: hyp_mmu_update calls received (refused ones and each entry of a batch
    # included); 0 natively
    mmu_updates: int = 0
    pins: int = 0  # pv=xen: hyp_pin calls; 0 natively
    bug: str = ""  # the kernel's own BUG() fires: the state is where it stopped

    @property
    def entry_size(self) -> int:
        return self.layout.geometry.entry_size


@dataclass
class WorkPrediction:
    """The tables at work_done, predicted from the state at paging_init_done:
    the kernel mapped the local APIC (natively), zapped the low mappings of
    swapper_pg_dir, built a second pagetable with pgd_alloc, switched CR3 to it,
    then set a fixmap slot and a kmap that both pagetables must see
    (kernel-facts §8-9)."""

    memory: ImageMemory
    cpu: CpuState                 # CR3 on the second pagetable
    swapper_cpu: CpuState         # the same registers, CR3 on swapper_pg_dir
    pgd2_root: int
    allocations: list[int]        # the work phase's, in hand-out order
    hook_log: list[tuple[int, int]]  # the whole log: pagetable_init's, then the work phase's
    roles: dict[int, str]
    fix_va: int                   # the late fixmap slot and the frame it maps
    fix_pa: int
    kmap_va: int                  # the kmap of the first highmem page (0: no highmem)
    kmap_pa: int
    mmu_updates: int = 0          # pv=xen: the work phase's hypercalls
    pins: int = 0
    hypervisor_flags: list[Violation] = field(default_factory=list)  # the work phase's


# ---------------------------------------------------------------------------------------------
# Paravirt backends
# ---------------------------------------------------------------------------------------------
class ParavirtBackend(Protocol):
    """The paravirt_ops the page-table code goes through. The hook log is kept by
    the caller (Kernel.paravirt_alloc_*); a backend logs only its own extra ops.
    Optional: set_ptes(k, addr, values), a run of set_pte in one page taken at once
    (the same effects as one set_pte each); without it Kernel.set_ptes loops."""

    name: str

    def check_entry_state(self, k: "Kernel", before: Snapshot) -> None: ...
    def pagetable_setup_start(self, k: "Kernel", base: int) -> None: ...
    def pagetable_setup_done(self, k: "Kernel", base: int) -> None: ...
    def alloc_pd(self, k: "Kernel", pfn: int) -> None: ...
    def alloc_pt(self, k: "Kernel", pfn: int) -> None: ...
    def set_pgd(self, k: "Kernel", addr: int, val: int) -> None: ...
    def set_pmd(self, k: "Kernel", addr: int, val: int) -> None: ...
    def set_pte(self, k: "Kernel", addr: int, val: int) -> None: ...
    def check_kernel_write(self, k: "Kernel", pa: int, what: str) -> None: ...
    def hypervisor_tables(self) -> dict[int, str]: ...
    def hypervisor_flags(self) -> list[Violation]: ...
    def hypercall_counts(self) -> tuple[int, int]: ...


class NativeBackend:
    """Bare hardware: plain stores, no-op allocation hooks, the mm code's own
    native_pagetable_setup_start/done.  The pre-patch build calls its hooks at the
    same two points (docs/xen.md); there they hold 2.6.21's inline code."""

    name = "native"
    shared_kernel_pmd = True  # SHARED_KERNEL_PMD: a new pgd links swapper's kernel PMD page

    def check_entry_state(self, k: "Kernel", before: Snapshot) -> None:
        cpu = before.cpu
        if not cpu.paging:
            raise ModelError("before-state: paging is off (CR0.PG=0); head.S enables it"
                             " before pagetable_init")
        if cpu.pae:
            raise ModelError("before-state: CR4.PAE already set; natively head.S runs"
                             " non-PAE even in a PAE build")
        if cpu.cr3 & PAGE_MASK != k.layout.swapper_pg_dir:
            raise ModelError(f"before-state: CR3={cpu.cr3:#x}, expected __pa(swapper_pg_dir)"
                             f"={k.layout.swapper_pg_dir:#x}")

    def pagetable_setup_start(self, k: "Kernel", base: int) -> None:
        if k.prepatch:
            k.prepatch_pagetable_setup(base)
        else:
            k.native_pagetable_setup_start(base)
        if k.g.ptrs_per_pmd > 1:
            k.mem.page(k.layout.empty_zero_page)  # the user PMD of PDPT slots 1..2: all zero

    def pagetable_setup_done(self, k: "Kernel", base: int) -> None:
        # pre-patch: 2.6.21's inline low identity slot at the end of pagetable_init is
        # the very same store.
        k.native_pagetable_setup_done(base)

    def alloc_pd(self, k: "Kernel", pfn: int) -> None:
        pass

    def alloc_pt(self, k: "Kernel", pfn: int) -> None:
        pass

    def alloc_pd_clone(self, k: "Kernel", pfn: int) -> None:
        pass

    def activate_mm(self, k: "Kernel", pgd: int) -> None:
        k.load_cr3(pgd)

    def set_pgd(self, k: "Kernel", addr: int, val: int) -> None:
        k.store(addr, val)

    def set_pmd(self, k: "Kernel", addr: int, val: int) -> None:
        k.store(addr, val)

    def set_pte(self, k: "Kernel", addr: int, val: int) -> None:
        k.store(addr, val)

    def set_ptes(self, k: "Kernel", addr: int, values: list[int]) -> None:
        k.write_run(addr, values)  # plain stores: one slice

    def check_kernel_write(self, k: "Kernel", pa: int, what: str) -> None:
        pass  # head.S maps INIT_MAP_BEYOND_END past the tables: boot pages are reachable

    def hypervisor_tables(self) -> dict[int, str]:
        return {}

    def hypervisor_flags(self) -> list[Violation]:
        return []

    def hypercall_counts(self) -> tuple[int, int]:
        return 0, 0  # (hyp_mmu_update, hyp_pin): no hypervisor


_SPAN = {"pdpt": 1 << 30, "pgd": 1 << 22, "pmd": 1 << 21, "pte": x86.PAGE_SIZE}


class XenHypervisor:
    """The hypervisor stage of docs/xen.md, as far as the outcome depends on it.

    It knows which frames are tables (its own start-of-day tree plus every announced
    frame), performs hyp_mmu_update -- refusing a PDPT slot update that would drop
    its own PMD entries (kind 4), performing everything else -- and records what
    its audit would flag.  It reads memory directly, not through the kernel's
    __va(), so it is not limited to lowmem."""

    def __init__(self, k: "Kernel"):
        self.k = k
        self.pae = k.g.ptrs_per_pmd > 1
        self.hvs = XEN_HYPERVISOR_VIRT_START[self.pae]
        self.tables: dict[int, str] = {}  # frame -> level
        self.va_base: dict[int, int] = {}  # frame -> first VA it covers, where known
        self.flags: list[Violation] = []
        self.roots: set[int] = set()
        self.validated: set[int] = set()  # frames an earlier pin checked (not checked again)
        self.own = k.layout.hyp_frames  # its own pages: no RW leaf may map them either
        self.mmu_updates = 0  # hyp_mmu_update calls received, performed or refused
        self.pins = 0  # hyp_pin calls
        root = k.cr3 & PAGE_MASK
        self._learn_tree(root)
        # The entries covering VA >= HVS, as built: PGD 1008..1023 / kernel PMD 428..511.
        if self.pae:
            slot = k.peek(root + (self.hvs >> 30) * 8)
            if not slot & x86.PRESENT:
                raise ModelError(f"before-state: the hypervisor's PDPT at {root:#x} has no"
                                 f" PMD for slot {self.hvs >> 30} (the kernel's and its own)")
            self.area_table = slot & PAGE_MASK
            self.area_first = k.g.pmd_index(self.hvs)
            self.area_count = k.g.ptrs_per_pmd
        else:
            self.area_table = root
            self.area_first = k.g.pgd_index(self.hvs)
            self.area_count = k.g.ptrs_per_pgd
        self.area_entries = {i: k.peek(self.area_table + i * k.es)
                             for i in range(self.area_first, self.area_count)}
        # PTE pages A and B: every entry of theirs belongs to the hypervisor.
        self.area_pages = {v & PAGE_MASK: bytes(k.mem.pages.get(v & PAGE_MASK,
                                                                bytes(x86.PAGE_SIZE)))
                           for v in self.area_entries.values() if v & x86.PRESENT}

    def _learn_tree(self, root: int) -> None:
        k, g = self.k, self.k.g
        self.tables[root] = "pdpt" if self.pae else "pgd"
        self.va_base[root] = 0
        self.roots.add(root)
        if self.pae:
            pmds = [(k.peek(root + i * 8), i << 30) for i in range(g.ptrs_per_pgd)]
            pmds = [(e & PAGE_MASK, va) for e, va in pmds if e & x86.PRESENT]
        else:
            pmds = [(root, 0)]
        for pmd, va in pmds:
            if self.pae:
                self.tables[pmd] = "pmd"
                self.va_base[pmd] = va
            step = g.pmd_size
            for i in range(g.ptrs_per_pmd if self.pae else g.ptrs_per_pgd):
                e = k.peek(pmd + i * k.es)
                if e & x86.PRESENT and not e & x86.PSE:
                    self.tables[e & PAGE_MASK] = "pte"
                    self.va_base[e & PAGE_MASK] = (va + i * step) & MASK32

    # -- the audit --------------------------------------------------------------------------
    def _flag(self, kind: int, entry_pa: int, value: int, frame: int, va: int) -> None:
        self.flags.append(Violation(kind, entry_pa, value, frame, va))

    def _va(self, frame: int, level: str, idx: int) -> int:
        base = self.va_base.get(frame)
        return 0 if base is None else (base + idx * _SPAN[level]) & MASK32

    def _in_area(self, frame: int, level: str, idx: int) -> bool:
        if frame in self.area_pages:
            return True
        if self.pae:
            return level == "pmd" and idx >= self.area_first
        return level == "pgd" and idx >= self.area_first

    def _keeps_area(self, value: int) -> bool:
        """Would this PDPT slot value keep the hypervisor's PMD entries bit for bit?"""
        if not value & x86.PRESENT:
            return False
        pmd = value & PAGE_MASK
        return all(self.k.peek(pmd + i * 8) == v for i, v in self.area_entries.items())

    def _empty_readonly(self, frame: int) -> bool:
        """Fit to be a new, empty PMD page: mapped read-only, no entry present."""
        entry = self.k.leaf_entry(x86.PAGE_OFFSET + frame)
        if entry is None or self.k.peek(entry) & x86.RW:
            return False
        page = self.k.mem.pages.get(frame)
        return page is None or not any(e & x86.PRESENT for e in struct.unpack_from("<512Q", page))

    def _protected(self, frame: int) -> bool:
        """A leaf mapping it RW is kind 1: a table frame, or one of the hypervisor's own."""
        return frame in self.tables or self.own[0] <= frame < self.own[1]

    def _linear_writable(self, frame: int, root: int | None = None) -> tuple[bool, int]:
        entry = self.k.leaf_entry(x86.PAGE_OFFSET + frame, root)
        if entry is None:
            return False, 0
        val = self.k.peek(entry)
        return bool(val & x86.RW), val

    # -- hypercalls -------------------------------------------------------------------------
    def mmu_update(self, entry_pa: int, value: int) -> None:
        """hyp_mmu_update: write one entry (CR0.WP cleared for the store), after the audit."""
        k = self.k
        self.mmu_updates += 1
        frame = entry_pa & PAGE_MASK
        level = self.tables.get(frame)
        if level is not None:
            idx = (entry_pa & (x86.PAGE_SIZE - 1)) // k.es
            target = value & PAGE_MASK
            if level == "pdpt" and idx == self.hvs >> 30 and not self._keeps_area(value):
                va = self._va(frame, level, idx)
                self.va_base.setdefault(target, va)
                self._flag(KERNEL_PMD_REPLACED, entry_pa, value, target, va)
                return  # refused: the write is not performed
            if self._in_area(frame, level, idx):
                self._flag(HYP_AREA_WRITE, entry_pa, value, frame, self._va(frame, level, idx))
            if value & x86.PRESENT:
                if level == "pte" or (level != "pdpt" and value & x86.PSE):  # a leaf
                    if value & x86.RW and self._protected(target):
                        self._flag(WRITABLE_TABLE, entry_pa, value, target,
                                   self._va(frame, level, idx))
                else:
                    va = self.va_base[target] = self._va(frame, level, idx)
                    if target not in self.tables and level == "pdpt" and self._empty_readonly(target):
                        self.tables[target] = "pmd"  # Xen's L2 validation takes it (the zap's zero page)
                    elif target not in self.tables:
                        self._flag(UNANNOUNCED_TABLE, entry_pa, value, target, va)
                    elif self._linear_writable(target)[0]:
                        self._flag(WRITABLE_TABLE, entry_pa, value, target, va)
        k.store(entry_pa, value)

    def mmu_update_run(self, entry_pa: int, values: list[int]) -> None:
        """hyp_mmu_update of consecutive entries of one page, in order (a batch):
        exactly what mmu_update does entry by entry.  In a PTE page outside the
        hypervisor's area, or a frame that is no table, the checks depend on the
        value alone (kind 1 for an RW leaf mapping a table frame), so they run over
        the values and the writes go out as one slice; anything else goes entry by
        entry."""
        k = self.k
        frame = entry_pa & PAGE_MASK
        level = self.tables.get(frame)
        if level not in (None, "pte") or frame in self.area_pages:
            for i, v in enumerate(values):
                self.mmu_update(entry_pa + i * k.es, v)
            return
        self.mmu_updates += len(values)
        if level == "pte":
            tables, both = self.tables, x86.PRESENT | x86.RW
            idx0 = (entry_pa & (x86.PAGE_SIZE - 1)) // k.es
            lo, hi = self.own
            for i in [i for i, v in enumerate(values)
                      if v & both == both and ((v & PAGE_MASK) in tables or lo <= v & PAGE_MASK < hi)]:
                self._flag(WRITABLE_TABLE, entry_pa + i * k.es, values[i],
                           values[i] & PAGE_MASK, self._va(frame, level, idx0 + i))
        k.write_run(entry_pa, values)

    def announce(self, pfn: int, level: str) -> None:
        self.tables[pfn << x86.PAGE_SHIFT] = level

    def new_baseptr(self, pa: int) -> None:
        root = pa & PAGE_MASK
        self.tables.setdefault(root, "pdpt" if self.pae else "pgd")
        self.va_base[root] = 0
        self.roots.add(root)
        if self.pae:  # its slots were written before it was a table: learn what they cover
            for i in range(self.k.g.ptrs_per_pgd):
                slot = self.k.peek(root + i * 8)
                if slot & x86.PRESENT:
                    self.va_base[slot & PAGE_MASK] = i << 30
        self.k.load_cr3(pa)

    def pin(self, pfn: int) -> None:
        """hyp_pin: validate the tree (flags only; pinning changes no entry). A frame
        an earlier pin validated keeps its type and is not looked at again: a second
        pagetable shares the kernel's PTE pages with the first."""
        k, g = self.k, self.k.g
        self.pins += 1
        root = pfn << x86.PAGE_SHIFT
        self.tables[root] = "pdpt" if self.pae else "pgd"  # pinning types a fresh root
        frames = [root]
        pmds = [root]
        if self.pae:
            pmds = [k.peek(root + i * 8) & PAGE_MASK for i in range(g.ptrs_per_pgd)
                    if k.peek(root + i * 8) & x86.PRESENT]
            frames += pmds
        for pmd in pmds:
            for i in range(g.ptrs_per_pmd if self.pae else g.ptrs_per_pgd):
                e = k.peek(pmd + i * k.es)
                if e & x86.PRESENT and not e & x86.PSE:
                    frames.append(e & PAGE_MASK)
        frames = list(dict.fromkeys(frames))
        for frame in frames:
            if frame in self.validated:
                continue
            writable, leaf = self._linear_writable(frame, root)
            if writable:
                self._flag(WRITABLE_TABLE, 0, leaf, frame, x86.PAGE_OFFSET + frame)
        self._pin_check_area(root)
        self.validated.update(frames)

    def _pin_check_area(self, root: int) -> None:
        """Pin-time kind 2: the area entries of the tree, then PTE pages A and B, as
        built -- each only if no earlier pin validated it."""
        k = self.k
        area, level = root, "pgd"
        if self.pae:
            slot_pa = root + (self.hvs >> 30) * 8
            slot = k.peek(slot_pa)
            if not slot & x86.PRESENT:  # the whole area is gone
                if root not in self.validated:
                    self._flag(HYP_AREA_WRITE, slot_pa, slot, root, self.hvs & ~((1 << 30) - 1))
                return
            area, level = slot & PAGE_MASK, "pmd"
        if area not in self.validated:
            for i, built in self.area_entries.items():
                found = k.peek(area + i * k.es)
                if found != built:
                    self._flag(HYP_AREA_WRITE, area + i * k.es, found, area,
                               self._va(area, level, i))
        for page, built in self.area_pages.items():
            if page in self.validated:
                continue
            now = bytes(k.mem.pages.get(page, bytes(x86.PAGE_SIZE)))
            for i in range(0, x86.PAGE_SIZE, k.es):
                if now[i:i + k.es] != built[i:i + k.es]:
                    self._flag(HYP_AREA_WRITE, page + i, k.peek(page + i), page,
                               self._va(page, "pte", i // k.es))
            self.validated.add(page)  # looked at, in the tree or not


class XenBackend:
    """The Xen-like paravirt_ops of docs/xen.md (kernel side), talking to the
    simulated hypervisor: page-table writes are hypercalls, new table frames are
    made read-only before they are linked, and setup-time set_pte keeps the RW
    bit of a present entry.  KernelConfig.pvbug selects one of the mutants (PVBUGS)."""

    name = "xen"
    shared_kernel_pmd = False  # SHARED_KERNEL_PMD is 0 under Xen (kernel-facts §9)

    def __init__(self) -> None:
        self.hyp: XenHypervisor | None = None
        self.runtime = False  # pagetable_setup_done switches set_pte to its run-time form
        self.start_info: dict[str, int] = {}
        self.pvbug: str | None = None
        self.pt_pages_given = 0  # alloc_pt calls so far (the mutants act on the first)
        self.setup_set_ptes = 0  # setup-time set_pte calls so far

    def check_entry_state(self, k: "Kernel", before: Snapshot) -> None:
        cpu, pae = before.cpu, k.config.pae
        info = xen_start_info(before)
        if not cpu.paging:
            raise ModelError("before-state: paging is off (CR0.PG=0); the hypervisor starts"
                             " the kernel with paging on")
        if cpu.pae != pae:
            raise ModelError(f"before-state: CR4.PAE={int(cpu.pae)}, but under pv=xen a"
                             f" {'PAE' if pae else 'non-PAE'} build starts in its final paging"
                             " mode")
        if info["magic"] != XEN_START_INFO_MAGIC:
            raise ModelError(f"before-state: start_info.magic={info['magic']:#x}, expected"
                             f" {XEN_START_INFO_MAGIC:#x} (\"XENX\")")
        hvs = XEN_HYPERVISOR_VIRT_START[pae]
        if info["hypervisor_virt_start"] != hvs or info["reserve_top"] != xen_reserve(pae):
            raise ModelError(
                f"before-state: start_info has hypervisor_virt_start="
                f"{info['hypervisor_virt_start']:#x}, reserve_top={info['reserve_top']:#x};"
                f" docs/xen.md fixes {hvs:#x} and {xen_reserve(pae):#x} for this build")
        pt_base = virt_to_phys(info["pt_base"])
        if cpu.cr3 & PAGE_MASK != pt_base or info["pt_base"] & (x86.PAGE_SIZE - 1):
            raise ModelError(f"before-state: CR3={cpu.cr3:#x}, expected __pa(pt_base)"
                             f"={pt_base:#x} (start_info.pt_base={info['pt_base']:#x})")
        self.start_info = info
        self.pvbug = k.config.pvbug
        self.hyp = XenHypervisor(k)

    def resume_at_work(self, k: "Kernel", before: Snapshot) -> None:
        """Pick up at paging_init_done. The hypervisor's area is as it built it
        (the start-of-day tables of `before`); it knows the tree the kernel
        pinned as it stands now, every frame of it validated by that pin;
        set_pte is in its run-time form and the mutants have acted."""
        self.start_info = xen_start_info(before)
        self.pvbug = k.config.pvbug
        hyp = XenHypervisor(Kernel(k.config, k.layout, before, self))  # the area as built
        hyp.k, hyp.tables, hyp.va_base, hyp.roots = k, {}, {}, set()
        hyp._learn_tree(k.cr3 & PAGE_MASK)
        hyp.flags = []  # what the first pin found is pagetable_init's record
        hyp.validated = set(hyp.tables) | set(hyp.area_pages)
        self.hyp = hyp
        self.runtime = True
        self.pt_pages_given = 1 << 30

    # -- kernel-side helpers -------------------------------------------------------------------
    def make_readonly(self, k: "Kernel", pa: int) -> None:
        """Clear RW in the frame's linear-map leaf (found through the current tables)
        by hypercall, not set_pte: the early set_pte would keep the RW bit."""
        va = (x86.PAGE_OFFSET + pa) & MASK32
        entry = k.leaf_entry(va)
        if entry is None:
            raise ModelError(f"pv=xen: frame {pa:#x} has no linear mapping at {va:#x} in the"
                             " current tables; the kernel cannot make it read-only")
        self.hyp.mmu_update(entry, k.load(entry) & ~x86.RW)
        # hyp_invlpg(va): the model keeps no TLB.

    # -- paravirt_ops ----------------------------------------------------------------------
    def pagetable_setup_start(self, k: "Kernel", base: int) -> None:
        pt_base = k.cr3 & PAGE_MASK
        if k.g.ptrs_per_pmd > 1:
            for i in range(k.g.ptrs_per_pgd):
                slot = k.load(pt_base + i * 8)
                if slot & x86.PRESENT:
                    pmd = k.alloc_bootmem_low_pages(f"pmd copy of the hypervisor's pgd[{i}]")
                    k.copy_page(slot & PAGE_MASK, pmd)  # the PTE pages stay shared
                    k.paravirt_alloc_pd(pmd >> x86.PAGE_SHIFT)  # also makes it read-only
                    k.set_pgd(base + i * 8, pmd | x86.PRESENT)
                else:
                    k.set_pgd(base + i * 8, 0)
        else:
            k.paravirt_alloc_pd(base >> x86.PAGE_SHIFT)
            k.copy_page(pt_base, base)  # a plain memcpy: base is not a table yet
        self.make_readonly(k, k.layout.empty_zero_page)
        if self.pvbug != "writable-root":  # the mutant leaves base writable
            self.make_readonly(k, base)
        self.hyp.new_baseptr(base)

    def pagetable_setup_done(self, k: "Kernel", base: int) -> None:
        self.runtime = True
        k.set_fixmap(fixmap.FIX_PARAVIRT_BOOTMAP, self.start_info["shared_info"], k.page_kernel)
        k.hook_log.append((HOOK_PIN, base >> x86.PAGE_SHIFT))
        self.hyp.pin(base >> x86.PAGE_SHIFT)
        # No low identity mapping: the native setup_done's slot-0 copy does not happen.

    def alloc_pd(self, k: "Kernel", pfn: int) -> None:
        # PAE: a PMD page, announced and made read-only before the caller links it.
        # 2-level: swapper_pg_dir, which setup_start fills first and then makes
        # read-only itself.
        self.hyp.announce(pfn, "pmd" if k.g.ptrs_per_pmd > 1 else "pgd")
        if k.g.ptrs_per_pmd > 1:
            self.make_readonly(k, pfn << x86.PAGE_SHIFT)

    def alloc_pd_clone(self, k: "Kernel", pfn: int) -> None:
        # pgd_alloc's 2-level pgd, its kernel entries copied: now a table.
        self.hyp.announce(pfn, "pgd")
        self.make_readonly(k, pfn << x86.PAGE_SHIFT)

    def activate_mm(self, k: "Kernel", pgd: int) -> None:
        """Pin the new tree, then the CR3 load through the hypervisor (a PAE root
        is never announced: it is made read-only here)."""
        if k.g.ptrs_per_pmd > 1:
            self.make_readonly(k, pgd)
        k.hook_log.append((HOOK_PIN, pgd >> x86.PAGE_SHIFT))
        self.hyp.pin(pgd >> x86.PAGE_SHIFT)
        self.hyp.new_baseptr(pgd)

    def alloc_pt(self, k: "Kernel", pfn: int) -> None:
        self.pt_pages_given += 1
        bug = self.pvbug if self.pt_pages_given == 1 else None  # mutants: the first page
        if bug != "unannounced-pt":
            self.hyp.announce(pfn, "pte")
        if bug != "writable-pt":
            self.make_readonly(k, pfn << x86.PAGE_SHIFT)  # before the caller links it

    def set_pgd(self, k: "Kernel", addr: int, val: int) -> None:
        self.hyp.mmu_update(addr, val)

    def set_pmd(self, k: "Kernel", addr: int, val: int) -> None:
        self.hyp.mmu_update(addr, val)

    def set_pte(self, k: "Kernel", addr: int, val: int) -> None:
        if self.runtime:
            self.hyp.mmu_update(addr, val)
            return
        k.check_reachable(addr, "set_pte")  # a pointer derived from junk faults here
        old = k.load(addr)
        if old & x86.PRESENT:  # the early rule: a present entry keeps its RW bit
            val = (val & ~x86.RW) | (old & x86.RW)
        self.hyp.mmu_update(addr, val)
        self.setup_set_ptes += 1
        if self.pvbug == "batch-hv-write" and self.setup_set_ptes == 1:
            # The mutant: the same value also goes to entry 2 of hypervisor PTE page A,
            # which the kernel finds through its tables at HYPERVISOR_VIRT_START.
            va = self.hyp.hvs + 2 * x86.PAGE_SIZE
            slot = k.pte_slot(va)
            if slot is None:
                raise ModelError(f"pvbug=batch-hv-write: no PTE page for {va:#x} in the"
                                 " current tables (hypervisor PTE page A is not linked)")
            self.hyp.mmu_update(slot, val)

    def set_ptes(self, k: "Kernel", addr: int, values: list[int]) -> None:
        """set_pte on consecutive entries of one page, in order: the same hypercalls,
        checks and records as one set_pte each."""
        if self.runtime:
            for i, v in enumerate(values):
                self.set_pte(k, addr + i * k.es, v)
            return
        if self.pvbug == "batch-hv-write" and self.setup_set_ptes == 0:
            self.set_pte(k, addr, values[0])  # the mutant's extra update comes right after
            addr, values = addr + k.es, values[1:]
            if not values:
                return
        k.check_reachable(addr, "set_pte")  # a pointer derived from junk faults here
        olds = k.read_run(addr, len(values))  # writes to later entries cannot change them
        values = [v if not o & x86.PRESENT else (v & ~x86.RW) | (o & x86.RW)
                  for v, o in zip(values, olds)]  # the early rule, as in set_pte
        self.hyp.mmu_update_run(addr, values)
        self.setup_set_ptes += len(values)

    def check_kernel_write(self, k: "Kernel", pa: int, what: str) -> None:
        # The kernel writes boot pages through its own mapping, which under Xen is only
        # what the hypervisor built (CR0.WP is set: read-only faults in ring 0 too).
        va = (x86.PAGE_OFFSET + pa) & MASK32
        entry = k.leaf_entry(va)
        if entry is None or not k.peek(entry) & x86.RW:
            raise ModelError(f"pv=xen: the kernel would fault writing {what} at {va:#x}"
                             f" (physical {pa:#x}): not mapped writable in the current tables")

    def hypervisor_tables(self) -> dict[int, str]:
        return dict(self.hyp.tables) if self.hyp else {}

    def hypervisor_flags(self) -> list[Violation]:
        return list(self.hyp.flags) if self.hyp else []

    def hypercall_counts(self) -> tuple[int, int]:
        return (self.hyp.mmu_updates, self.hyp.pins) if self.hyp else (0, 0)


BACKENDS: dict[str, Callable[[], ParavirtBackend]] = {"native": NativeBackend, "xen": XenBackend}


def xen_start_info(before: Snapshot) -> dict[str, int]:
    """The start-info block the guest read at pagetable_init entry (ints or hex strings)."""
    raw = (before.guest or {}).get("start_info")
    if not isinstance(raw, dict):
        raise ModelError("before-state lacks guest variable 'start_info' (the Xen-like start"
                         " info block); a pv=xen snapshot must record it")
    out = {}
    for name in XEN_START_INFO_FIELDS:
        if name not in raw:
            raise ModelError(f"before-state: start_info lacks field {name!r}")
        v = raw[name]
        try:
            out[name] = int(v, 0) if isinstance(v, str) else int(v)
        except (TypeError, ValueError):
            raise ModelError(f"before-state: start_info.{name}={v!r} is not a number") from None
    if out["nr_pages"] <= 0:
        raise ModelError(f"before-state: start_info.nr_pages={out['nr_pages']} is not positive")
    return out


# ---------------------------------------------------------------------------------------------
# The simulated kernel
# ---------------------------------------------------------------------------------------------
class Kernel:
    """The kernel's state while paging_init runs: physical memory, control
    registers, the boot allocator, the kernel protections and the hook log.
    Methods are named after arch/i386/mm/init.c; addresses are physical
    (the kernel reaches them through __va, which the model does not need)."""

    def __init__(self, config: KernelConfig, layout: Layout, before: Snapshot,
                 backend: ParavirtBackend):
        self.config = config
        self.layout = layout
        self.g = layout.geometry
        self.es = self.g.entry_size
        self.prepatch = config.prepatch
        self.backend = backend
        self.cpu_has_pse = config.kernel_pse  # CPUID as the kernel sees it
        self.cpu_has_pge = config.kernel_pge
        cpu = before.cpu
        self.cr0, self.cr3, self.cr4, self.efer = cpu.cr0, cpu.cr3, cpu.cr4, cpu.efer
        self.mem = before.memory()
        # The live boot tables are never handed out; any other page the before-state
        # holds (a stale table, junk) the allocator may take, and zeroes.
        self.pages_in_use = _live_tables(self.mem, cpu)
        self.lowmem_end = layout.max_low_pfn << x86.PAGE_SHIFT
        self.supported_pte_mask = MASK32 if not config.pae else ((1 << 64) - 1) & ~x86.NX
        # __PAGE_KERNEL / __PAGE_KERNEL_EXEC before pagetable_init ORs in GLOBAL.
        self.page_kernel = x86.PAGE_KERNEL_EXEC | (x86.NX if config.pae else 0)
        self.page_kernel_exec = x86.PAGE_KERNEL_EXEC
        self.cursor = _boot_alloc_cursor(before)
        self.allocations: list[int] = []
        self.roles: dict[int, str] = {}
        self.hook_log: list[tuple[int, int]] = []
        self.direct_map_end_pfn = 0
        self.pkmap_page_table = 0

    # -- memory ------------------------------------------------------------------------------
    def check_reachable(self, addr: int, what: str) -> None:
        # The kernel reaches tables through __va(): only lowmem is there.
        if addr + self.es > self.lowmem_end:
            raise WildTablePointer(
                f"{what} at physical {addr:#x} is outside lowmem (ends at {self.lowmem_end:#x}):"
                " the kernel would fault dereferencing __va() of it")

    def peek(self, addr: int) -> int:
        """One entry of physical memory, as a walker (not the kernel) reads it."""
        page = self.mem.pages.get(addr & ~(x86.PAGE_SIZE - 1))
        if page is None:
            return 0
        off = addr & (x86.PAGE_SIZE - 1)
        return int.from_bytes(page[off:off + self.es], "little")

    def load(self, addr: int) -> int:
        self.check_reachable(addr, "table entry read")
        return self.peek(addr)

    def store(self, addr: int, val: int) -> None:
        self.check_reachable(addr, "table entry write")
        self.mem.write_entry(addr, self.es, val)

    def copy_page(self, src: int, dst: int) -> None:
        """memcpy of one page through __va()."""
        self.check_reachable(src, "page copy source")
        self.check_reachable(dst, "page copy destination")
        self.backend.check_kernel_write(self, dst, "a page copy")
        self.mem.pages[dst] = bytearray(self.mem.pages.get(src, bytes(x86.PAGE_SIZE)))

    def pte_slot(self, va: int, root: int | None = None) -> int | None:
        """Physical address of the last-level entry for va in the tables at root
        (default: CR3): the PTE slot, or a large-page PMD/PDE; None when a table
        level on the way is missing."""
        g = self.g
        root = self.cr3 if root is None else root
        if g.ptrs_per_pmd > 1:
            slot = self.peek((root & ~0x1F) + g.pgd_index(va) * 8)
            if not slot & x86.PRESENT:
                return None
            pmd = (slot & PAGE_MASK) + g.pmd_index(va) * 8
        else:
            pmd = (root & PAGE_MASK) + g.pgd_index(va) * 4
        e = self.peek(pmd)
        if not e & x86.PRESENT:
            return None
        if e & x86.PSE and (g.ptrs_per_pmd > 1 or self.cr4 & x86.CR4_PSE):
            return pmd
        return (e & PAGE_MASK) + g.pte_index(va) * self.es

    def leaf_entry(self, va: int, root: int | None = None) -> int | None:
        """Physical address of the present leaf entry mapping va, or None."""
        slot = self.pte_slot(va, root)
        return slot if slot is not None and self.peek(slot) & x86.PRESENT else None

    def set_pgd(self, addr: int, val: int) -> None:
        self.backend.set_pgd(self, addr, val)

    def set_pmd(self, addr: int, val: int) -> None:
        self.backend.set_pmd(self, addr, val)

    def set_pte(self, addr: int, val: int) -> None:
        self.backend.set_pte(self, addr, val)

    def set_ptes(self, addr: int, values: list[int]) -> None:
        """set_pte on consecutive entries of one pte page from addr, in order.
        896 MiB of 4 KiB pages is 229376 of them, too many to go through every
        layer one by one, so a backend may take the run at once (its set_ptes:
        the very same effects as one set_pte each)."""
        if not values:
            return
        run = getattr(self.backend, "set_ptes", None)
        if run is not None:
            run(self, addr, values)
            return
        for i, v in enumerate(values):
            self.set_pte(addr + i * self.es, v)

    def _run_format(self, addr: int, count: int) -> tuple[bytearray, int, str]:
        off = addr & (x86.PAGE_SIZE - 1)
        assert off + count * self.es <= x86.PAGE_SIZE, "a run stays within one page"
        return self.mem.page(addr), off, f"<{count}{'Q' if self.es == 8 else 'I'}"

    def read_run(self, addr: int, count: int) -> tuple[int, ...]:
        """count consecutive entries of one page through __va() (load, for a run)."""
        self.check_reachable(addr, "table entry read")  # one page: the first decides
        page, off, fmt = self._run_format(addr, count)
        return struct.unpack_from(fmt, page, off)

    def write_run(self, addr: int, values: list[int]) -> None:
        """Plain stores of consecutive entries of one page (store, for a run)."""
        self.check_reachable(addr, "table entry write")  # one page: the first decides
        page, off, fmt = self._run_format(addr, len(values))
        struct.pack_into(fmt, page, off, *values)

    def alloc_bootmem_low_pages(self, role: str) -> int:
        """One zeroed 4 KiB page; pages go out in ascending order from the cursor."""
        pa = self.cursor
        if pa + x86.PAGE_SIZE > self.lowmem_end:
            raise ModelError(f"boot allocator out of low memory: next page {pa:#x}, lowmem ends"
                             f" at {self.lowmem_end:#x} (wanted for {role})")
        if pa in self.pages_in_use:
            raise ModelError(f"boot allocator would hand out {pa:#x} ({role}), a page that"
                             " already holds a boot page table")
        self.backend.check_kernel_write(self, pa, f"boot page {pa:#x} ({role}) being zeroed")
        self.mem.pages[pa] = bytearray(x86.PAGE_SIZE)
        self.cursor += x86.PAGE_SIZE
        self.allocations.append(pa)
        self.roles[pa] = role
        return pa

    # -- registers -----------------------------------------------------------------------------
    def set_in_cr4(self, bits: int) -> None:
        self.cr4 |= bits

    def load_cr3(self, pgdir_pa: int) -> None:
        self.cr3 = pgdir_pa

    # -- paravirt hooks ----------------------------------------------------------------------
    def paravirt_alloc_pd(self, pfn: int) -> None:
        self.hook_log.append((HOOK_ALLOC_PD, pfn))
        self.backend.alloc_pd(self, pfn)

    def paravirt_alloc_pt(self, pfn: int) -> None:
        self.hook_log.append((HOOK_ALLOC_PT, pfn))
        self.backend.alloc_pt(self, pfn)

    def paravirt_pagetable_setup_start(self, base: int) -> None:
        self.backend.pagetable_setup_start(self, base)

    def paravirt_pagetable_setup_done(self, base: int) -> None:
        self.backend.pagetable_setup_done(self, base)

    # -- entry builders ------------------------------------------------------------------------
    def pfn_pte(self, pfn: int, prot: int) -> int:
        return ((pfn << x86.PAGE_SHIFT) | prot) & self.supported_pte_mask

    pfn_pmd = pfn_pte  # same construction and mask for a large-page pmd

    def pfn_ptes(self, pfn: int, count: int, prot: int) -> list[int]:
        """pfn_pte(p, prot) for p = pfn, pfn + 1, ... (count of them)."""
        if count <= 0:
            return []
        first = self.pfn_pte(pfn, prot)
        # pfn_pte is linear in the pfn (the mask keeps the address bits and prot has
        # none): consecutive values are a page apart.
        assert self.pfn_pte(pfn + count - 1, prot) == first + (count - 1) * x86.PAGE_SIZE
        return list(range(first, first + count * x86.PAGE_SIZE, x86.PAGE_SIZE))

    def kernel_text_run(self, address: int, n: int) -> int:
        """How many of the n pages from address (rising, address >= PAGE_OFFSET, no
        wrap) pass is_kernel_text: a leading run, as text ends at __init_end."""
        assert x86.PAGE_OFFSET <= address and address + n * x86.PAGE_SIZE <= 1 << 32
        if not self.is_kernel_text(address):
            return 0
        return min(n, (self.layout.init_end - address) // x86.PAGE_SIZE + 1)

    def is_kernel_text(self, addr: int) -> bool:
        return self.layout.is_kernel_text(addr)

    def set_fixmap(self, idx: int, phys: int, prot: int) -> None:
        """__set_fixmap: set_pte_pfn on __fix_to_virt(idx) in swapper_pg_dir.

        The kernel goes down by the entries' address bits and only an empty (none)
        entry stops it, so a non-present junk pmd entry gives a derived pte pointer
        and the store through it is what fails (WildTablePointer outside lowmem)."""
        g, es = self.g, self.es
        va = self.layout.fix_to_virt(idx)
        pmd = self.layout.swapper_pg_dir + g.pgd_index(va) * es
        if g.ptrs_per_pmd > 1:
            pgd_val = self.load(pmd)
            if self.pmd_none(pgd_val):
                raise ModelError(f"set_fixmap({idx}): no pmd table for {va:#x} in"
                                 " swapper_pg_dir; the kernel would BUG")
            pmd = (pgd_val & PAGE_MASK) + g.pmd_index(va) * es
        val = self.load(pmd)
        if self.pmd_none(val):
            raise ModelError(f"set_fixmap({idx}): no page table for {va:#x} in swapper_pg_dir;"
                             " the kernel would BUG")
        slot = (val & PAGE_MASK) + g.pte_index(va) * es  # pte_offset_kernel: derived only
        self.set_pte(slot, self.pfn_pte(phys >> x86.PAGE_SHIFT, prot))

    @staticmethod
    def pmd_none(val: int) -> bool:
        return (val & MASK32) == 0  # only the low word counts, even in PAE

    # -- after paging_init: the tables at work ---------------------------------------------
    def init_apic_mappings(self) -> None:
        """Natively the local APIC goes to FIX_APIC_BASE, uncached (PAGE_KERNEL_NOCACHE)."""
        self.set_fixmap(fixmap.FIX_APIC_BASE, fixmap.APIC_PHYS, self.page_kernel | x86.PCD)

    def zap_low_mappings(self) -> None:
        """The user slots of swapper_pg_dir: PAE back to the zero page, else empty."""
        g, base = self.g, self.layout.swapper_pg_dir
        value = self.layout.empty_zero_page | x86.PRESENT if g.ptrs_per_pmd > 1 else 0
        for i in range(g.user_ptrs_per_pgd):
            self.set_pgd(base + i * self.es, value)
        # flush_tlb_all(): no table changes

    def pgd_alloc(self) -> int:
        """A second pagetable sharing the kernel's PTE pages (2.6.22/2.6.23).
        Non-PAE: the kernel PDEs copied. PAE with SHARED_KERNEL_PMD (native): the
        kernel PDPT slot copied, so the kernel PMD page is shared, and a fresh PMD
        page per user slot. PAE without (Xen): a PMD page for every slot, the
        kernel one a copy of swapper's, so only the PTE pages are shared."""
        g, es, swapper = self.g, self.es, self.layout.swapper_pg_dir
        pgd = self.alloc_bootmem_low_pages("second pagetable's pgd")
        kernel = g.user_ptrs_per_pgd
        shared = self.backend.shared_kernel_pmd
        if g.ptrs_per_pmd == 1 or shared:
            # pgd_ctor: clone_pgd_range, a memcpy of the kernel entries
            count = g.ptrs_per_pgd - kernel
            self.write_run(pgd + kernel * es, list(self.read_run(swapper + kernel * es, count)))
        if g.ptrs_per_pmd == 1:
            self.hook_log.append((HOOK_ALLOC_PD_CLONE, pgd >> x86.PAGE_SHIFT))
            self.backend.alloc_pd_clone(self, pgd >> x86.PAGE_SHIFT)
            return pgd
        for i in range(kernel if shared else g.ptrs_per_pgd):
            pmd = self.alloc_bootmem_low_pages(f"second pagetable's pmd for slot {i}")
            if i >= kernel:  # pmd_cache_alloc: the kernel slot's is a copy of swapper's
                self.copy_page(self.load(swapper + i * es) & PAGE_MASK, pmd)
            self.paravirt_alloc_pd(pmd >> x86.PAGE_SHIFT)
            self.set_pgd(pgd + i * es, pmd | x86.PRESENT)
        return pgd

    def kmap_first_highmem(self) -> tuple[int, int]:
        """kmap() of the page at max_low_pfn into PKMAP slot 0; (va, pa), or (0, 0)."""
        lay = self.layout
        if lay.max_pfn <= lay.max_low_pfn:
            return 0, 0
        self.set_pte(self.pkmap_page_table, self.pfn_pte(lay.max_low_pfn, self.page_kernel))
        return lay.pkmap_base, lay.max_low_pfn << x86.PAGE_SHIFT

    def work_phase(self, text_pa: int) -> WorkPrediction:
        """setup_arch after the self-check, up to work_done (docs/guest-contract.md)."""
        start_allocs = len(self.allocations)
        if self.config.pv == "native":
            self.init_apic_mappings()
        self.zap_low_mappings()
        pgd2 = self.pgd_alloc()
        swapper_cpu = CpuState(cr0=self.cr0, cr3=self.cr3, cr4=self.cr4, efer=self.efer)
        self.backend.activate_mm(self, pgd2)
        self.set_fixmap(fixmap.FIX_VDSO, text_pa, self.page_kernel)
        kmap_va, kmap_pa = self.kmap_first_highmem()
        mmu_updates, pins = self.backend.hypercall_counts()
        return WorkPrediction(
            memory=self.mem, cpu=CpuState(cr0=self.cr0, cr3=self.cr3, cr4=self.cr4, efer=self.efer),
            swapper_cpu=swapper_cpu, pgd2_root=pgd2,
            allocations=self.allocations[start_allocs:], hook_log=list(self.hook_log),
            roles={a: self.roles[a] for a in self.allocations[start_allocs:]},
            fix_va=self.layout.fix_to_virt(fixmap.FIX_VDSO), fix_pa=text_pa,
            kmap_va=kmap_va, kmap_pa=kmap_pa, mmu_updates=mmu_updates, pins=pins,
            hypervisor_flags=self.backend.hypervisor_flags())

    # -- arch/i386/mm/init.c -------------------------------------------------------------------
    def one_md_table_init(self, pgd: int) -> int:
        """The pmd table of a pgd entry (2-level: the pgd entry itself)."""
        if self.g.ptrs_per_pmd == 1:
            return pgd
        # pre-patch: a fresh PMD page every time, whatever the slot held.
        if self.prepatch or not (self.load(pgd) & x86.PRESENT):
            idx = (pgd & (x86.PAGE_SIZE - 1)) // self.es
            pmd_table = self.alloc_bootmem_low_pages(f"pmd table for pgd[{idx}]")
            self.paravirt_alloc_pd(pmd_table >> x86.PAGE_SHIFT)  # before it is linked
            self.set_pgd(pgd, pmd_table | x86.PRESENT)
            # Both versions: BUG() unless the pgd now leads to the new page. Under
            # Xen the pre-patch replacement of the kernel PMD is refused, so this
            # is where 2.6.21 stops (docs/xen.md, bug C).
            if self.load(pgd) & PAGE_MASK != pmd_table:
                raise KernelBug(f"BUG in one_md_table_init: pgd entry at {pgd:#x} does not "
                                f"lead to the new pmd table {pmd_table:#x} (the link was refused)")
            return pmd_table
        return self.load(pgd) & PAGE_MASK

    def one_page_table_init(self, pmd: int) -> int:
        """The pte table of a pmd entry, allocated if there is none."""
        val = self.load(pmd)
        # pre-patch: pmd_none (low word zero), so junk like 0xDEAD0002 is kept.
        missing = self.pmd_none(val) if self.prepatch else not (val & x86.PRESENT)
        if missing:
            page_table = self.alloc_bootmem_low_pages(f"pte table linked at {pmd:#x}")
            self.paravirt_alloc_pt(page_table >> x86.PAGE_SHIFT)
            self.set_pmd(pmd, page_table | x86.PAGE_TABLE)
            if self.load(pmd) & PAGE_MASK != page_table:
                raise KernelBug(f"BUG in one_page_table_init: pmd entry at {pmd:#x} does not "
                                f"lead to the new pte table {page_table:#x}")
            return page_table
        return val & PAGE_MASK  # a PRESENT entry is reused as it is (head.S's 0x007 too)

    def page_table_range_init(self, start: int, end: int, base: int) -> None:
        """Make sure pte tables exist for [start, end); end 0 = up to the 32-bit wrap."""
        g, es = self.g, self.es
        vaddr = start
        pgd_idx = g.pgd_index(vaddr)
        pmd_idx = g.pmd_index(vaddr)
        while pgd_idx < g.ptrs_per_pgd and vaddr != end:
            pgd = base + pgd_idx * es
            if self.prepatch:
                # pre-patch: `if (pgd_none(*pgd)) one_md_table_init(pgd)`, but the pud level
                # is folded, so pgd_none() is constant 0: the pmd comes straight from the entry.
                pmd_table = pgd if g.ptrs_per_pmd == 1 else self.load(pgd) & PAGE_MASK
            else:
                pmd_table = self.one_md_table_init(pgd)
            pmd = pmd_table + g.pmd_index(vaddr) * es
            while pmd_idx < g.ptrs_per_pmd and vaddr != end:
                # pre-patch: one_page_table_init only `if (pmd_none(*pmd))`; it checks the
                # same itself, so calling it unconditionally is equivalent.
                self.one_page_table_init(pmd)
                vaddr = (vaddr + g.pmd_size) & MASK32
                pmd += es
                pmd_idx += 1
            pmd_idx = 0
            pgd_idx += 1

    def kernel_physical_mapping_init(self, base: int) -> None:
        """Map lowmem (pfn 0 .. max_low_pfn) at PAGE_OFFSET; leaves are always rewritten."""
        g, es, lay = self.g, self.es, self.layout
        max_low_pfn = lay.max_low_pfn
        pfn = 0
        for pgd_idx in range(g.pgd_index(x86.PAGE_OFFSET), g.ptrs_per_pgd):
            pmd = self.one_md_table_init(base + pgd_idx * es)  # PAE: a PMD page per kernel slot
            if pfn >= max_low_pfn:
                continue
            pmd_idx = 0
            while pmd_idx < g.ptrs_per_pmd and pfn < max_low_pfn:
                address = (pfn * x86.PAGE_SIZE + x86.PAGE_OFFSET) & MASK32
                if self.cpu_has_pse:
                    # Last byte of this large page; the page may run past max_low_pfn.
                    address2 = ((pfn + g.ptrs_per_pte - 1) * x86.PAGE_SIZE + x86.PAGE_OFFSET
                                + x86.PAGE_SIZE - 1) & MASK32
                    if self.is_kernel_text(address) or self.is_kernel_text(address2):
                        prot = self.page_kernel_exec | x86.PSE
                    else:
                        prot = self.page_kernel | x86.PSE
                    self.set_pmd(pmd, self.pfn_pmd(pfn, prot))
                    pfn += g.ptrs_per_pte
                else:
                    pte = self.one_page_table_init(pmd)
                    # The pte_ofs loop: one set_pte per pte while pte_ofs < PTRS_PER_PTE and
                    # pfn < max_low_pfn, EXEC where is_kernel_text(address), address
                    # advancing a page per pte.  Text is [PAGE_OFFSET, __init_end] and the
                    # addresses rise from PAGE_OFFSET, so the EXEC ptes are a leading run.
                    n = min(g.ptrs_per_pte, max_low_pfn - pfn)
                    if self.prepatch:
                        # pre-patch: address never advances, so the whole pte table gets
                        # the protection decided for its first page (bug A).
                        text = n if self.is_kernel_text(address) else 0
                    else:
                        text = self.kernel_text_run(address, n)
                    self.set_ptes(pte, self.pfn_ptes(pfn, text, self.page_kernel_exec)
                                  + self.pfn_ptes(pfn + text, n - text, self.page_kernel))
                    pfn += n
                pmd += es
                pmd_idx += 1
        self.direct_map_end_pfn = pfn

    def permanent_kmaps_init(self, base: int) -> None:
        lay = self.layout
        self.page_table_range_init(lay.pkmap_base, lay.pkmap_end, base)
        pmd_table = base + self.g.pgd_index(lay.pkmap_base) * self.es
        if self.g.ptrs_per_pmd > 1:
            pmd_table = self.load(pmd_table) & PAGE_MASK
        pmd = pmd_table + self.g.pmd_index(lay.pkmap_base) * self.es
        self.pkmap_page_table = self.load(pmd) & PAGE_MASK

    def native_pagetable_setup_start(self, base: int) -> None:
        g = self.g
        if g.ptrs_per_pmd > 1:
            # The in-place PAE switch: the first 32 bytes of swapper_pg_dir become the
            # PDPT (clobbering only non-PAE PDEs 0..7, the low identity mapping).
            for i in range(g.user_ptrs_per_pgd):
                self.set_pgd(base + i * self.es, self.layout.empty_zero_page | x86.PRESENT)
            # Kernel slots emptied so that a PMD page gets allocated for them.
            for i in range(g.user_ptrs_per_pgd, g.ptrs_per_pgd):
                self.store(base + i * self.es, 0)
        else:
            self.paravirt_alloc_pd(self.layout.swapper_pg_dir >> x86.PAGE_SHIFT)

    def native_pagetable_setup_done(self, base: int) -> None:
        g = self.g
        if g.ptrs_per_pmd > 1:
            # Low identity mapping for SMP trampolines: slot 0 shares the kernel PMD page.
            self.set_pgd(base, self.load(base + g.user_ptrs_per_pgd * self.es))

    def prepatch_pagetable_setup(self, base: int) -> None:
        """2.6.21's inline start of pagetable_init (no setup hook existed)."""
        g = self.g
        if g.ptrs_per_pmd > 1:
            for i in range(g.ptrs_per_pgd):  # all 4 slots, the kernel one included
                self.set_pgd(base + i * self.es, self.layout.empty_zero_page | x86.PRESENT)
        else:
            self.paravirt_alloc_pd(self.layout.swapper_pg_dir >> x86.PAGE_SHIFT)

    def pagetable_init(self) -> None:
        lay, g = self.layout, self.g
        pgd_base = lay.swapper_pg_dir
        # pre-patch: 2.6.21 had its setup inline; the prepatch build calls the hooks at the
        # same point and the native backend runs that inline code there (docs/xen.md).
        self.paravirt_pagetable_setup_start(pgd_base)

        if self.cpu_has_pse:
            self.set_in_cr4(x86.CR4_PSE)
        if self.cpu_has_pge:
            self.set_in_cr4(x86.CR4_PGE)
            self.page_kernel |= x86.GLOBAL
            self.page_kernel_exec |= x86.GLOBAL

        self.kernel_physical_mapping_init(pgd_base)

        # Fixmap: pte tables for every fixmap slot.  pre-patch: end 0, i.e. up to the
        # 32-bit wrap, whatever FIXADDR_TOP is (bug B).
        vaddr = lay.fix_to_virt(self.config.fixmap_entries - 1) & g.pmd_mask
        self.page_table_range_init(vaddr, lay.fixmap_end, pgd_base)

        self.permanent_kmaps_init(pgd_base)

        self.paravirt_pagetable_setup_done(pgd_base)  # pre-patch: the same point too

    def set_nx(self) -> None:
        if self.config.cpu_pae and self.config.cpu_nx and not self.config.noexec_off:
            self.efer |= x86.EFER_NXE
            self.supported_pte_mask |= x86.NX

    def paging_init(self) -> None:
        if self.config.pae:
            self.set_nx()
        self.pagetable_init()
        self.load_cr3(self.layout.swapper_pg_dir)  # Xen: hyp_new_baseptr, the same CR3
        if self.config.pae and self.config.cpu_pae:
            self.set_in_cr4(x86.CR4_PAE)  # the CPU now loads the PDPT from swapper_pg_dir
        # __flush_tlb_all() toggles CR4.PGE (or reloads CR3): no net register change.
        # kmap_init() only looks up the kmap pte: no table changes.


def _live_tables(mem: ImageMemory, cpu: CpuState) -> frozenset[int]:
    """The table frames reachable from the before-state's CR3 through present entries."""
    def entries(table: int, size: int, count: int) -> tuple[int, ...]:
        page = mem.pages.get(table & PAGE_MASK)
        if page is None:
            return ()
        off = table & (x86.PAGE_SIZE - 1)
        return struct.unpack_from(f"<{count}{'Q' if size == 8 else 'I'}", page, off)

    if not cpu.paging:
        return frozenset(mem.pages)
    if cpu.pae:
        root = cpu.cr3 & ~0x1F & MASK32
        dirs = [e & PAGE_MASK for e in entries(root, 8, 4) if e & x86.PRESENT]
        frames = {root & PAGE_MASK, *dirs}
        size, count, leaf_pse = 8, 512, True
    else:
        dirs = [cpu.cr3 & PAGE_MASK]
        frames = set(dirs)
        size, count, leaf_pse = 4, 1024, cpu.pse
    for d in dirs:
        for e in entries(d, size, count):
            if e & x86.PRESENT and not (e & x86.PSE and leaf_pse):
                frames.add(e & PAGE_MASK)
    return frozenset(frames)


def _boot_alloc_cursor(before: Snapshot) -> int:
    guest = before.guest or {}
    if "boot_alloc_cursor" not in guest:
        raise ModelError("before-state lacks guest variable 'boot_alloc_cursor' (the boot"
                         " allocator's next page); the snapshot must record it")
    raw = guest["boot_alloc_cursor"]
    try:
        cursor = int(raw, 0) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        raise ModelError(f"before-state: boot_alloc_cursor={raw!r} is not a number") from None
    if cursor % x86.PAGE_SIZE:
        raise ModelError(f"before-state: boot_alloc_cursor={cursor:#x} is not page aligned")
    return cursor


def predict(before: Snapshot, config: KernelConfig, image: KernelImage) -> Prediction:
    """Run paging_init() over the before-state and return what it must leave behind."""
    if config.pae and not config.cpu_pae:
        raise ModelError("unsupported: a PAE build on a CPU without PAE (cpu_pae=False);"
                         " the kernel refuses to boot (guest exit code 3)")
    if config.pv not in BACKENDS:
        raise ModelError(f"unknown paravirt backend pv={config.pv!r};"
                         f" known: {', '.join(sorted(BACKENDS))}")
    # Under Xen max_pfn comes from the start info (docs/xen.md), not from the firmware.
    nr_pages = xen_start_info(before)["nr_pages"] if config.pv == "xen" else None
    layout = compute_layout(config, image, nr_pages)
    backend = BACKENDS[config.pv]()
    k = Kernel(config, layout, before, backend)
    _check_cursor_outside_image(k.cursor, image)
    backend.check_entry_state(k, before)

    bug = ""
    try:
        k.paging_init()
    except KernelBug as e:
        bug = str(e)  # the guest ends here too: everything so far is the prediction
    else:
        # The run-time protections must be the ones the layout announces to the checks.
        assert k.page_kernel & k.supported_pte_mask == layout.prot_kernel
        assert k.page_kernel_exec & k.supported_pte_mask == layout.prot_kernel_exec
    mmu_updates, pins = backend.hypercall_counts()
    return Prediction(
        config=config, layout=layout,
        cpu=CpuState(cr0=k.cr0, cr3=k.cr3, cr4=k.cr4, efer=k.efer),
        memory=k.mem, allocations=list(k.allocations), hook_log=list(k.hook_log),
        cursor_after=k.cursor, roles=dict(k.roles), direct_map_end_pfn=k.direct_map_end_pfn,
        pkmap_page_table=k.pkmap_page_table, hypervisor_tables=backend.hypervisor_tables(),
        hypervisor_flags=backend.hypervisor_flags(), mmu_updates=mmu_updates, pins=pins,
        bug=bug)


def predict_work(before: Snapshot, after: Snapshot, config: KernelConfig,
                 image: KernelImage) -> WorkPrediction:
    """Run what follows paging_init up to work_done over the state at
    paging_init_done. Each phase is predicted from the state observed at its
    start, so a wrong pagetable_init is reported once, by the model check,
    and the work phase is judged on its own."""
    if config.pv not in BACKENDS:
        raise ModelError(f"unknown paravirt backend pv={config.pv!r}")
    nr_pages = xen_start_info(after)["nr_pages"] if config.pv == "xen" else None
    layout = compute_layout(config, image, nr_pages)
    backend = BACKENDS[config.pv]()
    k = Kernel(config, layout, after, backend)
    # The run-time protections and pointers paging_init left behind.
    k.supported_pte_mask = layout.supported_pte_mask
    glob = x86.GLOBAL if config.kernel_pge else 0
    k.page_kernel = x86.PAGE_KERNEL_EXEC | glob | (x86.NX if config.pae else 0)
    k.page_kernel_exec = x86.PAGE_KERNEL_EXEC | glob
    slot = k.pte_slot(layout.pkmap_base)
    if slot is None:
        raise ModelError(f"paging_init_done: no PTE page for PKMAP_BASE {layout.pkmap_base:#x}")
    k.pkmap_page_table = slot - k.g.pte_index(layout.pkmap_base) * k.es
    k.hook_log = [tuple(h) for h in (after.guest or {}).get("hook_log") or []]
    resume = getattr(backend, "resume_at_work", None)
    if resume is not None:
        resume(k, before)
    return k.work_phase(virt_to_phys(image.symbol("_text")))


def _check_cursor_outside_image(cursor: int, image: KernelImage) -> None:
    lo, hi = virt_to_phys(image.symbol("_text")), virt_to_phys(image.symbol("_end"))
    if lo <= cursor < hi:
        raise ModelError(f"before-state: boot_alloc_cursor={cursor:#x} lies inside the kernel"
                         f" image [{lo:#x}, {hi:#x}); the allocator would hand out kernel pages")
