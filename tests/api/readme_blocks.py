"""The README's python examples, by section, for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path


def readme_block(heading: str, index: int = 0) -> str:
    """The ``index``-th (default: first) python block under the README heading ``## {heading}``."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python[^\n]*\n(.*?)```", section, re.S)[index]
