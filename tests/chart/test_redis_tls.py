"""TLS to an external Redis: the CA reaches every client, and verification is the default.

The pods get the CA bundle as a file from its Secret (BGWORKER_REDIS_TLS_CA_FILE, which
their settings check reads), KEDA gets the same Secret key as its TriggerAuthentication's
``ca``; only ``externalRedis.tlsInsecure`` turns verification off, for the pods and KEDA
(``unsafeSsl``) together. tests/worker/test_redis_tls.py runs the clients against a real
TLS redis-server.
"""

from __future__ import annotations

from typing import Any

import pytest
from helm_python import HelmError

from tests.chart.render import render
from tests.chart.test_wiring import API, WORKER, container, pod_env
from worker.settings import Settings

TLS_CA: dict[str, Any] = {
    "redis": {"enabled": False},
    "externalRedis": {
        "url": "rediss://redis.prod.example:6380/0",
        "existingSecret": "prod-redis",
        "existingSecretPasswordKey": "password",
        "tlsCA": {"existingSecret": "prod-redis-ca", "key": "ca.pem"},
    },
}


def _with(**external: Any) -> dict[str, Any]:
    return {"redis": {"enabled": False}, "externalRedis": external}


def test_the_ca_secret_reaches_the_pods_as_a_verified_file_and_keda_as_its_ca():
    rendered = render(TLS_CA)
    for name in (API, WORKER):
        c = container(rendered, "Deployment", name)
        pod = rendered.get("Deployment", name)["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == "redis-ca")
        assert volume["secret"]["secretName"] == "prod-redis-ca"
        assert volume["secret"]["items"] == [{"key": "ca.pem", "path": "ca.crt"}]
        settings = Settings.from_env(pod_env(rendered, c))  # the file exists where it says
        assert settings.redis_tls and not settings.redis_tls_insecure
        assert settings.redis_tls_ca_file is not None
    auth = rendered.get("TriggerAuthentication", WORKER)["spec"]["secretTargetRef"]
    assert {"parameter": "ca", "name": "prod-redis-ca", "key": "ca.pem"} in auth
    for trigger in rendered.get("ScaledObject", WORKER)["spec"]["triggers"]:
        assert trigger["metadata"]["enableTLS"] == "true"
        assert "unsafeSsl" not in trigger["metadata"]  # KEDA verifies by default
        assert trigger["authenticationRef"]["name"] == WORKER


def test_a_ca_alone_still_gets_keda_its_trigger_authentication():
    rendered = render(_with(url="rediss://r:6380/0", tlsCA={"existingSecret": "ca"}))
    auth = rendered.get("TriggerAuthentication", WORKER)["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "ca", "name": "ca", "key": "ca.crt"}]


def test_tls_without_a_ca_verifies_against_the_system_cas():
    rendered = render(_with(host="redis.example", tls=True))
    settings = Settings.from_env(pod_env(rendered, container(rendered, "Deployment", API)))
    assert settings.redis_tls and settings.redis_tls_ca_file is None
    assert not settings.redis_tls_insecure
    for trigger in rendered.get("ScaledObject", WORKER)["spec"]["triggers"]:
        assert "unsafeSsl" not in trigger["metadata"]


def test_insecure_is_explicit_and_applies_to_pods_and_keda_alike():
    rendered = render(_with(host="redis.example", tls=True, tlsInsecure=True))
    for name in (API, WORKER):
        settings = Settings.from_env(pod_env(rendered, container(rendered, "Deployment", name)))
        assert settings.redis_tls_insecure
    for trigger in rendered.get("ScaledObject", WORKER)["spec"]["triggers"]:
        assert trigger["metadata"]["unsafeSsl"] == "true"


@pytest.mark.parametrize(
    ("external", "message"),
    [
        ({"host": "r", "tlsCA": {"existingSecret": "ca"}}, "externalRedis.tlsCA needs TLS"),
        ({"host": "r", "tlsInsecure": True}, "externalRedis.tlsInsecure needs TLS"),
        (
            {"host": "r", "tls": True, "tlsInsecure": True, "tlsCA": {"existingSecret": "ca"}},
            "both set",
        ),
    ],
)
def test_tls_values_that_cannot_work_are_refused(external, message):
    with pytest.raises(HelmError, match=message):
        render(_with(**external))


def test_without_tls_values_nothing_tls_is_rendered():
    rendered = render()
    data = rendered.of_kind("ConfigMap")[0]["data"]
    assert not {k for k in data if "TLS" in k}
    for _, _, spec in rendered.pod_specs():
        assert "redis-ca" not in {v["name"] for v in spec.get("volumes", [])}
