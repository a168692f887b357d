#!/usr/bin/env python3
"""Benchmark the guest: build time from clean and boot-to-exit wall time.

    python3 guest/bench_boot.py [--runs 5] [--jobs 2] [--no-build]

Builds all four variants from clean into a temporary directory (guest/build is
left alone) and boots the issue-2 matrix and the pv=xen matrix (issue 5) in
QEMU (TCG), one boot at a time.
Prints the median and the worst of each case; exits 1 if any boot does not
pass. Medians are the numbers to compare; nothing here is a test.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GUEST = Path(__file__).resolve().parent
VARIANTS = ("nopae-patched", "nopae-prepatch", "pae-patched", "pae-prepatch")


def onoff(flag: bool) -> str:
    return "on" if flag else "off"


def matrix() -> list[tuple[str, str, str, str, str]]:
    """(id, variant, cpu, memory, append) for every case of the issue."""
    cases = []
    for v in VARIANTS[:2]:
        for pse in (True, False):
            for pge in (True, False):
                cpu = f"qemu32,pse={onoff(pse)},pge={onoff(pge)},pae=on,nx=on"
                cases.append((f"{v} pse={onoff(pse)} pge={onoff(pge)}", v, cpu, "128M", ""))
    for v in VARIANTS[2:]:
        for pse in (True, False):
            for nx in (True, False):
                cpu = f"qemu32,pse={onoff(pse)},pge=on,pae=on,nx={onoff(nx)}"
                cases.append((f"{v} pse={onoff(pse)} nx={onoff(nx)}", v, cpu, "128M", ""))
    for v in VARIANTS:
        for mem in ("16M", "128M", "896M", "1G", "3G"):
            cases.append((f"{v} -m {mem} pse=off", v, "qemu32,pse=off,pae=on,nx=on", mem, ""))
        cases.append((f"{v} reservetop=64M", v, "qemu32,pae=on,nx=on", "1G", "reservetop=64M"))
    # pv=xen: the patched builds must pass with zero violations (tests/hw/test_guest_xen.py).
    for v in ("nopae-patched", "pae-patched"):
        for mem in ("16M", "128M", "896M", "1G", "3G"):
            cases.append((f"{v} pv=xen -m {mem}", v, "qemu32,pae=on,nx=on", mem, "pv=xen"))
    for mem in ("128M", "1G"):
        cases.append((f"pae-patched pv=xen -m {mem} nx=off", "pae-patched", "qemu32,pae=on,nx=off",
                      mem, "pv=xen"))
    return cases


def boot_once(kernel: Path, cpu: str, memory: str, append: str, serial: Path) -> tuple[float, int]:
    command = ["qemu-system-i386", "-machine", "pc", "-accel", "tcg", "-cpu", cpu, "-m", memory,
               "-kernel", str(kernel), "-append", append, "-display", "none", "-monitor", "none",
               "-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "-no-reboot"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return time.perf_counter() - start, status


def bench_build(runs: int, jobs: int) -> None:
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="guest-build-") as out:
            start = time.perf_counter()
            subprocess.run(["make", "-s", "-C", str(GUEST), f"-j{jobs}", f"BUILD={out}"],
                           check=True)
            times.append(time.perf_counter() - start)
    print(f"build 4 variants from clean (-j{jobs}): median {statistics.median(times):.2f} s, "
          f"max {max(times):.2f} s over {runs} runs")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="repetitions per case (default 5)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="make -j for the build")
    ap.add_argument("--no-build", action="store_true", help="skip the build benchmark")
    args = ap.parse_args()

    if not args.no_build:
        bench_build(args.runs, args.jobs)
    subprocess.run(["make", "-s", "-C", str(GUEST), f"-j{args.jobs}"], check=True)

    failures = 0
    medians = []
    with tempfile.TemporaryDirectory(prefix="guest-bench-") as tmp:
        serial = Path(tmp) / "serial.log"
        print(f"{'case':40} {'median s':>9} {'max s':>7}")
        for case_id, variant, cpu, memory, append in matrix():
            kernel = GUEST / "build" / variant / "kernel.elf"
            times = []
            for _ in range(args.runs):
                elapsed, status = boot_once(kernel, cpu, memory, append, serial)
                times.append(elapsed)
                if status != 1:
                    failures += 1
                    print(f"  {case_id}: QEMU status {status}, not 1 (pass)", file=sys.stderr)
            medians.append(statistics.median(times))
            print(f"{case_id:40} {medians[-1]:9.3f} {max(times):7.3f}")
    print(f"all {len(medians)} cases: median of medians {statistics.median(medians):.3f} s, "
          f"slowest median {max(medians):.3f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
