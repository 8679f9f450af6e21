"""Session fixtures of the container suite: a Docker engine and bgworker's two images.

Both are made once per test session (the images build in about two minutes on a fresh
machine, in seconds from Docker's layer cache). A machine that cannot have Docker skips
the suite with the reason; the images' sizes and build times end up in pytest's summary.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.docker_images import (
    Built,
    Engine,
    Unavailable,
    build_all,
    choose_base,
    ensure_engine,
)

_built: dict[str, Built] = {}
_base: list[str] = []


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    try:
        engine = ensure_engine(tmp_path_factory.mktemp("docker"))
    except Unavailable as exc:
        pytest.skip(f"container e2e: {exc}")
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def images(docker_engine: Engine) -> dict[str, str]:
    """``{"api": "bgworker-api:e2e", "worker": "bgworker-worker:e2e"}``, freshly built."""
    try:
        base = choose_base()
    except Unavailable as exc:
        pytest.skip(f"container e2e: {exc}")
    _base.append(base)
    _built.update(build_all("e2e", base))
    return {target: built.ref for target, built in _built.items()}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _built:
        return
    terminalreporter.section("bgworker images")
    terminalreporter.write_line(f"base image: {_base[0]}")
    for built in _built.values():
        terminalreporter.write_line(
            f"{built.ref}: {built.size / 1e6:.0f} MB, built in {built.seconds:.0f} s"
        )
