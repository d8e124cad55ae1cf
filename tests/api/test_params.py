"""The one parameter table (``dask_factor._params``): shared by ``nmf``, ``svd``, ``factor_config``
and the ``NMF`` estimator, checked before any work, messages in the caller's names."""

from __future__ import annotations

import ast
import importlib
import numbers
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import dask_factor
from dask_factor import factor_config, nmf, svd
from dask_factor._params import PARAMETERS, Interval, check_value
from dask_factor.estimator import NMF

nmf_fit = importlib.import_module("dask_factor.nmf_fit")


@pytest.fixture
def no_work(monkeypatch):
    def boom(*a, **kw):
        raise AssertionError("work started before the arguments were checked")

    for name in ("fit_als", "fit_masked", "prepare_input", "open_lazy"):
        monkeypatch.setattr(nmf_fit, name, boom)


@pytest.fixture(scope="module")
def X():
    return sp.random(40, 30, density=0.3, format="csr", random_state=0)  # samples × features


@pytest.mark.parametrize("kwargs,exc,message", [
    # scikit-learn's parameter constraints (InvalidParameterError) first ...
    (dict(n_components=0), ValueError, "The 'n_components' parameter of NMF must be"),
    (dict(n_components=[2, 3]), TypeError, "The 'n_components' parameter of NMF must be"),
    (dict(max_iter=1.5), TypeError, "The 'max_iter' parameter of NMF must be"),
    (dict(random_state=-3), ValueError, "The 'random_state' parameter of NMF must be"),
    (dict(solver="lbfgs"), ValueError, "The 'solver' parameter of NMF must be"),
    (dict(dtype="int8"), ValueError, "The 'dtype' parameter of NMF must be"),
    # ... then nmf()'s table, in the estimator's names
    (dict(L1=(0.1, 1.0)), ValueError, r"L1: expected a number in \[0.0, 1.0\), got 1.0"),
])
def test_estimator_checks_its_parameters_before_any_work(X, no_work, kwargs, exc, message):
    with pytest.raises(exc, match="^" + message):
        NMF(**kwargs).fit(X)


def test_estimator_refuses_unknown_parameters():
    with pytest.raises(TypeError, match="bogus"):
        NMF(bogus=1)
    with pytest.raises(ValueError, match="bogus"):
        NMF().set_params(bogus=1)


def test_estimator_fits_with_the_checked_values(X):
    est = NMF(n_components=3, random_state=0, max_iter=5, L1=(0.1, 0.0))
    Z = est.fit_transform(X)
    assert Z.shape == (40, 3) and est.model_.settings["L1"] == (0.1, 0.0)


def test_one_table_for_every_entry_point(no_work):
    """The same argument gets the same check (and message) in nmf, factor_config and svd."""
    A = np.ones((10, 8))
    for call in (lambda: nmf(A, 2, cd_tol=float("nan")),
                 lambda: factor_config(cd_tol=float("nan"))):
        with pytest.raises(ValueError, match=r"^cd_tol: expected a finite number >= 0.0, got nan"):
            call()
    for call in (lambda: nmf(A, 2, maxit=0), lambda: factor_config(maxit=0),
                 lambda: svd(A, 2, maxit=0)):
        with pytest.raises(ValueError, match=r"^maxit: expected an integer >= 1, got 0"):
            call()
    for call in (lambda: nmf(A, 2, seed=-1), lambda: factor_config(seed=-1)):
        with pytest.raises(ValueError, match=r"^seed: expected a non-negative integer with "):
            call()
    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[0, 2\*\*63\), got -1"):
        svd(A, 2, seed=-1)  # numpy's generator: no R-style seeds in the SVD


def test_every_real_number_must_be_finite():
    reals = [c for constraints in PARAMETERS.values() for c in constraints
             if isinstance(c, Interval) and c.type is numbers.Real]
    assert len(reals) > 10
    for c in reals:
        for bad in (float("nan"), float("inf"), -float("inf")):
            with pytest.raises(ValueError, match="got (nan|inf|-inf)$"):
                check_value("x", bad, [c])


def test_rank_search_refuses_single_fit_arguments(no_work):
    A = np.ones((10, 8))
    with pytest.raises(ValueError, match=r"^w_init: only for a single fit"):
        nmf(A, [2, 3], w_init=np.ones((10, 2)))
    with pytest.raises(ValueError, match=r"^checkpoint: only for a single fit"):
        nmf(A, "auto", checkpoint="x.zarr")
    with pytest.raises(ValueError, match=r"^cv_k_range: expected \(min, max\) with min <= max"):
        nmf(A, "auto", cv_k_range=(5, 2))


def test_no_import_cycle_between_nmf_and_rank():
    """nmf → rank → nmf_fit: neither imports a module above it, not even inside a function."""
    root = Path(dask_factor.__file__).parent
    for module, above in (("rank.py", {"nmf"}), ("nmf_fit.py", {"nmf", "rank"})):
        tree = ast.parse((root / module).read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.level == 1}
        imported |= {alias.name for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module
                     for alias in node.names}
        assert not imported & above, (module, imported & above)


def test_seed_beyond_64_bits_is_refused_by_name():
    """A seed is hashed and offset in 64-bit arithmetic: 2**64 is refused up front, naming it."""
    A = sp.random(20, 10, density=0.5, format="csc", random_state=0)
    with pytest.raises(ValueError, match=r"^seed: expected an integer in \[-2\*\*63, 2\*\*63\)"):
        nmf(A, 2, seed=2**64)
    assert nmf(A, 2, seed=2**63 - 1, maxit=2).settings["seed"] == 2**63 - 1
