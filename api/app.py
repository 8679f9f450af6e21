"""The Starlette application: routes, error handlers and lifespan, built from settings."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware

from api.context import lifespan_for
from api.errors import HANDLERS
from api.headers import SecurityHeaders
from api.routes import images, jobs, ops
from worker.settings import Settings


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    return Starlette(
        routes=[*images.routes, *jobs.routes, *ops.routes],
        exception_handlers=HANDLERS,
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan_for(settings),
    )
