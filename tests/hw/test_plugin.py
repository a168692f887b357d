"""The pytest plugin by pytest's conventions: one preflight reason instead of a
traceback per scenario, and JUnit under the default junit_family without a
warning (suite-level properties)."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
PYTEST = str(Path(sys.executable).parent / "pytest")


def pytest_run(tmp_path, *args, env=None):
    return subprocess.run([PYTEST, "-p", "no:cacheprovider", "--rootdir", str(ROOT), *args],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("workers", [[], ["-n", "2"]])
def test_missing_qemu_is_one_preflight_reason(tmp_path, workers):
    r = pytest_run(tmp_path, "tests/hw/test_matrix.py", "-q", *workers,
                   env={"PTHARNESS_QEMU": "/nonexistent"})
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "Traceback" not in out and "INTERNALERROR" not in out, out[-3000:]
    reason = "ptharness preflight: QEMU binary '/nonexistent' not found"
    assert reason in out
    if not workers:  # the session stops at once, with the one line
        assert r.returncode == 4 and out.count(reason) == 1, out[-3000:]
    r = pytest_run(tmp_path, "tests/hw/test_matrix.py", "-q", "--hw-unavailable", "skip",
                   *workers, env={"PTHARNESS_QEMU": "/nonexistent"})
    assert r.returncode == 0 and " skipped" in r.stdout and " passed" not in r.stdout, r.stdout[-2000:]


def test_junit_under_the_default_family_has_suite_properties_and_no_warning(tmp_path):
    xml = tmp_path / "junit.xml"
    r = pytest_run(tmp_path, "tests/hw/test_matrix.py::test_scenario[nopae-nopse-pge-16M]",
                   "tests/hw/test_matrix.py::test_scenario[pae-pse-pge-nx-16M]", "-q",
                   f"--junitxml={xml}", "-W", "error::pytest.PytestWarning",
                   "--artifacts-dir", str(tmp_path / "art"))
    assert r.returncode == 0 and "warning" not in r.stdout.lower(), r.stdout[-3000:]
    suite = ET.parse(xml).getroot().find("testsuite")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["qemu_version"].startswith(("7.", "8.", "9.", "10."))
    assert len(props["guest_build_id.pae-patched"]) == 40
    assert len(props["guest_build_id.nopae-patched"]) == 40
