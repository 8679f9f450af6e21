"""Render charts/bgworker with Helm's own Go SDK and hand the objects to the tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from helm_python import Chart

from tests.helpers import REPO

CHART = REPO / "charts" / "bgworker"
RELEASE = "bgw"
NAMESPACE = "jobs"

# The value sets users actually install with; every test that checks wiring runs on each.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis-url": {
        "redis": {"enabled": False},
        "externalRedis": {
            "url": "rediss://redis.prod.example:6380/3",
            "existingSecret": "prod-redis",
            "existingSecretPasswordKey": "password",
        },
    },
    "external-redis-host-no-password": {
        "redis": {"enabled": False},
        "externalRedis": {"host": "redis.shared.svc", "port": 6379, "database": 1},
    },
    # A Redis whose primary Sentinel names: redis-sentinel triggers, both passwords.
    "external-redis-sentinel": {
        "redis": {"enabled": False},
        "externalRedis": {
            "database": 2,
            "existingSecret": "prod-redis",
            "existingSecretPasswordKey": "password",
            "sentinel": {
                "hosts": [f"redis-sentinel-{i}.redis-sentinel:26379" for i in range(3)],
                "masterName": "bgmaster",
                "existingSecret": "prod-redis-sentinel",
            },
        },
    },
    "autoscaling-off": {"autoscaling": {"enabled": False}, "worker": {"replicas": 3}},
    "keda-three-queues-no-in-flight": {
        "worker": {"queues": ["low", "critical", "default"]},
        "autoscaling": {
            "countInFlight": False,
            "minReplicaCount": 1,
            "maxReplicaCount": 30,
            "fallback": {"replicas": 3, "failureThreshold": 5},
        },
    },
    "one-queue": {"worker": {"queues": ["critical"], "concurrency": 4}},
    "persistence-off": {"redis": {"persistence": {"enabled": False}}},
    "everything-on": {
        "api": {
            "ingress": {"enabled": True, "className": "nginx", "tls": []},
            "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kps"}},
        },
        "networkPolicy": {"enabled": True},
        "storage": {"existingClaim": "shared-nfs", "accessModes": ["ReadWriteMany"]},
        "redis": {"auth": {"existingSecret": "my-redis", "existingSecretPasswordKey": "pw"}},
        "config": {
            "taskTimeLimits": {"images.thumbnails": [30, 45]},
            "extra": {"BGWORKER_THUMBNAIL_WEBP_METHOD": "4"},
        },
        "worker": {"shutdownTimeout": 600, "terminationGraceMarginSeconds": 30},
    },
    # Several nodes: the storage is ReadWriteMany, the pods spread, the API has its PDB.
    "rwx-storage-spread": {
        "storage": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs"},
        "api": {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "DoNotSchedule",
                }
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "pool", "operator": "In", "values": ["web"]}
                                ]
                            }
                        ]
                    }
                }
            },
        },
        "worker": {
            "topologySpreadConstraints": [
                {
                    "maxSkew": 2,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                }
            ]
        },
    },
    # A private registry: every image from one mirror, pinned by digest, pulled with a secret;
    # priority classes, extra volumes and pod annotations on every component.
    "private-registry": {
        "global": {"imageRegistry": "registry.example.com/mirror"},
        "imagePullSecrets": [{"name": "regcred"}],
        "api": {
            "image": {"digest": "sha256:" + "a" * 64},
            "priorityClassName": "web",
            "podAnnotations": {"example.com/team": "media"},
            "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        },
        "worker": {
            "image": {"digest": "sha256:" + "b" * 64},
            "priorityClassName": "batch",
            "extraVolumes": [{"name": "ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        },
        "redis": {
            "image": {"digest": "sha256:" + "c" * 64},
            "priorityClassName": "critical",
            "podAnnotations": {"backup.example.com/skip": "true"},
            "extraVolumes": [{"name": "conf", "emptyDir": {}}],
            "extraVolumeMounts": [{"name": "conf", "mountPath": "/conf"}],
        },
    },
}


@dataclass
class Rendered:
    """The objects of one render, with look-ups by kind and name."""

    objects: list[dict[str, Any]]
    notes: str
    values: dict[str, Any]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        names = [o["metadata"]["name"] for o in self.of_kind(kind)]
        raise AssertionError(f"no {kind} named {name!r}; there are {names}")

    def has(self, kind: str, name: str) -> bool:
        return any(o["metadata"]["name"] == name for o in self.of_kind(kind))

    def workloads(self) -> Iterator[dict[str, Any]]:
        for kind in ("Deployment", "StatefulSet"):
            yield from self.of_kind(kind)

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
        """(name, pod labels, pod spec) of every pod the chart creates, test pods included."""
        for w in self.workloads():
            template = w["spec"]["template"]
            yield w["metadata"]["name"], template["metadata"]["labels"], template["spec"]
        for pod in self.of_kind("Pod"):
            yield pod["metadata"]["name"], pod["metadata"]["labels"], pod["spec"]


def render(
    values: dict[str, Any] | None = None,
    *,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    chart: Path = CHART,
) -> Rendered:
    manifests = Chart.load(chart).render(values or {}, name=name, namespace=namespace)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    merged = Chart.load(chart).merge_values(values or {})
    return Rendered(objects, notes, merged)


def chart_copy(destination: Path, replace: dict[str, tuple[str, str]] | None = None) -> Path:
    """A copy of the chart under ``destination``, with ``replace`` applied: {template path:
    (old, new)}, each ``old`` found exactly once (so a test cannot pass on a stale edit).
    For what a render cannot reach otherwise: a cluster's answer to ``lookup``, or a render
    without values.schema.json (``helm install --skip-schema-validation``)."""
    copy = destination / "bgworker"
    shutil.copytree(CHART, copy)
    for path, (old, new) in (replace or {}).items():
        file = copy / path
        text = file.read_text()
        assert text.count(old) == 1, f"{path}: {old!r} occurs {text.count(old)} times"
        file.write_text(text.replace(old, new))
    return copy
