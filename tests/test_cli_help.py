"""The first ten minutes: every command explains itself, and the docs say where it is."""

from __future__ import annotations

import pytest

from tests.helpers import REPO
from worker.cli import main

COMMANDS = ["dev", "api", "worker", "alive", "smoke", "queues", "dead", "keys"]


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_a_description_in_its_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    paragraphs = capsys.readouterr().out.split("\n\n")
    assert paragraphs[0].startswith(f"usage: bgworker {command}")
    description = paragraphs[1]
    assert not description.startswith(("options:", "positional arguments:")), paragraphs
    assert len(description.split()) >= 10, description


def test_the_docs_and_scripts_run_say_where_the_command_is():
    readme = (REPO / "README.md").read_text()
    command_line = readme.split("## Command line", 1)[1].split("\n## ", 1)[0]
    assert ".venv/bin/bgworker" in command_line
    assert ".venv/bin/bgworker" in (REPO / "scripts" / "run").read_text().split("exec ")[0]
