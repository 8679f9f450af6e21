"""Fast checks of the kind suite that run everywhere (not marked e2e): the gate that decides
between running, skipping and failing, and the suite's cluster config and chart values,
rendered through the chart, so a typo is caught here rather than after a 10-minute setup.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helm_python import Chart

from tests.chart.render import Rendered, render
from tests.e2e.kind import k8s
from tests.e2e.kind.conftest import (
    KIND_VAR,
    REQUIRE_VAR,
    enforce,
    gate,
    missing_tools,
    setting,
)
from worker.settings import Settings

# The longest debug.sleep job test_kind.py submits, and the longest one a SIGTERM drill
# expects a stopping worker to finish, seconds.
LONGEST_TEST_JOB = 60
LONGEST_SIGTERM_JOB = 20


def nothing_missing() -> list[str]:
    return []


def kind_and_helm_missing() -> list[str]:
    return ["kind", "helm"]


# --- the gate ------------------------------------------------------------------------------


def test_not_asked_skips_naming_the_command_and_what_is_missing():
    reason = gate({}, kind_and_helm_missing)
    assert reason is not None
    assert "make e2e" in reason and f"{KIND_VAR}=1" in reason
    assert "missing here: kind, helm" in reason
    with pytest.raises(pytest.skip.Exception, match="missing here: kind, helm"):
        enforce({}, kind_and_helm_missing)


def test_not_asked_says_so_even_with_every_tool_present():
    with pytest.raises(pytest.skip.Exception, match="all present here"):
        enforce({}, nothing_missing)


def test_asked_but_tools_missing_skips_with_the_missing_list():
    with pytest.raises(pytest.skip.Exception, match="cannot run.*missing here: kind, helm"):
        enforce({KIND_VAR: "1"}, kind_and_helm_missing)


@pytest.mark.parametrize(
    "env",
    [{KIND_VAR: "1", REQUIRE_VAR: "1"}, {REQUIRE_VAR: "1"}],
    ids=["asked-and-required", "required-but-not-asked"],
)
def test_require_turns_any_skip_into_a_failure(env):
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_VAR}=1 and .*kind, helm"):
        enforce(env, kind_and_helm_missing)


def test_asked_with_everything_present_runs():
    assert gate({KIND_VAR: "1"}, nothing_missing) is None
    enforce({KIND_VAR: "1", REQUIRE_VAR: "1"}, nothing_missing)  # neither skips nor fails


def test_settings_are_read_trimmed():
    assert setting({"E2E_KIND_CLUSTER": " mine "}, "cluster") == "mine"
    assert setting({}, "cluster") == ""


def test_missing_tools_names_absent_binaries_and_a_silent_docker():
    def which_without_kind(tool: str) -> str | None:
        return None if tool == "kind" else f"/usr/bin/{tool}"

    missing = missing_tools(which=which_without_kind, docker_ok=lambda: True, env={})
    assert "kind" in missing and "helm" not in missing and "docker" not in missing
    missing = missing_tools(which=lambda tool: f"/usr/bin/{tool}", docker_ok=lambda: False, env={})
    assert any("docker info" in m for m in missing), missing
    # No binary at all: docker is reported once, as absent, without asking a daemon.
    missing = missing_tools(which=lambda tool: None, docker_ok=pytest.fail, env={})
    assert missing[:4] == ["docker", "kind", "kubectl", "helm"]


def test_a_given_cluster_needs_no_kind():
    """With E2E_KUBECONFIG (the local cluster, or any other) the suite makes no cluster."""

    def which_without_kind(tool: str) -> str | None:
        return None if tool == "kind" else f"/usr/bin/{tool}"

    env = {"E2E_KUBECONFIG": "/some/kubeconfig"}
    assert missing_tools(which=which_without_kind, docker_ok=lambda: True, env=env) == []


# --- cluster config and values -------------------------------------------------------------


def test_cluster_config_is_one_control_plane_node():
    """One node: the storage claim is ReadWriteOnce, so API and workers must share a node."""
    config = yaml.safe_load(k8s.CLUSTER_CONFIG.read_text())
    assert config["kind"] == "Cluster"
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["nodes"] == [{"role": "control-plane"}]


def unknown_keys(values: dict[str, Any], defaults: Any, path: str = "") -> list[str]:
    """Keys of ``values`` that the chart's values.yaml does not have.

    Maps that are empty in the defaults ({} such as config.extra or taskTimeLimits) are
    free-form: what is under them is content, not a key of the chart.
    """
    unknown = []
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        if not isinstance(defaults, dict) or key not in defaults:
            unknown.append(here)
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key]:
            unknown += unknown_keys(value, defaults[key], here)
    return unknown


def chart_defaults() -> dict[str, Any]:
    return yaml.safe_load((k8s.CHART / "values.yaml").read_text())  # type: ignore[no-any-return]


def suite_values_file() -> dict[str, Any]:
    return yaml.safe_load(k8s.VALUES.read_text())  # type: ignore[no-any-return]


def test_values_use_only_keys_the_chart_has():
    assert unknown_keys(suite_values_file(), chart_defaults()) == []
    # ... and the walk does see a misspelt key, at any depth.
    assert unknown_keys({"autoscaling": {"maxReplicas": 4}}, chart_defaults()) == [
        "autoscaling.maxReplicas"
    ]
    assert unknown_keys({"worker": {"resources": {"request": {}}}}, chart_defaults()) == [
        "worker.resources.request"
    ]


def install_values() -> dict[str, Any]:
    """What `helm install` gets: the values file plus the image --set-string pairs."""
    return k8s.merge(suite_values_file(), k8s.nested(k8s.image_values(k8s.DEFAULT_IMAGES)))


def test_install_values_pass_the_chart_schema():
    Chart.load(k8s.CHART).validate_schema(install_values())


def test_image_values_split_repository_and_tag():
    assert k8s.image_values(k8s.DEFAULT_IMAGES) == {
        "api.image.repository": "bgworker-api",
        "api.image.tag": "e2e",
        "worker.image.repository": "bgworker-worker",
        "worker.image.tag": "e2e",
    }
    args = k8s.release_args(k8s.DEFAULT_IMAGES)
    assert args[:2] == [k8s.RELEASE, str(k8s.CHART)]
    assert "--set-string" in args and "worker.image.tag=e2e" in args


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    return render(install_values(), name=k8s.RELEASE, namespace=k8s.NAMESPACE)


def container(rendered: Rendered, kind: str, name: str) -> dict[str, Any]:
    return rendered.get(kind, name)["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def env_of(rendered: Rendered, c: dict[str, Any]) -> dict[str, str]:
    """A container's environment: its ConfigMaps, then its own variables."""
    env: dict[str, str] = {}
    for source in c.get("envFrom", []):
        env.update(rendered.get("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        env[var["name"]] = var.get("value", "<from a secret>")
    return env


def labels_match(selector: str, labels: dict[str, str]) -> bool:
    pairs = dict(term.split("=", 1) for term in selector.split(","))
    return pairs.items() <= labels.items()


def test_render_has_the_objects_the_suite_names(rendered):
    """Names and selectors hard-coded in k8s.py are what the chart really creates."""
    service = rendered.get("Service", k8s.API_SERVICE)
    assert [p["port"] for p in service["spec"]["ports"]] == [
        k8s.suite_values()["api"]["service"]["port"]
    ]
    assert rendered.has("StatefulSet", k8s.REDIS)
    assert rendered.has("Pod", f"{k8s.FULLNAME}-smoke")  # the helm test hook
    worker = rendered.get("Deployment", k8s.WORKER)
    assert labels_match(k8s.WORKER_SELECTOR, worker["spec"]["template"]["metadata"]["labels"])
    api = rendered.get("Deployment", k8s.API_SERVICE)
    assert not labels_match(k8s.WORKER_SELECTOR, api["spec"]["template"]["metadata"]["labels"])
    for _, labels, _ in rendered.pod_specs():
        assert labels_match(k8s.INSTANCE_SELECTOR, labels)
    scaled = rendered.get("ScaledObject", k8s.SCALED_OBJECT)
    assert scaled["spec"]["scaleTargetRef"]["name"] == k8s.WORKER


def test_render_uses_the_loaded_images_without_pulling(rendered):
    for kind, name, image in [
        ("Deployment", k8s.API_SERVICE, "bgworker-api:e2e"),
        ("Deployment", k8s.WORKER, "bgworker-worker:e2e"),
    ]:
        c = container(rendered, kind, name)
        assert (c["image"], c["imagePullPolicy"]) == (image, "Never")
    smoke = rendered.get("Pod", f"{k8s.FULLNAME}-smoke")["spec"]["containers"][0]
    assert (smoke["image"], smoke["imagePullPolicy"]) == ("bgworker-api:e2e", "Never")


def test_render_scales_fast_between_zero_and_four(rendered):
    spec = rendered.get("ScaledObject", k8s.SCALED_OBJECT)["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 4)
    assert (spec["pollingInterval"], spec["cooldownPeriod"]) == (5, 30)
    assert spec["advanced"]["scalingModifiers"]["target"] == "2"  # listLength
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] == 30


def test_render_gives_workers_debug_tasks_and_short_limits(rendered):
    """debug.sleep exists; every test job fits in the shutdown timeout and the soft limit;
    a job whose worker was SIGKILLed comes back within two minutes; SIGKILL never comes first."""
    worker = container(rendered, "Deployment", k8s.WORKER)
    env = env_of(rendered, worker)
    assert env["BGWORKER_DEBUG_TASKS"] == "1"
    # The worker's own settings check; its password is a file mounted only in the pod.
    mounted = ("BGWORKER_REDIS_PASSWORD_FILE", "BGWORKER_REDIS_USERNAME")
    settings = Settings.from_env({k: v for k, v in env.items() if k not in mounted})
    assert settings.debug_tasks
    assert settings.visibility_timeout <= 100
    assert LONGEST_TEST_JOB < settings.soft_time_limit
    assert LONGEST_SIGTERM_JOB < settings.shutdown_timeout == 60
    grace = rendered.get("Deployment", k8s.WORKER)["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace >= settings.shutdown_timeout + 10
    # The API runs the same settings (it validates debug.sleep submissions against them).
    api_env = env_of(rendered, container(rendered, "Deployment", k8s.API_SERVICE))
    assert api_env["BGWORKER_DEBUG_TASKS"] == "1"


def millicores(cpu: str | int | float) -> int:
    text = str(cpu)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def test_render_fits_a_small_machine(rendered):
    """Four workers plus one rollout surge, the API and Redis ask for at most one CPU: with
    KEDA and the control plane (about another CPU) they fit a 2-CPU runner."""
    values = rendered.values
    worker = millicores(
        container(rendered, "Deployment", k8s.WORKER)["resources"]["requests"]["cpu"]
    )
    api = millicores(
        container(rendered, "Deployment", k8s.API_SERVICE)["resources"]["requests"]["cpu"]
    )
    redis = millicores(
        container(rendered, "StatefulSet", k8s.REDIS)["resources"]["requests"]["cpu"]
    )
    workers = values["autoscaling"]["maxReplicaCount"] + 1
    total = workers * worker + values["api"]["replicas"] * api + redis
    assert total <= 1000, f"{total}m requested"


def test_ci_workflow_requires_the_suite_to_run():
    """CI must fail, not skip, on a runner without the tools."""
    workflow = yaml.safe_load((k8s.REPO / ".github" / "workflows" / "e2e.yml").read_text())
    job = next(iter(workflow["jobs"].values()))
    assert job["env"][REQUIRE_VAR] == "1"
    assert any("make e2e" in step.get("run", "") for step in job["steps"])
