"""Every compiled kernel states its floating-point flags.

numba compiles a function that does not state ``fastmath`` with the flags of the caller that
first needs it (``Flags.inherit_if_not_set``), and keeps that compilation, in the process and in
its on-disk cache. A helper shared by a ``fastmath`` kernel and a plain one would then round
differently depending on which ran first in that process, or on any earlier process that wrote
the cache: the same fit gave other factors after an ``evaluate()`` had run, or on a worker whose
cache another entry point had filled. Stating the flags on every kernel makes each compilation
the same whoever calls it first.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
from numba import njit
from numba.core.registry import CPUDispatcher

import dask_factor
from dask_factor.kernels import irls as K


def _dispatchers():
    for info in pkgutil.walk_packages(dask_factor.__path__, "dask_factor."):
        try:
            mod = importlib.import_module(info.name)
        except ImportError:  # a module of an optional extra that is not installed
            continue
        for name, obj in vars(mod).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.__name__:
                yield f"{mod.__name__}.{name}", obj


def test_every_kernel_states_its_fastmath_flags():
    found = dict(_dispatchers())
    assert len(found) > 100  # the walk sees the kernels
    # inline="always" functions are compiled into each caller, with the caller's flags
    missing = sorted(n for n, f in found.items()
                     if "fastmath" not in f.targetoptions
                     and f.targetoptions.get("inline") != "always")
    assert not missing, f"kernels without a stated fastmath: {missing}"


def _flags_under_a_fastmath_caller(options):
    """The fast-math flags on the multiplications of ``_dot`` compiled with ``options`` (not
    cached, so its code can be read) when a caller with every flag compiles it first."""
    helper = njit(**{k: v for k, v in options.items() if k != "cache"})(K._dot.py_func)

    @njit(fastmath=True)
    def caller(F, x):
        return helper(F, 0, x)

    F = np.ones((2, 3))
    x = np.ones(3)
    assert caller(F, x) == 3.0
    ir = helper.inspect_llvm(helper.signatures[0])
    words = {"fast", "nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}
    return {" ".join(w for w in line.split("fmul", 1)[1].split() if w in words)
            for line in ir.splitlines() if " fmul " in line}


def test_a_helper_keeps_its_flags_under_a_fastmath_caller():
    """``_dot`` with its stated options keeps its own flags under a caller with every
    fast-math flag; without ``fastmath`` it takes the caller's (numba's inheritance, which the
    first test guards every kernel against)."""
    assert _flags_under_a_fastmath_caller(K._dot.targetoptions) == {"nsz arcp contract"}
    bare = {k: v for k, v in K._dot.targetoptions.items() if k != "fastmath"}
    assert _flags_under_a_fastmath_caller(bare) == {"fast"}
