"""`ptharness`: one subcommand per task, all on the same layers.

    ptharness check [--matrix quick|full] [--scenario ID ...] [--variant prepatch] ...
    ptharness list [--matrix quick|full]
    ptharness diff A.json B.json
    ptharness debug SCENARIO [--at entry|done|fault] [--variant prepatch]
    ptharness walk --gdb HOST:PORT|SOCKET [--va ADDR] [--json FILE] [--oracle]
    ptharness explore [--budget SECONDS] [--seed N] [--variant prepatch] [--pv native|xen|any]
    ptharness build-guest --out DIR [--variant V ...]

Exit status: 0 fine, 1 the check found a disagreement, 2 an error (one line on
stderr), 130 interrupted.  Subcommands register in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from typing import Callable

from . import __version__
# Only what every command needs, and the walk's gdb session: a walk starts gdb
# first and loads the walker, the report and the snapshot while gdb starts up.
from .gdbmi import GdbMemory, MiError, MiSession
from .qemu import QemuError, Terminated

EXIT_OK, EXIT_DISAGREE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130  # SIGTERM: 143


def _on_sigterm(signum, frame):
    raise Terminated(signum)


class CliError(Exception):
    """Bad input or an unusable target: printed as one line."""


def _env(name: str, default: str) -> str:
    """An option's fallback from the environment, the same names as the plugin's."""
    import os
    return os.environ.get(name) or default


class _Parser(argparse.ArgumentParser):
    """Bad arguments in one line, not the whole usage before it."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (`{self.prog} --help` lists "
                              "the options)\n")


def _jobs(text: str) -> int:
    """-j: how many at a time; 0 (the default) is one per CPU."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{n}: at least 1 (or 0 for one per CPU)")
    return n


# --------------------------------------------------------------------------------------
# walk
# --------------------------------------------------------------------------------------

def _add_walk(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "walk", help="print the address space of a running or stopped i386 QEMU",
        description="Attach to an i386 QEMU gdbstub, walk the page tables CR3 points to "
                    "and print the mappings as merged ranges. The target is stopped while "
                    "gdb is attached and left as it was found: a running guest is resumed, "
                    "a stopped one stays stopped.")
    p.add_argument("--gdb", required=True, metavar="ENDPOINT",
                   help="the gdbstub: HOST:PORT (QEMU -gdb tcp::PORT) or a unix socket path")
    p.add_argument("--va", action="append", default=[], metavar="ADDR", type=_address,
                   help="show the walk of this virtual address level by level, instead of the "
                        "whole address space (repeatable; --all shows both)")
    p.add_argument("--all", action="store_true",
                   help="with --va: the whole address space too")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the snapshot (versioned JSON, docs/json.md) to FILE, or stdout (the "
                        "text then goes to stderr)")
    p.add_argument("--oracle", action="store_true",
                   help="compare with QEMU's `info tlb` and `info mem`; exit 1 on any disagreement")
    p.add_argument("--phys-bits", type=int, default=36, metavar="N",
                   help="MAXPHYADDR of the CPU (default 36, QEMU's 32-bit CPUs)")
    p.add_argument("--read", choices=("auto", "gdb", "pmemsave"), default="auto",
                   help="how table pages are read: gdb memory reads, QEMU's pmemsave into a "
                        "local file, or pmemsave when QEMU can write our files (default)")
    p.add_argument("--transcript", metavar="FILE", help="keep the gdb/MI transcript here")
    p.add_argument("--gdb-binary", default=_env("PTHARNESS_GDB", "gdb"), metavar="PATH",
                   help="gdb binary (env PTHARNESS_GDB)")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="limit for QEMU's monitor commands (default 600)")
    p.set_defaults(func=cmd_walk)


def _address(text: str) -> int:
    try:
        v = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address (e.g. 0xc0100000)")
    if not 0 <= v < 1 << 32:
        raise argparse.ArgumentTypeError(f"{text} is not a 32-bit address")
    return v


def cmd_walk(args: argparse.Namespace, out=sys.stdout) -> int:
    if args.json == "-":
        out = sys.stderr  # stdout carries the snapshot
    with MiSession(args.gdb_binary, transcript=args.transcript) as gdb:
        from . import oracle, report, snapshot, walker  # noqa: F401 - loaded while gdb starts
        # QEMU stops the guest when gdb connects. Only the oracle's long monitor
        # output needs the ack-dropping relay (gdbmi.relay_main).
        gdb.connect(args.gdb, relay=args.oracle, check_stub=True)
        was_running = _was_running(gdb)
        try:
            return _walk_attached(gdb, args, out)
        finally:
            _leave(gdb, was_running)


def _was_running(gdb: MiSession) -> bool:
    """QEMU pauses a running guest on connect (state "paused"); a guest that
    was already stopped keeps its own state ("paused (debug)", "(prelaunch)")."""
    try:
        return gdb.run_state() == "paused"
    except MiError:
        return False  # not QEMU's monitor: leave the target stopped


def _leave(gdb: MiSession, was_running: bool) -> None:
    """Resume a guest we interrupted; leave a stopped one stopped."""
    try:
        if was_running:
            gdb.detach()
        else:
            gdb.disconnect()
    except MiError:
        pass  # the target is gone: nothing to leave


def _walk_attached(gdb: MiSession, args: argparse.Namespace, out) -> int:
    from . import oracle, walker
    from .report import format_cpu, format_ranges, format_va_walk
    from .snapshot import Snapshot
    names = ["cr0", "cr3", "cr4", "efer"]
    try:
        regs = gdb.registers(names)
    except MiError as e:
        if "no register" not in str(e):
            raise
        regs = gdb.registers(names[:3]) | {"efer": 0}  # a CPU without EFER
    cpu = walker.CpuState(**regs)
    mem = GdbMemory(gdb, method=args.read)
    walk = walker.walk(mem, cpu, phys_bits=args.phys_bits)
    ranges = walker.merge(walk.leaves)
    print(format_cpu(cpu), file=out)
    if not cpu.paging:
        print("paging is off (CR0.PG=0): virtual addresses are physical", file=out)
    elif args.va and not args.all:
        pass  # only the walks asked for
    else:
        print("\n".join(format_ranges(ranges)), file=out)
        print(f"{len(walk.tables)} table pages, {len(walk.leaves)} leaves, "
              f"{len(ranges)} ranges", file=out)
    for p in walk.problems:
        print(f"problem: {p.level} entry {p.value:#x} at {p.entry_addr:#x} (VA {p.va:#010x}): "
              f"{p.what}", file=out)
    for va in args.va:
        print("\n" + "\n".join(format_va_walk(walk, mem, va, phys_bits=args.phys_bits)), file=out)
    if args.json:
        snap = Snapshot.from_walk(walk, "walk", provenance=_provenance(gdb, args))
        if args.json == "-":
            _write_json("-", snap.to_dict())
        else:
            snap.save(args.json)
            print(f"snapshot written to {args.json}", file=out)
    if args.oracle:
        tlb, memtext = oracle.fetch(gdb, args.timeout)
        found = oracle.compare(walk, tlb, memtext, limit=0)
        if found:
            print(f"\noracle: {len(found)} disagreement(s) with QEMU:", file=out)
            for d in found[:50]:
                print(f"  {d}", file=out)
            if len(found) > 50:
                print(f"  ... and {len(found) - 50} more", file=out)
            return EXIT_DISAGREE
        print("oracle: QEMU's info tlb and info mem agree with the walk", file=out)
    return EXIT_OK


def _provenance(gdb: MiSession, args: argparse.Namespace) -> dict:
    prov = {"tool": f"ptharness {__version__}", "gdbstub": args.gdb,
            "taken": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "phys_bits": args.phys_bits}
    try:
        prov["gdb"] = gdb.version()
    except MiError:
        pass
    try:
        prov["qemu"] = gdb.monitor("info version").strip()
    except MiError:
        pass
    return prov


# --------------------------------------------------------------------------------------
# check, list, diff
# --------------------------------------------------------------------------------------

def _add_check(sub: argparse._SubParsersAction) -> None:
    from .scenarios import MATRICES, VARIANTS
    p = sub.add_parser(
        "check", help="run the validation matrix (the main job)",
        description="Boot every chosen scenario in QEMU, snapshot the page tables at "
                    "pagetable_init entry and after paging_init, and hold them to the model, "
                    "the spec's invariants and QEMU's own view. Exit 0 only if every scenario "
                    "met its expected outcome (the patched guest passes; the pre-patch guest is "
                    "flagged exactly where the seed's bugs show).")
    p.add_argument("--matrix", choices=MATRICES, default=_env("PTHARNESS_MATRIX", "quick"),
                   help="scenario set (env PTHARNESS_MATRIX; default quick)")
    p.add_argument("--scenario", action="append", default=[], metavar="ID",
                   help="run only this scenario (repeatable; `ptharness list` shows the ids)")
    p.add_argument("--scenario-spec", action="append", default=[], metavar="SPEC",
                   help="run a scenario given by its spec, e.g. pae-nopse-pge-nx-1000M-mem=897M "
                        "(repeatable; what `ptharness explore` prints)")
    p.add_argument("--variant", choices=VARIANTS, default=_env("PTHARNESS_VARIANT", "patched"),
                   help="which guest build runs (default patched)")
    p.add_argument("--model", choices=VARIANTS, default="patched", dest="model_variant",
                   help="which algorithm the model check holds it to (default patched: the spec)")
    p.add_argument("-j", "--jobs", type=_jobs, default=0, metavar="N",
                   help="scenarios at a time (default: one per CPU)")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML here")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the matrix result as JSON (docs/json.md) to FILE, or to stdout "
                        "(the report then goes to stderr)")
    p.add_argument("--artifacts", metavar="DIR", default=_env("PTHARNESS_ARTIFACTS", "artifacts"),
                   help="per-scenario logs, snapshots and reports (default artifacts/)")
    _add_target_options(p)
    p.add_argument("--accel", choices=("tcg", "kvm"), default=_env("PTHARNESS_ACCEL", "tcg"),
                   help="QEMU accelerator (kvm only where /dev/kvm is usable)")
    p.add_argument("--no-oracle", action="store_true", help="skip QEMU's info tlb / info mem")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-scenario progress lines")
    p.add_argument("--verbose", action="store_true", dest="full_summary",
                   help="one summary row per scenario (default: the ones that did not pass)")
    p.set_defaults(func=cmd_check)


def _add_target_options(p: argparse.ArgumentParser, *, timeout: bool = True,
                        kernel: bool = True) -> None:
    """What boots and drives the guest: the same options on check, debug and explore."""
    p.add_argument("--qemu", default=_env("PTHARNESS_QEMU", "qemu-system-i386"), metavar="PATH",
                   help="QEMU binary (env PTHARNESS_QEMU)")
    p.add_argument("--gdb-binary", default=_env("PTHARNESS_GDB", "gdb"), metavar="PATH",
                   help="gdb binary (env PTHARNESS_GDB)")
    p.add_argument("--guest-build", metavar="DIR", default=None,
                   help="where the guest variants are built (env PTHARNESS_GUEST_BUILD; default "
                        "the checkout's guest/build; `ptharness build-guest` makes one)")
    if kernel:
        p.add_argument("--kernel", metavar="ELF", default=None,
                       help="one guest ELF instead (its variant is read from the ELF): only "
                            "the scenarios of its paging mode run")
    if timeout:
        p.add_argument("--timeout-factor", type=_factor, metavar="F",
                       default=_env("PTHARNESS_TIMEOUT_FACTOR", "1.0"),
                       help="multiply every guest timeout (slow hosts)")


def _target(args: argparse.Namespace) -> dict:
    """RunOptions fields from _add_target_options' options."""
    from pathlib import Path
    fields = {"qemu": args.qemu, "gdb": args.gdb_binary}
    if getattr(args, "kernel", None):
        fields["kernel"] = Path(args.kernel).resolve()
    if args.guest_build:
        fields["guest_build"] = Path(args.guest_build).resolve()
    if hasattr(args, "timeout_factor"):
        fields["timeout_factor"] = args.timeout_factor
    return fields


def _preflight(args: argparse.Namespace, chosen, opt) -> None:
    """Fail before starting anything, with one line: binaries that are missing or
    do not run, KVM, guest builds that are missing or no guest of the contract."""
    import os
    from . import elf, fixmap, model
    from .runner import STOP_POINTS, HarnessError, binaries_problem, kernel_path
    problem = binaries_problem(args.qemu, args.gdb_binary, 10 * opt.timeout_factor)
    if problem:
        raise CliError(problem)
    if args.accel == "kvm":
        try:
            os.close(os.open("/dev/kvm", os.O_RDWR))
        except OSError as e:
            raise CliError(f"--accel kvm: /dev/kvm is not usable here ({e.strerror}); use tcg")
    try:
        for path in dict.fromkeys(kernel_path(s, opt) for s in chosen):
            image = elf.KernelImage.from_elf(path)
            missing = [n for n in model.REQUIRED_SYMBOLS + STOP_POINTS if n not in image.symbols]
            if missing:
                raise CliError(f"{path}: not a guest of docs/guest-contract.md "
                               f"(no symbol {', '.join(missing)})")
            mismatch = fixmap.check_image(image.symbols)
            if mismatch:
                raise CliError(f"{path}: {mismatch}")
    except (HarnessError, elf.ElfError) as e:
        raise CliError(str(e)) from None


def cmd_check(args: argparse.Namespace, out=sys.stdout) -> int:
    from pathlib import Path
    from . import matrix, scenarios
    from .runner import RunOptions
    picked = args.scenario or args.scenario_spec
    chosen = ([scenarios.get(i) for i in args.scenario]
              + [scenarios.from_spec(spec) for spec in args.scenario_spec]
              if picked else scenarios.matrix(args.matrix))
    variant = args.variant
    if args.kernel:
        from .runner import HarnessError, kernel_variant
        from .elf import ElfError
        try:
            pae, prepatch = kernel_variant(Path(args.kernel).resolve())
        except (HarnessError, ElfError, OSError) as e:
            raise CliError(str(e)) from None
        variant = "prepatch" if prepatch else "patched"
        if args.variant != "patched" and args.variant != variant:
            raise CliError(f"--kernel {args.kernel} is a {variant} build, not --variant {args.variant}")
        wrong = [s.id for s in chosen if s.pae != pae] if picked else []
        if wrong:
            raise CliError(f"--kernel {args.kernel} is {'PAE' if pae else 'non-PAE'}; "
                           f"{wrong[0]} boots the other mode")
        chosen = [s for s in chosen if s.pae == pae]
    opt = RunOptions(variant=variant, model_variant=args.model_variant,
                     artifacts=Path(args.artifacts).resolve(), accel=args.accel,
                     oracle=not args.no_oracle, **_target(args))
    _preflight(args, chosen, opt)
    jobs = args.jobs or matrix.default_jobs()
    what = f"{len(chosen)} chosen" if picked else f"{args.matrix} matrix"
    label = f"{what}, guest {variant}, model {args.model_variant}"
    to_stdout = args.json == "-"
    return matrix.run_and_report(chosen, opt, jobs, label,
                                 junit=Path(args.junit) if args.junit else None,
                                 json_path="-" if to_stdout else (Path(args.json) if args.json else None),
                                 out=sys.stderr if to_stdout else out, quiet=args.quiet,
                                 verbose=args.full_summary)


def _add_list(sub: argparse._SubParsersAction) -> None:
    from .scenarios import MATRICES
    p = sub.add_parser("list", help="list the scenario ids",
                       description="Every scenario of a matrix with what it boots and expects.")
    p.add_argument("--matrix", choices=MATRICES, default="full", help="default full")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the scenarios as JSON (docs/json.md) to FILE, or stdout")
    p.add_argument("--invariants", action="store_true",
                   help="the invariants the checks state, each with the fact of the spec it "
                        "comes from, instead of the scenarios")
    p.set_defaults(func=cmd_list)


def invariants_table() -> list[str]:
    """The invariant layer's rules as a Markdown table (docs/architecture.md holds
    this very text; a test keeps the two equal)."""
    from .checks import INVARIANTS
    return (["| invariant | the fact it states |", "|---|---|"]
            + [f"| `{name}` | {fact} |" for name, fact, _rule in INVARIANTS])


def cmd_list(args: argparse.Namespace, out=sys.stdout) -> int:
    from . import scenarios
    if getattr(args, "invariants", False):
        print("\n".join(invariants_table()), file=out)
        return EXIT_OK
    if args.json:
        _write_json(args.json, {
            "format": "ptharness-scenarios", "version": 1, "matrix": args.matrix,
            "scenarios": [{"id": s.id, "spec": s.spec, "guest": s.guest_variant(), "pae": s.pae,
                           "cpu": s.cpu_flags, "memory": s.memory_arg, "smp": s.smp,
                           "append": s.append, "expect": s.expect,
                           "prepatch_bugs": list(s.prepatch_bugs())}
                          for s in scenarios.matrix(args.matrix)]})
        if args.json == "-":
            return EXIT_OK
    rows = [("id", "guest", "cpu", "memory", "cmdline", "expect", "pre-patch")]
    for s in scenarios.matrix(args.matrix):
        cpu = ",".join(f"{k}={'on' if v else 'off'}" for k, v in s.cpu_flags.items())
        rows.append((s.id, s.guest_variant(), cpu, s.memory_arg, s.append, s.expect,
                     "bugs " + "+".join(s.prepatch_bugs()) if s.prepatch_bugs() else "same"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)
    return EXIT_OK


def _add_diff(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diff", help="compare two snapshots semantically",
        description="Ranges gained, lost and changed, table pages and registers between two "
                    "snapshots (e.g. before.json and after.json of one run, or one scenario on "
                    "two guest builds). Exit 0 if they agree, 1 if they differ.")
    p.add_argument("a", metavar="A.json")
    p.add_argument("b", metavar="B.json")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="the difference as JSON (docs/json.md) to FILE, or stdout")
    p.set_defaults(func=cmd_diff)


def _write_json(target: str, doc) -> None:
    """--json FILE, or - (the default when no FILE is given) for stdout."""
    import json
    text = json.dumps(doc, indent=1) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        from pathlib import Path
        Path(target).write_text(text)


def cmd_diff(args: argparse.Namespace, out=sys.stdout) -> int:
    from .diff import diff
    from .snapshot import Snapshot
    d = diff(Snapshot.load(args.a), Snapshot.load(args.b))
    if args.json:
        _write_json(args.json, d.to_dict(args.a, args.b))
        if args.json == "-":
            return EXIT_OK if d.empty else EXIT_DISAGREE
    print(d.render(args.a, args.b), file=out)
    return EXIT_OK if d.empty else EXIT_DISAGREE


def _add_debug(sub: argparse._SubParsersAction) -> None:
    from .debug import POINTS
    from .scenarios import VARIANTS
    p = sub.add_parser(
        "debug", help="open one scenario in an interactive gdb",
        description="Boot one scenario in QEMU, stop it at pagetable_init entry (entry), after "
                    "paging_init (done, the default) or in the exception handler (fault), and "
                    "open gdb with the guest's symbols and the pt commands: pt walk, pt va ADDR, "
                    "pt diff (the tables against the model, in the report's wording), "
                    "pt snapshot FILE, pt where. Quit gdb to end; nothing is left running.")
    p.add_argument("scenario", metavar="SCENARIO", help="a scenario id (`ptharness list`)")
    p.add_argument("--at", choices=POINTS, default="done", help="where to stop (default done)")
    p.add_argument("--variant", choices=VARIANTS, default="patched", help="guest build")
    p.add_argument("--model", choices=VARIANTS, default="patched", dest="model_variant",
                   help="the algorithm pt diff holds the tables to")
    p.add_argument("--artifacts", metavar="DIR", default="artifacts")
    _add_target_options(p, timeout=False)
    p.set_defaults(func=cmd_debug)


def cmd_debug(args: argparse.Namespace, out=sys.stdout) -> int:
    from pathlib import Path
    from . import debug, scenarios
    from .runner import RunOptions
    s = scenarios.get_or_spec(args.scenario)
    opt = RunOptions(variant=args.variant, model_variant=args.model_variant,
                     artifacts=Path(args.artifacts).resolve(), **_target(args))
    try:
        debug.debug(s, opt, args.at)
    except debug.DebugError as e:
        raise CliError(str(e)) from None
    return EXIT_OK


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------
# explore
# --------------------------------------------------------------------------------------

def _above_zero(what: str, hint: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number above 0 (--timeout-factor, --budget)."""
    def parse(text: str) -> float:
        import math
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(
                f"{text!r}: a finite {what.removeprefix('a ')} above 0{hint}")
        return v
    return parse


_factor = _above_zero("a number", " (e.g. 2 on a slow host)")


def _add_explore(sub: argparse._SubParsersAction) -> None:
    from .scenarios import VARIANTS
    p = sub.add_parser(
        "explore", help="generate scenarios (Hypothesis) and shrink a failure to the smallest",
        description="Draw scenarios nobody listed -- CPU flags, RAM, mem=, reservetop=, "
                    "noexec=, poison=, smp=, pv= -- leaning to PMD boundaries of the spec's "
                    "bounds and to the 896 MiB and large-page edges; run each through every "
                    "check layer; shrink each distinct failure to its smallest scenario and "
                    "print it as a command and as a Scenario(...) line. Exit 1 when a failure "
                    "was found. The pre-patch guest (--variant prepatch) fails wherever a check "
                    "flags it: explore finds the seed's bugs on its own.")
    p.add_argument("--budget", type=_above_zero("a number of seconds"), default=60.0, metavar="SECONDS",
                   help="time to search (default 60; a shrink under way may take up to 30 s more)")
    p.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0): same seed, "
                   "same scenarios, worker by worker")
    p.add_argument("--variant", choices=VARIANTS, default="patched", help="guest build")
    p.add_argument("--pv", choices=("native", "xen", "any"), default="any",
                   help="paravirt backend of the drawn scenarios (default any)")
    p.add_argument("--build", choices=("pae", "nopae", "any"), default="any",
                   help="guest build (paging mode) of the drawn scenarios (default any)")
    p.add_argument("-j", "--jobs", type=_jobs, default=0, metavar="N",
                   help="parallel searches (default: one per CPU)")
    p.add_argument("--artifacts", metavar="DIR", default="artifacts/explore",
                   help="runs of failing scenarios and Hypothesis's example database "
                        "(default artifacts/explore)")
    _add_target_options(p, kernel=False)  # explore draws scenarios of both paging modes
    p.set_defaults(func=cmd_explore, accel="tcg")


def cmd_explore(args: argparse.Namespace, out=sys.stdout) -> int:
    from pathlib import Path
    from . import explore, matrix, scenarios
    from .runner import RunOptions
    opt = RunOptions(variant=args.variant, artifacts=Path(args.artifacts).resolve(),
                     **_target(args))
    # The builds the drawn scenarios need, checked before anything starts.
    probe = [scenarios.get(i) for b, i in (("pae", "pae-pse-pge-nx-16M"),
                                           ("nopae", "nopae-pse-pge-16M"))
             if args.build in (b, "any")]
    _preflight(args, probe, opt)
    found = explore.explore(opt, seed=args.seed, budget=args.budget,
                            jobs=args.jobs or matrix.default_jobs(), pv=args.pv,
                            build=args.build, out=out)
    return EXIT_DISAGREE if found else EXIT_OK


# --------------------------------------------------------------------------------------
# build-guest
# --------------------------------------------------------------------------------------

def _add_build_guest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build-guest", help="build the guest variants into a directory (for --guest-build)",
        description="Run the guest's Makefile (the checkout's guest/, or the sources an "
                    "installed ptharness carries) with gcc -m32, writing "
                    "DIR/<variant>/kernel.elf for every variant, or the ones named.")
    p.add_argument("--out", required=True, metavar="DIR", help="where the builds go")
    p.add_argument("--variant", action="append", default=[], metavar="VARIANT",
                   help="one of nopae-patched, nopae-prepatch, pae-patched, pae-prepatch "
                        "(repeatable; default all four)")
    p.add_argument("-j", "--jobs", type=_jobs, default=0, metavar="N", help="make -j N")
    p.set_defaults(func=cmd_build_guest)


def cmd_build_guest(args: argparse.Namespace, out=sys.stdout) -> int:
    import os
    import shutil
    import subprocess
    from pathlib import Path
    from .runner import guest_sources
    src = guest_sources()
    if src is None:
        raise CliError("the guest's sources are not here: neither a checkout's guest/ nor "
                       "an installed package's harness/guest")
    if shutil.which("make") is None:
        raise CliError("make not found (scripts/bootstrap installs the build tools)")
    dest = Path(args.out).resolve()
    cmd = ["make", "-s", "-C", str(src), f"BUILD={dest}", f"-j{args.jobs or os.cpu_count() or 1}"]
    if args.variant:
        cmd.append("VARIANT=" + " ".join(args.variant))
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        last = [ln for ln in r.stdout.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
        raise CliError(f"the guest build failed (make exited {r.returncode}): {last[0]}")
    built = sorted(p.parent.name for p in dest.glob("*/kernel.elf"))
    print(f"guest built in {dest}: {', '.join(built)}; use --guest-build {dest}", file=out)
    return EXIT_OK


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_check, _add_list, _add_diff, _add_walk, _add_debug, _add_explore, _add_build_guest]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ptharness",
        description="QEMU-backed validation of i386 early page-table construction.")
    parser.add_argument("--version", action="version", version=f"ptharness {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log what the harness does (-v: each QEMU start and scenario; "
                             "-vv: every MI command and timing) to stderr or --log-file")
    parser.add_argument("--log-file", metavar="FILE", help="write the log here instead of stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """What a command reports in one line (exit 2): bad input or environment."""
    from .oracle import OracleError
    from .scenarios import UnknownScenario
    from .snapshot import SnapshotError
    return (CliError, MiError, QemuError, OracleError, SnapshotError, OSError, ValueError,
            UnknownScenario)


def main(argv: list[str] | None = None) -> int:
    import logging
    import signal
    args = build_parser().parse_args(argv)
    if args.verbose or args.log_file:
        level = logging.DEBUG if args.verbose > 1 else logging.INFO
        handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(name)s: %(message)s"))
        root = logging.getLogger("harness")
        root.setLevel(level)
        root.addHandler(handler)
    # SIGTERM and SIGHUP (the terminal went away) unwind like Ctrl-C.
    previous = {s: signal.signal(s, _on_sigterm) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except BrokenPipeError:
        # The reader went away (`ptharness list | head -1`): not an error. Further
        # writes (the interpreter's own flush at exit) go nowhere.
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Terminated as e:
        signum = e.args[0] if e.args else signal.SIGTERM
        print(f"ptharness: terminated ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except KeyboardInterrupt:
        print("ptharness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise  # a bug of ours: the traceback says where
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ptharness: error: {first}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
