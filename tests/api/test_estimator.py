"""scikit-learn estimators (issue 14 item 1): check_estimator, Pipeline/GridSearchCV, set_output,
inputs (numpy, lists, scipy.sparse, pandas, dask arrays and DataFrames), agreement with
scikit-learn's own PCA/TruncatedSVD, and the missing-extra message."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from readme_blocks import readme_block  # noqa: E402
from sklearn import decomposition as skd  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from dask_factor.estimator import NMF, PCA, TruncatedSVD  # noqa: E402

#: checks that cannot apply, with the reason (scikit-learn's expected-failure mechanism). Every
#: check applies today; ``check_array_api_input`` skips itself unless SCIPY_ARRAY_API is set
#: (the estimators take numpy/scipy/dask, not array-API namespaces).
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks([NMF(max_iter=50), TruncatedSVD(), PCA()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED)
def test_check_estimator(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def X(hawaiibirds):
    return hawaiibirds.matrix.T.tocsr()[:400]  # 400 grid cells × 183 species


@pytest.mark.parametrize("Est", [NMF, TruncatedSVD, PCA])
def test_pipeline_gridsearch_over_n_components(Est):
    rng = np.random.default_rng(0)
    Xd = rng.random((60, 12))
    pipe = Pipeline([("id", FunctionTransformer()), ("dec", Est(random_state=0))])
    kw = {"dec__max_iter": [30]} if Est is NMF else {}
    # a transformer's score: minus the reconstruction error (negated so larger is better)
    def score(est, X_, y=None):
        Z = est.transform(X_)
        return -float(np.linalg.norm(X_ - est[-1].inverse_transform(Z)))
    gs = GridSearchCV(pipe, {"dec__n_components": [2, 4], **kw}, cv=3, scoring=score)
    gs.fit(Xd)
    assert gs.best_params_["dec__n_components"] == 4
    assert gs.best_estimator_[-1].components_.shape == (4, 12)


@pytest.mark.parametrize("Est", [NMF, TruncatedSVD, PCA])
def test_set_output_pandas_and_feature_names(Est, X):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X[:, :40].toarray(), columns=[f"sp{i}" for i in range(40)])
    est = Est(n_components=3, random_state=0).set_output(transform="pandas")
    out = est.fit_transform(df)
    prefix = Est.__name__.lower()
    assert list(out.columns) == [f"{prefix}{i}" for i in range(3)]
    assert list(est.feature_names_in_) == list(df.columns)
    assert isinstance(est.transform(df), pd.DataFrame)


@pytest.mark.parametrize("Est", [NMF, TruncatedSVD, PCA])
def test_inputs_agree(Est, X):
    import dask.array as da
    import pandas as pd

    dense = X.toarray()
    ref = Est(n_components=3, random_state=0).fit(dense)
    Z = ref.transform(dense)
    inputs = [X, dense.tolist(), da.from_array(dense, chunks=(100, 183)),
              pd.DataFrame(dense, columns=[f"c{i}" for i in range(183)])]
    try:  # dask.dataframe needs pyarrow
        import dask.dataframe as dd

        inputs.append(dd.from_pandas(inputs[-1], npartitions=2))
    except ImportError:
        pass
    for Xin in inputs:
        est = Est(n_components=3, random_state=0).fit(Xin)
        np.testing.assert_allclose(np.abs(est.components_), np.abs(ref.components_),
                                   rtol=1e-3, atol=1e-6)
        np.testing.assert_allclose(np.abs(est.transform(Xin)), np.abs(Z), rtol=1e-3, atol=1e-5)
        assert est.n_features_in_ == 183


def test_pca_truncated_svd_agree_with_sklearn(X):
    dense = X.toarray()
    ours, theirs = PCA(n_components=4).fit(dense), skd.PCA(n_components=4).fit(dense)
    np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_,
                               rtol=1e-6)
    np.testing.assert_allclose(np.abs(ours.components_), np.abs(theirs.components_), atol=1e-6)
    np.testing.assert_allclose(ours.mean_, theirs.mean_, atol=1e-12)
    np.testing.assert_allclose(np.abs(ours.transform(dense)), np.abs(theirs.transform(dense)),
                               atol=1e-6)
    ours = TruncatedSVD(n_components=4).fit(X)
    theirs = skd.TruncatedSVD(n_components=4, algorithm="arpack").fit(X)
    np.testing.assert_allclose(ours.singular_values_, theirs.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_,
                               rtol=1e-5)


def test_nmf_attributes_and_roundtrip(X):
    est = NMF(n_components=5, random_state=1, max_iter=30)
    Z = est.fit_transform(X)
    assert Z.shape == (400, 5) and (Z >= 0).all()
    np.testing.assert_allclose(est.components_.sum(axis=1), 1.0, rtol=1e-5)
    err = np.linalg.norm(X.toarray() - est.inverse_transform(Z))
    assert est.reconstruction_err_ == pytest.approx(err, rel=1e-3)
    assert est.n_iter_ == est.model_.iterations and est.n_components_ == 5
    assert list(est.get_feature_names_out()) == [f"nmf{i}" for i in range(5)]


def test_validation_and_not_fitted():
    with pytest.raises(ValueError, match="bogus"):
        NMF().set_params(bogus=1)
    with pytest.raises(InvalidParameterError, match="n_components"):
        NMF(n_components=0).fit(np.ones((4, 3)))
    with pytest.raises(InvalidParameterError, match="solver"):
        NMF(solver="magic").fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="n_components=9"):
        PCA(n_components=9).fit(np.random.default_rng(0).random((5, 4)))
    with pytest.raises(ValueError, match="Negative values"):
        NMF(n_components=1).fit(-np.ones((4, 3)))
    for Est in (NMF, TruncatedSVD, PCA):
        with pytest.raises(NotFittedError):
            Est().transform(np.ones((2, 3)))


def test_missing_sklearn_message():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import dask_factor\n"
            "from dask_factor.estimator import NMF\n"
            "try:\n    NMF()\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert 'pip install "dask_factor[sklearn]"' in out


def test_readme_example(capsys):
    exec(compile(readme_block("scikit-learn estimators"), "README.md", "exec"), {})
    assert "'pca4'" in capsys.readouterr().out


def test_gridsearch_supervised_pipeline(X):
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(X[:, 0].todense()).ravel() > 0
    for dec in (NMF(random_state=0, max_iter=20), TruncatedSVD(random_state=0), PCA()):
        pipe = Pipeline([("dec", dec), ("clf", LogisticRegression(max_iter=200))])
        gs = GridSearchCV(pipe, {"dec__n_components": [2, 5]}, cv=2).fit(
            X if not isinstance(dec, PCA) else X.toarray(), y)
        assert gs.best_params_["dec__n_components"] in (2, 5)
