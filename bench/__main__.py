"""``python -m bench`` (``make bench``): run every benchmark and write docs/performance.md.

Everything runs on this machine: a private redis-server on a free loopback port in a
temporary directory, real ``bgworker`` API and worker processes, inputs generated here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import drain, enqueue, memory, overhead, report, sections, thumbs
from bench.common import REPO, loadavg, log
from bench.inputs import make_inputs
from worker.redis_server import RedisServer
from worker.settings import Settings


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of each comparison")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 1 round, short slices, small counts"
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="bgworker-bench-"))
    results: dict[str, Any] = {"started": started, "rounds": rounds, "quick": args.quick}
    load: dict[str, Any] = {}
    results["load"] = load
    server = RedisServer(work / "redis")
    try:
        inputs = make_inputs(work / "inputs")
        widths = list(Settings.from_env({}).thumbnail_widths)
        results["inputs"] = {
            k: {"name": p.name, "bytes": p.stat().st_size} for k, p in inputs.items()
        }

        def section(name: str) -> None:
            load[name] = {"before": loadavg()}
            log(f"{name}: starting (load average {loadavg()[0]:.2f})")

        def section_end(name: str) -> None:
            load[name]["after"] = loadavg()

        section("thumbnails")
        results["thumbnails"] = thumbs.run(
            {"jpeg": inputs["photo_12mp_jpeg"], "png": inputs["photo_2mp_png"]},
            widths,
            rounds,
            2 if args.quick else 5,
            work,
        )
        section_end("thumbnails")

        server.start()
        base_env = {
            "BGWORKER_REDIS_URL": server.url,
            "BGWORKER_STATE_DIR": str(work / "state"),
            "BGWORKER_DEBUG_TASKS": "1",
            # On loopback, as `bgworker dev`: the figures are the enqueue's, not a key check's.
            "BGWORKER_AUTH": "off",
        }

        section("overhead")
        results["overhead"] = overhead.run(base_env, rounds, 300 if args.quick else 1500, work)
        section_end("overhead")

        section("enqueue")
        results["enqueue"] = enqueue.run(
            {**base_env, "BGWORKER_LOG_LEVEL": "INFO"},
            server.url,
            work / "state" / "storage",
            inputs["upload_200kb_jpeg"],
            rounds,
            2 if args.quick else 6,
            2 if args.quick else 4,
            work,
        )
        section_end("enqueue")

        section("drain")
        results["drain"] = drain.run(
            base_env, inputs["photo_12mp_jpeg"], rounds, 20 if args.quick else 200, work
        )
        section_end("drain")

        section("memory")
        results["memory"] = memory.run(work, 1 if args.quick else 3)
        section_end("memory")
    finally:
        server.kill()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results["finished"] = time.time()
    results["versions"] = report.versions()
    results["machine"] = report.machine()
    charts = args.out.parent / "performance"
    charts.mkdir(parents=True, exist_ok=True)
    (charts / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    text = report.render(results, charts, args.out.parent)
    args.out.write_text(text + sections.kept(args.out))
    log(f"wrote {args.out} in {(time.time() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
