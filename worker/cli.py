"""The ``bgworker`` command: run the system, or one side of it, and look at its queues."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import redis

from worker.errors import BgworkerError, SettingsError

if TYPE_CHECKING:
    from worker.auth import KeyStore
from worker.queues import QUEUES
from worker.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        return int(args.run(settings, args) or 0)
    except BgworkerError as exc:
        print(f"bgworker: {exc.message}", file=sys.stderr)
        return 2
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(
            f"bgworker: cannot reach Redis at {settings.redis_location} ({exc}); is it "
            "running, and are BGWORKER_REDIS_URL / BGWORKER_REDIS_SENTINELS right?",
            file=sys.stderr,
        )
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bgworker", description="Background jobs (thumbnails first) on Celery and Redis."
    )
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    dev = sub.add_parser(
        "dev",
        help="run Redis (unless BGWORKER_REDIS_URL is set), the API and one worker",
        description=(
            "Everything on this machine, for a laptop: a private redis-server (unless "
            "BGWORKER_REDIS_URL is set; its data under the state directory), the API on "
            "--host/--port and one worker. Ctrl-C stops all of them, the worker first so "
            "that it can finish its job."
        ),
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    dev.add_argument(
        "--state-dir",
        type=Path,
        help="where Redis' data and the images go (default: BGWORKER_STATE_DIR, .bgworker); "
        "each running `bgworker dev` needs its own",
    )
    dev.set_defaults(run=cmd_dev)

    api = sub.add_parser(
        "api",
        help="run the HTTP API in the foreground (uvicorn)",
        description=(
            "Run the HTTP API (uvicorn) in this process, as the api container does; SIGTERM "
            "is uvicorn's graceful shutdown. Settings come from BGWORKER_* variables "
            "(README, Settings)."
        ),
    )
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(run=cmd_api)

    worker = sub.add_parser(
        "worker",
        help="run a Celery worker in the foreground",
        description=(
            "Run one Celery worker in this process, taking jobs from its queues in priority "
            "order (critical, then default, then low). SIGTERM lets the job in hand finish, "
            "or puts it back on its queue after BGWORKER_SHUTDOWN_TIMEOUT."
        ),
    )
    worker.add_argument(
        "--queues",
        default=None,
        help=f"comma-separated, from {','.join(QUEUES)} (default: BGWORKER_WORKER_QUEUES or all)",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="pool processes, one job each (default: BGWORKER_WORKER_CONCURRENCY or 1)",
    )
    worker.add_argument(
        "--heartbeat-file",
        type=Path,
        default=None,
        help="touch this file every few seconds while consuming (for `bgworker alive`)",
    )
    worker.set_defaults(run=cmd_worker)

    alive = sub.add_parser(
        "alive",
        help="liveness probe: exit 0 if the worker writing HEARTBEAT_FILE is not stuck",
        description=(
            "Liveness probe of a worker started with --heartbeat-file: exit 0 if the file "
            "was touched within --max-age seconds, else 1 with the reason."
        ),
    )
    alive.add_argument("heartbeat_file", type=Path, metavar="HEARTBEAT_FILE")
    alive.add_argument(
        "--max-age",
        type=float,
        default=60.0,
        help="seconds without a heartbeat after which the worker counts as stuck",
    )
    alive.set_defaults(run=cmd_alive)

    smoke = sub.add_parser(
        "smoke",
        help="check a running installation end to end: upload, wait, fetch a thumbnail",
        description=(
            "Check a running installation end to end: upload a generated photo to API_URL, "
            "wait for its job, fetch a thumbnail. Exit 0 if all of it works, else 1 saying "
            "what failed."
        ),
    )
    smoke.add_argument("url", metavar="API_URL", help="e.g. http://bgw-bgworker-api")
    smoke.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    smoke.add_argument(
        "--api-key-file",
        type=Path,
        help="file holding the API key to send (default: $BGWORKER_API_KEY, else none)",
    )
    smoke.set_defaults(run=cmd_smoke)

    queues = sub.add_parser(
        "queues",
        help="print waiting, in-flight and dead job counts",
        description=(
            "Print the jobs waiting in each queue and the age of the oldest, the jobs in "
            "flight, scheduled and dead (read from the Redis of BGWORKER_REDIS_URL)."
        ),
    )
    queues.add_argument("--json", action="store_true", help="print JSON instead of a table")
    queues.set_defaults(run=cmd_queues)

    dead = sub.add_parser(
        "dead",
        help="list the dead-letter set, or replay a dead job",
        description=(
            "Without JOB_ID, list the dead-letter set (jobs that used up their retries or "
            "whose worker died each time); with job ids, put those jobs back on their "
            "queues."
        ),
    )
    dead.add_argument("replay", nargs="*", metavar="JOB_ID", help="job ids to re-enqueue")
    dead.set_defaults(run=cmd_dead)

    keys = sub.add_parser(
        "keys",
        help="create, list or revoke API keys",
        description="API keys (Bearer tokens) for the HTTP API: each has scopes and an "
        "owner (the tenant whose jobs it sees); Redis keeps only a hash of each.",
    )
    keys_sub = keys.add_subparsers(required=True, metavar="ACTION")
    create = keys_sub.add_parser(
        "create",
        help="make a key and print its token (shown only this once)",
        description="Make an API key and print its token on stdout, once: only its hash is "
        "kept, so a lost token is revoked and replaced.",
    )
    create.add_argument("--name", required=True, help="what the key is for (shown in lists)")
    create.add_argument(
        "--scopes",
        default="jobs:write,jobs:read",
        help="comma-separated: jobs:write, jobs:read, admin (default: jobs:write,jobs:read)",
    )
    create.add_argument(
        "--owner",
        default="",
        help="the tenant whose jobs the key sees (default: the key's own id); keys with "
        "one owner share their jobs",
    )
    create.set_defaults(run=cmd_keys_create)
    listing = keys_sub.add_parser("list", help="list keys (never their tokens)")
    listing.set_defaults(run=cmd_keys_list)
    revoke = keys_sub.add_parser("revoke", help="revoke keys by id (takes effect within 10 s)")
    revoke.add_argument("key_ids", nargs="+", metavar="KEY_ID")
    revoke.set_defaults(run=cmd_keys_revoke)
    return parser


def _keys(settings: Settings) -> KeyStore:
    from worker.auth import KeyStore
    from worker.redis_client import sync_client

    return KeyStore(sync_client(settings, socket_connect_timeout=2))


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from worker.auth import parse_scopes

    principal, token = _keys(settings).create(args.name, parse_scopes(args.scopes), args.owner)
    print(token)
    print(
        f"bgworker: key {principal.key_id} ({principal.name}; owner {principal.owner}; "
        f"scopes {','.join(sorted(principal.scopes))}). The token above is shown only now: "
        "send it as 'Authorization: Bearer <token>'.",
        file=sys.stderr,
    )
    return 0


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    print(f"{'KEY':<13} {'OWNER':<20} {'SCOPES':<28} {'CREATED (UTC)':<20} NAME")
    for principal, created in _keys(settings).list():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created))
        scopes = ",".join(sorted(principal.scopes))
        print(
            f"{principal.key_id:<13} {principal.owner:<20} {scopes:<28} {when:<20} {principal.name}"
        )
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    store = _keys(settings)
    for key_id in args.key_ids:
        store.revoke(key_id)
        print(f"bgworker: revoked key {key_id}")
    return 0


def cmd_api(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.limits import BodyDeadline, bounded_h11

    check_exposure(settings, args.host)
    # In-process: uvicorn's own SIGTERM handling is what stops this process.
    uvicorn.run(
        BodyDeadline(create_app(settings), settings.max_upload_seconds),
        host=args.host,
        port=args.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        proxy_headers=True,
        # uvicorn's own bounds: idle keep-alive, connections (503 beyond), header bytes;
        # the protocol adds the time bounds uvicorn lacks (api/limits.py says why).
        http=bounded_h11(settings.header_timeout_seconds, settings.max_upload_seconds),
        timeout_keep_alive=settings.keep_alive_seconds,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=16 * 1024,
    )
    return 0


def check_exposure(settings: Settings, host: str) -> None:
    """No unauthenticated API beyond this machine: BGWORKER_AUTH=off only on loopback."""
    if settings.auth == "off" and not _loopback(host):
        raise SettingsError(
            f"BGWORKER_AUTH=off would let anyone who reaches {host} read and cancel every "
            "job; keep keys on (the default) or bind to 127.0.0.1"
        )
    if settings.auth == "required" and not settings.admin_key:
        print(
            "bgworker: every request needs an API key; make one with `bgworker keys create "
            "--name NAME` (or set BGWORKER_ADMIN_KEY)",
            file=sys.stderr,
        )


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from worker.run import run_worker

    queues = settings.worker_queues
    if args.queues is not None:
        queues = tuple(q.strip() for q in args.queues.split(",") if q.strip())
        settings = settings.replace(worker_queues=queues)
        settings.check()
    run_worker(
        settings, queues, args.concurrency or settings.worker_concurrency, args.heartbeat_file
    )
    return 0


def cmd_alive(settings: Settings, args: argparse.Namespace) -> int:
    from worker.liveness import problem

    reason = problem(args.heartbeat_file, args.max_age)
    if reason is not None:
        print(f"bgworker: {reason}", file=sys.stderr)
        return 1
    return 0


def cmd_smoke(settings: Settings, args: argparse.Namespace) -> int:
    from worker.errors import SmokeFailed
    from worker.smoke import run

    key = settings.api_key
    if args.api_key_file is not None:
        key = args.api_key_file.read_text().strip()
    try:
        run(args.url, args.timeout, api_key=key)
    except SmokeFailed as exc:
        print(f"bgworker smoke: FAILED: {exc.message}", file=sys.stderr)
        return 1
    print("bgworker smoke: OK")
    return 0


def cmd_queues(settings: Settings, args: argparse.Namespace) -> int:
    import redis

    from worker.queues import report
    from worker.redis_client import sync_client

    client = sync_client(settings, socket_connect_timeout=2)
    try:
        data = report(client)
    except redis.ConnectionError as exc:
        print(
            f"bgworker: cannot reach Redis at {settings.redis_location}: {exc}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{'QUEUE':<10} {'WAITING':>8} {'OLDEST(s)':>10}")
    for name, q in data["queues"].items():  # type: ignore[attr-defined]
        print(f"{name:<10} {q['waiting']:>8} {q['oldest_age_seconds']:>10.1f}")
    print(f"in flight: {data['in_flight']}   scheduled: {data['scheduled']}   dead: {data['dead']}")
    return 0


def cmd_dead(settings: Settings, args: argparse.Namespace) -> int:
    import redis

    from worker.celery_app import create_celery
    from worker.enqueue import replay_dead
    from worker.jobs import JobStore
    from worker.redis_client import sync_client

    store = JobStore(
        sync_client(settings, socket_connect_timeout=2),
        settings.job_retention_seconds,
    )
    try:
        if args.replay:
            celery = create_celery(settings)
            for job_id in args.replay:
                job = replay_dead(store, celery, job_id)
                print(f"{job.id} re-enqueued on {job.queue}")
            return 0
        for job in store.dead():
            message = job.error["message"] if job.error else ""
            print(f"{job.id}  {job.kind:<18} attempts={job.attempts}  {message}")
    except redis.RedisError as exc:
        print(f"bgworker: Redis at {settings.redis_location} failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_dev(settings: Settings, args: argparse.Namespace) -> int:
    """The embedded default: everything on this machine, stopped cleanly by Ctrl-C."""
    from worker.redis_server import RedisServer

    server = None
    env = dict(os.environ)
    if args.state_dir is not None:
        state_dir = args.state_dir
        settings = settings.replace(state_dir=state_dir, storage_dir=state_dir / "storage")
        env["BGWORKER_STATE_DIR"] = str(args.state_dir)
        env.pop("BGWORKER_STORAGE_DIR", None)
    if not settings.redis_url_from_env and not settings.uses_sentinel:
        # Two instances on one data directory would share one Redis' data: the second
        # would run the first one's jobs again. The lock goes when the process does.
        lock = state_lock(settings.state_dir)
        server = RedisServer(settings.state_dir / "redis")
        server.start()
        env["BGWORKER_REDIS_URL"] = server.url
        print(f"bgworker: started redis-server on {server.url} (data in {server.data_dir})")
    env.setdefault("BGWORKER_STATE_DIR", str(settings.state_dir))
    if "BGWORKER_AUTH" not in env and _loopback(args.host):
        # The embedded default on this machine only: open, as a local tool is.
        env["BGWORKER_AUTH"] = "off"
    command = [sys.executable, "-m", "worker.cli"]
    # Own sessions: Ctrl-C reaches only this process, which stops the others in order
    # (worker first, so it can finish its job while Redis is still up).
    worker = subprocess.Popen([*command, "worker"], env=env, start_new_session=True)
    api = subprocess.Popen(
        [*command, "api", "--host", args.host, "--port", str(args.port)],
        env=env,
        start_new_session=True,
    )
    print(f"bgworker: API on http://{args.host}:{args.port}  (Ctrl-C stops everything)", flush=True)
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = {"worker": worker, "API": api}
    try:
        while not stop and all(p.poll() is None for p in children.values()):
            time.sleep(0.2)
        for name, proc in children.items():
            if proc.returncode is not None and not stop:
                hint = "; if its port is taken, pick another with --port" if name == "API" else ""
                print(
                    f"bgworker: the {name} exited with status {proc.returncode} (see above{hint})"
                )
    finally:
        print("bgworker: stopping worker, API and Redis...", flush=True)
        for proc in (worker, api):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (worker, api):
            try:
                proc.wait(settings.shutdown_timeout + 15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if server is not None:
            server.stop()
            lock.close()
    # After Ctrl-C every way of stopping is fine, a deadline that requeued a job included.
    return 0 if stop else 1


def state_lock(state_dir: Path) -> IO[str]:
    """Hold ``state_dir/dev.lock`` for as long as this process runs, or refuse to start."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "dev.lock", "a+")  # held until the process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise SettingsError(
            f"{state_dir} is in use by another `bgworker dev` ({holder}); stop it, or give "
            "this one a directory of its own: bgworker dev --state-dir DIR --port PORT"
        ) from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


if __name__ == "__main__":
    sys.exit(main())
