"""nmf(loss=...): argument checks before any work, evaluate(A, loss=...), and the point of a
count-data loss: NB recovers the simulator's planted programs better than least squares."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import nbinom

from dask_factor import factor_config, nmf
from dask_factor.datasets import simulate_counts


@pytest.fixture(scope="module")
def counts():
    return simulate_counts(300, 60, k=3, density=0.2, seed=4).compute()


@pytest.mark.parametrize("kwargs,err,match", [
    ({"loss": "poisson"}, ValueError, "loss: expected one of"),
    ({"loss": "nb", "solver": "cholesky"}, ValueError, "solver: loss='nb' is fitted by IRLS"),
    ({"loss": "nb", "dispersion": "per_col"}, ValueError, "dispersion: expected one of"),
    ({"loss": "tweedie", "tweedie_power": 0.5}, ValueError, "tweedie_power: expected"),
    ({"loss": "nb", "nb_size_init": 0.001}, ValueError, "nb_size_init: expected nb_size_min"),
    ({"loss": "gp", "theta_max": 0.05}, ValueError, "theta_init: expected theta_min"),
    ({"loss": "nb", "irls_max_iter": 0}, ValueError, "irls_max_iter: expected an integer"),
    ({"loss": "nb", "irls_tol": -1.0}, ValueError, "irls_tol: expected"),
    ({"loss": "nb", "irls_gain_tol": 1.0}, ValueError, "irls_gain_tol: expected"),
    ({"robust": "median"}, ValueError, "robust: expected one of"),
    ({"loss": "kl", "zi": "row"}, ValueError, "zi: zi='row' requires loss='nb' or loss='gp'"),
    ({"loss": "nb", "zi": "col", "robust": True}, ValueError, "zi: zero inflation is not"),
    ({"loss": "nb", "zi": "both"}, ValueError, "zi: expected one of"),
    ({"robust": -1.0}, ValueError, "robust: expected"),
    ({"robust": True, "solver": "cholesky"}, ValueError, "solver: robust=True is fitted by IRLS"),
])
def test_bad_arguments_fail_before_work(counts, kwargs, err, match):
    with pytest.raises(err, match=match):
        nmf(counts, 3, seed=1, **kwargs)


def test_rank_search_compares_ranks_by_the_held_out_loss(counts):
    """nmf(A, [k, …], loss=...) cross-validates each rank under the loss: the table has the
    held-out loss of every fit (and its MSE), and best_k minimises the held-out loss."""
    res = nmf(counts, [2, 3], loss="kl", seed=1, maxit=4)
    t = res.table
    assert {"test_objective", "train_objective", "test_mse"} <= set(t.columns)
    for _, row in t.iterrows():
        mod = res.models[(row["k"], row["rep"])]
        assert row["test_objective"] == mod.test_objective and np.isfinite(mod.test_objective)
        assert row["test_mse"] == mod.test_loss
    assert res.best_k == int(t.loc[t["test_objective"].idxmin(), "k"])


def test_targets_and_negative_data_are_refused(counts):
    with pytest.raises(ValueError, match="target_H: not supported with loss='kl'"):
        nmf(counts, 3, loss="kl", target_H=np.ones((3, 300)), target_lambda=0.1)
    neg = counts.copy()
    neg.data[0] = -1.0
    with pytest.raises(ValueError, match="A: loss='kl' needs non-negative data"):
        nmf(neg, 3, loss="kl", seed=1)


def test_deep_graphs_refuse_count_data_losses(counts):
    from dask_factor.graph import factor_input, factor_net, nmf_layer

    inp = factor_input(counts, name="x")
    deep = nmf_layer(nmf_layer(inp, 3, name="fine"), 2, name="coarse")
    with pytest.raises(NotImplementedError, match=r"nmf\(A, k, loss='nb'\)"):
        factor_net(inp, deep, factor_config(loss="nb"))


def test_result_fields_and_evaluate(counts):
    model = nmf(counts, 3, seed=2, maxit=6, tol=0, loss="nb")
    assert model.loss == "nb" and model.settings["loss"] == "nb"
    assert len(model.objective_history) == model.iterations == 6
    assert model.dispersion.shape == (60,) and np.all(model.dispersion >= 0.01)
    # the objective is the NB negative log-likelihood of the returned model over every entry
    mu = (model.W * model.d) @ model.H
    Y = counts.toarray()
    r = model.dispersion[:, None]
    ref = -nbinom.logpmf(Y, r, r / (r + np.maximum(mu, 1e-10))).sum()
    assert model.objective == pytest.approx(ref, rel=1e-6)
    assert model.evaluate(counts, loss="nb") == pytest.approx(ref, rel=1e-6)
    # histories in MSE as for every fit; mse is the model's
    assert model.mse == pytest.approx(((Y - mu) ** 2).mean(), rel=1e-5)
    assert model.loss_history[-1] == pytest.approx(model.mse, rel=1e-9)
    # the same model under another loss; NB needs a size when the model has none of its own
    kl = nmf(counts, 3, seed=2, maxit=6, tol=0, loss="kl")
    with pytest.raises(ValueError, match="dispersion: loss='nb' needs the size r"):
        kl.evaluate(counts, loss="nb")
    mu_kl = (kl.W * kl.d) @ kl.H
    ref_nb = -nbinom.logpmf(Y, 3.0, 3.0 / (3.0 + np.maximum(mu_kl, 1e-10))).sum()
    assert kl.evaluate(counts, loss="nb", dispersion=3.0) == pytest.approx(ref_nb, rel=1e-6)
    assert kl.evaluate(sp.csr_matrix(counts)) == pytest.approx(kl.mse, rel=1e-5)


def _huber(ell, dev, s, delta):
    """The robust entry of docs/losses.md from a loss and its squared deviance residual."""
    rt = np.sqrt(np.maximum(dev, 0.0))
    return np.where(rt <= delta, ell, ell - s * (rt - delta) ** 2)


def test_evaluate_scores_robust_and_zero_inflated_objectives(counts):
    """evaluate(robust=, zi=) gives the objective a robust or zero-inflated fit reports, and
    equals a dense scipy computation of it (Huber on the residual; the NB mixture)."""
    Y = counts.toarray()
    # robust least squares: Huber's loss at δ = 1.345, summed over every entry
    rob = nmf(counts, 3, seed=2, maxit=4, tol=0, robust=True)
    mu = (rob.W * rob.d) @ rob.H
    r = np.abs(Y - mu)
    ref = np.where(r <= 1.345, r ** 2, 2 * 1.345 * r - 1.345 ** 2).sum()
    assert rob.evaluate(counts, robust=True) == pytest.approx(ref, rel=1e-7)
    assert rob.objective == pytest.approx(ref, rel=1e-6)
    assert rob.evaluate(counts) == pytest.approx(((Y - mu) ** 2).mean(), rel=1e-6)  # plain MSE
    # robust KL at δ = 0.5: half the Poisson deviance, Huberized on its square root
    kl = nmf(counts, 3, seed=2, maxit=4, tol=0, loss="kl", robust=0.5)
    mu = np.maximum((kl.W * kl.d) @ kl.H, 1e-10)
    with np.errstate(divide="ignore", invalid="ignore"):
        ell = np.where(Y > 0, Y * np.log(Y / mu), 0.0) - Y + mu
    ref = _huber(ell, 2 * ell, 0.5, 0.5).sum()
    assert kl.evaluate(counts, loss="kl", robust=0.5) == pytest.approx(ref, rel=1e-7)
    assert kl.objective == pytest.approx(ref, rel=1e-6)
    # zero-inflated NB, π per row and per column
    for zi, axis in (("row", 1), ("col", 0)):
        fit = nmf(counts, 3, seed=2, maxit=4, tol=0, loss="nb", zi=zi)
        mu = np.maximum((fit.W * fit.d) @ fit.H, 1e-10)
        size = fit.dispersion[:, None]
        pi = np.expand_dims(fit.pi, axis)
        logp = nbinom.logpmf(Y, size, size / (size + mu))
        ref = np.where(Y > 0, -np.log1p(-pi) - logp,
                       -np.log(pi + (1 - pi) * np.exp(logp))).sum()
        assert fit.evaluate(counts, loss="nb", zi=zi) == pytest.approx(ref, rel=1e-7)
        assert fit.objective == pytest.approx(ref, rel=1e-6)
        # other probabilities: a given pi is used, π = 0 is the plain NB likelihood
        zero = np.zeros(fit.pi.size)
        plain = fit.evaluate(counts, loss="nb")
        assert fit.evaluate(counts, loss="nb", zi=zi, pi=zero) == pytest.approx(plain, rel=1e-9)
    with pytest.raises(ValueError, match="pi: zi='row' needs the probability"):
        rob.evaluate(counts, loss="nb", dispersion=2.0, zi="row")
    with pytest.raises(ValueError, match=r"pi: expected 60 probabilities \(one per row\)"):
        fit.evaluate(counts, loss="nb", zi="row", pi=np.zeros(300))
    with pytest.raises(ValueError, match=r"pi: expected probabilities in \[0, 1\)"):
        fit.evaluate(counts, loss="nb", zi="row", pi=np.full(60, 1.0))
    with pytest.raises(ValueError, match="pi: extra-zero probabilities are scored with"):
        fit.evaluate(counts, loss="nb", pi=fit.pi)
    with pytest.raises(ValueError, match="zi: zi='row' requires loss='nb' or loss='gp'"):
        fit.evaluate(counts, loss="kl", zi="row", pi=np.zeros(60))
    with pytest.raises(ValueError, match="robust: expected"):
        fit.evaluate(counts, loss="kl", robust=-1.0)


def _mean_best_r(fit, true):
    k = true.shape[1]
    C = np.corrcoef(np.hstack([true, fit]).T)[:k, k:]
    return float(np.abs(C).max(axis=1).mean())


def test_nb_recovers_planted_programs_better_than_mse():
    A, W, H = simulate_counts(600, 200, k=4, density=0.1, seed=1, return_factors=True)
    A = A.compute()
    Ht = H.compute().T
    scores = {}
    for loss in ("mse", "nb"):
        model = nmf(A, 4, seed=1, loss=loss, maxit=30)
        scores[loss] = (_mean_best_r(model.W, W), _mean_best_r(model.H.T, Ht))
    print(f"\nmean best |r| to the planted programs (W, H): {scores}")
    # measured: W 0.9697 (mse) → 0.9967 (nb), H 0.7928 → 0.9548
    assert scores["nb"][0] > scores["mse"][0] + 0.01
    assert scores["nb"][1] > scores["mse"][1] + 0.1


def test_readme_example_runs():
    from readme_blocks import readme_block

    scope: dict = {}
    exec(readme_block("Count-data losses"), scope)
    model, A = scope["model"], scope["A"]
    assert model.loss == "nb" and model.dispersion.shape == (A.shape[0],)
    assert model.evaluate(A, loss="nb") == pytest.approx(model.objective, rel=1e-6)


def test_docs_losses_example_runs():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "losses.md").read_text("utf-8")
    scope: dict = {}
    exec(re.search(r"```python\n(.*?)```", text, re.S).group(1), scope)
    assert scope["model"].objective == pytest.approx(
        scope["model"].evaluate(scope["A"], loss="nb"), rel=1e-6)


def test_cli_fit_with_a_loss_saves_the_same_model(tmp_path, capsys):
    import json

    from dask_factor import datasets
    from dask_factor.cli import main
    from dask_factor.io import write_matrix
    from dask_factor.nmf_fit import NMFResult

    A = datasets.load("hawaiibirds").matrix
    src = tmp_path / "birds.zarr"
    write_matrix(A, str(src))
    out = tmp_path / "model.zarr"
    assert main(["fit", str(src), str(out), "--k", "3", "--seed", "2", "--maxit", "5",
                 "--loss", "nb", "--dispersion", "global", "--json", "-q"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = nmf(src.as_posix(), 3, seed=2, maxit=5, loss="nb", dispersion="global")
    assert summary["loss"] == "nb" and summary["objective"] == ref.objective
    back = NMFResult.load(out)
    np.testing.assert_array_equal(back.W, ref.W)
    assert back.loss == "nb" and back.objective == ref.objective
    assert back.objective_history == ref.objective_history
    np.testing.assert_array_equal(back.dispersion, ref.dispersion)
    assert np.unique(back.dispersion).size == 1  # global: one size for every row
    # a spec sets the loss in its config, where graphs refuse count-data losses
    assert main(["fit", str(tmp_path / "x.yaml"), "--tweedie-power", "1.2"]) != 0
    assert "--tweedie-power: applies to SRC OUT fits only" in capsys.readouterr().err


@pytest.mark.parametrize("family,expected", [("gauss", "mse"), ("poisson", "kl"),
                                             ("nb", "nb"), ("gamma", "gamma"),
                                             ("ig", "inverse_gaussian")])
def test_auto_distribution_names_the_generating_family(family, expected):
    """Data drawn around known means: the score test with the true model names the family."""
    from dask_factor import auto_distribution

    rng = np.random.default_rng(2)
    W, H = rng.gamma(2.0, 1.0, (50, 3)), rng.gamma(2.0, 1.0, (3, 400))
    mu = W @ H
    if family == "gauss":
        A = np.maximum(mu + rng.standard_normal(mu.shape), 0.0)
    elif family == "poisson":
        A = rng.poisson(mu).astype(float)
    elif family == "nb":
        A = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    elif family == "gamma":
        A = rng.gamma(1.0, mu)  # shape 1: Var = μ²
    else:
        A = rng.wald(mu, 1.0)  # Var = μ³
    choice = auto_distribution(sp.csc_matrix(A), (W, np.ones(3), H))
    # the statistics, recomputed densely with numpy
    r2 = (A - np.maximum(mu, 1e-6)) ** 2
    T = [np.mean(r2 / np.maximum(mu, 1e-6) ** p - 1) for p in range(4)]
    np.testing.assert_allclose(choice.table["T"], T, rtol=1e-9)
    assert choice.loss == expected


def test_auto_distribution_fits_a_model_when_none_is_given(counts):
    from dask_factor import auto_distribution

    choice = auto_distribution(counts, k=3, seed=1, maxit=20)
    assert choice.model.k == 3
    assert choice.loss == "nb"  # the simulator's counts are overdispersed
    assert choice.T_nb > 0.1


def test_a_cross_validated_result_keeps_its_held_out_loss(counts, tmp_path):
    from dask_factor import NMFResult

    model = nmf(counts, 3, seed=1, maxit=3, tol=0, loss="gamma", test_fraction=0.2)
    assert model.settings["test_fraction"] == 0.2 and model.settings["n_test"] > 0
    assert 0 < model.test_objective and len(model.test_objective_history) == 3
    back = NMFResult.load(model.save(tmp_path / "cv.zarr"))
    assert back.test_objective == model.test_objective
    assert back.train_objective == model.train_objective
    assert back.test_objective_history == model.test_objective_history
    assert back.test_loss == model.test_loss and back.loss == "gamma"


def test_nan_entries_are_missing_like_a_mask(counts):
    """mask="NA": NaN entries are missing, exactly as the same entries in a mask matrix (whose
    values are then ignored)."""
    A = counts.toarray().astype(np.float64)
    M = np.zeros(A.shape, bool)
    M[::7, ::5] = True
    B, C = A.copy(), A.copy()
    B[M], C[M] = np.nan, 99.0
    a = nmf(B, 3, seed=1, loss="nb", mask="NA", maxit=3, tol=0)
    b = nmf(C, 3, seed=1, loss="nb", mask=M, maxit=3, tol=0)
    assert a.objective_history == b.objective_history
    assert np.array_equal(a.W, b.W) and np.array_equal(a.dispersion, b.dispersion)
    assert np.isfinite(a.objective)


def test_huber_fit_resists_planted_outliers():
    """robust=True (Huber δ = 1.345) on a low-rank matrix with 2 % large outliers: the fit is
    far closer to the clean matrix than least squares (mean absolute error on the clean
    entries; measured 0.04 against 0.86), its robust objective never rises, and "mae" also
    beats least squares."""
    rng = np.random.default_rng(0)
    m, n, k = 120, 90, 4
    L = rng.gamma(1.0, 1.0, (m, k)) @ rng.gamma(1.0, 1.0, (k, n))
    A = np.maximum(L + rng.normal(0, 0.1, L.shape), 0)
    out = rng.random(A.shape) < 0.02
    A[out] += rng.uniform(20, 50, out.sum())

    def clean_error(model):
        return np.abs((model.W * model.d) @ model.H - L)[~out].mean()

    kw = dict(seed=1, maxit=15, tol=0, dtype="float64")
    mse = clean_error(nmf(A, k, **kw))
    huber = nmf(A, k, robust=True, **kw)
    assert huber.settings["robust"] == 1.345
    h = np.asarray(huber.objective_history)
    assert np.all(np.diff(h) <= 1e-9 * np.abs(h[1:]))
    assert clean_error(huber) < 0.25 * mse, (clean_error(huber), mse)
    assert clean_error(nmf(A, k, robust="mae", **kw)) < 0.5 * mse
