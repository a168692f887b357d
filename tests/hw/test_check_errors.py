"""`ptharness check` on bad input and on guests that never end: a clear message,
a non-zero exit, and no process left behind - found by an environment marker
that every process the run starts inherits, whatever its command line."""
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from harness import matrix, runner

from . import procs
from harness.scenarios import Scenario

pytestmark = pytest.mark.qemu

CLI = [str(Path(sys.executable).parent / "ptharness")]


def marked_env() -> tuple[dict, str]:
    mark = uuid.uuid4().hex
    return {**os.environ, "PTHARNESS_TEST_MARK": mark}, mark


def leftovers(mark: str) -> list[str]:
    return procs.marked(mark)


def check(args, tmp_path, **kw):
    env, mark = marked_env()
    r = subprocess.run(CLI + ["check", "--artifacts", str(tmp_path / "art"), *args],
                       capture_output=True, text=True, env=env, timeout=300, **kw)
    return r, mark


@pytest.mark.parametrize("args,message", [
    (["--scenario", "pae-nonsense-1G"], "unknown scenario 'pae-nonsense-1G'"),
    (["--matrix", "quick", "--qemu", "/nonexistent/qemu-system-i386"],
     "QEMU binary '/nonexistent/qemu-system-i386' not found"),
    (["--scenario", "pae-pse-pge-nx-16M", "--gdb-binary", "/nonexistent/gdb"],
     "gdb binary '/nonexistent/gdb' not found"),
    (["--scenario", "pae-pse-pge-nx-16M", "--guest-build", "/nonexistent/build"],
     "guest build missing: /nonexistent/build/pae-patched/kernel.elf"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    r, mark = check(args, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptharness: error: ") and message in lines[0]
    assert leftovers(mark) == []


@pytest.mark.parametrize("where", ["early", "late"])
def test_hung_guest_is_an_error_with_its_log(tmp_path, where):
    """hang=early spins before pagetable_init, hang=late after paging_init_done."""
    env, mark = marked_env()
    os.environ["PTHARNESS_TEST_MARK"] = mark  # the run below is in this process
    try:
        s = Scenario(id=f"nopae-pse-pge-16M-hang-{where}", pae=False, nx=False,
                     memory=16 << 20, cmdline=(f"hang={where}",))
        opt = runner.RunOptions(artifacts=tmp_path / "art", timeout_factor=0.1)  # 2 s
        t = time.monotonic()
        ok = matrix.run_and_report([s], opt, 1, "hang test", out=open(os.devnull, "w"))
        r = runner.run(s, opt)
        elapsed = time.monotonic() - t
    finally:
        del os.environ["PTHARNESS_TEST_MARK"]
    assert not ok and r.status == "ERROR"
    assert "did not stop within 2.0s" in r.error and "interrupted at 0x" in r.error
    assert "in hang (setup.c:" in r.error  # where the guest was spinning
    assert f"hang at={where}" in r.report and "reproduce: " in r.report
    assert elapsed < 60  # bounded by the timeouts, not by the guest
    assert leftovers(mark) == []


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_check_leaves_nothing(tmp_path, how):
    """Ctrl-C reaches the whole foreground group (the CLI and its workers);
    SIGTERM only the CLI: its workers die with it (PDEATHSIG) and take their
    QEMU and gdb along."""
    env, mark = marked_env()
    proc = subprocess.Popen(CLI + ["check", "-j", "2", "--artifacts", str(tmp_path / "art")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any("qemu-system" in p for p in leftovers(mark)):
            assert time.monotonic() < deadline, "no QEMU started"
            time.sleep(0.05)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    deadline = time.monotonic() + 10  # PDEATHSIG and polite stops take a moment
    while leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(mark) == []


def test_runs_of_one_scenario_at_once_keep_apart(tmp_path):
    """Two `check`s from one checkout, and one scenario named twice: each run
    writes a private directory and publishes it when it ends, so neither reads
    a log the other deleted; what stays is one whole artifacts directory."""
    sid = "nopae-pse-pge-128M-poison"
    args = ["--scenario", sid, "--scenario", sid, "-j", "2"]
    env, mark = marked_env()
    procs_ = [subprocess.Popen(CLI + ["check", "--artifacts", str(tmp_path / "art"), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
              for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs_]
    assert [p.returncode for p in procs_] == [0, 0], "\n".join(outs)
    assert all("VERDICT: PASS - 2/2 scenarios" in o for o in outs), "\n".join(outs)
    left = sorted(p.name for p in (tmp_path / "art").iterdir())
    assert left == [sid], left
    assert {"report.txt", "serial.log", "before.json", "after.json"} <= \
        {p.name for p in (tmp_path / "art" / sid).iterdir()}
    assert leftovers(mark) == []
