"""Mutation proof: the pre-patch guest (the `-` lines of the seed) is flagged
exactly where kernel-facts.md section 6 says it differs, by the checks that
should see it, and passes where the patch makes no difference.

Expected ranges are computed here from the spec and the ELF's symbols, never
from a run."""
import pytest

from harness import elf, report, runner, scenarios
from harness.scenarios import Scenario

pytestmark = pytest.mark.qemu

PAGE_OFFSET = 0xC0000000


def groups(result, check):
    return report.group([f for f in result.verdict.findings if f.check == check])


def symbols(s: Scenario, opt: runner.RunOptions, variant="prepatch"):
    return elf.KernelImage.from_elf(
        runner.kernel_path(s, runner.RunOptions(**{**opt.__dict__, "variant": variant}))).symbols


def test_bug_a_nx_lost_above_init_end(run_scenario, ptharness_options):
    s = scenarios.get("pae-nopse-pge-nx-128M")
    r = run_scenario(s, variant="prepatch")
    assert not r.error, r.report
    init_end = symbols(s, ptharness_options)["__init_end"]
    # Pre-patch decides the protection once per 2 MiB chunk, from its first address:
    # the chunk holding __init_end starts at PAGE_OFFSET (text), so every page after
    # __init_end's up to the chunk's end comes out executable instead of NX.
    first, end = init_end + 0x1000, (init_end & ~0x1FFFFF) + 0x200000
    model = [(g.rule, g.level, g.va, g.end, g.expected, g.actual) for g in groups(r, "model")]
    assert model == [("entries", "pte", first, end, "NX", "executable")]
    inv = [(g.rule, g.va, g.end) for g in groups(r, "invariants")]
    assert inv == [("nx", first, end)]
    assert r.verdict.failed_checks() == ["model", "invariants", "probes"]
    assert r.status == "FLAGGED" and r.met_expectation
    assert f"{first:08x}-{end - 1:08x}" in r.report


@pytest.mark.parametrize("sid,chunk,count", [
    ("nopae-pse-pge-128M-reservetop64M", 0x400000, 16),
    ("pae-pse-pge-nx-128M-reservetop64M", 0x200000, 32),
])
def test_bug_b_page_tables_up_to_the_top(run_scenario, sid, chunk, count):
    s = scenarios.get(sid)
    r = run_scenario(s, variant="prepatch")
    assert not r.error, r.report
    # reservetop=64M: FIXADDR_TOP 0xFBFFF000, range-init end 0xFC000000; 2.6.21 runs on
    # to the 32-bit wrap and gives every chunk above a PTE page of its own.
    top = 0xFC000000
    assert (1 << 32) - top == count * chunk
    level = "pmd" if s.pae else "pgd"
    extra = [g for g in groups(r, "model") if g.rule == "entries" and g.va == top]
    assert [(g.level, g.end, g.count, g.expected, g.actual) for g in extra] == \
        [(level, 1 << 32, count, "not present", "present")]
    beyond = [(g.va, g.end, g.count, g.first.detail) for g in groups(r, "invariants")]
    assert beyond == [(top, 1 << 32, count, "above FIXADDR_TOP")]
    # The allocator handed out exactly `count` pages more than the spec's run.
    alloc = [g for g in groups(r, "model") if g.rule == "allocations"]
    assert len(alloc) == 1
    exp_n, act_n = int(alloc[0].expected.split()[0]), int(alloc[0].actual.split()[0])
    assert act_n - exp_n == count
    assert r.status == "FLAGGED"


@pytest.mark.parametrize("sid", ["nopae-pse-pge-128M", "nopae-nopse-pge-128M",
                                 "nopae-nopse-nopge-896M", "pae-pse-pge-nx-128M",
                                 "pae-nopse-pge-nonx-128M"])
def test_no_difference_where_the_patch_changes_nothing(run_scenario, sid):
    """kernel-facts 6: natively, with the default top, non-PAE is identical and
    PAE differs only through bug A (needs NX active and no PSE)."""
    s = scenarios.get(sid)
    assert s.prepatch_bugs() == ()
    r = run_scenario(s, variant="prepatch")
    assert r.ok and r.status == "PASS", r.report


def test_prepatch_guest_matches_the_prepatch_model(run_scenario):
    """The other direction: the pre-patch guest is a faithful 2.6.21, so the
    model's pre-patch algorithm predicts it entry by entry, at paging_init_done
    and at work_done. Only the layers stated from the spec (invariants, the
    CPU's probes) still see bugs A and B."""
    s = scenarios.get("pae-nopse-pge-nx-128M-reservetop64M")
    r = run_scenario(s, variant="prepatch", model_variant="prepatch")
    assert r.verdict.failed_checks() == ["invariants", "probes"], r.report
    assert [g.rule for g in groups(r, "probes")] == ["exec-data"], r.report
