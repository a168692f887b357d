"""The validation matrix: one test case per scenario, on real QEMU and gdb.

Every check layer (model, invariants, oracle, content, guest) must pass for the
patched guest. `--matrix full` selects the whole table; `-k ID` one scenario."""
import pytest

pytestmark = pytest.mark.qemu


def test_scenario(scenario, run_scenario):
    result = run_scenario(scenario)
    if not result.met_expectation:
        pytest.fail(result.report, pytrace=False)
