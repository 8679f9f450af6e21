"""Who a request acts as: its ``Authorization: Bearer`` API key (:mod:`worker.auth`).

Checked on the event loop, one HGETALL per key at most every few seconds: results are
cached per token for :data:`CACHE_SECONDS`, so a revoked key stops working within that
time. Routes call :meth:`Authenticator.require` with the scope they need, and compare a
job's owner with :func:`may_see`: another owner's job is answered 404, as if it did not
exist (a 403 would tell a guesser that the id is real).
"""

from __future__ import annotations

import hashlib

import redis.asyncio as aioredis
from cachetools import TTLCache
from starlette.requests import Request

from api.quotas import Quotas
from worker.auth import (
    ANONYMOUS_ADMIN,
    BOOTSTRAP_ADMIN,
    Principal,
    check_token,
    is_admin_key,
    key_hash_key,
    split_token,
)
from worker.errors import Forbidden, Unauthorized
from worker.jobs import Job
from worker.settings import Settings

CACHE_SECONDS = 10
HOW_TO_GET_A_KEY = (
    "send an API key as 'Authorization: Bearer <key>'; an operator makes one with "
    "`bgworker keys create --name NAME` (or use the admin key from the chart's Secret)"
)


class Authenticator:
    def __init__(
        self, settings: Settings, client: aioredis.Redis, quotas: Quotas | None = None
    ) -> None:
        self.required = settings.auth == "required"
        self.quotas = quotas  # each authenticated request is charged to its key
        self._admin_key = settings.admin_key
        self._client = client
        # Keyed by the token's hash, so the cache holds no secret.
        self._cache: TTLCache[str, Principal | None] = TTLCache(10_000, CACHE_SECONDS)

    async def principal(self, request: Request) -> Principal:
        if not self.required:
            return ANONYMOUS_ADMIN
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(f"this API needs an API key: {HOW_TO_GET_A_KEY}")
        if is_admin_key(token, self._admin_key):
            return BOOTSTRAP_ADMIN
        cache_key = hashlib.sha256(token.encode()).hexdigest()
        if cache_key in self._cache:
            found = self._cache[cache_key]
        else:
            parts = split_token(token)
            found = None
            if parts is not None:
                key_id, secret = parts
                found = check_token(
                    key_id, secret, await self._client.hgetall(key_hash_key(key_id))
                )
            self._cache[cache_key] = found
        if found is None:
            raise Unauthorized(f"this API key is unknown or was revoked: {HOW_TO_GET_A_KEY}")
        return found

    async def require(self, request: Request, scope: str) -> Principal:
        principal = await self.principal(request)
        # Applications' keys are rate-limited; admin keys (operators, Prometheus, the helm
        # test) are not: the real cluster suite's polling with the admin key met 429s.
        if self.quotas is not None and not principal.admin:
            await self.quotas.charge(principal)
        if not principal.may(scope):
            raise Forbidden(
                f"the key {principal.name!r} lacks the {scope!r} scope this route needs; "
                f"it has {', '.join(sorted(principal.scopes))}"
            )
        return principal


def may_see(principal: Principal, job: Job) -> bool:
    """Admins see every job; others their owner's jobs only."""
    return principal.admin or job.owner == principal.owner
