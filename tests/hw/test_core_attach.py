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
