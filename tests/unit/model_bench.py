"""Benchmark of harness.model.predict on head.S-style before-states (medians).

    .venv/bin/python tests/unit/model_bench.py [--repeat N]

The heaviest cases are 896 MiB of lowmem without PSE: one PTE written per page
(229376 of them).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bootstate as bs  # noqa: E402
from harness.model import KernelConfig, predict  # noqa: E402

M = 1 << 20
CASES = {
    "nopae-128M-pse": dict(pae=False, cpu_pse=True, ram_bytes=128 * M),
    "nopae-128M-4k": dict(pae=False, cpu_pse=False, ram_bytes=128 * M),
    "nopae-1G-4k": dict(pae=False, cpu_pse=False, ram_bytes=1024 * M),
    "pae-128M-4k-nx": dict(pae=True, cpu_pse=False, cpu_nx=True, ram_bytes=128 * M),
    "pae-1G-4k-nx": dict(pae=True, cpu_pse=False, cpu_nx=True, ram_bytes=1024 * M),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    image = bs.image()
    for name, kw in CASES.items():
        config = KernelConfig(prepatch=False, cpu_pge=True, cpu_pae=True,
                              **{"cpu_nx": False, **kw})
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
