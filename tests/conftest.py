"""Shared fixtures: the bundled datasets (shipped with the package, no external data needed) and a
hypothesis profile without deadlines (numba compiles on first call)."""

from __future__ import annotations

import os
import sys

import pytest
from hypothesis import HealthCheck, settings

# tests import `helpers` as a top-level module, whatever pytest's rootdir/import mode
sys.path.insert(0, os.path.dirname(__file__))

settings.register_profile(
    "dask_factor",
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dask_factor"))


@pytest.fixture(scope="session")
def aml():
    """``datasets.load("aml")``: dense 824 × 135."""
    from dask_factor import datasets

    return datasets.load("aml")


@pytest.fixture(scope="session")
def hawaiibirds():
    """``datasets.load("hawaiibirds")``: sparse 183 × 1183."""
    from dask_factor import datasets

    return datasets.load("hawaiibirds")


@pytest.fixture(scope="session")
def pbmc3k():
    """``datasets.load("pbmc3k")``: sparse 13714 × 2638 (about 2 s to decompress)."""
    from dask_factor import datasets

    return datasets.load("pbmc3k")


@pytest.fixture(scope="session", autouse=True)
def _workers_never_pause_or_restart():
    """Test clusters must not manage memory themselves.

    The out-of-core tests give workers a small ``memory_limit`` and measure the peak RSS
    themselves; distributed would otherwise *pause* a worker above 80 % of its limit (a freshly
    compiled numba worker already sits near 300 MB), and a paused worker never runs the next task:
    the fit would hang instead of failing the memory assertion.
    """
    import dask

    with dask.config.set({
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.worker.memory.terminate": False,
    }):
        yield


#: markers whose tests are separate steps of ``python3 run.py test`` (and of CI), left out of a
#: run unless its ``-m`` expression names them: ``pytest`` and ``pytest -m "not slow"`` deselect
#: them, ``pytest -m daemons`` / ``pytest -m notebooks tests/notebooks`` run them
SEPARATE_STEPS = ("daemons", "notebooks")


def pytest_collection_modifyitems(config, items):
    named = config.getoption("markexpr") or ""
    left_out = [m for m in SEPARATE_STEPS if m not in named]
    if not left_out:
        return
    keep, drop = [], []
    for item in items:
        (drop if any(item.get_closest_marker(m) for m in left_out) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
