"""pytest plugin (entry point `pytest11: ptharness`): options, the scenario
parametrisation and the fixture that runs one scenario on real QEMU.

Any test that takes a `scenario` argument becomes one test case per scenario of
the chosen matrix; `run_scenario(scenario)` boots it and returns the Result,
recording JUnit properties and keeping the artifacts.
"""
from __future__ import annotations

import dataclasses
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
SUITE_PROPS_KEY = pytest.StashKey[set]()  # suite-level JUnit properties recorded so far
PREFLIGHT_KEY = pytest.StashKey[str]()   # why this test cannot boot QEMU here

# option, environment fallback, default, help
_OPTIONS = (
    ("--qemu", "PTHARNESS_QEMU", "qemu-system-i386", "QEMU binary"),
    ("--gdb-binary", "PTHARNESS_GDB", "gdb", "gdb binary (--gdb: the old spelling)"),
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
        dest = opt[2:].replace("-", "_")
        names = (opt, "--gdb") if opt == "--gdb-binary" else (opt,)  # the same name as the CLI's
        # Unset here: pytest_configure fills in the environment, then the ini, then the default.
        group.addoption(*names, dest=dest, default=None,
                        help=f"{text} (env {env}; ini ptharness_{dest}; default {default!r})")
        parser.addini(f"ptharness_{dest}", f"{text} (--{dest.replace('_', '-')}, env {env})",
                      default="")
    group.addoption("--hw-unavailable", choices=("error", "skip"),
                    default=os.environ.get("PTHARNESS_HW_UNAVAILABLE", "error"),
                    help="when QEMU, gdb or the guest build is missing: one error (default) or "
                         "skip the tests that boot QEMU (env PTHARNESS_HW_UNAVAILABLE)")
    group.addoption("--gdb-on-fail", action="store_true",
                    default=os.environ.get("PTHARNESS_GDB_ON_FAIL") == "1",
                    help="when a scenario fails, open it in an interactive gdb at paging_init_done "
                         "(needs a terminal and -n 0; env PTHARNESS_GDB_ON_FAIL=1)")


def _resolve_options(config) -> None:
    """Each option from the command line, else its environment variable, else the
    ini file's ptharness_<name>, else its default."""
    for opt, env, default, _ in _OPTIONS:
        dest = opt[2:].replace("-", "_")
        if getattr(config.option, dest, None) is None:
            setattr(config.option, dest,
                    os.environ.get(env) or config.getini(f"ptharness_{dest}") or default)


def pytest_configure(config):
    _resolve_options(config)
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
    if config.getoption("accel") not in ("tcg", "kvm"):
        raise pytest.UsageError(f"--accel {config.getoption('accel')!r}: tcg or kvm")
    variant = config.getoption("guest_variant")
    if variant not in scenarios.VARIANTS:
        raise pytest.UsageError(f"--guest-variant must be one of {', '.join(scenarios.VARIANTS)}")
    config.stash[OPTIONS_KEY] = dict(
        variant=variant,
        artifacts=Path(config.getoption("artifacts_dir")).resolve(),
        qemu=config.getoption("qemu"),
        gdb=config.getoption("gdb_binary"),
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


def pytest_collection_modifyitems(session, config, items):
    """One preflight for every test that boots QEMU: QEMU and gdb run, the guest
    builds are there. When not, one reason -- an error by default, or a skip of
    those tests with --hw-unavailable skip -- instead of a traceback per scenario."""
    for item in items:  # a test that boots a scenario boots QEMU, marked or not
        if "run_scenario" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("qemu"):
            item.add_marker(pytest.mark.qemu)
    hw = [item for item in items if item.get_closest_marker("qemu")]
    if not hw:
        return
    reason = _preflight(config)
    if reason is None:
        return
    if config.getoption("hw_unavailable") == "skip":
        mark = pytest.mark.skip(reason=f"ptharness preflight: {reason}")
        for item in hw:
            item.add_marker(mark)
        return
    if hasattr(config, "workerinput"):
        # An xdist worker cannot stop the session: each such test fails at setup
        # with the one-line reason, no traceback.
        for item in hw:
            item.stash[PREFLIGHT_KEY] = reason
        return
    raise pytest.UsageError(f"ptharness preflight: {reason} ({len(hw)} tests boot QEMU; "
                            "--hw-unavailable skip skips them instead)")


def pytest_runtest_setup(item):
    reason = item.stash.get(PREFLIGHT_KEY, None)
    if reason:
        pytest.fail(f"ptharness preflight: {reason}", pytrace=False)


def _preflight(config) -> str | None:
    from . import runner
    problem = runner.binaries_problem(config.getoption("qemu"), config.getoption("gdb_binary"),
                                      30 * float(config.getoption("timeout_factor")))
    if problem:
        return problem
    build = config.stash[OPTIONS_KEY].get("guest_build") or runner.default_guest_build()
    if build is None:
        return "no guest build: pass --guest-build DIR or set PTHARNESS_GUEST_BUILD"
    missing = [v for v in ("nopae-patched", "nopae-prepatch", "pae-patched", "pae-prepatch")
               if not (Path(build) / v / "kernel.elf").is_file()]
    if missing:
        return f"guest build {build} lacks {', '.join(missing)} (run `make -C guest`)"
    return None


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
def run_scenario(ptharness_options, request):
    """Boot a scenario and return its runner.Result (keyword arguments override
    RunOptions fields, e.g. variant="prepatch")."""

    from . import runner
    made: list[Path] = []
    record = _properties(request)

    # Each test its own directory: two tests booting one scenario keep apart, and
    # --keep-artifacts failed removes only what a passing test wrote.
    own = ptharness_options.artifacts / _test_dirname(request.node)

    def run(s: scenarios.Scenario, **overrides) -> "runner.Result":
        opt = dataclasses.replace(ptharness_options, **{"artifacts": own, **overrides})
        result = runner.run(s, opt)
        made.append(result.artifacts)
        request.node.stash[LAST_RUN_KEY] = (s, opt)
        record(s.guest_variant(opt.variant), (
            ("scenario", s.id), ("guest_variant", s.guest_variant(opt.variant)),
            ("guest_build_id", result.build_id), ("qemu_version", result.qemu_version),
            ("artifacts", str(result.artifacts))))
        print(result.report)  # lands in JUnit's system-out and pytest's failure section
        return result

    yield run
    if request.config.getoption("keep_artifacts") == "failed" and \
            request.node.stash.get(PASSED_KEY, False):
        for path in made:
            shutil.rmtree(path, ignore_errors=True)
        if own.is_dir() and not any(own.iterdir()):
            own.rmdir()


def _properties(request):
    """JUnit properties the way the chosen junit_family allows them: per test case
    under xunit1/legacy (what scripts/nightly writes); under the default xunit2,
    whose schema has none per case, the build ids and QEMU version once per suite."""
    if request.config.getini("junit_family") in ("xunit1", "legacy"):
        def per_case(variant, props):
            request.node.user_properties.extend(props)
        return per_case
    suite = request.getfixturevalue("record_testsuite_property")
    seen = request.config.stash.setdefault(SUITE_PROPS_KEY, set())

    def per_suite(variant, props):
        values = dict(props)
        for name, value in ((f"guest_build_id.{variant}", values["guest_build_id"]),
                            ("qemu_version", values["qemu_version"])):
            if value and (name, value) not in seen:
                seen.add((name, value))
                suite(name, value)
    return per_suite


def _test_dirname(node) -> str:
    """`test_matrix.test_scenario-pae-pse-pge-nx-16M`: readable, and free of the
    brackets a shell would glob."""
    name = f"{node.path.stem}.{node.name}" if getattr(node, "path", None) else node.name
    return re.sub(r"[^A-Za-z0-9._=+-]+", "-", name).strip("-")
