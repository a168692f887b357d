"""The tables at work, on real QEMU: APs started through the identity slot, the
low mappings zapped, a second pagetable sharing the kernel's PTE pages, and
the CPU's own verdict (the work, smp and probes layers).

Each layer is shown to pass on the patched guest and to name the failure of a
guest broken on purpose (test-only MUTANT= builds, docs/guest.md), with the
expected addresses computed here from the ELF's symbols and the spec."""
from __future__ import annotations

import pytest

from harness import elf, fixmap, runner, scenarios, x86

from .test_blind_spots import groups, mutant_builds, run_mutant  # noqa: F401  (fixtures)

pytestmark = pytest.mark.qemu


@pytest.mark.parametrize("sid", ["nopae-pse-pge-128M-smp2", "pae-pse-pge-nx-1G-smp4",
                                 "nopae-nopse-pge-1G", "xen-pae-nx-896M", "xen-nopae-1G"])
def test_the_tables_at_work_pass_and_say_what_they_measured(run_scenario, sid):
    s = scenarios.get(sid)
    r = run_scenario(s)
    assert r.status == "PASS", r.report
    assert {"work", "probes"} <= set(r.verdict.ran)
    assert ("smp" in r.verdict.ran) == (s.smp > 1)
    assert "work        ok (second pagetable at" in r.report
    if s.smp > 1:
        assert f"smp         ok ({s.smp} of {s.smp} CPUs at PAGE_OFFSET, {s.smp} vCPUs" in r.report


def test_an_ap_without_the_identity_slot_is_named_with_the_address(run_mutant):
    """PAE without setup_done's slot-0 copy: every AP faults on the instruction
    right after CR0.PG, fetched at its identity address."""
    s = scenarios.get("pae-pse-pge-nx-1G-smp4")
    r = run_mutant("no-identity-slot", s)
    syms = elf.KernelImage.from_elf(r.options.guest_build / s.guest_variant()
                                    / "kernel.elf").symbols
    identity = syms["startup_32_smp_after_pg"] - x86.PAGE_OFFSET
    started = [g for g in groups(r, "smp", "started") if g.expected.startswith("CPU")]
    assert any(g.expected == "smp_cpus_up=4" and g.actual == "smp_cpus_up=1"
               for g in groups(r, "smp", "started")), r.report
    named = {g.first.expected.split(" running")[0] for g in started}
    assert named == {f"CPU {i} (APIC {i})" for i in (1, 2, 3)}, r.report
    for g in started:
        assert f"#PF at EIP {identity:#x}, CR2 {identity:#x}" in g.actual, r.report
        assert f"faulted on {identity:#x} (an identity address)" in g.first.detail
        # What the AP found there: PDPT slot 0 points at the zero page, so the PMD
        # entry is empty.
        assert "pmd entry" in g.first.detail and "not present" in g.first.detail, r.report
    assert f"faulted on {identity:#x}" in r.report
    # The tables show it too: PDPT slot 0 is not the kernel PMD page.
    assert [g.va for g in groups(r, "model") if g.level == "pgd"] == [0], r.report
    assert r.status == "FAIL" and "smp" in r.verdict.failed_checks()


@pytest.mark.parametrize("sid,shown", [("nopae-pse-pge-128M-top-pmd-above", True),
                                       ("pae-pse-pge-nx-128M-top-pmd-above", False)])
def test_a_fixmap_pte_page_allocated_late_misses_the_second_pagetable(run_mutant, sid, shown):
    """set_fixmap allocating its PTE page on demand (not pre-created). With
    FIXADDR_TOP one page above a PMD boundary, FIX_VDSO (slot 1) sits alone in
    the top chunk: nothing maps there before pgd_alloc copies the kernel
    entries, so the second pagetable never sees the late slot -- unless, as
    natively in PAE, the kernel PMD page itself is shared."""
    s = scenarios.get(sid)
    r = run_mutant("lazy-fixmap-pte", s)
    geo = x86.geometry(s.pae)
    top = (1 << 32) - s.reservetop - x86.PAGE_SIZE
    fix_va = top - fixmap.FIX_VDSO * x86.PAGE_SIZE
    assert fix_va % geo.pmd_size == 0  # the scenario's point: the slot opens a chunk
    shared = groups(r, "work", "shared-pte")
    if not shown:
        assert shared == [] and not groups(r, "work", "late-entries"), r.report
        assert not groups(r, "work", "reads"), r.report
        return
    assert [(g.va, g.end) for g in shared] == [(fix_va, fix_va + geo.pmd_size)], r.report
    assert shared[0].actual.startswith("the second pagetable: no PTE page"), r.report
    late = groups(r, "work", "late-entries")
    assert [(g.va, g.expected.split(" through ")[1]) for g in late] == \
        [(fix_va, "the second pagetable")], r.report
    assert any(g.va == fix_va and "faulted" in g.actual for g in groups(r, "work", "reads")), \
        r.report


@pytest.mark.parametrize("sid", ["nopae-pse-pge-128M", "pae-pse-pge-nx-128M"])
def test_natively_the_apic_mapping_creates_the_late_pte_page_first(run_mutant, sid):
    """Natively init_apic_mappings is the first set_fixmap after paging_init,
    so the lazy PTE page exists before pgd_alloc copies: the second pagetable
    shares it. What stays wrong is the work phase itself -- a 2.6.22 kernel's
    set_fixmap BUGs without a pre-created PTE page -- besides the fixmap PTE
    page missing at paging_init_done."""
    s = scenarios.get(sid)
    r = run_mutant("lazy-fixmap-pte", s)
    assert groups(r, "work", "shared-pte") == [], r.report
    model = groups(r, "work", "model")
    assert len(model) == 1 and "the kernel would BUG" in model[0].actual, r.report
    assert ("invariants", "tables-present") in r.verdict.failed_rules(), r.report


def test_prepatch_bug_a_is_also_the_cpus_verdict(run_scenario):
    """Bug A (kernel-facts §6): a `ret` in a data page above __init_end runs on
    the pre-patch kernel where NX must stop it."""
    s = scenarios.get("pae-nopse-pge-nx-128M")
    r = run_scenario(s, variant="prepatch")
    probe = groups(r, "probes", "exec-data")
    assert len(probe) == 1 and probe[0].actual == "no fault: the access went through", r.report
    assert probe[0].expected.startswith("#PF error 0x11"), r.report
    # The work phase itself is right: it is judged from the tables it started on.
    assert "work" not in r.verdict.failed_checks(), r.report
    assert r.status == "FLAGGED"


def test_the_report_reopens_a_work_failure_at_work_done(run_mutant):
    s = scenarios.get("nopae-pse-pge-128M")
    r = run_mutant("lazy-fixmap-pte", s)
    assert runner.debug_command(s, r.options, "work") in r.report
    # Both lines name the mutant's build, so they bring back this very case.
    build = str(r.options.guest_build)
    assert f"check --scenario {s.id} --guest-build {build}" in r.report
    assert f"debug {s.id} --at work --guest-build {build}" in r.report
