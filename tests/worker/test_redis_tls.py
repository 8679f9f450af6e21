"""TLS to Redis is verified by every client: the job store, the API's and the Celery broker's.

A real redis-server with TLS on loopback, a private CA made here: the right CA and host
name connect and run a job end to end (API → broker → worker → job store); a wrong CA or a
wrong host name is refused, by redis-py and by kombu alike (kombu on its own connects to a
``rediss://`` broker without checking anything).
"""

from __future__ import annotations

import asyncio
import datetime
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import TEST_ENV
from tests.helpers import wait_state
from worker.celery_app import create_celery
from worker.errors import SettingsError
from worker.jobs import JobStore
from worker.redis_client import async_client, broker_use_ssl, sync_client
from worker.redis_server import free_port
from worker.settings import Settings

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(directory: Path, cn: str) -> tuple[Path, x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


@dataclass
class TlsRedis:
    port: int
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that did not
    process: subprocess.Popen[bytes]

    def url(self, host: str = "localhost") -> str:
        return f"rediss://{host}:{self.port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """redis-server on loopback, TLS only, its certificate for "localhost" (not 127.0.0.1)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    ca_file, ca_cert, ca_key = make_ca(pki, "bgworker-test-ca")
    other_ca_file, _, _ = make_ca(pki, "someone-else-ca")
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    (pki / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "server.key").write_bytes(_pem_key(key))
    data = tmp_path / "redis"
    data.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",  # no plain-text port at all
            "--tls-port",
            str(port),
            "--tls-cert-file",
            str(pki / "server.crt"),
            "--tls-key-file",
            str(pki / "server.key"),
            "--tls-ca-cert-file",
            str(ca_file),
            "--tls-auth-clients",
            "no",
            "--dir",
            str(data),
            "--save",
            "",
            "--logfile",
            str(data / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = TlsRedis(port, ca_file, other_ca_file, process)
    probe = redis.Redis.from_url(
        server.url(), ssl_ca_certs=str(ca_file), socket_connect_timeout=0.5
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            probe.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log = (data / "redis.log").read_text() if (data / "redis.log").exists() else ""
                raise RuntimeError(f"TLS redis-server did not start:\n{log[-2000:]}") from None
            time.sleep(0.05)
    probe.close()
    yield server
    process.kill()
    process.wait()


@pytest.fixture
def env(tls_redis: TlsRedis, tmp_path: Path) -> dict[str, str]:
    """Every process of these tests (API, workers) reaches Redis only over verified TLS."""
    return {
        **TEST_ENV,
        "BGWORKER_REDIS_URL": tls_redis.url(),
        "BGWORKER_REDIS_TLS_CA_FILE": str(tls_redis.ca_file),
        "BGWORKER_STATE_DIR": str(tmp_path / "state"),
    }


def _ping_async(settings: Settings) -> object:
    async def ping() -> object:
        client = async_client(settings, socket_connect_timeout=2)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    return asyncio.run(ping())


def test_the_right_ca_runs_a_job_end_to_end(api, start_worker, settings):
    assert settings.redis_tls
    start_worker("--queues", "critical,default,low")
    resp = api.post("/v1/jobs", json={"task": "debug.noop", "args": {}})
    assert resp.status_code == 202, resp.text
    store = JobStore(sync_client(settings, socket_connect_timeout=2), 60)
    assert wait_state(store, resp.json()["id"], "succeeded").state == "succeeded"
    assert api.get("/readyz").status_code == 200
    assert _ping_async(settings) is True


@pytest.mark.parametrize("wrong", ["ca", "hostname"])
def test_a_wrong_ca_or_host_name_is_refused_by_every_client(tls_redis, env, wrong):
    if wrong == "ca":
        env = {**env, "BGWORKER_REDIS_TLS_CA_FILE": str(tls_redis.other_ca_file)}
        expected = "certificate verify failed"
    else:
        # Same server, same CA, but the certificate names "localhost", not this address.
        env = {**env, "BGWORKER_REDIS_URL": tls_redis.url("127.0.0.1")}
        expected = "IP address mismatch"
    settings = Settings.from_env(env)
    with pytest.raises(redis.ConnectionError, match=expected):
        sync_client(settings, socket_connect_timeout=2).ping()
    with pytest.raises(redis.ConnectionError, match=expected):
        _ping_async(settings)
    # Celery's broker connection (kombu), as the API publishes and the workers consume.
    app = create_celery(settings)
    try:
        with pytest.raises(Exception, match=expected):  # noqa: B017 (kombu wraps it)
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0)
                conn.default_channel.client.ping()
    finally:
        app.close()


def test_a_worker_with_the_wrong_ca_never_consumes(tls_redis, env, start_worker):
    worker = start_worker(
        "--queues", "default", ready=False, BGWORKER_REDIS_TLS_CA_FILE=str(tls_redis.other_ca_file)
    )
    deadline = time.monotonic() + 20
    while "certificate verify failed" not in worker.output and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "certificate verify failed" in worker.output, worker.output
    assert " ready." not in worker.output


def test_kombu_is_given_verification_for_rediss(env):
    settings = Settings.from_env(env)
    assert broker_use_ssl(settings) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_check_hostname": True,
        "ssl_ca_certs": env["BGWORKER_REDIS_TLS_CA_FILE"],
    }
    assert create_celery(settings).conf.broker_use_ssl == broker_use_ssl(settings)
    plain = Settings.from_env({"BGWORKER_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert broker_use_ssl(plain) is None


def test_insecure_is_explicit_loud_and_still_encrypted(tls_redis, env, caplog):
    insecure = {k: v for k, v in env.items() if k != "BGWORKER_REDIS_TLS_CA_FILE"}
    insecure["BGWORKER_REDIS_TLS_INSECURE"] = "1"
    settings = Settings.from_env(insecure)
    with caplog.at_level("WARNING", logger="bgworker.redis"):
        import worker.redis_client as rc

        rc._warned_insecure = False
        assert sync_client(settings, socket_connect_timeout=2).ping() is True
    assert "NOT verified" in caplog.text
    assert broker_use_ssl(settings)["ssl_cert_reqs"] == ssl.CERT_NONE


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"BGWORKER_REDIS_URL": "redis://h:1/0", "BGWORKER_REDIS_TLS_INSECURE": "1"}, "TLS"),
        ({"BGWORKER_REDIS_URL": "rediss://h:1/0?ssl_cert_reqs=none"}, "ssl_cert_reqs"),
        (
            {
                "BGWORKER_REDIS_URL": "rediss://h:1/0",
                "BGWORKER_REDIS_TLS_INSECURE": "1",
                "BGWORKER_REDIS_TLS_CA_FILE": "/etc/hostname",
            },
            "both set",
        ),
        (
            {"BGWORKER_REDIS_URL": "rediss://h:1/0", "BGWORKER_REDIS_TLS_CA_FILE": "/nonexistent"},
            "cannot be read",
        ),
    ],
)
def test_tls_settings_that_would_weaken_or_misfire_are_refused(extra, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(extra)
