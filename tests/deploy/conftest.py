"""The README's "On a cluster" section, for the tests that run its commands (fixture
``readme_cluster``: ``.python`` code, ``.shell`` argv lists, ``.command(program)``)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ReadmeCluster:
    text: str
    python: str
    shell: list[list[str]]

    def command(self, program: str) -> list[str]:
        """The section's one shell command that starts with ``program``."""
        found = [argv for argv in self.shell if argv[0] == program]
        assert len(found) == 1, (program, found)
        return found[0]


def _section() -> ReadmeCluster:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"^## On a cluster\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert m, 'README.md has no "## On a cluster" section'
    section = m.group(1)
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, flags=re.S | re.M)
    python = [body for lang, body in blocks if lang == "python"]
    shell = [body for lang, body in blocks if lang == ""]
    assert len(python) == 1 and len(shell) == 1, "expected one python and one shell block"
    commands = [shlex.split(line) for line in shell[0].splitlines() if line.strip()]
    return ReadmeCluster(section, python[0], commands)


@pytest.fixture(scope="session")
def readme_cluster() -> ReadmeCluster:
    return _section()
