"""`ptharness check` on bad input and on guests that never end: a clear message,
a non-zero exit, and no process left behind - found by an environment marker
that every process the run starts inherits, whatever its command line."""
import contextlib
import json
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
    (["--scenario", "pae-pse-pge-nx-16M", "--qemu", "/bin/false"],
     "QEMU binary '/bin/false' does not run: `/bin/false --version` exited with status 1"),
    (["--timeout-factor", "0"], "argument --timeout-factor: '0': a finite number above 0"),
    (["--timeout-factor", "inf"], "argument --timeout-factor: 'inf': a finite number above 0"),
    (["-j", "-3"], "argument -j/--jobs: -3: at least 1"),
    (["--matrix", "bogus"], "argument --matrix: invalid choice: 'bogus'"),
    (["--scenario-spec", "pae-bogus-1G"], "scenario spec 'pae-bogus-1G': expected the memory size"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    r, mark = check(args, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("ptharness: error: ", "ptharness check: error: "))
    assert message in lines[0], lines[0]
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
        code = matrix.run_and_report([s], opt, 1, "hang test", out=open(os.devnull, "w"))
        r = runner.run(s, opt)
        elapsed = time.monotonic() - t
    finally:
        del os.environ["PTHARNESS_TEST_MARK"]
    assert code == 2 and r.status == "ERROR"  # not judged: not the tables' fault
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
    # SIGINT back to its default in the child: under nohup (or any parent that
    # ignores it) the CLI would inherit the ignored signal and never see Ctrl-C.
    proc = subprocess.Popen(CLI + ["check", "-j", "2", "--artifacts", str(tmp_path / "art")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not any("qemu-system" in p and " -kernel " in p for p in leftovers(mark)):
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
    assert proc.returncode == (130 if how == "ctrl-c" else 143), proc.returncode
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


def _qemu_of(mark: str, deadline: float) -> int:
    while True:
        found = [p for p in leftovers(mark) if "qemu-system" in p and " -kernel " in p]
        if found:
            return int(found[0].split(":")[0])
        assert time.monotonic() < deadline, "no QEMU started"
        time.sleep(0.02)


@pytest.mark.parametrize("sig,named", [(signal.SIGKILL, "was killed by SIGKILL"),
                                       (signal.SIGSTOP, "has been stopped (state T")])
def test_qemu_killed_or_stopped_mid_run_is_an_error_naming_it(tmp_path, sig, named):
    """QEMU dies (or is stopped for good) while the harness waits on it: that one
    scenario is an ERROR naming QEMU, its pid and what the harness was doing;
    the other scenario still runs; the exit code is 2 (nothing was judged
    wrong), and nothing is left behind."""
    env, mark = marked_env()
    heavy, light = "pae-nopse-pge-nx-896M", "nopae-pse-pge-16M"
    proc = subprocess.Popen(CLI + ["check", "--scenario", heavy, "--scenario", light, "-j", "1",
                                   "--artifacts", str(tmp_path / "art")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        pid = _qemu_of(mark, time.monotonic() + 60)
        time.sleep(0.4)  # into the boot: the guest running or the first snapshot
        os.kill(pid, sig)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 2, out[-3000:]
    assert f"ERROR   {heavy}" in out and f"PASS    {light}" in out, out[-3000:]
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("error: "))
    assert f"QEMU (pid {pid}) {named}" in line and (" during " in line or " waited for " in line), line
    assert "some scenarios could not be judged (ERROR)" in out
    deadline = time.monotonic() + 10
    while leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert leftovers(mark) == []


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"\x7fELF" + bytes(60)), "malformed ELF"),
    (lambda p: p.write_bytes(bytes(range(256)) * 8), "not an ELF file"),
    (lambda p: p.write_bytes(Path("/bin/true").read_bytes()), "ELF64, not an ELF32 i386 image"),
])
def test_a_guest_elf_that_is_no_guest_is_refused_before_anything_starts(tmp_path, make, message):
    """Truncated, random or x86-64: one line naming the file, exit 2 (not 1, which
    means the page tables are wrong), and no QEMU ever started."""
    build = tmp_path / "build" / "pae-patched"
    build.mkdir(parents=True)
    make(build / "kernel.elf")
    r, mark = check(["--scenario", "pae-pse-pge-nx-16M", "--guest-build", str(build.parent)],
                    tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()
    assert len(line) == 1 and str(build / "kernel.elf") in line[0] and message in line[0], line
    assert not (tmp_path / "art").exists() and leftovers(mark) == []


def test_a_malformed_snapshot_is_one_line_naming_the_file(tmp_path):
    good = tmp_path / "good.json"
    r = subprocess.run(CLI + ["check", "--scenario", "nopae-pse-pge-16M", "--artifacts",
                              str(tmp_path / "art")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout
    good.write_text((tmp_path / "art" / "nopae-pse-pge-16M" / "after.json").read_text())
    doc = json.loads(good.read_text())
    cases = {"missing.json": {k: v for k, v in doc.items() if k != "registers"},
             "null.json": {**doc, "tables": [None]}, "list.json": [1, 2]}
    for name, content in cases.items():
        (tmp_path / name).write_text(json.dumps(content))
        r = subprocess.run(CLI + ["diff", str(good), str(tmp_path / name)],
                           capture_output=True, text=True, timeout=60)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, (name, r.stdout, r.stderr)
        assert lines[0].startswith(f"ptharness: error: {tmp_path / name}: "), lines[0]


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan"])
def test_pytest_refuses_a_bad_timeout_factor_as_a_usage_error(tmp_path, value):
    r = subprocess.run([str(Path(sys.executable).parent / "pytest"), "-p", "no:cacheprovider",
                        "--timeout-factor", value, "--collect-only", "-q",
                        str(Path(__file__).parent / "test_matrix.py")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error, not INTERNALERROR
    assert f"--timeout-factor {value!r}: a finite number above 0" in r.stderr


def test_check_json_to_stdout_is_the_matrix_document(tmp_path):
    r = subprocess.run(CLI + ["check", "--scenario", "nopae-pse-pge-16M", "--json", "-",
                              "--artifacts", str(tmp_path / "art")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)  # stdout is the document alone; the report went to stderr
    assert (doc["format"], doc["version"], doc["ok"]) == ("ptharness-matrix", 1, True)
    (one,) = doc["scenarios"]
    assert (one["scenario"], one["status"], one["failed_checks"]) == ("nopae-pse-pge-16M", "PASS", [])
    assert "VERDICT: PASS" in r.stderr


def test_verbose_logs_what_the_harness_did(tmp_path):
    log = tmp_path / "pt.log"
    r = subprocess.run(CLI + ["-v", "check", "--scenario", "nopae-pse-pge-16M", "--artifacts",
                              str(tmp_path / "art")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0
    assert "harness.qemu: starting QEMU: " in r.stderr and " -kernel " in r.stderr
    assert "harness.runner: nopae-pse-pge-16M: PASS in " in r.stderr
    r = subprocess.run(CLI + ["-vv", "--log-file", str(log), "check", "--scenario",
                              "nopae-pse-pge-16M", "--artifacts", str(tmp_path / "art")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "harness." not in r.stderr
    text = log.read_text()
    assert "harness.gdbmi: MI -target-select remote " in text and " ms" in text
    assert "harness.runner: nopae-pse-pge-16M: timings " in text
