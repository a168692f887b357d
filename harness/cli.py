"""`ptharness`: one subcommand per task, all on the same layers.

    ptharness walk --gdb HOST:PORT|SOCKET [--va ADDR] [--json FILE] [--oracle]

Exit status: 0 fine, 1 the check found a disagreement, 2 an error (one line on
stderr), 130 interrupted.  Subcommands register in SUBCOMMANDS.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from typing import Callable

from . import __version__, oracle, walker
from .gdbmi import GdbMemory, MiError, MiSession
from .qemu import QemuError
from .snapshot import Snapshot, SnapshotError

EXIT_OK, EXIT_DISAGREE, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliError(Exception):
    """Bad input or an unusable target: printed as one line."""


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
                   help="also show the walk of this virtual address level by level (repeatable)")
    p.add_argument("--json", metavar="FILE", help="write the snapshot (versioned JSON) here")
    p.add_argument("--oracle", action="store_true",
                   help="compare with QEMU's `info tlb` and `info mem`; exit 1 on any disagreement")
    p.add_argument("--phys-bits", type=int, default=36, metavar="N",
                   help="MAXPHYADDR of the CPU (default 36, QEMU's 32-bit CPUs)")
    p.add_argument("--read", choices=("auto", "gdb", "pmemsave"), default="auto",
                   help="how table pages are read: gdb memory reads, QEMU's pmemsave into a "
                        "local file, or pmemsave when QEMU can write our files (default)")
    p.add_argument("--transcript", metavar="FILE", help="keep the gdb/MI transcript here")
    p.add_argument("--gdb-binary", default="gdb", metavar="PATH", help="gdb to run (default: gdb)")
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


def _size(n: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n:#x}"


def format_ranges(ranges: list[walker.Range]) -> list[str]:
    lines = [f"{'VA':<21} {'PA':<23} {'size':>6} {'page':>4} perm user global flags"]
    for r in ranges:
        perm = "r" + ("w" if r.writable else "-") + ("x" if r.executable else "-")
        lines.append(f"{r.va:08x}-{r.va + r.size - 1:08x}  {r.pa:09x}-{r.pa + r.size - 1:09x}"
                     f"  {_size(r.size):>6} {_size(r.page_size):>4} {perm}  "
                     f"{'u' if r.user else 's':<4} {'g' if r.global_ else '-':<6} {r.flags:#x}")
    return lines


def format_cpu(cpu: walker.CpuState) -> str:
    bits = [name for name, on in (("PSE", cpu.pse), ("PGE", cpu.pge), ("NXE", cpu.nxe)) if on]
    return (f"paging {cpu.mode}  cr0={cpu.cr0:#x} cr3={cpu.cr3:#x} cr4={cpu.cr4:#x} "
            f"efer={cpu.efer:#x}  {' '.join(bits)}").rstrip()


def cmd_walk(args: argparse.Namespace, out=sys.stdout) -> int:
    with MiSession(args.gdb_binary, transcript=args.transcript) as gdb:
        gdb.connect(args.gdb)  # QEMU stops the guest when gdb connects
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
    else:
        print("\n".join(format_ranges(ranges)), file=out)
        print(f"{len(walk.tables)} table pages, {len(walk.leaves)} leaves, "
              f"{len(ranges)} ranges", file=out)
    for p in walk.problems:
        print(f"problem: {p.level} entry {p.value:#x} at {p.entry_addr:#x} (VA {p.va:#010x}): "
              f"{p.what}", file=out)
    for va in args.va:
        print(f"\nwalk of {va:#010x}:", file=out)
        steps = walker.walk_va(mem, cpu, va, phys_bits=args.phys_bits)
        if not steps:
            print("  paging is off", file=out)
        for s in steps:
            print(f"  {s.level:<3} table {s.table:#x} [{s.index}] entry {s.entry:#x} "
                  f"at {s.entry_addr:#x}: {s.what}", file=out)
        if steps and steps[-1].pa is not None:
            leaf = next((lf for lf in _leaves_at(walk, va)), None)
            perms = ""
            if leaf is not None:
                perms = (" r" + ("w" if leaf.writable else "-") + ("x" if leaf.executable else "-")
                         + (" user" if leaf.user else " supervisor"))
            print(f"  -> PA {steps[-1].pa:#x}{perms}", file=out)
    if args.json:
        snap = Snapshot.from_walk(walk, "walk", provenance=_provenance(gdb, args))
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


def _leaves_at(walk: walker.Walk, va: int):
    runs = walk.leaves.runs if isinstance(walk.leaves, walker.Leaves) else None
    if runs is None:
        yield from (lf for lf in walk.leaves if lf.va <= va < lf.va + lf.size)
        return
    for r in runs:
        if r[0] <= va < r[0] + r[2] * r[3]:
            k = (va - r[0]) // r[3]
            yield walker.Leaves._leaf(r, k)


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
# entry point
# --------------------------------------------------------------------------------------

SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_walk]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptharness",
        description="QEMU-backed validation of i386 early page-table construction.")
    parser.add_argument("--version", action="version", version=f"ptharness {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("ptharness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (CliError, MiError, QemuError, oracle.OracleError, SnapshotError, OSError,
            ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"ptharness: error: {first}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
