"""Gate and fixtures of the cluster suite (tests/e2e/kind).

The suite runs only when asked (``E2E_KIND=1``, which ``make e2e`` sets) on a machine with
an answering Docker daemon, kubectl, helm and the ``kubernetes`` Python package, and either
a cluster named by ``E2E_KUBECONFIG`` (``make e2e`` brings up the local one of cluster/) or
kind to create one. Otherwise each test is skipped with a message naming what is missing,
or fails when ``E2E_REQUIRE=1`` (the default under ``CI=true``), so a misconfigured
runner cannot go green by skipping.

Settings are ``E2E_*`` variables, not ``BGWORKER_*`` ones: that prefix belongs to
bgworker's own settings, whose check stops a process at an unknown name (and
tests/conftest.py strips it around every test).

The fixtures build the whole installation once per session, in order: a kind cluster
(created, or reused from ``E2E_KIND_CLUSTER``), the two images loaded into it, KEDA,
the chart released as ``bgw`` in namespace ``bgworker-e2e``, and the API through a
port-forward. The tests share it and each leaves it idle.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.e2e.docker_images import build_images, choose_base, image_exists
from tests.e2e.kind import figures, k8s
from tests.e2e.kind.k8s import Cluster, ForwardedApi, PortForward
from tests.e2e.kind.redis_image import build_redis

# The environment as the session started (tests/conftest.py's autouse fixture strips every
# BGWORKER_* variable around each test; the fixtures run inside tests).
ENV: dict[str, str] = dict(os.environ)

# Each setting by its environment variable.
SETTINGS: dict[str, str] = {
    "kind": "E2E_KIND",
    "require": "E2E_REQUIRE",
    "keep": "E2E_KEEP",
    "cluster": "E2E_KIND_CLUSTER",
    "node_image": "E2E_KIND_NODE_IMAGE",
    "keda_version": "E2E_KEDA_VERSION",
    "kubeconfig": "E2E_KUBECONFIG",
    "load_images": "E2E_LOAD_IMAGES",
    "node_pulls": "E2E_NODE_PULLS",
}
KIND_VAR = SETTINGS["kind"]
REQUIRE_VAR = SETTINGS["require"]
KEEP_VAR = SETTINGS["keep"]
TOOLS = ("docker", "kubectl", "helm")


def setting(env: Mapping[str, str], key: str) -> str:
    """The value of one setting ("" when unset)."""
    return env.get(SETTINGS[key], "").strip()


# The cluster in use, for the failure report hook below (empty outside a cluster session).
ACTIVE: dict[str, Cluster] = {}


# --- the gate ------------------------------------------------------------------------------


def docker_answers() -> bool:
    """``docker info`` succeeds: a daemon runs and this user may use it."""
    try:
        result = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def missing_tools(
    which: Callable[[str], str | None] = shutil.which,
    docker_ok: Callable[[], bool] = docker_answers,
    env: Mapping[str, str] = ENV,
) -> list[str]:
    """What this machine lacks for the kind suite, in words fit for a skip message."""
    # kind only when the suite is to make its cluster (no E2E_KUBECONFIG given).
    tools = TOOLS if setting(env, "kubeconfig") else ("docker", "kind", "kubectl", "helm")
    missing = [tool for tool in tools if which(tool) is None]
    if "docker" not in missing and not docker_ok():
        missing.append("a Docker daemon (`docker info` fails)")
    if importlib.util.find_spec("kubernetes") is None:
        missing.append("the kubernetes Python package")
    return missing


def gate(env: Mapping[str, str], missing: Callable[[], list[str]] = missing_tools) -> str | None:
    """None when the kind suite may run here; otherwise why not (skip or failure message)."""
    absent = missing()
    needs = "it needs docker, kind, kubectl and helm"
    if setting(env, "kind") != "1":
        where = f"missing here: {', '.join(absent)}" if absent else "all present here"
        return f"the kind suite runs with `make e2e` ({KIND_VAR}=1); {needs} ({where})"
    if absent:
        return (
            f"the kind suite ({KIND_VAR}=1) cannot run: {needs}; missing here: {', '.join(absent)}"
        )
    return None


def enforce(env: Mapping[str, str], missing: Callable[[], list[str]] = missing_tools) -> None:
    """Skip with the gate's reason, or fail with it when E2E_REQUIRE=1.

    REQUIRE also fails when E2E_KIND is unset: a CI job that asks for the e2e
    suites and forgot to switch this one on must not pass.
    """
    reason = gate(env, missing)
    if reason is None:
        return
    if setting(env, "require") == "1":
        pytest.fail(f"{REQUIRE_VAR}=1 and {reason}", pytrace=False)
    pytest.skip(reason)


def keep() -> bool:
    return setting(ENV, "keep") == "1"


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kind_gate() -> None:
    enforce(ENV)


@pytest.fixture(scope="session")
def kind_cluster(kind_gate: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster: E2E_KUBECONFIG's or E2E_KIND_CLUSTER's (never deleted), else a new kind
    cluster deleted at the end."""
    given = setting(ENV, "kubeconfig")
    if given:
        if not os.path.isfile(given):
            pytest.fail(f"E2E_KUBECONFIG={given}: no such file", pytrace=False)
        loader = shlex.split(setting(ENV, "load_images"))
        yield from _use(Cluster(name=given, kubeconfig=Path(given), created=False, loader=loader))
        return
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    wanted = setting(ENV, "cluster")
    existing = k8s.kind_clusters()
    created = False
    if wanted:
        if wanted not in existing:
            pytest.fail(
                f"E2E_KIND_CLUSTER={wanted}, but kind has no such cluster "
                f"(`kind get clusters`: {', '.join(existing) or 'none'})",
                pytrace=False,
            )
        name = wanted
    elif k8s.DEFAULT_CLUSTER in existing:
        # Left by a run with E2E_KEEP=1: use it, and leave it as it was found.
        name = k8s.DEFAULT_CLUSTER
        print(f"reusing the existing kind cluster {name} (not deleted at the end)", file=sys.stderr)
    else:
        name = k8s.DEFAULT_CLUSTER
        node_image = setting(ENV, "node_image") or None
        created = True
        try:
            k8s.create_cluster(name, kubeconfig, node_image)
        except BaseException:
            k8s.delete_cluster(name, kubeconfig)
            raise
    k8s.write_kubeconfig(name, kubeconfig)
    cluster = Cluster(name=name, kubeconfig=kubeconfig, created=created)
    try:
        yield from _use(cluster)
    finally:
        if created and not keep():
            k8s.delete_cluster(name, kubeconfig)
        elif created:
            print(
                f"{KEEP_VAR}=1: kept kind cluster {name}; `kind delete cluster --name {name}`",
                file=sys.stderr,
            )


def _use(cluster: Cluster) -> Iterator[Cluster]:
    ACTIVE["cluster"] = cluster
    try:
        cluster.kubectl(
            "wait", "--for=condition=Ready", "node", "--all", "--timeout=180s", timeout=200
        )
        yield cluster
    finally:
        ACTIVE.pop("cluster", None)
        cluster.close()


@pytest.fixture(scope="session")
def kind_images(kind_cluster: Cluster) -> dict[str, str]:
    """bgworker-api:e2e and bgworker-worker:e2e, built here and loaded into the node; and
    Redis, built here too when the nodes cannot pull (E2E_NODE_PULLS=0)."""
    base = choose_base()
    started = time.monotonic()
    images = build_images(k8s.IMAGE_TAG, base)  # on E2E_BASE_IMAGE, when set
    to_load = [images["api"], images["worker"]]
    redis = k8s.suite_values()["redis"]["image"]
    redis_ref = f"{redis['repository']}:{redis['tag']}"
    if setting(ENV, "node_pulls") == "0":
        images["redis"] = build_redis(base)
        to_load.append(images["redis"])
    elif image_exists(redis_ref):
        # Otherwise the node pulls it (IfNotPresent) unless Docker here has it: then it is
        # loaded too, which spares the pull and lets a machine with a warm cache run.
        to_load.append(redis_ref)
    figures.record("image build (api, worker, redis)", time.monotonic() - started)
    figures.record("image load into the node", k8s.load_images(kind_cluster, to_load))
    return images


@pytest.fixture(scope="session")
def keda(kind_cluster: Cluster) -> str:
    """KEDA from its Helm chart (kept in a reused cluster), with its CRDs and metrics API up."""
    installed = kind_cluster.kubectl("get", "crd", "scaledobjects.keda.sh", check=False)
    if "scaledobjects.keda.sh" in installed:
        # The cluster comes with KEDA (the local cluster installs it from KEDA's module).
        version = "preinstalled"
    else:
        version = setting(ENV, "keda_version") or k8s.KEDA_VERSION
        _install_keda(kind_cluster, version)
    kind_cluster.kubectl(
        "wait", "--for=condition=Established",
        "crd/scaledobjects.keda.sh", "crd/triggerauthentications.keda.sh",
        "--timeout=120s",
        timeout=150,
    )  # fmt: skip
    # The HPA reads KEDA's metrics through this APIService: no scaling beyond 1 without it.
    kind_cluster.kubectl(
        "wait", "--for=condition=Available",
        "apiservice/v1beta1.external.metrics.k8s.io",
        "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    return version


def _install_keda(kind_cluster: Cluster, version: str) -> None:
    kind_cluster.helm(
        "upgrade", "--install", "keda", "keda",
        "--repo", k8s.KEDA_REPO,
        "--version", version,
        "--namespace", k8s.KEDA_NAMESPACE,
        "--create-namespace",
        "--wait", "--timeout", "5m",
        timeout=420,
    )  # fmt: skip


@pytest.fixture(scope="session")
def release(kind_cluster: Cluster, kind_images: dict[str, str], keda: str) -> Iterator[None]:
    """The chart as release bgw in a fresh namespace bgworker-e2e, every pod ready."""
    cluster = kind_cluster
    # A namespace left by an earlier kept run holds old jobs and counters: start clean.
    cluster.kubectl(
        "delete", "namespace", k8s.NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s",
        timeout=330,
    )  # fmt: skip
    cluster.kubectl("create", "namespace", k8s.NAMESPACE)
    cluster.helm(
        "install", *k8s.release_args(kind_images), "--wait", "--timeout", "5m", timeout=420
    )
    yield
    if keep() or cluster.created:
        return  # kept for inspection, or gone with the cluster
    cluster.helm(
        "uninstall", k8s.RELEASE, "--namespace", k8s.NAMESPACE, "--wait", "--timeout", "5m",
        timeout=360, check=False,
    )  # fmt: skip
    # The storage claim outlives `helm uninstall` (resource-policy keep); the namespace does not.
    cluster.kubectl(
        "delete", "namespace", k8s.NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s",
        timeout=330, check=False,
    )  # fmt: skip


@pytest.fixture(scope="session")
def kind_api(kind_cluster: Cluster, release: None) -> Iterator[ForwardedApi]:
    """The release's API Service on a loopback port, through a self-healing port-forward."""
    port = int(k8s.suite_values()["api"]["service"]["port"])
    forward = PortForward(kind_cluster, f"svc/{k8s.API_SERVICE}", remote_port=port)
    forward.start()
    # The admin key the chart drew into its Secret (NOTES.txt tells operators the same).
    secret = kind_cluster.core.read_namespaced_secret(f"{k8s.FULLNAME}-api-keys", k8s.NAMESPACE)
    token = base64.b64decode(secret.data["adminKey"]).decode()
    api = ForwardedApi(forward, token=token)
    try:
        api.wait_ready(timeout=120)
        yield api
    finally:
        api.close()
        forward.stop()


# --- failure reports -----------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the cluster's state (pods, KEDA, events, logs) to any failure in this suite."""
    report: pytest.TestReport = yield
    cluster = ACTIVE.get("cluster")
    if report.failed and cluster is not None:
        try:
            text = cluster.diagnostics()
        except Exception as exc:  # the report must not replace the failure
            text = f"could not collect diagnostics: {exc!r}"
        report.sections.append((f"kind cluster {cluster.name} at the failure", text))
    return report


# --- figures (docs/performance.md, "On a real cluster") -------------------------------------


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "e2e/kind/test_kind.py" in report.nodeid:
        figures.record_test(report.nodeid, report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not figures.has_figures():
        return
    stats = terminalreporter.stats
    outcome = ", ".join(
        f"{len(stats[key])} {key}" for key in ("passed", "failed", "error") if stats.get(key)
    )
    terminalreporter.section("bgworker on a real cluster")
    terminalreporter.write_line(figures.write(outcome or "no test ran"))
