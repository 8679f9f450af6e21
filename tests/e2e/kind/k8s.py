"""The kind suite's hands: kind, kubectl and helm as subprocesses, the kubernetes client for
reading cluster state, a port-forward that comes back when it dies, and a diagnostics dump.

Every command gets an explicit kubeconfig (the ``--kubeconfig`` flag *and* ``KUBECONFIG``
in its environment) and the Python client is built from that same file, so the suite never
reads or edits the user's ``~/.kube/config``. The ``kubernetes`` package is imported only
when a cluster is used: the gate (conftest.py) and test_gate.py run without it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import httpx
import yaml

from tests.e2e.api_client import Api
from tests.e2e.commands import run
from worker.redis_server import free_port

if TYPE_CHECKING:
    from kubernetes import client as kube

T = TypeVar("T")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
CHART = REPO / "charts" / "bgworker"
CLUSTER_CONFIG = HERE / "cluster.yaml"
VALUES = HERE / "values.yaml"

DEFAULT_CLUSTER = "bgworker-e2e"
NAMESPACE = "bgworker-e2e"
# The name most users type: Kubernetes then injects service-link variables named
# BGWORKER_* into every pod, which bgworker's settings check would refuse (the chart
# turns service links off).
RELEASE = "bgworker"
# Object names the chart gives that release (test_gate.py checks them against a render).
FULLNAME = "bgworker"
API_SERVICE = f"{FULLNAME}-api"
WORKER = f"{FULLNAME}-worker"
REDIS = f"{FULLNAME}-redis"
SCALED_OBJECT = WORKER
HPA = f"keda-hpa-{WORKER}"
INSTANCE_SELECTOR = f"app.kubernetes.io/instance={RELEASE}"
WORKER_SELECTOR = f"{INSTANCE_SELECTOR},app.kubernetes.io/component=worker"

IMAGE_TAG = "e2e"
# What tests.e2e.docker_images.build_images("e2e") returns; test_gate renders with these.
DEFAULT_IMAGES = {"api": f"bgworker-api:{IMAGE_TAG}", "worker": f"bgworker-worker:{IMAGE_TAG}"}

KEDA_REPO = "https://kedacore.github.io/charts"
# 2.20.2, not 2.20.0: 2.20.0 and 2.20.1 ship an operator ClusterRole without core/v1
# events (kedacore/charts#883), so `kubectl describe scaledobject` shows no events.
KEDA_VERSION = "2.20.2"
KEDA_NAMESPACE = "keda"


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 2.0,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy.

    Transient errors of the API server, the port-forward or the network are retried (the
    last one is reported); on timeout the message says what was awaited and, through
    ``describe``, what the cluster looked like instead.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError as Urllib3Error

    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except (ApiException, Urllib3Error, OSError, httpx.HTTPError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            state = ""
            if describe is not None:
                try:
                    state = "\n" + describe()
                except Exception as exc:  # a failing description must not hide the timeout
                    state = f"\n(could not describe the state: {exc!r})"
            error = f"\nlast error: {last_error!r}" if last_error else ""
            raise AssertionError(
                f"timed out after {timeout:.0f} s waiting for {what}{error}{state}"
            )
        time.sleep(interval)


# --- values ------------------------------------------------------------------------------


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def suite_values() -> dict[str, Any]:
    """The values the suite installs with: the chart's defaults under tests/e2e/kind/values.yaml."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merge(defaults, yaml.safe_load(VALUES.read_text()))


def image_values(images: Mapping[str, str]) -> dict[str, str]:
    """``--set-string`` pairs that point the chart at ``images`` ({"api": "repo:tag", ...})."""
    flat: dict[str, str] = {}
    for part in ("api", "worker"):
        repository, _, tag = images[part].rpartition(":")
        assert repository and tag and "/" not in tag, f"image {images[part]!r} needs a tag"
        flat[f"{part}.image.repository"] = repository
        flat[f"{part}.image.tag"] = tag
    return flat


def nested(flat: Mapping[str, str]) -> dict[str, Any]:
    """{"a.b.c": v} -> {"a": {"b": {"c": v}}}, as helm's --set reads dotted keys."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, last = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return out


def release_args(
    images: Mapping[str, str], release: str = RELEASE, namespace: str = NAMESPACE
) -> list[str]:
    """Chart, namespace and values of a release, for ``helm install``/``helm upgrade``.

    ``images`` has the "api" and "worker" references and, when Redis was built here
    because the nodes cannot pull, "redis".
    """
    args = [release, str(CHART), "--namespace", namespace, "--values", str(VALUES)]
    for key, value in image_values(images).items():
        args += ["--set-string", f"{key}={value}"]
    if "redis" in images:
        repository, _, tag = images["redis"].rpartition(":")
        args += ["--set-string", f"redis.image.repository={repository}"]
        args += ["--set-string", f"redis.image.tag={tag}", "--set", "redis.image.pullPolicy=Never"]
    return args


# --- kind --------------------------------------------------------------------------------


def kind_clusters() -> list[str]:
    # "No kind clusters found." goes to stderr; stdout is one name per line.
    return run("kind", "get", "clusters", timeout=60).stdout.split()


def create_cluster(name: str, kubeconfig: Path, node_image: str | None) -> None:
    args = ["kind", "create", "cluster", "--name", name, "--config", str(CLUSTER_CONFIG)]
    args += ["--kubeconfig", str(kubeconfig), "--wait", "180s"]
    if node_image:
        args += ["--image", node_image]
    run(*args, timeout=600, env={**os.environ, "KUBECONFIG": str(kubeconfig)})


def write_kubeconfig(name: str, kubeconfig: Path) -> None:
    """``kind get kubeconfig`` only prints it: no kubeconfig file of the user is touched."""
    text = run("kind", "get", "kubeconfig", "--name", name, timeout=60).stdout
    kubeconfig.write_text(text)
    kubeconfig.chmod(0o600)


def delete_cluster(name: str, kubeconfig: Path) -> None:
    # --kubeconfig: kind removes the cluster's context from that file, not from ~/.kube/config.
    run(
        *["kind", "delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig)],
        timeout=300,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
        check=False,
    )


def load_images(cluster: Cluster, images: list[str]) -> float:
    """Put Docker images onto the cluster's nodes: the cluster's own loader command
    (E2E_LOAD_IMAGES, e.g. the local cluster's ``python -m cluster load``), else
    ``kind load docker-image``; the seconds it took."""
    started = time.monotonic()
    if cluster.loader:
        run(*cluster.loader, *images, timeout=900)
    else:
        for image in images:
            run("kind", "load", "docker-image", "--name", cluster.name, image, timeout=900)
    return time.monotonic() - started


# --- the cluster -------------------------------------------------------------------------


@dataclass
class Cluster:
    """A cluster reached through its own kubeconfig file: one kind made or found, or the one
    E2E_KUBECONFIG names (the local cluster of `make e2e`, or any other)."""

    name: str
    kubeconfig: Path
    created: bool  # by this run: deleted at the end unless E2E_KEEP=1
    # Command that copies Docker images onto the nodes (images appended); empty: kind load.
    loader: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig)}

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), *args]
        return run(*cmd, timeout=timeout, env=self.env, check=check).stdout

    def helm(self, *args: str, timeout: float = 420, check: bool = True) -> str:
        cmd = ["helm", *args, "--kubeconfig", str(self.kubeconfig)]
        return run(*cmd, timeout=timeout, env=self.env, check=check).stdout

    # The Python client, built from this cluster's kubeconfig only (no global config).

    @cached_property
    def api_client(self) -> kube.ApiClient:
        from kubernetes import config

        api_client: kube.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(self.kubeconfig)
        )
        return api_client

    @cached_property
    def core(self) -> kube.CoreV1Api:
        from kubernetes import client

        return client.CoreV1Api(self.api_client)

    @cached_property
    def apps(self) -> kube.AppsV1Api:
        from kubernetes import client

        return client.AppsV1Api(self.api_client)

    @cached_property
    def custom(self) -> kube.CustomObjectsApi:
        from kubernetes import client

        return client.CustomObjectsApi(self.api_client)

    def close(self) -> None:
        if "api_client" in self.__dict__:
            self.api_client.close()  # type: ignore[no-untyped-call]

    # Reading state.

    def pods(self, selector: str = INSTANCE_SELECTOR) -> list[kube.V1Pod]:
        return list(
            self.core.list_namespaced_pod(namespace=NAMESPACE, label_selector=selector).items
        )

    def worker_pods(self) -> list[kube.V1Pod]:
        """Worker pods that exist, terminating ones included."""
        return self.pods(WORKER_SELECTOR)

    def live_worker_pods(self) -> list[kube.V1Pod]:
        """Worker pods running and not being deleted."""
        return [
            p
            for p in self.worker_pods()
            if p.status is not None and p.status.phase == "Running" and not is_terminating(p)
        ]

    def worker_deployment(self) -> kube.V1Deployment:
        return self.apps.read_namespaced_deployment(name=WORKER, namespace=NAMESPACE)

    def worker_replicas(self) -> int:
        """The count KEDA/the HPA asked for (spec.replicas of the worker Deployment)."""
        spec = self.worker_deployment().spec
        return int(spec.replicas or 0) if spec is not None else 0

    def scaled_object(self) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            group="keda.sh",
            version="v1alpha1",
            namespace=NAMESPACE,
            plural="scaledobjects",
            name=SCALED_OBJECT,
        )
        assert isinstance(obj, dict), obj
        return obj

    def delete_pod(self, name: str) -> None:
        """An ordinary graceful delete: SIGTERM now, SIGKILL after the pod's own grace period."""
        self.core.delete_namespaced_pod(name=name, namespace=NAMESPACE)

    # Failure reports.

    def describe_workers(self) -> str:
        """One line for the Deployment, one per worker pod, and the ScaledObject's conditions."""
        lines = []
        try:
            dep = self.worker_deployment()
            spec, st = dep.spec, dep.status
            lines.append(
                f"deployment {WORKER}: spec.replicas={spec.replicas if spec else None} "
                f"ready={st.ready_replicas if st else None} "
                f"updated={st.updated_replicas if st else None}"
            )
        except Exception as exc:  # a report must not fail
            lines.append(f"deployment {WORKER}: {exc!r}")
        try:
            lines += [pod_summary(p) for p in self.worker_pods()] or ["no worker pods"]
        except Exception as exc:
            lines.append(f"worker pods: {exc!r}")
        try:
            status = self.scaled_object().get("status", {})
            for cond in status.get("conditions", []):
                lines.append(
                    f"scaledobject {cond.get('type')}={cond.get('status')} "
                    f"{cond.get('reason', '')}: {cond.get('message', '')}"
                )
        except Exception as exc:
            lines.append(f"scaledobject: {exc!r}")
        return "\n".join(lines)

    def diagnostics(self) -> str:
        """What an engineer would look at first: pods, KEDA's view, events, logs, queues."""
        ns = ["--namespace", NAMESPACE]
        commands: list[tuple[str, list[str]]] = [
            (
                "objects",
                ["get", "deploy,statefulset,rs,pod,svc,pvc,scaledobject,hpa", *ns, "-o", "wide"],
            ),
            ("scaledobject", ["describe", "scaledobject", SCALED_OBJECT, *ns]),
            ("hpa", ["describe", "hpa", HPA, *ns]),
            ("events", ["get", "events", *ns, "--sort-by=.metadata.creationTimestamp"]),
            (
                "worker logs",
                [
                    "logs",
                    *ns,
                    "-l",
                    WORKER_SELECTOR,
                    "--tail=100",
                    "--prefix",
                    "--max-log-requests=10",
                ],
            ),
            ("api logs", ["logs", *ns, f"deploy/{FULLNAME}-api", "--tail=50"]),
            ("queues", ["exec", *ns, f"deploy/{FULLNAME}-api", "--", "bgworker", "queues"]),
            (
                "keda operator logs",
                ["logs", "-n", KEDA_NAMESPACE, "deploy/keda-operator", "--tail=60"],
            ),
        ]
        parts = []
        try:
            parts.append("== pods ==\n" + "\n".join(pod_summary(p) for p in self.pods()))
        except Exception as exc:
            parts.append(f"== pods ==\n{exc!r}")
        for title, args in commands:
            try:
                proc = run(
                    *["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                    timeout=60,
                    env=self.env,
                    check=False,
                )
                text = (proc.stdout + proc.stderr).rstrip()
                if title == "events":
                    text = "\n".join(text.splitlines()[-60:])
            except Exception as exc:
                text = repr(exc)
            parts.append(f"== {title}: kubectl {' '.join(args)} ==\n{text}")
        return "\n\n".join(parts)


def pod_name(pod: kube.V1Pod) -> str:
    return str(pod.metadata.name) if pod.metadata is not None else "?"


def pod_component(pod: kube.V1Pod) -> str:
    labels = (pod.metadata.labels if pod.metadata is not None else None) or {}
    return str(labels.get("app.kubernetes.io/component", ""))


def is_terminating(pod: kube.V1Pod) -> bool:
    return pod.metadata is not None and pod.metadata.deletion_timestamp is not None


def is_ready(pod: kube.V1Pod) -> bool:
    conditions = (pod.status.conditions if pod.status else None) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def pod_summary(pod: kube.V1Pod) -> str:
    """name, phase, readiness and every container's state, restarts and last termination."""
    meta, status = pod.metadata, pod.status
    parts = [f"{meta.name if meta else '?'}: phase={status.phase if status else '?'}"]
    if meta is not None and meta.deletion_timestamp is not None:
        parts.append("(terminating)")
    if status is None:
        return " ".join(parts)
    if status.reason:
        parts.append(f"reason={status.reason}")
    for cond in status.conditions or []:
        if cond.status != "True":
            why = " ".join(x for x in (cond.reason, cond.message) if x)
            parts.append(f"{cond.type}={cond.status}[{why}]")
    for cs in status.container_statuses or []:
        state = cs.state
        if state is not None and state.waiting is not None:
            now = f"waiting {state.waiting.reason}: {state.waiting.message or ''}".rstrip()
        elif state is not None and state.terminated is not None:
            now = f"terminated {state.terminated.reason} exit={state.terminated.exit_code}"
        else:
            now = "running"
        parts.append(f"[{cs.name}: {now}, ready={cs.ready}, restarts={cs.restart_count}")
        last = cs.last_state.terminated if cs.last_state is not None else None
        if last is not None:
            parts[-1] += f", last exit {last.exit_code} ({last.reason})"
        parts[-1] += "]"
    return " ".join(parts)


# --- watching the worker count -------------------------------------------------------------


@dataclass
class ReplicaRecorder:
    """Samples the worker Deployment every second in a thread while a test waits on jobs."""

    cluster: Cluster
    interval: float = 1.0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (s, spec, ready)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = 0.0

    def __enter__(self) -> ReplicaRecorder:
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="replica-recorder", daemon=True)
        self._thread.start()
        return self

    def elapsed(self) -> float:
        """Seconds since recording began (the time axis of ``samples``)."""
        return time.monotonic() - self._started

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                dep = self.cluster.worker_deployment()
                spec = int(dep.spec.replicas or 0) if dep.spec else 0
                ready = int(dep.status.ready_replicas or 0) if dep.status else 0
                self.samples.append((time.monotonic() - self._started, spec, ready))
            except Exception as exc:  # keep sampling through API hiccups
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    @property
    def max_replicas(self) -> int:
        return max((s[1] for s in self.samples), default=0)

    @property
    def max_ready(self) -> int:
        return max((s[2] for s in self.samples), default=0)

    def timeline(self) -> str:
        """The changes only: "t=12s spec=1 ready=0; t=31s spec=4 ready=1; ..."."""
        changes, last = [], None
        for t, spec, ready in self.samples:
            if (spec, ready) != last:
                changes.append(f"t={t:.0f}s spec={spec} ready={ready}")
                last = (spec, ready)
        errors = f" ({len(self.errors)} errors, last {self.errors[-1]})" if self.errors else ""
        return "; ".join(changes) + errors


# --- reaching the API ----------------------------------------------------------------------


class PortForward:
    """``kubectl port-forward svc/...`` on a fixed loopback port, restarted when it dies.

    A port-forward follows one pod, picked when it starts, and ends (or stops answering)
    when that pod goes; restarting it against the Service picks a live pod again.
    """

    def __init__(self, cluster: Cluster, target: str, remote_port: int) -> None:
        self.cluster = cluster
        self.target = target
        self.remote_port = remote_port
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = cluster.kubeconfig.parent / f"port-forward-{self.port}.log"
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        with self._lock:
            self._start(timeout)

    def _start(self, timeout: float) -> None:
        self._stop()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                "kubectl",
                "--kubeconfig",
                str(self.cluster.kubeconfig),
                "port-forward",
                "--namespace",
                NAMESPACE,
                "--address",
                "127.0.0.1",
                self.target,
                f"{self.port}:{self.remote_port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.cluster.env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        log = self.log_path.read_text(errors="replace")[-2000:]
        self._stop()
        raise AssertionError(
            f"kubectl port-forward {self.target} to 127.0.0.1:{self.port} did not come up "
            f"within {timeout:.0f} s; its output:\n{log}"
        )

    def restart(self) -> None:
        with self._lock:
            self.restarts += 1
            print(
                f"restarting port-forward {self.target} (restart {self.restarts})", file=sys.stderr
            )
            self._start(60.0)

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None


class ReconnectingTransport(httpx.HTTPTransport):
    """Restarts the port-forward and retries when the connection to it fails.

    Only where a retry cannot duplicate work: any request that never connected, and GETs
    whose connection broke (a POST that may have reached the API is not sent twice, since
    an extra job would change the counts the tests check).
    """

    def __init__(self, forward: PortForward, attempts: int = 3) -> None:
        super().__init__()
        self.forward = forward
        self.attempts = attempts

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(1, self.attempts + 1):
            try:
                return super().handle_request(request)
            except httpx.ConnectError:
                if attempt == self.attempts:
                    raise
            except (httpx.RemoteProtocolError, httpx.ReadError):
                if request.method != "GET" or attempt == self.attempts:
                    raise
            self.forward.restart()
        raise AssertionError("unreachable")


class ForwardedApi(Api):
    """The e2e API client, talking through a self-healing port-forward."""

    def __init__(self, forward: PortForward, timeout: float = 30.0, token: str = "") -> None:
        super().__init__(forward.url, timeout=timeout, token=token)
        self.http.close()
        self.http = httpx.Client(
            base_url=self.base_url,
            timeout=timeout,
            transport=ReconnectingTransport(forward),
            headers=self.headers,
        )
