"""QEMU for one run: the command line of a machine, started stopped with its
gdbstub on an endpoint of its own, serial output in a file, and a teardown
that leaves no process behind.

Also home of the child-process hygiene every layer above uses (gdb too): each
child runs in its own process group with PR_SET_PDEATHSIG=SIGKILL, so even a
SIGKILLed Python takes it down; the rest are stopped politely, then forcefully,
on exit, SIGTERM and Ctrl-C.
"""
from __future__ import annotations

import atexit
import ctypes
import contextlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Exit status the harness reports when it had to kill QEMU (docs/guest-contract.md).
TIMEOUT_STATUS = 124

# A unix socket path must fit in sockaddr_un.sun_path (108 bytes with the NUL).
_SUN_PATH_MAX = 107


log = logging.getLogger(__name__)


class QemuError(Exception):
    """Anything that went wrong with QEMU itself."""


class Terminated(KeyboardInterrupt):
    """SIGTERM of a ptharness process, unwound like Ctrl-C: QEMU and gdb stopped,
    a walked guest resumed, the terminal restored, temporary directories removed
    (ptharness's main installs the handler that raises it)."""


class QemuGone(QemuError):
    """QEMU died, or is stopped, while the harness waited on it."""


def _proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, Z, ...), None if unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:][:1] or None


class QemuLaunchError(QemuError):
    """QEMU did not come up: carries the command, its exit code and its output."""

    def __init__(self, message: str, command: list[str] | None = None,
                 exit_code: int | None = None, output: str = ""):
        self.command = command or []
        self.exit_code = exit_code
        self.output = output
        detail = [message]
        if command:
            detail.append(f"command: {shlex.join(command)}")
        if exit_code is not None:
            detail.append(f"exit code: {exit_code}")
        if output.strip():
            detail.append("output:\n" + output.rstrip())
        super().__init__("\n".join(detail))


# --------------------------------------------------------------------------------------
# Child processes: started so that they cannot outlive us.
# --------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_children: dict[int, subprocess.Popen] = {}
_children_lock = threading.Lock()
_hooks_installed = False


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent dies
    (PR_SET_PDEATHSIG): children, pool workers and the relay all use it."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process groups and the exit hooks still stop them


def _child_setup(parent_pid: int) -> None:
    """Runs in the child between fork and exec: die with the parent."""
    die_with_parent()
    # The parent may have died before prctl took effect.
    if os.getppid() != parent_pid:
        os._exit(1)


def spawn(argv: list[str], **popen_args) -> subprocess.Popen:
    """Start a child in its own process group, tied to this process's life.

    Ctrl-C in a terminal then reaches only us (the children do not react on
    their own, we stop them in order); PDEATHSIG covers a SIGKILLed parent.
    """
    _install_hooks()
    parent = os.getpid()
    proc = subprocess.Popen(argv, start_new_session=True,
                            preexec_fn=lambda: _child_setup(parent), **popen_args)
    with _children_lock:
        _children[proc.pid] = proc
    return proc


def stop(proc: subprocess.Popen, grace: float = 2.0) -> int:
    """Stop a child: SIGTERM, wait `grace` seconds, then SIGKILL. Returns its
    exit status. Signals go to its process group while the leader lives (a
    reaped leader's group id may already belong to someone else)."""
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
    finally:
        forget(proc)
    return proc.returncode


def forget(proc: subprocess.Popen) -> None:
    with _children_lock:
        _children.pop(proc.pid, None)


def live_children() -> list[subprocess.Popen]:
    with _children_lock:
        return [p for p in _children.values() if p.poll() is None]


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            proc.send_signal(sig)
        except (ProcessLookupError, OSError):
            pass


def _kill_all_children() -> None:
    with _children_lock:
        procs = list(_children.values())
        _children.clear()
    for p in procs:
        if p.poll() is None:
            _signal_group(p, signal.SIGKILL)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


def _on_sigterm(signum, frame):
    _kill_all_children()
    # Die of the signal as if we had not caught it.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_hooks() -> None:
    """atexit always; a SIGTERM handler only if nobody else installed one and
    we are in the main thread (a library must not steal signal handling)."""
    global _hooks_installed
    if _hooks_installed:
        return
    _hooks_installed = True
    atexit.register(_kill_all_children)
    if threading.current_thread() is threading.main_thread():
        if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _on_sigterm)


# --------------------------------------------------------------------------------------
# The machine and its command line.
# --------------------------------------------------------------------------------------

_MEMORY_RE = re.compile(r"^[1-9][0-9]*[KMGT]?$")
_FLAG_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class Machine:
    """One QEMU machine, as docs/guest-contract.md expects it.

    cpu: CPU feature flags on top of `cpu_model`, e.g. {"pse": True, "nx": False}.
    kernel: a multiboot ELF (or None: the machine boots nothing, e.g. for a
    person who attaches to it).
    """

    kernel: str | Path | None
    memory: str = "128M"
    cpu: dict[str, bool] = field(default_factory=dict)
    append: str = ""
    accel: str = "tcg"
    qemu: str = "qemu-system-i386"
    extra: tuple[str, ...] = ()
    cpu_model: str = "qemu32"
    machine: str = "pc"
    smp: int = 1

    def validate(self) -> None:
        """Raise ValueError naming the bad field; nothing is started before this passes."""
        if not _MEMORY_RE.match(str(self.memory)):
            raise ValueError(f"memory {self.memory!r} is not a size like 128M")
        for name, on in self.cpu.items():
            if not _FLAG_RE.match(name):
                raise ValueError(f"cpu flag name {name!r} is not a QEMU feature name")
            if not isinstance(on, bool):
                raise ValueError(f"cpu flag {name}={on!r}: the value must be True or False")
        if not isinstance(self.smp, int) or not 1 <= self.smp <= 255:
            raise ValueError(f"smp {self.smp!r}: a CPU count from 1 to 255")
        if not _FLAG_RE.match(self.cpu_model):
            raise ValueError(f"cpu model {self.cpu_model!r} is not a QEMU cpu model name")
        if self.kernel is not None and not Path(self.kernel).is_file():
            raise ValueError(f"kernel {self.kernel} does not exist")
        if "\n" in self.append:
            raise ValueError("append must be one line")

    def cpu_option(self) -> str:
        flags = [f"{n}={'on' if on else 'off'}" for n, on in self.cpu.items()]
        return ",".join([self.cpu_model, *flags])

    def arguments(self, serial_log: Path, gdb_option: str | None) -> list[str]:
        """QEMU's command line; -S and -gdb only when `gdb_option` is given."""
        args = [self.qemu, "-machine", self.machine, "-accel", self.accel,
                "-cpu", self.cpu_option(), "-m", str(self.memory)]
        if self.smp > 1:
            args += ["-smp", str(self.smp)]
        if self.kernel is not None:
            args += ["-kernel", str(self.kernel)]
            if self.append:
                args += ["-append", self.append]
        args += ["-display", "none", "-monitor", "none",
                 "-serial", "file:" + _qemu_opt_value(str(serial_log)),
                 "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-no-reboot"]
        if gdb_option is not None:
            args += ["-S", "-gdb", gdb_option]
        args += list(self.extra)
        return args


def _qemu_opt_value(s: str) -> str:
    # In QEMU option strings a comma separates options; a literal one is doubled.
    return s.replace(",", ",,")


def pid_alive(pid: int) -> bool:
    """Whether process pid still exists (whoever owns it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def short_private_dir(kind: str = "qemu") -> Path:
    """A fresh private directory whose socket paths fit in sun_path, named
    pth-KIND-PID-XXXX. Those a killed run (SIGKILL: nothing could clean up)
    left behind, of a pid that is gone, are removed first."""
    base = tempfile.gettempdir()
    if len(base) > 60:
        base = "/tmp"
    for old in Path(base).glob(f"pth-{kind}-*-*"):
        pid = old.name.split("-")[2]
        try:
            mine = old.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"pth-{kind}-{os.getpid()}-", dir=base))


class QemuProcess:
    """QEMU for one run: started stopped (-S) with its gdbstub on a unix socket
    of its own, so parallel runs never collide; a context manager that always
    takes QEMU down on the way out.

    `gdb_endpoint` is the socket path, `serial_log` the guest's serial output,
    `log` QEMU's own stdout/stderr.
    """

    def __init__(self, machine: Machine, run_dir: str | Path, *, start_timeout: float = 10.0,
                 qmp: bool = False, wait_on_enter: bool = True):
        """wait_on_enter=False: entering only launches QEMU; call wait_ready()
        before using its sockets (gdb can start meanwhile)."""
        machine.validate()
        self.wait_on_enter = wait_on_enter
        self._argv: list[str] = []
        self.machine = machine
        self.qmp_enabled = qmp
        self._qmp: socket.socket | None = None
        self._qmp_buf = b""
        self.run_dir = Path(run_dir)
        self.serial_log = self.run_dir / "serial.log"
        self.log = self.run_dir / "qemu.log"
        self.start_timeout = start_timeout
        self.gdb_endpoint: str | None = None
        self.timed_out = False
        self._socket_dir: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self.stopped_grace = 3.0  # a stopped QEMU is reported after this long
        self._stopped_since: float | None = None

    # -- life cycle --------------------------------------------------------------------
    def __enter__(self) -> "QemuProcess":
        self.launch()
        if self.wait_on_enter:
            self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.terminate()

    def start(self) -> None:
        """Launch QEMU and wait until its gdbstub listens."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        if self._proc is not None:
            raise QemuError("this QemuProcess was already started")
        exe = shutil.which(self.machine.qemu)
        if exe is None:
            raise QemuLaunchError(f"QEMU binary {self.machine.qemu!r} not found in PATH")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir = short_private_dir("qemu")
        sock = str(self._socket_dir / "gdb.sock")
        if len(sock) > _SUN_PATH_MAX:  # pragma: no cover - _short_socket_dir prevents it
            raise QemuLaunchError(f"gdb socket path too long for a unix socket: {sock}")
        self.gdb_endpoint = sock
        argv = self.command_line()
        self._log_file = open(self.log, "wb")
        log.info("starting QEMU: %s", shlex.join(argv))
        try:
            self._proc = spawn(argv, stdin=subprocess.DEVNULL, stdout=self._log_file,
                               stderr=subprocess.STDOUT)
        except OSError as e:
            self._cleanup_files()
            raise QemuLaunchError(f"cannot start QEMU: {e}", argv) from e
        self._argv = argv

    def wait_ready(self) -> None:
        """QEMU creates the listening socket before it runs anything; a QEMU
        that exits first (bad option, missing file) is a launch error."""
        argv = self._argv
        deadline = time.monotonic() + self.start_timeout
        delay = 0.001
        assert self._proc is not None and self.gdb_endpoint is not None
        while not os.path.exists(self.gdb_endpoint):
            code = self._proc.poll()
            if code is not None:
                self.terminate()
                raise QemuLaunchError("QEMU exited before its gdbstub came up", argv,
                                      code, self.output())
            if time.monotonic() > deadline:
                self.terminate()
                raise QemuLaunchError(
                    f"QEMU's gdbstub socket did not appear within {self.start_timeout}s",
                    argv, None, self.output())
            time.sleep(delay)
            delay = min(delay * 2, 0.02)

    def wait(self, timeout: float | None) -> int:
        """Wait for QEMU to exit and return its status: the guest's
        (code << 1) | 1, 0 when the guest never reached the exit device,
        128 + N when a signal N ended it, or 124 after a timeout (QEMU is then
        killed)."""
        if self._proc is None:
            raise QemuError("QEMU was not started")
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.terminate()
            return TIMEOUT_STATUS
        status = self.exit_status
        self.terminate()  # reap the group and remove the socket directory
        return status

    @property
    def killed_by(self) -> str | None:
        """The signal that ended QEMU (not the guest's exit device, not our timeout)."""
        rc = None if self._proc is None else self._proc.returncode
        if rc is None or rc >= 0 or self.timed_out:
            return None
        return signal.Signals(-rc).name

    @property
    def exit_status(self) -> int | None:
        if self._proc is None or self._proc.returncode is None:
            return None
        if self.timed_out:
            return TIMEOUT_STATUS
        rc = self._proc.returncode
        return 128 - rc if rc < 0 else rc

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def trouble(self, lost: bool = False) -> str | None:
        """Why QEMU cannot answer, or None: it exited (with which status or
        signal), or it has been stopped (state T in /proc, e.g. SIGSTOP) for
        longer than `stopped_grace` seconds. lost: a connection to it just
        broke, so wait up to 0.5 s for it to be reaped (a dying QEMU closes its
        sockets a moment before it can be)."""
        if self._proc is None:
            return "QEMU was not started"
        if lost:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(0.5)
        rc = self._proc.poll()
        if rc is not None:
            how = (f"was killed by {signal.Signals(-rc).name}" if rc < 0
                   else f"exited with status {rc}")
            return f"QEMU (pid {self._proc.pid}) {how}"
        if _proc_state(self._proc.pid) == "T":
            now = time.monotonic()
            self._stopped_since = self._stopped_since or now
            if now - self._stopped_since >= self.stopped_grace:
                return (f"QEMU (pid {self._proc.pid}) has been stopped (state T, e.g. SIGSTOP) "
                        f"for {now - self._stopped_since:.0f}s")
        else:
            self._stopped_since = None
        return None

    def check_alive(self, doing: str, lost: bool = False) -> None:
        """Raise QemuGone naming QEMU's state if it cannot answer (lost: as trouble's)."""
        why = self.trouble(lost)
        if why:
            raise QemuGone(f"{why} during {doing}")

    def terminate(self) -> None:
        """Stop QEMU (politely, then forcefully) and remove the socket directory.
        Safe to call more than once."""
        try:
            if self._proc is not None:
                stop(self._proc)
        finally:
            self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def output(self) -> str:
        """QEMU's own stdout/stderr so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    # -- command lines -----------------------------------------------------------------
    def command_line(self) -> list[str]:
        """The exact argv of this run (the gdbstub, and QMP if asked for, on unix
        sockets of their own)."""
        endpoint = self.gdb_endpoint or str(Path(tempfile.gettempdir()) / "pth-XXXX" / "gdb.sock")
        argv = self.machine.arguments(
            self.serial_log, f"unix:{_qemu_opt_value(endpoint)},server=on,wait=off")
        if self.qmp_enabled:
            argv += ["-qmp", f"unix:{_qemu_opt_value(self._qmp_path())},server=on,wait=off"]
        return argv

    # -- QMP: QEMU's own monitor, straight -------------------------------------------
    def _qmp_path(self) -> str:
        return str((self._socket_dir or Path(tempfile.gettempdir()) / "pth-XXXX") / "qmp.sock")

    def hmp(self, command: str, timeout: float = 60.0) -> str:
        """A human-monitor command (`info tlb`...) through QMP: the same text as
        gdb's `monitor`, without gdb's per-line hex packets (for 896 MiB of
        4 KiB pages, 20 MB of `info tlb` takes seconds that way)."""
        return self.hmp_bytes(command, timeout).decode(errors="replace")

    def hmp_bytes(self, command: str, timeout: float = 60.0) -> bytes:
        """hmp() as bytes, without decoding the JSON reply as a whole: the text
        of a monitor command escapes nothing but its line ends, which one
        replace() undoes (21 MB of `info tlb`: a few ms, where json.loads takes
        50 ms and a str)."""
        if not self.qmp_enabled:
            raise QemuError("this QemuProcess was started without QMP")
        try:
            if self._qmp is None:
                self._qmp = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self._qmp.settimeout(timeout)
                self._qmp.connect(self._qmp_path())
                self._qmp_reply(time.monotonic() + timeout, "the QMP greeting")
                self._qmp_send({"execute": "qmp_capabilities"})
                self._qmp_reply(time.monotonic() + timeout, "qmp_capabilities")
            self._qmp_send({"execute": "human-monitor-command",
                            "arguments": {"command-line": command}})
            line = self._qmp_reply(time.monotonic() + timeout, f"`{command}` over QMP", raw=True)
        except OSError as e:
            self.check_alive(f"`{command}` over QMP", lost=True)
            raise QemuGone(f"QMP `{command}`: {e.strerror or e}") from None
        head, tail = b'{"return": "', b'"}'
        body = line.rstrip(b"\r")
        if body.startswith(head) and body.endswith(tail):
            text = body[len(head):-len(tail)]
            if text.count(b"\\") == 2 * text.count(b"\\r\\n"):
                return text.replace(b"\\r\\n", b"\r\n")
        reply = json.loads(line)
        if "error" in reply:
            raise QemuError(f"QMP `{command}`: {reply['error'].get('desc', reply['error'])}")
        return reply.get("return", "").encode()

    def _qmp_send(self, msg: dict) -> None:
        assert self._qmp is not None
        self._qmp.sendall(json.dumps(msg).encode() + b"\n")

    def _qmp_reply(self, deadline: float | None = None, doing: str = "QMP", raw: bool = False):
        """The next reply or greeting, skipping asynchronous events. Replies are
        one JSON line each; `info tlb` can make one of 20 MB, so chunks are
        joined once, not appended to a growing buffer. While waiting, QEMU's
        state is looked at every half second: a QEMU that died or is stopped is
        named at once instead of waiting out the timeout."""
        assert self._qmp is not None
        while True:
            chunks = [self._qmp_buf]
            while b"\n" not in chunks[-1]:
                self._qmp.settimeout(0.5)
                try:
                    chunk = self._qmp.recv(1 << 20)
                except socket.timeout:
                    self.check_alive(doing)
                    if deadline is not None and time.monotonic() > deadline:
                        raise QemuGone(f"no answer from QEMU to {doing} in time "
                                       f"(QEMU pid {self.pid} is running)") from None
                    continue
                if not chunk:
                    self.check_alive(doing, lost=True)
                    raise QemuGone(f"QEMU closed its QMP connection during {doing}")
                chunks.append(chunk)
            line, _, self._qmp_buf = b"".join(chunks).partition(b"\n")
            if raw and line.startswith((b'{"return"', b'{"error"')):
                return line  # the caller decodes what it needs
            msg = json.loads(line)
            if "event" not in msg:
                return line if raw else msg

    def shell_command(self, gdb_port: int = 1234) -> str:
        """The same machine as a line a person can paste: the gdbstub on TCP
        `gdb_port` (attach with `gdb -ex 'target remote :PORT'`)."""
        return shlex.join(self.machine.arguments(self.serial_log, f"tcp::{gdb_port}"))
