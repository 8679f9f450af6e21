"""Contracts between the rendered objects: what points at what really exists and agrees.

Each test runs on every value set in ``VALUE_SETS``: a wiring mistake usually shows up only
with some values (external Redis, one queue, autoscaling off).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from kombu.transport.redis import Channel

from tests.chart.render import NAMESPACE, VALUE_SETS, Rendered, render
from worker.celery_app import create_celery
from worker.cli import _parser
from worker.errors import SettingsError
from worker.settings import Settings

WORKER = "bgw-bgworker-worker"
API = "bgw-bgworker-api"
REDIS = "bgw-bgworker-redis"


@pytest.fixture(params=list(VALUE_SETS), scope="module")
def chart(request: pytest.FixtureRequest) -> Rendered:
    return render(VALUE_SETS[request.param])


def container(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    spec = rendered.get(kind, name)["spec"]["template"]["spec"]
    assert len(spec["containers"]) == 1
    return spec["containers"][0]  # type: ignore[no-any-return]


def service_links(rendered: Rendered) -> dict[str, str]:
    """The variables the kubelet adds for every Service of the namespace when a pod has
    enableServiceLinks on (Kubernetes' default), here for the Services of this release: the
    rule of k8s pkg/kubelet/envvars/envvars.go (FromServices, makeLinkVariables)."""
    env: dict[str, str] = {}
    for svc in rendered.of_kind("Service"):
        ip = svc["spec"].get("clusterIP", "10.96.0.10")
        if ip == "None":  # headless: the kubelet skips Services without a cluster IP
            continue
        prefix = svc["metadata"]["name"].replace(".", "_").replace("-", "_").upper()
        if prefix[0].isdigit():
            prefix = "_" + prefix
        ports = svc["spec"]["ports"]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                name = p["name"].replace(".", "_").replace("-", "_").upper()
                env[f"{prefix}_SERVICE_PORT_{name}"] = str(p["port"])
        for i, p in enumerate(ports):
            proto = p.get("protocol", "TCP")
            url = f"{proto.lower()}://{ip}:{p['port']}"
            if i == 0:
                env[f"{prefix}_PORT"] = url
            port_prefix = f"{prefix}_PORT_{p['port']}_{proto.upper()}"
            env[port_prefix] = url
            env[f"{port_prefix}_PROTO"] = proto.lower()
            env[f"{port_prefix}_PORT"] = str(p["port"])
            env[f"{port_prefix}_ADDR"] = ip
    return env


# The master Service's variables, which the kubelet adds to every pod whatever
# enableServiceLinks says (pkg/kubelet/kubelet_pods.go getServiceEnvVarMap).
KUBERNETES_SERVICE = {
    "KUBERNETES_SERVICE_HOST": "10.96.0.1",
    "KUBERNETES_SERVICE_PORT": "443",
    "KUBERNETES_SERVICE_PORT_HTTPS": "443",
    "KUBERNETES_PORT": "tcp://10.96.0.1:443",
}


# Stand-ins for the files the pods read their secrets from (BGWORKER_*_FILE).
POD_FILES = Path(tempfile.mkdtemp(prefix="bgworker-pod-files-"))


def mounted_file(c: dict[str, Any], pod: dict[str, Any], path: str) -> str:
    """A local stand-in for the file ``path`` of container ``c``, which must be an item of a
    Secret volume mounted there (else the process would start without it)."""
    for mount in c.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
        items = [i["path"] for i in volume["secret"]["items"]]
        assert path[len(prefix) :] in items, f"{path}: not an item of volume {mount['name']}"
        local = POD_FILES / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("a-secret-from-" + volume["secret"]["secretName"])
        return str(local)
    raise AssertionError(f"{path} is in no volume of container {c['name']}")


def pod_env(
    rendered: Rendered, c: dict[str, Any], pod: dict[str, Any] | None = None
) -> dict[str, str]:
    """The environment a container starts with: the service links the kubelet adds (unless
    the pod turns them off), its ConfigMaps, then its own env. A ``BGWORKER_*_FILE`` points
    at a local stand-in for the file its Secret volume holds."""
    env: dict[str, str] = dict(KUBERNETES_SERVICE)
    if pod is None:
        pod = next(spec for _, _, spec in rendered.pod_specs() if c in spec["containers"])
    if pod.get("enableServiceLinks", True):
        env.update(service_links(rendered))
    for source in c.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = f"<secret {ref['name']}/{ref['key']}>"
    for name, value in env.items():
        if name.startswith("BGWORKER_") and name.endswith("_FILE"):
            env[name] = mounted_file(c, pod, value)
    return env


def worker_queues(rendered: Rendered) -> list[str]:
    """The queues the worker container's command consumes, as `bgworker worker` parses them."""
    args = _parser().parse_args(container(rendered, "Deployment", WORKER)["args"])
    assert args.run.__name__ == "cmd_worker"
    return [q for q in args.queues.split(",") if q]


def selected(pods: dict[str, dict[str, str]], selector: dict[str, str]) -> list[str]:
    """Names of the pods whose labels a matchLabels selector matches."""
    return [name for name, labels in pods.items() if selector.items() <= labels.items()]


def redis_service_address(rendered: Rendered) -> tuple[str, int]:
    if rendered.values["redis"]["enabled"]:
        svc = rendered.get("Service", REDIS)
        return f"{svc['metadata']['name']}.{NAMESPACE}.svc", svc["spec"]["ports"][0]["port"]
    ext = rendered.values["externalRedis"]
    if ext["url"]:
        host_port = ext["url"].split("://")[1].split("/")[0].rpartition("@")[2]
        host, _, port = host_port.partition(":")
        return host, int(port or 6379)
    return ext["host"], ext["port"]


def sentinel_values(rendered: Rendered) -> dict[str, Any] | None:
    """externalRedis.sentinel when the render uses it, else None."""
    sentinel: dict[str, Any] = rendered.values["externalRedis"]["sentinel"]
    return sentinel if sentinel["hosts"] and not rendered.values["redis"]["enabled"] else None


def test_pods_get_valid_bgworker_settings(chart):
    """The env each pod starts with passes the same check the processes run at start-up."""
    sentinel = sentinel_values(chart)
    for name in (API, WORKER):
        env = pod_env(chart, container(chart, "Deployment", name))
        settings = Settings.from_env(env)  # raises on an unknown or malformed variable
        if sentinel is None:
            assert not settings.uses_sentinel
            host, port = redis_service_address(chart)
            assert f"{host}:{port}" in settings.redis_url
            continue
        assert "BGWORKER_REDIS_URL" not in env
        hosts = [f"{host}:{port}" for host, port in settings.redis_sentinels]
        assert hosts == sentinel["hosts"]
        assert settings.redis_sentinel_master == sentinel["masterName"]
        assert settings.redis_sentinel_db == chart.values["externalRedis"]["database"]


# Releases whose Services are named bgworker-*: Kubernetes' service links for them are
# BGWORKER_* variables, which the settings check refuses (issue 12).
BGWORKER_RELEASES: dict[str, tuple[str, dict[str, Any]]] = {
    "release-bgworker": ("bgworker", {}),
    "release-bgworker-prod": ("bgworker-prod", {}),
    "fullnameOverride-bgworker": ("jobs", {"fullnameOverride": "bgworker"}),
    "release-bgworker-everything-on": ("bgworker", VALUE_SETS["everything-on"]),
    "release-bgworker-private-registry": ("bgworker", VALUE_SETS["private-registry"]),
}


def bgworker_pods(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every pod whose container runs bgworker (and so its settings
    check): the API, the workers and the helm test pod; not Redis."""
    pods = []
    for name, _, spec in rendered.pod_specs():
        if spec["containers"][0].get("command", ["bgworker"])[0] != "sh":
            pods.append((name, spec))
    assert len(pods) == 3, [n for n, _ in pods]
    return pods


@pytest.mark.parametrize(
    ("release", "values"), BGWORKER_RELEASES.values(), ids=list(BGWORKER_RELEASES)
)
def test_service_links_of_a_bgworker_release_would_fail_the_settings_check(release, values):
    """What the pods would get with Kubernetes' default enableServiceLinks: true."""
    rendered = render(values, name=release)
    links = service_links(rendered)
    ours = sorted(k for k in links if k.startswith("BGWORKER_"))
    # Two Services with a cluster IP (API, Redis), 8 variables each; the headless one has none.
    assert len(ours) == (16 if rendered.values["redis"]["enabled"] else 8), ours
    for name, spec in bgworker_pods(rendered):
        env = pod_env(rendered, spec["containers"][0], {**spec, "enableServiceLinks": True})
        with pytest.raises(SettingsError, match="unknown setting") as refused:
            Settings.from_env(env)
        assert ours[0] in str(refused.value), name


@pytest.mark.parametrize(
    ("release", "values"), BGWORKER_RELEASES.values(), ids=list(BGWORKER_RELEASES)
)
def test_pods_of_a_bgworker_release_start_with_valid_settings(release, values):
    """Every pod turns service links off, so what it starts with passes the settings check:
    `helm install bgworker` does not crash-loop."""
    rendered = render(values, name=release)
    for name, spec in bgworker_pods(rendered):
        assert spec["enableServiceLinks"] is False, name
        env = pod_env(rendered, spec["containers"][0], spec)
        assert not [k for k in env if k.endswith("_SERVICE_HOST") and k.startswith("BGWORKER")]
        Settings.from_env(env)  # raises on an unknown or malformed variable
    # Redis too: no pod of the chart gets them.
    assert all(spec["enableServiceLinks"] is False for _, _, spec in rendered.pod_specs())


def test_service_links_can_be_turned_on_for_other_release_names():
    rendered = render({"enableServiceLinks": True}, name="jobs")
    for _, _, spec in rendered.pod_specs():
        assert spec["enableServiceLinks"] is True
    env = pod_env(rendered, container(rendered, "Deployment", "jobs-bgworker-api"))
    assert "JOBS_BGWORKER_API_SERVICE_HOST" in env
    Settings.from_env(env)


def test_container_commands_are_real_bgworker_commands(chart):
    api = _parser().parse_args(container(chart, "Deployment", API)["args"])
    assert api.run.__name__ == "cmd_api"
    assert api.port == container(chart, "Deployment", API)["ports"][0]["containerPort"]
    smoke = [
        p for p in chart.of_kind("Pod") if p["metadata"]["annotations"]["helm.sh/hook"] == "test"
    ]
    assert len(smoke) == 1
    args = _parser().parse_args(smoke[0]["spec"]["containers"][0]["args"])
    assert args.run.__name__ == "cmd_smoke"
    svc = chart.get("Service", API)
    assert args.url == f"http://{svc['metadata']['name']}:{svc['spec']['ports'][0]['port']}"


def test_scaled_object_targets_the_worker_deployment(chart):
    if not chart.values["autoscaling"]["enabled"]:
        assert not chart.of_kind("ScaledObject")
        assert (
            chart.get("Deployment", WORKER)["spec"]["replicas"]
            == chart.values["worker"]["replicas"]
        )
        return
    so = chart.get("ScaledObject", WORKER)
    ref = so["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert chart.has("Deployment", ref["name"])
    assert ref["name"] == WORKER
    # KEDA owns the count: a replicas field would fight it on every upgrade.
    assert "replicas" not in chart.get("Deployment", WORKER)["spec"]


def test_one_trigger_per_consumed_queue_at_the_redis_address(chart):
    if not chart.values["autoscaling"]["enabled"]:
        return
    so = chart.get("ScaledObject", WORKER)
    triggers = so["spec"]["triggers"]
    sentinel = sentinel_values(chart)
    assert {t["type"] for t in triggers} == {"redis" if sentinel is None else "redis-sentinel"}
    queues = worker_queues(chart)
    waiting = [t["metadata"]["listName"] for t in triggers if t["name"] != "in_flight"]
    assert waiting == [q for q in queues], "one trigger per queue the worker consumes"
    settings = Settings.from_env(pod_env(chart, container(chart, "Deployment", WORKER)))
    for t in triggers:
        meta = t["metadata"]
        if sentinel is None:
            host, port = redis_service_address(chart)
            assert meta["address"] == f"{host}:{port}"
            assert meta["databaseIndex"] == settings.redis_url.rsplit("/", 1)[1]
            assert meta["enableTLS"] == str(settings.redis_url.startswith("rediss://")).lower()
        else:
            # KEDA's redis-sentinel trigger: the same sentinels, primary and database.
            assert "address" not in meta
            assert meta["addresses"].split(",") == [
                f"{host}:{port}" for host, port in settings.redis_sentinels
            ]
            assert meta["sentinelMaster"] == settings.redis_sentinel_master
            assert meta["databaseIndex"] == str(settings.redis_sentinel_db)
            assert meta["enableTLS"] == "false"
        assert meta["listLength"] == str(chart.values["autoscaling"]["listLength"])


def test_queue_triggers_name_the_lists_celery_really_uses(chart):
    """kombu keeps each queue in a list named after it, with no prefix, and running jobs
    in the hash "unacked": exactly the keys the triggers count."""
    settings = Settings.from_env({})
    app = create_celery(settings)
    options = app.conf.broker_transport_options
    assert "global_keyprefix" not in options and "unacked_key" not in options
    assert Channel.unacked_key == "unacked"
    assert not app.conf.task_queue_max_priority and not app.conf.task_default_priority
    if not chart.values["autoscaling"]["enabled"]:
        return
    so = chart.get("ScaledObject", WORKER)
    in_flight = [t for t in so["spec"]["triggers"] if t["name"] == "in_flight"]
    count_in_flight = chart.values["autoscaling"]["countInFlight"]
    assert len(in_flight) == int(count_in_flight)
    for t in in_flight:
        assert t["metadata"]["listName"] == Channel.unacked_key


def test_in_flight_is_summed_with_the_queues_not_maxed(chart):
    if not chart.values["autoscaling"]["enabled"]:
        return
    so = chart.get("ScaledObject", WORKER)
    modifiers = so["spec"]["advanced"].get("scalingModifiers")
    if not chart.values["autoscaling"]["countInFlight"]:
        assert modifiers is None
        return
    names = [t["name"] for t in so["spec"]["triggers"]]
    assert modifiers["formula"] == " + ".join(names)
    assert modifiers["metricType"] == "AverageValue"
    assert modifiers["target"] == str(chart.values["autoscaling"]["listLength"])
    behavior = so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > 0


def redis_password_refs(rendered: Rendered) -> dict[str, tuple[str, str]]:
    """Who reads which Redis password, as (Secret, key): "<pod>:password" for the password
    file of an API or worker pod, "<redis pod>:<user>" for each file of the built-in Redis'
    users, "<pod>:<VAR>" for a variable, "keda" for KEDA's TriggerAuthentication."""
    refs: dict[str, tuple[str, str]] = {}
    for name, _, spec in rendered.pod_specs():
        for volume in spec.get("volumes", []):
            if volume["name"] in {"redis-password", "users"}:
                for item in volume["secret"]["items"]:
                    refs[f"{name}:{item['path']}"] = (volume["secret"]["secretName"], item["key"])
        for c in spec["containers"]:
            for var in c.get("env", []):
                if var["name"] in {"BGWORKER_REDIS_PASSWORD", "REDIS_PASSWORD", "REDISCLI_AUTH"}:
                    ref = var["valueFrom"]["secretKeyRef"]
                    refs[f"{name}:{var['name']}"] = (ref["name"], ref["key"])
    for auth in rendered.of_kind("TriggerAuthentication"):
        for target in auth["spec"]["secretTargetRef"]:
            if target["parameter"] in {"sentinelPassword", "ca"}:
                continue  # the sentinels' own (test_sentinel_password_reaches_pods_and_keda), a CA
            assert target["parameter"] == "password"
            refs["keda"] = (target["name"], target["key"])
    return refs


def test_redis_password_comes_from_one_secret_for_pods_redis_and_keda(chart):
    refs = redis_password_refs(chart)
    auths = [
        a
        for a in chart.of_kind("TriggerAuthentication")
        if any(t["parameter"] == "password" for t in a["spec"]["secretTargetRef"])
    ]
    redis = chart.values["redis"]
    external = chart.values["externalRedis"]
    if not redis["enabled"] and not external["existingSecret"]:
        assert not refs and not auths, "no password anywhere when Redis has none"
        return
    secrets = {secret for secret, _ in refs.values()}
    assert len(secrets) == 1, f"pods, Redis and KEDA must read one Secret; got {refs}"
    (secret_name,) = secrets
    if redis["enabled"] and redis["acl"]["enabled"]:
        # Each client is its own ACL user, and Redis hashes exactly the key it reads.
        clients = {"api": f"{API}:password", "worker": f"{WORKER}:password"}
        if chart.values["autoscaling"]["enabled"]:
            clients["keda"] = "keda"
        for user, who in clients.items():
            assert refs[who] == refs[f"{REDIS}:{user}"], (user, refs)
        assert refs[f"{REDIS}:default"] == refs[f"{REDIS}:REDISCLI_AUTH"]  # the probes
        assert len({refs[f"{REDIS}:{u}"] for u in ("default", "api", "worker", "keda")}) == 4
    else:
        assert len(set(refs.values())) == 1, f"pods, Redis and KEDA must read one key: {refs}"
    if redis["enabled"] and not redis["auth"]["existingSecret"]:
        secret = chart.get("Secret", secret_name)  # the chart makes it: it must hold every key
        assert {key for _, key in refs.values()} <= set(secret["data"])
    if chart.values["autoscaling"]["enabled"]:
        so = chart.get("ScaledObject", WORKER)
        for t in so["spec"]["triggers"]:
            assert chart.has("TriggerAuthentication", t["authenticationRef"]["name"])


def test_sentinel_password_reaches_pods_and_keda(chart):
    """The sentinels' password: one Secret key for the pods and KEDA, and only with Sentinel
    (the settings refuse it without sentinels)."""
    refs = set()
    for _, _, spec in chart.pod_specs():
        for c in spec["containers"]:
            for var in c.get("env", []):
                if var["name"] == "BGWORKER_REDIS_SENTINEL_PASSWORD":
                    ref = var["valueFrom"]["secretKeyRef"]
                    refs.add((ref["name"], ref["key"]))
    keda = {
        (target["name"], target["key"])
        for auth in chart.of_kind("TriggerAuthentication")
        for target in auth["spec"]["secretTargetRef"]
        if target["parameter"] == "sentinelPassword"
    }
    sentinel = sentinel_values(chart)
    if sentinel is None or not sentinel["existingSecret"]:
        assert not refs and not keda
        return
    expected = {(sentinel["existingSecret"], sentinel["existingSecretPasswordKey"])}
    assert refs == expected
    assert keda == (expected if chart.values["autoscaling"]["enabled"] else set())


def test_selectors_match_their_pods(chart):
    pods = {name: labels for name, labels, _ in chart.pod_specs()}
    for w in chart.workloads():
        name = w["metadata"]["name"]
        selector = w["spec"]["selector"]["matchLabels"]
        assert "helm.sh/chart" not in selector and "app.kubernetes.io/version" not in selector
        # Its own pods, and no other workload's.
        assert selected(pods, selector) == [name]
    for svc in chart.of_kind("Service"):
        (pod,) = selected(pods, svc["spec"]["selector"])
        spec = next(s for n, _, s in chart.pod_specs() if n == pod)
        ports = {p["name"] for p in spec["containers"][0]["ports"]}
        assert svc["spec"]["ports"][0]["targetPort"] in ports
    for pdb in chart.of_kind("PodDisruptionBudget"):
        assert selected(pods, pdb["spec"]["selector"]["matchLabels"]) == [API]
    for ingress in chart.of_kind("Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert chart.has("Service", path["backend"]["service"]["name"])


def test_service_monitor_scrapes_the_api_metrics_route(chart):
    from api.routes.ops import routes

    for monitor in chart.of_kind("ServiceMonitor"):
        spec = monitor["spec"]
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        services = {
            s["metadata"]["name"]: s["metadata"]["labels"] for s in chart.of_kind("Service")
        }
        # The API Service and no other (Redis has no /metrics).
        assert selected(services, spec["selector"]["matchLabels"]) == [API]
        (endpoint,) = spec["endpoints"]
        api_ports = {p["name"] for p in chart.get("Service", API)["spec"]["ports"]}
        assert endpoint["port"] in api_ports
        assert endpoint["path"] in {route.path for route in routes}
        assert (
            monitor["metadata"]["labels"].items()
            >= chart.values["api"]["serviceMonitor"]["labels"].items()
        )


def test_network_policy_admits_api_workers_and_keda_only(chart):
    policies = chart.of_kind("NetworkPolicy")
    if not (chart.values["networkPolicy"]["enabled"] and chart.values["redis"]["enabled"]):
        assert not policies
        return
    (policy,) = policies
    pods = {name: labels for name, labels, _ in chart.pod_specs()}
    assert selected(pods, policy["spec"]["podSelector"]["matchLabels"]) == [REDIS]
    peers = policy["spec"]["ingress"][0]["from"]
    admitted = {
        name
        for p in peers
        if "podSelector" in p
        for name in selected(pods, p["podSelector"]["matchLabels"])
    }
    assert admitted == {API, WORKER}
    keda_ns = chart.values["networkPolicy"]["kedaNamespace"]
    namespaces = [p["namespaceSelector"]["matchLabels"] for p in peers if "namespaceSelector" in p]
    assert namespaces == [{"kubernetes.io/metadata.name": keda_ns}]


def test_grace_period_exceeds_the_shutdown_timeout(chart):
    spec = chart.get("Deployment", WORKER)["spec"]["template"]["spec"]
    settings = Settings.from_env(pod_env(chart, spec["containers"][0]))
    # The kubelet's SIGKILL must come after the worker's own deadline and Celery's
    # teardown (measured about 2-3 s), never before.
    assert spec["terminationGracePeriodSeconds"] >= settings.shutdown_timeout + 10
    assert settings.shutdown_timeout == chart.values["worker"]["shutdownTimeout"]


def test_liveness_probe_reads_the_heartbeat_the_worker_writes(chart):
    c = container(chart, "Deployment", WORKER)
    args = _parser().parse_args(c["args"])
    for probe in (c["livenessProbe"], c["startupProbe"]):
        command = probe["exec"]["command"]
        assert command[0] == "bgworker"
        probe_args = _parser().parse_args(command[1:])
        assert probe_args.run.__name__ == "cmd_alive"
        assert probe_args.heartbeat_file == args.heartbeat_file
    # The file lives on the writable /tmp volume (the root filesystem is read-only).
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(args.heartbeat_file).startswith("/tmp/") and "/tmp" in mounts


def test_api_and_workers_share_the_storage_volume(chart):
    claims = set()
    for name in (API, WORKER):
        spec = chart.get("Deployment", name)["spec"]["template"]["spec"]
        c = spec["containers"][0]
        settings = Settings.from_env(pod_env(chart, c))
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(settings.storage_dir))
        volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
        claims.add(volume["persistentVolumeClaim"]["claimName"])
    assert len(claims) == 1
    (claim,) = claims
    existing = chart.values["storage"]["existingClaim"]
    assert claim == existing if existing else chart.has("PersistentVolumeClaim", claim)


def test_pods_are_locked_down(chart):
    for name, _, spec in chart.pod_specs():
        assert spec["automountServiceAccountToken"] is False, name
        pod_sc = spec["securityContext"]
        assert (
            pod_sc["runAsNonRoot"] is True and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
        )
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, name


def test_config_change_rolls_the_pods():
    # A fixed Secret: offline (no cluster to look the generated one up) the password is new
    # on every render.
    fixed = {"redis": {"auth": {"existingSecret": "my-redis"}}}
    before = render(fixed)
    after = render({**fixed, "config": {"thumbnailQuality": 70}})
    for name in (API, WORKER):
        a = before.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        b = after.get("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert a["checksum/config"] != b["checksum/config"]
    # Redis does not restart for a bgworker setting.
    redis_a = before.get("StatefulSet", REDIS)["spec"]["template"]["metadata"]
    redis_b = after.get("StatefulSet", REDIS)["spec"]["template"]["metadata"]
    assert redis_a.get("annotations") == redis_b.get("annotations")


def test_redis_keeps_jobs_rather_than_evicting_them():
    args = " ".join(container(render(), "StatefulSet", REDIS)["args"])
    assert "--maxmemory-policy noeviction" in args
    assert "--appendonly yes" in args
    spec = render().get("StatefulSet", REDIS)["spec"]
    assert spec["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    off = render({"redis": {"persistence": {"enabled": False}}}).get("StatefulSet", REDIS)["spec"]
    assert "volumeClaimTemplates" not in off
    assert (
        "persistence.enabled is false"
        in render({"redis": {"persistence": {"enabled": False}}}).notes
    )


def test_api_keeps_serving_while_endpoints_go_away():
    spec = render().get("Deployment", API)["spec"]["template"]["spec"]
    pause = int(spec["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    # The pause runs inside the grace period: uvicorn still needs its 10 s afterwards.
    assert 0 < pause and pause + 10 < spec["terminationGracePeriodSeconds"]
    off = render({"api": {"preStopSleepSeconds": 0}}).get("Deployment", API)
    assert "lifecycle" not in off["spec"]["template"]["spec"]["containers"][0]
