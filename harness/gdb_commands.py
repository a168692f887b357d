"""The `pt` commands, loaded into an interactive gdb by `ptharness debug`.

    pt walk [--cr3 A]   the address space as merged ranges (from CR3, or from root A)
    pt va ADDR [--cr3 A]  the walk of one address, level by level
    pt cpus             every vCPU's registers and the guest's per-CPU record
    pt diff             the tables now against the model of the "before" snapshot,
                        with the invariants: the report's wording and ranges
    pt snapshot FILE    write the current state as a snapshot (JSON)
    pt where            the scenario, the stop and the commands that reproduce it

This module runs inside gdb's own Python (it imports `gdb`); everything it
computes comes from the same layers as the harness (walker, model, checks).
Physical memory is read through QEMU's gdbstub with Qqemu.PhyMemMode, which is
switched back after every read.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import gdb  # provided by gdb itself

from . import elf, records, report, runner, scenarios, walker
from .snapshot import Snapshot


class _Target:
    """runner.Target on gdb's own inferior."""

    def __init__(self):
        self._physical = 0

    def read_virtual(self, addr: int, size: int) -> bytes:
        return bytes(gdb.selected_inferior().read_memory(addr, size))

    @contextlib.contextmanager
    def physical_mode(self) -> Iterator[None]:
        """QEMU's Qqemu.PhyMemMode, always switched back; nested uses switch once."""
        if not self._physical:
            gdb.execute("maint packet Qqemu.PhyMemMode:1", to_string=True)
        self._physical += 1
        try:
            yield
        finally:
            self._physical -= 1
            if not self._physical:
                gdb.execute("maint packet Qqemu.PhyMemMode:0", to_string=True)

    def read_physical(self, addr: int, size: int) -> bytes:
        return self.read_physical_runs([(addr, size)])[0]

    def read_physical_runs(self, runs: list[tuple[int, int]]) -> list[bytes]:
        with self.physical_mode():
            return [self.read_virtual(addr, size) for addr, size in runs]

    def registers(self, names: list[str]) -> dict[str, int]:
        out = {}
        for n in names:
            try:
                out[n] = int(gdb.parse_and_eval(f"${n}")) & 0xFFFFFFFFFFFFFFFF
            except gdb.error:
                out[n] = 0  # a CPU without EFER
        return out

    def memory(self) -> walker.PagedMemory:
        """A PhysMemory for the current stop."""
        return walker.PagedMemory(self.read_physical_runs, max_pages=64)


class _Session:
    """The debug session's state: which scenario, and the before snapshot."""

    def __init__(self, scenario_id: str, variant: str, model_variant: str, kernel: str, at: str):
        self.scenario = scenarios.get_or_spec(scenario_id)  # explore's specs too
        self.opt = runner.RunOptions(variant=variant, model_variant=model_variant)
        self.image = elf.KernelImage.from_elf(kernel)
        self.at = at
        self.target = _Target()
        self.before: Snapshot | None = None

    def snapshot(self, label: str, cr3: int | None = None) -> tuple[Snapshot, walker.Walk]:
        """The tables now: from CR3, or from `cr3` with the CPU's other registers."""
        return runner.take_snapshot(self.target, self.image, label, self.scenario,
                                    memory=self.target.memory(), cr3=cr3)

    def pc(self) -> int:
        return self.target.registers(["eip"])["eip"]


SESSION: _Session | None = None


def _session() -> _Session:
    if SESSION is None:
        raise gdb.GdbError("no ptharness session: start gdb with `ptharness debug SCENARIO`")
    return SESSION


def _stop_at(symbol: str) -> bool:
    """Continue to `symbol` (a temporary breakpoint on its first instruction);
    False when the guest exited first."""
    gdb.execute(f"tbreak *{symbol}", to_string=True)
    gdb.execute("continue", to_string=True)
    return gdb.selected_inferior().pid != 0 and gdb.selected_thread() is not None


class PtPrefix(gdb.Command):
    """ptharness commands: pt walk, pt va ADDR, pt cpus, pt diff, pt snapshot FILE, pt where."""

    def __init__(self):
        super().__init__("pt", gdb.COMMAND_USER, prefix=True)


class PtStart(gdb.Command):
    """(used by `ptharness debug`) stop at pagetable_init for the before snapshot,
    then run on to the requested point."""

    def __init__(self):
        super().__init__("pt start", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        s = _session()
        if not _stop_at("pagetable_init"):
            print("ptharness: the guest ended before pagetable_init (see the serial log)")
            return
        s.before, _ = s.snapshot("before")
        target = {"entry": None, "done": "paging_init_done", "work": "work_done",
                  "fault": "exception_report"}[s.at]
        if target is not None and not _stop_at(target):
            print(f"ptharness: the guest exited before {target}")
            return
        where = {"entry": "pagetable_init entry (the before snapshot)",
                 "done": "paging_init_done (paging_init returned)",
                 "work": "work_done (APs up, low mappings zapped, CR3 on the second pagetable)",
                 "fault": "exception_report (the guest took an exception)"}[s.at]
        print(f"ptharness: {s.scenario.id} (guest {s.scenario.guest_variant(s.opt.variant)}) "
              f"stopped at {where}")
        print("ptharness: pt walk [--cr3 A] | pt va ADDR | pt cpus | pt diff | pt snapshot FILE "
              "| pt where")


def _split_cr3(arg: str, usage: str) -> tuple[str, int | None]:
    """`... --cr3 EXPR`: the rest of the arguments and the root asked for."""
    words = arg.split()
    if "--cr3" not in words:
        return arg, None
    i = words.index("--cr3")
    if i + 1 >= len(words):
        raise gdb.GdbError(f"usage: {usage}")
    root = int(gdb.parse_and_eval(words[i + 1])) & 0xFFFFFFFF
    return " ".join(words[:i] + words[i + 2:]), root


class PtWalk(gdb.Command):
    """pt walk [--cr3 ADDR]: the address space the CPU uses now, as merged ranges;
    with --cr3, the one rooted at ADDR (another CPU's CR3, the second pagetable's
    root from `pt cpus`), walked in the current paging mode."""

    def __init__(self):
        super().__init__("pt walk", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        _, root = _split_cr3(arg, "pt walk [--cr3 ADDR]")
        snap, w = _session().snapshot("now", root)
        print(report.format_cpu(w.cpu))
        if not w.cpu.paging:
            print("paging is off")
            return
        print("\n".join(report.format_ranges(snap.ranges)))
        print(f"{len(w.tables)} table pages, {len(w.leaves)} leaves, {len(snap.ranges)} ranges")
        for p in w.problems:
            print(f"problem: {p.level} entry {p.value:#x} at {p.entry_addr:#x}: {p.what}")


class PtVa(gdb.Command):
    """pt va ADDR: the walk of one virtual address, level by level."""

    def __init__(self):
        super().__init__("pt va", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        arg, root = _split_cr3(arg, "pt va ADDR [--cr3 ROOT]")
        if not arg.strip():
            raise gdb.GdbError("usage: pt va ADDR [--cr3 ROOT] (e.g. pt va 0xc0100000)")
        va = int(gdb.parse_and_eval(arg)) & 0xFFFFFFFF
        s = _session()
        _, w = s.snapshot("now", root)
        print("\n".join(report.format_va_walk(w, s.target.memory(), va)))


class PtCpus(gdb.Command):
    """Every vCPU (gdb thread): its control registers and EIP, and the guest's
    own per-CPU record (state, APIC id, fault) when it has one."""

    def __init__(self):
        super().__init__("pt cpus", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        s = _session()
        state = runner.read_guest_state(s.target, s.image)
        recs = state.get("cpus") or []
        pgd2 = (state.get("pgd2") or {}).get("root_pa")
        current = gdb.selected_thread()
        try:
            for i, t in enumerate(sorted(gdb.selected_inferior().threads(), key=lambda t: t.num)):
                t.switch()
                r = s.target.registers(["cr0", "cr3", "cr4", "efer", "eip"])
                line = (f"thread {t.num} (CPU {i}): cr0={r['cr0']:#x} cr3={r['cr3']:#x} "
                        f"cr4={r['cr4']:#x} efer={r['efer']:#x} eip={r['eip']:#x}")
                if i < len(recs) and recs[i]["state"]:
                    rec = recs[i]
                    line += f"; record: {records.CPU_STATES.get(rec['state'], rec['state'])}"
                    if rec["state"] == 3:
                        line += (f" vector {rec['fault_vector']} eip {rec['fault_eip']:#x} "
                                 f"cr2 {rec['fault_cr2']:#x} error {rec['fault_error']:#x}")
                print(line)
        finally:
            current.switch()
        if pgd2:
            print(f"second pagetable: root {pgd2:#x} (pt walk --cr3 {pgd2:#x})")


class PtDiff(gdb.Command):
    """The tables now, held to the model of the before snapshot and to the spec's
    invariants: the same findings, ranges and wording as the report."""

    def __init__(self):
        super().__init__("pt diff", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        s = _session()
        if s.before is None:
            raise gdb.GdbError("no before snapshot (the guest never reached pagetable_init)")
        now, _ = s.snapshot("now")
        if now.registers["eip"] == s.before.registers["eip"]:
            print("at pagetable_init entry: nothing built yet; `continue` to paging_init_done "
                  "(or `tbreak *paging_init_done`) and ask again")
            return
        v = runner.judge_tables(s.scenario, s.opt, s.image, s.before, now)
        print(report.render(f"pt diff: {s.scenario.id} against model {s.opt.model_variant}", v))


class PtSnapshot(gdb.Command):
    """pt snapshot FILE: write the current state as a versioned JSON snapshot."""

    def __init__(self):
        super().__init__("pt snapshot", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        path = arg.strip()
        if not path:
            raise gdb.GdbError("usage: pt snapshot FILE")
        snap, _ = _session().snapshot("debug")
        snap.save(path)
        print(f"snapshot written to {path} ({len(snap.tables)} table pages, "
              f"{len(snap.ranges)} ranges); compare with `ptharness diff`")


class PtWhere(gdb.Command):
    """The scenario, where the guest is, and how to get here again."""

    def __init__(self):
        super().__init__("pt where", gdb.COMMAND_USER)

    def invoke(self, arg, from_tty):
        s = _session()
        sym = gdb.execute(f"info symbol {s.pc():#x}", to_string=True).strip()
        print(f"scenario {s.scenario.id}: {s.scenario.guest_variant(s.opt.variant)}, "
              f"cpu {s.scenario.cpu_flags}, -m {s.scenario.memory_arg}, append {s.scenario.append!r}")
        print(f"stopped at {s.pc():#x} ({sym})")
        print(f"reproduce: {runner.reproduce_command(s.scenario, s.opt)}")
        print(f"reopen:    {runner.debug_command(s.scenario, s.opt, s.at)}")


def install(scenario_id: str, variant: str, model_variant: str, kernel: str, at: str) -> None:
    global SESSION
    SESSION = _Session(scenario_id, variant, model_variant, kernel, at)
    for cmd in (PtPrefix, PtStart, PtWalk, PtVa, PtCpus, PtDiff, PtSnapshot, PtWhere):
        cmd()

