"""The notebooks in ``notebooks/`` run top to bottom and show the numbers they claim.

Each notebook runs in a fresh kernel (nbclient) from a temporary copy — the stored notebook is
never rewritten — at CI size (``DASK_FACTOR_NOTEBOOK_SCALE=0.1``: the atlas walk-through uses
2,048 cells); an error in any cell fails its test. The notebooks assert their key numbers in
visible cells, and their last cell prints them as JSON, which the tests read and check again:
against references computed here (the same call outside the notebook, numpy/scipy on the same
matrix) or measured elsewhere (docs/graphs.md, docs/consensus.md), and against the numbers stored
in the published notebook (so its outputs are those of the current code; rerun
``python scripts/run_notebooks.py`` when they change).

Marked ``notebooks`` (tests/notebooks/conftest.py leaves them out of the default run):
``python3 run.py test -m notebooks tests/notebooks``.
"""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NAMES = ["01_graph_equals_nmf", "02_shared_factors_hawaiibirds", "03_deep_nmf_aml",
         "04_target_regularization", "05_cross_validate_graph", "06_atlas_in_an_afternoon",
         "07_losses_and_consensus"]
CI_SCALE = "0.1"
SCALED = {"06_atlas_in_an_afternoon"}  # their published outputs are at another size


def _summary(nb) -> dict:
    """The JSON the notebook's last code cell printed."""
    cell = [c for c in nb.cells if c.cell_type == "code"][-1]
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    assert text.strip(), "the notebook's last cell printed no summary"
    return json.loads(text.strip().splitlines()[-1])


def _run(name: str, tmp_path: Path, monkeypatch) -> tuple[dict, dict]:
    """Execute a copy of the notebook; return (fresh summary, stored summary)."""
    import nbclient
    import nbformat

    work = tmp_path / f"{name}.ipynb"
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", work)
    monkeypatch.setenv("DASK_FACTOR_NOTEBOOK_SCALE", CI_SCALE)
    nb = nbformat.read(work, as_version=4)
    stored = _summary(nb)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return _summary(nb), stored


def _same(fresh, stored, path="summary"):
    """Equal up to float rounding (rtol 1e-6), timings excepted."""
    if isinstance(stored, dict):
        assert set(fresh) == set(stored), f"{path}: keys differ"
        for key in stored:
            if "seconds" not in key:
                _same(fresh[key], stored[key], f"{path}[{key!r}]")
    elif isinstance(stored, list):
        assert len(fresh) == len(stored), f"{path}: lengths differ"
        for i, (a, b) in enumerate(zip(fresh, stored)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(stored, float):
        assert math.isclose(fresh, stored, rel_tol=1e-6, abs_tol=1e-12), \
            f"{path}: {fresh} now, {stored} in the stored notebook"
    else:
        assert fresh == stored, f"{path}: {fresh!r} now, {stored!r} in the stored notebook"


# ---- the stored notebooks (no execution: part of the default run) ---------------------------


def test_stored_notebooks_have_outputs_and_are_small():
    import nbformat

    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    total = 0
    for name in NAMES:
        path = NOTEBOOKS / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert nb.cells[0].cell_type == "markdown", f"{name}: starts with an introduction"
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.execution_count is not None for c in code), f"{name}: not executed"
        counts = [c.execution_count for c in code]
        assert counts == list(range(1, len(code) + 1)), f"{name}: not run top to bottom"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], name
        assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), name
        _summary(nb)
        size = path.stat().st_size
        assert size < 400_000, f"{name}: {size} bytes"
        total += size
    assert total < 3_000_000


# ---- executed -----------------------------------------------------------------------------


def check_01(s, aml):
    from dask_factor import nmf

    assert s["max_abs_diff"] == {"W": 0.0, "d": 0.0, "H": 0.0}
    ref = nmf(aml.matrix, 6, seed=42, maxit=100)  # the same call, outside the notebook
    assert s["mse"] == ref.mse and s["iterations"] == ref.iterations
    rec = np.asarray(aml.matrix) - (ref.W * ref.d) @ ref.H
    assert s["mse_numpy"] == pytest.approx(float((rec ** 2).mean()), rel=1e-9)
    # RcppML 1.0's run of the article's example: 48 iterations, MSE 0.02139761
    assert s["rcppml_iterations"] == 48
    assert s["rcppml_mse"] == pytest.approx(0.02139761, rel=1e-5)


def check_02(s, aml):
    assert s["n_above_0.9"] >= 5 and min(s["best_r"]) < 0.9
    assert s["sse"] == pytest.approx(s["sse_numpy"], rel=1e-6)
    # docs/graphs.md, Example 2 (a separate measurement)
    np.testing.assert_allclose(s["best_r"], [0.898, 0.953, 0.985, 0.959, 0.797, 0.998, 0.994,
                                             0.436], atol=0.02)


def check_03(s, aml):
    assert s["coarse_mse"] == pytest.approx(s["coarse_mse_numpy"], rel=1e-6)
    assert s["warmup"] == 10 and s["controls_together"] >= 12
    assert sum(s["coarse_counts"].values()) == 135
    C = np.asarray(s["connect"])
    assert C.shape == (3, 10) and C.min() >= 0 and C.max() == 1
    assert s["fine_mse"] == pytest.approx(0.017874, rel=0.01)  # docs/graphs.md, Example 3


def check_04(s, aml):
    sep = {float(k): v for k, v in s["separability"].items()}
    assert sep[0.3] > 5 * sep[0.0] and sep[-0.3] < sep[0.0]
    # docs/graphs.md, Example 4
    for lam, ref in [(0.3, 14.81), (0.1, 2.561), (0.0, 0.4229), (-0.1, 0.4445), (-0.3, 0.4128),
                     (-1.0, 0.2877)]:
        assert sep[lam] == pytest.approx(ref, rel=0.02), lam
    mse = {float(k): v for k, v in s["mse"].items()}
    assert min(mse, key=mse.get) == 0.0


def check_05(s, aml):
    from dask_factor import nmf

    assert s["best_params"]["k"] in (5, 8)
    loss = s["mean_test_loss"]
    for k in (3, 5, 8, 12):
        assert loss[f"k={k},L1=0.1"] > loss[f"k={k},L1=0.0"]
    assert min(loss["k=5,L1=0.0"], loss["k=8,L1=0.0"]) < min(loss["k=3,L1=0.0"],
                                                            loss["k=12,L1=0.0"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "nmf: stopped at maxit")  # as in the notebook
        one = nmf(aml.matrix, 5, L1=0.01, seed=42, test_fraction=0.1, cv_seed=43, maxit=50)
    assert s["k5_L1_0.01_rep2"] == one.test_loss


def check_06(s, aml):
    from dask_factor.datasets import simulate_counts

    assert s["scale"] == float(CI_SCALE) and s["n_cells"] == 2048
    r = np.asarray(s["recovery_r"])
    assert len(r) == s["k"] and np.median(r) > 0.9 and r.min() > 0.7
    assert s["new_cell_agreement"] > 0.6
    # the PCA streamed from disk against numpy's SVD of the same matrix, held in memory here
    A = simulate_counts(s["n_cells"], s["n_genes"], s["k"], density=s["density"],
                        seed=s["seed"]).compute()
    assert A.nnz == s["nnz"]
    X = A.toarray().astype(np.float64)
    X -= X.mean(axis=1, keepdims=True)
    sv = np.linalg.svd(X, compute_uv=False)[:len(s["pca_singular_values"])]
    np.testing.assert_allclose(s["pca_singular_values"], sv, rtol=1e-6)


def check_07(s, aml):
    assert s["auto_loss"] == "nb"
    scores = s["scores"]
    assert min(scores, key=lambda x: scores[x]["MSE"]) == "mse"
    assert min(scores, key=lambda x: scores[x]["NB"]) == "nb"
    assert scores["nb"]["min r"] > scores["mse"]["min r"]
    assert s["best_k"] == 4 and s["programs_min_r"] > 0.99
    # docs/consensus.md: stabilities 0.9977, 0.9978, 0.9986, 0.879, 0.762 for k = 2..6
    stab = [s["stability"][str(k)] for k in range(2, 7)]
    np.testing.assert_allclose(stab, [0.9977, 0.9978, 0.9986, 0.879, 0.762], atol=0.005)
    assert 0.9 < s["cophenetic"] <= 1 and 0 < s["dclust_purity"] <= 1


@pytest.mark.notebooks
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_and_shows_its_numbers(name, tmp_path, monkeypatch, aml):
    fresh, stored = _run(name, tmp_path, monkeypatch)
    globals()[f"check_{name[:2]}"](fresh, aml)
    if name not in SCALED:
        _same(fresh, stored)
