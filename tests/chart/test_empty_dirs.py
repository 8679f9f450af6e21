"""Every emptyDir the chart makes has a sizeLimit (uploads are spooled to the API's /tmp).

Without one, a pod may fill its node's disk: the kubelet then evicts pods at random
instead of the one that filled it. Each emptyDir has its own value, documented in
values.yaml and the schema; volumes a user adds (``*.extraVolumes``) are theirs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.render import VALUE_SETS, render

# Every value set, plus the renders that add emptyDirs of their own.
RENDERS: dict[str, dict[str, Any]] = {
    **VALUE_SETS,
    "acl-off": {"redis": {"acl": {"enabled": False}}},
    "persistence-off-sized": {
        "redis": {"persistence": {"enabled": False, "emptyDirSizeLimit": "3Gi"}},
        "api": {"tmpSizeLimit": "2Gi"},
        "worker": {"tmpSizeLimit": "512Mi"},
        "tests": {"tmpSizeLimit": "32Mi"},
    },
}


def _user_volumes(values: dict[str, Any]) -> set[str]:
    return {v["name"] for part in ("api", "worker", "redis") for v in values[part]["extraVolumes"]}


@pytest.mark.parametrize("name", list(RENDERS))
def test_every_empty_dir_has_a_size_limit(name):
    rendered = render(RENDERS[name])
    theirs = _user_volumes(rendered.values)
    seen = 0
    for pod, _, spec in rendered.pod_specs():
        for volume in spec.get("volumes", []):
            if "emptyDir" not in volume or volume["name"] in theirs:
                continue
            seen += 1
            assert volume["emptyDir"].get("sizeLimit"), f"{name}: {pod} volume {volume['name']}"
    # /tmp of the API, the workers and the test pod, and of the built-in Redis
    assert seen >= (4 if rendered.values["redis"]["enabled"] else 3)


def test_each_empty_dir_takes_its_own_value():
    rendered = render(RENDERS["persistence-off-sized"])
    limits = {
        (pod, v["name"]): v["emptyDir"]["sizeLimit"]
        for pod, _, spec in rendered.pod_specs()
        for v in spec["volumes"]
        if "emptyDir" in v
    }
    assert limits == {
        ("bgw-bgworker-api", "tmp"): "2Gi",
        ("bgw-bgworker-worker", "tmp"): "512Mi",
        ("bgw-bgworker-redis", "tmp"): "16Mi",
        ("bgw-bgworker-redis", "data"): "3Gi",
        ("bgw-bgworker-smoke", "tmp"): "32Mi",
    }


def test_the_api_tmp_holds_many_uploads_at_the_largest_size():
    values = render().values
    assert values["api"]["tmpSizeLimit"] == "1Gi"
    assert 1024**3 // values["config"]["maxUploadBytes"] >= 32
