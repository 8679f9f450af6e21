"""externalRedis.sentinel: the pods and KEDA find the primary through Redis Sentinel.

The wiring tests (test_wiring.py) run on the ``external-redis-sentinel`` value set too;
here: what only Sentinel renders, what it refuses, and that without it nothing changed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from helm_python import Chart, HelmError

from tests.chart.render import CHART, VALUE_SETS, Rendered, render
from worker.settings import Settings

WORKER = "bgw-bgworker-worker"
SENTINEL = VALUE_SETS["external-redis-sentinel"]
SENTINEL_KEYS = ("hosts", "masterName", "existingSecret", "existingSecretPasswordKey")


def env_names(rendered: Rendered) -> set[str]:
    names = set(rendered.of_kind("ConfigMap")[0]["data"])
    for _, _, spec in rendered.pod_specs():
        for c in spec["containers"]:
            names.update(var["name"] for var in c.get("env", []))
    return names


def pod_env(rendered: Rendered) -> dict[str, str]:
    """The worker's settings environment, Secrets stood in by placeholders."""
    env = dict(rendered.of_kind("ConfigMap")[0]["data"])
    deployment = rendered.get("Deployment", WORKER)
    for var in deployment["spec"]["template"]["spec"]["containers"][0].get("env", []):
        if var["name"].startswith("BGWORKER_"):
            env[var["name"]] = var.get("value", "from-a-secret")
    if "BGWORKER_REDIS_PASSWORD_FILE" in env:  # a file from the Secret, stood in by one here
        stand_in = Path(tempfile.mkdtemp()) / "password"
        stand_in.write_text("from-a-secret")
        env["BGWORKER_REDIS_PASSWORD_FILE"] = str(stand_in)
    return env


@pytest.mark.parametrize("name", [n for n in VALUE_SETS if n != "external-redis-sentinel"])
def test_without_sentinel_the_render_is_as_before(name):
    rendered = render(VALUE_SETS[name])
    assert not {n for n in env_names(rendered) if "SENTINEL" in n}
    assert "BGWORKER_REDIS_URL" in rendered.of_kind("ConfigMap")[0]["data"]
    for so in rendered.of_kind("ScaledObject"):
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert "address" in trigger["metadata"]
            assert not {"addresses", "sentinelMaster"} & set(trigger["metadata"])
    for auth in rendered.of_kind("TriggerAuthentication"):
        assert [t["parameter"] for t in auth["spec"]["secretTargetRef"]] == ["password"]


def test_sentinel_render_feeds_pods_and_keda_the_same_primary():
    rendered = render(SENTINEL)
    settings = Settings.from_env(pod_env(rendered))
    assert settings.uses_sentinel and settings.redis_sentinel_master == "bgmaster"
    assert settings.redis_sentinel_db == 2
    so = rendered.get("ScaledObject", WORKER)
    triggers = so["spec"]["triggers"]
    assert {t["name"] for t in triggers} == {
        *(f"queue_{q}" for q in rendered.values["worker"]["queues"]),
        "in_flight",
    }
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis-sentinel"
        assert meta["addresses"] == ",".join(SENTINEL["externalRedis"]["sentinel"]["hosts"])
        assert (meta["sentinelMaster"], meta["databaseIndex"]) == ("bgmaster", "2")
        assert trigger["authenticationRef"]["name"] == WORKER
    auth = rendered.get("TriggerAuthentication", WORKER)
    assert {(t["parameter"], t["name"], t["key"]) for t in auth["spec"]["secretTargetRef"]} == {
        ("password", "prod-redis", "password"),
        ("sentinelPassword", "prod-redis-sentinel", "sentinel-password"),
    }


def test_sentinel_without_any_password_has_no_trigger_authentication():
    values: dict[str, Any] = {
        "redis": {"enabled": False},
        "externalRedis": {"sentinel": {"hosts": ["s:26379"], "masterName": "m"}},
    }
    rendered = render(values)
    assert not rendered.of_kind("TriggerAuthentication")
    for trigger in rendered.get("ScaledObject", WORKER)["spec"]["triggers"]:
        assert "authenticationRef" not in trigger
    assert not {n for n in env_names(rendered) if "PASSWORD" in n}
    Settings.from_env(pod_env(rendered))


def test_sentinel_password_alone_still_authenticates_keda():
    values: dict[str, Any] = {
        "redis": {"enabled": False},
        "externalRedis": {
            "sentinel": {"hosts": ["s:26379"], "masterName": "m", "existingSecret": "sp"}
        },
    }
    rendered = render(values)
    auth = rendered.get("TriggerAuthentication", WORKER)
    assert [t["parameter"] for t in auth["spec"]["secretTargetRef"]] == ["sentinelPassword"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"externalRedis": {"sentinel": {"hosts": ["s:26379"], "masterName": "m"}}},
            "needs redis.enabled=false",
        ),
        (
            {"redis": {"enabled": False}, "externalRedis": {"sentinel": {"hosts": ["s:26379"]}}},
            "masterName is required",
        ),
        (
            {
                "redis": {"enabled": False},
                "externalRedis": {
                    "url": "redis://r:6379/0",
                    "sentinel": {"hosts": ["s:26379"], "masterName": "m"},
                },
            },
            "both set",
        ),
        (
            {
                "redis": {"enabled": False},
                "externalRedis": {
                    "tls": True,
                    "sentinel": {"hosts": ["s:26379"], "masterName": "m"},
                },
            },
            "not supported with externalRedis.sentinel",
        ),
    ],
)
def test_sentinel_misconfiguration_is_refused_with_the_fix(values, message):
    with pytest.raises(HelmError, match=message):
        render(values)


@pytest.mark.parametrize("hosts", [["sentinel-0"], ["a:26379,b:26379"], ["s:26379", "s:26379"]])
def test_schema_wants_one_host_port_per_item(hosts):
    with pytest.raises(HelmError, match="sentinel"):
        Chart.load(CHART).validate_schema({"externalRedis": {"sentinel": {"hosts": hosts}}})


def test_the_sentinel_values_are_documented():
    defaults = Chart.load(CHART).values["externalRedis"]["sentinel"]
    readme = (CHART / "README.md").read_text()
    assert set(defaults) == set(SENTINEL_KEYS)
    for key in SENTINEL_KEYS:
        assert f"`externalRedis.sentinel.{key}`" in readme
