"""Every public name appears in the API reference (docs/api/).

A module is public (its page is ``docs/api/<module>.rst``) or an implementation layer
(``INTERNAL``, described in docs/design.md); a new module must be one or the other. A public
module's names are its ``__all__`` (or, without one, the names it defines without a leading
underscore); each must be documented on its page, or on the top-level page when
``dask_factor`` exports the same object.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import dask_factor

ROOT = Path(__file__).resolve().parents[2]
API = ROOT / "docs" / "api"

# module -> the title of its reference page
PUBLIC = {
    "dask_factor": "the package",
    "dask_factor.nmf": "NMF",
    "dask_factor.svd": "truncated SVD and PCA",
    "dask_factor.graph": "factorization graphs",
    "dask_factor.graph.cv": "cross-validating a graph",
    "dask_factor.rank": "rank search",
    "dask_factor.distribution": "choosing a loss",
    "dask_factor.sample_init": "a sampled start",
    "dask_factor.consensus": "consensus NMF",
    "dask_factor.programs": "consensus programs and k selection",
    "dask_factor.divisive": "divisive clustering",
    "dask_factor.estimator": "scikit-learn estimators",
    "dask_factor.tl": "scanpy-style tools",
    "dask_factor.plot": "plots",
    "dask_factor.datasets": "bundled datasets and the simulator",
    "dask_factor.io": "reading and writing matrices",
    "dask_factor.io.errors": "I/O errors",
    "dask_factor.io.limits": "I/O size limits",
    "dask_factor.io.spz": "StreamPress (.spz) files",
    "dask_factor.cluster": "clusters",
    "dask_factor.spec": "fit specs (YAML)",
}

# packages and modules that implement the above; their names are not part of the reference
INTERNAL = {
    "dask_factor.engine": "Dask graphs of the fits (docs/design.md)",
    "dask_factor.kernels": "numba kernels (docs/design.md)",
    "dask_factor.io.spz.": "the .spz codec's parts (public: dask_factor.io.spz)",
    "dask_factor.io.": "readers' internals (public: dask_factor.io)",
    "dask_factor.graph.": "graph internals (public: dask_factor.graph)",
    "dask_factor.datasets.simulate": "behind datasets.simulate_counts",
    "dask_factor.nmf_fit": "the single fit behind nmf()",
    "dask_factor.checks": "argument checks shared by the public functions",
    "dask_factor.cli": "the dask-factor command (docs/spec.md, README)",
    "dask_factor.demo": "python3 run.py demo",
    "dask_factor.progress": "the progress bars of the fits (verbose=, progress=)",
}


def public_names(mod) -> list[str]:
    """``__all__``, or the names ``mod`` defines that do not start with an underscore."""
    names = getattr(mod, "__all__", None)
    if names is None:
        names = [n for n, obj in vars(mod).items() if not n.startswith("_")
                 and getattr(obj, "__module__", None) == mod.__name__
                 and (inspect.isfunction(obj) or inspect.isclass(obj))]
    return [n for n in names if n != "__version__"]


def documented() -> set[str]:
    """Full names of the objects documented under docs/api/."""
    found = set()
    for page in API.glob("*.rst"):
        text = page.read_text(encoding="utf-8")
        module = re.search(r"^\.\. currentmodule:: (\S+)", text, re.M).group(1)
        for name in re.findall(r"^\.\. auto(?:function|class|exception|data):: (\S+)", text, re.M):
            found.add(f"{module}.{name}")
    return found


def _all_modules():
    root = Path(dask_factor.__file__).parent
    for info in pkgutil.walk_packages([str(root)], "dask_factor."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            yield info.name


def test_every_module_is_classified():
    loose = [m for m in _all_modules() if m not in PUBLIC
             and not any(m == p.rstrip(".") or m.startswith(p if p.endswith(".") else p + ".")
                         for p in INTERNAL)]
    assert not loose, f"add these modules to PUBLIC (with a docs/api page) or INTERNAL: {loose}"


def test_every_public_module_has_a_page():
    pages = {p.stem for p in API.glob("*.rst")}
    assert set(PUBLIC) == pages
    index = (API / "index.md").read_text(encoding="utf-8")
    assert all(f"\n{m}\n" in index for m in PUBLIC)


@pytest.mark.parametrize("modname", list(PUBLIC))
def test_every_public_name_is_documented(modname):
    mod = importlib.import_module(modname)
    docs = documented()
    missing = []
    for name in public_names(mod):
        obj = getattr(mod, name)
        if inspect.ismodule(obj):  # dask_factor.datasets, .plot, .tl: pages of their own
            assert obj.__name__ in PUBLIC, obj.__name__
            continue
        here = f"{modname}.{name}" in docs
        top = getattr(dask_factor, name, None) is obj and f"dask_factor.{name}" in docs
        if not (here or top):
            missing.append(name)
    assert not missing, f"{modname}: not in docs/api/{modname}.rst: {missing}"


def test_documented_names_exist():
    """The reference names nothing that the package does not have."""
    stale = []
    for full in documented():
        modname, name = full.rsplit(".", 1)
        if not hasattr(importlib.import_module(modname), name):
            stale.append(full)
    assert not stale
