#!/usr/bin/env python3
"""One entry point that sets itself up: ``python3 run.py demo``, ``test`` or ``docs``.

Creates ``.venv`` next to this file on first use, installs the package with its test extras
(again whenever ``pyproject.toml`` changes), then runs the demo fit, or ``ruff check`` and then the
test suite (docstring examples included) in it. ``docs`` also installs the ``docs`` extra and
builds the documentation site with warnings as errors into ``docs/_build/html`` (no notebook is
executed, nothing is fetched but the packages; ``docs --install-only`` stops after installing).
Extra arguments are passed on (``python3 run.py test -k spz``, ``python3 run.py demo --k 20``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("DASK_FACTOR_VENV", ROOT / ".venv"))
PY = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


EXTRAS = "test,anndata,plot"

#: ``python3 run.py test`` without arguments: the suite, then the tests that start live services
#: (SLURM, clusters whose workers are killed), then the notebooks (tests/conftest.py leaves the
#: last two out of a run whose ``-m`` does not name them)
TEST_STEPS = [
    ("the test suite (docstring examples and docs snippets included)", []),
    ("live services: SLURM, worker loss, the CLI against clusters", ["-m", "daemons"]),
    ("notebooks/, executed top to bottom", ["-m", "notebooks", "tests/notebooks"]),
]


def ensure_env(extras: str = EXTRAS) -> None:
    """``.venv`` with the package installed (editable) with ``extras``, once per pyproject."""
    suffix = "" if extras == EXTRAS else "-" + extras.replace(",", "-")
    stamp = VENV / f".dask_factor-installed{suffix}"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if PY.exists() and stamp.exists() and stamp.read_text() == want:
        return
    if not PY.exists():
        print(f"[run.py] creating a virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"[run.py] installing dask_factor[{extras}] (first run only)", flush=True)
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.check_call(pip + ["--upgrade", "pip"])
    subprocess.check_call(pip + ["-e", f"{ROOT}[{extras}]"])
    stamp.write_text(want)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "docs"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    ensure_env(EXTRAS + ",docs" if cmd == "docs" else EXTRAS)
    if cmd == "docs" and rest[:1] == ["--install-only"]:  # .ci/run: installs before the tests
        return 0
    if cmd == "docs":  # -q: sphinx prints only warnings (which fail the build) and errors
        out = ROOT / "docs" / "_build" / "html"
        args = [str(PY), "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", *rest,
                str(ROOT / "docs"), str(out)]
        return subprocess.call(args, cwd=ROOT)  # silent on success: docs/_build/html/index.html
    if cmd == "demo":
        args = [str(PY), "-m", "dask_factor.demo", *rest]
    else:
        print("[run.py] ruff check", flush=True)
        lint = subprocess.call([str(PY), "-m", "ruff", "check", str(ROOT)], cwd=ROOT)
        if lint != 0:
            return lint
        pytest = [str(PY), "-m", "pytest", "-q", "-ra", "--durations=15"]
        if rest:
            return subprocess.call(pytest + rest, cwd=ROOT)
        status = 0
        for what, extra in TEST_STEPS:  # every step runs; the first failure's status is kept
            print(f"[run.py] {what}", flush=True)
            code = subprocess.call(pytest + extra, cwd=ROOT)
            status = status or code
        return status
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
