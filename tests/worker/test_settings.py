"""Settings fail at start-up, naming the variable, instead of misbehaving later."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
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
