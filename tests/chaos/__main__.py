"""``python -m tests.chaos --mode mixed --seconds 600 --seed 7``: one soak by hand.

Exit status 0 when the soak passed, 1 when it found lost, duplicated, wrongly
dead-lettered or otherwise wrong jobs (printed with their evidence), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys

from tests.chaos import soak
from tests.chaos.config import MODES, ChaosConfig, ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    parser.add_argument("--mode", choices=sorted(MODES), help="fault kinds (default mixed)")
    parser.add_argument("--seed", type=int, help="seed of the faults and the jobs (default 1)")
    parser.add_argument("--seconds", type=float, help="duration of the faults (default 60)")
    parser.add_argument("--jobs", type=int, help="jobs over the faults (default 10 per 3 s)")
    parser.add_argument("--workers", type=int, help="workers (default 3)")
    parser.add_argument("--concurrency", type=int, help="pool processes per worker (default 2)")
    parser.add_argument(
        "--write-figures",
        action="store_true",
        default=None,
        help="merge the figures into docs/performance (as CHAOS_WRITE_FIGURES=1)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (logs, AOF)")
    args = parser.parse_args(argv)
    try:
        config = ChaosConfig.from_env(
            mode=args.mode,
            seed=args.seed,
            seconds=args.seconds,
            jobs=args.jobs,
            workers=args.workers,
            concurrency=args.concurrency,
            write_figures=args.write_figures,
        )
    except ConfigError as exc:
        parser.error(str(exc))
    # The soak's processes get their settings from the soak alone.
    for key in [k for k in os.environ if k.startswith("BGWORKER_")]:
        del os.environ[key]
    result = soak.run_kept(config, log=lambda line: print(line, flush=True), keep=args.keep)
    print(result.report(), flush=True)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
