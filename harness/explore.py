"""`ptharness explore`: scenarios nobody listed, generated with Hypothesis,
run through the same runner and check layers as `check`, and a failure shrunk
to the smallest scenario that still fails.

The strategies lean to where page-table bugs live, computed from each mode's
geometry (never a hand list): reservetop= values that put FIXADDR_TOP, the
fixmap range-init start, FIXADDR_BOOT_START or PKMAP_BASE on a PMD boundary
or a page to either side; RAM and mem= at and around 896 MiB, around MAXMEM
when the top is lowered, and on and next to the large-page steps; plus plain
draws over the rest. What the guest refuses (reservetop= with pv=xen, SMP
under Xen, lowmem below the boot mapping) is never drawn.

Parallel workers each run their own Hypothesis search (seed + worker); each
search runs in rounds of a few examples so the budget is kept. The smallest
failures found are kept in found.json under the artifacts directory, and the
next run replays them first (Hypothesis's own database is not used with a
fixed seed).
"""
from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st
from hypothesis import seed as hypothesis_seed

from . import scenarios, x86
from .matrix import worker_init
from .runner import Result, RunOptions, run
from .scenarios import GiB, MiB, Scenario

ROUND = 8  # examples per round: the budget is looked at between rounds
PAGE = x86.PAGE_SIZE
LOWMEM = 896 * MiB
MAX_RAM = 3 * GiB  # the largest -m drawn (the matrix's largest; QEMU's pc keeps it below 4 GiB)
GRACE = 30.0  # seconds past the budget a shrink may take before it settles on what it has


# ------------------------------------------------------------------------------------
# Strategies
# ------------------------------------------------------------------------------------
def _steps(pae: bool) -> list[int]:
    g = x86.geometry(pae)
    return [g.pmd_size, 2 * g.pmd_size]


@st.composite
def ram_sizes(draw, pae: bool) -> int:
    """QEMU's -m, in MiB: small first (what shrinking goes to), then around
    896 MiB and the large-page steps, then anything up to MAX_RAM."""
    pmd_mib = x86.geometry(pae).pmd_size // MiB
    return draw(st.one_of(
        st.sampled_from([16, 32, 64, 128]),
        st.integers(LOWMEM // MiB - 2 * pmd_mib, LOWMEM // MiB + 2 * pmd_mib),
        st.integers(16 // pmd_mib + 1, MAX_RAM // MiB // pmd_mib).map(lambda k: k * pmd_mib),
        st.integers(16, MAX_RAM // MiB))) * MiB


@st.composite
def mem_limits(draw, pae: bool, ram: int, maxmem: int) -> int | None:
    """mem= (page granular): at and a page around 896 MiB, MAXMEM and the
    large-page steps below the RAM, or any page from 16 MiB up."""
    pmd = x86.geometry(pae).pmd_size
    anchors = sorted({a for a in (LOWMEM, maxmem, ram - pmd, ram // pmd * pmd) if 16 * MiB < a < ram})
    near = [a + d * PAGE for a in anchors for d in (-1, 0, 1) if 16 * MiB <= a + d * PAGE < ram]
    choices = [st.integers(16 * MiB // PAGE, ram // PAGE - 1).map(lambda p: p * PAGE)]
    if near:
        choices.insert(0, st.sampled_from(near))
    return draw(st.one_of(*choices))


@st.composite
def reservetops(draw, pae: bool) -> int:
    """reservetop=: a spec bound on or next to a PMD boundary, or any page count."""
    bounds = list(scenarios.bound_names(pae))
    near = draw(st.integers(0, 64)) * 4 * MiB
    on_boundary = st.builds(lambda b, off: scenarios.boundary_reservetop(pae, b, off, near),
                            st.sampled_from(bounds), st.sampled_from([0, 1, -1]))
    plain = st.integers(1, 256 * MiB // PAGE).map(lambda p: p * PAGE)
    value = draw(st.one_of(on_boundary, plain))
    return value if value > 0 else PAGE


@st.composite
def generated_scenarios(draw, pv: str = "any", build: str = "any") -> Scenario:
    """One scenario from the space the guest accepts (docs/guest-contract.md)."""
    pv = draw(st.sampled_from(["native", "xen"])) if pv == "any" else pv
    pae = draw(st.booleans()) if build == "any" else build == "pae"
    pse, pge = draw(st.booleans()), draw(st.booleans())
    nx = draw(st.booleans()) if pae else False
    ram = draw(ram_sizes(pae))
    cmdline: list[str] = []
    reserve = 0
    if pv == "native" and draw(st.booleans()):
        reserve = draw(reservetops(pae))
        cmdline.append(f"reservetop={reserve >> 10}K")
    if ram > 16 * MiB + PAGE and draw(st.booleans()):
        maxmem = (1 << 32) - x86.PAGE_OFFSET - 128 * MiB - reserve
        limit = draw(mem_limits(pae, ram, maxmem))
        cmdline.append(f"mem={limit >> 10}K")
    if pae and nx and draw(st.booleans()):
        cmdline.append("noexec=off")
    if draw(st.booleans()):
        cmdline.append(f"poison={scenarios.POISON}")
    if pv == "native" and draw(st.booleans()):
        cmdline.append(f"smp={draw(st.integers(2, 4))}")
    s = Scenario(id="", pae=pae, pse=pse, pge=pge, nx=nx, memory=ram, cmdline=tuple(cmdline),
                 pv=pv, sets=frozenset())
    return replace(s, id=s.spec)


# ------------------------------------------------------------------------------------
# What counts as a failure
# ------------------------------------------------------------------------------------
def signature(r: Result) -> tuple[str, ...]:
    """What a failing run says, as sorted check/rule names: one Hypothesis failure
    (one shrink) per distinct signature."""
    if r.error:
        return ("error",)
    return tuple(sorted(f"{c}/{rule}" for c, rule in r.verdict.failed_rules())) or \
        (f"status/{r.status}",)


def failed(r: Result, variant: str) -> bool:
    """The patched guest must meet every expectation; a pre-patch one is being
    searched for its bugs, so anything a check flags counts."""
    if variant == "patched":
        return not r.met_expectation or bool(r.error)
    return bool(r.error) or not r.verdict.ok


KNOWN_BUGS = {("invariants", "nx"): "A", ("invariants", "tables-beyond"): "B",
              ("invariants", "hypervisor-area"): "B", ("hypervisor", "kernel-pmd-replaced"): "C"}


def kernel_facts_bugs(r: Result) -> list[str]:
    """The letters of kernel-facts §6 a failure looks like (from the rules it breaks)."""
    rules = r.verdict.failed_rules()
    return sorted({letter for rule, letter in KNOWN_BUGS.items() if rule in rules})


# ------------------------------------------------------------------------------------
# One worker's search
# ------------------------------------------------------------------------------------
@dataclass
class Found:
    scenario: Scenario
    signature: tuple[str, ...]
    report: str
    bugs: list[str]
    artifacts: str


@dataclass
class WorkerResult:
    runs: int = 0
    found: list[Found] = field(default_factory=list)


class _Failure(AssertionError):
    """Raised for a failing scenario; a subclass per signature keeps distinct
    failures apart while Hypothesis shrinks."""


_FAILURE_TYPES: dict[tuple[str, ...], type] = {}


def _failure_type(sig: tuple[str, ...]) -> type:
    if sig not in _FAILURE_TYPES:
        _FAILURE_TYPES[sig] = type(f"Failure_{len(_FAILURE_TYPES)}", (_Failure,), {})
    return _FAILURE_TYPES[sig]


# Shared with the parent (fork): scenarios booted and failures found, all workers.
_COUNTERS = None


def _round(check: Callable[[Scenario], None], pv: str, build: str, replay: list[Scenario],
           seed: int) -> Callable[[], None]:
    """One Hypothesis test of ROUND examples (the replayed failures first)."""
    test = given(generated_scenarios(pv, build))(check)
    for s in replay:
        test = example(s)(test)
    test = settings(max_examples=ROUND, deadline=None, database=None, derandomize=False,
                    phases=(Phase.explicit, Phase.generate, Phase.shrink),
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=True,
                    print_blob=False)(test)
    return hypothesis_seed(seed)(test)


def search(seed: int, deadline: float, opt: RunOptions, pv: str, build: str,
           replay: list[Scenario]) -> WorkerResult:
    """Rounds of Hypothesis examples until the deadline; each failure shrunk."""
    out = WorkerResult()
    known: dict[tuple[str, ...], Found] = {}
    last: dict[tuple[str, ...], Result] = {}
    # Shrinking tries one scenario again and again: each is booted once. Past the
    # budget (and a grace for the shrink under way) a scenario not booted yet counts
    # as passing, so the shrink settles on the smallest failure it has.
    seen: dict[str, Result | None] = {}

    def check(s: Scenario) -> None:
        if s.spec not in seen:
            if time.monotonic() > deadline + GRACE:
                return
            out.runs += 1
            if _COUNTERS:
                with _COUNTERS[0].get_lock():
                    _COUNTERS[0].value += 1
            r = run(s, opt)
            seen[s.spec] = r if failed(r, opt.variant) else None
            if seen[s.spec] is None:
                shutil.rmtree(r.artifacts, ignore_errors=True)
        r = seen[s.spec]
        if r is None:
            return
        sig = signature(r)
        if sig in known:  # found and shrunk in an earlier round: not again
            return
        last[sig] = r
        raise _failure_type(sig)(r.report)

    n = 0
    while n == 0 or time.monotonic() < deadline:  # the first round (the replay) always
        test = _round(check, pv, build, replay if n == 0 else [], seed * 1000 + n)
        last.clear()
        try:
            test()
        except BaseException as e:  # one failure, or an ExceptionGroup of several
            if not isinstance(e, (_Failure, BaseExceptionGroup)):
                raise
        keep = {r.artifacts for r in last.values()} | {Path(f.artifacts) for f in out.found}
        for r in seen.values():  # the failures shrinking went through: only the smallest stay
            if r is not None and r.artifacts not in keep:
                shutil.rmtree(r.artifacts, ignore_errors=True)
        for sig, r in last.items():  # Hypothesis ran each minimal example last
            f = Found(r.scenario, sig, r.report, kernel_facts_bugs(r), str(r.artifacts))
            known[sig] = f
            out.found.append(f)
            if _COUNTERS:
                with _COUNTERS[1].get_lock():
                    _COUNTERS[1].value += 1
        n += 1
    return out


def _worker_start(counters) -> None:
    global _COUNTERS
    worker_init()
    _COUNTERS = counters


def _worker(seed: int, budget: float, opt: RunOptions, pv: str, build: str,
            replay: list[Scenario]) -> WorkerResult:
    return search(seed, time.monotonic() + budget, opt, pv, build, replay)


# ------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------
def explore(opt: RunOptions, *, seed: int, budget: float, jobs: int, pv: str, out,
            build: str = "any") -> list[Found]:
    t0 = time.monotonic()
    saved = opt.artifacts / "found.json"
    replay = _load_found(saved)
    runs = replace(opt, artifacts=opt.artifacts / "runs")
    print(f"ptharness explore: seed {seed}, budget {budget:.0f}s, {jobs} worker(s), "
          f"guest {opt.variant}, build {build}, pv {pv}; artifacts in {opt.artifacts}",
          file=out, flush=True)
    found: list[Found] = []
    total = 0
    ctx = multiprocessing.get_context("fork")
    counters = (ctx.Value("i", 0), ctx.Value("i", 0))
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_start,
                               initargs=(counters,))
    try:
        pending = {pool.submit(_worker, seed + w, budget, runs, pv, build, replay if w == 0 else [])
                   for w in range(jobs)}
        while pending:
            done, pending = wait(pending, timeout=10, return_when=FIRST_COMPLETED)
            for f in done:
                res = f.result()
                total += res.runs
                found += [x for x in res.found if x.signature not in {y.signature for y in found}]
            left = max(0.0, budget - (time.monotonic() - t0))
            if pending:
                state = "shrinking" if left == 0 else f"{left:.0f}s left"
                print(f"  [{counters[0].value} scenarios, {counters[1].value} failing, {state}]",
                      file=out, flush=True)
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: each worker stops its own
        raise
    pool.shutdown(wait=True)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"variant": opt.variant, "found": [f.scenario.spec for f in found]},
                                indent=1) + "\n")
    seconds = time.monotonic() - t0
    for i, f in enumerate(found, 1):
        print(describe(f, i, len(found), opt), file=out)
    verdict = (f"{len(found)} failing scenario(s)" if found else "no failure")
    print(f"\nEXPLORE: {verdict} in {total} scenarios, {seconds:.1f}s (seed {seed}, "
          f"guest {opt.variant})", file=out, flush=True)
    return found


def _load_found(path: Path) -> list[Scenario]:
    """The failures an earlier run kept (unreadable: none, said nowhere -- a cache)."""
    try:
        specs = json.loads(path.read_text())["found"]
        return [scenarios.from_spec(s) for s in specs]
    except (OSError, ValueError, KeyError, TypeError, scenarios.UnknownScenario):
        return []


def describe(f: Found, i: int, n: int, opt: RunOptions) -> str:
    from .runner import reproduce_command
    s = f.scenario
    bugs = f" -- looks like kernel-facts §6 {'+'.join(f.bugs)}" if f.bugs else ""
    lines = [f"\nFAILURE {i} of {n} (shrunk): {', '.join(f.signature)}{bugs}",
             f"  scenario: {s.spec}",
             f"  reproduce: {reproduce_command(s, opt)}",
             f"  as a matrix scenario: {scenario_line(s)}",
             "  " + f.report.replace("\n", "\n  ")]
    return "\n".join(lines)


def scenario_line(s: Scenario) -> str:
    """The line that makes a found case a permanent scenario in harness/scenarios.py."""
    mem = (f"{s.memory // GiB} * GiB" if s.memory % GiB == 0 else f"{s.memory // MiB} * MiB")
    args = [f'id="{s.spec}"', f"pae={s.pae}", f"pse={s.pse}", f"pge={s.pge}", f"nx={s.nx}",
            f"memory={mem}"]
    if s.cmdline:
        args.append(f"cmdline={s.cmdline!r}")
    if s.pv != "native":
        args.append(f'pv="{s.pv}"')
    return f"Scenario({', '.join(args)})"
