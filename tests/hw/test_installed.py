"""ptharness installed as a package, used away from the checkout, as a kernel
developer would: `pip install`, `ptharness build-guest --out DIR`, then from
another directory the quick matrix on that build."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh virtual environment with the checkout pip-installed (not editable)."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "Deprecat" not in r.stderr, r.stderr  # the project's own metadata warns of nothing
    return venv / "bin" / "ptharness"


def test_installed_tool_builds_its_guest_and_runs_the_quick_matrix(installed, tmp_path):
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PTHARNESS_GUEST_BUILD"}
    run = lambda *a, **kw: subprocess.run([str(installed), *a], capture_output=True, text=True,  # noqa: E731
                                          cwd=elsewhere, env={**env, **kw.pop("env", {})},
                                          timeout=600, **kw)
    # Told nothing, an installed tool says how to give it a guest.
    r = run("check", "--scenario", "nopae-pse-pge-16M")
    assert r.returncode == 2 and "pass --guest-build DIR or set PTHARNESS_GUEST_BUILD" in r.stderr
    build = tmp_path / "guest-build"
    r = run("build-guest", "--out", str(build))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.parent.name for p in build.glob("*/kernel.elf")) == \
        ["nopae-patched", "nopae-prepatch", "pae-patched", "pae-prepatch"]
    r = run("check", "--guest-build", str(build), "-j", "2")
    assert r.returncode == 0 and "VERDICT: PASS" in r.stdout, r.stdout[-3000:] + r.stderr
    assert (elsewhere / "artifacts" / "pae-pse-pge-nx-16M" / "report.txt").is_file()
    # One ELF, its variant read from the ELF itself.
    r = run("check", "--kernel", str(build / "pae-patched" / "kernel.elf"), "--scenario",
            "pae-nopse-pge-nx-128M")
    assert r.returncode == 0 and "VERDICT: PASS" in r.stdout, r.stdout[-3000:] + r.stderr
    r = run("check", "--kernel", str(build / "pae-prepatch" / "kernel.elf"), "--scenario",
            "pae-nopse-pge-nx-128M")
    assert r.returncode == 0 and "FLAGGED" in r.stdout and "guest prepatch" in r.stdout
    # The environment fallback, and reports that name the program that ran.
    r = run("check", "--scenario", "pae-nopse-pge-nx-128M", "--variant", "prepatch",
            env={"PTHARNESS_GUEST_BUILD": str(build)})
    assert r.returncode == 0 and "FLAGGED" in r.stdout, r.stdout[-3000:]
    report = (elsewhere / "artifacts" / "pae-nopse-pge-nx-128M@prepatch" / "report.txt").read_text()
    assert f"reproduce: {installed} check --scenario pae-nopse-pge-nx-128M --variant prepatch" \
        f" --guest-build {build}" in report, report
