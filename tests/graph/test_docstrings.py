"""The examples in the graph modules' docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["dask_factor.graph", "dask_factor.graph.config", "dask_factor.graph.nodes",
           "dask_factor.graph.merge", "dask_factor.graph.compile", "dask_factor.graph.fit",
           "dask_factor.graph.result", "dask_factor.graph.target", "dask_factor.graph.cv"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
