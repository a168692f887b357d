"""The `smp` check layer: the application processors started through the low
identity mapping (kernel-facts §8).

An AP enters startup_32_smp at its physical address, loads CR4 from
mmu_cr4_features, CR3 = __pa(swapper_pg_dir), sets CR0.PG while still running
at the identity address and jumps to the PAGE_OFFSET alias. Each AP records
its state and registers (docs/guest-contract.md "SMP"); gdb sees every vCPU as
a thread. Rules:

- started:  every CPU the scenario asks for is up at PAGE_OFFSET; an AP that
            faulted is named with its fault and what the tables at
            paging_init_done hold for the address it faulted on;
- registers: every AP runs on swapper_pg_dir with the BSP's CR4 paging bits
            (PSE/PGE/PAE), CR0.PG, and EFER.NXE where PAE is on and CPUID has
            NX (head.S asks the CPU, not noexec=), by its own record and by gdb;
- vcpus:    gdb sees as many vCPUs as QEMU was given, each AP halted in the
            kernel (EIP above PAGE_OFFSET).
"""
from __future__ import annotations

from . import records, walker, x86
from .checks import Finding
from .snapshot import Snapshot

CHECK = "smp"
PAGING_CR4 = x86.CR4_PSE | x86.CR4_PGE | x86.CR4_PAE
RUNNING, FAULTED = 2, 3
VECTOR_NAMES = {0: "#DE", 6: "#UD", 8: "#DF", 10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF"}


def check_smp(ncpus: int, swapper_pa: int, ap_nxe: bool, after: Snapshot, work_state: dict,
              vcpus: list[dict]) -> list[Finding]:
    """ncpus: the scenario's smp=; ap_nxe: whether startup_32_smp sets EFER.NXE
    (PAE and a CPU with NX, whatever noexec= says); after: the BSP's snapshot
    at paging_init_done (its CR4 paging bits are the ones the APs must take,
    its tables the ones they started on); work_state: the guest's records at
    work_done; vcpus: gdb's registers of every vCPU there."""
    out: list[Finding] = []
    cpus = work_state.get("cpus")
    if cpus is None:
        return [Finding(CHECK, "record", "smp_cpu_records in the guest", "none (symbol missing)")]
    for name, want in (("smp_nr_cpus", ncpus), ("smp_cpus_up", ncpus)):
        if work_state.get(name) != want:
            out.append(Finding(CHECK, "started", f"{name}={want}", f"{name}={work_state.get(name)}"))
    if len(vcpus) != ncpus:
        out.append(Finding(CHECK, "vcpus", f"{ncpus} vCPUs in gdb", f"{len(vcpus)}"))
    bsp = after.cpu
    want_cr4 = bsp.cr4 & PAGING_CR4
    want_nxe = x86.EFER_NXE if ap_nxe else 0
    for apic in range(1, ncpus):
        rec = cpus[apic] if apic < len(cpus) else {}
        who = f"CPU {apic} (APIC {apic})"
        state = rec.get("state", 0)
        if state == FAULTED:
            out.append(_fault_finding(who, rec, after))
            continue
        if state != RUNNING:
            out.append(Finding(CHECK, "started", f"{who} running at PAGE_OFFSET",
                               f"state {records.CPU_STATES.get(state, state)}"))
            continue
        regs = {"cr0": rec["cr0"], "cr3": rec["cr3"], "cr4": rec["cr4"],
                "efer": rec["efer_lo"] | rec["efer_hi"] << 32}
        out += _mode(who, "its record", regs, swapper_pa, want_cr4, want_nxe)
        if rec["apic_id"] != apic:
            out.append(Finding(CHECK, "started", f"{who} records APIC id {apic}",
                               f"APIC id {rec['apic_id']}"))
        if apic < len(vcpus):
            v = vcpus[apic]
            out += _mode(who, f"gdb thread {v['thread']}", v, swapper_pa, want_cr4, want_nxe)
            if v["eip"] < x86.PAGE_OFFSET:
                out.append(Finding(CHECK, "vcpus", f"{who} halted in the kernel (EIP >= PAGE_OFFSET)",
                                   f"EIP {v['eip']:#x}"))
    return out


def _mode(who: str, source: str, regs: dict, swapper_pa: int, want_cr4: int,
          want_nxe: int) -> list[Finding]:
    out = []
    checks_ = (("cr3", swapper_pa, regs["cr3"] & ~0x1F & 0xFFFFFFFF, "__pa(swapper_pg_dir)"),
               ("cr4 paging bits", want_cr4, regs["cr4"] & PAGING_CR4, "the BSP's"),
               ("efer.nxe", want_nxe, regs["efer"] & x86.EFER_NXE, "PAE and CPUID NX"),
               ("cr0.pg", x86.CR0_PG, regs["cr0"] & x86.CR0_PG, "paging on"))
    for name, want, got, why in checks_:
        if want != got:
            out.append(Finding(CHECK, "registers", f"{who}: {name}={want:#x} ({why})",
                               f"{name}={got:#x} ({source})"))
    return out


def _fault_finding(who: str, rec: dict, after: Snapshot) -> Finding:
    vector = rec["fault_vector"]
    cr2 = rec["fault_cr2"]
    name = VECTOR_NAMES.get(vector, f"vector {vector}")
    where = cr2 if vector == 14 else rec["fault_eip"]
    identity = " (an identity address)" if where < x86.PAGE_OFFSET else ""
    steps = walker.walk_va(after.memory(), after.cpu, where)
    last = steps[-1] if steps else None
    tables = (f"; at paging_init_done its {last.level} entry {last.entry_addr:#x} = "
              f"{last.entry:#x}: {last.what}") if last else ""
    return Finding(CHECK, "started", f"{who} running at PAGE_OFFSET",
                   f"{name} at EIP {rec['fault_eip']:#x}, CR2 {cr2:#x}, error {rec['fault_error']:#x}",
                   level=last.level if last else None, va=where & ~0xFFF, span=x86.PAGE_SIZE,
                   detail=f"faulted on {where:#x}{identity}{tables}")
