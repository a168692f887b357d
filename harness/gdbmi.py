"""One gdb/MI session: tokened commands that return as soon as their own result
record arrives, typed helpers on top, and a transcript of everything said.

Records are parsed with pygdbmi's parser; pygdbmi's GdbController is not used
(it waits a fixed time after every write).  gdb is talked to over pipes that
are read as soon as select() says bytes are there.
"""
from __future__ import annotations

import collections
import contextlib
import fcntl
import logging
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from . import x86
from .qemu import die_with_parent, short_private_dir, spawn, stop

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# Transcript lines longer than this are cut (a page walk reads megabytes of hex).
TRANSCRIPT_LINE_LIMIT = 4000
_TAIL_LINES = 30

_F_SETPIPE_SZ = 1031  # Linux fcntl
_DUMP_THRESHOLD = 32 * 1024  # bytes; smaller reads are quicker as one MI command
_READ_METHODS = ("auto", "gdb", "pmemsave")  # how GdbMemory reads table pages
# gdb's words for "the remote end went away".
_TARGET_GONE_RE = re.compile(r"Remote connection closed|Remote communication error|"
                             r"The program is not being run|Connection reset by peer|"
                             r"Remote target disconnected|Broken pipe")


class MiError(Exception):
    """Anything that went wrong talking to gdb."""


class GdbNotFound(MiError):
    pass


class GdbError(MiError):
    """gdb answered a command with ^error."""

    def __init__(self, command: str, msg: str):
        self.command = command
        self.msg = msg
        super().__init__(f"gdb refused `{command}`: {msg}")


class TargetGone(MiError):
    """The gdbstub (QEMU) went away in the middle of the session."""


class ConnectError(MiError):
    """The gdbstub could not be reached."""


class GdbDied(MiError):
    """gdb itself exited in the middle of the session."""


class MiTimeout(MiError):
    pass


def mi_quote(s: str) -> str:
    """An MI c-string argument."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


# --------------------------------------------------------------------------------------
# Transports: real gdb over pipes, or a recorded transcript played back (unit tests).
# --------------------------------------------------------------------------------------

class _GdbPipes:
    def __init__(self, gdb: str, args: list[str]):
        exe = shutil.which(gdb)
        if exe is None:
            raise GdbNotFound(f"gdb binary {gdb!r} not found in PATH")
        self.argv = [exe, "--interpreter=mi3", "-nx", "-q", *args]
        self.proc = spawn(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, bufsize=0)
        self._out = self.proc.stdout.fileno()
        os.set_blocking(self._out, False)
        try:  # fewer wake-ups while gdb streams a big memory read
            fcntl.fcntl(self._out, _F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass

    def write(self, data: bytes) -> None:
        try:
            self.proc.stdin.write(data)
        except (BrokenPipeError, OSError, ValueError):
            pass  # gdb is gone: the read that follows sees EOF and says so

    def read(self, timeout: float) -> bytes | None:
        """Bytes that are there, None on timeout, b'' at end of file."""
        try:
            data = os.read(self._out, 1 << 20)
            if data:
                return data
        except BlockingIOError:
            pass
        r, _, _ = select.select([self._out], [], [], max(timeout, 0))
        if not r:
            return None
        try:
            return os.read(self._out, 1 << 20)
        except BlockingIOError:
            return None

    def exit_status(self) -> int | None:
        return self.proc.poll()

    def close(self) -> None:
        stop(self.proc, grace=1.0)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class ReplayTransport:
    """Plays a recorded transcript back as if gdb were answering.

    Every command written must be the one recorded next (tokens included);
    the output recorded after it then becomes readable, so records arrive
    exactly as interleaved as they did from the real gdb.  Past the end of
    the recording the "gdb" has exited.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._steps: list[tuple[str, list[bytes]]] = []
        initial: list[bytes] = []
        cur = initial
        for n, raw in enumerate(self.path.read_text().splitlines(), 1):
            if not raw or raw.startswith("#"):
                continue
            m = re.match(r"^\s*[0-9.]+ ([<>]) ?(.*)$", raw)
            if not m:
                raise ValueError(f"{self.path}:{n}: not a transcript line: {raw[:80]!r}")
            direction, text = m.groups()
            if direction == "<" and text.endswith(" more chars]") and "[... " in text:
                raise ValueError(f"{self.path}:{n}: a cut line cannot be replayed")
            if direction == ">":
                cur = []
                self._steps.append((text, cur))
            else:
                cur.append(text.encode() + b"\n")
        self._ready = b"".join(initial)
        self._next = 0
        # The relay socket the recording connected to: connect() sends it again.
        self.relay_path = next((m.group(1) for cmd, _ in self._steps
                                for m in [re.search(r"-target-select remote (\S+)", cmd)] if m), "")

    def write(self, data: bytes) -> None:
        sent = data.decode().rstrip("\n")
        if self._next >= len(self._steps):
            raise MiError(f"replay {self.path.name}: unexpected command after the end: {sent!r}")
        want, output = self._steps[self._next]
        if sent != want:
            raise MiError(f"replay {self.path.name}: command #{self._next + 1} was "
                          f"{want!r} in the recording, got {sent!r}")
        self._next += 1
        self._ready += b"".join(output)

    def read(self, timeout: float) -> bytes | None:
        if self._ready:
            data, self._ready = self._ready, b""
            return data
        if self._next >= len(self._steps):
            return b""  # gdb exited at the end of the recording
        time.sleep(min(timeout, 0.01))
        return None

    def exit_status(self) -> int | None:
        return 0 if self._next >= len(self._steps) and not self._ready else None

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------------------
# The session.
# --------------------------------------------------------------------------------------

class MiSession:
    """One gdb/MI session (a context manager; gdb is started right away).

    transcript: a file that receives every line sent (`>`) and received (`<`)
    with the time since the start, for the artifacts (long lines are cut).
    transport: a ReplayTransport for unit tests (then `gdb` is not started).
    """

    def __init__(self, gdb: str = "gdb", transcript: str | Path | None = None, *,
                 transport=None, gdb_args: list[str] | None = None,
                 transcript_line_limit: int = TRANSCRIPT_LINE_LIMIT,
                 timeout_factor: float = 1.0):
        self._t0 = time.monotonic()
        self.default_timeout = DEFAULT_TIMEOUT * timeout_factor  # commands that give none
        self._token = 0
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self._stops: collections.deque[dict] = collections.deque()
        self.notifications: list[dict] = []  # every async record seen, in order
        self.target_output: list[str] = []   # stream text that arrived outside any command
        self._reg_numbers: dict[str, int] | None = None
        self._line_limit = transcript_line_limit
        self._transcript = open(transcript, "w") if transcript else None
        self._closed = False
        self.connected_to: str | None = None
        self._physical_depth = 0
        self._scratch: str | None = None
        self._relay: subprocess.Popen | None = None
        self._pmemsave_ok: bool | None = None
        # watch(): why the target cannot answer (its QEMU died or is stopped), or
        # None; looked at every half second while an answer is awaited.
        # watch(lost=True): a connection just broke; it may wait a moment to say why.
        self.watch: Callable[..., str | None] | None = None
        if self._transcript:
            self._transcript.write("# ptharness gdb/MI transcript: `>` sent, `<` received, "
                                   "seconds since start\n")
        try:
            self._io = transport if transport is not None else _GdbPipes(gdb, _gdb_settings(gdb_args))
        except BaseException:
            self.close()
            raise
        # gdb's start-up (50 ms) is waited for by the first command: the caller
        # can go on (importing, starting QEMU) meanwhile.
        self._started = False

    def __enter__(self) -> "MiSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transcript ----------------------------------------------------------------------
    def _log(self, direction: str, line: str) -> None:
        short = line if len(line) <= 300 else line[:300] + f"[... {len(line) - 300} more chars]"
        self._tail.append(f"{direction} {short}")
        if self._transcript:
            if len(line) > self._line_limit:
                line = line[:self._line_limit] + f"[... {len(line) - self._line_limit} more chars]"
            self._transcript.write(f"{time.monotonic() - self._t0:10.6f} {direction} {line}\n")
            if direction == ">":
                # Each command is on disk before its answer is awaited: a session
                # that dies or hangs leaves a transcript up to that command.
                self._transcript.flush()

    def transcript_tail(self) -> str:
        return "\n".join(self._tail)

    # -- reading records -----------------------------------------------------------------
    def _next_line(self, deadline: float, waiting_for: str) -> str:
        buf = self._buf
        while True:
            nl = buf.find(b"\n", self._scanned)
            if nl >= 0:
                text = buf[:nl].decode("utf-8", "replace").rstrip("\r")
                del buf[:nl + 1]
                self._scanned = 0
                self._log("<", text)
                return text
            self._scanned = len(buf)
            left = deadline - time.monotonic()
            if left <= 0:
                raise MiTimeout(f"no answer from gdb to `{waiting_for}` in time; "
                                f"last lines of the session:\n{self.transcript_tail()}")
            data = self._io.read(min(left, 0.5) if self.watch else left)
            if data is None:
                why = self.watch() if self.watch else None
                if why:
                    raise TargetGone(f"{why} while gdb waited for `{waiting_for}`")
                continue
            if data == b"":
                if buf:
                    buf += b"\n"
                    continue
                status = self._io.exit_status()
                raise GdbDied(f"gdb exited (status {status}) while waiting for `{waiting_for}`; "
                              f"last lines of the session:\n{self.transcript_tail()}")
            buf += data

    def _why_gone(self) -> str:
        """gdb saw the stub's socket close: the watch names why."""
        return (self.watch(lost=True) if self.watch else None) or "the gdbstub went away"

    def _next_record(self, deadline: float, waiting_for: str) -> dict | None:
        """The next parsed record; None for a prompt line."""
        line = self._next_line(deadline, waiting_for)
        if line.startswith("(gdb)") or not line:
            return None
        rec = _parse_memory_result(line) or _parse_response(line)
        t = rec["type"]
        if t == "notify":
            self.notifications.append(rec)
            if rec["message"] == "stopped":
                self._stops.append(rec.get("payload") or {})
        return rec

    def _read_until_prompt(self, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self._next_line(deadline, what)
            if line.startswith("(gdb)"):
                return
            if line:
                rec = _parse_response(line)
                if rec["type"] == "notify":
                    self.notifications.append(rec)

    # -- commands ------------------------------------------------------------------------
    def _execute(self, mi: str, timeout: float) -> tuple[dict, list[str]]:
        if self._closed:
            raise MiError(f"`{mi}`: the gdb session is closed")
        if not self._started:
            self._started = True
            self._read_until_prompt(self.default_timeout, "(gdb start-up)")
        self._token += 1
        token = self._token
        line = f"{token}{mi}"
        self._log(">", line)
        self._io.write(line.encode() + b"\n")
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        streams: list[str] = []
        while True:
            rec = self._next_record(deadline, mi)
            if rec is None:
                continue
            t = rec["type"]
            if t == "result":
                if rec.get("token") != token:
                    continue  # the late answer of a command that timed out
                log.debug("MI %s -> %s in %.1f ms", mi[:120], rec["message"],
                          1000 * (time.monotonic() - started))
                if rec["message"] == "error":
                    msg = (rec.get("payload") or {}).get("msg", "")
                    if _TARGET_GONE_RE.search(msg) or _TARGET_GONE_RE.search("".join(streams)):
                        raise TargetGone(f"{self._why_gone()} during `{mi}`: {msg.strip()}")
                    raise GdbError(mi, msg)
                return rec, streams
            if t in ("console", "target", "log", "output"):
                streams.append(rec["payload"] or "")

    def command(self, mi: str, timeout: float | None = None) -> dict:
        """Send one MI command and return its parsed result record
        ({"type": "result", "message": "done", "payload": {...}, "token": N}).
        Raises GdbError on ^error, MiTimeout, GdbDied or TargetGone."""
        return self._execute(mi, self.default_timeout if timeout is None else timeout)[0]

    def _long(self, timeout: float | None) -> float:
        """The limit for commands that move much data (monitor output, big reads)."""
        return 6 * self.default_timeout if timeout is None else timeout

    def console(self, cli: str, timeout: float | None = None) -> str:
        """Run a CLI command and return what it printed."""
        _, streams = self._execute(f"-interpreter-exec console {mi_quote(cli)}",
                                   self.default_timeout if timeout is None else timeout)
        return "".join(streams)

    # -- target ----------------------------------------------------------------------------
    def connect(self, endpoint: str, timeout: float = 20.0, *, relay: bool = True,
                check_stub: bool = False) -> dict:
        """Attach to a gdbstub: a unix socket path or HOST:PORT. QEMU stops the
        guest when gdb connects. gdb talks to it through the ack-dropping
        relay (see relay_main) unless `relay` is False: a caller that never
        has QEMU print much through `monitor` saves a process. check_stub
        (without the relay, which checks by itself): first make sure, within
        3 s, that the endpoint speaks the gdb protocol, so that anything else
        is named at once. Returns the *stopped record of the attach."""
        _check_endpoint(endpoint)
        if check_stub and not relay and not isinstance(self._io, ReplayTransport):
            problem = probe_gdbstub(endpoint)
            if problem:
                raise ConnectError(f"cannot reach the gdbstub at {endpoint}: {problem}")
        listen = self._start_relay(endpoint, timeout) if relay else endpoint
        self._stops.clear()
        try:
            self._target_select(listen, timeout)
        except (GdbError, TargetGone, MiTimeout) as e:
            msg = self._relay_said() or (e.msg if isinstance(e, GdbError) else str(e))
            raise ConnectError(f"cannot reach the gdbstub at {endpoint}: "
                               f"{msg.strip().splitlines()[0]}") from None
        self.connected_to = endpoint
        self._pmemsave_ok = None
        return self._stops.pop() if self._stops else {}

    def _target_select(self, listen: str, timeout: float) -> None:
        """`target remote`. A QEMU just started may have its socket file bound
        but not yet listening: a refused unix socket is tried again for 1 s."""
        deadline = time.monotonic() + 1.0
        while True:
            try:
                self._execute(f"-target-select remote {listen}", timeout)
                return
            except GdbError as e:
                if ("Connection refused" not in e.msg or "/" not in listen
                        or time.monotonic() > deadline):
                    raise
                time.sleep(0.01)

    def _start_relay(self, endpoint: str, timeout: float) -> str:
        if self._relay is not None:
            raise MiError(f"already connected to {self.connected_to}")
        if isinstance(self._io, ReplayTransport):
            return self._io.relay_path  # the recording names the socket it used
        listen = os.path.join(self._scratch_dir(), "relay.sock")
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self._relay = spawn([sys.executable, "-m", "harness.gdbmi", "--relay", endpoint, listen],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
        r, _, _ = select.select([self._relay.stdout], [], [], timeout)
        first = self._relay.stdout.readline().decode(errors="replace").strip() if r else ""
        if first != "ready":
            rest = first or f"no answer within {timeout}s"
            self._stop_relay()
            raise ConnectError(f"cannot reach the gdbstub at {endpoint}: {rest}")
        return listen

    def _relay_said(self) -> str:
        """What the relay printed after "ready" (why it gave up), if anything."""
        if self._relay is None or self._relay.stdout is None:
            return ""
        r, _, _ = select.select([self._relay.stdout], [], [], 0.5)
        return self._relay.stdout.readline().decode(errors="replace").strip() if r else ""

    def _stop_relay(self) -> None:
        if self._relay is not None:
            stop(self._relay, grace=1.0)
            self._relay.stdout.close()
            self._relay = None

    def load_elf(self, path: str | Path) -> None:
        if not Path(path).is_file():
            raise MiError(f"ELF {path} does not exist")
        self.command(f"-file-exec-and-symbols {mi_quote(str(path))}")

    def break_at(self, symbol: str) -> int:
        """A breakpoint on the first instruction of `symbol`; returns its number."""
        rec = self.command(f"-break-insert {mi_quote('*' + symbol)}")
        return int(rec["payload"]["bkpt"]["number"])

    def continue_until_stop(self, timeout: float) -> dict:
        """Resume the target and wait for it to stop. Returns the *stopped record
        (its "reason": "breakpoint-hit", "signal-received"... or "exited" when
        the target went away, e.g. QEMU exited). On timeout the target is
        interrupted and MiTimeout raised."""
        self._stops.clear()
        self.command("-exec-continue")
        return self.wait_for_stop(timeout, "-exec-continue")

    def wait_for_stop(self, timeout: float, what: str = "the target to stop") -> dict:
        deadline = time.monotonic() + timeout
        try:
            while not self._stops:
                rec = self._next_record(deadline, what)
                if rec and rec["type"] in ("console", "target", "log"):
                    self.target_output.append(rec["payload"] or "")
                    gone = _TARGET_GONE_RE.search(rec["payload"] or "")
                    if gone:
                        # gdb reports no *stopped for a stub that vanished while running
                        # ("Remote connection closed", or "Remote communication error.
                        # Target disconnected.: Broken pipe." — both mean QEMU exited).
                        return {"reason": "exited", "detail": gone.group(0)}
        except MiTimeout:
            stop = self.interrupt()
            frame = (stop or {}).get("frame") or {}
            where = ""
            if frame.get("addr"):
                where = (f"; interrupted at {frame['addr']} in {frame.get('func', '??')}"
                         + (f" ({frame['file']}:{frame['line']})" if frame.get("file") else ""))
            raise MiTimeout(f"the target did not stop within {timeout}s after `{what}`{where}; "
                            f"last lines:\n{self.transcript_tail()}") from None
        stopped = self._stops.popleft()
        if stopped.get("reason") in ("exited", "exited-normally", "exited-signalled"):
            stopped = dict(stopped, reason="exited")
        return stopped

    def interrupt(self, timeout: float = 5.0) -> dict | None:
        """Stop a running target (best effort: None if it did not stop)."""
        self._stops.clear()
        try:
            self.command("-exec-interrupt", timeout=timeout)
            deadline = time.monotonic() + timeout
            while not self._stops:
                self._next_record(deadline, "-exec-interrupt")
            return self._stops.popleft()
        except MiError:
            return None

    def monitor(self, cmd: str, timeout: float | None = None) -> str:
        """A QEMU monitor command through the gdbstub; its output with \\n line ends."""
        timeout = self._long(timeout)
        return self.console(f"monitor {cmd}", timeout).replace("\r\n", "\n")

    def run_state(self) -> str:
        """QEMU's run state as its monitor says it: "running", "paused",
        "paused (prelaunch)", "paused (debug)"..."""
        out = self.monitor("info status")
        m = re.search(r"VM status:\s*(.+)", out)
        if not m:
            raise MiError(f"unexpected answer to `monitor info status`: {out!r}")
        return m.group(1).strip()

    def detach(self) -> None:
        """Leave the target; QEMU resumes the guest."""
        self.command("-target-detach")
        self.connected_to = None
        self._stop_relay()

    def disconnect(self) -> None:
        """Leave the target without resuming it (QEMU keeps it stopped)."""
        self.command("-target-disconnect")
        self.connected_to = None
        self._stop_relay()

    # -- registers -------------------------------------------------------------------------
    def _register_numbers(self) -> dict[str, int]:
        if self._reg_numbers is None:
            names = self.command("-data-list-register-names")["payload"]["register-names"]
            self._reg_numbers = {n: i for i, n in enumerate(names) if n}
        return self._reg_numbers

    def threads(self) -> list[dict]:
        """gdb's threads; QEMU's stub shows each vCPU as one (target-id `Thread 1.N
        (CPU#N-1 [state])`), in CPU order."""
        rec = self.command("-thread-info")
        return sorted(rec["payload"].get("threads", []), key=lambda t: int(t["id"]))

    def registers(self, names: list[str], thread: str | None = None) -> dict[str, int]:
        """Register values as integers (gdb shows cr0/cr3/cr4/efer as flag
        sets; the `x` format gives the number). One MI round trip; `thread`: a
        gdb thread id (a vCPU), default the current one."""
        numbers = self._register_numbers()
        missing = [n for n in names if n not in numbers]
        if missing:
            raise MiError(f"the target has no register {', '.join(missing)} "
                          f"(it has: {' '.join(sorted(numbers))})")
        which = f"--thread {int(thread)} " if thread is not None else ""
        rec = self.command(f"-data-list-register-values {which}x "
                           + " ".join(str(numbers[n]) for n in names))
        by_number = {int(v["number"]): v["value"] for v in rec["payload"]["register-values"]}
        out = {}
        for n in names:
            raw = by_number.get(numbers[n])
            try:
                out[n] = int(raw, 16)
            except (TypeError, ValueError):
                raise MiError(f"register {n}: gdb gave {raw!r}, not a number") from None
        return out

    def set_register(self, name: str, value: int, verify: bool = True) -> None:
        """Write a register through the gdbstub; with `verify`, read it back
        from the target (not gdb's cache) and fail if the target changed it."""
        self._register_numbers()
        if name not in self._reg_numbers:
            raise MiError(f"the target has no register {name}")
        self.command(f"-data-evaluate-expression {mi_quote(f'${name}={value:#x}')}")
        if verify:
            self.console("maint flush register-cache")
            got = self.registers([name])[name]
            if got != value:
                raise MiError(f"register {name}: wrote {value:#x}, the target holds {got:#x}")

    # -- memory ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def physical_mode(self) -> Iterator[None]:
        """Memory accesses inside go to guest-physical addresses. QEMU's
        Qqemu.PhyMemMode is one global switch of its gdbstub: it is always
        switched back, even when the body fails. Nested uses switch once."""
        if self._physical_depth:
            self._physical_depth += 1
            try:
                yield
            finally:
                self._physical_depth -= 1
            return
        self._phy_mem_mode(1)
        self._physical_depth = 1
        ok = False
        try:
            yield
            ok = True
        finally:
            self._physical_depth = 0
            try:
                self._phy_mem_mode(0)
            except MiError:
                if ok:
                    raise
                # The body's error is the one worth reporting.

    def _phy_mem_mode(self, on: int) -> None:
        out = self.console(f"maint packet Qqemu.PhyMemMode:{on}")
        if 'received: "OK"' not in out:
            raise MiError("the gdbstub does not support physical memory access "
                          f"(Qqemu.PhyMemMode:{on} answered {out.strip()!r}); is it QEMU?")

    def read_memory(self, addr: int, size: int, timeout: float | None = None) -> bytes:
        """`size` bytes at `addr` in the current (virtual or physical) mode.

        Big reads go through `dump binary memory` into a private file: the same
        target reads, without 2 hex characters per byte through MI (a 448-page
        read: 0.12 s instead of 0.18 s)."""
        if size <= 0:
            return b""
        timeout = self._long(timeout)
        if size >= _DUMP_THRESHOLD and self._can_dump():
            return self._read_by_dump(addr, size, timeout)
        rec = self.command(f"-data-read-memory-bytes {addr:#x} {size}", timeout)
        blocks = rec["payload"]["memory"]
        data = bytearray()
        pos = addr
        for b in blocks:
            begin = int(b["begin"], 16)
            if begin != pos:
                break
            chunk = bytes.fromhex(b["contents"])
            data += chunk
            pos += len(chunk)
        if len(data) < size:
            raise MiError(f"could only read {len(data)} of {size} bytes at {addr:#x} "
                          f"(first unreadable address {pos:#x})")
        return bytes(data[:size])

    def pmemsave(self, addr: int, size: int) -> bytes:
        """Guest-physical memory saved by QEMU's monitor into a file of ours
        (QEMU must run on this machine and be able to write there)."""
        path = os.path.join(self._scratch_dir(), "pmem.bin")
        try:
            out = self.monitor(f'pmemsave {addr:#x} {size:#x} "{path}"')
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                raise MiError(f"QEMU's pmemsave did not write {path}: {out.strip()!r}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if len(data) != size:
            raise MiError(f"pmemsave of {size} bytes at {addr:#x} gave {len(data)} bytes")
        return data

    def stub_shares_files(self) -> bool:
        """Whether QEMU can write files we can read (probed once per connection)."""
        if self._pmemsave_ok is None:
            if isinstance(self._io, ReplayTransport) or any(
                    c.isspace() for c in self._scratch_dir()):
                self._pmemsave_ok = False
            else:
                try:
                    self.pmemsave(0, 16)
                    self._pmemsave_ok = True
                except MiError:
                    self._pmemsave_ok = False
        return self._pmemsave_ok

    def _can_dump(self) -> bool:
        if isinstance(self._io, ReplayTransport):
            return False  # recordings hold MI reads
        return not any(c.isspace() for c in self._scratch_dir())

    def _scratch_dir(self) -> str:
        """A private short-path directory (relay socket, big reads), removed on close."""
        if self._scratch is None:
            self._scratch = str(short_private_dir("mi"))
        return self._scratch

    def _read_by_dump(self, addr: int, size: int, timeout: float) -> bytes:
        path = os.path.join(self._scratch_dir(), "read.bin")
        try:
            self.console(f"dump binary memory {path} {addr:#x} {addr + size:#x}", timeout)
            with open(path, "rb") as f:
                data = f.read()
        except GdbError as e:
            raise MiError(f"cannot read {size} bytes at {addr:#x}: {e.msg}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if len(data) != size:
            raise MiError(f"could only read {len(data)} of {size} bytes at {addr:#x}")
        return data

    def write_memory(self, addr: int, data: bytes, timeout: float | None = None) -> None:
        """Write in the current (virtual or physical) mode. Big writes go through
        `restore`: gdb parses a long -data-write-memory-bytes argument in
        quadratic time (256 KiB: 0.84 s; as a file: 0.013 s)."""
        if not data:
            return
        timeout = self._long(timeout)
        if len(data) >= _DUMP_THRESHOLD and self._can_dump():
            path = os.path.join(self._scratch_dir(), "write.bin")
            with open(path, "wb") as f:
                f.write(data)
            try:
                self.console(f"restore {path} binary {addr:#x}", timeout)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        else:
            self.command(f"-data-write-memory-bytes {addr:#x} {data.hex()}", timeout)

    def read_physical(self, addr: int, size: int) -> bytes:
        return self.read_physical_runs([(addr, size)], "gdb")[0]

    def read_physical_runs(self, runs: list[tuple[int, int]], method: str = "auto") -> list[bytes]:
        """The bytes of each (address, size) run of guest-physical memory, through
        gdb's reads in one stretch of physical mode, or QEMU's pmemsave (method
        as GdbMemory's)."""
        for addr, size in runs:
            if addr + size > 1 << 32:
                raise MiError(f"physical {addr:#x}+{size:#x} is above 4 GiB: gdb's i386 "
                              "addresses are 32-bit")
        if not runs:
            return []
        if method == "pmemsave" or (method == "auto" and self.stub_shares_files()):
            return [self.pmemsave(addr, size) for addr, size in runs]
        with self.physical_mode():
            return [self.read_memory(addr, size) for addr, size in runs]

    def write_physical(self, addr: int, data: bytes) -> None:
        with self.physical_mode():
            self.write_memory(addr, data)

    def read_virtual(self, addr: int, size: int) -> bytes:
        return self.read_memory(addr, size)

    def read_u32(self, addr: int) -> int:
        return int.from_bytes(self.read_virtual(addr, 4), "little")

    # -- symbols ---------------------------------------------------------------------------
    def evaluate(self, expr: str) -> str:
        return self.command(f"-data-evaluate-expression {mi_quote(expr)}")["payload"]["value"]

    def symbol_address(self, name: str) -> int:
        value = self.evaluate(f"(unsigned long)&{name}")
        try:
            return int(value.split()[0], 0)
        except (ValueError, IndexError):
            raise MiError(f"address of {name}: gdb gave {value!r}") from None

    def symbol_value(self, name: str) -> int:
        """The 32-bit value stored at symbol `name` (read through the CPU's
        current address translation)."""
        return self.read_u32(self.symbol_address(name))

    def version(self) -> str:
        out = self.console("show version")
        return out.splitlines()[0].strip() if out else ""

    # -- end -------------------------------------------------------------------------------
    def close(self) -> None:
        """Ask gdb to exit, then make sure it did. Never raises."""
        if self._closed:
            return
        self._closed = True
        io = getattr(self, "_io", None)
        if io is not None:
            try:
                if io.exit_status() is None and not isinstance(io, ReplayTransport):
                    self._log(">", "-gdb-exit")
                    io.write(b"-gdb-exit\n")
                    deadline = time.monotonic() + 1.0
                    tail = bytearray()
                    while io.exit_status() is None and time.monotonic() < deadline:
                        data = io.read(0.05)
                        if data == b"":
                            break
                        tail += data or b""
                    for ln in tail.decode("utf-8", "replace").splitlines():
                        self._log("<", ln)
            except Exception:
                pass
            finally:
                io.close()
        self._stop_relay()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
        if self._transcript:
            self._transcript.close()
            self._transcript = None


# A memory read's result carries megabytes of hex: pygdbmi's parser walks the
# record character by character (0.19 s for 448 pages), this takes a few ms.
_MEMORY_RESULT_RE = re.compile(r"(\d+)\^done,memory=\[(.*)\]")
_MEMORY_BLOCK_RE = re.compile(r'\{begin="(0x[0-9a-f]+)",offset="(0x[0-9a-f]+)",'
                              r'end="(0x[0-9a-f]+)",contents="([0-9a-f]*)"\}')


def _parse_response(line: str) -> dict:
    """pygdbmi's parser, loaded with the first record (its import takes 10 ms
    that are better spent while gdb starts)."""
    from pygdbmi.gdbmiparser import parse_response
    return parse_response(line)


def _parse_memory_result(line: str) -> dict | None:
    """The record pygdbmi would make of a -data-read-memory-bytes result, or
    None when the line is anything else (pygdbmi parses it then)."""
    if "^done,memory=[" not in line[:40]:
        return None
    m = _MEMORY_RESULT_RE.fullmatch(line)
    if not m:
        return None
    inner = m.group(2)
    blocks, covered = [], 0
    for b in _MEMORY_BLOCK_RE.finditer(inner):
        blocks.append(dict(zip(("begin", "offset", "end", "contents"), b.groups())))
        covered += b.end() - b.start()
    if covered + max(len(blocks) - 1, 0) != len(inner):
        return None
    return {"type": "result", "message": "done", "payload": {"memory": blocks},
            "token": int(m.group(1))}


def _gdb_settings(extra: list[str] | None) -> list[str]:
    """Settings as -iex options (no round trip each)."""
    settings = [
        "set confirm off", "set pagination off", "set width 0", "set height 0",
        # A stub that accepts the connection but never answers must not hang us.
        "set tcp connect-timeout 5", "set remotetimeout 10",
        # Memory is re-read every time: the walker's reads must see what the CPU sees.
        "set code-cache off", "set stack-cache off",
        # gdb takes commands while the target runs, so -exec-interrupt can stop a
        # guest that never reaches a breakpoint (synchronous MI would not read it).
        "set mi-async on",
    ]
    args: list[str] = []
    for s in settings:
        args += ["-iex", s]
    return args + list(extra or [])


def _check_endpoint(endpoint: str) -> None:
    if any(c.isspace() for c in endpoint):
        raise ConnectError(f"gdbstub endpoint {endpoint!r} contains white space")
    if "/" in endpoint or os.path.exists(endpoint):
        if not os.path.exists(endpoint):
            raise ConnectError(f"cannot reach the gdbstub at {endpoint}: no such socket")
        return
    m = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]*):([0-9]{1,5})", endpoint)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ConnectError(f"gdbstub endpoint {endpoint!r} is neither a unix socket path "
                           "nor HOST:PORT")


def _open_stub_socket(endpoint: str) -> socket.socket:
    if "/" in endpoint or os.path.exists(endpoint):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(endpoint)
        return sock
    host, _, port = endpoint.rpartition(":")
    sock = socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=5)
    sock.settimeout(None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


_FIRST_ANSWER_WAIT = 3.0  # seconds a gdbstub may take to answer its first packet


def _not_gdb_protocol(endpoint: str, data: bytes) -> str | None:
    """A gdbstub's first bytes are an ack or a packet; anything else (an HTTP
    server, an SSH banner) is said at once instead of gdb timing out."""
    if data[:1] in (b"+", b"$", b"%"):
        return None
    return f"{endpoint} does not speak the gdb remote protocol: it answered {bytes(data[:40])!r}"


def _no_first_answer(endpoint: str) -> str:
    return (f"{endpoint} did not answer gdb's first packet within {_FIRST_ANSWER_WAIT:.0f}s: "
            "not a gdbstub (or its QEMU is stopped)")


def probe_gdbstub(endpoint: str) -> str | None:
    """Why `endpoint` is no usable gdbstub, or None: one `?` packet on a
    connection of its own (QEMU takes one client at a time, and stops the
    guest on connect as gdb's own connection would)."""
    try:
        sock = _open_stub_socket(endpoint)
    except OSError as e:
        return e.strerror or str(e)
    with sock:
        try:
            sock.sendall(b"$?#3f")
            sock.settimeout(_FIRST_ANSWER_WAIT)
            data = sock.recv(64)
        except socket.timeout:
            return _no_first_answer(endpoint)
        except OSError as e:
            return e.strerror or str(e)
    return _not_gdb_protocol(endpoint, data) if data else f"{endpoint} closed the connection"


def _drop_acks(data: bytes, state: list[int]) -> bytes:
    """The gdb-to-stub byte stream without the '+' acks between packets.
    state[0]: 0 between packets, 1 inside one, 2/3 checksum digits to come."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        st = state[0]
        if st == 0:
            j = data.find(b"$", i)
            out += data[i:n if j < 0 else j].replace(b"+", b"")
            if j < 0:
                break
            out += b"$"
            i, state[0] = j + 1, 1
        elif st == 1:
            j = data.find(b"#", i)
            if j < 0:
                out += data[i:]
                break
            out += data[i:j + 1]
            i, state[0] = j + 1, 3
        else:
            out += data[i:i + 1]
            i += 1
            state[0] = 2 if st == 3 else 0
    return bytes(out)


# Why a relay: QEMU 7.2's gdbstub has no no-ack mode, so gdb acks every packet
# with a one-byte write. While QEMU runs a monitor command it does not read its
# socket; on a unix socket each of those writes holds ~770 bytes of gdb's 208 KiB
# send buffer, so after 277 output lines gdb blocks on an ack, stops reading, and
# QEMU blocks on its output: `monitor info tlb` of a kernel mapping hangs for
# ever. QEMU ignores acks outside user mode, so the relay drops them. It listens
# on a unix socket rather than being gdb's `target remote | command`: gdb polls a
# pipe command's stderr once per received byte, 3 ms per 4 KiB packet.
def relay_main(endpoint: str, listen_path: str) -> int:
    """`python -m harness.gdbmi --relay ENDPOINT LISTEN_PATH`: gdb's gdbstub
    connection, passed through with gdb's acks dropped. Prints "ready" once
    connected to the stub, or the reason it could not."""
    die_with_parent()
    try:
        stub = _open_stub_socket(endpoint)
    except OSError as e:
        print(f"cannot connect: {e.strerror or e}", flush=True)
        return 1
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(listen_path)
    server.listen(1)
    print("ready", flush=True)
    gdb, _ = server.accept()
    server.close()
    with contextlib.suppress(OSError):
        os.unlink(listen_path)
    return _relay(gdb, stub, endpoint)


def _relay(gdb: socket.socket, stub: socket.socket, endpoint: str) -> int:
    """Pass bytes both ways until one side closes. Never block on one side while
    the other waits: both sides are always read, and what cannot be written yet
    is queued. The stub's first answer is checked to be the gdb protocol."""
    gdb.setblocking(False)
    stub.setblocking(False)
    state = [0]
    queue = {gdb: bytearray(), stub: bytearray()}
    peer = {gdb: stub, stub: gdb}
    first_answer = True
    asked_at = None  # when gdb's first packet went to the stub
    while True:
        r, _, _ = select.select([gdb, stub], [s for s in (gdb, stub) if queue[s]], [],
                                0.5 if first_answer else None)
        if (first_answer and asked_at is not None and not r
                and time.monotonic() - asked_at > _FIRST_ANSWER_WAIT):
            print(_no_first_answer(endpoint), flush=True)
            return 3
        for src in r:
            try:
                data = src.recv(1 << 16)
            except BlockingIOError:
                continue
            if not data:
                return 0
            if src is gdb:
                data = _drop_acks(data, state)
                asked_at = asked_at or time.monotonic()
            elif first_answer:
                first_answer = False
                problem = _not_gdb_protocol(endpoint, data)
                if problem:
                    print(problem, flush=True)
                    return 3
            queue[peer[src]] += data
        for dst in (gdb, stub):
            q = queue[dst]
            if q:  # write right away; what does not fit waits for select
                try:
                    del q[:dst.send(q)]
                except BlockingIOError:
                    pass


class GdbMemory:
    """walker.PhysMemory over an MI session, for one stop (a walker.PagedMemory).

    method "gdb": gdb's own memory reads in physical mode (any gdbstub;
    QEMU 7.2 answers at most 2 KiB per packet). "pmemsave": QEMU's monitor
    writes the pages to a file of ours (one round trip; needs QEMU on this
    machine). "auto": pmemsave when a probe shows QEMU can write our files.
    """

    def __init__(self, session: MiSession, max_read: int = 1 << 22, method: str = "auto"):
        from . import walker  # here, so that starting gdb need not wait for it
        if method not in _READ_METHODS:
            raise ValueError(f"method {method!r} is not auto, gdb or pmemsave")
        self.session, self.method = session, method
        self._pages = walker.PagedMemory(lambda runs: session.read_physical_runs(runs, method),
                                         max_read // x86.PAGE_SIZE)

    def read_pages(self, addrs: list[int]) -> dict[int, bytes]:
        return self._pages.read_pages(addrs)

    @property
    def reads(self) -> int:
        """Runs read from the target, for benchmarks."""
        return self._pages.reads


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--relay":
        sys.exit(relay_main(sys.argv[2], sys.argv[3]))
    sys.exit("usage: python -m harness.gdbmi --relay ENDPOINT LISTEN_PATH")
