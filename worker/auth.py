"""API keys: bearer tokens with scopes and an owner, stored hashed in Redis.

A token reads ``bgw_<key id>_<secret>``. Redis keeps, per key, only the SHA-256 of the
secret (the secret is 32 random bytes: a slow password hash adds nothing against
guessing), its scopes, a name and the owner whose jobs it sees. The token is shown once,
when the key is made (``bgworker keys create``); a lost token is revoked and replaced.
The bootstrap admin key (``BGWORKER_ADMIN_KEY``, from a Secret in the chart) is checked
against the setting instead, so a fresh install has a key before Redis holds any.

Scopes: ``jobs:write`` (create jobs and uploads, cancel them), ``jobs:read`` (records,
event streams, thumbnails), ``admin`` (every owner's jobs, dead letters and replay,
queues, metrics).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from worker.errors import InvalidRequest, NotFound
from worker.jobs import KEY_PREFIX, text

SCOPES = ("jobs:write", "jobs:read", "admin")
DEFAULT_SCOPES = ("jobs:write", "jobs:read")
KEYS_INDEX = KEY_PREFIX + "keys"
ADMIN_OWNER = "admin"

_TOKEN = re.compile(r"bgw_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_OWNER = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def key_hash_key(key_id: str) -> str:
    return f"{KEY_PREFIX}key:{key_id}"


@dataclass(frozen=True)
class Principal:
    """Who a request acts as."""

    key_id: str
    name: str
    owner: str
    scopes: frozenset[str]

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        return self.admin or scope in self.scopes


# What a request acts as when authentication is off (`bgworker dev` on loopback).
ANONYMOUS_ADMIN = Principal("-", "anonymous (BGWORKER_AUTH=off)", ADMIN_OWNER, frozenset(SCOPES))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(raw: str) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise InvalidRequest(f"unknown scope(s) {bad or raw!r}; choose from {', '.join(SCOPES)}")
    return scopes


class KeyStore:
    def __init__(self, client: redis.Redis, admin_key: str = "") -> None:
        self.client = client
        self._admin_key = admin_key

    def create(
        self, name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, owner: str = ""
    ) -> tuple[Principal, str]:
        """A new key; returns it and its token (shown once: only its hash is kept)."""
        if not name or len(name) > 100 or not name.isprintable():
            raise InvalidRequest("a key needs a name of 1 to 100 printable characters")
        key_id = secrets.token_hex(6)
        owner = owner or key_id
        if not _OWNER.fullmatch(owner):
            raise InvalidRequest(
                "an owner is 1 to 64 letters, digits, '.', '_', ':' or '-' (a tenant's name)"
            )
        secret = secrets.token_urlsafe(32)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            key_hash_key(key_id),
            mapping={
                "digest": _digest(secret),
                "name": name,
                "owner": owner,
                "scopes": ",".join(scopes),
                "created_at": repr(time.time()),
            },
        )
        pipe.zadd(KEYS_INDEX, {key_id: time.time()})
        pipe.execute()
        return Principal(key_id, name, owner, frozenset(scopes)), f"bgw_{key_id}_{secret}"

    def list(self) -> list[tuple[Principal, float]]:
        raw: Any = self.client.zrange(KEYS_INDEX, 0, -1)
        ids = [text(i) for i in raw]
        pipe = self.client.pipeline(transaction=False)
        for key_id in ids:
            pipe.hgetall(key_hash_key(key_id))
        found = []
        for key_id, data in zip(ids, pipe.execute(), strict=True):
            if data:
                principal = _principal(key_id, data)
                found.append((principal, float(text(data[b"created_at"]))))
        return found

    def revoke(self, key_id: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(key_hash_key(key_id))
        pipe.zrem(KEYS_INDEX, key_id)
        deleted, _ = pipe.execute()
        if not deleted:
            raise NotFound(f"no key {key_id!r}; `bgworker keys list` shows the keys")

    def authenticate(self, token: str) -> Principal | None:
        """The key a bearer token belongs to, or None. Comparisons are constant-time."""
        if is_admin_key(token, self._admin_key):
            return BOOTSTRAP_ADMIN
        parts = split_token(token)
        if parts is None:
            return None
        key_id, secret = parts
        return check_token(key_id, secret, self.client.hgetall(key_hash_key(key_id)))


def split_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed token."""
    match = _TOKEN.fullmatch(token)
    return (match.group(1), match.group(2)) if match else None


def check_token(key_id: str, secret: str, data: Mapping[Any, Any]) -> Principal | None:
    """The key's principal if ``secret`` is its secret (``data``: its stored hash)."""
    if not data or not hmac.compare_digest(text(data[b"digest"]), _digest(secret)):
        return None
    return _principal(key_id, data)


def is_admin_key(token: str, admin_key: str) -> bool:
    return bool(admin_key) and hmac.compare_digest(_digest(token), _digest(admin_key))


BOOTSTRAP_ADMIN = Principal("admin", "bootstrap admin key", ADMIN_OWNER, frozenset(SCOPES))


def _principal(key_id: str, data: Mapping[Any, Any]) -> Principal:
    scopes = frozenset(s for s in text(data[b"scopes"]).split(",") if s)
    return Principal(key_id, text(data[b"name"]), text(data[b"owner"]), scopes)
