"""`helm upgrade` with changed redis.persistence.* is refused by the chart, with the way out,
instead of by the API server after half the release is applied (a StatefulSet's
volumeClaimTemplates are immutable).

The chart reads the installed StatefulSet with Helm's `lookup`, which renders empty without
a cluster. These tests render a copy of the chart in which that one `lookup` call is replaced
by the object the API server would return (defaulted fields, canonical quantities), so the
real template logic runs against it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from helm_python import HelmError

from tests.chart.render import CHART, NAMESPACE, chart_copy, render

REDIS = "bgw-bgworker-redis"
LOOKUP = 'lookup "apps/v1" "StatefulSet" .Release.Namespace (include "bgworker.redis.fullname" .)'


def as_installed(values: dict[str, Any] | None = None, size: str | None = None) -> dict[str, Any]:
    """The Redis StatefulSet as the API server returns it after installing with ``values``."""
    sts = copy.deepcopy(render(values).get("StatefulSet", REDIS))
    sts["metadata"]["namespace"] = NAMESPACE
    sts["metadata"]["uid"] = "5f1c0c8e-0000-4000-8000-000000000000"
    for template in sts["spec"].get("volumeClaimTemplates", []):
        template.update(apiVersion="v1", kind="PersistentVolumeClaim", status={"phase": "Pending"})
        template["spec"]["volumeMode"] = "Filesystem"
        if size:  # the canonical spelling the server answers with
            template["spec"]["resources"]["requests"]["storage"] = size
    sts["status"] = {"replicas": 1, "readyReplicas": 1}
    return sts


def render_upgrade(tmp_path: Path, installed: dict[str, Any], values: dict[str, Any]) -> None:
    # A Go raw string: JSON holds no backtick.
    stub = f"(fromJson `{json.dumps(installed)}`)"
    chart = chart_copy(tmp_path, {"templates/redis/statefulset.yaml": (LOOKUP, stub)})
    render(values, chart=chart)


def test_an_upgrade_that_keeps_the_volume_renders(tmp_path):
    render_upgrade(tmp_path, as_installed(), {"config": {"logLevel": "DEBUG"}})


@pytest.mark.parametrize(
    ("installed", "asked"),
    [("8Gi", "8192Mi"), ("1536Mi", "1.5Gi"), ("1500M", "1.5G"), ("8G", "8000000000")],
)
def test_another_spelling_of_the_same_size_is_no_change(tmp_path, installed, asked):
    render_upgrade(
        tmp_path, as_installed(size=installed), {"redis": {"persistence": {"size": asked}}}
    )


CHANGES = {
    "size": ({}, {"redis": {"persistence": {"size": "16Gi"}}}, "size", "8Gi", "16Gi"),
    "size-decimal": ({}, {"redis": {"persistence": {"size": "8G"}}}, "size", "8Gi", "8G"),
    "class": (
        {},
        {"redis": {"persistence": {"storageClassName": "fast"}}},
        "storageClassName",
        '""',
        '"fast"',
    ),
    "off": ({}, {"redis": {"persistence": {"enabled": False}}}, "enabled", "true", "false"),
    "on": (
        {"redis": {"persistence": {"enabled": False}}},
        {"redis": {"persistence": {"enabled": True}}},
        "enabled",
        "false",
        "true",
    ),
}


@pytest.mark.parametrize(
    ("before", "after", "value", "was", "now"), CHANGES.values(), ids=list(CHANGES)
)
def test_a_persistence_change_is_refused_with_the_way_out(tmp_path, before, after, value, was, now):
    with pytest.raises(HelmError) as caught:
        render_upgrade(tmp_path, as_installed(before), {**before, **after})
    message = str(caught.value)
    assert f"redis.persistence.{value}: the Redis StatefulSet {NAMESPACE}/{REDIS}" in message
    assert f"installed with {was}, this upgrade asks for {now}" in message
    assert f"--set redis.persistence.{value}={was}" in message
    assert f"kubectl -n {NAMESPACE} delete statefulset {REDIS} --cascade=orphan" in message
    assert f"data-{REDIS}-0" in message


def test_without_a_cluster_nothing_is_compared():
    """helm template, --dry-run=client and a first install: lookup finds nothing."""
    render({"redis": {"persistence": {"size": "1Ti", "storageClassName": "other"}}})


def test_the_stub_replaces_the_real_lookup():
    """The replaced text is the template's only StatefulSet lookup (chart_copy insists it
    occurs once), so the tests above exercise what `helm upgrade` runs."""
    template = (CHART / "templates" / "redis" / "statefulset.yaml").read_text()
    assert template.count('lookup "apps/v1" "StatefulSet"') == 1
    assert LOOKUP in template
