"""The notebook runs are a separate CI step: left out unless the ``-m`` expression names them.

``pytest`` and ``pytest -m "not slow"`` skip them (deselected, as ``-m`` would);
``pytest -m notebooks tests/notebooks`` runs them (``.ci/run`` does, after the suite).
"""

from __future__ import annotations


def pytest_collection_modifyitems(config, items):
    if "notebooks" in (config.getoption("markexpr") or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("notebooks") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
