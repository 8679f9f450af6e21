"""Every Redis client of bgworker is made here: plain Redis or a Sentinel-managed primary.

The API, the workers, Celery's broker connection and the command line all reach Redis
through these functions, so pointing bgworker at Sentinel (``BGWORKER_REDIS_SENTINELS``)
changes every one of them at once. With Sentinel, redis-py's ``Sentinel.master_for``
(and kombu's ``sentinel://`` transport, which uses it) asks the sentinels for the
current primary on each new connection and drops a connection whose server has become
a replica; nothing here follows a failover by hand. Callers pass the same timeout and
health-check arguments in both cases.

TLS (``rediss://``) is verified by every client made here, kombu's included: certificate
chain (against ``BGWORKER_REDIS_TLS_CA_FILE`` or the system's CAs) and host name. kombu
left alone would not: for a ``rediss://`` broker URL without ``broker_use_ssl`` it connects
with ``ssl_cert_reqs=CERT_NONE`` (``kombu/connection.py``). Only
``BGWORKER_REDIS_TLS_INSECURE`` turns verification off, with a warning in every process.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
import redis.sentinel

from worker.settings import Settings

log = logging.getLogger("bgworker.redis")
_warned_insecure = False


class _SentinelRedis(redis.Redis):
    """A primary's client whose ``close()`` also closes its connections to the sentinels."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            manager.close()


class _AsyncSentinelRedis(aioredis.Redis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A client of the Redis bgworker uses; ``options`` are redis-py connection arguments
    (timeouts, health checks), applied to the primary's connections and, for their
    ``socket_*`` part, to the sentinels'."""
    if not settings.uses_sentinel:
        return redis.Redis.from_url(settings.redis_url, **tls_options(settings), **options)
    # redis-py's sync Sentinel is untyped; its asyncio twin is typed.
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs(settings, options)
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master,
        redis_class=_SentinelRedis,
        **_primary_kwargs(settings, options),
    )
    return client


def async_client(
    settings: Settings, *, pool_size: int | None = None, pool_wait: float = 5.0, **options: Any
) -> aioredis.Redis:
    """The asyncio twin of :func:`sync_client` (``redis.asyncio``, ``redis.asyncio.sentinel``).

    With ``pool_size``, at most that many connections, and a caller waits up to
    ``pool_wait`` seconds for a free one (redis-py's BlockingConnectionPool) instead of
    failing at once with "Too many connections" when a burst of requests exceeds it.
    redis-py's Sentinel pool cannot wait: there the size is only a cap.
    """
    if pool_size is not None:
        options["max_connections"] = pool_size
    if not settings.uses_sentinel:
        options.update(tls_options(settings))
        if pool_size is not None:
            pool = aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, timeout=pool_wait, **options
            )
            return aioredis.Redis.from_pool(pool)
        return aioredis.Redis.from_url(settings.redis_url, **options)
    sentinel = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels), sentinel_kwargs=_sentinel_kwargs(settings, options)
    )
    client: aioredis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        redis_class=_AsyncSentinelRedis,
        **_primary_kwargs(settings, options),
    )
    return client


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: the Redis URL, or kombu's ``sentinel://h:p/db;sentinel://...``.

    Each sentinel's URL carries the primary's password and database (kombu reads them from
    the URL it is connected through, and moves to the next one if a sentinel is down).
    """
    if not settings.uses_sentinel:
        return settings.redis_url
    user = quote(settings.redis_username, safe="")
    auth = f"{user}:{quote(settings.redis_password, safe='')}@" if settings.redis_password else ""
    return ";".join(
        f"sentinel://{auth}{_netloc(host, port)}/{settings.redis_sentinel_db}"
        for host, port in settings.redis_sentinels
    )


def tls_options(settings: Settings) -> dict[str, Any]:
    """redis-py's connection arguments for TLS: verify certificate and host name (against
    the CA file when given); nothing without TLS. redis-py 8 verifies by default; these are
    written out so that no default, and no other client library, decides it."""
    if not settings.redis_tls:
        return {}
    if settings.redis_tls_insecure:
        _warn_insecure(settings)
        return {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    return options


def broker_use_ssl(settings: Settings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for a TLS broker (kombu hands the dict to redis-py's
    SSLConnection), else None. Without it kombu skips verification for ``rediss://``."""
    if not settings.redis_tls:
        return None
    options = tls_options(settings)
    reqs = ssl.CERT_NONE if options["ssl_cert_reqs"] == "none" else ssl.CERT_REQUIRED
    return {**options, "ssl_cert_reqs": reqs}


def _warn_insecure(settings: Settings) -> None:
    global _warned_insecure
    if _warned_insecure:
        return
    _warned_insecure = True
    log.warning(
        "BGWORKER_REDIS_TLS_INSECURE is set: the TLS connection to %s is encrypted but NOT "
        "verified, so anyone between this process and Redis can pose as Redis and read or "
        "change every job. Give Redis' CA with BGWORKER_REDIS_TLS_CA_FILE instead.",
        settings.redis_location,
    )


def broker_transport_options(settings: Settings, **options: Any) -> dict[str, Any]:
    """What kombu's Redis transport needs beyond ``options`` to reach the primary: for
    Sentinel, ``master_name`` and ``sentinel_kwargs`` (the sentinels' password and
    timeouts; kombu's keys, ``kombu/transport/redis.py`` ``SentinelChannel``)."""
    if not settings.uses_sentinel:
        return dict(options)
    return {
        **options,
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings, options),
    }


def _sentinel_kwargs(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    # redis-py's own default for the sentinels' connections is the socket_* options;
    # a password for them must be given here, apart from the primary's.
    kwargs = {k: v for k, v in options.items() if k.startswith("socket_")}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    return kwargs


def _primary_kwargs(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    kwargs = {**options, "db": settings.redis_sentinel_db}
    if settings.redis_password:
        kwargs["password"] = settings.redis_password
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    return kwargs


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
