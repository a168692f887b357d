"""The files other machines run: the Vagrantfile, the nightly workflow and the
scripts they call. They must parse, and call only scripts that exist."""
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly.yml"


def scripts_named(text: str) -> set[str]:
    return set(re.findall(r"scripts/[A-Za-z0-9_.-]+", text))


def test_vagrantfile_is_ruby_and_provisions_with_bootstrap():
    ruby = shutil.which("ruby")
    assert ruby, "ruby is needed for this check (scripts/bootstrap installs it)"
    r = subprocess.run([ruby, "-c", str(ROOT / "Vagrantfile")], capture_output=True, text=True)
    assert r.returncode == 0 and "Syntax OK" in r.stdout, r.stderr
    text = (ROOT / "Vagrantfile").read_text()
    assert 'config.vm.box = "debian/bookworm64"' in text  # Debian 12
    assert "scripts/bootstrap" in text


def test_workflow_parses_and_calls_existing_scripts():
    doc = yaml.safe_load(WORKFLOW.read_text())
    jobs = doc["jobs"]
    assert "schedule" in doc[True] or "schedule" in doc.get("on", {})  # YAML 1.1: on -> True
    shard = jobs["matrix"]
    assert shard["strategy"]["matrix"]["group"] == [1, 2, 3, 4]
    runs = [step["run"] for job in jobs.values() for step in job["steps"] if "run" in step]
    called = set().union(*(scripts_named(r) for r in runs))
    assert {"scripts/nightly", "scripts/merge-junit"} <= called
    for script in called:
        path = ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), f"{script} missing or not executable"
    # The shard count in the workflow is the one the nightly script is given.
    env = next(s["env"] for s in shard["steps"] if "run" in s and "scripts/nightly" in s["run"])
    assert env["SPLITS"] == "4"


def test_every_script_the_readme_and_ci_name_exists():
    text = (ROOT / "README.md").read_text() + (ROOT / ".ci" / "run").read_text()
    for script in scripts_named(text):
        path = ROOT / script
        assert path.is_file() and os.access(path, os.X_OK), f"{script} missing or not executable"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def junit(path: Path, name: str, cases: int, failures: int) -> None:
    suite = ET.Element("testsuite", name=name, tests=str(cases), failures=str(failures),
                       errors="0", skipped="0", time="1.5")
    for i in range(cases):
        ET.SubElement(suite, "testcase", name=f"{name}-{i}")
    ET.ElementTree(suite).write(path)


def test_merge_junit_sums_the_shards(tmp_path):
    junit(tmp_path / "a.xml", "a", 3, 1)
    junit(tmp_path / "b.xml", "b", 2, 0)
    out = tmp_path / "all.xml"
    r = subprocess.run([str(ROOT / "scripts" / "merge-junit"), str(out), str(tmp_path / "a.xml"),
                        str(tmp_path / "b.xml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    root = ET.parse(out).getroot()
    assert root.tag == "testsuites" and root.get("tests") == "5" and root.get("failures") == "1"
    assert [s.get("name") for s in root] == ["a", "b"]
    assert float(root.get("time")) == 3.0
