"""The API's keys: a Secret the chart makes (or the operator's), read by the API, the
helm test and Prometheus; never by the workers."""

from __future__ import annotations

import base64

from tests.chart.render import render


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def secret_ref(entry: dict) -> tuple[str, str]:
    ref = entry["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def test_the_chart_makes_the_keys_and_the_api_reads_them():
    out = render({"api": {"serviceMonitor": {"enabled": True}}})
    secret = out.get("Secret", "bgw-bgworker-api-keys")
    for key in ("adminKey", "urlSigningKey"):
        assert len(base64.b64decode(secret["data"][key])) >= 32, key
    api = out.get("Deployment", "bgw-bgworker-api")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(api)
    assert secret_ref(env["BGWORKER_ADMIN_KEY"]) == ("bgw-bgworker-api-keys", "adminKey")
    assert secret_ref(env["BGWORKER_URL_SIGNING_KEY"]) == ("bgw-bgworker-api-keys", "urlSigningKey")
    assert "BGWORKER_AUTH" not in env, "authentication stays on (the default)"
    worker = out.get("Deployment", "bgw-bgworker-worker")["spec"]["template"]["spec"]
    assert "BGWORKER_ADMIN_KEY" not in env_of(worker["containers"][0]), "workers need no key"
    smoke = out.get("Pod", "bgw-bgworker-smoke")
    assert secret_ref(env_of(smoke["spec"]["containers"][0])["BGWORKER_API_KEY"])[1] == "adminKey"
    [monitor] = out.of_kind("ServiceMonitor")
    auth = monitor["spec"]["endpoints"][0]["authorization"]
    assert auth["type"] == "Bearer"
    assert auth["credentials"] == {"name": "bgw-bgworker-api-keys", "key": "adminKey"}


def test_an_existing_secret_replaces_the_generated_one():
    out = render({"auth": {"existingSecret": "my-keys"}})
    assert not out.has("Secret", "bgw-bgworker-api-keys")
    api = out.get("Deployment", "bgw-bgworker-api")["spec"]["template"]["spec"]["containers"][0]
    assert secret_ref(env_of(api)["BGWORKER_ADMIN_KEY"]) == ("my-keys", "adminKey")
