"""deploy/Dockerfile names every runtime dependency of pyproject.toml (and of the extras it
installs) with the same bounds, and its build context (.dockerignore) holds what it copies."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    lines, out, current = text.splitlines(), [], ""
    for line in lines:
        if line.lstrip().startswith("#"):
            continue
        current += line.rstrip()[:-1] + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest.strip()))
            current = ""
    return out


def _key(req: Requirement) -> tuple:
    return canonicalize_name(req.name), tuple(sorted(req.extras)), str(req.specifier)


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def _installed_extras(runs: list[str]) -> set[str]:
    for run in runs:
        m = re.search(r'pip install "\.\[([^\]]*)\]"', run)
        if m:
            return {e.strip() for e in m.group(1).split(",")}
    raise AssertionError("the Dockerfile does not pip install the package (.[extras])")


def test_dockerfile_names_every_runtime_dependency():
    steps = _instructions(DOCKERFILE.read_text())
    runs = [args for word, args in steps if word == "RUN"]
    extras = _installed_extras(runs)
    assert "cluster" in extras  # the extra dask_factor.cluster's errors tell users to install
    project = _pyproject()
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in sorted(extras):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]

    dependency_layer = next(run for run in runs if "pip install" in run and '"numpy' in run)
    named = [Requirement(r) for r in re.findall(r'"([^"]+)"', dependency_layer)]
    assert sorted(map(_key, named)) == sorted(map(_key, wanted)), (
        "deploy/Dockerfile's dependency layer and pyproject.toml differ:\n"
        f"  only in pyproject: {sorted(set(map(str, wanted)) - set(map(str, named)))}\n"
        f"  only in Dockerfile: {sorted(set(map(str, named)) - set(map(str, wanted)))}")


def test_dockerfile_python_satisfies_requires_python():
    base = next(args for word, args in _instructions(DOCKERFILE.read_text()) if word == "FROM")
    m = re.match(r"python:(\d+)\.(\d+)", base)
    assert m, base
    low = tuple(map(int, re.search(r">=\s*(\d+)\.(\d+)", _pyproject()["requires-python"])
                    .groups()))
    assert (int(m.group(1)), int(m.group(2))) >= low


def _dockerignore_keeps(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    keep = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        pattern_glob = pattern.replace("**/", "*")
        if any(fnmatch.fnmatch(p, pattern_glob) for p in prefixes):
            keep = negate
    return keep


def test_build_context_has_what_is_copied_and_nothing_else():
    steps = _instructions(DOCKERFILE.read_text())
    copies = [args.split()[:-1] for word, args in steps if word == "COPY"]
    sources = [s for srcs in copies for s in srcs]
    assert set(sources) == {"pyproject.toml", "README.md", "LICENSE", "dask_factor"}
    for src in sources:
        assert (ROOT / src).exists(), src
        assert _dockerignore_keeps(src), f".dockerignore leaves out {src}"
    assert _dockerignore_keeps("dask_factor/datasets/data/pbmc3k.npz")
    for path in (".venv/bin/python", ".git/HEAD", "tests/conftest.py", "benchmarks/x.py",
                 "dask_factor/__pycache__/cluster.cpython-312.pyc", ".numba_cache/x"):
        assert not _dockerignore_keeps(path), path


def test_image_provides_the_commands_the_manifests_and_chart_start():
    text = DOCKERFILE.read_text()
    for wrapper in ("dask-scheduler", "dask-worker"):  # the dask Helm chart's commands
        assert f"/usr/local/bin/{wrapper}" in text
    assert 'ENTRYPOINT ["tini"' in text  # container args (no command) run under tini
    assert "dask-factor --version" in text
