"""The errors bgworker raises, and what each means to a caller.

    BgworkerError
    ├── InputError                 the request is wrong; nothing was changed (4xx)
    │   ├── InvalidRequest         422 invalid_request
    │   ├── NotFound               404 not_found
    │   ├── Unauthorized           401 unauthorized (no API key, or an unknown one)
    │   ├── Forbidden              403 forbidden (the key lacks the route's scope)
    │   ├── Conflict               409 conflict
    │   ├── UploadTooLarge         413 payload_too_large
    │   ├── UnsupportedMediaType   415 unsupported_media_type
    │   ├── InvalidImage           422 invalid_image (corrupt, truncated, unreadable)
    │   └── ImageTooLarge          422 too_many_pixels (decompression bomb guard)
    ├── BrokerUnavailable          503 broker_unavailable (Redis unreachable; retry later)
    ├── QueueFull                  503 queue_full (a bound on waiting jobs; retry later)
    ├── RateLimited                429 rate_limited (too many requests from one key)
    ├── SettingsError              a BGWORKER_* variable is missing or malformed (start-up)
    ├── SmokeFailed                ``bgworker smoke`` found a broken installation
    └── TaskError                  raised inside a task body
        ├── TransientError         retried with backoff, then dead-lettered
        └── PermanentError         fails the job at once, no retry

Each HTTP-facing class carries one status and one stable ``code``, so clients can
branch on ``code`` while ``message`` stays free to improve.
"""

from __future__ import annotations


class BgworkerError(Exception):
    """Base class of every error bgworker raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(BgworkerError):
    """The caller sent something we will not act on; no state was changed."""

    status = 400
    code = "bad_request"


class InvalidRequest(InputError):
    status = 422
    code = "invalid_request"


class NotFound(InputError):
    status = 404
    code = "not_found"


class Unauthorized(InputError):
    status = 401
    code = "unauthorized"


class Forbidden(InputError):
    status = 403
    code = "forbidden"


class Conflict(InputError):
    status = 409
    code = "conflict"


class UploadTooLarge(InputError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(InputError):
    status = 415
    code = "unsupported_media_type"


class InvalidImage(InputError):
    status = 422
    code = "invalid_image"


class ImageTooLarge(InputError):
    status = 422
    code = "too_many_pixels"


class BrokerUnavailable(BgworkerError):
    """Redis could not be reached; the caller should retry after a pause."""

    status = 503
    code = "broker_unavailable"


class QueueFull(BgworkerError):
    status = 503
    code = "queue_full"


class RateLimited(BgworkerError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SettingsError(BgworkerError):
    """A ``BGWORKER_*`` environment variable has a value we cannot use."""

    code = "bad_settings"


class TaskError(BgworkerError):
    """Raised by task bodies; decides between retry and immediate failure."""


class TransientError(TaskError):
    """Worth retrying: the same input may succeed later (I/O hiccup, busy dependency)."""

    code = "transient_error"


class PermanentError(TaskError):
    """Retrying cannot help (corrupt input): the job fails at once."""

    code = "permanent_error"


class SmokeFailed(BgworkerError):
    """An end-to-end check of a running installation failed; the message says where."""

    code = "smoke_failed"
