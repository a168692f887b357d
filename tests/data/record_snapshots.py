#!/usr/bin/env python3
"""Re-record the snapshots under tests/data/snapshots/ from real QEMU runs.

    .venv/bin/python tests/data/record_snapshots.py

For each case: the before/after snapshots a run took (gzipped JSON) and the
guest symbols the model and the invariants read, so the check layers can be
tested on real hardware data without QEMU. The recordings are evidence from
the hardware, not from the checks: nothing here runs the model."""
from __future__ import annotations

import gzip
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from harness import model, runner, scenarios  # noqa: E402

OUT = Path(__file__).resolve().parent / "snapshots"
# (scenario id, guest variant): one clean case per mode, the pre-patch bugs A and
# B natively, and bug B under Xen.
CASES = (("pae-nopse-pge-nx-16M", "patched"), ("pae-nopse-pge-nx-16M", "prepatch"),
         ("nopae-nopse-pge-16M", "patched"),
         ("nopae-pse-pge-128M-reservetop64M", "prepatch"),
         ("xen-nopae-16M", "patched"), ("xen-nopae-16M", "prepatch"))
SYMBOLS = model.REQUIRED_SYMBOLS


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ptharness-record-"))
    try:
        for sid, variant in CASES:
            s = scenarios.get(sid)
            opt = runner.RunOptions(variant=variant, artifacts=tmp, oracle=False)
            r = runner.run(s, opt)
            if r.error:
                print(r.report)
                return 1
            dest = OUT / f"{sid}@{variant}"
            dest.mkdir(parents=True, exist_ok=True)
            for label in ("before", "after"):
                data = (r.artifacts / f"{label}.json").read_bytes()
                with gzip.GzipFile(dest / f"{label}.json.gz", "wb", mtime=0) as f:
                    f.write(data)
            from harness import elf
            image = elf.KernelImage.from_elf(runner.kernel_path(s, opt))
            keep = {k: image.symbols[k] for k in SYMBOLS}
            (dest / "symbols.json").write_text(json.dumps(
                {"build_id": image.build_id, "symbols": {k: f"{v:#x}" for k, v in keep.items()}},
                indent=1) + "\n")
            print(f"recorded {dest.relative_to(ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
