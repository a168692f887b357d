"""The `work` check layer: the tables doing the jobs the seed patch built them
for, read at work_done (kernel-facts §8-9, docs/guest-contract.md "The tables
at work").

By then the kernel has mapped the local APIC (natively), zapped the low
mappings, built a second pagetable with pgd_alloc, switched CR3 to it and only
then set a fixmap slot and kmapped a highmem page. Rules:

- model:        both pagetables (from CR3 and from swapper_pg_dir), the work
                phase's allocations and hook calls equal the model's work phase
                run over the tables observed at paging_init_done (so a wrong
                pagetable_init is the model check's, reported once);
- shared-pte:   every kernel PTE page reachable from one pagetable is the same
                frame in the other ("Xen requires all kernel mappings to share
                the same pte_t pages between all pagetables");
- late-entries: the fixmap slot and the kmap set after the copy translate to
                their frames through both pagetables;
- reads:        what the guest read through them equals the ELF's bytes and
                gdb's physical read of the same frames;
- zapped:       no mapping below PAGE_OFFSET is left in either pagetable.
"""
from __future__ import annotations

import bisect
from dataclasses import replace

from . import checks, walker, x86
from .checks import Finding
from .model import WorkPrediction
from .snapshot import Snapshot

CHECK = "work"


def check_work(tables: Snapshot, swapper: Snapshot, physical: dict[str, str], text_bytes: bytes,
               after: Snapshot, pred: WorkPrediction | None) -> list[Finding]:
    """tables: the walk from CR3 at work_done; swapper: from swapper_pg_dir;
    after: the snapshot at paging_init_done the work phase started from;
    physical: gdb's physical read of the late frames; text_bytes: the ELF's
    first 16 bytes of _text (what the late fixmap slot maps)."""
    out: list[Finding] = []
    rec = (tables.guest or {}).get("pgd2")
    if rec is None:
        return [Finding(CHECK, "record", "a pgd2_record in the guest", "none (symbol missing)")]
    root = tables.cpu.cr3 & (~0x1F if tables.cpu.pae else ~0xFFF) & 0xFFFFFFFF
    if rec["root_pa"] != root:
        out.append(Finding(CHECK, "record", f"CR3 on the second pagetable {rec['root_pa']:#x}",
                           f"CR3 {tables.cpu.cr3:#x}"))
    if pred is not None:
        out += _against_model(tables, swapper, after, pred)
    out += check_shared_pte_pages(tables, swapper)
    out += check_zapped(tables, "the second pagetable") + check_zapped(swapper, "swapper_pg_dir")
    out += _late_entries(tables, swapper, rec, pred)
    out += _reads(rec, physical, text_bytes)
    return out


def _against_model(tables: Snapshot, swapper: Snapshot, after: Snapshot,
                   pred: WorkPrediction) -> list[Finding]:
    out = []
    for name, snap, cpu in (("second pagetable", tables, pred.cpu),
                            ("swapper_pg_dir", swapper, pred.swapper_cpu)):
        if snap.cpu.cr3 != cpu.cr3:
            out.append(Finding(CHECK, "model", f"{name} at {cpu.cr3:#x}", f"at {snap.cpu.cr3:#x}"))
            continue
        expected = walker.walk(pred.memory, cpu).tables
        out += [replace(f, rule=f"model {name}") for f in
                checks.compare_tables(CHECK, expected, cpu, snap.tables, snap.cpu)]
    # The work phase's allocations and hook calls, after pagetable_init's.
    done = len((after.guest or {}).get("hook_log") or [])
    return out + checks.check_progress(after, tables.guest or {}, pred.allocations,
                                       pred.hook_log[done:], check=CHECK, rule_prefix="model ")


def check_hypercalls(at_after: dict, at_work: dict, pred: WorkPrediction) -> list[Finding]:
    """pv=xen: the hypervisor's counters over the work phase against the model's."""
    out = []
    for name, want in (("hyp_mmu_update_count", pred.mmu_updates), ("hyp_pin_count", pred.pins)):
        if name in at_after and name in at_work and at_work[name] - at_after[name] != want:
            out.append(Finding(CHECK, "hypercalls", f"{name} +{want} in the work phase",
                               f"+{at_work[name] - at_after[name]}"))
    return out


def figures(tables: Snapshot, swapper: Snapshot) -> str:
    shared = len(set(pte_pages(tables).items()) & set(pte_pages(swapper).items()))
    return (f"second pagetable at {tables.cpu.cr3:#x}: {len(tables.tables)} table pages, "
            f"{shared} kernel PTE pages shared with swapper_pg_dir")


def pte_pages(snap: Snapshot) -> dict[int, int]:
    """Kernel VA of each 4 KiB-page table's reach -> the PTE page's frame, for
    every PTE page reachable from the snapshot's root above PAGE_OFFSET."""
    cpu = snap.cpu
    out = {}
    for (level, va), page in checks.pages_by_va(snap.tables, cpu).items():
        if level == "pte" and va >= x86.PAGE_OFFSET:
            out[va] = page.phys
    return out


def check_shared_pte_pages(tables: Snapshot, swapper: Snapshot) -> list[Finding]:
    mine, theirs = pte_pages(tables), pte_pages(swapper)
    span = x86.geometry(tables.cpu.pae).pmd_size
    out = []
    for va in sorted(set(mine) | set(theirs)):
        a, b = mine.get(va), theirs.get(va)
        if a == b:
            continue
        if a is None:
            where, text = "the second pagetable", f"no PTE page (swapper_pg_dir's is {b:#x})"
        elif b is None:
            where, text = "swapper_pg_dir", f"no PTE page (the second pagetable's is {a:#x})"
        else:
            where, text = "the second pagetable", f"PTE page {a:#x}, swapper_pg_dir's is {b:#x}"
        out.append(Finding(CHECK, "shared-pte", "the same PTE page in both pagetables",
                           f"{where}: {text}", level="pmd" if tables.cpu.pae else "pgd", va=va,
                           span=span, expected_value=b, actual_value=a))
    return out


def check_zapped(snap: Snapshot, name: str) -> list[Finding]:
    """One finding per VA-contiguous run of user-range mappings."""
    runs: list[list] = []  # [start, end, pa of start]
    for r in snap.ranges:
        if r.va >= x86.PAGE_OFFSET:
            break
        end = min(r.va + r.size, x86.PAGE_OFFSET)
        if runs and runs[-1][1] == r.va:
            runs[-1][1] = end
        else:
            runs.append([r.va, end, r.pa])
    return [Finding(CHECK, "zapped", "nothing mapped below PAGE_OFFSET after the zap",
                    f"{name} maps it, from {start:#x} -> {pa:#x}", level="leaf", va=start,
                    span=end - start) for start, end, pa in runs]


def _translation(snap: Snapshot, va: int) -> tuple[int | None, str]:
    """Where va leads in the snapshot; when nowhere, the entry that stops the walk."""
    i = bisect.bisect_right([r.va for r in snap.ranges], va) - 1
    if i >= 0 and va < snap.ranges[i].va + snap.ranges[i].size:
        r = snap.ranges[i]
        return r.pa + (va - r.va), "mapped"
    steps = walker.walk_va(snap.memory(), snap.cpu, va)
    if steps and steps[-1].pa is not None:
        return steps[-1].pa, steps[-1].what
    last = steps[-1] if steps else None
    return None, (f"{last.level} entry {last.entry_addr:#x} = {last.entry:#x}: {last.what}"
                  if last else "paging off")


def _late_entries(tables: Snapshot, swapper: Snapshot, rec: dict,
                  pred: WorkPrediction | None) -> list[Finding]:
    out = []
    wanted = [("fix", rec["fix_va"], rec["fix_pa"], "the late fixmap slot")]
    if rec["kmap_va"] or (pred is not None and pred.kmap_va):
        wanted.append(("kmap", rec["kmap_va"], rec["kmap_pa"], "the kmap of the first highmem page"))
    for name, va, pa, what in wanted:
        if pred is not None:
            exp_va, exp_pa = getattr(pred, f"{name}_va"), getattr(pred, f"{name}_pa")
            if (va, pa) != (exp_va, exp_pa):
                out.append(Finding(CHECK, "late-entries", f"{what} at {exp_va:#x} -> {exp_pa:#x}",
                                   f"the guest's record: {va:#x} -> {pa:#x}"))
                va, pa = exp_va, exp_pa
        for where, snap in (("the second pagetable", tables), ("swapper_pg_dir", swapper)):
            got, text = _translation(snap, va)
            if got != pa:
                out.append(Finding(CHECK, "late-entries", f"{what} -> {pa:#x} through {where}",
                                   text if got is None else f"-> {got:#x}", level="pte", va=va,
                                   span=x86.PAGE_SIZE))
    return out


def _reads(rec: dict, physical: dict[str, str], text_bytes: bytes) -> list[Finding]:
    out = []
    if rec["fix_faulted"]:
        out.append(Finding(CHECK, "reads", "the late fixmap slot readable on the second pagetable",
                           "the guest's read faulted", level="pte", va=rec["fix_va"], span=x86.PAGE_SIZE))
    elif rec["fix_bytes"] != text_bytes.hex():
        out.append(Finding(CHECK, "reads", f"the first bytes of _text {text_bytes.hex()}",
                           f"read through the fixmap: {rec['fix_bytes']}", va=rec["fix_va"]))
    if "fix" in physical and physical["fix"] != text_bytes.hex():
        out.append(Finding(CHECK, "reads", f"the first bytes of _text {text_bytes.hex()}",
                           f"at physical {rec['fix_pa']:#x}: {physical['fix']}"))
    if rec["kmap_va"]:
        if rec["kmap_faulted"]:
            out.append(Finding(CHECK, "reads", "the kmap readable on the second pagetable",
                               "the guest's read faulted", level="pte", va=rec["kmap_va"],
                               span=x86.PAGE_SIZE))
        elif physical.get("kmap") != rec["kmap_bytes"]:
            out.append(Finding(CHECK, "reads", f"at physical {rec['kmap_pa']:#x}: {physical.get('kmap')}",
                               f"read through the kmap: {rec['kmap_bytes']}", va=rec["kmap_va"]))
    return out
