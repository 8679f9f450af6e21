"""Figures of a run on a real cluster, written into docs/performance.md ("On a real cluster").

Fixtures and tests ``record`` what they measured (image build and load, the time from a
backlog to the first job on a newly scaled pod, back to zero); the session's end adds
each test's duration and, from ``E2E_CLUSTER_INFO`` (``python -m cluster info``), the
cluster's cold build and start-up times. With ``E2E_WRITE_FIGURES=1`` (``make e2e`` on the
local cluster) the section of docs/performance.md between the markers below is replaced,
and the raw figures go to docs/performance/cluster.json; otherwise they are only printed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / "docs" / "performance.md"
RAW = REPO / "docs" / "performance" / "cluster.json"
BEGIN = "<!-- cluster-figures:begin (written by the cluster suite, tests/e2e/kind/figures.py) -->"
END = "<!-- cluster-figures:end -->"

_figures: dict[str, float] = {}
_durations: dict[str, float] = {}


def record(name: str, seconds: float) -> None:
    _figures[name] = round(seconds, 1)


def record_test(nodeid: str, seconds: float) -> None:
    _durations[nodeid.rsplit("::", 1)[-1]] = round(seconds, 1)


def has_figures() -> bool:
    return bool(_figures or _durations)


def cluster_info() -> dict[str, Any]:
    path = os.environ.get("E2E_CLUSTER_INFO", "")
    if not path or not Path(path).is_file():
        return {}
    info: dict[str, Any] = json.loads(Path(path).read_text())
    return info


def _fmt(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def section(info: dict[str, Any], outcome: str) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = info.get("versions", {})
    lines = [
        BEGIN,
        "## On a real cluster",
        "",
        f"_Written by the cluster suite (`make e2e`) on {now}: {outcome}. Do not edit by hand._",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.system()} {platform.release()}. Cluster: "
        "the local one of `make cluster` (host processes, cluster/README.md): Kubernetes "
        f"{versions.get('KUBERNETES_VERSION', '?')}, etcd {versions.get('ETCD_VERSION', '?')}, "
        f"KEDA {versions.get('KEDA_VERSION', '?')}, "
        f"CoreDNS {versions.get('COREDNS_VERSION', '?')}, "
        "containerd and runc from Debian. One run, so these are single measurements.",
        "",
        "| step | time |",
        "|---|---|",
    ]
    build = info.get("build_seconds")
    lines.append(f"| cold build of every cluster binary from the Go module proxy | {_fmt(build)} |")
    start = info.get("up", {})
    total = _fmt(start.get("total_seconds"))
    lines.append(f"| cluster start (`make cluster` with the binaries built) | {total} |")
    for step, seconds in start.get("steps", {}).items():
        lines.append(f"| &nbsp;&nbsp;of which {step} | {_fmt(seconds)} |")
    for name, seconds in _figures.items():
        lines.append(f"| {name} | {_fmt(seconds)} |")
    lines += ["", "| test | duration |", "|---|---|"]
    lines += [f"| `{name}` | {_fmt(seconds)} |" for name, seconds in _durations.items()]
    lines.append(END)
    return "\n".join(lines) + "\n"


def write(outcome: str) -> str:
    """The section; written into docs/performance.md when E2E_WRITE_FIGURES=1."""
    info = cluster_info()
    text = section(info, outcome)
    if os.environ.get("E2E_WRITE_FIGURES") == "1":
        doc = DOC.read_text()
        if BEGIN in doc and END in doc:
            head, _, rest = doc.partition(BEGIN)
            _, _, tail = rest.partition(END)
            doc = head + text.rstrip("\n") + tail
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        DOC.write_text(doc)
        RAW.write_text(
            json.dumps(
                {"cluster": info, "figures": _figures, "tests": _durations, "outcome": outcome},
                indent=2,
            )
            + "\n"
        )
    return text
