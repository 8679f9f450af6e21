"""Every setting of bgworker, read once from ``BGWORKER_*`` environment variables.

This is the only module that reads ``os.environ``. A value that cannot be used, or a
``BGWORKER_`` variable we do not know (a typo would otherwise be ignored silently),
raises :class:`SettingsError` naming the variable, so a misconfigured pod fails at
start-up instead of misbehaving later.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from worker.errors import SettingsError
from worker.queues import QUEUES

PREFIX = "BGWORKER_"
T = TypeVar("T")


@dataclass(frozen=True)
class TimeLimits:
    """Celery soft and hard time limits of one task, in seconds."""

    soft: int
    hard: int


# Defaults per task; BGWORKER_TASK_TIME_LIMITS overrides them (and the global pair
# BGWORKER_SOFT_TIME_LIMIT / BGWORKER_TIME_LIMIT covers tasks not named here).
DEFAULT_TASK_TIME_LIMITS: dict[str, TimeLimits] = {
    "images.thumbnails": TimeLimits(soft=60, hard=90),
}


@dataclass(frozen=True)
class Settings:
    """Typed configuration; build it with :meth:`from_env`."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_url_from_env: bool = False
    # Kept apart from the URL so it can come from a Secret as it is: any character works.
    redis_password: str = field(default="", repr=False)
    # Redis Sentinel: when sentinels are given, every client asks them for the current
    # primary of ``redis_sentinel_master`` (redis_url is then unused, and refused if set).
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str = ""
    # The sentinels' own password (their requirepass); redis_password is the primary's.
    redis_sentinel_password: str = field(default="", repr=False)
    redis_sentinel_db: int = 0
    # A Redis ACL user (AUTH <username> <password>); empty: Redis' "default" user.
    redis_username: str = ""
    # The password read from this file instead (a Secret mounted as a file), at start-up.
    redis_password_file: Path | None = None
    # TLS (rediss://): every client verifies Redis' certificate and host name, against
    # this CA bundle (PEM) when given, else the system's CAs.
    redis_tls_ca_file: Path | None = None
    # Turns that verification off: only when set explicitly, and logged as a warning by
    # every process (worker/redis_client.py). Anyone on the path can then read the jobs.
    redis_tls_insecure: bool = False
    state_dir: Path = Path(".bgworker")
    storage_dir: Path = Path(".bgworker/storage")
    thumbnail_widths: tuple[int, ...] = (320, 640, 1280)
    thumbnail_quality: int = 80
    # libwebp's effort (0 fastest .. 6 smallest): 2 encodes in about half the time of 4
    # for a few percent more bytes (docs/performance.md).
    thumbnail_webp_method: int = 2
    max_upload_bytes: int = 25 * 1024 * 1024
    # HTTP bounds of `bgworker api` (api/limits.py): the time to send a request's line and
    # headers, and its whole body (25 MiB in 120 s is 218 KB/s), idle keep-alive time, and
    # connections per process (503 beyond; above max_event_streams, which each hold one).
    header_timeout_seconds: int = 10
    max_upload_seconds: int = 120
    keep_alive_seconds: int = 5
    max_connections: int = 2000
    # A PNG or WebP is decoded whole, so this bounds what one small file can cost a worker
    # (a flat 24-MP PNG of 79 KiB: 0.6 s CPU and 117 MiB, RGBA 1.0 s and 209 MiB; 49 MP
    # about twice that; bench/decode_cost.py). 25 MP admits 24-MP camera and phone photos;
    # 48/50-MP phone modes and 45-MP cameras need 50_000_000 and the memory to match.
    max_pixels: int = 25_000_000
    job_retention_seconds: int = 7 * 24 * 3600
    # The API's storage janitor: how often it looks (a bounded batch each time), and how
    # old a file without a job record must be before it goes (an upload is stored before
    # its job is made, and its enqueue may be in doubt for up to an hour).
    janitor_interval_seconds: int = 600
    storage_grace_seconds: int = 3600
    max_retries: int = 5
    retry_backoff_max: int = 60
    max_delay_seconds: int = 3600
    soft_time_limit: int = 120
    time_limit: int = 150
    task_time_limits: Mapping[str, TimeLimits] = field(
        default_factory=lambda: dict(DEFAULT_TASK_TIME_LIMITS)
    )
    shutdown_timeout: int = 30
    restore_interval: int = 10
    # Seconds added on top of the longest a message may legitimately sit unacknowledged
    # (hard time limit + longest countdown) before kombu hands it to another worker.
    visibility_margin: int = 30
    worker_queues: tuple[str, ...] = QUEUES
    worker_concurrency: int = 1
    max_tasks_per_child: int = 0
    max_memory_per_child: int = 0
    debug_tasks: bool = False
    log_level: str = "INFO"
    retry_after_seconds: int = 2
    sse_keepalive_seconds: int = 15
    # Event streams one API process serves at once (all share one Redis connection);
    # beyond it a new stream is refused with 503 + Retry-After.
    # "required": every route but /healthz and /readyz needs an API key (Bearer); "off"
    # only for `bgworker dev` on loopback (bgworker api refuses it on other addresses).
    auth: str = "required"
    # The bootstrap admin key (at least 32 characters; the chart draws one into a Secret).
    admin_key: str = field(default="", repr=False)
    # Signs the thumbnail links of private jobs, so that an <img> can load them without
    # a header; without it those thumbnails need the Bearer header.
    url_signing_key: str = field(default="", repr=False)
    signed_url_seconds: int = 24 * 3600
    # Answer a new job only once Redis has fsynced it to its append-only file (WAITAOF,
    # Redis >= 7.2 or Valkey): a host crash then loses no job the client got a 202 for.
    enqueue_fsync: bool = False
    # Requests one API key may make: a sustained rate and a burst (shared by every API
    # replica, kept in Redis); beyond them 429 with Retry-After.
    rate_limit_per_second: float = 50.0
    rate_limit_burst: int = 200
    # Jobs one queue may hold waiting (LLEN); beyond it new jobs get 503 queue_full.
    max_queued_jobs: int = 1_000_000
    # New jobs are refused while Redis is within this share of its maxmemory, so that
    # workers can still record the outcomes of the queued ones.
    redis_memory_headroom_percent: int = 10
    # The key clients of the API on this side send (`bgworker smoke`).
    api_key: str = field(default="", repr=False)
    max_event_streams: int = 1000
    # A stream ends after this long (the client reconnects with Last-Event-ID and misses
    # nothing), so no connection is held for ever.
    event_stream_max_seconds: int = 900

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings, failing with a message naming any bad variable."""
        env = os.environ if environ is None else environ
        known = {PREFIX + name.upper() for name in _ENV_FIELDS}
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {', '.join(unknown)}; known ones are: "
                + ", ".join(sorted(known))
            )
        values: dict[str, object] = {}
        for name, parse in _ENV_FIELDS.items():
            var = PREFIX + name.upper()
            if var in env:
                try:
                    values[name] = parse(env[var])
                except (ValueError, TypeError) as exc:
                    shown = "***" if name in _SECRETS else repr(env[var])  # never log a secret
                    raise SettingsError(f"{var}={shown} is not valid: {exc}") from None
        if "storage_dir" not in values and "state_dir" in values:
            values["storage_dir"] = Path(str(values["state_dir"])) / "storage"
        values["redis_url_from_env"] = "redis_url" in values
        if "redis_password_file" in values:
            values["redis_password"] = _password_from_file(values)
        if values.get("redis_username") and not values.get("redis_password"):
            raise SettingsError(
                "BGWORKER_REDIS_USERNAME needs the user's password too "
                "(BGWORKER_REDIS_PASSWORD or BGWORKER_REDIS_PASSWORD_FILE)"
            )
        if values.get("redis_password") and not values.get("redis_sentinels"):
            url = str(values.get("redis_url", cls.redis_url))
            try:
                values["redis_url"] = _with_password(
                    url, str(values["redis_password"]), str(values.get("redis_username", ""))
                )
            except ValueError as exc:
                raise SettingsError(f"BGWORKER_REDIS_PASSWORD: {exc}") from None
        if "task_time_limits" in values:
            merged = dict(DEFAULT_TASK_TIME_LIMITS)
            merged.update(values["task_time_limits"])  # type: ignore[call-overload]
            values["task_time_limits"] = merged
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that single-variable parsing cannot see."""
        self._check_sentinel()
        self._check_tls()
        if self.soft_time_limit >= self.time_limit:
            raise SettingsError(
                f"BGWORKER_SOFT_TIME_LIMIT ({self.soft_time_limit}) must be below "
                f"BGWORKER_TIME_LIMIT ({self.time_limit}) so a task can clean up "
                "before it is killed"
            )
        for task, limits in self.task_time_limits.items():
            if limits.soft >= limits.hard:
                raise SettingsError(
                    f"BGWORKER_TASK_TIME_LIMITS: {task} soft limit {limits.soft} must be below "
                    f"its hard limit {limits.hard}"
                )
        if self.max_delay_seconds >= self.job_retention_seconds:
            raise SettingsError(
                f"BGWORKER_MAX_DELAY_SECONDS ({self.max_delay_seconds}) must be below "
                f"BGWORKER_JOB_RETENTION_SECONDS ({self.job_retention_seconds}), or a delayed "
                "job's record would expire before it runs"
            )
        bad = [q for q in self.worker_queues if q not in QUEUES]
        if bad:
            raise SettingsError(
                f"BGWORKER_WORKER_QUEUES names unknown queue(s) {bad}; use some of {list(QUEUES)}"
            )

    def _check_sentinel(self) -> None:
        if not self.redis_sentinels:
            orphans = [
                var
                for var, value in (
                    ("BGWORKER_REDIS_SENTINEL_MASTER", self.redis_sentinel_master),
                    ("BGWORKER_REDIS_SENTINEL_PASSWORD", self.redis_sentinel_password),
                    ("BGWORKER_REDIS_SENTINEL_DB", self.redis_sentinel_db),
                )
                if value
            ]
            if orphans:
                raise SettingsError(
                    f"{', '.join(orphans)} given without BGWORKER_REDIS_SENTINELS "
                    "(host:port,host:port,... of the sentinels)"
                )
            return
        if not self.redis_sentinel_master:
            raise SettingsError(
                "BGWORKER_REDIS_SENTINELS needs BGWORKER_REDIS_SENTINEL_MASTER, the name the "
                "sentinels monitor the primary under (`sentinel monitor <name> ...`)"
            )
        if self.redis_url_from_env:
            raise SettingsError(
                "BGWORKER_REDIS_URL and BGWORKER_REDIS_SENTINELS are both set; give one: with "
                "sentinels the primary's address comes from them (its password from "
                "BGWORKER_REDIS_PASSWORD, its database from BGWORKER_REDIS_SENTINEL_DB)"
            )

    def _check_tls(self) -> None:
        given = [
            var
            for var, value in (
                ("BGWORKER_REDIS_TLS_CA_FILE", self.redis_tls_ca_file),
                ("BGWORKER_REDIS_TLS_INSECURE", self.redis_tls_insecure),
            )
            if value
        ]
        if given and not self.redis_tls:
            raise SettingsError(
                f"{', '.join(given)} given, but Redis is not reached over TLS: use a "
                "rediss:// BGWORKER_REDIS_URL (TLS is not supported with Sentinel)"
            )
        if self.redis_tls_ca_file is not None and self.redis_tls_insecure:
            raise SettingsError(
                "BGWORKER_REDIS_TLS_CA_FILE and BGWORKER_REDIS_TLS_INSECURE are both set: a CA "
                "is for verifying Redis' certificate, the insecure flag turns verification off"
            )
        if self.redis_tls_ca_file is not None:
            try:
                self.redis_tls_ca_file.read_bytes()
            except OSError as exc:
                raise SettingsError(
                    f"BGWORKER_REDIS_TLS_CA_FILE={str(self.redis_tls_ca_file)!r} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from None

    @property
    def redis_tls(self) -> bool:
        """Redis is reached over TLS (a ``rediss://`` URL)."""
        return not self.redis_sentinels and self.redis_url.startswith("rediss://")

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.redis_sentinels)

    @property
    def redis_location(self) -> str:
        """Where Redis is, for messages and logs, without any password."""
        if not self.redis_sentinels:
            return self.redis_url_redacted
        sentinels = ",".join(f"{host}:{port}" for host, port in self.redis_sentinels)
        return (
            f"the primary {self.redis_sentinel_master!r} (db {self.redis_sentinel_db}) "
            f"of sentinels {sentinels}"
        )

    def limits_for(self, task: str) -> TimeLimits:
        """Time limits of one task (its own, else the global pair)."""
        return self.task_time_limits.get(task, TimeLimits(self.soft_time_limit, self.time_limit))

    @property
    def longest_time_limit(self) -> int:
        return max([self.time_limit, *(t.hard for t in self.task_time_limits.values())])

    @property
    def visibility_timeout(self) -> int:
        """Seconds a taken-but-unacknowledged message waits before redelivery.

        Derived, never set: it must exceed the longest a healthy worker holds a message,
        or a running job would be handed to a second worker. With one message per pool
        process and delays kept out of worker memory (the scheduled set), that is the
        hard time limit. Anything longer only slows recovery after a SIGKILL.
        """
        return self.longest_time_limit + self.visibility_margin

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL for messages and logs: any password shown as ``***``."""
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))

    def __repr__(self) -> str:
        # Logged and shown in tracebacks: the URL only with its password masked, and no
        # field holding a secret (those are declared repr=False).
        shown = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = self.redis_url_redacted if f.name == "redis_url" else getattr(self, f.name)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def _positive(parse: Callable[[str], T], minimum: int = 1) -> Callable[[str], T]:
    def check(raw: str) -> T:
        value = parse(raw)
        if value < minimum:  # type: ignore[operator]
            raise ValueError(f"must be at least {minimum}")
        return value

    return check


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError("must be a number above 0")
    return value


def _between(low: int, high: int) -> Callable[[str], int]:
    def check(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}")
        return value

    return check


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _widths(raw: str) -> tuple[int, ...]:
    widths = tuple(sorted({int(w) for w in raw.split(",") if w.strip()}))
    if not widths or any(w < 16 or w > 8192 for w in widths):
        raise ValueError("expected a comma-separated list of widths between 16 and 8192")
    return widths


def _queues(raw: str) -> tuple[str, ...]:
    queues = tuple(q.strip() for q in raw.split(",") if q.strip())
    if not queues:
        raise ValueError(f"expected a comma-separated list of queues from {list(QUEUES)}")
    return queues


def _time_limits(raw: str) -> dict[str, TimeLimits]:
    """``{"task.name": [soft, hard], ...}`` as JSON."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError('expected JSON like {"images.thumbnails": [60, 90]}')
    limits = {}
    for task, pair in data.items():
        if not (
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, int) for v in pair)
        ):
            raise ValueError(f"{task}: expected [soft_seconds, hard_seconds]")
        limits[task] = TimeLimits(soft=pair[0], hard=pair[1])
    return limits


def _with_password(url: str, password: str, username: str = "") -> str:
    """``url`` with ``password`` (and ``username``, an ACL user) in it, percent-encoded so
    that ``@``, ``:`` or ``/`` are safe (redis-py and kombu both decode it)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        raise ValueError("a unix:// URL takes its password as ?password=...")
    if parts.password is not None:
        raise ValueError(
            "BGWORKER_REDIS_URL already has a password; set the password in one place only"
        )
    if username and parts.username:
        raise ValueError(
            "BGWORKER_REDIS_URL already has a user name; set the user in one place only"
        )
    # The URL's own user name is already percent-encoded as written.
    user = quote(username, safe="") if username else (parts.username or "")
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def _password_from_file(values: dict[str, object]) -> str:
    """The password in BGWORKER_REDIS_PASSWORD_FILE, without trailing newlines (as the
    shell's ``$(cat file)`` reads it: the chart's Redis hashes it that way)."""
    if "redis_password" in values:
        raise SettingsError(
            "BGWORKER_REDIS_PASSWORD and BGWORKER_REDIS_PASSWORD_FILE are both set; give one"
        )
    path = Path(str(values["redis_password_file"]))
    try:
        password = path.read_text().rstrip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(
            f"BGWORKER_REDIS_PASSWORD_FILE={str(path)!r} cannot be read: {exc}"
        ) from None
    if not password:
        raise SettingsError(f"BGWORKER_REDIS_PASSWORD_FILE={str(path)!r} is empty")
    return password


def _sentinels(raw: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port,...`` (port 26379 when left out; ``[v6]:port`` for IPv6)."""
    sentinels = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        if item.startswith("["):  # [v6] or [v6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or "26379"
        elif item.count(":") == 1:
            host, _, port = item.partition(":")
        else:  # a name without port, or a bare IPv6 address
            host, port = item, "26379"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r}: expected host:port")
        sentinels.append((host, int(port)))
    if not sentinels:
        raise ValueError("expected host:port,host:port,... of the sentinels")
    return tuple(sentinels)


def _sentinel_master(raw: str) -> str:
    name = raw.strip()
    if not name or any(c.isspace() for c in name):
        raise ValueError("expected the master name the sentinels monitor, without spaces")
    return name


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("expected DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _auth_mode(raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in {"required", "off"}:
        raise ValueError('expected "required" or "off"')
    return mode


def _secret(name: str) -> Callable[[str], str]:
    def check(raw: str) -> str:
        if raw and len(raw) < 32:
            # Never echo the value: the error is logged.
            raise ValueError(
                f"{name} must be at least 32 characters (draw one: openssl rand -hex 32)"
            )
        return raw

    return check


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a redis://, rediss:// or unix:// URL")
    # Verification is decided by the settings below, for every client at once: a query
    # such as ?ssl_cert_reqs=none would turn it off for redis-py only, and silently.
    tls_options = sorted(
        name
        for name, _, _ in (p.partition("=") for p in urlsplit(raw).query.split("&"))
        if name.startswith("ssl_")
    )
    if tls_options:
        raise ValueError(
            f"TLS options do not go in the URL ({', '.join(tls_options)}): use "
            "BGWORKER_REDIS_TLS_CA_FILE, or BGWORKER_REDIS_TLS_INSECURE to skip verification"
        )
    return raw


# Fields whose values are never shown (repr, error messages).
_SECRETS = frozenset(f.name for f in dataclasses.fields(Settings) if not f.repr)

_ENV_FIELDS: dict[str, Callable[[str], object]] = {
    "redis_url": _redis_url,
    "redis_password": str,
    "redis_sentinels": _sentinels,
    "redis_sentinel_master": _sentinel_master,
    "redis_sentinel_password": str,
    "redis_sentinel_db": _positive(int, 0),
    "redis_username": str,
    "redis_password_file": Path,
    "redis_tls_ca_file": Path,
    "redis_tls_insecure": _bool,
    "state_dir": Path,
    "storage_dir": Path,
    "thumbnail_widths": _widths,
    "thumbnail_quality": _between(1, 100),
    "thumbnail_webp_method": _between(0, 6),
    "max_upload_bytes": _positive(int),
    "header_timeout_seconds": _positive(int),
    "max_upload_seconds": _positive(int),
    "keep_alive_seconds": _positive(int),
    "max_connections": _positive(int),
    "max_pixels": _positive(int),
    "job_retention_seconds": _positive(int, 60),
    "janitor_interval_seconds": _positive(int),
    "storage_grace_seconds": _positive(int, 60),
    "max_retries": _positive(int, 0),
    "retry_backoff_max": _positive(int),
    "max_delay_seconds": _positive(int, 0),
    "soft_time_limit": _positive(int),
    "time_limit": _positive(int),
    "task_time_limits": _time_limits,
    "shutdown_timeout": _positive(int),
    "restore_interval": _positive(int),
    "visibility_margin": _positive(int),
    "worker_queues": _queues,
    "worker_concurrency": _positive(int),
    "max_tasks_per_child": _positive(int, 0),
    "max_memory_per_child": _positive(int, 0),
    "debug_tasks": _bool,
    "log_level": _log_level,
    "retry_after_seconds": _positive(int),
    "sse_keepalive_seconds": _positive(int),
    "auth": _auth_mode,
    "admin_key": _secret("BGWORKER_ADMIN_KEY"),
    "url_signing_key": _secret("BGWORKER_URL_SIGNING_KEY"),
    "signed_url_seconds": _positive(int, 60),
    "api_key": str,
    "enqueue_fsync": _bool,
    "rate_limit_per_second": _positive_float,
    "rate_limit_burst": _positive(int),
    "max_queued_jobs": _positive(int, 0),
    "redis_memory_headroom_percent": _between(0, 90),
    "max_event_streams": _positive(int),
    "event_stream_max_seconds": _positive(int),
}
