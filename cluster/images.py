"""Images into the node: built with Docker here, moved into the node's containerd.

The node's containerd is not Docker's, and no registry is reachable, so every image a pod
runs is ``docker save``d and imported with ``ctr`` into the CRI namespace (what ``kind
load docker-image`` does for kind). Pods must then never pull: the chart and the cluster's
manifests use ``IfNotPresent``/``Never`` with non-``latest`` tags.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from cluster import processes, settings


class DockerUnavailable(Exception):
    pass


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0


def ensure_docker(paths: settings.Paths) -> None:
    """A Docker engine that answers: one already running, else ``dockerd`` started here
    (as a cluster process, stopped again by ``down``)."""
    if _docker_answers():
        return
    if shutil.which("dockerd") is None:
        raise DockerUnavailable("dockerd is not installed (Debian: apt-get install docker.io)")
    processes.start(paths, "dockerd", [shutil.which("dockerd") or "dockerd"])
    processes.wait_healthy(paths, "dockerd", _docker_answers, timeout=90)


def build_cluster_images(bin_dir: Path) -> list[str]:
    """The pause and KEDA images from cluster/Dockerfile; their references."""
    versions = settings.read_versions()
    keda = versions["KEDA_VERSION"].lstrip("v")
    refs = {
        "pause": settings.PAUSE_IMAGE,
        "keda-operator": f"{settings.IMAGE_PREFIX}/keda:{keda}",
        "keda-metrics-apiserver": f"{settings.IMAGE_PREFIX}/keda-metrics-apiserver:{keda}",
    }
    for target, ref in refs.items():
        subprocess.run(
            ["docker", "build", "--quiet", "--file", str(settings.HERE / "Dockerfile"),
             "--target", target, "--tag", ref, str(bin_dir)],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    return list(refs.values())


def load(paths: settings.Paths, refs: Sequence[str]) -> float:
    """``docker save`` the images and import them into the node's containerd; seconds taken."""
    started = time.monotonic()
    save = subprocess.Popen(["docker", "save", *refs], stdout=subprocess.PIPE)
    imported = subprocess.run(
        ["ctr", "--address", str(paths.containerd_socket), "--namespace",
         settings.CONTAINERD_NAMESPACE, "images", "import", "-"],
        stdin=save.stdout, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert save.stdout is not None
    save.stdout.close()
    if save.wait() != 0 or imported.returncode != 0:
        raise RuntimeError(
            f"loading {', '.join(refs)} into the node failed: {imported.stderr.strip()[-800:]}"
        )
    return time.monotonic() - started
