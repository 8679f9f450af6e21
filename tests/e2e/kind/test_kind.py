"""The whole chart on a real kind cluster with KEDA: install, thumbnails, autoscaling from
and back to zero, and no job lost or run twice through pod deletion, scale-in and a rollout.

The tests share one release (conftest.py) and run in file order; each starts from and
leaves an idle system (no job waiting or running). Timeouts are generous on purpose: a
CI runner with 4 CPUs starts pods slowly, and a failure should be about bgworker, not
about a busy machine. Every failure carries the cluster's state (conftest.py's hook).
"""

from __future__ import annotations

import datetime
import re
import time
from typing import Any

import pytest

from tests.e2e.api_client import is_webp, photo
from tests.e2e.kind import figures, k8s
from tests.e2e.kind.k8s import Cluster, ForwardedApi, ReplicaRecorder, wait_until

# The first test's setup builds everything (cluster, images, KEDA, release): minutes.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

VALUES = k8s.suite_values()
AUTOSCALING: dict[str, Any] = VALUES["autoscaling"]
GRACE = VALUES["worker"]["shutdownTimeout"] + VALUES["worker"]["terminationGraceMarginSeconds"]
# Pod start-up and KEDA's and the HPA's reaction times, with room for a slow machine.
SLACK = 300


def iso_seconds(stamp: str) -> float:
    """A job record's ISO 8601 time as a Unix timestamp (the node and this host share a clock)."""
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def wait_workers_gone(cluster: Cluster) -> None:
    """Until KEDA has scaled the workers to zero and the last worker pod has exited."""

    def at_zero() -> bool:
        return cluster.worker_replicas() == 0 and not cluster.worker_pods()

    wait_until(
        at_zero,
        timeout=AUTOSCALING["cooldownPeriod"] + GRACE + SLACK,
        what="the worker Deployment to scale to 0 with no worker pod left",
        describe=cluster.describe_workers,
    )


def wait_running(api: ForwardedApi, cluster: Cluster, ids: list[str], count: int) -> None:
    """Until at least ``count`` of the jobs are running on at least ``count`` live worker pods."""

    def enough() -> bool:
        running = sum(1 for i in ids if api.job(i)["state"] == "running")
        return running >= count and len(cluster.live_worker_pods()) >= count

    wait_until(
        enough,
        timeout=SLACK,
        what=f"{count} jobs running on {count} worker pods",
        describe=lambda: _jobs_and_workers(api, cluster, ids),
    )


def _jobs_and_workers(api: ForwardedApi, cluster: Cluster, ids: list[str]) -> str:
    states = {i: api.job(i)["state"] for i in ids}
    return f"jobs: {states}\n{cluster.describe_workers()}"


def assert_started_once(api: ForwardedApi, ids: list[str], why: str) -> None:
    """No job's body started twice (``attempts`` counts every start, redeliveries included)."""
    again = {i: a for i in ids if (a := api.job(i)["attempts"]) != 1}
    assert not again, f"jobs started more than once (id: attempts): {again}; {why}"


def test_release_is_ready_and_helm_test_passes(kind_cluster: Cluster, release: None) -> None:
    """API and Redis pods are Ready, and the chart's own `helm test` (bgworker smoke) passes.

    The smoke job uploads a photo with the workers at zero or one: it also proves that
    KEDA can read Redis (address, password from the TriggerAuthentication) and wake them.
    """

    def api_and_redis_ready() -> bool:
        pods = [
            p
            for p in kind_cluster.pods()
            if k8s.pod_component(p) in ("api", "redis") and not k8s.is_terminating(p)
        ]
        components = {k8s.pod_component(p) for p in pods}
        return components == {"api", "redis"} and all(k8s.is_ready(p) for p in pods)

    wait_until(
        api_and_redis_ready,
        timeout=SLACK,
        what="the API and Redis pods to be Ready",
        describe=lambda: "\n".join(k8s.pod_summary(p) for p in kind_cluster.pods()),
    )
    # Exit 0 is helm's verdict; --logs puts the smoke pod's output in a failure message.
    kind_cluster.helm(
        "test", k8s.RELEASE, "--namespace", k8s.NAMESPACE, "--logs", "--timeout", "6m",
        timeout=450,
    )  # fmt: skip
    smoke = kind_cluster.core.read_namespaced_pod(
        name=f"{k8s.FULLNAME}-smoke", namespace=k8s.NAMESPACE
    )
    assert smoke.status is not None and smoke.status.phase == "Succeeded", k8s.pod_summary(smoke)


def test_upload_yields_webp_thumbnails(kind_api: ForwardedApi) -> None:
    """A photo through the API (port-forward) comes back as a WebP per configured width:
    the API wrote the upload and a worker read it from the shared ReadWriteOnce volume."""
    job_id = kind_api.upload(photo())
    kind_api.assert_each_succeeded_once([job_id], timeout=SLACK)
    job = kind_api.job(job_id)
    widths = [str(w) for w in VALUES["config"]["thumbnailWidths"]]
    thumbnails = job["result"]["thumbnails"]
    assert sorted(thumbnails, key=int) == sorted(widths, key=int), job["result"]
    for width in widths:
        response = kind_api.thumbnail(job_id, int(width))
        assert response.status_code == 200, (
            f"thumbnail {width}: {response.status_code} {response.text[:200]}"
        )
        assert is_webp(response.content), (
            f"thumbnail {width} is not WebP: {response.content[:16]!r}"
        )
        assert "immutable" in response.headers.get("cache-control", ""), response.headers


def test_workers_scale_from_zero_to_several_and_back(
    kind_cluster: Cluster, kind_api: ForwardedApi
) -> None:
    """A backlog wakes the workers from zero, KEDA/HPA add more than one, every job runs
    once, and the Deployment goes back to zero after the cooldown."""
    wait_workers_gone(kind_cluster)
    count, seconds = 40, 5  # 40 waiting / listLength 2 = 20 desired, capped at maxReplicaCount
    with ReplicaRecorder(kind_cluster) as seen:
        enqueued = time.time()
        ids = kind_api.sleep_jobs(count, seconds)
        kind_api.assert_each_succeeded_once(ids, timeout=count * seconds + 2 * SLACK)
    assert seen.max_replicas > 1, (
        f"the workers never scaled beyond {seen.max_replicas} for {count} waiting jobs "
        f"(spec.replicas over time: {seen.timeline()})\n{kind_cluster.describe_workers()}"
    )
    assert seen.max_replicas <= AUTOSCALING["maxReplicaCount"], seen.timeline()
    jobs = [kind_api.job(i) for i in ids]
    first_start = min(iso_seconds(j["started_at"]) for j in jobs)
    last_finish = max(iso_seconds(j["finished_at"]) for j in jobs)
    figures.record(
        f"backlog of {count} jobs to the first one starting on a worker scaled from zero",
        first_start - enqueued,
    )
    wait_workers_gone(kind_cluster)
    figures.record(
        f"last job done to zero workers (cooldownPeriod {AUTOSCALING['cooldownPeriod']} s)",
        time.time() - last_finish,
    )


def test_pod_deletion_and_scale_in_lose_nothing(
    kind_cluster: Cluster, kind_api: ForwardedApi
) -> None:
    """Busy workers deleted (SIGTERM) and scaled in (maxReplicaCount 4 -> 1, the operator's
    `helm upgrade --reuse-values`) finish the job in hand: every job succeeds exactly once,
    none starts twice, and the succeeded counter moves by exactly the number of jobs."""
    before = kind_api.succeeded_total()
    ids = kind_api.sleep_jobs(8, 20)  # 8 jobs / listLength 2 = 4 workers
    try:
        wait_running(kind_api, kind_cluster, ids, 2)
        victims = sorted(k8s.pod_name(p) for p in kind_cluster.live_worker_pods())[:2]
        for name in victims:
            kind_cluster.delete_pod(name)
        set_max_replicas(kind_cluster, 1)
        kind_api.assert_each_succeeded_once(ids, timeout=len(ids) * 20 + 2 * SLACK)
        wait_until(
            lambda: not {k8s.pod_name(p) for p in kind_cluster.worker_pods()} & set(victims),
            timeout=GRACE + 60,
            what=f"the deleted worker pods {victims} to be gone",
            describe=kind_cluster.describe_workers,
        )
    finally:
        # Restored even after a failure (the next test needs 4), without hiding that failure.
        set_max_replicas(kind_cluster, AUTOSCALING["maxReplicaCount"], check=False)
    top = AUTOSCALING["maxReplicaCount"]
    wait_until(
        lambda: kind_cluster.scaled_object()["spec"]["maxReplicaCount"] == top,
        timeout=60,
        what=f"the ScaledObject to carry maxReplicaCount {top} again",
    )
    assert_started_once(
        kind_api,
        ids,
        f"a stopping worker has {VALUES['worker']['shutdownTimeout']} s for a 20 s job",
    )
    assert kind_api.succeeded_total() - before == len(ids)


def test_rollout_restart_under_load_loses_nothing(
    kind_cluster: Cluster, kind_api: ForwardedApi
) -> None:
    """`kubectl rollout restart` while workers are busy: old workers finish their jobs,
    new ones take the rest; every job succeeds exactly once and none starts twice."""
    ids = kind_api.sleep_jobs(10, 5)
    wait_running(kind_api, kind_cluster, ids, 1)
    deployment = f"deployment/{k8s.WORKER}"
    kind_cluster.kubectl("rollout", "restart", deployment, "--namespace", k8s.NAMESPACE)
    kind_cluster.kubectl(
        "rollout", "status", deployment, "--namespace", k8s.NAMESPACE, "--timeout=15m",
        timeout=960,
    )  # fmt: skip
    spec = kind_cluster.worker_deployment().spec
    annotations = (
        spec.template.metadata.annotations if spec and spec.template.metadata else None
    ) or {}
    assert "kubectl.kubernetes.io/restartedAt" in annotations, annotations
    kind_api.assert_each_succeeded_once(ids, timeout=len(ids) * 5 + 2 * SLACK)
    assert_started_once(kind_api, ids, "old workers finish their 5 s jobs before they exit")


def set_max_replicas(cluster: Cluster, count: int, check: bool = True) -> None:
    """`helm upgrade --reuse-values --set autoscaling.maxReplicaCount=N`, as an operator
    would (images and every other value stay), then wait until the ScaledObject has it."""
    cluster.helm(
        "upgrade", k8s.RELEASE, str(k8s.CHART), "--namespace", k8s.NAMESPACE, "--reuse-values",
        "--set", f"autoscaling.maxReplicaCount={count}",
        timeout=300, check=check,
    )  # fmt: skip
    if check:
        wait_until(
            lambda: cluster.scaled_object()["spec"]["maxReplicaCount"] == count,
            timeout=60,
            what=f"the ScaledObject to carry maxReplicaCount {count}",
        )


def test_sigkilled_pod_job_is_redelivered(kind_cluster: Cluster, kind_api: ForwardedApi) -> None:
    """A worker pod killed without a graceful shutdown (`kubectl delete --grace-period=0
    --force`: the kubelet kills it at once, as an OOM kill or a lost node would) leaves its
    job unacknowledged in Redis; a live worker restores it after the visibility timeout and
    it succeeds exactly once, on its second start."""
    wait_workers_gone(kind_cluster)  # then the one job wakes exactly one worker: it runs it
    ids = kind_api.sleep_jobs(1, 20)
    wait_running(kind_api, kind_cluster, ids, 1)
    live = kind_cluster.live_worker_pods()
    assert len(live) == 1, [k8s.pod_summary(p) for p in live]
    victim = k8s.pod_name(live[0])
    killed = time.monotonic()
    kind_cluster.kubectl(
        "delete", "pod", victim, "--namespace", k8s.NAMESPACE, "--grace-period=0", "--force",
        "--wait=false",
    )  # fmt: skip
    visibility = VALUES["config"]["timeLimit"] + VALUES["config"]["visibilityMargin"]
    kind_api.assert_each_succeeded_once(ids, timeout=visibility + 20 + 2 * SLACK)
    job = kind_api.job(ids[0])
    assert job["attempts"] == 2, f"expected one redelivery after the kill: {job}"
    figures.record("SIGKILLed worker's job done again (visibility timeout + restore)",
                   time.monotonic() - killed)  # fmt: skip


def test_running_job_keeps_a_worker_past_the_cooldown(
    kind_cluster: Cluster, kind_api: ForwardedApi
) -> None:
    """One job longer than the cooldown: once a worker has taken it the queue is empty, so
    a trigger on the queue alone would scale the worker away under it after
    cooldownPeriod. The in-flight trigger (kombu's unacked hash) keeps it: the worker count
    never drops to zero while the job runs, and the job starts once."""
    wait_workers_gone(kind_cluster)
    seconds = 60
    # KEDA's last step to zero comes cooldownPeriod after the trigger was last active.
    assert seconds > AUTOSCALING["cooldownPeriod"] + 4 * AUTOSCALING["pollingInterval"]
    with ReplicaRecorder(kind_cluster) as seen:
        ids = kind_api.sleep_jobs(1, seconds)
        wait_running(kind_api, kind_cluster, ids, 1)
        running_from = seen.elapsed()
        kind_api.assert_each_succeeded_once(ids, timeout=seconds + SLACK)
        finished_at = seen.elapsed()
    while_running = [spec for t, spec, _ in seen.samples if running_from <= t <= finished_at - 2]
    assert while_running and min(while_running) >= 1, (
        f"the worker count fell to 0 under a running job: {seen.timeline()}"
    )
    assert_started_once(kind_api, ids, "the worker that took it kept running")
    wait_workers_gone(kind_cluster)


def paused_replicas_commands() -> list[str]:
    """The pause/resume commands of docs/operations.md ("Pause autoscaling"), as written,
    for this suite's release and namespace."""
    text = (k8s.REPO / "docs" / "operations.md").read_text()
    commands = re.findall(r"^kubectl .*paused-replicas.*$", text, flags=re.M)
    pause = next(c for c in commands if 'paused-replicas="0"' in c)
    resume = next(c for c in commands if "paused-replicas-" in c)
    # The doc is written for release bgw in namespace bgworker.
    return [
        c.replace("-n bgworker ", f"-n {k8s.NAMESPACE} ").replace(
            "bgw-bgworker-", f"{k8s.FULLNAME}-"
        )
        for c in (pause, resume)
    ]


def test_paused_replicas_annotation_from_the_docs_holds_workers(
    kind_cluster: Cluster, kind_api: ForwardedApi
) -> None:
    """docs/operations.md's `autoscaling.keda.sh/paused-replicas="0"` holds the workers at
    zero while jobs wait (the API keeps accepting them), and its resume command lets KEDA
    scale up again: every job then succeeds once."""
    pause, resume = paused_replicas_commands()
    wait_workers_gone(kind_cluster)
    kind_cluster.kubectl(*pause.split()[1:])
    try:
        wait_until(
            lambda: (
                "autoscaling.keda.sh/paused-replicas"
                in (kind_cluster.scaled_object()["metadata"].get("annotations") or {})
            ),
            timeout=30,
            what="the annotation on the ScaledObject",
        )
        with ReplicaRecorder(kind_cluster) as seen:
            ids = kind_api.sleep_jobs(4, 2)
            time.sleep(4 * AUTOSCALING["pollingInterval"] + 10)
        assert seen.max_replicas == 0, f"workers started while paused: {seen.timeline()}"
        assert all(kind_api.job(i)["state"] == "queued" for i in ids)
    finally:
        kind_cluster.kubectl(*resume.split()[1:], check=False)
    kind_api.assert_each_succeeded_once(ids, timeout=2 * SLACK)
    wait_workers_gone(kind_cluster)


# Helm's longest release name (53); every object name the chart derives from it must fit
# its own limit (StatefulSet 52 for its pods' revision label, KEDA's keda-hpa-<name> 63).
LONG_RELEASE = "bgworker-release-with-the-longest-name-helm-accepts-x"


def test_a_53_character_release_installs(kind_cluster: Cluster, kind_images: dict[str, str],
                                         keda: str) -> None:  # fmt: skip
    """A second release named with 53 characters, in a namespace of its own: every pod gets
    Ready (Redis' StatefulSet creates its pod) and KEDA accepts its ScaledObject and makes
    the HPA."""
    assert len(LONG_RELEASE) == 53
    namespace = "bgworker-e2e-long"
    kind_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=true",
                         "--timeout=300s", timeout=330)  # fmt: skip
    kind_cluster.kubectl("create", "namespace", namespace)
    try:
        kind_cluster.helm(
            "install", *k8s.release_args(kind_images, LONG_RELEASE, namespace),
            "--wait", "--timeout", "5m", timeout=420,
        )  # fmt: skip
        selector = f"app.kubernetes.io/instance={LONG_RELEASE}"
        pods = kind_cluster.core.list_namespaced_pod(namespace, label_selector=selector).items
        components = {k8s.pod_component(p) for p in pods if k8s.is_ready(p)}
        assert {"api", "redis"} <= components, [k8s.pod_summary(p) for p in pods]
        scaled = kind_cluster.custom.list_namespaced_custom_object(
            "keda.sh", "v1alpha1", namespace, "scaledobjects"
        )["items"]
        assert len(scaled) == 1, scaled

        def ready_with_hpa() -> bool:
            obj = kind_cluster.custom.list_namespaced_custom_object(
                "keda.sh", "v1alpha1", namespace, "scaledobjects"
            )["items"][0]
            conditions = {
                c["type"]: c["status"] for c in obj.get("status", {}).get("conditions", [])
            }
            hpa = obj.get("status", {}).get("hpaName")
            return conditions.get("Ready") == "True" and bool(hpa)

        wait_until(
            ready_with_hpa, timeout=120, what="KEDA to accept the ScaledObject and make its HPA"
        )
    finally:
        kind_cluster.helm("uninstall", LONG_RELEASE, "--namespace", namespace, "--wait",
                          timeout=300, check=False)  # fmt: skip
        kind_cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found",
                             "--wait=false", check=False)  # fmt: skip
