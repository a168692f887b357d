"""`ptharness debug`: one scenario in QEMU, stopped where you want it, in an
interactive gdb with the guest's symbols and the `pt` commands loaded.

QEMU starts stopped with its gdbstub; gdb is started under pexpect, runs
`pt start` (which takes the before snapshot at pagetable_init and goes on to
the chosen point), and the terminal is then handed over. Whatever happens,
gdb and QEMU are gone when this returns.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Iterator

from typing import TYPE_CHECKING

from . import qemu, scenarios
from .scenarios import Scenario

if TYPE_CHECKING:  # runner (every layer) and pexpect load when a session starts,
    import pexpect  # so that the CLI's parser can read POINTS cheaply

    from . import runner

POINTS = ("entry", "done", "work", "fault")
PROMPT = r"\(gdb\) "


class DebugError(Exception):
    pass


def gdb_argv(s: Scenario, opt: runner.RunOptions, at: str, kernel: Path, endpoint: str) -> list[str]:
    """gdb's command line: the ELF, our commands, the target, `pt start`."""
    # gdb embeds its own Python; it finds the harness (and pyelftools for the
    # model) on the paths of this interpreter when the versions agree.
    from . import runner
    paths = [str(runner.REPO)]
    if sys.version_info[:2] == _gdb_python_version(opt.gdb):
        paths += sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    setup = (f"python import sys; sys.path[:0] = {paths!r}; "
             f"import harness.gdb_commands as _pt; "
             f"_pt.install({s.id!r}, {opt.variant!r}, {opt.model_variant!r}, {str(kernel)!r}, "
             f"{at!r})")
    return [opt.gdb, "-q", "-nx", "-ex", "set pagination off", "-ex", "set confirm off",
            "-ex", setup, "-ex", f"target remote {endpoint}", "-ex", "pt start", str(kernel)]


def _gdb_python_version(gdb: str) -> tuple[int, int] | None:
    import signal
    import subprocess
    try:
        # Its own process group: a gdb wrapper that hangs goes with all it started.
        proc = subprocess.Popen([gdb, "-q", "-nx", "-batch", "-ex",
                                 "python import sys; print('PYVER', *sys.version_info[:2])"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    except OSError:
        return None
    try:
        out = proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None
    for line in out.splitlines():
        if line.startswith("PYVER "):
            major, minor = line.split()[1:3]
            return int(major), int(minor)
    return None


def debug(s: Scenario, opt: runner.RunOptions, at: str = "done", *,
          stdin=None, stdout=None) -> int:
    """Open the interactive session; returns gdb's exit status."""
    if at not in POINTS:
        raise DebugError(f"--at must be one of {', '.join(POINTS)}")
    if shutil.which(opt.gdb) is None:
        raise DebugError(f"gdb binary {opt.gdb!r} not found")
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    if not stdin.isatty():
        raise DebugError("ptharness debug is interactive: it needs a terminal")
    import pexpect

    from . import runner
    kernel = runner.kernel_path(s, opt)
    art = runner.artifacts_dir(s, opt) / "debug"
    art.mkdir(parents=True, exist_ok=True)
    machine = runner.machine_for(s, opt, kernel)
    with qemu.QemuProcess(machine, art) as vm, contextlib.ExitStack() as stack:
        argv = gdb_argv(s, opt, at, kernel, vm.gdb_endpoint)
        parent = os.getpid()
        size = _terminal_size(stdin)  # set before gdb starts, which reads it once
        child = pexpect.spawn(argv[0], argv[1:], encoding="utf-8", timeout=60 * opt.timeout_factor,
                              dimensions=(size.lines, size.columns),
                              preexec_fn=lambda: qemu._child_setup(parent))
        try:
            stack.enter_context(_window_size_followed(child, stdin))
            stdout.write(f"ptharness debug: {s.id if scenarios.in_table(s) else s.spec} (guest {s.guest_variant(opt.variant)}); "
                         f"serial log {vm.serial_log}\n")
            stdout.flush()
            child.logfile_read = stdout
            try:
                child.expect(PROMPT)  # after `pt start`: stopped where asked
            except pexpect.TIMEOUT:
                raise DebugError(f"gdb ({opt.gdb}) did not reach its prompt within "
                                 f"{child.timeout:.0f}s (stopping at {at}); "
                                 f"{vm.trouble() or 'QEMU is running'}") from None
            child.logfile_read = None
            child.interact()      # the terminal is the user's now, until gdb exits
            child.expect(pexpect.EOF, timeout=5)
        except pexpect.EOF:
            pass
        finally:
            stack.close()  # our SIGWINCH handler goes before gdb does
            child.close(force=True)
        return child.exitstatus if child.exitstatus is not None else 1


@contextlib.contextmanager
def _window_size_followed(child: pexpect.spawn, tty) -> Iterator[None]:
    """gdb's terminal follows every resize of ours (SIGWINCH), so its output
    wraps where the user's terminal does."""
    def resize(*_):
        size = _terminal_size(tty)
        if not child.closed:
            child.setwinsize(size.lines, size.columns)
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    previous = signal.signal(signal.SIGWINCH, resize)
    try:
        yield
    finally:
        signal.signal(signal.SIGWINCH, previous)


def _terminal_size(tty) -> os.terminal_size:
    """The size of the user's terminal itself (not $COLUMNS, which a parent
    such as pytest may have set for its own output)."""
    try:
        return os.get_terminal_size(tty.fileno())
    except (OSError, ValueError, AttributeError):
        return shutil.get_terminal_size()
