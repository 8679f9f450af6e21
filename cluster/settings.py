"""Every address, port, path and name of the local cluster, in one place.

All addresses belong to a bridge this package creates (``BRIDGE``) and removes again: the
node IP, which is also the pods' gateway (the CNI bridge plugin refuses a bridge that has
any other IPv4 address than its gateway), the pod range, and the Service range (virtual:
kube-proxy's iptables rules). Nothing routes pod traffic off
the machine (network.py drops any forwarding out of the bridge).

Environment (``LOCALKUBE_*``, not ``BGWORKER_*``: that prefix is bgworker's own and its
settings check stops a process at an unknown name):
- ``LOCALKUBE_DIR``: state directory (default /var/lib/bgworker-localkube);
- ``LOCALKUBE_CACHE``: where cluster/build.sh keeps built binaries (its default otherwise).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

NODE_NAME = "localkube"
BRIDGE = "lkube0"
NODE_IP = "10.251.0.1"
NODE_PREFIX = 16
POD_CIDR = "10.251.0.0/16"
POD_GATEWAY = NODE_IP
# Pods get addresses from here on (the rest of the /16 is left to the node).
POD_RANGE_START = "10.251.1.1"
SERVICE_CIDR = "10.252.0.0/16"
KUBERNETES_SERVICE_IP = "10.252.0.1"
# CoreDNS runs on the host, on the node IP: pods reach it through the bridge.
DNS_IP = NODE_IP
CLUSTER_DOMAIN = "cluster.local"

ETCD_CLIENT_PORT = 12379
ETCD_PEER_PORT = 12380
APISERVER_PORT = 6443
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
CONTROLLER_MANAGER_PORT = 10257
SCHEDULER_PORT = 10259
PROXY_HEALTHZ_PORT = 10256
PROXY_METRICS_PORT = 10249

STORAGE_CLASS = "standard"
PROVISIONER_NAME = "localkube.bgworker.dev/dir"
KEDA_NAMESPACE = "keda"
# Images made here and imported into the node's containerd (cluster/Dockerfile).
IMAGE_PREFIX = "localkube"
PAUSE_IMAGE = f"{IMAGE_PREFIX}/pause:1"
CONTAINERD_NAMESPACE = "k8s.io"

# The apt packages the node needs (Debian 12).
PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "conntrack": "conntrack",
    "iptables": "iptables",
    "docker": "docker.io",
    "dockerd": "docker.io",
}


def read_versions() -> dict[str, str]:
    """cluster/versions.env as a dict (the pins build.sh builds)."""
    versions: dict[str, str] = {}
    for line in (HERE / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            versions[key] = value
    return versions


@dataclass(frozen=True)
class Paths:
    """Where the cluster keeps its state; everything under ``root`` goes on ``down``."""

    root: Path

    @classmethod
    def from_env(cls) -> Paths:
        return cls(Path(os.environ.get("LOCALKUBE_DIR", "/var/lib/bgworker-localkube")))

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def etcd(self) -> Path:
        return self.root / "etcd"

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def kubelet(self) -> Path:
        return self.root / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.root / "pod-logs"

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def netns_before(self) -> Path:
        """Network namespaces that existed before ``up`` (``down`` leaves them alone)."""
        return self.root / "netns-before"

    @property
    def bin_dir_file(self) -> Path:
        """The directory of binaries this cluster runs (cluster/build.sh's output)."""
        return self.root / "bin-dir"
