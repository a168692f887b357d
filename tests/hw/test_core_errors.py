"""Failures give one clear line, a non-zero exit, and leave no process behind:
missing binaries, an unreachable gdbstub, QEMU or gdb dying mid-session."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from . import procs  # noqa: E402
from harness.gdbmi import GdbDied, GdbNotFound, MiSession, TargetGone  # noqa: E402
from harness.qemu import Machine, QemuLaunchError, QemuProcess, live_children  # noqa: E402

pytestmark = pytest.mark.qemu
CLI = [sys.executable, "-m", "harness.cli"]


@pytest.fixture(scope="module")
def stub_elf(tmp_path_factory):
    return g.build(tmp_path_factory.mktemp("stub"))


def processes_mentioning(text: str) -> list[str]:
    return procs.mentioning(text)


def walk_in_info_tlb(qemu, tmp_path: Path, timeout: float = 60) -> subprocess.Popen:
    """`ptharness walk --oracle` on the big state, returned once its gdb has sent
    `info tlb` to QEMU (the transcript is on disk command by command): killing
    something then hits it mid-session."""
    transcript = tmp_path / "cli-mi.log"
    cli = subprocess.Popen([*CLI, "walk", "--gdb", qemu.gdb_endpoint, "--oracle",
                            "--transcript", str(transcript)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    while "info tlb" not in (transcript.read_text() if transcript.exists() else ""):
        assert time.monotonic() < deadline, "the CLI never sent info tlb"
        time.sleep(0.01)
    return cli


def finish(cli: subprocess.Popen) -> subprocess.CompletedProcess:
    _, err = cli.communicate(timeout=60)
    return subprocess.CompletedProcess(cli.args, cli.returncode, "", err)


def one_line_error(res: subprocess.CompletedProcess) -> str:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("ptharness: error: "), res
    return lines[0]


def test_missing_gdb_binary():
    with pytest.raises(GdbNotFound, match="'no-such-gdb' not found"):
        MiSession(gdb="no-such-gdb")
    res = subprocess.run([*CLI, "walk", "--gdb", "localhost:1", "--gdb-binary", "no-such-gdb"],
                         capture_output=True, text=True, timeout=60)
    assert "no-such-gdb" in one_line_error(res)


def test_qemu_that_fails_to_start_reports_command_code_and_output(stub_elf, tmp_path):
    m = Machine(kernel=stub_elf, extra=("-no-such-option",))
    with pytest.raises(QemuLaunchError) as err:
        with QemuProcess(m, tmp_path):
            pass
    e = err.value
    assert e.exit_code == 1 and "-no-such-option" in " ".join(e.command)
    assert "invalid option" in e.output
    assert live_children() == [] and processes_mentioning(str(tmp_path)) == []


@pytest.mark.parametrize("endpoint,expect", [
    ("/nonexistent/gdb.sock", "no such socket"),
    ("127.0.0.1:1", "Connection refused"),
    ("not an endpoint", "white space"),
])
def test_unreachable_gdbstub(endpoint, expect):
    res = subprocess.run([*CLI, "walk", "--gdb", endpoint], capture_output=True, text=True,
                         timeout=60)
    line = one_line_error(res)
    assert "gdbstub" in line and expect in line, line
    assert processes_mentioning(endpoint) == []


def big_state(stub_elf, tmp_path):
    """A stopped stub with the 896 MiB map: `info tlb` then takes seconds."""
    lay = g.kernel_map_4k(896)
    ctx = g.booted(stub_elf, tmp_path, cpu=lay.cpu_flags)
    qemu, gdb = ctx.__enter__()
    lay.install(gdb)
    gdb.disconnect()
    return ctx, qemu


def test_qemu_dying_mid_session(stub_elf, tmp_path):
    # In a session: the next command says the stub went away.
    with g.booted(stub_elf, tmp_path / "a") as (qemu, gdb):
        os.kill(qemu.pid, signal.SIGKILL)
        time.sleep(0.2)
        with pytest.raises(TargetGone, match="went away"):
            gdb.read_physical(0x100000, 4)  # registers could come from gdb's cache
    # Through the CLI, while it waits for a long `info tlb`.
    ctx, qemu = big_state(stub_elf, tmp_path / "b")
    try:
        cli = walk_in_info_tlb(qemu, tmp_path)
        os.kill(qemu.pid, signal.SIGKILL)
        res = finish(cli)
        assert "went away" in one_line_error(res) or "connection closed" in res.stderr.lower()
    finally:
        ctx.__exit__(None, None, None)
    # Nothing of this run: no QEMU, gdb or relay names its socket or directory.
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(qemu.gdb_endpoint) == []


def test_gdb_dying_mid_session(stub_elf, tmp_path):
    with g.booted(stub_elf, tmp_path / "a") as (_, gdb):
        os.kill(gdb._io.proc.pid, signal.SIGKILL)
        with pytest.raises(GdbDied, match="gdb exited"):
            gdb.registers(["cr3"])
    ctx, qemu = big_state(stub_elf, tmp_path / "b")
    try:
        cli = walk_in_info_tlb(qemu, tmp_path)
        kids = procs.children(cli.pid, "gdb")
        assert kids, "the CLI's gdb was not found"
        os.kill(kids[0], signal.SIGKILL)
        assert "gdb exited" in one_line_error(finish(cli))
        assert qemu.alive()  # only gdb died
    finally:
        ctx.__exit__(None, None, None)
    # Nothing of this run: no QEMU, gdb or relay names its socket or directory.
    assert processes_mentioning(str(tmp_path)) == []
    assert processes_mentioning(qemu.gdb_endpoint) == []
