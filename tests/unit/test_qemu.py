"""The QEMU command line and input checks (nothing is started here)."""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from harness import qemu
from harness.qemu import Machine, QemuLaunchError, QemuProcess, live_children


def test_command_line_matches_the_guest_contract(tmp_path):
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"\x7fELF")
    m = Machine(kernel=kernel, memory="256M", cpu={"pse": True, "pae": False, "nx": False},
                append="mem=64M")
    q = QemuProcess(m, tmp_path / "run")
    argv = q.command_line()
    assert argv[:9] == ["qemu-system-i386", "-machine", "pc", "-accel", "tcg", "-cpu",
                        "qemu32,pse=on,pae=off,nx=off", "-m", "256M"]
    assert argv[argv.index("-kernel") + 1] == str(kernel)
    assert argv[argv.index("-append") + 1] == "mem=64M"
    assert "isa-debug-exit,iobase=0xf4,iosize=0x04" in argv and "-no-reboot" in argv
    gdb = argv[argv.index("-gdb") + 1]
    assert gdb.startswith("unix:") and gdb.endswith(",server=on,wait=off") and "-S" in argv
    # The pasteable line: same machine, gdbstub on a TCP port, quoted for a shell.
    line = q.shell_command(gdb_port=4321)
    assert shlex.split(line)[-1] == "tcp::4321" and shlex.split(line)[:9] == argv[:9]


def test_commas_in_paths_are_escaped(tmp_path):
    kernel = tmp_path / "k.elf"
    kernel.write_bytes(b"")
    q = QemuProcess(Machine(kernel=kernel), tmp_path / "a,b")
    serial = q.command_line()[q.command_line().index("-serial") + 1]
    assert serial.endswith("a,,b/serial.log")


@pytest.mark.parametrize("kwargs,msg", [
    ({"memory": "lots"}, "not a size"),
    ({"cpu": {"pse": "yes"}}, "must be True or False"),
    ({"cpu": {"p s e": True}}, "not a QEMU feature name"),
    ({"kernel": "/nonexistent/k.elf"}, "does not exist"),
])
def test_bad_machines_are_refused_before_anything_starts(kwargs, msg, tmp_path):
    args = {"kernel": None, **kwargs}
    with pytest.raises(ValueError, match=msg):
        QemuProcess(Machine(**args), tmp_path)
    assert live_children() == []


def test_missing_qemu_binary(tmp_path):
    q = QemuProcess(Machine(kernel=None, qemu="no-such-qemu-system-i386"), tmp_path)
    with pytest.raises(QemuLaunchError, match="'no-such-qemu-system-i386' not found"):
        q.start()
    assert live_children() == []
    assert not any(p.name.startswith("pth-") for p in tmp_path.iterdir())


def test_a_killed_runs_private_directory_is_removed_by_the_next(monkeypatch):
    """SIGKILL leaves pth-KIND-PID-* behind; the next one made removes those of
    pids that are gone, and nothing of a live process."""
    tmp_path = Path(tempfile.mkdtemp(prefix="t", dir="/tmp"))  # short: a socket fits
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"pth-qemu-{dead.pid}-abc"
    live = tmp_path / f"pth-qemu-{os.getpid()}-def"
    stale.mkdir()
    live.mkdir()
    try:
        made = qemu.short_private_dir("qemu")
        assert made.parent == tmp_path and made.name.startswith(f"pth-qemu-{os.getpid()}-")
        assert not stale.exists() and live.exists()
    finally:
        shutil.rmtree(tmp_path)
