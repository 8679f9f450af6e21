"""The chaos soak, one CI-sized run per mode: 0 lost, 0 duplicated, 0 wrongly dead-lettered,
every job with its true outcome (tests/chaos/checks.py). ``CHAOS_SEED``, ``CHAOS_SECONDS``,
``CHAOS_JOBS`` resize it; ``CHAOS_WRITE_FIGURES=1`` writes its figures into
docs/performance.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import soak
from tests.chaos.config import CI_MODES, ChaosConfig, process_env, soak_settings, wall_bound
from tests.chaos.workload import LONGEST_SLEEP

# pytest-timeout's limit, a backstop behind the soak's own bounds (which fail with
# evidence); read from the same environment the test will use.
_CONFIG = ChaosConfig.from_env()
_TIMEOUT = wall_bound(_CONFIG, soak_settings(process_env(Path("."))), LONGEST_SLEEP)


@pytest.mark.slow
@pytest.mark.chaos
@pytest.mark.timeout(_TIMEOUT)
@pytest.mark.parametrize("mode", CI_MODES)
def test_soak_loses_nothing_and_buries_nothing(mode: str) -> None:
    result = soak.run_kept(ChaosConfig.from_env(mode=mode))
    assert result.passed, result.report()
