"""Failure inspection in gdb, driven as a person would: through a terminal.

`ptharness debug` and pytest's --gdb-on-fail are run under pexpect (a real
pty), the `pt` commands are typed at gdb's prompt and their output checked,
and afterwards no QEMU or gdb of the session may be left."""
import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pexpect
import pytest

from . import procs

pytestmark = pytest.mark.qemu

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PROMPT = r"\(gdb\) "


@contextlib.contextmanager
def session(args: list, cwd: Path, timeout: float = 120) -> Iterator[pexpect.spawn]:
    """The command on a pty of 50x200; closed (killed if need be) at the end."""
    child = pexpect.spawn(str(args[0]), [str(a) for a in args[1:]], cwd=str(cwd),
                          encoding="utf-8", timeout=timeout, dimensions=(50, 200),
                          env={**os.environ, "TERM": "dumb"})
    try:
        yield child
    finally:
        child.close(force=True)


def quit_gdb(child: pexpect.spawn) -> None:
    child.sendline("quit")
    child.expect(pexpect.EOF)


def test_debug_session_walks_and_leaves_nothing(tmp_path):
    art = tmp_path / "art"
    with session([BIN / "ptharness", "debug", "pae-nopse-pge-nx-128M", "--artifacts", art],
                 ROOT) as child:
        child.expect(r"Remote debugging using (\S+)")
        socket = child.match.group(1)  # the run's own gdbstub socket: names its QEMU and gdb
        child.expect("stopped at paging_init_done")
        child.expect(PROMPT)
        child.sendline("pt va 0xc0100000")
        # 0xc0100000 is the kernel image at 1 MiB: PAE, 4 KiB pages, executable text.
        child.expect(r"walk of 0xc0100000:")
        child.expect(r"pgd table 0x[0-9a-f]+ \[3\]")
        child.expect(r"pmd table 0x[0-9a-f]+ \[0\]")
        child.expect(r"pte table 0x[0-9a-f]+ \[256\] entry 0x100[0-9a-f]{3}")
        child.expect(r"-> PA 0x100000 rwx supervisor")
        child.expect(PROMPT)
        child.sendline("pt walk")
        child.expect(r"paging pae")
        # The kernel's linear map: text executable, the rest of lowmem NX (128 MiB less
        # SeaBIOS's 128 KiB), and PAE's low alias of it through PDPT slot 0.
        child.expect(r"c0000000-c0[0-9a-f]{6} +000000000-")
        child.expect(r"c0[0-9a-f]{6}-c7fdffff .* rw- ")
        child.expect(r"(\d+) table pages")
        child.expect(PROMPT)
        child.sendline("pt diff")
        child.expect(r"model +ok")
        child.expect(r"invariants +ok")
        child.expect(PROMPT)
        quit_gdb(child)
    assert child.exitstatus == 0
    assert procs.mentioning(str(art)) == [] and procs.mentioning(socket) == []


def test_gdb_on_fail_opens_the_failing_scenario(tmp_path):
    (tmp_path / "test_forced.py").write_text(textwrap.dedent("""
        from harness import scenarios

        def test_prepatch_held_to_the_patch(run_scenario):
            # The pre-patch guest fails the patched expectation (bug A).
            r = run_scenario(scenarios.get("pae-nopse-pge-nx-128M"), variant="prepatch")
            assert r.ok, r.report
    """))
    art = tmp_path / "art"
    with session([BIN / "pytest", "-n", "0", "-p", "no:cacheprovider", "--gdb-on-fail",
                  "--artifacts-dir", art, "--rootdir", tmp_path, tmp_path / "test_forced.py"],
                 tmp_path, timeout=180) as child:
        child.expect("--gdb-on-fail: opening pae-nopse-pge-nx-128M")
        child.expect(r"Remote debugging using (\S+)")
        socket = child.match.group(1)
        child.expect("stopped at paging_init_done")
        child.expect(PROMPT)
        child.sendline("pt where")
        child.expect(r"scenario pae-nopse-pge-nx-128M: pae-prepatch")
        child.expect(PROMPT)
        child.sendline("pt diff")
        child.expect(r"\[entries\] c01[0-9a-f]{5}-c01fffff, \d+ PTEs: expected NX, got executable")
        child.expect(PROMPT)
        child.sendline("quit")
        child.expect(r"1 failed")
        child.expect(pexpect.EOF)
    assert procs.mentioning(str(art)) == [] and procs.mentioning(socket) == []


def test_gdb_on_fail_refuses_xdist(tmp_path):
    r = subprocess.run([BIN / "pytest", "-n", "2", "--gdb-on-fail", "-p", "no:cacheprovider",
                        "--rootdir", tmp_path, tmp_path], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "--gdb-on-fail opens gdb on your terminal" in r.stderr + r.stdout
    assert "-n 0" in r.stderr + r.stdout


def test_debug_at_work_shows_every_vcpu_and_walks_another_root(tmp_path):
    """`--at work` on an SMP scenario: `pt cpus` lists the BSP and both APs with
    their records; `pt walk --cr3` walks swapper_pg_dir while CR3 is the second
    pagetable, and the two differ only where the work phase says."""
    art = tmp_path / "art"
    with session([BIN / "ptharness", "debug", "nopae-pse-pge-128M-smp2", "--at", "work",
                  "--artifacts", art], ROOT) as child:
        child.expect("stopped at work_done")
        child.expect(PROMPT)
        child.sendline("pt cpus")
        child.expect(r"thread 1 \(CPU 0\): cr0=0x8\w+ cr3=(0x[0-9a-f]+) .*; record: boot-cpu")
        pgd2 = child.match.group(1)
        child.expect(r"thread 2 \(CPU 1\): cr0=0x\w+ cr3=(0x[0-9a-f]+) .*; record: running")
        swapper = child.match.group(1)
        child.expect(rf"second pagetable: root {pgd2} \(pt walk --cr3 {pgd2}\)")
        child.expect(PROMPT)
        assert swapper != pgd2  # the AP stays on swapper_pg_dir, the BSP moved
        child.sendline(f"pt walk --cr3 {swapper}")
        child.expect(rf"cr3={swapper}")
        child.expect(r"(\d+) table pages")
        child.expect(PROMPT)
        child.sendline("pt va 0x100000 --cr3 " + swapper)
        child.expect(r"walk of 0x00100000:")
        child.expect(r"not present")  # zapped
        child.expect(PROMPT)
        quit_gdb(child)
    assert child.exitstatus == 0
    assert procs.mentioning(str(art)) == []


def test_sigterm_of_debug_restores_the_terminal_and_leaves_nothing(tmp_path):
    """The terminal is gdb's (raw) while the session is interactive; SIGTERM of
    ptharness must hand it back cooked and take QEMU and gdb along (exit 143)."""
    import signal
    import time
    art = tmp_path / "art"
    modes = tmp_path / "stty.txt"
    script = (f"{BIN / 'ptharness'} debug nopae-pse-pge-16M --artifacts {art}; "
              f"echo status=$? > {tmp_path / 'status'}; stty -a > {modes}")
    with session(["/bin/sh", "-c", script], ROOT) as child:
        child.expect("stopped at paging_init_done")
        child.expect(PROMPT)
        time.sleep(0.5)  # interact() has the terminal raw by now
        (pid,) = [int(p) for p in filter(str.isdigit, os.listdir("/proc"))
                  if "ptharness debug nopae-pse-pge-16M" in procs.cmdline(p)
                  and not procs.cmdline(p).startswith("/bin/sh")]
        os.kill(pid, signal.SIGTERM)
        child.expect(pexpect.EOF, timeout=60)
    assert (tmp_path / "status").read_text().strip() == "status=143"
    stty = modes.read_text()
    assert " icanon" in stty and " echo " in stty and "-isig" not in stty, stty
    assert [p for p in filter(str.isdigit, os.listdir("/proc"))
            if str(art) in procs.cmdline(p)] == []


def test_debug_opens_a_scenario_given_by_its_spec(tmp_path):
    """What explore prints (`ptharness debug SPEC`) opens, and `pt where` gives it back."""
    spec = "nopae-nopse-pge-nonx-20M-mem=18M"
    with session([BIN / "ptharness", "debug", spec, "--artifacts", tmp_path / "art"], ROOT) as child:
        child.expect("stopped at paging_init_done")
        child.expect(PROMPT)
        child.sendline("pt where")
        child.expect(rf"reproduce: \.venv/bin/ptharness check --scenario-spec {spec}")
        child.expect(PROMPT)
        quit_gdb(child)
    assert child.exitstatus == 0


def test_debug_passes_terminal_resizes_on_to_gdb(tmp_path):
    """gdb learns the terminal's size at start and after a resize (SIGWINCH), so
    its output wraps where the user's terminal does."""
    with session([BIN / "ptharness", "debug", "nopae-pse-pge-128M", "--artifacts",
                  tmp_path / "art"], ROOT) as child:
        child.expect(PROMPT)
        child.sendline("show width")
        child.expect(r"characters gdb thinks are in a line is (\d+)")
        # readline keeps the last column free where the terminal wraps by itself
        spare = 200 - int(child.match.group(1))
        assert spare in (0, 1)
        child.expect(PROMPT)
        child.setwinsize(40, 117)  # the user's terminal shrinks: SIGWINCH to ptharness
        # Both signals are handled asynchronously (ours, then gdb's): ask again
        # until gdb has caught up, for at most a few seconds.
        widths = []
        for _ in range(20):
            child.sendline("show width")
            child.expect(r"characters gdb thinks are in a line is (\d+)")
            widths.append(int(child.match.group(1)))
            child.expect(PROMPT)
            if widths[-1] != 200 - spare:
                break
            time.sleep(0.2)
        assert widths[-1] == 117 - spare, widths
        quit_gdb(child)
    assert child.exitstatus == 0
