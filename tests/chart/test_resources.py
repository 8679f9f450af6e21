"""The chart's default requests and limits cover what docs/performance.md measured.

The figures come from ``make bench`` (bench/memory.py and friends); when a new run moves
them, this test says which default no longer fits.
"""

from __future__ import annotations

import re

from tests.chart.render import render
from tests.helpers import REPO

PERFORMANCE = REPO / "docs" / "performance.md"
MI = 1024 * 1024


def measured(row_start: str, column: int = 1) -> float:
    """MiB in the given column of the memory table row that starts with ``row_start``."""
    for line in PERFORMANCE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0].startswith(row_start):
            match = re.match(r"([\d.]+) MiB", cells[column])
            assert match, f"docs/performance.md: no MiB figure in {line!r}"
            return float(match.group(1))
    raise AssertionError(f"docs/performance.md has no row starting {row_start!r}: rerun make bench")


def mebibytes(quantity: str) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi)", quantity)
    assert match, f"unexpected quantity {quantity}"
    return int(match.group(1)) * units[match.group(2)]


def resources(component: str) -> dict[str, dict[str, str]]:
    name = f"bgw-bgworker-{component}"
    spec = render().get("Deployment", name)["spec"]["template"]["spec"]
    return spec["containers"][0]["resources"]  # type: ignore[no-any-return]


def test_api_request_covers_its_measured_peak():
    res = resources("api")
    peak = measured("API after the enqueue load")
    assert mebibytes(res["requests"]["memory"]) >= peak * 1.2
    assert mebibytes(res["limits"]["memory"]) >= 2 * peak


def test_worker_request_covers_thumbnails_and_limit_covers_the_largest_image():
    res = resources("worker")
    request, limit = mebibytes(res["requests"]["memory"]), mebibytes(res["limits"]["memory"])
    assert request >= measured("worker, peak (main + pool process peak)") * 1.2
    # The largest image BGWORKER_MAX_PIXELS admits must not get the pool process OOM-killed.
    worst = measured("worker main process, idle") + max(
        measured("50-MP JPEG", 4), measured("50-MP RGB PNG", 4), measured("50-MP RGBA PNG", 4)
    )
    assert limit >= worst * 1.1, f"worker limit {limit} MiB < worst case {worst} MiB + 10%"
