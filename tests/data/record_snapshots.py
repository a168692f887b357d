#!/usr/bin/env python3
"""Re-record the snapshots under tests/data/snapshots/ from real QEMU runs.

    .venv/bin/python tests/data/record_snapshots.py

For each case: the snapshots a run took (gzipped JSON: before, after, and at
work_done from CR3 and from swapper_pg_dir; every vCPU's registers and the
late frames' bytes as gdb read them there, in work-machine.json), the
guest symbols the checks read and the first bytes of _text, so the check
layers can be tested on real hardware data without QEMU. The recordings are evidence from
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

from harness import elf, fixmap, model, runner, scenarios  # noqa: E402

OUT = Path(__file__).resolve().parent / "snapshots"
# (scenario id, guest variant): one clean case per mode, the pre-patch bugs A and
# B natively, and bug B under Xen.
CASES = (("pae-nopse-pge-nx-16M", "patched"), ("pae-nopse-pge-nx-16M", "prepatch"),
         ("nopae-nopse-pge-16M", "patched"),
         ("nopae-pse-pge-128M-reservetop64M", "prepatch"),
         ("xen-nopae-16M", "patched"), ("xen-nopae-16M", "prepatch"),
         # the tables at work: APs, highmem kmap, the second pagetable in both modes
         ("pae-pse-pge-nx-1G-smp4", "patched"), ("nopae-pse-pge-128M-smp2", "patched"))
SYMBOLS = model.REQUIRED_SYMBOLS + ("probe_data_page",) + tuple(fixmap.EXPORTED)
LABELS = ("before", "after", "work", "work-swapper")


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ptharness-record-"))
    try:
        for sid, variant in CASES:
            s = scenarios.get(sid)
            opt = runner.RunOptions(variant=variant, artifacts=tmp, oracle=False, all_snapshots=True)
            r = runner.run(s, opt)
            if r.error:
                print(r.report)
                return 1
            dest = OUT / f"{sid}@{variant}"
            dest.mkdir(parents=True, exist_ok=True)
            for label in LABELS:
                data = (r.artifacts / f"{label}.json").read_bytes()
                with gzip.GzipFile(dest / f"{label}.json.gz", "wb", mtime=0) as f:
                    f.write(data)
            shutil.copy(r.artifacts / "work-machine.json", dest / "work-machine.json")
            image = elf.KernelImage.from_elf(runner.kernel_path(s, opt))
            keep = {k: image.symbols[k] for k in SYMBOLS}
            text = image.read_virtual(image.symbols["_text"], 16)
            (dest / "symbols.json").write_text(json.dumps(
                {"build_id": image.build_id, "symbols": {k: f"{v:#x}" for k, v in keep.items()},
                 "text16": text.hex()}, indent=1) + "\n")
            print(f"recorded {dest.relative_to(ROOT)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
