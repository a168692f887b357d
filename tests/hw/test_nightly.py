"""scripts/nightly end to end on a slice of the full matrix: JUnit XML with one
case per scenario and its properties, an HTML report, and only the artifacts of
failures kept."""
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]


def test_nightly_writes_junit_html_and_keeps_failures_only(tmp_path):
    out = tmp_path / "nightly"
    r = subprocess.run([str(ROOT / "scripts" / "nightly"), str(out), "-n", "0",
                        "-k", "test_scenario and (xen-nopae-16M or pae-pse-pge-nx-16M)"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    suite = ET.parse(out / "junit.xml").getroot().find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"test_scenario[xen-nopae-16M]", "test_scenario[pae-pse-pge-nx-16M]"}
    for name, case in cases.items():
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["scenario"] in name and len(props["guest_build_id"]) == 40
        assert props["qemu_version"].startswith(("7.", "8.", "9.", "10."))
        assert case.find("failure") is None
    html = (out / "report.html").read_text()
    assert "xen-nopae-16M" in html and "<html" in html.lower()
    # Both passed: --keep-artifacts failed left no scenario directory behind.
    assert not any((out / "artifacts").rglob("report.txt"))
