#!/usr/bin/env python3
"""Re-record the unit tests' data from real gdb talking to real QEMU.

    .venv/bin/python tests/data/record.py

mi/session.mi   a whole MiSession (gdb 13 + QEMU 7.2 + the stub guest): connect
                (async records before ^connected), breakpoint, continue,
                registers, physical reads, monitor, a gdb error, and the guest
                exiting (QEMU closes the connection)
mi/running.mi   a command sent while the target runs: its ^error, and the
                *stopped record arriving while another command waits
tlb/<case>.tlb, tlb/<case>.mem   `info tlb` / `info mem` for each layout of
                tests/guests/stubguest.py
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "guests"))
import stubguest as g  # noqa: E402

from harness.gdbmi import GdbError, MiSession  # noqa: E402
from harness.qemu import Machine, QemuProcess  # noqa: E402


def sanitize(path: Path, work: Path) -> None:
    """No paths of the recording machine: the scratch directory gets a fixed
    name (replay sends what the recording holds), the work directory goes."""
    text = path.read_text()
    text = re.sub(r"/[\w/.-]*/pth-mi-[\w-]+", "/tmp/pth-mi-recorded", text)
    text = text.replace(str(work) + "/", "")
    path.write_text(text)


def record_session(elf: Path, work: Path) -> None:
    with QemuProcess(Machine(kernel=elf), work / "s") as qemu, \
            MiSession(transcript=HERE / "mi" / "session.mi", transcript_line_limit=1 << 20) as gdb:
        gdb.connect(qemu.gdb_endpoint)
        gdb.load_elf(elf)
        gdb.break_at("stub_ready")
        gdb.continue_until_stop(30)
        gdb.registers(["cr0", "cr3", "cr4", "efer", "eip"])
        gdb.symbol_address("exit_request")
        gdb.read_physical(0x100000, 64)
        gdb.monitor("info status")
        try:
            gdb.evaluate("no_such_symbol")
        except GdbError:
            pass
        addr = gdb.symbol_address("exit_request")
        gdb.write_memory(addr, (3).to_bytes(4, "little"))  # exit code 2 -> status 5
        gdb.continue_until_stop(30)
    sanitize(HERE / "mi" / "session.mi", work)


def record_running(elf: Path, work: Path) -> None:
    """Continue to a breakpoint and, without waiting for the stop, send a
    command: gdb holds its answer until the target stopped, so the *stopped
    record (and =breakpoint-modified) arrive before that command's result."""
    for attempt in range(20):
        path = work / f"running{attempt}.mi"
        with QemuProcess(Machine(kernel=elf), work / f"r{attempt}") as qemu, \
                MiSession(transcript=path, transcript_line_limit=1 << 20) as gdb:
            gdb.connect(qemu.gdb_endpoint)
            gdb.load_elf(elf)
            gdb.break_at("spin")
            gdb.command("-exec-continue")
            gdb.command("-data-list-register-names")
            gdb.wait_for_stop(10)
            gdb.registers(["eip"])
        text = path.read_text().splitlines()
        sent = [i for i, ln in enumerate(text) if " > " in ln and "-data-list-register-names" in ln]
        stop = [i for i, ln in enumerate(text) if " < *stopped" in ln]
        done = [i for i, ln in enumerate(text) if "^done,register-names" in ln]
        if sent and stop and done and sent[0] < stop[-1] < done[0]:
            (HERE / "mi" / "running.mi").write_text(path.read_text())
            sanitize(HERE / "mi" / "running.mi", work)
            return
    raise SystemExit("the *stopped never arrived before the held command's result")


def record_tlb(elf: Path, work: Path) -> None:
    for name, make in sorted(g.CORNER_CASES.items()):
        lay = make()
        with g.booted(elf, work / name, cpu=lay.cpu_flags, transcript=False) as (_, gdb):
            lay.install(gdb)
            (HERE / "tlb" / f"{name}.tlb").write_text(gdb.monitor("info tlb"))
            (HERE / "tlb" / f"{name}.mem").write_text(gdb.monitor("info mem"))


def main() -> None:
    (HERE / "mi").mkdir(exist_ok=True)
    (HERE / "tlb").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)  # the ELF goes to gdb as the relative path stub/stub.elf
        elf = g.build(work / "stub").relative_to(work)
        record_session(elf, work)
        record_running(elf, work)
        record_tlb(elf, work)
    print("recorded into", HERE)


if __name__ == "__main__":
    main()
