"""What every pod of the chart gets (pull secrets, registry, digests, scheduling knobs per
component), and where the pods that share ReadWriteOnce storage may run."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from helm_python import HelmError

from tests.chart.render import VALUE_SETS, Rendered, chart_copy, render

API, WORKER, REDIS, SMOKE = (f"bgw-bgworker-{p}" for p in ("api", "worker", "redis", "smoke"))
COMPONENT = "app.kubernetes.io/component"


def pods(rendered: Rendered) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    return {name: (labels, spec) for name, labels, spec in rendered.pod_specs()}


# --- images -------------------------------------------------------------------------------


def test_image_pull_secrets_reach_every_pod():
    rendered = render(VALUE_SETS["private-registry"])
    assert set(pods(rendered)) == {API, WORKER, REDIS, SMOKE}
    for name, (_, spec) in pods(rendered).items():
        assert spec["imagePullSecrets"] == [{"name": "regcred"}], name
    for name, (_, spec) in pods(render()).items():
        assert "imagePullSecrets" not in spec, name


def image_of(rendered: Rendered, name: str) -> str:
    return pods(rendered)[name][1]["containers"][0]["image"]  # type: ignore[no-any-return]


def test_image_registry_and_digests_apply_to_every_image():
    rendered = render(VALUE_SETS["private-registry"])
    mirror = "registry.example.com/mirror"
    assert image_of(rendered, API) == f"{mirror}/bgworker-api@sha256:{'a' * 64}"
    assert image_of(rendered, WORKER) == f"{mirror}/bgworker-worker@sha256:{'b' * 64}"
    assert image_of(rendered, REDIS) == f"{mirror}/redis@sha256:{'c' * 64}"
    assert image_of(rendered, SMOKE) == image_of(rendered, API)  # the test pod runs the API image
    # The registry alone keeps the tags; the defaults are the plain repositories.
    tagged = render({"global": {"imageRegistry": "mirror.local:5000/"}})
    assert image_of(tagged, API) == "mirror.local:5000/bgworker-api:0.1.0"
    assert image_of(tagged, REDIS) == "mirror.local:5000/redis:7.4"
    defaults = render()
    assert (image_of(defaults, API), image_of(defaults, REDIS)) == (
        "bgworker-api:0.1.0",
        "redis:7.4",
    )


def test_digests_pin_every_image_and_the_tags_are_then_unused():
    """Issue 13 (section 4): the Redis and bgworker images pinned by digest as values. A
    digest set next to a tag wins; no container of any pod is left on a tag."""
    digests = {
        "api": "sha256:" + "d" * 64,
        "worker": "sha256:" + "e" * 64,
        "redis": "sha256:" + "f" * 64,
    }
    values = {part: {"image": {"tag": "floating", "digest": d}} for part, d in digests.items()}
    rendered = render(values)
    for name, (_, spec) in pods(rendered).items():
        for c in spec.get("initContainers", []) + spec["containers"]:
            assert "@sha256:" in c["image"] and "floating" not in c["image"], (name, c["image"])
    assert image_of(rendered, REDIS) == f"redis@{digests['redis']}"
    assert image_of(rendered, WORKER) == f"bgworker-worker@{digests['worker']}"
    assert image_of(rendered, SMOKE) == f"bgworker-api@{digests['api']}"


@pytest.mark.parametrize(
    "digest", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "sha512:" + "a" * 64, "a" * 64]
)
def test_a_digest_that_is_not_sha256_hex_is_refused(digest):
    with pytest.raises(HelmError, match="/redis/image/digest"):
        render({"redis": {"image": {"digest": digest}}})


# --- scheduling knobs and extra volumes per component --------------------------------------


def test_each_component_gets_its_own_priority_volumes_and_annotations():
    rendered = render(VALUE_SETS["private-registry"])
    expected = {API: "web", WORKER: "batch", REDIS: "critical"}
    for name, (_, spec) in pods(rendered).items():
        assert spec.get("priorityClassName") == expected.get(name), name
        volumes = {v["name"] for v in spec["volumes"]}
        if name == REDIS:  # and the volume claim templates
            sts = rendered.get("StatefulSet", REDIS)["spec"]
            volumes |= {t["metadata"]["name"] for t in sts.get("volumeClaimTemplates", [])}
        for mount in spec["containers"][0]["volumeMounts"]:
            assert mount["name"] in volumes, f"{name}: mount {mount['name']} has no volume"
    assert {"ca"} <= {v["name"] for v in pods(rendered)[API][1]["volumes"]}
    assert "/etc/corp-ca" in {
        m["mountPath"] for m in pods(rendered)[WORKER][1]["containers"][0]["volumeMounts"]
    }
    assert "/conf" in {
        m["mountPath"] for m in pods(rendered)[REDIS][1]["containers"][0]["volumeMounts"]
    }
    redis = rendered.get("StatefulSet", REDIS)["spec"]["template"]["metadata"]["annotations"]
    assert redis["backup.example.com/skip"] == "true" and "checksum/redis-secret" in redis
    api = rendered.get("Deployment", API)["spec"]["template"]["metadata"]["annotations"]
    assert api["example.com/team"] == "media" and "checksum/config" in api
    # Nothing of it without values.
    for name, (_, spec) in pods(render()).items():
        assert "priorityClassName" not in spec and "topologySpreadConstraints" not in spec, name


def test_redis_pod_annotations_without_the_generated_secret():
    values = {"redis": {"auth": {"existingSecret": "mine"}, "podAnnotations": {"a": "b"}}}
    meta = render(values).get("StatefulSet", REDIS)["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"a": "b"}
    assert (
        "annotations"
        not in render({"redis": {"auth": {"existingSecret": "mine"}}}).get("StatefulSet", REDIS)[
            "spec"
        ]["template"]["metadata"]
    )


def test_topology_spread_counts_the_component_own_pods():
    rendered = render(VALUE_SETS["rwx-storage-spread"])
    all_pods = pods(rendered)
    for name in (API, WORKER):
        labels, spec = all_pods[name]
        (constraint,) = spec["topologySpreadConstraints"]
        selector = constraint["labelSelector"]["matchLabels"]
        # Filled in from the component's labels: it counts this component's pods only.
        assert [n for n, (lab, _) in all_pods.items() if selector.items() <= lab.items()] == [name]
    given = {"labelSelector": {"matchLabels": {"x": "y"}}, "maxSkew": 1}
    values = {
        "redis": {
            "topologySpreadConstraints": [
                {**given, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}
            ]
        }
    }
    (kept,) = pods(render(values))[REDIS][1]["topologySpreadConstraints"]
    assert kept["labelSelector"] == given["labelSelector"]


# --- ReadWriteOnce storage: one node for every pod that mounts it ---------------------------


def mounts_storage(rendered: Rendered, spec: dict[str, Any]) -> bool:
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    existing = rendered.values["storage"]["existingClaim"]
    return bool(claims & {existing or "bgw-bgworker-storage"})


def required_pod_affinity(spec: dict[str, Any]) -> list[dict[str, Any]]:
    terms = spec.get("affinity", {}).get("podAffinity", {})
    return terms.get("requiredDuringSchedulingIgnoredDuringExecution", [])  # type: ignore[no-any-return]


def term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    """A podAffinityTerm's labelSelector against a pod's labels (same namespace)."""
    selector = term["labelSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        value = labels.get(e["key"])
        if e["operator"] == "In" and value not in e["values"]:
            return False
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
        if e["operator"] == "Exists" and value is None:
            return False
    return True


def schedule(
    order: list[tuple[dict[str, str], dict[str, Any]]], nodes: list[str]
) -> list[str | None]:
    """Place the pods one by one as kube-scheduler's InterPodAffinity filter does for
    required podAffinity with topologyKey kubernetes.io/hostname (plugins/interpodaffinity
    filtering.go satisfyPodAffinity): a node qualifies when it runs a pod matching every
    term; when no pod anywhere matches, a pod that matches its own terms may go anywhere.
    Returns the node of each pod, None for one left Pending."""
    placed: list[tuple[dict[str, str], str]] = []
    result: list[str | None] = []
    for labels, spec in order:
        terms = required_pod_affinity(spec)
        assert all(t["topologyKey"] == "kubernetes.io/hostname" for t in terms)
        matching = [node for other, node in placed if all(term_matches(t, other) for t in terms)]
        if not terms:
            candidates = nodes
        elif matching:
            candidates = sorted(set(matching))
        elif all(term_matches(t, labels) for t in terms):
            candidates = nodes
        else:
            candidates = []
        # Spread on purpose: without the affinity the pods would land on different nodes.
        node = (
            min(candidates, key=lambda n: sum(1 for _, m in placed if m == n))
            if candidates
            else None
        )
        result.append(node)
        if node:
            placed.append((labels, node))
    return result


STORAGE_CASES = {
    "default-rwo": ({}, True),
    "rwx": ({"storage": {"accessModes": ["ReadWriteMany"]}}, False),
    "both-modes": ({"storage": {"accessModes": ["ReadWriteOnce", "ReadWriteMany"]}}, False),
    "existing-claim-rwo": ({"storage": {"existingClaim": "data"}}, True),
    "existing-claim-rwx": (
        {"storage": {"existingClaim": "data", "accessModes": ["ReadWriteMany"]}},
        False,
    ),
    "rwo-autoscaling-off": ({"autoscaling": {"enabled": False}, "worker": {"replicas": 3}}, True),
}


@pytest.mark.parametrize(("values", "same_node"), STORAGE_CASES.values(), ids=list(STORAGE_CASES))
def test_pods_sharing_read_write_once_storage_land_on_one_node(values, same_node):
    rendered = render(values)
    all_pods = pods(rendered)
    sharing = {n: p for n, p in all_pods.items() if mounts_storage(rendered, p[1])}
    assert set(sharing) == {API, WORKER}
    for name, (_, spec) in all_pods.items():
        ours = [
            t for t in required_pod_affinity(spec) if t["topologyKey"] == "kubernetes.io/hostname"
        ]
        if not (same_node and name in sharing):
            assert not ours, f"{name}: no podAffinity expected"
            continue
        (term,) = ours
        # The term selects exactly the pods that mount the claim, this pod included (so the
        # first of them is not left waiting for itself).
        assert {n for n, (lab, _) in all_pods.items() if term_matches(term, lab)} == set(sharing)
        assert "namespaces" not in term and "namespaceSelector" not in term  # own namespace
    # The API's replicas, then KEDA scaling workers from zero; or the workers first (the API
    # being rolled); or interleaved as in a rollout: with the affinity all on one node.
    api, worker = sharing[API], sharing[WORKER]
    replicas = rendered.values["api"]["replicas"]
    for order in (
        [api] * replicas + [worker] * 4,
        [worker] * 3 + [api] * replicas,
        [api, worker] * 3,
    ):
        placed = schedule(order, ["node-a", "node-b", "node-c"])
        assert None not in placed, "a pod would stay Pending"
        assert (len(set(placed)) == 1) == same_node, placed
    # The budget that would block a drain goes with the affinity; NOTES says why.
    assert rendered.has("PodDisruptionBudget", API) != same_node
    assert ("ReadWriteOnce" in rendered.notes and "podAffinity" in rendered.notes) == same_node


def test_the_scheduler_model_notices_a_term_the_first_pod_cannot_satisfy():
    """The model is what makes the test above fail for a wrong term: a pod whose affinity
    selects pods other than itself waits forever when none of them exist."""
    _, spec = pods(render())[WORKER]
    spec = {
        "affinity": {
            "podAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "labelSelector": {"matchLabels": {COMPONENT: "api"}},
                        "topologyKey": "kubernetes.io/hostname",
                    }
                ]
            }
        }
    }
    assert schedule([({COMPONENT: "worker"}, spec)], ["node-a"]) == [None]


def test_user_affinity_is_kept_beside_the_storage_term():
    mine = {
        "labelSelector": {"matchLabels": {"app": "cache"}},
        "topologyKey": "topology.kubernetes.io/zone",
    }
    values = {
        "worker": {
            "affinity": {
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [mine]},
                "nodeAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 1,
                            "preference": {
                                "matchExpressions": [{"key": "spot", "operator": "DoesNotExist"}]
                            },
                        }
                    ]
                },
            }
        }
    }
    affinity = pods(render(values))[WORKER][1]["affinity"]
    terms = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms[0] == mine and terms[1]["topologyKey"] == "kubernetes.io/hostname"
    assert "nodeAffinity" in affinity
    # ... and the user's value is not modified in place (the API's stays without the term).
    assert render(values).values["worker"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ] == [mine]


@pytest.mark.parametrize("mode", ["ReadOnlyMany", "ReadWriteOncePod"])
def test_access_modes_that_cannot_work_are_refused(mode, tmp_path):
    with pytest.raises(HelmError) as caught:
        render({"storage": {"accessModes": [mode]}})
    message = str(caught.value)
    assert "/storage/accessModes/0" in message
    assert "'ReadWriteOnce', 'ReadWriteMany'" in message
    # Without the schema (helm install --skip-schema-validation) the template says why.
    unchecked = chart_copy(tmp_path)
    (unchecked / "values.schema.json").unlink()
    with pytest.raises(HelmError, match=f"storage.accessModes: {mode} cannot work"):
        render({"storage": {"accessModes": [mode]}}, chart=unchecked)
    for combination in itertools.permutations(["ReadWriteOnce", mode]):
        with pytest.raises(HelmError):
            render({"storage": {"accessModes": list(combination)}})
