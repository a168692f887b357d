"""Many scenarios: run them side by side in worker processes, show progress,
and report the whole matrix (a summary table, a verdict, JUnit XML, JSON).

Each scenario is independent (its own QEMU, gdb and artifacts directory), so
the workers share nothing; processes rather than threads because the model
and the walker are Python and would otherwise queue on the GIL.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

from .qemu import Terminated, die_with_parent
from .runner import Result, RunOptions, run
from .scenarios import Scenario

def worker_init() -> None:
    """A worker dies (SIGTERM: its QEMU and gdb go with it) when the parent does."""
    die_with_parent(signal.SIGTERM)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def run_matrix(chosen: list[Scenario], opt: RunOptions, jobs: int,
               on_result: Callable[[Result, int, int], None] | None = None) -> list[Result]:
    """Run every scenario; results come back in the order given."""
    results: dict[str, Result] = {}
    total = len(chosen)
    if jobs <= 1 or total <= 1:
        for s in chosen:
            r = run(s, opt)
            results[s.id] = r
            if on_result:
                on_result(r, len(results), total)
        return [results[s.id] for s in chosen]
    ctx = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(max_workers=min(jobs, total), mp_context=ctx,
                               initializer=worker_init)
    try:
        # Heaviest first: the last ones to finish are then short ones.
        ordered = sorted(chosen, key=lambda s: -s.weight)
        pending = {pool.submit(run, s, opt) for s in ordered}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                r = f.result()
                results[r.scenario.id] = r
                if on_result:
                    on_result(r, len(results), total)
    except BaseException as e:
        # Ctrl-C reaches the workers too (same process group); a SIGTERM of ours is
        # passed on. Each worker stops its own QEMU and gdb on the way out; queued
        # scenarios are dropped.
        if isinstance(e, Terminated):
            for proc in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(OSError):
                    os.kill(proc.pid, signal.SIGTERM)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [results[s.id] for s in chosen]


# ------------------------------------------------------------------------------------
# Presenting the matrix
# ------------------------------------------------------------------------------------
COLOURS = {"PASS": "32", "FAIL": "31;1", "MISSED": "31;1", "ERROR": "35;1", "FLAGGED": "33"}


def paint(status: str, text: str, colour: bool) -> str:
    """text in the status's colour (green, red, magenta, yellow) on a terminal."""
    return f"\033[{COLOURS[status]}m{text}\033[0m" if colour and status in COLOURS else text


def progress_line(r: Result, done: int, total: int, *, colour: bool = False,
                  eta: float | None = None) -> str:
    width = len(str(total))
    failed = ",".join(r.verdict.failed_checks()) if not r.error else "harness error"
    tail = "" if r.status == "PASS" else f"  [{failed}]"
    left = f"  (about {eta:.0f}s left)" if eta is not None and done < total else ""
    return (f"[{done:>{width}}/{total}] {paint(r.status, f'{r.status:<7}', colour)} "
            f"{r.scenario.id:<44} {r.seconds:6.2f}s{tail}{left}")


def summary(results: list[Result], *, full: bool = False, colour: bool = False) -> str:
    """The table of every scenario that did not simply pass, and a count of the
    passes; `full`: one row per scenario."""
    rows = [("scenario", "guest", "status", "time", "failed checks / expected")]
    shown = results if full else [r for r in results if r.status != "PASS"]
    for r in shown:
        what = ",".join(r.verdict.failed_checks()) or "-"
        if r.error:
            what = "error: " + r.error.splitlines()[0][:60]
        if r.expected_bugs:
            what += f" (bugs {'+'.join(r.expected_bugs)} expected)"
        elif r.scenario.expected_findings():
            what += " (expected: " + ",".join(sorted(rule for _, rule in r.scenario.expected_findings())) + ")"
        rows.append((r.scenario.id, r.scenario.guest_variant(r.options.variant), r.status,
                     f"{r.seconds:.2f}s", what))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(paint(cell, cell.ljust(w), colour) if i == 2 else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    passes = len(results) - len(shown)
    if not full and passes:
        lines.append(f"... and {passes} scenario(s) that passed (--verbose lists them)")
    if len(rows) == 1:
        lines = [f"all {len(results)} scenario(s) passed (--verbose lists them)"]
    return "\n".join(lines)


def exit_code(results: list[Result]) -> int:
    """0 every scenario met its expectation; 1 some scenario's tables (or outcome)
    were wrong; 2 none was wrong but some could not be judged (an ERROR: QEMU,
    gdb or the guest ELF failed, not the page tables). A wrong table outranks an
    ERROR: it is what the run exists to find."""
    if any(not r.met_expectation and not r.error for r in results):
        return 1
    return 2 if any(r.error for r in results) else 0


def verdict(results: list[Result], wall: float, label: str) -> tuple[bool, str]:
    met = [r for r in results if r.met_expectation]
    ok = len(met) == len(results)
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    detail = ", ".join(f"{n} {k.lower()}" for k, n in sorted(counts.items()))
    word = "PASS" if ok else "FAIL"
    return ok, (f"VERDICT: {word} - {len(met)}/{len(results)} scenarios met their expected "
                f"outcome ({detail}) in {wall:.1f}s [{label}]")


def _is_tty(out) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def write_json(results: list[Result], path: Path | str, wall: float) -> None:
    """format ptharness-matrix, version 1 (docs/json.md); path "-" is stdout."""
    doc = {
        "format": "ptharness-matrix", "version": 1, "seconds": round(wall, 3),
        "ok": all(r.met_expectation for r in results),
        "scenarios": [json.loads((r.artifacts / "result.json").read_text())
                      if (r.artifacts / "result.json").exists() else {"scenario": r.scenario.id}
                      for r in results],
    }
    text = json.dumps(doc, indent=1) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(path).write_text(text)


def write_junit(results: list[Result], path: Path, wall: float) -> None:
    """One testcase per scenario with its properties, the report as the failure
    text and the guest's serial log as system-out."""
    failures = sum(1 for r in results if not r.met_expectation and not r.error)
    errors = sum(1 for r in results if r.error)
    suite = ET.Element("testsuite", name="ptharness", tests=str(len(results)),
                       failures=str(failures), errors=str(errors), time=f"{wall:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", name=r.scenario.id,
                             classname=f"ptharness.{r.scenario.guest_variant(r.options.variant)}",
                             time=f"{r.seconds:.3f}")
        props = ET.SubElement(case, "properties")
        for k, v in (("scenario", r.scenario.id),
                     ("guest_variant", r.scenario.guest_variant(r.options.variant)),
                     ("model", r.options.model_variant), ("guest_build_id", r.build_id),
                     ("qemu_version", r.qemu_version), ("status", r.status),
                     ("artifacts", str(r.artifacts))):
            ET.SubElement(props, "property", name=k, value=v)
        if r.error:
            ET.SubElement(case, "error", message=r.error.splitlines()[0]).text = r.report
        elif not r.met_expectation:
            ET.SubElement(case, "failure", message=f"{r.status}: "
                          + ",".join(r.verdict.failed_checks())).text = r.report
        serial = r.artifacts / "serial.log"
        if serial.exists():
            ET.SubElement(case, "system-out").text = serial.read_text(errors="replace")
    ET.indent(suite)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def run_and_report(chosen: list[Scenario], opt: RunOptions, jobs: int, label: str, *,
                   junit: Path | None = None, json_path: Path | None = None,
                   out=sys.stdout, quiet: bool = False, verbose: bool = False) -> int:
    """The main job: progress as scenarios finish, the reports of the ones that
    did not meet their expectation, a summary table and one verdict line.
    Returns the exit code (exit_code)."""
    t0 = time.monotonic()
    print(f"ptharness: {len(chosen)} scenario(s) [{label}], {jobs} at a time; "
          f"artifacts in {opt.artifacts}", file=out, flush=True)

    colour = _is_tty(out) and not os.environ.get("NO_COLOR")

    def show(r: Result, done: int, total: int) -> None:
        elapsed = time.monotonic() - t0
        eta = elapsed / done * (total - done) if done else None
        print(progress_line(r, done, total, colour=colour, eta=eta), file=out, flush=True)

    results = run_matrix(chosen, opt, jobs, None if quiet else show)
    wall = time.monotonic() - t0
    # Everything that is not a plain pass: failures, and what the pre-patch guest
    # was flagged for (expected, but the point of running it).
    shown = [r for r in results if r.status != "PASS"]
    if shown:
        print("\n" + "\n\n".join(r.report for r in shown), file=out)
    print("\n" + summary(results, full=verbose, colour=colour), file=out)
    ok, line = verdict(results, wall, label)
    print("\n" + line, file=out, flush=True)
    if junit:
        write_junit(results, junit, wall)
    if json_path:
        write_json(results, json_path, wall)
    code = exit_code(results)
    if code == 2:
        print("ptharness: some scenarios could not be judged (ERROR): the environment "
              "failed, not the page tables; see their reports", file=out, flush=True)
    return code
