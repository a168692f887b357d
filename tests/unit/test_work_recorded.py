"""The work, smp and probes layers on recordings of real QEMU runs
(tests/data/record_snapshots.py): the patched guest passes at work_done, and
one thing changed in a real recording -- a kernel PTE page the second
pagetable lacks, a low mapping left after the zap, an AP on another CR3, an
AP that faulted at its identity address, an instruction fetch NX should have
stopped -- is named by the layer and at the address where it was changed.

Expected values are worked out here from the recorded symbols and the spec."""
from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import pytest

from harness import checks, elf, fixmap, report, runner, scenarios, walker, x86
from harness.snapshot import Snapshot

DATA = Path(__file__).resolve().parents[1] / "data" / "snapshots"
LABELS = ("before", "after", "work", "work-swapper")


def load(case: str):
    sid = case.split("@")[0]
    d = DATA / case
    snaps = {n: Snapshot.from_dict(json.loads(gzip.open(d / f"{n}.json.gz").read())) for n in LABELS}
    meta = json.loads((d / "symbols.json").read_text())
    image = elf.KernelImage(symbols={k: int(v, 16) for k, v in meta["symbols"].items()})
    machine = json.loads((d / "work-machine.json").read_text())
    return scenarios.get(sid), image, bytes.fromhex(meta["text16"]), snaps, machine


def judge(case: str, edit=None) -> checks.Verdict:
    """The three layers on a recording; `edit(snaps, machine)` changes it first."""
    s, image, text, snaps, machine = load(case)
    if edit is not None:
        edit(snaps, machine)
    w = runner.WorkEvidence(cpus=machine["cpus"], tables=snaps["work"], swapper=snaps["work-swapper"],
                            physical=machine["physical"])
    v = checks.Verdict()
    opt = runner.RunOptions(variant=case.split("@")[1])
    pred, _ = runner.predict(s, opt, image, snaps["before"])
    runner.judge_work(s, opt, image, text, snaps["before"], snaps["after"], w,
                      pred.hook_log if pred else [], v)
    return v


def groups(v: checks.Verdict, check: str, rule: str | None = None):
    return [g for g in report.group([f for f in v.findings if f.check == check])
            if rule is None or g.rule == rule]


def rewalk(snap: Snapshot, edit) -> Snapshot:
    """The snapshot's tables as memory, changed by edit(mem), walked again."""
    mem = snap.memory()
    edit(mem)
    w = walker.walk(mem, snap.cpu)
    return Snapshot.from_walk(w, snap.label, registers=snap.registers, guest=snap.guest,
                              scenario=snap.scenario)


@pytest.mark.parametrize("case", ["pae-pse-pge-nx-1G-smp4@patched", "nopae-pse-pge-128M-smp2@patched",
                                  "xen-nopae-16M@patched", "pae-nopse-pge-nx-16M@patched",
                                  "nopae-nopse-pge-16M@patched"])
def test_patched_recordings_pass_at_work(case):
    s = scenarios.get(case.split("@")[0])
    v = judge(case)
    assert v.findings == [], report.render(case, v)
    assert v.ran == (["work", "smp", "probes"] if s.smp > 1 else ["work", "probes"])


def test_a_kernel_pte_page_missing_from_the_second_pagetable_is_named():
    """Drop the second pagetable's PDE for the fixmap's 4 MiB (non-PAE): the PTE
    page swapper_pg_dir has there is missing from it, and so is the late slot."""
    case = "nopae-pse-pge-128M-smp2@patched"
    fix_va = 0xFFFFF000 - fixmap.FIX_VDSO * x86.PAGE_SIZE
    chunk = fix_va & ~0x3FFFFF

    def edit(snaps, machine):
        root = snaps["work"].cpu.cr3 & ~0xFFF
        snaps["work"] = rewalk(snaps["work"], lambda m: m.write_entry(root + (fix_va >> 22) * 4, 4, 0))
    v = judge(case, edit)
    shared = groups(v, "work", "shared-pte")
    assert [(g.va, g.end) for g in shared] == [(chunk, chunk + (4 << 20))]
    assert shared[0].actual.startswith("the second pagetable: no PTE page (swapper_pg_dir's is 0x")
    late = groups(v, "work", "late-entries")
    assert [(g.va, g.expected.split(" through ")[1]) for g in late] == \
        [(fix_va, "the second pagetable")]
    assert "pgd entry" in late[0].actual and "not present" in late[0].actual
    assert {g.rule for g in groups(v, "work")} == {"shared-pte", "late-entries", "model second pagetable"}


def test_a_low_mapping_left_after_the_zap_is_named():
    """PAE: PDPT slot 0 of swapper_pg_dir still sharing the kernel PMD page."""
    case = "pae-pse-pge-nx-1G-smp4@patched"

    def edit(snaps, machine):
        sw = snaps["work-swapper"]
        root = sw.cpu.cr3 & ~0x1F
        mem = sw.memory()
        kernel_slot = mem.read_entry(root + 3 * 8, 8)
        snaps["work-swapper"] = rewalk(sw, lambda m: m.write_entry(root, 8, kernel_slot))
    v = judge(case, edit)
    zapped = groups(v, "work", "zapped")
    # Slot 0 is the kernel's 1 GiB again: lowmem at 0, then the pkmap and fixmap aliases.
    assert (zapped[0].va, zapped[0].actual) == (0, "swapper_pg_dir maps it, from 0x0 -> 0x0")
    assert all(g.end <= 1 << 30 for g in zapped) and len(zapped) == 3
    model = groups(v, "work", "model swapper_pg_dir")
    assert (model[0].level, model[0].va) == ("pgd", 0)
    assert all(g.va < 1 << 30 for g in model)  # and the entries of the PMD page it reaches


def test_an_ap_on_another_cr3_is_named_by_both_opinions():
    case = "pae-pse-pge-nx-1G-smp4@patched"

    def edit(snaps, machine):
        g = copy.deepcopy(snaps["work"].guest)
        g["cpus"][2]["cr3"] = 0x00200000
        snaps["work"].guest = g
        machine["cpus"][3]["cr3"] = 0x00300000
    v = judge(case, edit)
    regs = [g.expected + " | " + g.actual for g in groups(v, "smp", "registers")]
    assert len(regs) == 2
    assert any("CPU 2 (APIC 2): cr3=" in r and "cr3=0x200000 (its record)" in r for r in regs)
    assert any("CPU 3 (APIC 3): cr3=" in r and "(gdb thread" in r for r in regs)


def test_an_ap_that_faulted_at_its_identity_address_names_the_level():
    """CPU 1's record says #PF at an identity address; the tables at
    paging_init_done are changed to match (PDPT slot 0 on the zero page)."""
    case = "pae-pse-pge-nx-1G-smp4@patched"
    s, image, *_ = load(case)
    eip = 0x00102340
    zero = image.symbols["empty_zero_page"] - x86.PAGE_OFFSET

    def edit(snaps, machine):
        g = copy.deepcopy(snaps["work"].guest)
        g["cpus"][1].update(state=3, fault_vector=14, fault_error=0x10, fault_eip=eip, fault_cr2=eip)
        g["smp_cpus_up"] = 3
        snaps["work"].guest = g
        after = snaps["after"]
        root = after.cpu.cr3 & ~0x1F
        snaps["after"] = rewalk(after, lambda m: m.write_entry(root, 8, zero | 1))
    v = judge(case, edit)
    started = groups(v, "smp", "started")
    assert [g.expected for g in started] == ["smp_cpus_up=4", "CPU 1 (APIC 1) running at PAGE_OFFSET"]
    g = started[1]
    assert g.actual == f"#PF at EIP {eip:#x}, CR2 {eip:#x}, error 0x10"
    assert g.va == eip & ~0xFFF and g.level == "pmd"
    assert g.first.detail.startswith(f"faulted on {eip:#x} (an identity address); at "
                                     f"paging_init_done its pmd entry {zero:#x} = 0x0: not present")


def test_an_instruction_fetch_nx_should_have_stopped_is_the_probes_finding():
    """PAE without PSE, NX active: the `ret` in probe_data_page must fault."""
    case = "pae-nopse-pge-nx-16M@patched"
    s, image, *_ = load(case)
    data = image.symbols["probe_data_page"]

    def edit(snaps, machine):
        g = copy.deepcopy(snaps["work"].guest)
        assert g["probes"][0]["id"] == 1 and g["probes"][0]["faulted"] == 1
        g["probes"][0].update(faulted=0, vector=0, error=0, cr2=0, eip=0)
        snaps["work"].guest = g
    v = judge(case, edit)
    probe = groups(v, "probes")
    assert [(g.rule, g.va, g.expected, g.actual) for g in probe] == [
        ("exec-data", data, f"#PF error 0x11 cr2 {data:#x}", "no fault: the access went through")]


def test_prepatch_bug_a_recording_fails_only_the_probes_at_work():
    """The pre-patch guest's own run: bug A shows as the CPU's verdict; the work
    phase, judged from the tables it started on, is right."""
    v = judge("pae-nopse-pge-nx-16M@prepatch")
    assert v.failed_checks() == ["probes"]
    assert [g.rule for g in groups(v, "probes")] == ["exec-data"]
