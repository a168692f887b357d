"""The guest's records, decoded as docs/guest-contract.md (and docs/xen.md) lay
them out: its variables, the multiboot memory size, the paravirt hook log, the
Xen-like start info, the hypervisor's audit record and counters (local symbols
of its relocatable: harness.elf keeps those too) and its own pages, and the
records of the tables at work: one per CPU, one per probe, the second
pagetable's.

Everything is read through physical addresses (`__pa` of each symbol, and of
each pointer the guest keeps), so the records can still be read when the
guest's own kernel mapping is broken — exactly the runs whose records explain
the fault. `read` takes any `read_physical(addr, size) -> bytes`: an MI session,
gdb's own inferior in a debug session, or a recorded memory image in tests.
"""
from __future__ import annotations

import struct
from typing import Callable

from . import x86

# 32-bit variables recorded with each snapshot, by symbol name.
VARIABLES = ("boot_alloc_start", "boot_alloc_cursor", "init_pg_tables_end", "init_map_end",
             "max_pfn", "max_low_pfn", "fixaddr_top", "vmalloc_reserve", "nx_enabled",
             "kmap_pte", "guest_cpu_features",
             # pv=xen: the hypervisor's own counters (docs/xen.md)
             "hyp_mmu_update_count", "hyp_pin_count",
             # the tables at work
             "smp_nr_cpus", "smp_cpus_up", "smp_trampoline_pa", "mmu_cr4_features",
             "probe_count")
MB_MEM_UPPER = 8          # offset of mem_upper (KiB above 1 MiB) in the multiboot info
HOOK_ENTRY = 8            # struct { u32 op; u32 pfn; }
HOOK_LOG_MAX = 2048       # PV_HOOK_LOG_MAX
HOOK_NAMES = {1: "alloc_pd", 2: "alloc_pt", 3: "pin", 4: "alloc_pd_clone"}
VIOLATION_SIZE, VIOLATIONS_MAX = 24, 1024  # struct { u32 kind, entry_pa; u64 value; u32 frame, va; }
VIOLATION_FIELDS = ("kind", "entry_pa", "value", "frame", "va")
START_INFO_FIELDS = ("magic", "nr_pages", "shared_info", "pt_base", "nr_pt_frames",
                     "hypervisor_virt_start", "reserve_top", "flags")

# struct smp_cpu_record, indexed by APIC id, NR_CPUS of them
NR_CPUS = 4
CPU_FIELDS = ("state", "apic_id", "cr0", "cr3", "cr4", "efer_lo", "efer_hi", "fault_vector",
              "fault_error", "fault_eip", "fault_cr2", "reserved")
CPU_STATES = {0: "none", 1: "protected-mode", 2: "running", 3: "faulted", 4: "boot-cpu"}
# struct probe_record
PROBE_FIELDS = ("id", "va", "faulted", "vector", "error", "cr2", "eip", "reserved")
PROBES_MAX = 16
PROBE_NAMES = {1: "exec-data", 2: "exec-text", 3: "write-data", 4: "write-root",
               5: "write-pte", 6: "read-identity"}
# struct pgd2_record: twelve u32, then two 16-byte reads
PGD2_FIELDS = ("root_pa", "nr_pmds", "fix_idx", "fix_va", "fix_pa", "fix_faulted", "kmap_va",
               "kmap_pa", "kmap_faulted")
PGD2_SIZE = 12 * 4 + 32

ReadPhysical = Callable[[int, int], bytes]


def pa_of(va: int) -> int:
    """__pa() of a kernel virtual address."""
    if va < x86.PAGE_OFFSET:
        raise ValueError(f"{va:#x} is not a kernel virtual address")
    return va - x86.PAGE_OFFSET


def _structs(raw: bytes, fmt: str, fields: tuple[str, ...], n: int) -> list[dict]:
    """n records of struct.pack format fmt, one after the other, as dicts."""
    size = struct.calcsize(fmt)
    return [dict(zip(fields, struct.unpack_from(fmt, raw, i * size))) for i in range(n)]


def read(read_physical: ReadPhysical, symbols: dict[str, int]) -> dict:
    """Every record the guest's symbols make available, as plain JSON-able values."""
    def at(name: str, size: int, offset: int = 0) -> bytes:
        return read_physical(pa_of(symbols[name]) + offset, size)

    def u32(name: str, offset: int = 0) -> int:
        return int.from_bytes(at(name, 4, offset), "little")

    state: dict = {name: u32(name) for name in VARIABLES if name in symbols}
    if "multiboot_info" in symbols:
        state["mb_mem_upper"] = u32("multiboot_info", MB_MEM_UPPER)
    if "xen_start_info" in symbols:
        info_va = u32("xen_start_info")
        if info_va >= x86.PAGE_OFFSET:
            state["start_info_va"] = info_va
            raw = read_physical(pa_of(info_va), 4 * len(START_INFO_FIELDS))
            state["start_info"] = dict(zip(START_INFO_FIELDS,
                                           struct.unpack(f"<{len(START_INFO_FIELDS)}I", raw)))
    if "__hyp_start" in symbols and "__hyp_end" in symbols:
        # The hypervisor's own pages (docs/xen.md), from the image, not from memory:
        # the invariants hold them read-only under pv=xen.
        state["hyp_frames"] = [pa_of(symbols["__hyp_start"]),
                               -(-pa_of(symbols["__hyp_end"]) // x86.PAGE_SIZE) * x86.PAGE_SIZE]
    if "hyp_violation_count" in symbols and "hyp_violations" in symbols:
        count = u32("hyp_violation_count")
        n = min(count, VIOLATIONS_MAX)
        raw = at("hyp_violations", n * VIOLATION_SIZE) if n else b""
        state["violation_count"] = count
        state["violations"] = _structs(raw, "<IIQII", VIOLATION_FIELDS, n)
    if "pv_hook_log" in symbols and "pv_hook_log_len" in symbols:
        count = min(u32("pv_hook_log_len"), HOOK_LOG_MAX)
        raw = at("pv_hook_log", count * HOOK_ENTRY) if count else b""
        state["hook_log"] = [list(struct.unpack_from("<II", raw, i))
                             for i in range(0, len(raw), HOOK_ENTRY)]
    if "smp_cpu_records" in symbols:
        raw = at("smp_cpu_records", NR_CPUS * 4 * len(CPU_FIELDS))
        state["cpus"] = _structs(raw, f"<{len(CPU_FIELDS)}I", CPU_FIELDS, NR_CPUS)
    if "probe_records" in symbols and "probe_count" in symbols:
        n = min(state.get("probe_count", 0), PROBES_MAX)
        raw = at("probe_records", n * 4 * len(PROBE_FIELDS)) if n else b""
        state["probes"] = _structs(raw, f"<{len(PROBE_FIELDS)}I", PROBE_FIELDS, n)
    if "pgd2_record" in symbols:
        raw = at("pgd2_record", PGD2_SIZE)
        rec = dict(zip(PGD2_FIELDS, struct.unpack_from(f"<{len(PGD2_FIELDS)}I", raw)))
        rec["fix_bytes"], rec["kmap_bytes"] = raw[48:64].hex(), raw[64:80].hex()
        state["pgd2"] = rec
    return state


def hook_name(entry) -> str:
    op, pfn = entry
    return f"{HOOK_NAMES.get(op, op)}(pfn {pfn:#x})"
