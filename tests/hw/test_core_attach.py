"""`ptharness walk` leaves a target as it found it: a running guest runs on,
a stopped one stays stopped (QEMU's run state tells which it was)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "guests"))
import stubguest as g  # noqa: E402

from harness.gdbmi import MiSession  # noqa: E402

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def stub_elf(tmp_path_factory):
    return g.build(tmp_path_factory.mktemp("stub"))


def walk(endpoint):
    res = subprocess.run([sys.executable, "-m", "harness.cli", "walk", "--gdb", endpoint],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def state_after_connect(endpoint) -> str:
    with MiSession() as gdb:
        gdb.connect(endpoint)
        state = gdb.run_state()
        gdb.disconnect()
    return state


def test_stopped_guest_stays_stopped(stub_elf, tmp_path):
    with g.booted(stub_elf, tmp_path) as (qemu, gdb):
        gdb.disconnect()
        assert "paging is off" in walk(qemu.gdb_endpoint)
        assert state_after_connect(qemu.gdb_endpoint) == "paused (debug)"


def test_running_guest_is_resumed(stub_elf, tmp_path):
    with g.booted(stub_elf, tmp_path) as (qemu, gdb):
        gdb.command("-break-delete")
        gdb.detach()  # QEMU resumes the guest: it spins
        walk(qemu.gdb_endpoint)
        # Connecting pauses a running guest as plain "paused": it was running again.
        assert state_after_connect(qemu.gdb_endpoint) == "paused"
        with MiSession() as probe:
            probe.connect(qemu.gdb_endpoint)
            assert probe.registers(["eip"])["eip"] in range(0x100012, 0x100030)
            probe.detach()


def test_sigterm_mid_walk_resumes_the_running_guest_and_exits_143(tmp_path):
    """SIGTERM while `walk --oracle` reads a big address space (896 MiB of 4 KiB
    PAE pages, the guest spinning after paging_init): the walk unwinds like
    Ctrl-C, detaches -- so the guest runs on -- and exits 143, leaving no gdb."""
    import signal
    import time

    from harness import qemu, runner, scenarios
    from . import procs
    s = scenarios.from_spec("pae-nopse-pge-nx-896M-hang=late")
    opt = runner.RunOptions()
    with qemu.QemuProcess(runner.machine_for(s, opt, runner.kernel_path(s, opt)), tmp_path) as vm:
        with MiSession() as gdb:
            gdb.connect(vm.gdb_endpoint)
            gdb.command("-exec-continue")
            time.sleep(1.0)  # past paging_init: spinning in hang()
            gdb.interrupt()
            gdb.detach()  # running again
        walker = subprocess.Popen([sys.executable, "-m", "harness.cli", "walk", "--gdb",
                                   vm.gdb_endpoint, "--oracle"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.8)
        assert walker.poll() is None, walker.communicate()
        walker.send_signal(signal.SIGTERM)
        out, err = walker.communicate(timeout=60)
        assert walker.returncode == 143, (out, err)
        assert "terminated (SIGTERM)" in err
        assert state_after_connect(vm.gdb_endpoint) == "paused"  # it was running again
        assert procs.children(walker.pid, "gdb") == []


@pytest.mark.parametrize("banner,said", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "does not speak the gdb remote protocol: it answered b'SSH-2.0"),
    (None, "did not answer gdb's first packet within 3s: not a gdbstub"),
])
def test_walk_to_something_that_is_no_gdbstub_says_so_quickly(banner, said):
    """A server that is not a gdbstub: one line saying what it answered (or that
    it answered nothing), in seconds, not gdb's 20 s timeout."""
    import socket
    import threading
    import time
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        if banner:
            conn.sendall(banner)
        time.sleep(10)
        conn.close()
    threading.Thread(target=serve, daemon=True).start()
    t = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "harness.cli", "walk", "--gdb", f"127.0.0.1:{port}"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and time.monotonic() - t < 10, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], lines
    assert "relay.sock" not in lines[0]
    server.close()


def test_walk_json_to_stdout_is_a_snapshot(stub_elf, tmp_path):
    import json
    with g.booted(stub_elf, tmp_path) as (qemu, gdb):
        gdb.disconnect()
        res = subprocess.run([sys.executable, "-m", "harness.cli", "walk", "--gdb",
                              qemu.gdb_endpoint, "--json"], capture_output=True, text=True,
                             timeout=120)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["format"], doc["version"], doc["label"]) == ("ptharness-snapshot", 2, "walk")
    assert "paging is off" in res.stderr
