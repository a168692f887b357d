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
