"""API keys: no key no access, scopes per route, owners see only their own jobs.

The real app with its lifespan (TestClient), real Redis, keys made by the same code as
``bgworker keys create`` (and once by the command itself), real workers where a job
has to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from api.app import create_app
from tests import factories
from tests.helpers import REPO, wait_state
from worker.auth import KeyStore
from worker.settings import Settings

ADMIN_KEY = "admin-" + "x" * 40
SIGNING_KEY = "sign-" + "y" * 40
JOB = {"task": "debug.noop"}


@pytest.fixture
def auth_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "BGWORKER_AUTH": "required",
        "BGWORKER_ADMIN_KEY": ADMIN_KEY,
        "BGWORKER_URL_SIGNING_KEY": SIGNING_KEY,
    }


@pytest.fixture
def client(auth_env: dict[str, str]) -> Iterator[TestClient]:
    with TestClient(create_app(Settings.from_env(auth_env)), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def keys(rclient) -> KeyStore:
    return KeyStore(rclient)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


PROTECTED = [
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/" + "a" * 32),
    ("DELETE", "/v1/jobs/" + "a" * 32),
    ("GET", "/v1/jobs/" + "a" * 32 + "/events"),
    ("POST", "/v1/images"),
    ("GET", "/v1/dead"),
    ("POST", "/v1/dead/" + "a" * 32 + "/retry"),
    ("GET", "/v1/queues"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_the_probes_needs_a_key(client, method, path):
    for headers in ({}, bearer("not-a-key"), bearer("bgw_0123456789ab_" + "z" * 43)):
        resp = client.request(method, path, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.json()["error"]["code"] == "unauthorized"
        assert "bgworker keys create" in resp.json()["error"]["message"]
        assert resp.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200


def test_scopes_decide_what_a_key_may_do(client, keys, rclient):
    _, reader = keys.create("dashboard", ("jobs:read",))
    _, writer = keys.create("web app")
    _, operator = keys.create("ops", ("admin",))
    refused = client.post("/v1/jobs", json=JOB, headers=bearer(reader))
    assert refused.status_code == 403
    assert "'jobs:write'" in refused.json()["error"]["message"]
    assert not rclient.keys("bgworker:job:*"), "a refused request changes nothing"
    assert client.post("/v1/jobs", json=JOB, headers=bearer(writer)).status_code == 202
    for path in ("/v1/dead", "/v1/queues", "/metrics"):
        assert client.get(path, headers=bearer(writer)).status_code == 403, path
        assert client.get(path, headers=bearer(operator)).status_code == 200, path
        assert client.get(path, headers=bearer(ADMIN_KEY)).status_code == 200, path


def test_another_owners_jobs_answer_404(client, keys, start_worker, store):
    _, alice = keys.create("alice's app", owner="alice")
    _, alice_too = keys.create("alice's worker", owner="alice")
    _, bob = keys.create("bob's app", owner="bob")
    job_id = client.post("/v1/jobs", json=JOB, headers=bearer(alice)).json()["id"]
    assert store.require(job_id).owner == "alice"
    for method, path in (
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("DELETE", f"/v1/jobs/{job_id}"),
    ):
        resp = client.request(method, path, headers=bearer(bob))
        assert resp.status_code == 404, (method, resp.text)
        assert job_id in resp.json()["error"]["message"]  # the same answer as a wrong id
    assert store.require(job_id).state == "queued", "bob's cancel changed nothing"
    for token in (alice, alice_too, ADMIN_KEY):
        assert client.get(f"/v1/jobs/{job_id}", headers=bearer(token)).status_code == 200
    start_worker()
    assert wait_state(store, job_id, "succeeded").state == "succeeded"


def test_idempotency_keys_belong_to_their_owner_and_their_request(client, keys):
    _, alice = keys.create("alice", owner="alice")
    _, bob = keys.create("bob", owner="bob")
    key = {"Idempotency-Key": "order-1001"}
    first = client.post("/v1/jobs", json=JOB, headers={**bearer(alice), **key})
    again = client.post("/v1/jobs", json=JOB, headers={**bearer(alice), **key})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"], "a retry returns the same job"
    # Bob guessing Alice's key gets a job of his own, not hers and not its links.
    guessed = client.post("/v1/jobs", json=JOB, headers={**bearer(bob), **key})
    assert guessed.status_code == 202 and guessed.json()["id"] != first.json()["id"]
    # The same key with another request is a client bug: refused, nothing made.
    other = {"task": "debug.sleep", "args": {"seconds": 1}}
    reused = client.post("/v1/jobs", json=other, headers={**bearer(alice), **key})
    assert reused.status_code == 409, reused.text
    assert "different request" in reused.json()["error"]["message"]
    # Uploads too: another image under the same key.
    photo = {"Content-Type": "image/jpeg", **bearer(alice), "Idempotency-Key": "photo-1"}
    a = client.post("/v1/images", content=factories.photo_jpeg(320, 240), headers=photo)
    b = client.post("/v1/images", content=factories.photo_jpeg(321, 240), headers=photo)
    assert a.status_code == 202 and b.status_code == 409, b.text


def test_private_thumbnails_by_signed_link_public_ones_by_plain_link(
    client, keys, start_worker, store
):
    _, alice = keys.create("alice", owner="alice")
    _, bob = keys.create("bob", owner="bob")
    start_worker()
    photo = {"Content-Type": "image/jpeg", **bearer(alice)}
    private = client.post("/v1/images?widths=320", content=factories.photo_jpeg(), headers=photo)
    public = client.post(
        "/v1/images?widths=320&public=true", content=factories.photo_jpeg(), headers=photo
    )
    for resp in (private, public):
        wait_state(store, resp.json()["id"], "succeeded")

    link = private.json()["links"]["thumbnails"]["320"]
    assert "sig=" in link and "expires=" in link
    image = client.get(link)  # no header: what an <img src> does
    assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
    assert image.headers["cache-control"].startswith("private")
    plain = link.split("?")[0]
    assert client.get(plain).status_code == 401
    assert client.get(plain, headers=bearer(bob)).status_code == 404
    assert client.get(plain, headers=bearer(alice)).status_code == 200
    forged = link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    assert client.get(forged).status_code == 403
    other_width = link.replace("/320?", "/640?")
    assert client.get(other_width).status_code == 403, "a signature covers one width"

    shared = public.json()["links"]["thumbnails"]["320"]
    assert "sig=" not in shared
    open_image = client.get(shared)
    assert open_image.status_code == 200
    assert open_image.headers["cache-control"].startswith("public")


def test_keys_from_the_command_line(auth_env, client):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "worker.cli", "keys", *args],
            env={**os.environ, **auth_env},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    made = cli("create", "--name", "ci", "--scopes", "jobs:write,jobs:read", "--owner", "acme")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("bgw_") and "shown only now" in made.stderr
    assert client.post("/v1/jobs", json=JOB, headers=bearer(token)).status_code == 202
    listed = cli("list")
    key_id = token.split("_")[1]
    assert key_id in listed.stdout and "acme" in listed.stdout
    assert token.split("_", 2)[2] not in listed.stdout, "a token is never shown again"
    bad = cli("create", "--name", "x", "--scopes", "root")
    assert bad.returncode == 2 and "unknown scope" in bad.stderr
    assert cli("revoke", key_id).returncode == 0
    gone = cli("revoke", key_id)
    assert gone.returncode == 2 and "no key" in gone.stderr


def test_revoked_key_is_refused(auth_env, keys):
    principal, token = keys.create("leaked")
    keys.revoke(principal.key_id)
    app = create_app(Settings.from_env(auth_env))
    with TestClient(app, raise_server_exceptions=False) as fresh:
        assert fresh.post("/v1/jobs", json=JOB, headers=bearer(token)).status_code == 401


def test_api_refuses_to_run_open_beyond_loopback(env):
    done = subprocess.run(
        [sys.executable, "-m", "worker.cli", "api", "--host", "0.0.0.0", "--port", "1"],
        env={**os.environ, **env, "BGWORKER_AUTH": "off"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "BGWORKER_AUTH=off would let anyone" in done.stderr
