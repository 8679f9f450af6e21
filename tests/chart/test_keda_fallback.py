"""The ScaledObject's fallback passes what each supported KEDA (2.16 to 2.20) checks, at
admission and when it applies the fallback.

KEDA's rules, read in kedacore/keda at each tag:
- apis/keda/v1alpha1/scaledobject_types.go CheckFallbackValid (called by the admission
  webhook's verifyFallback): 2.16 refuses a fallback unless *every* trigger has
  metricType AverageValue written out (an empty metricType fails) and none is cpu/memory;
  2.17 wants scalingModifiers.metricType not Value, or, without modifiers, at least one
  non-cpu/memory trigger with metricType AverageValue; 2.18 to 2.20 want, without
  modifiers, one non-cpu/memory trigger.
- pkg/fallback/fallback.go HasValidFallback (2.16 to 2.20): with scalingModifiers the
  fallback is silently skipped unless scalingModifiers.target parses as an integer > 0.
- Fallback.behavior exists from 2.17 (2.16's CRD has no such field: it would be pruned);
  behavior scalingModifiers needs a formula (scaledobject_webhook.go verifyScaledObjects).
- pkg/scaling/executor/scale_scaledobjects.go: a fallback of 0 replicas is no fallback.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from helm_python import Chart

from tests.chart.render import CHART, VALUE_SETS, Rendered, render

KEDA_2_20_BEHAVIORS = {
    "static",
    "currentReplicas",
    "currentReplicasIfHigher",
    "currentReplicasIfLower",
    "scalingModifiers",
}
KEDA_VERSIONS = [(2, 16), (2, 17), (2, 18), (2, 19), (2, 20)]
WORKER = "bgw-bgworker-worker"


def keda_fallback_problems(so: dict[str, Any], version: tuple[int, int]) -> list[str]:
    """Why KEDA ``version`` would refuse, or silently not apply, this ScaledObject's fallback."""
    spec = so["spec"]
    fallback = spec.get("fallback")
    if fallback is None:
        return []
    problems = []
    if fallback["failureThreshold"] < 0 or fallback["replicas"] < 0:
        problems.append("failureThreshold and replicas must be >= 0")
    if fallback["replicas"] == 0:
        problems.append("a fallback of 0 replicas is skipped")
    modifiers = spec.get("advanced", {}).get("scalingModifiers") or {}
    triggers = spec["triggers"]
    scalers = [t for t in triggers if t["type"] not in ("cpu", "memory")]
    if version == (2, 16):
        for t in triggers:
            if t["type"] in ("cpu", "memory"):
                problems.append(f"2.16: fallback does not support {t['type']} triggers")
            if t.get("metricType") != "AverageValue":
                problems.append(f"2.16: trigger {t.get('name')} metricType={t.get('metricType')!r}")
    elif version == (2, 17):
        if modifiers:
            if modifiers.get("metricType") == "Value":
                problems.append("2.17: scalingModifiers.metricType must be AverageValue")
        elif not any(t.get("metricType") == "AverageValue" for t in scalers):
            problems.append("2.17: no trigger with metricType AverageValue")
    elif not modifiers and not scalers:
        problems.append(f"{version}: no trigger that is not cpu or memory")
    if modifiers:
        target = str(modifiers.get("target", ""))
        if not (target.isdigit() and int(target) > 0):
            problems.append(f"scalingModifiers.target {target!r} is not an integer > 0")
    behavior = fallback.get("behavior", "static")
    if behavior != "static" and version < (2, 17):
        problems.append(f"{version}: no fallback.behavior ({behavior} would be dropped)")
    if behavior == "scalingModifiers" and not modifiers.get("formula"):
        problems.append("behavior scalingModifiers needs scalingModifiers.formula")
    return problems


def scaled_object(rendered: Rendered) -> dict[str, Any]:
    return rendered.get("ScaledObject", WORKER)


@pytest.mark.parametrize("version", KEDA_VERSIONS, ids=[f"keda-{a}.{b}" for a, b in KEDA_VERSIONS])
@pytest.mark.parametrize("name", VALUE_SETS)
def test_fallback_passes_every_supported_keda(name, version):
    rendered = render(VALUE_SETS[name])
    if not rendered.values["autoscaling"]["enabled"]:
        assert not rendered.of_kind("ScaledObject")
        return
    problems = keda_fallback_problems(scaled_object(rendered), version)
    behavior = rendered.values["autoscaling"]["fallback"]["behavior"]
    if version == (2, 16) and behavior != "static":  # values.yaml: "needs KEDA 2.17+"
        assert problems == [f"(2, 16): no fallback.behavior ({behavior} would be dropped)"]
    else:
        assert problems == []


def test_fallback_is_on_by_default_with_a_small_count():
    so = scaled_object(render())
    assert so["spec"]["fallback"] == {"failureThreshold": 3, "replicas": 2}
    assert so["spec"]["fallback"]["replicas"] <= so["spec"]["maxReplicaCount"]
    assert "cannot read Redis for 3 polls in a row it holds 2 workers" in render().notes
    # Every trigger names its metric type (KEDA 2.16 refuses the fallback otherwise).
    assert {t["metricType"] for t in so["spec"]["triggers"]} == {"AverageValue"}


def test_fallback_values_reach_the_scaled_object():
    values = {
        "autoscaling": {
            "fallback": {
                "failureThreshold": 5,
                "replicas": 4,
                "behavior": "currentReplicasIfHigher",
            }
        }
    }
    assert scaled_object(render(values))["spec"]["fallback"] == {
        "failureThreshold": 5,
        "replicas": 4,
        "behavior": "currentReplicasIfHigher",
    }
    assert (
        "fallback"
        not in scaled_object(render({"autoscaling": {"fallback": {"enabled": False}}}))["spec"]
    )
    # The schema admits the behaviors KEDA 2.20's CRD has (Fallback.Behavior's kubebuilder
    # enum), minus scalingModifiers, which needs a "??" formula the chart does not write.
    schema = Chart.load(CHART).schema
    assert schema is not None
    fallback = schema["properties"]["autoscaling"]["properties"]["fallback"]
    assert set(fallback["properties"]["behavior"]["enum"]) == KEDA_2_20_BEHAVIORS - {
        "scalingModifiers"
    }
    # The CRD models in use are KEDA 2.16's, without the field: the default leaves it out.
    assert "behavior" not in scaled_object(render())["spec"]["fallback"]


def test_the_keda_model_notices_what_keda_refuses():
    so = scaled_object(render())
    bare = copy.deepcopy(so)
    for t in bare["spec"]["triggers"]:
        del t["metricType"]
    assert keda_fallback_problems(bare, (2, 16))  # the trap the explicit metricType avoids
    assert keda_fallback_problems(bare, (2, 20)) == []  # 2.18+ no longer checks
    no_modifiers = copy.deepcopy(bare)
    del no_modifiers["spec"]["advanced"]["scalingModifiers"]
    assert keda_fallback_problems(no_modifiers, (2, 17))
    odd_target = copy.deepcopy(so)
    odd_target["spec"]["advanced"]["scalingModifiers"]["target"] = "2.5"
    assert keda_fallback_problems(odd_target, (2, 20))
    value_metric = copy.deepcopy(so)
    value_metric["spec"]["advanced"]["scalingModifiers"]["metricType"] = "Value"
    assert keda_fallback_problems(value_metric, (2, 17))
    zero = copy.deepcopy(so)
    zero["spec"]["fallback"]["replicas"] = 0
    assert keda_fallback_problems(zero, (2, 20))
