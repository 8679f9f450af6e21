"""Prints every soak's figures at the end of the session, passed or failed."""

from __future__ import annotations

import pytest

from tests.chaos import figures


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not figures.printed:
        return
    terminalreporter.section("chaos soak")
    for text in figures.printed:
        terminalreporter.write_line(text)
