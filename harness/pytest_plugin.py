"""pytest plugin (entry point `pytest11: ptharness`): options, the scenario
parametrisation and the fixture that runs one scenario on real QEMU.

Any test that takes a `scenario` argument becomes one test case per scenario of
the chosen matrix; `run_scenario(scenario)` boots it and returns the Result,
recording JUnit properties and keeping the artifacts.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pytest

from . import scenarios

# The runner pulls in every layer; it is imported only when a scenario runs so
# that a plain unit-test session does not depend on it.
OPTIONS_KEY = pytest.StashKey[dict]()
LAST_RUN_KEY = pytest.StashKey[tuple]()  # (scenario, RunOptions) of a test's last run
PASSED_KEY = pytest.StashKey[bool]()     # the test's call phase passed

# option, environment fallback, default, help
_OPTIONS = (
    ("--qemu", "PTHARNESS_QEMU", "qemu-system-i386", "QEMU binary"),
    ("--gdb", "PTHARNESS_GDB", "gdb", "gdb binary"),
    ("--accel", "PTHARNESS_ACCEL", "tcg", "QEMU accelerator (tcg, or kvm where usable)"),
    ("--matrix", "PTHARNESS_MATRIX", "quick", "scenario matrix: quick or full"),
    ("--artifacts-dir", "PTHARNESS_ARTIFACTS", "artifacts/pytest",
     "where each scenario's logs, snapshots and report go"),
    ("--timeout-factor", "PTHARNESS_TIMEOUT_FACTOR", "1.0",
     "multiply every guest timeout (slow emulation, loaded CI hosts)"),
    ("--guest-variant", "PTHARNESS_VARIANT", "patched",
     "guest build the matrix runs: patched or prepatch"),
    ("--guest-build", "PTHARNESS_GUEST_BUILD", "",
     "directory of <variant>/kernel.elf to boot (default: the checkout's guest/build)"),
    ("--keep-artifacts", "PTHARNESS_KEEP_ARTIFACTS", "all",
     "keep every test's artifacts (all) or only those of failed tests (failed)"),
)


def pytest_addoption(parser):
    group = parser.getgroup("ptharness", "ptharness: i386 page-table validation on QEMU")
    for opt, env, default, text in _OPTIONS:
        group.addoption(opt, default=os.environ.get(env, default),
                        help=f"{text} (env {env}; default {default})")
    group.addoption("--gdb-on-fail", action="store_true",
                    default=os.environ.get("PTHARNESS_GDB_ON_FAIL") == "1",
                    help="when a scenario fails, open it in an interactive gdb at paging_init_done "
                         "(needs a terminal and -n 0; env PTHARNESS_GDB_ON_FAIL=1)")


def pytest_configure(config):
    config.addinivalue_line("markers", "qemu: boots real QEMU (needs qemu, gdb and the guest build)")
    if config.getoption("gdb_on_fail") and _xdist_workers(config):
        raise pytest.UsageError(
            "--gdb-on-fail opens gdb on your terminal, which xdist workers do not have: "
            "run it with -n 0 (e.g. pytest -n 0 --gdb-on-fail -k SCENARIO)")
    if config.getoption("keep_artifacts") not in ("all", "failed"):
        raise pytest.UsageError("--keep-artifacts must be all or failed")
    factor = config.getoption("timeout_factor")
    try:
        ok = math.isfinite(float(factor)) and float(factor) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise pytest.UsageError(f"--timeout-factor {factor!r}: a finite number above 0 "
                                "(PTHARNESS_TIMEOUT_FACTOR likewise)")
    variant = config.getoption("guest_variant")
    if variant not in scenarios.VARIANTS:
        raise pytest.UsageError(f"--guest-variant must be one of {', '.join(scenarios.VARIANTS)}")
    config.stash[OPTIONS_KEY] = dict(
        variant=variant,
        artifacts=Path(config.getoption("artifacts_dir")).resolve(),
        qemu=config.getoption("qemu"),
        gdb=config.getoption("gdb"),
        accel=config.getoption("accel"),
        timeout_factor=float(config.getoption("timeout_factor")),
    )
    if config.getoption("guest_build"):
        config.stash[OPTIONS_KEY]["guest_build"] = Path(config.getoption("guest_build")).resolve()


def pytest_generate_tests(metafunc):
    if "scenario" in metafunc.fixturenames:
        try:
            chosen = scenarios.matrix(metafunc.config.getoption("matrix"))
        except scenarios.UnknownScenario as e:
            raise pytest.UsageError(str(e)) from None
        # Heaviest first, so that xdist's workers finish together (ids stay the same).
        chosen = sorted(chosen, key=lambda s: -s.weight)
        metafunc.parametrize("scenario", chosen, ids=[s.id for s in chosen])


def _xdist_workers(config) -> int:
    n = getattr(config.option, "numprocesses", None)
    if n in (None, 0, "0"):
        return 0
    return 1  # "auto", "logical" or a number: workers without a terminal


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.stash[PASSED_KEY] = rep.passed
    if (rep.when == "call" and rep.failed and item.config.getoption("gdb_on_fail")
            and LAST_RUN_KEY in item.stash):
        _open_gdb(item, *item.stash[LAST_RUN_KEY])


def _open_gdb(item, scenario, opt) -> None:
    """The failing scenario in an interactive gdb, on the real terminal: pytest's
    output capture is suspended meanwhile, as for --pdb."""
    from . import debug
    capman = item.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.suspend_global_capture(in_=True)
    try:
        print(f"\n--gdb-on-fail: opening {scenario.id} at paging_init_done "
              f"(quit gdb to go on with the tests)", flush=True)
        debug.debug(scenario, opt, "done")
    except debug.DebugError as e:
        print(f"--gdb-on-fail: {e}", flush=True)
    finally:
        if capman is not None:
            capman.resume_global_capture()


@pytest.fixture(scope="session")
def ptharness_options(request):
    """runner.RunOptions from the command line / environment."""
    from . import runner
    return runner.RunOptions(**request.config.stash[OPTIONS_KEY])


@pytest.fixture
def run_scenario(ptharness_options, record_property, request):
    """Boot a scenario and return its runner.Result (keyword arguments override
    RunOptions fields, e.g. variant="prepatch")."""

    from . import runner
    made: list[Path] = []

    # Each test its own directory: two tests booting one scenario keep apart, and
    # --keep-artifacts failed removes only what a passing test wrote.
    own = ptharness_options.artifacts / _test_dirname(request.node)

    def run(s: scenarios.Scenario, **overrides) -> "runner.Result":
        opt = runner.RunOptions(**{**ptharness_options.__dict__, "artifacts": own, **overrides})
        result = runner.run(s, opt)
        made.append(result.artifacts)
        request.node.stash[LAST_RUN_KEY] = (s, opt)
        record_property("scenario", s.id)
        record_property("guest_variant", s.guest_variant(opt.variant))
        record_property("guest_build_id", result.build_id)
        record_property("qemu_version", result.qemu_version)
        record_property("artifacts", str(result.artifacts))
        print(result.report)  # lands in JUnit's system-out and pytest's failure section
        return result

    yield run
    if request.config.getoption("keep_artifacts") == "failed" and \
            request.node.stash.get(PASSED_KEY, False):
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        if own.is_dir() and not any(own.iterdir()):
            own.rmdir()


def _test_dirname(node) -> str:
    """`test_matrix.test_scenario-pae-pse-pge-nx-16M`: readable, and free of the
    brackets a shell would glob."""
    name = f"{node.path.stem}.{node.name}" if getattr(node, "path", None) else node.name
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-")
