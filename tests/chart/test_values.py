"""values.yaml documents every value; values.schema.json turns a wrong value into an error."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from helm_python import Chart, HelmError

from tests.chart.render import CHART, render

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z][\w.-]*):(?P<rest>.*)$")


@dataclass
class Node:
    key: str
    indent: int
    documented: bool
    children: list[Node] = field(default_factory=list)

    def undocumented(self, path: str = "") -> list[str]:
        here = f"{path}.{self.key}" if path else self.key
        if self.documented:
            return []  # what is under a documented value is that value's content
        if not self.children:
            return [here]
        return [p for c in self.children for p in c.undocumented(here)]


def values_tree() -> list[Node]:
    roots: list[Node] = []
    stack: list[Node] = []
    documented = False
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            documented = True
            continue
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            if not stripped.startswith("#"):
                documented = False if stripped else documented
            continue
        match = KEY.match(line)
        if not match:
            continue
        node = Node(match["key"], len(match["indent"]), documented)
        documented = False
        while stack and stack[-1].indent >= node.indent:
            stack.pop()
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)
    return roots


def test_every_value_has_a_comment():
    roots = values_tree()
    assert len(roots) > 10
    missing = [p for r in roots for p in r.undocumented()]
    assert not missing, f"values.yaml: add a '# --' comment to {missing}"


def test_the_comment_check_notices_a_missing_comment(monkeypatch):
    text = (
        (CHART / "values.yaml")
        .read_text()
        .replace("  # -- Fewest worker pods.", "  # Fewest worker pods.")
    )
    monkeypatch.setattr(type(CHART / "x"), "read_text", lambda self: text)
    missing = [p for r in values_tree() for p in r.undocumented()]
    assert missing == ["autoscaling.minReplicaCount"]


BAD_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"autoscalling": {"enabled": False}}, "autoscalling"),
    ({"worker": {"replicas": "two"}}, "/worker/replicas"),
    ({"worker": {"queues": ["urgent"]}}, "/worker/queues/0"),
    ({"worker": {"queues": []}}, "/worker/queues"),
    ({"worker": {"shutdownTimeout": 0}}, "/worker/shutdownTimeout"),
    ({"worker": {"terminationGraceMarginSeconds": 2}}, "/worker/terminationGraceMarginSeconds"),
    ({"worker": {"concurency": 2}}, "concurency"),
    ({"autoscaling": {"minReplicaCount": -1}}, "/autoscaling/minReplicaCount"),
    ({"autoscaling": {"listLength": "5"}}, "/autoscaling/listLength"),
    ({"config": {"thumbnailQuality": 101}}, "/config/thumbnailQuality"),
    ({"config": {"logLevel": "verbose"}}, "/config/logLevel"),
    ({"config": {"extra": {"REDIS_URL": "x"}}}, "'REDIS_URL' does not match pattern"),
    ({"redis": {"appendfsync": "no"}}, "/redis/appendfsync"),
    ({"storage": {"size": "ten gigs"}}, "/storage/size"),
    ({"externalRedis": {"url": "redis://:hunter2@redis:6379/0"}}, "/externalRedis/url"),
    ({"api": {"service": {"type": "Loadbalancer"}}}, "/api/service/type"),
    ({"api": {"serviceMonitor": {"interval": "30 seconds"}}}, "/api/serviceMonitor/interval"),
    ({"fullnameOverride": "My_Jobs"}, "/fullnameOverride"),
    ({"nameOverride": "n" * 64}, "/nameOverride"),
    ({"enableServiceLinks": "false"}, "/enableServiceLinks"),
    ({"api": {"image": {"digest": "3f4e"}}}, "/api/image/digest"),
    ({"redis": {"image": {"digest": "sha256:XYZ"}}}, "/redis/image/digest"),
    ({"global": {"imageRegistry": "https://registry.example.com"}}, "/global/imageRegistry"),
    ({"worker": {"extraVolumeMounts": [{"name": "ca"}]}}, "/worker/extraVolumeMounts/0"),
    (
        {"redis": {"topologySpreadConstraints": [{"maxSkew": 1}]}},
        "/redis/topologySpreadConstraints/0",
    ),
    ({"redis": {"podAnotations": {}}}, "podAnotations"),
    ({"storage": {"accessModes": ["ReadWriteOnce", "ReadWriteOnce"]}}, "/storage/accessModes"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_bad_values_and_says_where(values, where):
    with pytest.raises(HelmError) as caught:
        Chart.load(CHART).validate_schema(values)
    assert where in str(caught.value)
    # `helm install` runs the same check before it renders anything.
    with pytest.raises(HelmError):
        render(values)


def test_external_redis_without_an_address_is_refused_with_the_fix():
    with pytest.raises(HelmError, match="externalRedis.host or externalRedis.url is required"):
        render({"redis": {"enabled": False}})


def test_defaults_pass_the_schema():
    Chart.load(CHART).validate_schema({})


# The values issue 12 added: the chart README documents each (values.yaml's comments are
# checked above for every value).
ISSUE_12_VALUES = [
    "enableServiceLinks",
    "global.imageRegistry",
    "imagePullSecrets",
    *(f"{part}.image.digest" for part in ("api", "worker", "redis")),
    *(
        f"{part}.{key}"
        for part in ("api", "worker", "redis")
        for key in (
            "topologySpreadConstraints",
            "priorityClassName",
            "extraVolumes",
            "extraVolumeMounts",
        )
    ),
    "redis.podAnnotations",
    *(
        f"autoscaling.fallback.{key}"
        for key in ("enabled", "failureThreshold", "replicas", "behavior")
    ),
    "storage.accessModes",
    "storage.existingClaim",
]


def test_the_chart_readme_documents_the_new_values():
    readme = (CHART / "README.md").read_text()
    defaults = Chart.load(CHART).values
    for path in ISSUE_12_VALUES:
        node: Any = defaults
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, f"values.yaml has no {path}"
            node = node[part]
        assert f"`{path}`" in readme, f"charts/bgworker/README.md does not document {path}"
