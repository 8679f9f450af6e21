"""``python -m cluster up|down|status|env|load IMAGE...``: the local cluster's command line.

``make cluster`` and ``make cluster-down`` call the first two.
"""

from __future__ import annotations

import argparse
import json
import sys

from cluster import images, lifecycle, processes, settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build what is missing, start the cluster with KEDA")
    sub.add_parser("down", help="stop everything and remove what up made")
    sub.add_parser("status", help="which components run")
    sub.add_parser("env", help="shell lines that point kubectl/helm at the cluster")
    sub.add_parser("info", help="versions, build and start-up times (JSON)")
    load = sub.add_parser("load", help="copy Docker images into the node (like kind load)")
    load.add_argument("images", nargs="+")
    args = parser.parse_args(argv)
    paths = settings.Paths.from_env()

    if args.command == "up":
        lifecycle.up(paths)
    elif args.command == "down":
        lifecycle.down(paths)
    elif args.command == "status":
        down = [name for name in lifecycle.COMPONENTS if processes.running_pid(paths, name) is None]
        for name in lifecycle.COMPONENTS:
            pid = processes.running_pid(paths, name)
            print(f"{name:24} {'running, pid ' + str(pid) if pid else 'not running'}")
        return 1 if down else 0
    elif args.command == "env":
        bins = lifecycle.bin_dir(paths)
        print(f'export KUBECONFIG="{paths.admin_kubeconfig}"')
        print(f'export PATH="{bins}:$PATH"')
    elif args.command == "info":
        bins = lifecycle.bin_dir(paths)
        info: dict[str, object] = {"versions": settings.read_versions()}
        if (bins / "build-seconds").is_file():
            info["build_seconds"] = int((bins / "build-seconds").read_text())
        timings = paths.root / "up-timings.json"
        if timings.is_file():
            info["up"] = json.loads(timings.read_text())
        print(json.dumps(info, indent=2))
    elif args.command == "load":
        lifecycle.require_root()
        seconds = images.load(paths, args.images)
        print(f"loaded {' '.join(args.images)} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
