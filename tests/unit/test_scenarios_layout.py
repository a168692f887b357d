"""The scenario table and the spec layout the invariants are stated with.

Expected numbers are worked by hand from kernel-facts.md sections 1 and 3."""
import pytest

from harness import fixmap, scenarios
from harness.checks import SpecLayout
from harness.scenarios import GiB, MiB, Scenario

INIT_END = 0xC0120000  # any page-aligned __init_end above the image start


def layout(**kw) -> SpecLayout:
    return SpecLayout.of(Scenario(id="t", **kw), INIT_END)


def test_default_top_two_level():
    lo = layout(pae=False)
    assert lo.fixaddr_top == 0xFFFFF000
    # __fix_to_virt(31) = 0xFFFFF000 - 0x1F000 = 0xFFFE0000, & 4 MiB mask
    assert lo.fix_start == 0xFFC00000
    assert lo.fix_end == 1 << 32  # (0xFFFFF000 + 4M - 1) & mask wraps: "until the wrap"
    # FIXADDR_BOOT_START 0xFFFDF000 - 4096*1025 = 0xFFBDE000 -> 0xFF800000
    assert lo.pkmap_base == 0xFF800000
    assert lo.pkmap_end == 0xFF800000 + 1024 * 4096


def test_default_top_pae():
    lo = layout(pae=True)
    assert lo.fix_start == 0xFFE00000
    # 0xFFFDF000 - 4096*513 = 0xFFDDE000 -> 2 MiB aligned 0xFFC00000
    assert lo.pkmap_base == 0xFFC00000
    assert lo.pkmap_end == 0xFFE00000


def test_reservetop_lowers_top_and_maxmem():
    lo = layout(pae=False, memory=1 * GiB, cmdline=("reservetop=64M",))
    assert lo.fixaddr_top == 0xFBFFF000       # -64M - 4096
    assert lo.fix_start == 0xFBC00000         # 0xFBFE0000 & 4M mask
    assert lo.fix_end == 0xFC000000
    assert lo.pkmap_base == 0xFB800000        # 0xFBBDE000 & 4M mask
    # MAXMEM = 4G - 3G - (128M + 64M) = 832 MiB
    assert lo.max_low_pfn == (832 * MiB) >> 12
    pae = layout(pae=True, memory=1 * GiB, cmdline=("reservetop=64M",))
    assert pae.fix_start == 0xFBE00000 and pae.fix_end == 0xFC000000


@pytest.mark.parametrize("memory,limit,max_low", [
    (16 * MiB, None, 0x1000),
    (896 * MiB, None, 0x38000),
    (3 * GiB, None, 0x38000),          # capped at MAXMEM
    (1 * GiB, "512M", 0x20000),        # mem= caps max_pfn first
])
def test_max_low_pfn(memory, limit, max_low):
    cmd = (f"mem={limit}",) if limit else ()
    assert layout(pae=True, memory=memory, cmdline=cmd).max_low_pfn == max_low


def test_executable_up_to_and_including_init_end_page():
    lo = layout(pae=True, pse=False)
    assert lo.executable(0xC0000000, 4096)            # BIOS area counts as text
    assert lo.executable(INIT_END, 4096)              # inclusive
    assert not lo.executable(INIT_END + 4096, 4096)
    big = layout(pae=True, pse=True)
    assert big.executable(0xC0000000, 2 * MiB)       # first large page holds the image
    assert not big.executable(0xC0200000, 2 * MiB)


def test_kernel_flags():
    lo = layout(pae=True, pse=False, pge=True)
    assert lo.kernel_flags(0xC0000000, 4096) == 0x103         # 0x063|G without A/D
    assert lo.kernel_flags(0xC0400000, 4096) == (1 << 63) | 0x103
    two = layout(pae=False, pse=True, pge=False)
    assert two.kernel_flags(0xC0400000, 4 * MiB) == 0x083     # no NX in 2-level


def test_ids_are_unique_stable_and_selectable():
    ids = [s.id for s in scenarios.SCENARIOS.values()]
    assert len(ids) == len(set(ids))
    assert "pae-nopse-pge-nx-896M" in ids
    quick = scenarios.matrix("quick")
    assert {s.pae for s in quick} == {True, False}
    assert any(s.memory > 896 * MiB for s in quick)
    assert any(s.reservetop for s in quick)


def test_unknown_scenario_is_a_clear_error():
    with pytest.raises(scenarios.UnknownScenario, match="unknown scenario 'pae-nope'"):
        scenarios.get("pae-nope")
    with pytest.raises(scenarios.UnknownScenario, match="unknown matrix"):
        scenarios.matrix("huge")


def test_prepatch_bugs_follow_section_6():
    get = scenarios.get
    assert get("pae-nopse-pge-nx-128M").prepatch_bugs() == ("A",)
    assert get("pae-pse-pge-nx-128M").prepatch_bugs() == ()
    assert get("pae-nopse-pge-nx-128M-noexecoff").prepatch_bugs() == ()
    assert get("nopae-nopse-pge-128M").prepatch_bugs() == ()
    assert get("nopae-pse-pge-128M-reservetop64M").prepatch_bugs() == ("B",)


@pytest.mark.parametrize("pae", [False, True])
def test_boundary_scenarios_put_each_bound_on_a_pmd_boundary(pae):
    """The reservetop= of each boundary scenario, fed through the spec layout
    (kernel-facts §3), lands its bound on a PMD multiple or one page off it."""
    pmd = (2 if pae else 4) * MiB
    last_pkmap = 512 if pae else 1024
    seen = set()
    for s in scenarios.SCENARIOS.values():
        if s.pae != pae or "-pmd" not in s.id:
            continue
        lo = SpecLayout.of(s, INIT_END)
        boot_start = lo.fixaddr_top - fixmap.END * 4096
        value = {"top": lo.fixaddr_top, "fixstart": lo.fixaddr_top - (fixmap.END - 1) * 4096,
                 "bootstart": boot_start,
                 "pkmap": boot_start - (last_pkmap + 1) * 4096}
        bound = s.id.split("128M-")[1].split("-pmd")[0]
        off = {"pmd": 0, "pmd-above": 4096, "pmd-below": -4096}[s.id.split(f"{bound}-")[1]]
        assert (value[bound] - off) % pmd == 0, s.id
        assert 64 * MiB <= s.reservetop < 64 * MiB + pmd + 4096
        seen.add((bound, off))
    assert len(seen) == 12


def test_prepatch_bug_b_only_where_the_range_init_end_is_not_the_wrap():
    # reservetop below one PMD keeps the end at the wrap: 2.6.21 and 2.6.22 agree.
    assert Scenario(id="t", pae=False, cmdline=("reservetop=1M",)).prepatch_bugs() == ()
    assert Scenario(id="t", pae=False, cmdline=("reservetop=64M",)).prepatch_bugs() == ("B",)
    assert Scenario(id="t", pae=False, cmdline=("poison=0xdead0002",)).prepatch_bugs() == ("C",)
    assert Scenario(id="t", pae=True, cmdline=("poison=0xdead0002",)).prepatch_bugs() == ()
