"""explore's strategies draw only scenarios the guest accepts
(docs/guest-contract.md), each named by a spec that reads back to it, and they
reach the geometric edges they are meant to lean to."""
from hypothesis import given, settings, strategies as st

from harness import explore, scenarios, x86
from harness.scenarios import MiB

PAGE = x86.PAGE_SIZE


@settings(max_examples=400, deadline=None)
@given(explore.generated_scenarios())
def test_drawn_scenarios_are_valid_and_read_back_from_their_spec(s):
    assert s.id == s.spec
    t = scenarios.from_spec(s.spec)
    assert (t.pae, t.pse, t.pge, t.nx, t.memory, t.cmdline, t.pv) == \
        (s.pae, s.pse, s.pge, s.nx, s.memory, s.cmdline, s.pv)
    assert 16 * MiB <= s.memory <= explore.MAX_RAM and s.memory % MiB == 0
    if s.pv == "xen":
        assert s.reservetop == 0 and s.smp == 1  # refused by the guest (exit code 4)
    assert s.reservetop % PAGE == 0 and 0 <= s.reservetop <= 256 * MiB + 4 * MiB
    if s.mem_limit is not None:
        assert 16 * MiB <= s.mem_limit < s.memory and s.mem_limit % PAGE == 0
    assert not s.noexec_off or (s.pae and s.nx)
    assert 1 <= s.smp <= 4
    assert s.expect == scenarios.PASS and s.sets == frozenset()


def test_the_strategies_reach_every_edge_they_name():
    """Over many draws: each spec bound lands on a PMD boundary and a page to either
    side, mem= hits 896 MiB exactly and a page around it."""
    hits: set = set()
    near_896: set = set()

    @settings(max_examples=1500, deadline=None, database=None)
    @given(st.booleans(), explore.reservetops(True), explore.reservetops(False))
    def draw(pae, r_pae, r_nopae):
        for is_pae, r in ((True, r_pae), (False, r_nopae)):
            pmd = x86.geometry(is_pae).pmd_size
            for name, pages in scenarios._bound_pages(is_pae).items():
                off = ((1 << 32) - r - (pages + 1) * PAGE) % pmd
                if off in (0, PAGE, pmd - PAGE):
                    hits.add((is_pae, name, off))
    draw()

    @settings(max_examples=800, deadline=None, database=None)
    @given(explore.mem_limits(True, 1024 * MiB, 896 * MiB))
    def limits(v):
        if abs(v - 896 * MiB) <= PAGE:
            near_896.add(v - 896 * MiB)
    limits()
    assert len(hits) == 2 * 4 * 3, sorted(hits)
    assert near_896 == {-PAGE, 0, PAGE}
