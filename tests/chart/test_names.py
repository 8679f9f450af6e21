"""Every release name Helm accepts installs: 1 to 53 characters, dots and a leading digit
included. The names the chart gives its objects, the labels it puts on them and the names
Kubernetes and KEDA derive from them all pass the checks the API server, the StatefulSet
controller and KEDA's admission webhook apply."""

from __future__ import annotations

import re
import string
from typing import Any

import helm_python
import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from tests.chart.render import Rendered, render

# k8s.io/apimachinery/pkg/util/validation: IsDNS1123Label, IsDNS1035Label, IsDNS1123Subdomain
# and IsValidLabelValue.
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# The StatefulSet controller labels each pod controller-revision-hash=<name>-<hash>, the hash
# being rand.SafeEncodeString of a uint32: up to 10 characters (k8s pkg/controller/history
# ControllerRevisionName, pkg/controller/statefulset setPodRevision).
REVISION_HASH_MAX = 10
# KEDA 2.20 scaledobject_webhook.go verifyName: the ScaledObject name is a label value, and
# the HPA it makes is "keda-hpa-<name>"; both at most 63.
KEDA_HPA_PREFIX = "keda-hpa-"


def release_name(length: int, style: str = "letters") -> str:
    """A release name of ``length`` characters that Helm accepts."""
    body = (string.ascii_lowercase * 3)[:length]
    if style == "contains-chart":  # "<...>bgworker": the fullname is the release name
        body = ("x" * length + "bgworker")[-length:]
    elif style == "digit":  # Helm allows a leading digit; a Service name may not have one
        body = ("7" + body)[:length]
    elif style == "dots":  # Helm allows dots; a Service name may not have them
        body = ".".join(body[i : i + 4] for i in range(0, length, 5))[:length].strip(".")
        body = (body + "z" * length)[:length]
    name = body
    helm_python.validate_release_name(name)  # raises if Helm would refuse it
    assert len(name) == length
    return name


def labels_of(obj: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """(where, labels) of every label map and matchLabels selector inside ``obj``."""
    found: list[tuple[str, dict[str, str]]] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                here = f"{path}.{key}"
                if key in {"labels", "matchLabels"} and isinstance(value, dict):
                    found.append((here, value))
                else:
                    walk(value, here)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")

    walk(obj, f"{obj['kind']}/{obj['metadata']['name']}")
    return found


def name_problems(rendered: Rendered) -> list[str]:
    """What Kubernetes or KEDA would refuse about the names and labels of ``rendered``."""
    problems = []
    seen: set[tuple[str, str]] = set()
    for obj in rendered.objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if (kind, name) in seen:
            problems.append(f"two {kind} objects named {name}")
        seen.add((kind, name))
        if kind == "Service":
            ok = len(name) <= 63 and DNS1035_LABEL.fullmatch(name)
        elif kind == "StatefulSet":
            ok = len(name) + 1 + REVISION_HASH_MAX <= 63 and DNS1123_LABEL.fullmatch(name)
        elif kind == "Pod":  # the pod name is its hostname
            ok = len(name) <= 63 and DNS1123_LABEL.fullmatch(name)
        elif kind == "ScaledObject":
            hpa = KEDA_HPA_PREFIX + name
            ok = len(hpa) <= 63 and DNS1123_LABEL.fullmatch(hpa)
        else:
            ok = len(name) <= 253 and DNS1123_SUBDOMAIN.fullmatch(name)
        if not ok:
            problems.append(f"{kind} name {name!r} ({len(name)} characters)")
        for where, labels in labels_of(obj):
            for key, value in labels.items():
                # A label value is a string: YAML would read a release named "7" as a number.
                if (
                    not isinstance(value, str)
                    or len(value) > 63
                    or not LABEL_VALUE.fullmatch(value)
                ):
                    problems.append(f"{where}: label {key}={value!r}")
    return problems


def reference_problems(rendered: Rendered) -> list[str]:
    """Names one object uses to find another that do not lead to a rendered object."""
    problems = []

    def need(kind: str, name: str, by: str) -> None:
        if not rendered.has(kind, name):
            problems.append(f"{by} names {kind} {name}, which is not rendered")

    for sts in rendered.of_kind("StatefulSet"):
        need("Service", sts["spec"]["serviceName"], "StatefulSet.serviceName")
    for so in rendered.of_kind("ScaledObject"):
        need("Deployment", so["spec"]["scaleTargetRef"]["name"], "ScaledObject")
        for t in so["spec"]["triggers"]:
            if "authenticationRef" in t:
                need("TriggerAuthentication", t["authenticationRef"]["name"], "trigger")
            host = t["metadata"]["address"].split(".")[0]
            need("Service", host, "trigger address")
    for name, _, spec in rendered.pod_specs():
        for c in spec["containers"]:
            for source in c.get("envFrom", []):
                need("ConfigMap", source["configMapRef"]["name"], name)
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                need("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], name)
    for pod in rendered.of_kind("Pod"):
        url = pod["spec"]["containers"][0]["args"][1]
        need("Service", url.split("//")[1].split(":")[0], "the helm test pod")
    return problems


LENGTHS = list(range(1, 54))
SAMPLE = [1, 2, 8, 9, 37, 38, 39, 45, 52, 53]
NAMES = [release_name(n) for n in LENGTHS] + [
    release_name(n, style) for style in ("contains-chart", "digit", "dots") for n in SAMPLE
]


@pytest.mark.parametrize("name", NAMES, ids=[f"{len(n)}-{n}" for n in NAMES])
def test_every_release_name_helm_accepts_gives_valid_names(name):
    rendered = render(name=name)
    assert not name_problems(rendered)
    assert not reference_problems(rendered)
    # Every object is still there: nothing was cut so far that two became one.
    assert len(rendered.objects) == len(render().objects)


@pytest.mark.parametrize("length", [1, 38, 53])
def test_long_and_short_names_validate_against_kubernetes_and_keda(length):
    for style in ("letters", "digit", "dots"):
        rendered = render(name=release_name(length, style))
        for obj in rendered.objects:
            if obj["kind"] == "ScaledObject":
                ScaledObject.model_validate(obj)
            elif obj["kind"] != "TriggerAuthentication":
                kubernetes_validate.validate(obj, "1.37.0", strict=True)


@pytest.mark.parametrize("override", ["bgworker", "b", "a" * 63])
def test_full_name_override_gives_valid_names(override):
    rendered = render({"fullnameOverride": override}, name="any-release")
    assert not name_problems(rendered)
    assert not reference_problems(rendered)
    names = {o["metadata"]["name"] for o in rendered.objects}
    if override == "bgworker":
        assert {"bgworker-api", "bgworker-worker", "bgworker-redis"} <= names


def test_names_that_fit_are_unchanged():
    """Existing releases keep their object names (a rename would orphan the Redis volume)."""
    names = {(o["kind"], o["metadata"]["name"]) for o in render(name="bgw").objects}
    assert ("StatefulSet", "bgw-bgworker-redis") in names
    assert ("Service", "bgw-bgworker-redis-headless") in names
    assert ("Deployment", "bgw-bgworker-worker") in names
    assert ("Pod", "bgw-bgworker-smoke") in names
    assert ("PersistentVolumeClaim", "bgw-bgworker-storage") in names
    long = "a" * 37  # the longest release whose Redis name fits as it is
    assert ("StatefulSet", f"{long}-bgworker-redis") in {
        (o["kind"], o["metadata"]["name"]) for o in render(name=long).objects
    }


def test_two_long_release_names_stay_apart():
    """Cut names keep a hash of the whole name: two releases in one namespace whose names
    differ only at the end do not get the same objects."""
    a, b = "q" * 52 + "a", "q" * 52 + "b"
    names_a = {(o["kind"], o["metadata"]["name"]) for o in render(name=a).objects}
    names_b = {(o["kind"], o["metadata"]["name"]) for o in render(name=b).objects}
    assert not names_a & names_b
    # and the names are stable: the same release renders the same names twice
    assert names_a == {(o["kind"], o["metadata"]["name"]) for o in render(name=a).objects}


def test_the_name_check_notices_what_kubernetes_and_keda_refuse():
    rendered = render(name="bgw")
    sts = rendered.get("StatefulSet", "bgw-bgworker-redis")
    sts["metadata"]["name"] = "r" * 53  # its pods' revision-hash label would be 64 long
    so = rendered.get("ScaledObject", "bgw-bgworker-worker")
    so["metadata"]["name"] = "w" * 55  # keda-hpa-www... is 64
    svc = rendered.get("Service", "bgw-bgworker-api")
    svc["metadata"]["name"] = "1.api"
    pod = next(iter(rendered.of_kind("Pod")))
    pod["metadata"]["labels"]["app.kubernetes.io/instance"] = "x" * 64
    problems = name_problems(rendered)
    assert len(problems) == 4, problems
    svc["metadata"]["name"] = "bgw-bgworker-ap"
    assert reference_problems(rendered)
