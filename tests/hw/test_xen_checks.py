"""The Xen-like paravirt case through the whole harness (docs/xen.md): the
patched guest passes every check; the pre-patch guest is flagged with the
seed's bugs B and C named; a backend that maps one new PTE page writable is
caught by the read-only invariant and by the hypervisor's own record."""
import pytest

from harness import elf, records, report, runner, scenarios
from harness.scenarios import Scenario

pytestmark = pytest.mark.qemu


def groups(result, check, rule=None):
    return [g for g in report.group([f for f in result.verdict.findings if f.check == check])
            if rule is None or g.rule == rule]


def test_bug_b_page_tables_in_the_hypervisor_area(run_scenario):
    r = run_scenario(scenarios.get("xen-nopae-128M"), variant="prepatch")
    assert not r.error, r.report
    # Non-PAE Xen: FIXADDR_TOP 0xFBFFD000, range-init end 0xFC000000 = HYPERVISOR_VIRT_START.
    # 2.6.21 runs on to the wrap: every empty PGD entry up there (1009..1022; 1008 and
    # 1023 hold the hypervisor's own PTE pages) gets a PTE page: 14 of them.
    first, end = 1009 << 22, 1023 << 22
    area = groups(r, "invariants", "hypervisor-area")
    assert [(g.level, g.va, g.end, g.count, g.actual) for g in area] == \
        [("pgd", first, end, 14, "new entry")]
    audit = groups(r, "hypervisor")
    # Written into swapper_pg_dir (and found again at its pin), then copied into the
    # second pagetable and found at that one's pin: one range per table.
    writes = [g for g in audit if g.rule != "counters"]
    assert [(g.rule, g.va, g.end, g.count) for g in writes] == \
        [("hypervisor-area-write", first, end, 14)] * 2, r.report
    image = elf.KernelImage.from_elf(runner.kernel_path(r.scenario, r.options))
    swapper = records.pa_of(image.symbols["swapper_pg_dir"])
    tables = sorted(g.actual.split("(table ")[1].rstrip(")") for g in writes)
    assert f"{swapper:#x}" in tables and len(set(tables)) == 2, r.report
    # The hypervisor counted 28 updates more than the patched kernel makes: the
    # 14 links and the 14 new PTE pages made read-only.
    (counters,) = [g for g in audit if g.rule == "counters"]
    want, have = (int(t.split(": ")[1]) for t in (counters.expected, counters.actual))
    assert have - want == 28 and "mmu_update_count" in counters.expected
    assert "write into the hypervisor area" in r.report and f"{first:08x}-{end - 1:08x}" in r.report
    assert r.status == "FLAGGED"


def test_bug_c_kernel_pmd_replacement_refused(run_scenario):
    r = run_scenario(scenarios.get("xen-pae-nx-128M"), variant="prepatch")
    assert not r.error, r.report
    # 2.6.21's one_md_table_init allocates a fresh PMD for PDPT slot 3 and links it;
    # the hypervisor refuses (the hypervisor area would be lost) and the kernel's own
    # BUG() check stops it before paging_init is done.
    audit = groups(r, "hypervisor")
    assert [(g.actual, g.va) for g in audit] == [("kernel PMD replaced (refused)", 0xC0000000)]
    assert [g.rule for g in groups(r, "model")] == ["completion"]
    assert [g.rule for g in groups(r, "guest")] == ["exit-code"]
    assert "kernel PMD replaced (refused)" in r.report
    assert r.status == "FLAGGED"


def test_bug_c_prepatch_model_predicts_the_bug(run_scenario):
    r = run_scenario(scenarios.get("xen-pae-nx-128M"), variant="prepatch",
                     model_variant="prepatch")
    assert not [f for f in r.verdict.findings if f.check in ("model", "guest")], r.report


@pytest.mark.parametrize("pae", [False, True])
def test_mutant_writable_pte_page_is_caught(run_scenario, pae):
    s = Scenario(id=f"xen-{'pae' if pae else 'nopae'}-128M-mutant-writable-pt", pae=pae,
                 nx=pae, pv="xen", cmdline=("pvbug=writable-pt",))
    r = run_scenario(s)
    assert not r.error, r.report
    ro = groups(r, "invariants", "tables-read-only")
    assert len(ro) == 1 and ro[0].count == 1 and ro[0].actual == "writable"
    audit = [g for g in groups(r, "hypervisor") if g.rule != "counters"]
    assert audit and {g.actual for g in audit} == {"writable mapping of a table page"}
    # One hypercall fewer than a correct kernel makes: the skipped make-read-only.
    (counters,) = groups(r, "hypervisor", "counters")
    want, have = (int(t.split(": ")[1]) for t in (counters.expected, counters.actual))
    assert want - have == 1
    # Both name the same page: the leaf that maps the table frame.
    assert ro[0].va in {g.va for g in audit}
    assert not r.met_expectation
