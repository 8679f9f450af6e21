"""``up`` and ``down``: the order things start in, what each waits for, and the undoing.

``up`` is idempotent: a cluster that is already up is left as it is. ``down`` undoes
everything ``up`` did, also after a crash half-way (each step tolerates what is already
gone), and refuses to delete the state directory while anything is mounted below it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cluster import components, host, images, pki, processes, settings

# Start order; ``down`` stops in the reverse order.
COMPONENTS = (
    "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "containerd",
    "kubelet", "kube-proxy", "coredns", "provisioner",
)  # fmt: skip


def say(message: str) -> None:
    print(f"localkube: {message}", file=sys.stderr, flush=True)


def require_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit(
            "localkube: the cluster runs a kubelet, containerd and iptables rules on this "
            "machine: run it as root (sudo make cluster)"
        )


def ensure_packages() -> None:
    """Debian packages the node needs (containerd, runc, CNI plugins, conntrack, iptables,
    Docker for building images), installed when missing."""
    missing = sorted(
        {
            package
            for what, package in settings.PACKAGES.items()
            if not (Path(what).exists() if what.startswith("/") else shutil.which(what))
        }
    )
    if not missing:
        return
    say(f"installing {' '.join(missing)} with apt-get")
    try:
        host.apt_get_install(missing)
    except RuntimeError as exc:
        raise SystemExit(f"localkube: {exc}") from None


def build() -> Path:
    """cluster/build.sh's output directory (built now if the cache has none for this key)."""
    result = subprocess.run(
        [str(settings.HERE / "build.sh")], stdout=subprocess.PIPE, text=True, timeout=3 * 3600
    )
    if result.returncode != 0:
        raise SystemExit("localkube: building the cluster's binaries failed (see above)")
    return Path(result.stdout.strip().splitlines()[-1])


def bin_dir(paths: settings.Paths) -> Path:
    try:
        return Path(paths.bin_dir_file.read_text().strip())
    except OSError:
        raise SystemExit("localkube: no cluster is up (python -m cluster up)") from None


def kubectl(paths: settings.Paths, *args: str, timeout: float = 120, check: bool = True,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    result = subprocess.run(
        [str(bin_dir(paths) / "kubectl"), f"--kubeconfig={paths.admin_kubeconfig}", *args],
        capture_output=True, text=True, timeout=timeout, input=stdin,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()[-1500:]}")
    return result


def _https_ok(url: str, paths: settings.Paths, client: bool = True) -> bool:
    context = ssl.create_default_context(cafile=str(paths.pki / "ca.crt"))
    if client:
        context.load_cert_chain(paths.pki / "admin.crt", paths.pki / "admin.key")
    else:  # the components' own serving certificates are self-signed: health only
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        return bool(response.status == 200)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


def _dns_answers(name: str) -> bool:
    """One A query to the cluster DNS; true when it answers NOERROR with a record."""
    query = struct.pack(">HHHHHH", 0x4C4B, 0x0100, 1, 0, 0, 0)
    query += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    query += struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        sock.sendto(query, (settings.DNS_IP, 53))
        reply = sock.recv(512)
    flags, _, answers = struct.unpack(">HHH", reply[2:8])
    return bool(flags & 0x000F == 0 and answers > 0)


class Timer:
    """Seconds per step, kept for docs/performance.md (the e2e suite reads them)."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}
        self._start = time.monotonic()

    def step(self, name: str, action: Callable[[], object]) -> None:
        began = time.monotonic()
        say(f"{name} ...")
        action()
        self.steps[name] = round(time.monotonic() - began, 1)
        say(f"{name}: done in {self.steps[name]:.1f} s")

    @property
    def total(self) -> float:
        return round(time.monotonic() - self._start, 1)


def is_up(paths: settings.Paths) -> bool:
    """Every component runs and the last ``up`` finished (it writes its timings last)."""
    return (paths.root / "up-timings.json").is_file() and all(
        processes.running_pid(paths, name) is not None for name in COMPONENTS
    )


def up(paths: settings.Paths) -> None:
    require_root()
    if is_up(paths):
        say(f"already up; kubeconfig {paths.admin_kubeconfig}")
        return
    if paths.root.exists():
        say(f"{paths.root} holds a stopped or half-started cluster: removing it first")
        down(paths)
    ensure_packages()
    built = build()
    timer = Timer()
    paths.root.mkdir(parents=True)
    paths.root.chmod(0o755)
    paths.bin_dir_file.write_text(f"{built}\n")
    paths.netns_before.write_text("\n".join(sorted(host.netns_names())))
    bins = built  # the binaries every step below runs

    def network() -> None:
        host.sysctls()
        host.bridge_up()
        host.firewall_up()

    def control_plane() -> None:
        pki.create(paths)
        processes.start(paths, "etcd", components.etcd(paths, bins))
        processes.wait_healthy(
            paths, "etcd", lambda: _http_ok(f"{components.etcd_url()}/health"), 60
        )
        processes.start(paths, "kube-apiserver", components.apiserver(paths, bins))
        api = f"https://{settings.NODE_IP}:{settings.APISERVER_PORT}"
        processes.wait_healthy(
            paths, "kube-apiserver", lambda: _https_ok(f"{api}/readyz", paths), 120
        )
        processes.start(
            paths, "kube-controller-manager", components.controller_manager(paths, bins)
        )
        processes.start(paths, "kube-scheduler", components.scheduler(paths, bins))
        for name, port in (
            ("kube-controller-manager", settings.CONTROLLER_MANAGER_PORT),
            ("kube-scheduler", settings.SCHEDULER_PORT),
        ):
            url = f"https://127.0.0.1:{port}/healthz"
            processes.wait_healthy(paths, name, lambda u=url: _https_ok(u, paths, False), 60)  # type: ignore[misc]
        kubectl(paths, "apply", "-f", str(settings.HERE / "addons.yaml"))

    def node() -> None:
        host.shared_mount(paths.kubelet)
        paths.containerd.mkdir(parents=True, exist_ok=True)
        components.containerd_config(paths)
        components.cni_config(paths)
        processes.start(paths, "containerd", components.containerd(paths))
        processes.wait_healthy(paths, "containerd", lambda: _ctr_ok(paths), 60)
        components.kubelet_config(paths)
        host.cgroups_up()
        processes.start(paths, "kubelet", components.kubelet(paths, bins))
        processes.wait_healthy(
            paths,
            "kubelet",
            lambda: _http_ok(f"http://127.0.0.1:{settings.KUBELET_HEALTHZ_PORT}/healthz"),
            90,
        )
        components.proxy_config(paths)
        processes.start(paths, "kube-proxy", components.proxy(paths, bins))
        processes.wait_healthy(
            paths,
            "kube-proxy",
            lambda: _http_ok(f"http://127.0.0.1:{settings.PROXY_HEALTHZ_PORT}/healthz"),
            60,
        )
        components.coredns_config(paths)
        processes.start(paths, "coredns", components.coredns(paths, bins))
        processes.wait_healthy(
            paths,
            "coredns",
            lambda: _dns_answers(f"kubernetes.default.svc.{settings.CLUSTER_DOMAIN}"),
            60,
        )
        processes.start(paths, "provisioner", components.provisioner(paths, bins))
        kubectl(paths, "wait", "--for=condition=Ready", f"node/{settings.NODE_NAME}",
                "--timeout=120s", timeout=150)  # fmt: skip

    def cluster_images() -> None:
        images.ensure_docker(paths)
        refs = images.build_cluster_images(bins)
        images.load(paths, refs)

    def keda() -> None:
        overlay = paths.config / "keda"
        overlay.mkdir(parents=True, exist_ok=True)
        (overlay / "kustomization.yaml").write_text(keda_overlay(bins, overlay))
        kubectl(paths, "apply", "--server-side", "-k", str(overlay), timeout=300)
        ns = settings.KEDA_NAMESPACE
        kubectl(paths, "-n", ns, "rollout", "status", "deployment/keda-operator",
                "--timeout=300s", timeout=330)  # fmt: skip
        kubectl(paths, "-n", ns, "rollout", "status", "deployment/keda-metrics-apiserver",
                "--timeout=300s", timeout=330)  # fmt: skip
        kubectl(paths, "wait", "--for=condition=Available",
                "apiservice/v1beta1.external.metrics.k8s.io", "--timeout=300s",
                timeout=330)  # fmt: skip

    try:
        timer.step("network", network)
        timer.step("control plane", control_plane)
        # The pause image must be in containerd before the first pod; it needs containerd.
        timer.step("node", node)
        timer.step("cluster images", cluster_images)
        timer.step("keda", keda)
    except (processes.StartError, RuntimeError, images.DockerUnavailable) as exc:
        say(f"FAILED: {exc}")
        say(f"logs: {paths.logs}; `python -m cluster down` removes what was started")
        raise SystemExit(1) from None
    (paths.root / "up-timings.json").write_text(
        json.dumps({"steps": timer.steps, "total_seconds": timer.total}, indent=2)
    )
    say(f"up in {timer.total:.0f} s")
    print(
        f"\nlocalkube is up (Kubernetes {settings.read_versions()['KUBERNETES_VERSION']}, "
        f"KEDA {settings.read_versions()['KEDA_VERSION']}).\n"
        f"  kubeconfig: {paths.admin_kubeconfig}\n"
        f"  try: {bins / 'kubectl'} --kubeconfig {paths.admin_kubeconfig} get nodes,pods -A\n"
        f'  or:  eval "$(python -m cluster env)"; kubectl get nodes\n'
        f"  stop: make cluster-down\n"
    )


def _ctr_ok(paths: settings.Paths) -> bool:
    result = subprocess.run(
        ["ctr", "--address", str(paths.containerd_socket), "version"],
        capture_output=True, timeout=10,
    )  # fmt: skip
    return result.returncode == 0


def keda_overlay(bins: Path, overlay: Path) -> str:
    """KEDA's own ``config/minimal`` (CRDs, RBAC, operator, metrics server; no webhooks),
    pointed at the images built here and told never to pull them."""
    keda = settings.read_versions()["KEDA_VERSION"].lstrip("v")
    prefix = settings.IMAGE_PREFIX
    # Relative: kustomize refuses absolute resource paths.
    return f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {os.path.relpath(bins / "keda" / "minimal", overlay)}
images:
  - name: ghcr.io/kedacore/keda
    newName: {prefix}/keda
    newTag: "{keda}"
  - name: ghcr.io/kedacore/keda-metrics-apiserver
    newName: {prefix}/keda-metrics-apiserver
    newTag: "{keda}"
patches:
  - target: {{kind: Deployment}}
    patch: |
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: IfNotPresent
"""


def down(paths: settings.Paths) -> None:
    require_root()
    if not paths.root.exists():
        say("nothing to remove")
        return
    bins: Path | None
    try:
        bins = Path(paths.bin_dir_file.read_text().strip())
    except OSError:
        bins = None
    if bins is not None and processes.running_pid(paths, "kube-apiserver") is not None:
        if processes.running_pid(paths, "kubelet") is not None:
            # Pods deleted through the API are torn down by the kubelet: containers killed,
            # sandboxes' networks released by CNI (their veths and netns go too).
            kubectl(paths, "delete", "pods", "--all", "--all-namespaces", "--grace-period=0",
                    "--force", "--wait=false", timeout=60, check=False)  # fmt: skip
            _wait_no_containers(paths, timeout=60)
    for name in reversed(COMPONENTS):
        processes.stop(paths, name)
    if bins is not None:
        subprocess.run(
            [str(bins / "kube-proxy"), "--cleanup", f"--config={paths.config / 'proxy.yaml'}"],
            capture_output=True, timeout=60,
        )  # fmt: skip
    # Containers whose shim outlived containerd, then the shims themselves.
    for pid in host.cgroup_pids():
        processes.terminate(pid, timeout=1)
    socket_path = str(paths.containerd_socket)
    for pid in processes.pids_matching(lambda cmd: any(socket_path in part for part in cmd)):
        processes.terminate(pid, timeout=5)
    processes.stop(paths, "dockerd", timeout=30)
    before = set(paths.netns_before.read_text().split()) if paths.netns_before.exists() else set()
    host.netns_down(before)
    host.unmount_all(paths.root)
    try:
        host.cgroups_down()
    except OSError as exc:
        say(f"could not remove every cgroup under /{host.CGROUP_ROOT}: {exc}")
    host.kube_chains_down()
    host.firewall_down()
    host.bridge_down()
    host.remove_tree(paths.root)
    say("down: processes stopped; bridge, iptables rules, mounts, cgroups and state removed")


def _wait_no_containers(paths: settings.Paths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = subprocess.run(
            ["ctr", "--address", str(paths.containerd_socket), "--namespace",
             settings.CONTAINERD_NAMESPACE, "tasks", "list"],
            capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        # Stopped tasks stay listed until the kubelet removes their containers.
        if result.returncode != 0 or " RUNNING" not in result.stdout:
            return
        time.sleep(1)
