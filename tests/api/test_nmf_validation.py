"""Bad input to ``nmf()`` fails before any work, with a message that names the argument and says
what was expected.

"Before any work" is checked by replacing the engine: ``fit_als`` (the factorization) must never be
called for a bad argument or bad data, and ``prepare_input`` (which reads the data) must not be
called for an error that the arguments alone reveal. Both are replaced where the single fit looks
them up (``dask_factor.nmf_fit``, which ``nmf()`` dispatches an integer ``k`` to).
"""

from __future__ import annotations

import importlib

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp

from dask_factor import nmf

nmf_module = importlib.import_module("dask_factor.nmf_fit")


def _forbidden(what):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} was called: the error was not caught up front")

    return fail


@pytest.fixture
def no_fit(monkeypatch):
    """The factorization must not start."""
    monkeypatch.setattr(nmf_module, "fit_als", _forbidden("fit_als"))


@pytest.fixture
def no_data(monkeypatch, no_fit):
    """Not even the input may be touched (argument errors)."""
    monkeypatch.setattr(nmf_module, "prepare_input", _forbidden("prepare_input"))


@pytest.fixture(scope="module")
def A():
    rng = np.random.default_rng(0)
    return sp.random(30, 40, density=0.3, format="csc", random_state=rng)


def expect(exc, name, *fragments):
    """An error of type ``exc`` whose message starts with ``name:`` and contains the fragments."""
    pattern = "^" + name + ":" + "".join(f"(?=.*{f})" for f in fragments)
    return pytest.raises(exc, match=pattern)


# ------------------------------------------------------------------------------------------
# argument errors: detected from the arguments alone

ARGUMENT_ERRORS = [
    ("k0", dict(k=0), ValueError, "k", [">= 1"]),
    ("k-negative", dict(k=-2), ValueError, "k", [">= 1"]),
    ("k-float", dict(k=2.5), TypeError, "k", ["integer"]),
    ("k-str", dict(k="3"), TypeError, "k", ["integer"]),
    ("k-too-big", dict(k=31), ValueError, "k", [r"min\(m, n\) = 30", "31"]),
    ("L1-one", dict(L1=1.0), ValueError, "L1", [r"\[0", "1"]),
    ("L1-negative", dict(L1=-0.1), ValueError, "L1", [r"\[0"]),
    ("L1-pair", dict(L1=(0.0, 1.5)), ValueError, "L1", ["1.5"]),
    ("L1-nan", dict(L1=float("nan")), ValueError, "L1", ["nan"]),
    ("L1-triple", dict(L1=(0.1, 0.1, 0.1)), ValueError, "L1", ["pair"]),
    ("L2-negative", dict(L2=-1.0), ValueError, "L2", [">= 0"]),
    ("L2-pair", dict(L2=(0.0, -0.5)), ValueError, "L2", [">= 0", "-0.5"]),
    ("upper_bound", dict(upper_bound=-1.0), ValueError, "upper_bound", [">= 0"]),
    ("solver", dict(solver="lbfgs"), ValueError, "solver", ["cholesky", "lbfgs"]),
    ("norm", dict(norm="L3"), ValueError, "norm", ["L1", "L3"]),
    ("rng", dict(rng="mt"), ValueError, "rng", ["rcppml", "mt"]),
    ("cache", dict(cache="disk"), ValueError, "cache", ["memory"]),
    ("dtype-int", dict(dtype="int32"), TypeError, "dtype", ["float32", "int32"]),
    ("dtype-half", dict(dtype="float16"), TypeError, "dtype", ["float64"]),
    ("dtype-bogus", dict(dtype="bogus"), TypeError, "dtype", ["float32"]),
    ("maxit", dict(maxit=0), ValueError, "maxit", [">= 1"]),
    ("tol", dict(tol=-1e-3), ValueError, "tol", [">= 0"]),
    ("seed", dict(seed="42"), TypeError, "seed", ["integer"]),
    ("nonneg", dict(nonneg="yes"), TypeError, "nonneg", ["pair"]),
    ("target_lambda-alone", dict(target_lambda=0.5), ValueError, "target_lambda", ["target_H"]),
    ("target_H-rows", dict(target_H=np.zeros((2, 40)), target_lambda=0.5), ValueError,
     "target_H", [r"k=3"]),
    ("w_init-1d", dict(w_init=np.zeros(30)), ValueError, "w_init", ["2-D"]),
    ("chunks", dict(chunks=0), ValueError, "chunks", [">= 1"]),
]


@pytest.mark.parametrize("args,exc,name,fragments",
                         [c[1:] for c in ARGUMENT_ERRORS], ids=[c[0] for c in ARGUMENT_ERRORS])
def test_argument_errors_come_before_any_work(A, no_data, args, exc, name, fragments):
    kwargs = dict(args)
    k = kwargs.pop("k", 3)
    with expect(exc, name, *fragments):
        nmf(A, k, **kwargs)


def test_unknown_keyword_is_a_type_error_naming_it(A, no_data):
    with pytest.raises(TypeError, match="bogus_option"):
        nmf(A, 3, bogus_option=1)
    with pytest.raises(TypeError, match="L21"):  # an RcppML option we do not have
        nmf(A, 3, L21=0.1)


def test_k_is_checked_against_a_lazy_input_without_reading_it(no_data):
    D = da.zeros((30, 40), chunks=(30, 10))
    with expect(ValueError, "k", r"min\(m, n\) = 30"):
        nmf(D, 31)


# ------------------------------------------------------------------------------------------
# data errors: found by validation, never by the factorization


def _with_value(A, value, kind):
    X = A.toarray()
    X[3, 4] = value
    if kind == "sparse":
        return sp.csc_matrix(X)
    if kind == "dask":
        return da.from_array(X, chunks=(30, 10))
    if kind == "dask-sparse":
        return da.from_array(sp.csr_matrix(X), chunks=(10, 10), asarray=False)
    return X


@pytest.mark.parametrize("kind", ["dense", "sparse", "dask", "dask-sparse"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_values(A, no_fit, value, kind):
    with expect(ValueError, "A", "1 NaN or infinite", "expected finite"):
        nmf(_with_value(A, value, kind), 3)


@pytest.mark.parametrize("X", [np.ones(5), np.ones((3, 4, 5)), da.ones((3, 4, 5))],
                         ids=["1-D", "3-D", "dask-3-D"])
def test_non_2d_input(no_fit, X):
    with expect(ValueError, "A", "2-D"):
        nmf(X, 1)


@pytest.mark.parametrize("X", [np.zeros((0, 5)), np.zeros((5, 0)), sp.csc_matrix((0, 4)),
                               da.zeros((4, 0), chunks=(4, 1))],
                         ids=["no-rows", "no-columns", "sparse", "dask"])
def test_empty_matrix(no_fit, X):
    with expect(ValueError, "A", "non-empty"):
        nmf(X, 1)


@pytest.mark.parametrize("X", [
    np.ones((4, 5), dtype=complex),
    sp.csc_matrix(np.ones((4, 5), dtype=np.complex64)),
    np.array([[1, None], [2, 3]], dtype=object),
    np.array([["a", "b"], ["c", "d"]]),
    da.from_array(np.ones((4, 5), dtype=complex), chunks=2),
], ids=["complex", "sparse-complex", "object", "strings", "dask-complex"])
def test_wrong_dtype(no_fit, X):
    with expect(TypeError, "A", "real numeric", "dtype"):
        nmf(X, 1)


def test_unsupported_container(no_fit):
    with expect(TypeError, "A", "expected"):
        nmf({"not": "a matrix"}, 1)


@pytest.mark.parametrize("shape", [(30, 4), (4, 30), (29, 3), (3, 29), (40, 3)])
def test_w_init_of_the_wrong_shape(A, no_fit, shape):
    with expect(ValueError, "w_init", r"\(30, 3\)"):
        nmf(A, 3, w_init=np.ones(shape))


def test_w_init_non_finite(A, no_fit):
    W0 = np.ones((30, 3))
    W0[0, 0] = np.nan
    with expect(ValueError, "w_init", "finite"):
        nmf(A, 3, w_init=W0)


def test_target_h_of_the_wrong_width(A, no_fit):
    with expect(ValueError, "target_H", "n=40"):
        nmf(A, 3, target_H=np.zeros((3, 41)), target_lambda=0.1)


def test_w_init_shape_is_checked_before_reading_a_lazy_input(no_data):
    D = da.zeros((30, 40), chunks=(30, 10))
    with expect(ValueError, "w_init"):
        nmf(D, 3, w_init=np.ones((29, 3)))


def test_target_h_width_is_checked_before_reading_a_lazy_input(no_data):
    D = da.zeros((30, 40), chunks=(30, 10))
    with expect(ValueError, "target_H"):
        nmf(D, 3, target_H=np.zeros((3, 41)), target_lambda=0.1)


@pytest.mark.parametrize("name", ["tol", "target_lambda"])
def test_non_numeric_scalars_name_the_argument(A, no_data, name):
    with expect(TypeError, name):
        nmf(A, 3, **{name: "1e-4"})


def _accepted_or_named_before_work(monkeypatch, name, call):
    """Either ``call()`` succeeds, or it fails with ``name: ...`` before reading the data."""
    reads = []
    real = nmf_module.prepare_input

    def counting(*args, **kwargs):
        reads.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(nmf_module, "prepare_input", counting)
    try:
        model = call()
    except (TypeError, ValueError) as exc:
        assert str(exc).startswith(f"{name}:"), f"error does not name {name}: {exc}"
        assert not reads, f"{name} was rejected only after the data were read"
    else:
        assert np.all(np.isfinite(model.W))


def test_negative_seed_with_numpy_rng(A, monkeypatch):
    _accepted_or_named_before_work(monkeypatch, "seed",
                                   lambda: nmf(A, 3, seed=-1, rng="numpy", maxit=2))


def test_negative_seed_with_rcppml_rng_is_r_compatible(A):
    """R accepts negative seeds (set.seed(-1)); so does rng="rcppml"."""
    model = nmf(A, 3, seed=-1, rng="rcppml", maxit=2)
    assert np.all(np.isfinite(model.W))


def test_dask_input_with_unknown_chunk_sizes(A, monkeypatch):
    D = da.from_array(A.toarray(), chunks=(30, 10))
    D = D[D[:, 0] >= 0]  # boolean row selection: row count unknown until computed
    assert np.isnan(D.shape[0])
    _accepted_or_named_before_work(monkeypatch, "A", lambda: nmf(D, 3, maxit=2))


# ------------------------------------------------------------------------------------------
# valid after all


def test_integer_and_boolean_matrices_are_accepted():
    X = (np.arange(60).reshape(6, 10) % 7).astype(np.int64)
    assert np.isfinite(nmf(X, 2, seed=1, maxit=3).mse)
    assert np.isfinite(nmf(X > 2, 2, seed=1, maxit=3).mse)


def test_k_equal_to_min_dimension_is_allowed(A):
    model = nmf(A[:, :5], 5, seed=1, maxit=3)
    assert model.W.shape == (30, 5)
