"""keda/ holds the chart's KEDA objects for users without Helm: they must not drift apart."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject, TriggerAuthentication

from tests.chart.render import render
from tests.helpers import REPO

KEDA_DIR = REPO / "keda"
# What the standalone files assume: release "bgworker" in namespace "bgworker", defaults.
FILES = {"ScaledObject": "scaledobject.yaml", "TriggerAuthentication": "triggerauthentication.yaml"}
MODELS = {"ScaledObject": ScaledObject, "TriggerAuthentication": TriggerAuthentication}
HELM_ONLY_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}


def load(kind: str) -> dict[str, Any]:
    return yaml.safe_load((KEDA_DIR / FILES[kind]).read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", FILES)
def test_standalone_manifest_is_what_the_chart_renders(kind):
    chart = render({"fullnameOverride": "bgworker"}, namespace="bgworker").get(
        kind, "bgworker-worker"
    )
    for label in HELM_ONLY_LABELS:
        chart["metadata"]["labels"].pop(label)
    assert load(kind) == chart, f"keda/{FILES[kind]} differs from the chart's {kind}: update it"


@pytest.mark.parametrize("kind", FILES)
def test_standalone_manifest_validates_against_the_keda_models(kind):
    obj = load(kind)
    model = MODELS[kind].model_validate(obj)
    assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == obj


def test_kustomization_lists_both_files():
    kustomization = yaml.safe_load((KEDA_DIR / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(FILES.values())
    assert kustomization["namespace"] == "bgworker"
