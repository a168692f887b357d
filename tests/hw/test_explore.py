"""`ptharness explore` on real QEMU: quiet on the patched guest; on the pre-patch
guest it finds kernel-facts §6 bugs A and B on its own and shrinks each to the
scenario the spec names; on a guest broken at a geometric boundary that the
quick matrix passes, it finds and shrinks the failure. Budgets are small: the
figures for the full budgets are in the README."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness import scenarios, x86

from .test_blind_spots import mutant_builds  # noqa: F401  (fixture)

pytestmark = pytest.mark.qemu

CLI = [str(Path(sys.executable).parent / "ptharness")]


def explore(tmp_path, *args, timeout=400):
    r = subprocess.run(CLI + ["explore", "--artifacts", str(tmp_path / "explore"), "-j", "2",
                              *args], capture_output=True, text=True, timeout=timeout)
    found = [line.split("scenario: ", 1)[1] for line in r.stdout.splitlines()
             if line.startswith("  scenario: ")]
    return r, [scenarios.from_spec(spec) for spec in found]


def test_patched_guest_explores_without_a_failure(tmp_path):
    r, found = explore(tmp_path, "--seed", "1", "--budget", "15")
    assert r.returncode == 0 and found == [], r.stdout[-3000:] + r.stderr
    runs = int(r.stdout.split("EXPLORE: no failure in ")[1].split()[0])
    assert runs >= 20, r.stdout[-2000:]
    # Passing runs leave no artifacts behind.
    assert not list((tmp_path / "explore" / "runs").glob("*/report.txt"))


def test_prepatch_bugs_a_and_b_are_found_and_shrunk(tmp_path):
    r, found = explore(tmp_path, "--seed", "1", "--budget", "40", "--variant", "prepatch",
                       "--pv", "native")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr
    # A (kernel-facts §6): PAE, NX active, no PSE -- and nothing else needed.
    a = [s for s in found if s.pae and s.nx and not s.pse and not s.cmdline]
    assert a and a[0].memory == 16 * scenarios.MiB, [s.spec for s in found]
    # B: a lowered FIXADDR_TOP -- the smallest reservetop= that moves the range-init
    # end off the 32-bit wrap is one PMD less a page.
    b = [s for s in found if s.cmdline and s.cmdline[0].startswith("reservetop=")
         and len(s.cmdline) == 1 and not (s.pae and s.nx and not s.pse)]
    assert b, [s.spec for s in found]
    assert b[0].reservetop == x86.geometry(b[0].pae).pmd_size - x86.PAGE_SIZE, b[0].spec
    assert "looks like kernel-facts §6 A" in r.stdout and "looks like kernel-facts §6 B" in r.stdout
    assert "reproduce: .venv/bin/ptharness check --scenario-spec " in r.stdout
    assert "as a matrix scenario: Scenario(id=" in r.stdout
    # The smallest failures' artifacts are kept, and the next run replays them first.
    kept = {p.parent.name for p in (tmp_path / "explore" / "runs").glob("*/report.txt")}
    assert {f"{s.spec}@prepatch" for s in found} <= kept
    again, found_again = explore(tmp_path, "--seed", "2", "--budget", "1", "--variant",
                                 "prepatch", "--pv", "native", "-j", "1")
    assert {s.spec for s in found} <= {s.spec for s in found_again}, again.stdout[-3000:]


def test_a_bound_one_page_off_is_found_where_the_quick_matrix_passes(tmp_path, mutant_builds):
    """fixmap-end-off: the fixmap range-init end rounds FIXADDR_TOP + PMD_SIZE
    instead of + PMD_SIZE - 1, which differs only when FIXADDR_TOP sits on a PMD
    boundary -- no non-PAE scenario of the quick matrix has one."""
    build = mutant_builds("fixmap-end-off", "nopae-patched")
    quick = [s.id for s in scenarios.matrix("quick") if not s.pae]
    ids = [a for sid in quick for a in ("--scenario", sid)]
    r = subprocess.run(CLI + ["check", *ids, "--guest-build", str(build), "-j", "2", "-q",
                              "--artifacts", str(tmp_path / "quick")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:]
    r, found = explore(tmp_path, "--seed", "1", "--budget", "60", "--build", "nopae",
                       "--pv", "native", "--guest-build", str(build))
    assert r.returncode == 1 and found, r.stdout[-3000:] + r.stderr
    pmd = x86.geometry(False).pmd_size
    for s in found:  # shrunk to FIXADDR_TOP = -reservetop - 4K on a PMD boundary
        assert (s.reservetop + x86.PAGE_SIZE) % pmd == 0, s.spec
    assert min(s.reservetop for s in found) == pmd - x86.PAGE_SIZE
