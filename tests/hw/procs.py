"""Finding the processes a test started, from /proc alone (no procps needed)."""
from __future__ import annotations

import os
from pathlib import Path


def _read(pid: str, what: str) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except OSError:
        return None


def _live(pid: str) -> bool:
    stat = _read(pid, "stat")
    return stat is not None and stat.rsplit(b")", 1)[1].split()[0] != b"Z"


def cmdline(pid: str) -> str:
    return (_read(pid, "cmdline") or b"").replace(b"\0", b" ").decode(errors="replace").strip()


def mentioning(text: str) -> list[str]:
    """Live processes whose command line contains `text` (pytest itself aside)."""
    me = str(os.getpid())
    return [f"{pid}: {cmdline(pid)}" for pid in filter(str.isdigit, os.listdir("/proc"))
            if pid != me and text in cmdline(pid) and "pytest" not in cmdline(pid) and _live(pid)]


def marked(mark: str) -> list[str]:
    """Live processes that inherited PTHARNESS_TEST_MARK=mark, whatever they run."""
    needle = f"PTHARNESS_TEST_MARK={mark}".encode()
    return [f"{pid}: {cmdline(pid)}" for pid in filter(str.isdigit, os.listdir("/proc"))
            if needle in (_read(pid, "environ") or b"") and _live(pid)]


def children(parent: int, name: str) -> list[int]:
    """Live children of `parent` whose executable is called `name`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        stat = _read(pid, "stat")
        if stat is None:
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        if ppid == parent and comm == name and _live(pid):
            out.append(int(pid))
    return out
