"""Static checks of images/Dockerfile, .dockerignore and skaffold.yaml: no Docker, no cluster.

They catch what would otherwise show up only on a cluster: a shell-form CMD that keeps
SIGTERM from the Celery master, an image running as root, a Skaffold artifact naming a
target the Dockerfile no longer has, or Skaffold setting an image value the chart does
not have (Helm would accept it silently and deploy the wrong image).
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "images" / "Dockerfile"
SKAFFOLD = ROOT / "skaffold.yaml"
CHART = ROOT / "charts" / "bgworker"
TARGETS = ("api", "worker")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: dict[str, Stage]

    def chain(self, target: str) -> list[Stage]:
        """The target's stage and the stages it is built FROM, base first."""
        chain = [self.stages[target]]
        while chain[0].base in self.stages:
            chain.insert(0, self.stages[chain[0].base])
        return chain

    def last(self, target: str, keyword: str) -> str | None:
        """The value in effect for ``keyword`` (USER, CMD, ...) in the target's image."""
        values = [v for stage in self.chain(target) for k, v in stage.instructions if k == keyword]
        return values[-1] if values else None

    def all(self, target: str, keyword: str) -> list[str]:
        return [v for stage in self.chain(target) for k, v in stage.instructions if k == keyword]


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions per stage, continuation lines joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"

    global_args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest, re.I)
            assert match and match.group(2), f"every stage needs a name: FROM {rest}"
            current = Stage(name=match.group(2), base=match.group(1))
            stages[current.name] = current
        elif current is None:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            name, _, default = rest.partition("=")
            global_args[name] = default
        else:
            current.instructions.append((keyword, rest))
    return Dockerfile(global_args, stages)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def chart_values() -> dict[str, Any]:
    values = CHART / "values.yaml"
    if not values.exists():
        pytest.skip(
            "charts/bgworker/values.yaml does not exist yet (the chart is written alongside)"
        )
    data = load_yaml(values)
    assert isinstance(data, dict)
    return data


def lookup(values: dict[str, Any], dotted: str) -> Any:
    """The value at a Helm --set path such as ``api.image.tag``; KeyError if it is missing."""
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DOCKERFILE)


@pytest.fixture(scope="module")
def skaffold() -> dict[str, Any]:
    data = load_yaml(SKAFFOLD)
    assert isinstance(data, dict)
    return data


# --- images/Dockerfile ---------------------------------------------------------------


def test_base_image_is_an_overridable_argument(dockerfile: Dockerfile) -> None:
    assert dockerfile.global_args.get("BASE_IMAGE") == "python:3.12-slim"
    external = {s.base for s in dockerfile.stages.values() if s.base not in dockerfile.stages}
    assert external == {"${BASE_IMAGE}"}, "every stage must start from BASE_IMAGE or a stage"


def test_both_targets_exist(dockerfile: Dockerfile) -> None:
    assert set(TARGETS) <= set(dockerfile.stages)


@pytest.mark.parametrize("target", TARGETS)
def test_entrypoint_and_cmd_are_exec_form(dockerfile: Dockerfile, target: str) -> None:
    """JSON arrays: no shell as PID 1 that would swallow SIGTERM (Docker's JSONArgsRecommended)."""
    entrypoint = dockerfile.last(target, "ENTRYPOINT")
    cmd = dockerfile.last(target, "CMD")
    assert entrypoint is not None and cmd is not None
    entrypoint_argv, cmd_argv = json.loads(entrypoint), json.loads(cmd)
    for argv in (entrypoint_argv, cmd_argv):
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    # `bgworker api` / `bgworker worker` run uvicorn / the Celery master in-process.
    assert Path(entrypoint_argv[0]).name == "bgworker"
    assert cmd_argv[0] == target


def test_api_listens_on_all_interfaces_on_its_exposed_port(dockerfile: Dockerfile) -> None:
    cmd = json.loads(dockerfile.last("api", "CMD") or "[]")
    port = cmd[cmd.index("--port") + 1]
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert port in dockerfile.all("api", "EXPOSE")


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_a_numeric_non_root_user(dockerfile: Dockerfile, target: str) -> None:
    """Numeric, so that Kubernetes' runAsNonRoot can verify it without /etc/passwd."""
    user = dockerfile.last(target, "USER")
    assert user is not None and re.fullmatch(r"\d+:\d+", user), user
    assert all(int(part) != 0 for part in user.split(":"))


@pytest.mark.parametrize("target", TARGETS)
def test_final_image_gets_only_the_venv_from_the_build(dockerfile: Dockerfile, target: str) -> None:
    """The build stage (pip, setuptools, anything it installs) never becomes a base."""
    chain = [stage.name for stage in dockerfile.chain(target)]
    assert "build" in dockerfile.stages and "build" not in chain
    copies_from_build = [
        v for v in dockerfile.all(target, "COPY") if re.search(r"--from=build\b", v)
    ]
    assert copies_from_build and all(
        v.split()[-2:] == ["/opt/venv", "/opt/venv"] for v in copies_from_build
    )
    runs = " ".join(dockerfile.all(target, "RUN"))
    assert not re.search(r"apt-get|apk add|\bpip\b|gcc|build-essential", runs), runs


@pytest.mark.parametrize("target", TARGETS)
def test_environment(dockerfile: Dockerfile, target: str) -> None:
    env = " ".join(dockerfile.all(target, "ENV"))
    for name in (
        "BGWORKER_STATE_DIR",
        "BGWORKER_STORAGE_DIR",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        "PATH=/opt/venv/bin:",
    ):
        assert name in env


def test_storage_dir_is_where_the_chart_mounts_storage(dockerfile: Dockerfile) -> None:
    values = chart_values()
    env = " ".join(dockerfile.all("worker", "ENV"))
    assert f"BGWORKER_STORAGE_DIR={lookup(values, 'storage.mountPath')}" in env


def test_chart_runs_pods_as_the_image_user(dockerfile: Dockerfile) -> None:
    values = chart_values()
    uid, gid = (dockerfile.last("worker", "USER") or "").split(":")
    assert lookup(values, "podSecurityContext.runAsUser") == int(uid)
    assert lookup(values, "podSecurityContext.runAsGroup") == int(gid)


def test_dockerignore_keeps_local_state_out_but_not_the_sources(dockerfile: Dockerfile) -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for must_ignore in (".git", ".venv", ".bgworker"):
        assert must_ignore in patterns
    sources = [
        part
        for stage in dockerfile.stages.values()
        for keyword, value in stage.instructions
        if keyword == "COPY" and "--from=" not in value
        for part in value.split()[:-1]
        if not part.startswith("--")
    ]
    assert {"pyproject.toml", "README.md", "api", "worker"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        excluded = [p for p in patterns if fnmatch.fnmatch(source, p.lstrip("/"))]
        assert not excluded, f".dockerignore drops {source}, which the Dockerfile copies"


# --- skaffold.yaml -------------------------------------------------------------------


def sanitized(image: str) -> str:
    """Skaffold's template name of an artifact: '/', '-' and '.' become '_'."""
    return re.sub(r"[/.-]", "_", image)


def test_skaffold_artifacts_are_the_dockerfile_targets(
    skaffold: dict[str, Any], dockerfile: Dockerfile
) -> None:
    assert skaffold["apiVersion"] == "skaffold/v4beta11" and skaffold["kind"] == "Config"
    assert skaffold["build"]["local"]["push"] is False
    artifacts = skaffold["build"]["artifacts"]
    assert {a["image"]: a["docker"]["target"] for a in artifacts} == {
        f"bgworker-{t}": t for t in TARGETS
    }
    for artifact in artifacts:
        context = ROOT / artifact.get("context", ".")
        assert (context / artifact["docker"]["dockerfile"]).resolve() == DOCKERFILE
        assert artifact["docker"]["target"] in dockerfile.stages


def releases(skaffold: dict[str, Any]) -> list[dict[str, Any]]:
    found = skaffold["deploy"]["helm"]["releases"]
    assert isinstance(found, list) and found
    return found


def test_skaffold_sets_image_values_the_chart_has(skaffold: dict[str, Any]) -> None:
    values = chart_values()
    (release,) = releases(skaffold)
    assert (ROOT / release["chartPath"]).resolve() == CHART
    templates = release["setValueTemplates"]
    artifacts = {
        sanitized(a["image"]): a["docker"]["target"] for a in skaffold["build"]["artifacts"]
    }
    expected = {}
    for target in TARGETS:
        name = sanitized(f"bgworker-{target}")
        expected[f"{target}.image.repository"] = f"{{{{.IMAGE_REPO_{name}}}}}"
        # TAG@DIGEST: pinned when pushed, and never a bare number that --set would turn
        # into an integer (the chart's schema wants a string).
        expected[f"{target}.image.tag"] = f"{{{{.IMAGE_TAG_{name}}}}}@{{{{.IMAGE_DIGEST_{name}}}}}"
    assert templates == expected
    for key, template in templates.items():
        lookup(values, key)  # KeyError: Skaffold would set a value the chart ignores
        used = set(re.findall(r"\.IMAGE_(?:REPO|TAG|DIGEST)_(\w+)", template))
        assert {artifacts[u] for u in used} == {key.split(".")[0]}, f"{key} gets {used}"


def test_skip_build_dependencies_only_without_subcharts(skaffold: dict[str, Any]) -> None:
    (release,) = releases(skaffold)
    chart = load_yaml(ROOT / release["chartPath"] / "Chart.yaml")
    if release.get("skipBuildDependencies"):
        assert not chart.get("dependencies"), "the chart has subcharts: let Skaffold build them"


def test_port_forward_reaches_the_api_service(skaffold: dict[str, Any]) -> None:
    values = chart_values()
    (release,) = releases(skaffold)
    chart = load_yaml(CHART / "Chart.yaml")
    (forward,) = skaffold["portForward"]
    # bgworker.fullname is "<release>-<chart>" unless the release name contains the chart's.
    assert chart["name"] not in release["name"]
    assert forward["resourceType"] == "service"
    assert forward["resourceName"] == f"{release['name']}-{chart['name']}-api"
    assert forward["port"] == lookup(values, "api.service.port")


def apply_patches(config: dict[str, Any], patches: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON-patch "add" operations a Skaffold profile applies (the only ones used here)."""
    patched = json.loads(json.dumps(config))
    for patch in patches:
        assert patch["op"] == "add", "extend apply_patches before using other operations"
        *parents, last = patch["path"].split("/")[1:]
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), patch["value"])
        else:
            node[last] = patch["value"]
    return patched


def test_kind_profile(skaffold: dict[str, Any]) -> None:
    values = chart_values()
    (profile,) = [p for p in skaffold["profiles"] if p["name"] == "kind"]
    assert profile["activation"] == [{"kubeContext": "kind-bgworker"}]
    patched = apply_patches(skaffold, profile["patches"])
    assert patched["deploy"]["kubeContext"] == "kind-bgworker"
    (release,) = releases(patched)
    set_values = release["setValues"]
    for key, value in set_values.items():
        assert isinstance(value, str), f"{key}: Skaffold's setValues takes strings"
        lookup(values, key)
    # Loaded into the kind node, never pulled from a registry.
    assert set_values["api.image.pullPolicy"] == set_values["worker.image.pullPolicy"]
    assert set_values["api.image.pullPolicy"] in {"IfNotPresent", "Never"}
