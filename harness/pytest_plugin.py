"""pytest plugin (entry point `pytest11: ptharness`): options, the scenario
parametrisation and the fixture that runs one scenario on real QEMU.

Any test that takes a `scenario` argument becomes one test case per scenario of
the chosen matrix; `run_scenario(scenario)` boots it and returns the Result,
recording JUnit properties and keeping the artifacts.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import scenarios

# The runner pulls in every layer; it is imported only when a scenario runs so
# that a plain unit-test session does not depend on it.
OPTIONS_KEY = pytest.StashKey[dict]()

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
)


def pytest_addoption(parser):
    group = parser.getgroup("ptharness", "ptharness: i386 page-table validation on QEMU")
    for opt, env, default, text in _OPTIONS:
        group.addoption(opt, default=os.environ.get(env, default),
                        help=f"{text} (env {env}; default {default})")


def pytest_configure(config):
    config.addinivalue_line("markers", "qemu: boots real QEMU (needs qemu, gdb and the guest build)")
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


def pytest_generate_tests(metafunc):
    if "scenario" in metafunc.fixturenames:
        try:
            chosen = scenarios.matrix(metafunc.config.getoption("matrix"))
        except scenarios.UnknownScenario as e:
            raise pytest.UsageError(str(e)) from None
        metafunc.parametrize("scenario", chosen, ids=[s.id for s in chosen])


@pytest.fixture(scope="session")
def ptharness_options(request):
    """runner.RunOptions from the command line / environment."""
    from . import runner
    return runner.RunOptions(**request.config.stash[OPTIONS_KEY])


@pytest.fixture
def run_scenario(ptharness_options, record_property):
    """Boot a scenario and return its runner.Result (keyword arguments override
    RunOptions fields, e.g. variant="prepatch")."""

    from . import runner

    def run(s: scenarios.Scenario, **overrides) -> "runner.Result":
        opt = runner.RunOptions(**{**ptharness_options.__dict__, **overrides})
        result = runner.run(s, opt)
        record_property("scenario", s.id)
        record_property("guest_variant", s.guest_variant(opt.variant))
        record_property("guest_build_id", result.build_id)
        record_property("qemu_version", result.qemu_version)
        record_property("artifacts", str(result.artifacts))
        print(result.report)  # lands in JUnit's system-out and pytest's failure section
        return result

    return run
