"""Habits of the ecosystem the CLI and the plugin keep: a closed pipe is no
error, the plugin's marker is registered once, bad arguments are one line."""
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_pipe_exits_quietly_every_time():
    for _ in range(20):
        r = subprocess.run(f"{BIN / 'ptharness'} list | head -1; exit ${{PIPESTATUS[0]}}",
                           shell=True, executable="/bin/bash", capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        assert r.stdout.startswith("id ")


def test_the_qemu_marker_is_listed_once():
    r = subprocess.run([str(BIN / "pytest"), "--markers", "-p", "no:cacheprovider"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sum(line.startswith("@pytest.mark.qemu:") for line in r.stdout.splitlines()) == 1


def test_a_bad_choice_is_one_line_with_the_way_to_the_options():
    r = subprocess.run([str(BIN / "ptharness"), "check", "--variant", "nope"],
                       capture_output=True, text=True, timeout=60)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "invalid choice: 'nope'" in lines[0] and "ptharness check --help" in lines[0]


def test_list_json_is_the_documented_document():
    r = subprocess.run([str(BIN / "ptharness"), "list", "--matrix", "quick", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    import json
    from harness import scenarios
    doc = json.loads(r.stdout)
    assert (doc["format"], doc["version"], doc["matrix"]) == ("ptharness-scenarios", 1, "quick")
    assert [s["id"] for s in doc["scenarios"]] == [s.id for s in scenarios.matrix("quick")]
    one = next(s for s in doc["scenarios"] if s["id"] == "pae-pse-pge-nx-1G-smp4")
    assert one["smp"] == 4 and one["cpu"]["nx"] is True and one["memory"] == "1G"
    assert scenarios.from_spec(one["spec"]).cmdline == ("smp=4",)


def test_diff_json_of_two_recorded_snapshots():
    """The before and after of a real run: the documented difference document."""
    import gzip
    import json
    import tempfile
    data = Path(__file__).resolve().parents[1] / "data" / "snapshots" / "nopae-nopse-pge-16M@patched"
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for name in ("before", "after"):
            p = Path(d) / f"{name}.json"
            p.write_bytes(gzip.open(data / f"{name}.json.gz").read())
            paths.append(str(p))
        r = subprocess.run([str(BIN / "ptharness"), "diff", *paths, "--json"],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr  # they differ
    doc = json.loads(r.stdout)
    assert (doc["format"], doc["version"], doc["same"]) == ("ptharness-diff", 1, False)
    assert {c["kind"] for c in doc["ranges"]} <= {"gained", "lost", "changed"}
    # head.S's 8 MiB of pg0 (user, 0x007) become kernel pages; the rest of lowmem is new.
    changed = {int(c["va"], 16): c for c in doc["ranges"] if c["kind"] == "changed"}
    assert changed[0]["a"].startswith("rwx user") and changed[0]["b"].startswith("rwx kern global")
    assert any(c["kind"] == "gained" and int(c["va"], 16) == 0xC0800000 for c in doc["ranges"])
    assert doc["registers"] == [{"name": "cr4", "a": "0x0", "b": "0x80"}]
    assert all(int(c["end"], 16) > int(c["va"], 16) for c in doc["ranges"])


def test_plugin_options_come_from_the_command_line_the_environment_or_the_ini(tmp_path):
    """Command line over environment over ini (ptharness_<option>) over default."""
    import os
    (tmp_path / "pytest.ini").write_text("[pytest]\nptharness_matrix = full\n")
    (tmp_path / "test_ids.py").write_text("def test_s(scenario):\n    pass\n")

    def collected(*args, env=None):
        r = subprocess.run([str(BIN / "pytest"), "--collect-only", "-q", "-p", "no:cacheprovider",
                            *args], capture_output=True, text=True, cwd=tmp_path, timeout=60,
                           env={**{k: v for k, v in os.environ.items() if not k.startswith("PTHARNESS_")},
                                **(env or {})})
        assert r.returncode == 0, r.stdout + r.stderr
        return int(r.stdout.strip().splitlines()[-1].split()[0])
    from harness import scenarios
    full, quick = len(scenarios.matrix("full")), len(scenarios.matrix("quick"))
    assert collected() == full
    assert collected(env={"PTHARNESS_MATRIX": "quick"}) == quick
    assert collected("--matrix", "full", env={"PTHARNESS_MATRIX": "quick"}) == full
