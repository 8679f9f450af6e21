"""The chart lints clean and every object it renders is valid for Kubernetes, KEDA and the
prometheus-operator (its ServiceMonitor)."""

from __future__ import annotations

from typing import Any

import helm_python
import kubernetes_validate
import pytest
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication
from cloudcoil.models.prometheus_operator.v1 import ServiceMonitor

from tests.chart.render import CHART, VALUE_SETS, render

# The oldest Kubernetes minor we support (KEDA 2.16's floor) and the newest schema we have.
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]
KEDA_MODELS = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}
# Custom resources: the Kubernetes schemas do not know them; their operators' models do.
CRD_MODELS: dict[str, Any] = {**KEDA_MODELS, "ServiceMonitor": ServiceMonitor}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_is_clean(name):
    report = helm_python.lint(CHART, VALUE_SETS[name], strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_validates_against_the_kubernetes_schema(name, version):
    rendered = render(VALUE_SETS[name])
    checked = []
    for obj in rendered.objects:
        if obj["kind"] in CRD_MODELS:
            continue
        # strict: an unknown or misspelt field is an error, not silently dropped.
        kubernetes_validate.validate(obj, version, strict=True)
        checked.append(obj["kind"])
    # Every value set has the API and worker Deployments, the API Service, the settings, the
    # ServiceAccount and the helm test pod (the API's PDB only with ReadWriteMany storage).
    assert len(checked) >= 7
    assert checked.count("Deployment") == 2
    assert {"Service", "ConfigMap", "ServiceAccount", "Pod"} <= set(checked)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_keda_objects_validate_against_the_keda_models(name):
    rendered = render(VALUE_SETS[name])
    keda = [o for o in rendered.objects if o["kind"] in KEDA_MODELS]
    if rendered.values["autoscaling"]["enabled"]:
        assert keda, "autoscaling is on but no KEDA object was rendered"
    for obj in keda:
        model = KEDA_MODELS[obj["kind"]].model_validate(obj)
        # The models ignore unknown fields; a round trip shows any KEDA would not know.
        assert _dump(model) == obj


@pytest.mark.parametrize("name", VALUE_SETS)
def test_service_monitor_validates_against_the_prometheus_operator_models(name):
    rendered = render(VALUE_SETS[name])
    monitors = rendered.of_kind("ServiceMonitor")
    assert len(monitors) == int(rendered.values["api"]["serviceMonitor"]["enabled"])
    for obj in monitors:
        assert _dump(ServiceMonitor.model_validate(obj)) == obj


def test_service_monitor_check_notices_an_unknown_field():
    obj = render(VALUE_SETS["everything-on"]).get("ServiceMonitor", "bgw-bgworker-api")
    obj["spec"]["endpoints"][0]["scrapeInterval"] = "30s"  # the field is "interval"
    assert _dump(ServiceMonitor.model_validate(obj)) != obj


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")  # type: ignore[no-any-return]


def test_keda_check_notices_an_unknown_field():
    obj = render().get("ScaledObject", "bgw-bgworker-worker")
    obj["spec"]["triggers"][0]["listName"] = "default"  # belongs under metadata
    assert _dump(ScaledObject.model_validate(obj)) != obj
