"""Command lines and configuration files of the cluster's host processes.

Flags follow Kubernetes' ``hack/local-up-cluster.sh`` where it has them (authorization
Node,RBAC; service-account keys; the aggregation layer's request-header flags, which
KEDA's metrics APIService needs; the controller manager with per-controller credentials),
written for this machine: cgroup v1 without systemd (cgroupfs driver), a node IP on our
bridge, nothing listening beyond loopback and that bridge.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cluster import settings

Argv = list[str]


def etcd(paths: settings.Paths, bin_dir: Path) -> Argv:
    client = f"http://127.0.0.1:{settings.ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{settings.ETCD_PEER_PORT}"
    return [
        str(bin_dir / "etcd"),
        "--name=localkube",
        f"--data-dir={paths.etcd}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=localkube={peer}",
        # A throwaway test cluster on a VM disk: skipping fsync makes every write to the
        # API (leases, events, status) cheap. The jobs' data is in Redis, not here.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def etcd_url() -> str:
    return f"http://127.0.0.1:{settings.ETCD_CLIENT_PORT}"


def apiserver(paths: settings.Paths, bin_dir: Path) -> Argv:
    pki = paths.pki
    return [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers={etcd_url()}",
        f"--bind-address={settings.NODE_IP}",
        f"--advertise-address={settings.NODE_IP}",
        f"--secure-port={settings.APISERVER_PORT}",
        f"--service-cluster-ip-range={settings.SERVICE_CIDR}",
        f"--client-ca-file={pki / 'ca.crt'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}",
        f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-account-issuer=https://kubernetes.default.svc.{settings.CLUSTER_DOMAIN}",
        "--authorization-mode=Node,RBAC",
        "--enable-admission-plugins=NodeRestriction",
        # The aggregation layer: the API server proxies external.metrics.k8s.io to KEDA's
        # metrics server, authenticating with the front proxy's client certificate.
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
        # Reach aggregated API servers at their pod IPs (the host routes the pod range over
        # the bridge) rather than through a Service IP that needs kube-proxy first.
        "--enable-aggregator-routing=true",
        "--profiling=false",
        "--v=1",
    ]


def controller_manager(paths: settings.Paths, bin_dir: Path) -> Argv:
    pki = paths.pki
    kubeconfig = paths.config / "controller-manager.kubeconfig"
    return [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={settings.CONTROLLER_MANAGER_PORT}",
        "--controllers=*",
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={pki / 'sa.key'}",
        f"--root-ca-file={pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={pki / 'ca.crt'}",
        f"--cluster-signing-key-file={pki / 'ca.key'}",
        f"--service-cluster-ip-range={settings.SERVICE_CIDR}",
        f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
        "--leader-elect=false",
        "--v=1",
    ]


def scheduler(paths: settings.Paths, bin_dir: Path) -> Argv:
    kubeconfig = paths.config / "scheduler.kubeconfig"
    return [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={settings.SCHEDULER_PORT}",
        "--leader-elect=false",
        "--v=1",
    ]


def containerd_config(paths: settings.Paths) -> Path:
    """containerd 1.6 (Debian's) with its CRI plugin, beside Docker's containerd: own root,
    state and socket; the pause image built here; runc with cgroupfs, as the kubelet."""
    root = paths.containerd
    text = f"""version = 2
root = "{root / "root"}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "{paths.containerd_socket}"

[ttrpc]
  address = "{paths.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / "opt"}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/{settings.PAUSE_IMAGE}"
  enable_selinux = false
  # This VM withholds CAP_SYS_RESOURCE even from root, so no process may lower its
  # oom_score_adj below ours: runc would fail on the sandbox's -998 ("can't get final
  # child's PID from pipe"). Clamp containers to containerd's own score instead.
  restrict_oom_score_adj = true

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{paths.cni_conf}"
"""
    path = paths.config / "containerd.toml"
    path.write_text(text)
    return path


def containerd(paths: settings.Paths) -> Argv:
    return ["/usr/bin/containerd", "--config", str(paths.config / "containerd.toml")]


def cni_config(paths: settings.Paths) -> None:
    """The pod network: Debian's bridge + host-local plugins on our bridge, no masquerade."""
    paths.cni_conf.mkdir(parents=True, exist_ok=True)
    conf = {
        "cniVersion": "1.0.0",
        "name": "localkube",
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                # A pod reaching a Service that lands on itself (kube-proxy's hairpin).
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [
                        [
                            {
                                "subnet": settings.POD_CIDR,
                                "gateway": settings.POD_GATEWAY,
                                "rangeStart": settings.POD_RANGE_START,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam),
                },
            }
        ],
    }
    (paths.cni_conf / "10-localkube.conflist").write_text(json.dumps(conf, indent=2))


def kubelet_config(paths: settings.Paths) -> Path:
    pki = paths.pki
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": settings.NODE_IP,
        "port": settings.KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": settings.KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # This VM: cgroup v1, no systemd. 1.35+ refuses cgroup v1 unless told not to.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": "/localkube",
        "failCgroupV1": False,
        "failSwapOn": False,
        # Its default, -999, cannot be set here (no CAP_SYS_RESOURCE; see containerd_config).
        "oomScoreAdj": 0,
        "clusterDNS": [settings.DNS_IP],
        "clusterDomain": settings.CLUSTER_DOMAIN,
        # No host resolver in pods: they resolve cluster names only (CoreDNS forwards none).
        "resolvConf": "",
        # Images cannot be pulled again here: never garbage-collect them, never evict for
        # a disk that is merely fuller than a cloud node's thresholds.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(paths.kubelet / "volume-plugins"),
        "serializeImagePulls": False,
        "maxPods": 110,
    }
    path = paths.config / "kubelet.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def kubelet(paths: settings.Paths, bin_dir: Path) -> Argv:
    return [
        str(bin_dir / "kubelet"),
        f"--config={paths.config / 'kubelet.yaml'}",
        f"--kubeconfig={paths.config / 'kubelet.kubeconfig'}",
        f"--root-dir={paths.kubelet}",
        f"--hostname-override={settings.NODE_NAME}",
        f"--node-ip={settings.NODE_IP}",
        "--v=1",
    ]


def proxy_config(paths: settings.Paths) -> Path:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(paths.config / "proxy.kubeconfig")},
        "mode": "iptables",
        "clusterCIDR": settings.POD_CIDR,
        "hostnameOverride": settings.NODE_NAME,
        "bindAddress": settings.NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{settings.PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": f"127.0.0.1:{settings.PROXY_METRICS_PORT}",
        "nodePortAddresses": [f"{settings.NODE_IP}/32"],
        # 0: leave the host's conntrack settings alone (no sysctl writes on this VM).
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False},
    }
    path = paths.config / "proxy.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def proxy(paths: settings.Paths, bin_dir: Path) -> Argv:
    return [str(bin_dir / "kube-proxy"), f"--config={paths.config / 'proxy.yaml'}", "--v=1"]


def coredns_config(paths: settings.Paths) -> Path:
    """Cluster names only, on the node IP: no ``forward`` (pods need no outside names)."""
    kubeconfig = paths.config / "coredns.kubeconfig"
    domain = settings.CLUSTER_DOMAIN
    text = f""".:53 {{
    bind {settings.DNS_IP}
    errors
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 30
    loadbalance
}}
"""
    path = paths.config / "Corefile"
    path.write_text(text)
    return path


def coredns(paths: settings.Paths, bin_dir: Path) -> Argv:
    return [str(bin_dir / "coredns"), "-conf", str(paths.config / "Corefile")]


def provisioner(paths: settings.Paths, bin_dir: Path) -> Argv:
    return [
        str(bin_dir / "provisioner"),
        f"-kubeconfig={paths.config / 'provisioner.kubeconfig'}",
        f"-dir={paths.volumes}",
        f"-name={settings.PROVISIONER_NAME}",
    ]
