"""The documentation stands on its own: no reference to files outside the repository, and every
relative link in the markdown pages points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "_build", "examples", "__pycache__", ".numba_cache", "build",
             "dist", ".ruff_cache", ".pytest_cache", ".hypothesis"}
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".R", ".sbatch", ".rst", ".txt", ".cfg",
            ".ipynb"}
# documents that live outside the repository (the development notes the project started from)
OUTSIDE = ["SPEC" + "-nmf.md", "SPEC" + "-spz.md", "DESIGN" + ".md", "../" + "shared",
           "/work/" + "shared"]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md",
         *sorted((ROOT / "docs").glob("*.md"))]


def _files():
    for path in ROOT.rglob("*"):
        if path.is_file() and not SKIP_DIRS & set(path.relative_to(ROOT).parts) and (
                path.suffix in SUFFIXES or path.name == "Dockerfile"):
            yield path


def test_no_reference_outside_the_repository():
    found = []
    for path in _files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in OUTSIDE:
            for match in re.finditer(re.escape(name), text):
                line = text.count("\n", 0, match.start()) + 1
                found.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    assert not found, "point these at the docs pages instead:\n" + "\n".join(found)


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor on the same page (the site build checks those)
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_the_checks_see_something():
    """The scans cover the package and the pages (a wrong root would pass vacuously)."""
    names = {p.relative_to(ROOT).as_posix() for p in _files()}
    assert {"dask_factor/nmf.py", "docs/concepts.md", "README.md", "deploy/Dockerfile"} <= names
    assert sum(len(re.findall(r"\]\(", p.read_text(encoding="utf-8"))) for p in PAGES) > 20
