"""What the cluster changes on the host, and how each change is undone.

- the bridge ``lkube0`` holding the node IP (this VM's kernel has no ``dummy`` links) and,
  added by the CNI bridge plugin, the pods' gateway;
- an iptables chain jumped to first from FORWARD: pod traffic may cross the bridge (Docker
  sets FORWARD's policy to DROP) and may go nowhere else;
- the sysctls forwarding needs (ip_forward, bridge-nf-call-iptables);
- the kubelet's directory bind-mounted onto itself as a shared mount (volume propagation)
  instead of making the whole root mount shared;
- after the kubelet: pod network namespaces, mounts under the state directory, the
  kubelet's cgroups (all under ``/localkube``), kube-proxy's and the kubelet's iptables
  chains.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cluster import settings

CHAIN = "LKUBE-FORWARD"
CGROUP_ROOT = "localkube"
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()[-800:]}"
        )
    return result


def apt_get_install(packages: Sequence[str], timeout: float = 900) -> None:
    """``apt-get update`` and install ``packages`` (root); RuntimeError with apt's words.

    The one apt path of the cluster and the e2e suites (tests/e2e/docker_images.py).
    """
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
    ):
        result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")


# --- network ------------------------------------------------------------------------------


def bridge_up() -> None:
    if sh("ip", "link", "show", settings.BRIDGE, check=False).returncode != 0:
        sh("ip", "link", "add", settings.BRIDGE, "type", "bridge")
    address = f"{settings.NODE_IP}/{settings.NODE_PREFIX}"
    if address not in sh("ip", "-o", "addr", "show", "dev", settings.BRIDGE).stdout:
        sh("ip", "addr", "add", address, "dev", settings.BRIDGE)
    sh("ip", "link", "set", settings.BRIDGE, "up")


def bridge_down() -> None:
    if sh("ip", "link", "show", settings.BRIDGE, check=False).returncode == 0:
        sh("ip", "link", "delete", settings.BRIDGE)


def sysctls() -> None:
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        if not path.exists():
            raise RuntimeError(
                f"{path} is missing: the kernel needs {key.split('/')[1]} support "
                "(br_netfilter for bridge-nf-call-iptables) for Services to work"
            )
        if path.read_text().strip() != value:
            path.write_text(value)


def _iptables(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("iptables", "-w", *args, check=check)


def firewall_up() -> None:
    """Pods talk across the bridge (to pods and, via INPUT, to the host), never beyond."""
    if _iptables("-n", "-L", CHAIN, check=False).returncode != 0:
        _iptables("-N", CHAIN)
    _iptables("-F", CHAIN)
    bridge = settings.BRIDGE
    _iptables("-A", CHAIN, "-i", bridge, "-o", bridge, "-j", "ACCEPT")
    _iptables("-A", CHAIN, "-i", bridge, "-j", "DROP")
    _iptables("-A", CHAIN, "-o", bridge, "-j", "DROP")
    if _iptables("-C", "FORWARD", "-j", CHAIN, check=False).returncode != 0:
        _iptables("-I", "FORWARD", "1", "-j", CHAIN)


def firewall_down() -> None:
    while _iptables("-D", "FORWARD", "-j", CHAIN, check=False).returncode == 0:
        pass
    if _iptables("-n", "-L", CHAIN, check=False).returncode == 0:
        _iptables("-F", CHAIN)
        _iptables("-X", CHAIN)


def kube_chains_down() -> None:
    """Chains the kubelet leaves (its canaries and KUBE-FIREWALL); kube-proxy's own go
    with ``kube-proxy --cleanup`` first."""
    for table in ("filter", "nat", "mangle"):
        listing = _iptables("-t", table, "-S", check=False).stdout.splitlines()
        chains = [line.split()[1] for line in listing if line.startswith("-N KUBE-")]
        for line in listing:
            parts = line.split()
            if line.startswith("-A ") and "-j" in parts:
                target = parts[parts.index("-j") + 1]
                if target in chains and not parts[1].startswith("KUBE-"):
                    _iptables("-t", table, "-D", *parts[1:], check=False)
        for chain in chains:
            _iptables("-t", table, "-F", chain, check=False)
        for chain in chains:
            _iptables("-t", table, "-X", chain, check=False)


# --- mounts, namespaces, cgroups ----------------------------------------------------------


def shared_mount(path: Path) -> None:
    """Bind ``path`` onto itself and make it rshared (mount propagation for pod volumes)."""
    path.mkdir(parents=True, exist_ok=True)
    if str(path) not in mounts_under(path):
        sh("mount", "--bind", str(path), str(path))
    sh("mount", "--make-rshared", str(path))


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below ``root``, deepest first."""
    found = []
    prefix = str(root).rstrip("/")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_all(root: Path) -> None:
    for _ in range(5):  # a bind mount may be stacked over another one
        points = mounts_under(root)
        if not points:
            return
        for point in points:
            sh("umount", "-l", point, check=False)
    remaining = mounts_under(root)
    if remaining:
        raise RuntimeError(f"still mounted under {root}: {', '.join(remaining)}")


def netns_names() -> set[str]:
    directory = Path("/var/run/netns")
    return {p.name for p in directory.iterdir()} if directory.is_dir() else set()


def netns_down(before: set[str]) -> None:
    """Pod network namespaces containerd made (cni-*), unless they were there before."""
    for name in sorted(netns_names() - before):
        if name.startswith("cni-"):
            sh("ip", "netns", "delete", name, check=False)


def cgroups_up() -> None:
    """The kubelet's cgroupRoot in every v1 hierarchy (it refuses to start without them).

    A new cpuset cgroup starts with no CPUs and no memory nodes unless the parent clones
    them, so they are copied from the root.
    """
    base = Path("/sys/fs/cgroup")
    for hierarchy in sorted(base.iterdir()):
        if not (hierarchy / "cgroup.procs").exists():
            continue  # not a mounted hierarchy (cgroup2 lives under "unified" here)
        tree = hierarchy / CGROUP_ROOT
        tree.mkdir(exist_ok=True)
        for knob in ("cpuset.cpus", "cpuset.mems"):
            if (tree / knob).exists() and not (tree / knob).read_text().strip():
                (tree / knob).write_text((hierarchy / knob).read_text())


def cgroups_down() -> None:
    """The kubelet's cgroup tree (cgroupRoot /localkube) in every v1 hierarchy, leaves first."""
    base = Path("/sys/fs/cgroup")
    for hierarchy in base.iterdir() if base.is_dir() else []:
        tree = hierarchy / CGROUP_ROOT
        if not tree.is_dir():
            continue
        for directory in sorted(
            (p for p in tree.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            directory.rmdir()
        tree.rmdir()


def cgroup_pids() -> list[int]:
    """Processes still in the kubelet's cgroups (containers whose shim died)."""
    pids: set[int] = set()
    for procs in Path("/sys/fs/cgroup").glob(f"*/{CGROUP_ROOT}/**/cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except OSError:
            continue
    return sorted(pids)


def remove_tree(root: Path) -> None:
    """Delete the state directory, refusing while anything is still mounted below it."""
    if not root.exists():
        return
    remaining = mounts_under(root)
    if remaining:
        raise RuntimeError(f"not removing {root}: still mounted: {', '.join(remaining)}")
    shutil.rmtree(root)
