"""Benchmark of harness.model.predict on head.S-style before-states (medians).

    .venv/bin/python tests/unit/model_bench.py [--repeat N]

The heaviest cases are 896 MiB of lowmem without PSE: one PTE written per page
(229376 of them); under pv=xen every one is a simulated hypercall with its audit.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstate as bs  # noqa: E402
import bootstate_xen as bx  # noqa: E402
from harness.model import KernelConfig, predict  # noqa: E402

M = 1 << 20
CASES = {
    "nopae-128M-pse": dict(pae=False, cpu_pse=True, ram_bytes=128 * M),
    "nopae-128M-4k": dict(pae=False, cpu_pse=False, ram_bytes=128 * M),
    "nopae-1G-4k": dict(pae=False, cpu_pse=False, ram_bytes=1024 * M),
    "pae-128M-4k-nx": dict(pae=True, cpu_pse=False, cpu_nx=True, ram_bytes=128 * M),
    "pae-1G-4k-nx": dict(pae=True, cpu_pse=False, cpu_nx=True, ram_bytes=1024 * M),
    # pv=xen: RAM as the firmware reports it (-m minus 128 KiB); PSE/PGE hidden anyway.
    "xen-nopae-896M": dict(pae=False, pv="xen", ram_bytes=896 * M - 128 * 1024),
    "xen-pae-896M-nx": dict(pae=True, pv="xen", cpu_nx=True, ram_bytes=896 * M - 128 * 1024),
    "xen-pae-128M-pre": dict(pae=True, pv="xen", prepatch=True, ram_bytes=128 * M - 128 * 1024),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    image = bs.image()
    for name, kw in CASES.items():
        config = KernelConfig(cpu_pge=True, cpu_pae=True,
                              **{"cpu_nx": False, "cpu_pse": True, "prepatch": False, **kw})
        if config.pv == "xen":
            before = bx.start_of_day(config.pae, config.ram_bytes >> 12).before
        else:
            before = bs.head_s_state(config.pae)
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            predict(before, config, image)
            times.append(time.perf_counter() - t0)
        print(f"{name:18s} median {statistics.median(times) * 1000:8.1f} ms"
              f"  (min {min(times) * 1000:.1f}, n={args.repeat})")


if __name__ == "__main__":
    main()
