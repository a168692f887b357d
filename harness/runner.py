"""One scenario end to end: guest ELF -> QEMU (stopped) -> gdb -> snapshot at
pagetable_init entry -> snapshot after paging_init -> guest exit -> checks ->
report and artifacts.  The CLI and the pytest plugin both call run()."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import shutil
import sys
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ContextManager, Iterator, Protocol

from . import (boot, checks, elf, fault, fixmap, gdbmi, model, oracle, probes, qemu, records, smp,
               walker, work, x86)
from . import scenarios
from .report import render
from .scenarios import AUDIT, PASS, Scenario
from .snapshot import Snapshot

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parent.parent
PACKAGE = Path(__file__).resolve().parent


def guest_sources() -> Path | None:
    """The guest's sources: the checkout's guest/, else the copy an installed
    package carries (harness/guest, package data)."""
    for d in (REPO / "guest", PACKAGE / "guest"):
        if (d / "Makefile").is_file():
            return d
    return None


def checkout_guest_build() -> Path | None:
    """The checkout's guest/build, when the package runs from a checkout."""
    return REPO / "guest" / "build" if (REPO / "guest" / "Makefile").is_file() else None


def default_guest_build() -> Path | None:
    """PTHARNESS_GUEST_BUILD, else the checkout's guest/build; None for an
    installed package that was told nothing (kernel_path then says how)."""
    env = os.environ.get("PTHARNESS_GUEST_BUILD")
    return Path(env).resolve() if env else checkout_guest_build()

class HarnessError(Exception):
    """The run could not be carried out (as opposed to a check that failed)."""


@dataclass
class RunOptions:
    variant: str = "patched"          # which guest build runs
    model_variant: str = "patched"    # which algorithm the model check holds it to
    artifacts: Path = field(default_factory=lambda: Path("artifacts").resolve())
    qemu: str = "qemu-system-i386"
    gdb: str = "gdb"
    accel: str = "tcg"
    timeout_factor: float = 1.0
    guest_build: Path | None = field(default_factory=default_guest_build)
    kernel: Path | None = None        # one guest ELF instead of a build directory (--kernel)
    oracle: bool = True
    # Every snapshot is written now (format v2: 60 KB and 15 ms at 896 MiB); the
    # field stays for callers that asked for them all when the work ones were
    # written only on a failure.
    all_snapshots: bool = True

    def cli_flags(self) -> list[str]:
        """The options that differ from the defaults, as `ptharness check` flags."""
        d = RunOptions()
        flags = []
        if self.variant != d.variant:
            flags += ["--variant", self.variant]
        if self.model_variant != d.model_variant:
            flags += ["--model", self.model_variant]
        if self.accel != d.accel:
            flags += ["--accel", self.accel]
        if self.qemu != d.qemu:
            flags += ["--qemu", self.qemu]
        if self.gdb != d.gdb:
            flags += ["--gdb-binary", self.gdb]
        if self.timeout_factor != d.timeout_factor:
            flags += ["--timeout-factor", str(self.timeout_factor)]
        if self.kernel is not None:
            return flags + ["--kernel", str(self.kernel)] + (["--no-oracle"] if not self.oracle else [])
        # Named unless it is the checkout's own: the line must work in a fresh shell.
        home = checkout_guest_build()
        if self.guest_build is not None and (
                home is None or Path(self.guest_build).resolve() != home.resolve()):
            flags += ["--guest-build", str(self.guest_build)]
        if not self.oracle:
            flags += ["--no-oracle"]
        return flags


@dataclass
class Result:
    scenario: Scenario
    options: RunOptions
    verdict: checks.Verdict
    exit_status: int | None
    artifacts: Path
    seconds: float
    build_id: str = ""
    qemu_version: str = ""
    error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    report: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.verdict.ok

    @property
    def expected_bugs(self) -> tuple[str, ...]:
        if self.options.variant == self.options.model_variant:
            return ()
        return self.scenario.prepatch_bugs()

    @property
    def met_expectation(self) -> bool:
        """Patched guest vs patched model: every check passes. A pre-patch guest
        held to the patched model: flagged iff kernel-facts.md §6 says the
        scenario shows one of the seed's bugs."""
        if self.error:
            return False
        if self.expected_bugs:
            return not self.verdict.ok
        return self.verdict.failed_rules() == self.scenario.expected_findings()

    @property
    def status(self) -> str:
        if self.error:
            return "ERROR"
        if self.expected_bugs:
            return "FLAGGED" if not self.verdict.ok else "MISSED"
        return "PASS" if self.met_expectation else "FAIL"


def artifacts_dir(s: Scenario, opt: RunOptions) -> Path:
    name = s.id if opt.variant == "patched" else f"{s.id}@{opt.variant}"
    if opt.model_variant != "patched":
        name += f"~model-{opt.model_variant}"
    return opt.artifacts / name


def program() -> str:
    """How a person runs ptharness here: the checkout's .venv/bin/ptharness (the
    README's commands, run from the checkout), else the installed one."""
    if (REPO / "guest" / "Makefile").is_file() and (REPO / ".venv" / "bin" / "ptharness").exists():
        return ".venv/bin/ptharness"
    found = shutil.which("ptharness")
    return found or str(Path(sys.executable).parent / "ptharness")


def reproduce_command(s: Scenario, opt: RunOptions) -> str:
    which = ["--scenario", s.id] if scenarios.in_table(s) else ["--scenario-spec", s.spec]
    return shlex.join([program(), "check", *which] + opt.cli_flags())


def debug_command(s: Scenario, opt: RunOptions, at: str = "done") -> str:
    # The options of `check` that `debug` takes too.
    given = opt.cli_flags()
    flags = []
    for name in ("--variant", "--model", "--qemu", "--gdb-binary", "--guest-build", "--kernel"):
        if name in given:
            flags += [name, given[given.index(name) + 1]]
    name = s.id if scenarios.in_table(s) else s.spec
    return shlex.join([program(), "debug", name, "--at", at] + flags)


def binaries_problem(qemu_binary: str, gdb_binary: str, timeout: float) -> str | None:
    """Why QEMU or gdb cannot be used (missing, or `--version` fails), or None:
    the preflight of `check`, `explore` and the pytest plugin."""
    import subprocess
    for what, binary in (("QEMU", qemu_binary), ("gdb", gdb_binary)):
        if shutil.which(binary) is None:
            return f"{what} binary {binary!r} not found (scripts/bootstrap installs it)"
        try:
            r = subprocess.run([binary, "--version"], capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"{what} binary {binary!r} does not run: {e}"
        first = (r.stdout.strip().splitlines() or [""])[0]
        if r.returncode != 0 or not first:
            return (f"{what} binary {binary!r} does not run: `{binary} --version` exited "
                    f"with status {r.returncode}")
    return None


def kernel_variant(path: Path) -> tuple[bool, bool]:
    """(PAE, pre-patch) of one guest ELF, from the absolute symbols the guest build
    exports (docs/guest-contract.md)."""
    symbols = elf.KernelImage.from_elf(path).symbols
    if "GUEST_PAE" not in symbols or "GUEST_PREPATCH" not in symbols:
        raise HarnessError(f"{path}: not a guest of docs/guest-contract.md (no GUEST_PAE / "
                           "GUEST_PREPATCH symbols to tell its variant)")
    return bool(symbols["GUEST_PAE"]), bool(symbols["GUEST_PREPATCH"])


def kernel_path(s: Scenario, opt: RunOptions) -> Path:
    if opt.kernel is not None:
        pae, prepatch = kernel_variant(Path(opt.kernel))
        if pae != s.pae:
            raise HarnessError(f"scenario {s.id} boots a {'PAE' if s.pae else 'non-PAE'} build; "
                               f"--kernel {opt.kernel} is {'PAE' if pae else 'non-PAE'}")
        return Path(opt.kernel)
    if opt.guest_build is None:
        raise HarnessError("no guest build to boot: pass --guest-build DIR or set "
                           "PTHARNESS_GUEST_BUILD (`ptharness build-guest --out DIR` makes one)")
    p = Path(opt.guest_build) / s.guest_variant(opt.variant) / "kernel.elf"
    if not p.is_file():
        raise HarnessError(f"guest build missing: {p} (run `make -C guest`)")
    return p


def machine_for(s: Scenario, opt: RunOptions, kernel: Path) -> qemu.Machine:
    """The QEMU machine a scenario boots on."""
    return qemu.Machine(kernel=kernel, memory=s.memory_arg, cpu=s.cpu_flags, append=s.append,
                        accel=opt.accel, qemu=opt.qemu, smp=s.smp)


def firmware_ram(s: Scenario, before: Snapshot | None) -> int:
    """The RAM the firmware tells the kernel about (SeaBIOS keeps 128 KiB of
    QEMU's -m for itself): the multiboot info's mem_upper, an input to the
    kernel just as e820 is to Linux."""
    upper = (before.guest or {}).get("mb_mem_upper") if before else None
    return s.memory if upper is None else (1 << 20) + (upper << 10)


def model_config(s: Scenario, variant: str, ram_bytes: int) -> model.KernelConfig:
    flags = s.cpu_flags
    return model.KernelConfig(
        pae=s.pae, prepatch=(variant == "prepatch"), pv=s.pv,
        cpu_pse=flags["pse"], cpu_pge=flags["pge"], cpu_pae=flags["pae"], cpu_nx=flags["nx"],
        ram_bytes=ram_bytes, mem_limit=s.mem_limit, reservetop=s.reservetop,
        # A kernel broken on purpose is modelled as such only where the scenario
        # says so; elsewhere a pvbug= kernel is held to the correct one.
        noexec_off=s.noexec_off, pvbug=s.pvbug if s.expect == AUDIT else None)


# ----------------------------------------------------------------------------------
# Reading the machine
# ----------------------------------------------------------------------------------
CPU_REGISTERS = ["cr0", "cr3", "cr4", "efer", "eip"]


class Target(Protocol):
    """A stopped guest as the snapshot needs it: an MI session, or gdb's own
    inferior inside `ptharness debug` (gdb_commands)."""

    def registers(self, names: list[str]) -> dict[str, int]: ...
    def physical_mode(self) -> ContextManager[None]: ...
    def read_physical(self, addr: int, size: int) -> bytes: ...
    def read_physical_runs(self, runs: list[tuple[int, int]]) -> list[bytes]: ...


def read_guest_state(target: Target, image: elf.KernelImage) -> dict:
    """The guest's records (harness/records.py), read through physical addresses."""
    with target.physical_mode():
        return records.read(target.read_physical, image.symbols)


def take_snapshot(target: Target, image: elf.KernelImage, label: str, s: Scenario,
                  provenance: dict | None = None, memory: walker.PhysMemory | None = None,
                  cr3: int | None = None) -> tuple[Snapshot, walker.Walk]:
    """The tables the CPU uses now (from CR3, or from root `cr3` with the CPU's
    other registers), with the registers and the guest's records."""
    regs = target.registers(CPU_REGISTERS)
    if cr3 is not None:
        regs["cr3"] = cr3
    cpu = walker.CpuState(cr0=regs["cr0"], cr3=regs["cr3"], cr4=regs["cr4"], efer=regs["efer"])
    w = walker.walk(memory or walker.PagedMemory(target.read_physical_runs), cpu)
    snap = Snapshot.from_walk(w, label, registers=regs, provenance=provenance or {},
                              scenario=scenario_dict(s), guest=read_guest_state(target, image))
    return snap, w


# The contract's stop points, in the order a boot reaches them.
STOP_POINTS = ("pagetable_init", "paging_init_done", "work_done", "guest_exit")


def take_work(gdb: gdbmi.MiSession, image: elf.KernelImage, s: Scenario,
              provenance: dict) -> WorkEvidence:
    cpus = []
    for t in gdb.threads():
        cpus.append({"thread": t["id"], "target": t.get("target-id", ""),
                     **gdb.registers(CPU_REGISTERS, thread=t["id"])})
    memory = gdbmi.GdbMemory(gdb)
    tables, w = take_snapshot(gdb, image, "work", s, provenance, memory)
    swapper_pa = records.pa_of(image.symbols["swapper_pg_dir"])
    # Mostly the same kernel PTE pages again: the memory reads each page once.
    sw = walker.walk(memory, replace(w.cpu, cr3=swapper_pa))
    swapper = Snapshot.from_walk(sw, "work-swapper", registers={**tables.registers, "cr3": swapper_pa},
                                 provenance=provenance, scenario=scenario_dict(s), guest=tables.guest)
    physical = {}
    rec = (tables.guest or {}).get("pgd2") or {}
    with gdb.physical_mode():
        for name in ("fix", "kmap"):
            if rec.get(f"{name}_va"):
                physical[name] = gdb.read_memory(rec[f"{name}_pa"], 16).hex()
    return WorkEvidence(cpus=cpus, tables=tables, swapper=swapper, physical=physical)


def scenario_dict(s: Scenario) -> dict:
    return {"id": s.id, "pae": s.pae, "cpu": s.cpu_flags, "memory": s.memory_arg,
            "append": s.append, "expect": s.expect}


def text_regions(gdb: gdbmi.MiSession, image: elf.KernelImage) -> list[checks.TextRegion]:
    start, end = image.symbols["_text"], image.symbols["_etext"]
    expected = image.read_virtual(start, end - start)
    return [checks.TextRegion(start, expected, gdb.read_virtual(start, end - start))]


def disassemble(va: int, expected: bytes, actual: bytes) -> str:
    import capstone
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)

    def first(code: bytes) -> str:
        for insn in md.disasm(code, va):
            return f"{insn.mnemonic} {insn.op_str}".strip()
        return "(undecodable)"
    return f"ELF: `{first(expected)}`, memory: `{first(actual)}`"


# ----------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------
@dataclass
class WorkEvidence:
    """The machine at work_done: every vCPU's registers as gdb sees them, the
    walk from the BSP's CR3 (the second pagetable) and from swapper_pg_dir,
    and the physical bytes behind the late fixmap slot and the kmap."""

    cpus: list[dict]            # per vCPU: thread, target, cr0, cr3, cr4, efer, eip
    tables: Snapshot            # from CR3
    swapper: Snapshot           # from __pa(swapper_pg_dir), the same CR0/CR4
    physical: dict[str, str]    # "fix" / "kmap" -> 16 bytes in hex, read by physical address


@dataclass
class Evidence:
    """Everything one boot yields; the checks judge it afterwards, with QEMU gone."""

    exit_status: int | None = None
    serial: str = ""
    before: Snapshot | None = None
    after: Snapshot | None = None
    after_walk: walker.Walk | None = None
    exit_state: dict | None = None     # guest variables when it called guest_exit
    text: list[checks.TextRegion] = field(default_factory=list)
    tlb: bytes | None = None           # QEMU's `info tlb` / `info mem` at the after point
    mem: str | None = None
    tlb_expected: Future | None = None  # oracle.expected_tlb_bytes, built while QEMU formats
    qemu_version: str = ""
    work: WorkEvidence | None = None   # at work_done: the tables at work
    prediction: Future | None = None   # predict(before), computed while the guest runs
    work_prediction: Future | None = None  # predict_work(after), likewise
    saved: list[Future] = field(default_factory=list)
    model_seconds: dict[str, float] = field(default_factory=dict)  # the model's own time, off the path


def _staging_dir(final: Path) -> Path:
    """A private directory the run writes into, published as `final` when it ends:
    runs of one scenario at once (two `check`s from one checkout, a scenario
    named twice, two tests booting it) never delete each other's files."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{final.name}.*.tmp"):
        pid = old.name.rsplit(".", 2)[-2].split("-")[0]
        if pid.isdigit() and not qemu.pid_alive(int(pid)):   # left by a killed run
            shutil.rmtree(old, ignore_errors=True)
    path = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    path.mkdir()
    return path


def _publish(staging: Path, final: Path) -> None:
    """Make `staging` the scenario's artifacts directory; the last run to end wins."""
    for _ in range(20):
        try:
            staging.rename(final)
            return
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        old = final.with_name(f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.old")
        try:
            final.rename(old)
        except FileNotFoundError:
            continue
        shutil.rmtree(old, ignore_errors=True)
    raise HarnessError(f"could not publish the artifacts as {final}")


# The main thread of a run mostly waits on gdb and QEMU, one short round trip after
# another, while a background thread models and writes snapshots: with Python's
# default 5 ms GIL switch interval each round trip can wait that long (0.4 s over
# the reads at one stop of a 896 MiB scenario); 0.5 ms brings that to 0.06 s.
SWITCH_INTERVAL = 0.0005


def run(s: Scenario, opt: RunOptions) -> Result:
    t0 = time.monotonic()
    final = artifacts_dir(s, opt)
    art = _staging_dir(final)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL))
    try:
        result = _run_in(s, opt, art, final, t0)
    finally:
        sys.setswitchinterval(interval)
        _publish(art, final)
    return result


def _run_in(s: Scenario, opt: RunOptions, art: Path, final: Path, t0: float) -> Result:
    timings: dict[str, float] = {}
    verdict = checks.Verdict()
    ev = Evidence()
    image = None
    error = ""
    try:
        kernel = kernel_path(s, opt)
        image = elf.KernelImage.from_elf(kernel)
        mismatch = fixmap.check_image(image.symbols)
        if mismatch:
            raise HarnessError(f"{kernel}: {mismatch}")
        machine = machine_for(s, opt, kernel)
        with ThreadPoolExecutor(max_workers=3) as background:
            _boot(s, opt, machine, image, art, final, timings, ev, background)
            t = time.monotonic()
            verdict = evaluate(s, opt, image, ev)
            for f in ev.saved:
                f.result()
            timings["checks"] = time.monotonic() - t
            timings.update({f"check {layer}": t for layer, t in verdict.seconds.items()})
            timings.update(ev.model_seconds)
    except (HarnessError, qemu.QemuError, gdbmi.MiError, elf.ElfError, OSError) as e:
        # The environment, not the tables: the scenario is an ERROR, the matrix goes on.
        error = str(e) if not isinstance(e, OSError) else f"{type(e).__name__}: {e}"
        ev.serial = _read(art / "serial.log")
    result = Result(scenario=s, options=opt, verdict=verdict, exit_status=ev.exit_status,
                    artifacts=final, seconds=time.monotonic() - t0,
                    build_id=image.build_id if image else "", qemu_version=ev.qemu_version,
                    error=error, timings=timings)
    result.report = _write_artifacts(result, art, ev.serial, fault.explain(ev.serial, image))
    log.info("%s: %s in %.2fs%s", s.id, result.status, result.seconds,
             f" ({', '.join(verdict.failed_checks())})" if verdict.findings else "")
    log.debug("%s: timings %s; layers ran %s", s.id,
              {k: round(v, 3) for k, v in timings.items()}, verdict.ran)
    return result


def _boot(s: Scenario, opt: RunOptions, machine: qemu.Machine, image: elf.KernelImage,
          art: Path, final: Path, timings: dict, ev: Evidence, background: ThreadPoolExecutor) -> None:
    """Boot with gdb attached; stop at the contract's points and collect.

    Pure-Python work that does not need the machine (the model's prediction,
    writing snapshots) goes to `background`, to overlap with the guest running
    and QEMU formatting `info tlb`: the main thread mostly waits on sockets."""
    tf = opt.timeout_factor
    prov = {"guest_build_id": image.build_id, "guest_variant": s.guest_variant(opt.variant)}
    t = time.monotonic()
    # gdb starts while QEMU does: each takes tens of ms, one after the other twice that.
    with qemu.QemuProcess(machine, art, qmp=opt.oracle, start_timeout=10 * tf,
                          wait_on_enter=False) as vm:
        vm.stopped_grace = 3 * tf
        _write_script(art / "qemu.sh", "Boot this scenario by hand, as the harness did "
                      "(add -S -gdb tcp::1234 to attach gdb).",
                      shlex.join(machine.arguments(final / vm.serial_log.name, None)))
        with gdbmi.MiSession(opt.gdb, transcript=art / "gdb-mi.log", timeout_factor=tf) as gdb:
            gdb.load_elf(machine.kernel)
            vm.wait_ready()
            gdb.watch = vm.trouble  # a dead or stopped QEMU is named, not waited out
            # QEMU's long outputs (info tlb) come over QMP here, so gdb's monitor only
            # carries short answers and needs no ack-dropping relay in between.
            gdb.connect(vm.gdb_endpoint, timeout=20 * tf, relay=False)
            ev.qemu_version = gdb.monitor("info version").strip()
            prov.update(qemu=ev.qemu_version, gdb=gdb.version())
            points = {}
            for sym, where in zip(STOP_POINTS, ("before", "after", "work", "exit")):
                gdb.break_at(sym)
                points[image.symbols[sym]] = where
            timings["start"] = time.monotonic() - t
            while True:
                t = time.monotonic()
                stop = gdb.continue_until_stop(timeout=20 * tf)
                timings["run"] = timings.get("run", 0) + time.monotonic() - t
                if stop.get("reason") == "exited":
                    break
                where = points.get(_stop_pc(stop))
                if where is None:
                    raise HarnessError(f"guest stopped where the contract has no stop: {stop}")
                t = time.monotonic()
                _collect(where, s, opt, image, gdb, vm, art, prov, ev, background)
                timings[f"at_{where}"] = time.monotonic() - t
        t = time.monotonic()
        ev.exit_status = vm.wait(timeout=20 * tf)
        timings["exit"] = time.monotonic() - t
        if vm.killed_by:
            # Someone else's signal, not the guest's exit: nothing to judge.
            raise qemu.QemuGone(f"{vm.trouble()} during the guest's run (gdb's continue)")
    ev.serial = _read(art / "serial.log")


def _collect(where: str, s: Scenario, opt: RunOptions, image: elf.KernelImage,
             gdb: gdbmi.MiSession, vm: qemu.QemuProcess, art: Path, prov: dict, ev: Evidence,
             background: ThreadPoolExecutor) -> None:
    """What one stop point yields (docs/guest-contract.md "Stop points")."""
    tf = opt.timeout_factor
    if where == "exit":
        # The last look before the guest leaves: its hook log and the
        # hypervisor's record as they ended, whatever the path.
        ev.exit_state = read_guest_state(gdb, image)
        (art / "exit-state.json").write_text(json.dumps(ev.exit_state, indent=1) + "\n")
    elif where == "work":
        ev.work = take_work(gdb, image, s, prov)
        ev.saved += [background.submit(ev.work.tables.save, art / "work.json"),
                     background.submit(ev.work.swapper.save, art / "work-swapper.json")]
        (art / "work-machine.json").write_text(json.dumps(
            {"cpus": ev.work.cpus, "physical": ev.work.physical}, indent=1) + "\n")
    elif where == "before":
        ev.before, _ = take_snapshot(gdb, image, where, s, prov)
        ev.prediction = background.submit(_clocked, ev, "model before->after", predict, s, opt,
                                          image, ev.before)
        ev.saved.append(background.submit(ev.before.save, art / "before.json"))
    else:
        ev.after, ev.after_walk = take_snapshot(gdb, image, where, s, prov)
        ev.work_prediction = background.submit(_clocked, ev, "model work", predict_work, s, opt,
                                               image, ev.before, ev.after)
        ev.saved.append(background.submit(ev.after.save, art / "after.json"))
        ev.text = text_regions(gdb, image)
        if opt.oracle:
            # QEMU's own view, through QMP (the same monitor text as gdb's
            # `monitor`, without its per-line packets). What it must say is
            # built meanwhile, while QEMU formats and this thread waits.
            ev.tlb_expected = background.submit(oracle.expected_tlb_bytes, ev.after_walk)
            ev.tlb, ev.mem = vm.hmp_bytes("info tlb", 60 * tf), vm.hmp("info mem", 60 * tf)


def _clocked(ev: Evidence, name: str, fn, *args):
    """fn(*args) in the background, its time kept in ev.model_seconds."""
    t = time.monotonic()
    try:
        return fn(*args)
    finally:
        ev.model_seconds[name] = time.monotonic() - t


def _write_script(path: Path, what: str, command: str) -> None:
    # From the checkout its relative .venv/bin/ptharness; installed, from anywhere.
    here = REPO if (REPO / "guest" / "Makefile").is_file() else Path.cwd()
    path.write_text(f"#!/bin/sh\n# {what}\ncd {shlex.quote(str(here))} || exit 1\n"
                    f"exec {command} \"$@\"\n")
    path.chmod(0o755)


def _stop_pc(stop: dict) -> int | None:
    frame = stop.get("frame") or {}
    addr = frame.get("addr")
    return int(addr, 16) if addr else None


def _read(p: Path) -> str:
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def evaluate(s: Scenario, opt: RunOptions, image: elf.KernelImage, ev: Evidence) -> checks.Verdict:
    """Every check layer over what one boot yielded, in the order of the data path."""
    v = checks.Verdict()
    before, after = ev.before, ev.after
    pred, model_error = None, ""
    if before is not None:
        pred, model_error = ev.prediction.result() if ev.prediction else predict(s, opt, image, before)

    with _timed(v, "guest"):
        v.findings += checks.check_guest(s, ev.exit_status, ev.serial,
                                         predicted_bug=pred.bug if pred is not None else "")
    v.ran.append("guest")
    final_state = ev.exit_state if ev.exit_state is not None else (after.guest if after else None)
    if s.pv == "xen" and final_state is not None:
        # Past work_done the record also holds what the work phase did.
        wpred = ev.work_prediction.result()[0] if ev.work and ev.work_prediction else None
        with _timed(v, "hypervisor"):
            v.findings += hypervisor_layer(s, before, after, final_state, pred,
                                           wpred.hypervisor_flags if wpred else [])
        v.ran.append("hypervisor")
    if before is None:
        if s.expect in (PASS, AUDIT):
            v.findings.append(checks.Finding("guest", "reached", "a stop at pagetable_init",
                                             "the guest ended first", detail=_last_line(ev.serial)))
        for c in ("boot", "model", "invariants", "oracle", "content"):
            v.skipped[c] = "the guest ended before pagetable_init"
        return v
    _boot_and_model(s, opt, image, ev, pred, model_error, final_state, v)
    if after is None:
        for c in ("invariants", "oracle", "content"):
            v.skipped[c] = "no snapshot after paging_init (the guest stopped before it)"
        return v
    with _timed(v, "invariants"):
        v.findings += check_invariants(s, image, before, after)
    v.ran.append("invariants")
    if ev.tlb is not None and ev.after_walk is not None:
        expected = ev.tlb_expected.result() if ev.tlb_expected else None
        with _timed(v, "oracle"):
            v.findings += checks.check_oracle(oracle.compare(ev.after_walk, ev.tlb, ev.mem,
                                                             expected=expected))
        v.ran.append("oracle")
    else:
        v.skipped["oracle"] = "disabled (--no-oracle)"
    with _timed(v, "content"):
        v.findings += checks.check_content(ev.text, disassemble)
    v.ran.append("content")
    with _timed(v, "work, smp, probes"):
        at_work_layers(s, opt, image, ev, pred, v)
    return v


@contextlib.contextmanager
def _timed(v: checks.Verdict, layer: str) -> Iterator[None]:
    """How long a layer took to judge (result.json's timings, the scaling table)."""
    t = time.monotonic()
    try:
        yield
    finally:
        v.seconds[layer] = v.seconds.get(layer, 0.0) + time.monotonic() - t


def _boot_and_model(s: Scenario, opt: RunOptions, image: elf.KernelImage, ev: Evidence,
                    pred: model.Prediction | None, model_error: str, final_state: dict | None,
                    v: checks.Verdict) -> None:
    """The boot layer (the before snapshot against the spec's start state) and the
    model layer (the after snapshot against the model run from the before one)."""
    before, after = ev.before, ev.after
    with _timed(v, "boot"):
        spec = boot.spec_start(s, image.symbols, firmware_ram(s, before))
        boot_findings = boot.check_boot(s, spec, before, ev.serial)
    v.findings += boot_findings
    v.ran += ["boot", "model"]
    if model_error:
        v.findings.append(checks.Finding("model", "before-state", "a state the model can start from",
                                         model_error))
    elif pred.bug:
        # The algorithm stops at the kernel's own BUG(): the guest must stop there too,
        # having done exactly the calls before it.
        if after is not None:
            v.findings.append(checks.Finding("model", "bug", pred.bug, "paging_init completed"))
        elif final_state is not None:
            v.findings += checks.check_progress(before, final_state, pred.allocations, pred.hook_log)
    elif after is None:
        v.findings.append(checks.Finding("model", "completion", "paging_init completes",
                                         "the guest stopped before paging_init_done",
                                         detail=_last_line(ev.serial)))
    else:
        with _timed(v, "model"):
            v.findings += check_against_model(before, after, pred)
            if boot_findings:
                v.findings += model_from_spec_start(s, opt, image, spec.before, before, after)


WORK_LAYERS = ("work", "smp", "probes")


def at_work_layers(s: Scenario, opt: RunOptions, image: elf.KernelImage, ev: Evidence,
                   pred: model.Prediction | None, v: checks.Verdict) -> None:
    """The tables at work_done: the second pagetable and the zap (work), the
    APs (smp), the CPU's verdict (probes)."""
    w = ev.work
    if w is None:
        if s.expect == PASS and ev.after is not None:
            v.findings.append(checks.Finding("work", "reached", "a stop at work_done",
                                             "the guest ended first", detail=_last_line(ev.serial)))
            v.ran.append("work")
        for c in WORK_LAYERS:
            if c not in v.ran:
                v.skipped[c] = "the guest ended before work_done"
        return
    wpred = ev.work_prediction.result() if ev.work_prediction else None
    judge_work(s, opt, image, image.read_virtual(image.symbols["_text"], 16), ev.before, ev.after, w,
               pred.hook_log if pred is not None else [], v, wpred)


def judge_work(s: Scenario, opt: RunOptions, image: elf.KernelImage, text_head: bytes,
               before: Snapshot, after: Snapshot, w: WorkEvidence, hook_log: list, v: checks.Verdict,
               wpred: tuple[model.WorkPrediction | None, str] | None = None) -> None:
    """The work, smp and probes layers on the evidence alone (no QEMU needed).
    text_head: the ELF's first 16 bytes of _text; hook_log: pagetable_init's
    hook calls as the model predicted them."""
    state = w.tables.guest or {}
    pred, error = wpred if wpred is not None else predict_work(s, opt, image, before, after)
    if error:
        v.findings.append(checks.Finding("work", "model", "a prediction from paging_init_done", error))
    v.findings += work.check_work(w.tables, w.swapper, w.physical, text_head, after, pred)
    if s.pv == "xen" and pred is not None:
        v.findings += work.check_hypercalls(after.guest or {}, state, pred)
    v.ran.append("work")
    v.figures["work"] = work.figures(w.tables, w.swapper)
    if s.smp > 1:
        swapper_pa = records.pa_of(image.symbols["swapper_pg_dir"])
        ap_nxe = s.pae and s.cpu_flags["nx"]
        v.findings += smp.check_smp(s.smp, swapper_pa, ap_nxe, after, state, w.cpus)
        v.ran.append("smp")
        v.figures["smp"] = (f"{state.get('smp_cpus_up')} of {s.smp} CPUs at PAGE_OFFSET, "
                            f"{len(w.cpus)} vCPUs in gdb")
    else:
        v.skipped["smp"] = "smp=1: no application processors"
    # The first PTE page pagetable_init allocates, as the model has it.
    first_pt = next((pfn << x86.PAGE_SHIFT for op, pfn in hook_log if op == model.HOOK_ALLOC_PT),
                    None)
    large_pages = s.pse and s.pv == "native"  # Xen hides PSE from the kernel
    want = probes.expected(s.pv, s.nx_active, large_pages, image.symbols, first_pt)
    v.findings += probes.check_probes(want, state.get("probes") or [])
    v.ran.append("probes")
    faults = sum(1 for w_ in want if w_.fault_error is not None)
    v.figures["probes"] = f"{len(want)} probes, {faults} expected to fault"


def hypervisor_layer(s: Scenario, before: Snapshot | None, after: Snapshot | None,
                     final_state: dict, pred: model.Prediction | None,
                     work_flags: list | None = None) -> list[checks.Finding]:
    """The audit record as it ended: empty for a correct kernel; under pvbug=,
    exactly what the model's hypervisor flags (in pagetable_init, then in the
    work phase). Plus the hypervisor's counters."""
    if s.expect == AUDIT:
        flags = (pred.hypervisor_flags if pred else []) + list(work_flags or [])
        out = checks.check_audit_record(final_state, flags, s.pvbug)
    else:
        out = checks.check_hypervisor_audit(final_state, s.pae)
    if before is not None and after is not None and pred is not None and not pred.bug:
        out += checks.check_hypervisor_counters(before.guest or {}, after.guest or {},
                                                pred.mmu_updates, pred.pins)
    return out


def model_from_spec_start(s: Scenario, opt: RunOptions, image: elf.KernelImage,
                          spec_before: Snapshot, before: Snapshot,
                          after: Snapshot) -> list[checks.Finding]:
    """The boot stage differs from the spec: predict again from the spec's own
    start state, so that what the wrong start changed in the final tables (a
    reused table's flags, one allocation more) shows as a model mismatch too."""
    recorded = before.guest or {}
    # What the firmware reported and the hooks called before pagetable_init are
    # inputs, not part of the boot stage under test.
    inputs = {k: recorded[k] for k in ("mb_mem_upper", "hook_log") if k in recorded}
    start = replace(spec_before, guest={**spec_before.guest, **inputs})
    pred, error = predict(s, opt, image, start)
    if pred is None or pred.bug:
        return [checks.Finding("model", "spec-start", "a prediction from the spec's start state",
                               error or pred.bug)]
    return [replace(f, rule=f"spec-start {f.rule}") for f in check_against_model(start, after, pred)]


def check_against_model(before: Snapshot, after: Snapshot,
                        pred: model.Prediction) -> list[checks.Finding]:
    pw = walker.walk(pred.memory, pred.cpu)
    return checks.check_model(before, after, pred.cpu, pw.tables, pred.allocations, pred.hook_log)


def check_invariants(s: Scenario, image: elf.KernelImage, before: Snapshot,
                     after: Snapshot) -> list[checks.Finding]:
    layout = checks.SpecLayout.of(s, image.symbols["__init_end"], firmware_ram(s, before),
                                  start_info=(before.guest or {}).get("start_info"))
    info_va = (before.guest or {}).get("start_info_va")
    return checks.check_invariants(
        s, layout, image.symbols["swapper_pg_dir"] - x86.PAGE_OFFSET, after, before,
        zero_pa=image.symbols["empty_zero_page"] - x86.PAGE_OFFSET,
        start_info_pa=(info_va - x86.PAGE_OFFSET) & ~0xFFF if info_va else None) \
        + checks.check_variables(s, layout, after)


def judge_tables(s: Scenario, opt: RunOptions, image: elf.KernelImage, before: Snapshot,
                 after: Snapshot) -> checks.Verdict:
    """The model and invariant layers on two snapshots alone (no QEMU needed):
    what `pt diff` shows in a debug session."""
    v = checks.Verdict(ran=["model", "invariants"])
    pred, error = predict(s, opt, image, before)
    if pred is None:
        v.findings.append(checks.Finding("model", "before-state", "a state the model can start from",
                                         error))
    elif pred.bug:
        v.findings.append(checks.Finding("model", "bug", pred.bug, "paging_init completed"))
    else:
        v.findings += check_against_model(before, after, pred)
    v.findings += check_invariants(s, image, before, after)
    return v


def predict(s: Scenario, opt: RunOptions, image: elf.KernelImage,
            before: Snapshot) -> tuple[model.Prediction | None, str]:
    """The model's prediction from the before snapshot, or why there is none."""
    try:
        cfg = model_config(s, opt.model_variant, firmware_ram(s, before))
        return model.predict(before, cfg, image), ""
    except model.ModelError as e:
        return None, str(e)


def predict_work(s: Scenario, opt: RunOptions, image: elf.KernelImage, before: Snapshot,
                 after: Snapshot) -> tuple[model.WorkPrediction | None, str]:
    """The model's work phase from the state at paging_init_done, or why there is none."""
    try:
        cfg = model_config(s, opt.model_variant, firmware_ram(s, after))
        return model.predict_work(before, after, cfg, image), ""
    except model.ModelError as e:
        return None, str(e)


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no serial output)"


def _write_artifacts(r: Result, art: Path, serial: str, fault_text: str) -> str:
    s, opt = r.scenario, r.options
    variant = s.guest_variant(opt.variant)
    title = f"{r.status} {s.id} (guest {variant}, model {opt.model_variant}) in {r.seconds:.2f}s"
    if r.error:
        title += f"\n  error: {r.error}"
    at_work = set(r.verdict.failed_checks()) & set(WORK_LAYERS)
    at = "fault" if fault_text else ("work" if at_work else "done")
    text = render(title, r.verdict, reproduce=reproduce_command(s, opt),
                  debug=debug_command(s, opt, at), artifacts=str(_rel(r.artifacts)),
                  serial_tail=serial if (r.error or not r.verdict.ok) else "", fault=fault_text,
                  max_groups=10_000)
    (art / "report.txt").write_text(text + "\n")
    _write_script(art / "gdb.sh", "Reopen this scenario in gdb, stopped after paging_init.",
                  debug_command(s, opt))
    (art / "result.json").write_text(json.dumps({
        "scenario": s.id, "variant": opt.variant, "model": opt.model_variant,
        "status": r.status, "met_expectation": r.met_expectation, "exit_status": r.exit_status,
        "seconds": round(r.seconds, 3), "timings": {k: round(v, 4) for k, v in r.timings.items()},
        "failed_checks": r.verdict.failed_checks(), "error": r.error, "build_id": r.build_id,
        "qemu": r.qemu_version, "findings": len(r.verdict.findings),
    }, indent=1) + "\n")
    return text


def _rel(p: Path) -> Path:
    try:
        return p.resolve().relative_to(Path.cwd())
    except ValueError:
        return p
