"""Settings fail at start-up, naming the variable, instead of misbehaving later."""

from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import quote

import kombu
import pytest
import redis

from tests.helpers import REPO, wait_for, wait_state
from worker.celery_app import create_celery
from worker.enqueue import submit
from worker.errors import SettingsError
from worker.jobs import JobStore
from worker.redis_server import free_port
from worker.settings import Settings


def test_defaults_and_derived_visibility_timeout():
    s = Settings.from_env({})
    assert s.thumbnail_widths == (320, 640, 1280)
    assert s.worker_queues == ("critical", "default", "low")
    # Longer than any legitimate hold of a message, so a running job is never handed out twice.
    assert s.visibility_timeout > s.longest_time_limit


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"BGWORKER_MAX_UPLOAD_BYTES": "lots"}, "BGWORKER_MAX_UPLOAD_BYTES"),
        ({"BGWORKER_THUMBNAIL_WIDTHS": "320,abc"}, "BGWORKER_THUMBNAIL_WIDTHS"),
        ({"BGWORKER_DEBUG_TASKS": "maybe"}, "BGWORKER_DEBUG_TASKS"),
        ({"BGWORKER_THUMBNAIL_QUALITY": "101"}, "BGWORKER_THUMBNAIL_QUALITY"),
        ({"BGWORKER_REDIS_URL": "localhost:6379"}, "BGWORKER_REDIS_URL"),
        ({"BGWORKER_SHUTDOWN_TIMEOUT": "0"}, "BGWORKER_SHUTDOWN_TIMEOUT"),
        ({"BGWORKER_WORKER_QUEUES": "default,urgent"}, "BGWORKER_WORKER_QUEUES"),
        (
            {"BGWORKER_SOFT_TIME_LIMIT": "300", "BGWORKER_TIME_LIMIT": "200"},
            "BGWORKER_SOFT_TIME_LIMIT",
        ),
        ({"BGWORKER_TASK_TIME_LIMITS": '{"images.thumbnails": 5}'}, "BGWORKER_TASK_TIME_LIMITS"),
        ({"BGWORKER_MAX_UPLOADS_BYTES": "1"}, "BGWORKER_MAX_UPLOADS_BYTES"),
    ],
)
def test_bad_or_unknown_variable_is_named(env, names):
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_state_dir_moves_storage_along():
    s = Settings.from_env({"BGWORKER_STATE_DIR": "/srv/bg"})
    assert str(s.storage_dir) == "/srv/bg/storage"


AWKWARD_PASSWORD = "p@ss:w/rd%41 #?"


def test_password_setting_is_encoded_into_the_url_and_redacted():
    s = Settings.from_env(
        {"BGWORKER_REDIS_URL": "redis://redis:6379/2", "BGWORKER_REDIS_PASSWORD": AWKWARD_PASSWORD}
    )
    assert s.redis_url_redacted == "redis://:***@redis:6379/2"
    assert AWKWARD_PASSWORD not in repr(s)
    # Both clients that read the URL get the password back exactly.
    assert redis.connection.parse_url(s.redis_url)["password"] == AWKWARD_PASSWORD
    assert kombu.Connection(s.redis_url).password == AWKWARD_PASSWORD


def test_password_in_two_places_is_refused():
    with pytest.raises(SettingsError, match="BGWORKER_REDIS_PASSWORD"):
        Settings.from_env(
            {"BGWORKER_REDIS_URL": "redis://:a@redis:6379/0", "BGWORKER_REDIS_PASSWORD": "b"}
        )


def test_worker_and_cli_reach_a_password_protected_redis(tmp_path, start_worker, env):
    port = free_port()
    conf = tmp_path / "redis.conf"
    # Redis config strings take double quotes with backslash escapes.
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\nsave ""\ndir {tmp_path}\nrequirepass "{AWKWARD_PASSWORD}"\n'
    )
    server = subprocess.Popen(["redis-server", str(conf)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: _pong(port), timeout=10, what="redis-server with a password")
        secured = {
            **env,
            "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{port}/0",
            "BGWORKER_REDIS_PASSWORD": AWKWARD_PASSWORD,
        }
        cli = subprocess.run(
            [sys.executable, "-m", "worker.cli", "queues", "--json"],
            env={**os.environ, **secured},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert cli.returncode == 0, cli.stderr
        settings = Settings.from_env(secured)
        worker = start_worker(**secured)
        app = create_celery(settings)
        store = JobStore(redis.Redis.from_url(settings.redis_url), 3600)
        job, _ = submit(store, app, "debug.noop", {}, "default")
        wait_state(store, job.id, "succeeded")
        worker.stop()
        assert AWKWARD_PASSWORD not in worker.output
        assert quote(AWKWARD_PASSWORD, safe="") not in worker.output
    finally:
        server.terminate()
        server.wait(10)


def test_wrong_password_error_names_the_redacted_url(tmp_path, env):
    cli = subprocess.run(
        [sys.executable, "-m", "worker.cli", "queues"],
        env={
            **os.environ,
            **env,
            "BGWORKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "BGWORKER_REDIS_PASSWORD": AWKWARD_PASSWORD,
        },
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert cli.returncode == 1
    assert ":***@127.0.0.1" in cli.stderr
    assert AWKWARD_PASSWORD not in cli.stderr


def _pong(port: int) -> bool:
    try:
        return redis.Redis(port=port, password=AWKWARD_PASSWORD).ping()
    except redis.ConnectionError:
        return False


SENTINEL_ENV = {
    "BGWORKER_REDIS_SENTINELS": "s1:26379, s2:26380,[::1]:26381,s4",
    "BGWORKER_REDIS_SENTINEL_MASTER": "bgmaster",
}


def test_sentinel_settings_parse_and_keep_passwords_out_of_repr():
    s = Settings.from_env(
        {
            **SENTINEL_ENV,
            "BGWORKER_REDIS_PASSWORD": AWKWARD_PASSWORD,
            "BGWORKER_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
            "BGWORKER_REDIS_SENTINEL_DB": "2",
        }
    )
    assert s.uses_sentinel
    assert s.redis_sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381), ("s4", 26379))
    assert (s.redis_sentinel_master, s.redis_sentinel_db) == ("bgmaster", 2)
    assert s.redis_password == AWKWARD_PASSWORD
    for shown in (repr(s), s.redis_location):
        assert AWKWARD_PASSWORD not in shown and "sentinel-secret" not in shown
    assert "bgmaster" in s.redis_location and "s2:26380" in s.redis_location


def test_sentinel_broker_url_and_transport_options_reach_kombu():
    from kombu.utils.url import _parse_url

    from worker.redis_client import broker_transport_options, broker_url

    s = Settings.from_env(
        {
            **SENTINEL_ENV,
            "BGWORKER_REDIS_PASSWORD": AWKWARD_PASSWORD,
            "BGWORKER_REDIS_SENTINEL_PASSWORD": "sentinel-secret",
        }
    )
    conn = kombu.Connection(broker_url(s))
    assert conn.transport_cls == "sentinel"
    assert (conn.hostname, conn.port, conn.password) == ("s1", 26379, AWKWARD_PASSWORD)
    # What kombu's SentinelChannel reads from each alternative URL.
    parsed = [_parse_url(alt) for alt in conn.alt]
    assert [(u.hostname, u.port) for u in parsed] == list(s.redis_sentinels)
    assert {(u.password, u.path) for u in parsed} == {(AWKWARD_PASSWORD, "0")}
    options = broker_transport_options(s, socket_timeout=10, visibility_timeout=5)
    assert options["master_name"] == "bgmaster"
    assert options["sentinel_kwargs"] == {"socket_timeout": 10, "password": "sentinel-secret"}
    assert create_celery(s).conf.broker_transport_options["master_name"] == "bgmaster"
    # Without sentinels nothing changes.
    plain = Settings.from_env({})
    assert broker_url(plain) == plain.redis_url
    assert broker_transport_options(plain, socket_timeout=10) == {"socket_timeout": 10}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"BGWORKER_REDIS_SENTINELS": "s1:26379"}, "needs BGWORKER_REDIS_SENTINEL_MASTER"),
        ({"BGWORKER_REDIS_SENTINEL_MASTER": "m"}, "without BGWORKER_REDIS_SENTINELS"),
        ({"BGWORKER_REDIS_SENTINEL_PASSWORD": "x"}, "without BGWORKER_REDIS_SENTINELS"),
        ({"BGWORKER_REDIS_SENTINEL_DB": "1"}, "without BGWORKER_REDIS_SENTINELS"),
        ({**SENTINEL_ENV, "BGWORKER_REDIS_URL": "redis://r:6379/0"}, "both set"),
        ({"BGWORKER_REDIS_SENTINELS": "s1:port"}, "BGWORKER_REDIS_SENTINELS"),
        ({"BGWORKER_REDIS_SENTINELS": " , "}, "BGWORKER_REDIS_SENTINELS"),
        ({**SENTINEL_ENV, "BGWORKER_REDIS_SENTINEL_MASTER": "my master"}, "MASTER"),
    ],
)
def test_sentinel_misconfiguration_is_named(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_repr_never_shows_a_password():
    secret = "s3cr3t:/@pw"
    settings = Settings.from_env(
        {"BGWORKER_REDIS_URL": "redis://redis:6379/0", "BGWORKER_REDIS_PASSWORD": secret}
    )
    assert secret in settings.redis_url or "s3cr3t" in settings.redis_url  # it is used
    for shown in (repr(settings), str(settings), f"{settings!r}"):
        assert "s3cr3t" not in shown, shown
    assert "redis_url='redis://:***@redis:6379/0'" in repr(settings)
    in_url = Settings.from_env({"BGWORKER_REDIS_URL": "redis://u:hunter2@redis:6379/0"})
    assert "hunter2" not in repr(in_url)
