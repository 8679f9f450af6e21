"""Session fixtures of the container suite: a Docker engine and bgworker's two images.

Both are made once per test session (the images build in about two minutes on a fresh
machine, in seconds from Docker's layer cache). As root the engine is installed and
started when missing (tests/e2e/docker_images.py); a machine that still cannot have
Docker skips the suite with the reason, which fails the run under ``CI=true``
(tests/conftest.py). The images' sizes and build times end up in pytest's summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.docker_images import (
    Engine,
    Unavailable,
    build_all,
    choose_base,
    ensure_engine,
    image_size,
)

# Filled by the fixtures, printed at the end of the session.
_report: list[str] = []


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    try:
        engine = ensure_engine(tmp_path_factory.mktemp("docker"))
    except Unavailable as exc:
        pytest.skip(f"container e2e: {exc}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def base_image(docker_engine: Engine) -> str:
    """What the images are built on (E2E_BASE_IMAGE, python:3.12-slim, or a local base)."""
    try:
        base = choose_base()
    except Unavailable as exc:
        pytest.skip(f"container e2e: {exc}")
    return base


@pytest.fixture(scope="session")
def images(base_image: str) -> dict[str, str]:
    """``{"api": "bgworker-api:e2e", "worker": "bgworker-worker:e2e"}``, freshly built."""
    built = build_all("e2e", base_image)
    base_size = image_size(base_image)  # known only now when the build pulled the base
    _report.append(f"base image {base_image}: {base_size / 1e6:.0f} MB")
    for b in built.values():
        _report.append(
            f"{b.ref}: {b.size / 1e6:.0f} MB ({(b.size - base_size) / 1e6:.0f} MB over the "
            f"base), built in {b.seconds:.0f} s"
        )
    return {target: b.ref for target, b in built.items()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _report:
        terminalreporter.section("bgworker images")
        for line in _report:
            terminalreporter.write_line(line)
