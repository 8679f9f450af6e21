"""docs/operations.md: every command names objects, labels, values and bgworker commands
that really exist in what the chart renders for release "bgw" in namespace "bgworker"."""

from __future__ import annotations

import re
import shlex
from typing import Any

import pytest
import yaml

from tests.chart.render import CHART, Rendered, render
from tests.helpers import REPO
from worker.cli import _parser
from worker.queues import QUEUES

DOC = REPO / "docs" / "operations.md"
RELEASE, NAMESPACE = "bgw", "bgworker"
KINDS = {
    "deploy": "Deployment",
    "deployment": "Deployment",
    "svc": "Service",
    "service": "Service",
    "statefulset": "StatefulSet",
    "sts": "StatefulSet",
    "scaledobject": "ScaledObject",
    "hpa": "HorizontalPodAutoscaler",
    "pod": "Pod",
}


def commands() -> list[list[str]]:
    """Each shell command in the doc's ```sh blocks, split like a shell would."""
    text = DOC.read_text()
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#") and not line.startswith("..."):
                lines.append(line.replace("[JOB_ID...]", ""))
    return [shlex.split(line) for line in lines]


@pytest.fixture(scope="module")
def chart() -> Rendered:
    return render(name=RELEASE, namespace=NAMESPACE)


def exists(chart: Rendered, kind: str, name: str) -> bool:
    if kind == "HorizontalPodAutoscaler":  # KEDA names its HPA after the ScaledObject
        return name.startswith("keda-hpa-") and chart.has("ScaledObject", name[len("keda-hpa-") :])
    return chart.has(kind, name)


def kubectl_refs(argv: list[str]) -> list[tuple[str, str]]:
    """(kind, name) pairs a kubectl command line refers to."""
    refs = []
    args = [a for a in argv[1:] if a != "--"]
    for i, arg in enumerate(args):
        if "/" in arg and arg.split("/")[0] in KINDS and not arg.startswith("-"):
            kind, name = arg.split("/", 1)
            refs.append((KINDS[kind], name))
        elif arg in KINDS and i + 1 < len(args) and args[i - 1] in {"get", "describe", "annotate"}:
            nxt = args[i + 1]
            if not nxt.startswith("-"):
                refs.append((KINDS[arg], nxt))
    return refs


def test_the_doc_has_the_commands_the_issue_asks_for():
    text = " ".join(" ".join(c) for c in commands())
    for needle in (
        "bgworker queues",
        "autoscaling.keda.sh/paused-replicas",
        "rollout restart deploy/bgw-bgworker-worker",
        "bgworker dead",
        "autoscaling.listLength",
        "worker.shutdownTimeout",
    ):
        assert needle in text, needle


def test_every_kubectl_command_names_real_objects_in_the_right_namespace(chart):
    checked = 0
    for argv in commands():
        if argv[0] != "kubectl":
            continue
        assert ["-n", NAMESPACE] == argv[1:3], " ".join(argv)
        for kind, name in kubectl_refs(argv):
            assert exists(chart, kind, name), f"{' '.join(argv)}: no {kind} {name}"
            checked += 1
        for i, arg in enumerate(argv):
            if arg == "-l":
                key, _, value = argv[i + 1].partition("=")
                pods = [labels for _, labels, _ in chart.pod_specs() if labels.get(key) == value]
                assert pods, f"{' '.join(argv)}: no pod has the label {argv[i + 1]}"
    assert checked >= 15


def test_every_bgworker_command_in_the_doc_parses(chart):
    parsed = 0
    for argv in commands():
        if argv[0] == "kubectl" and "--" in argv:
            args = argv[argv.index("--") + 1 :]
            if args[0] == "bgworker":
                _parser().parse_args(args[1:])  # SystemExit on an unknown command or option
                parsed += 1
            elif args[0] == "redis-cli":
                assert args[1] in {"LLEN", "HLEN"}
                assert args[2] in (*QUEUES, "unacked")
                container = chart.get("StatefulSet", argv[argv.index("exec") + 1].split("/")[1])
                env = container["spec"]["template"]["spec"]["containers"][0]["env"]
                assert "REDISCLI_AUTH" in {e["name"] for e in env}
    assert parsed >= 4


def test_every_helm_set_names_a_real_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    sets = 0
    for argv in commands():
        if argv[:2] != ["helm", "upgrade"]:
            continue
        assert argv[2] == RELEASE and argv[3] == "charts/bgworker"
        overrides: dict[str, Any] = {}
        for i, arg in enumerate(argv):
            if arg == "--set":
                path, _, raw = argv[i + 1].partition("=")
                node = values
                for part in path.split("."):
                    if node == {}:
                        break  # a free-form map (labels, annotations): any key is content
                    assert isinstance(node, dict) and part in node, f"no value {path}"
                    node = node[part]
                target = overrides
                *parents, leaf = path.split(".")
                for part in parents:
                    target = target.setdefault(part, {})
                target[leaf] = _helm_scalar(raw)
                sets += 1
        render(overrides, name=RELEASE, namespace=NAMESPACE)  # schema and templates accept it
    assert sets >= 4


def test_jsonpath_and_metric_names_exist(chart):
    text = DOC.read_text()
    kinds = {"deploy": "Deployment", "secret": "Secret", "statefulset": "StatefulSet"}
    found = re.findall(r"get (\w+) ([\w-]+) -o jsonpath='\{\.([\w.]+)\}'", text)
    assert found, "the doc reads fields with jsonpath"
    for kind, name, path in found:
        node: Any = chart.get(kinds[kind], name)
        for part in path.split("."):
            node = node[part]
    api_metrics = (REPO / "api" / "metrics.py").read_text()
    for metric in re.findall(r"`(bgworker_[a-z_]+)`", text):
        assert f'"{metric}"' in api_metrics, metric


def test_names_in_the_doc_tables_exist(chart):
    names = set(re.findall(r"`(bgw-bgworker[\w-]*)`", DOC.read_text()))
    all_names = {o["metadata"]["name"] for o in chart.objects}
    assert names <= all_names, names - all_names


def _helm_scalar(raw: str) -> Any:
    """A --set value as Helm types it: integers and booleans, else a string."""
    if raw.isdigit():
        return int(raw)
    return {"true": True, "false": False}.get(raw, raw)
