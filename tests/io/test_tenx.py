"""10x Cell Ranger inputs (issue 14 item 4): a ``filtered_feature_bc_matrix/`` directory and a
Cell Ranger ``.h5`` (v3 layout, and v2 per-genome), written here with the documented layouts,
read lazily with names by open_matrix/read_metadata, nmf() and the CLI, compared with scanpy's
readers (or with the written matrix when scanpy is absent)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

h5py = pytest.importorskip("h5py")

from dask_factor import nmf  # noqa: E402
from dask_factor.io import detect_format, matrix_info, open_matrix, read_metadata  # noqa: E402


@pytest.fixture(scope="module")
def counts():
    """features × barcodes integer counts, with ids, symbols (one duplicated) and barcodes."""
    rng = np.random.default_rng(0)
    m, n = 60, 45
    A = sp.random(m, n, density=0.2, format="csc", random_state=rng,
                  data_rvs=lambda k: rng.integers(1, 20, k)).astype(np.float32)
    ids = [f"ENSG{i:011d}" for i in range(m)]
    symbols = [f"GENE{i}" for i in range(m)]
    symbols[7] = symbols[3]  # symbols are not unique in real data
    barcodes = [f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n)]
    return A, ids, symbols, barcodes


def write_10x_dir(d, A, ids, symbols, barcodes):
    """Cell Ranger >= 3: matrix.mtx.gz, features.tsv.gz, barcodes.tsv.gz."""
    d.mkdir()
    with gzip.open(d / "matrix.mtx.gz", "wb") as f:
        scipy.io.mmwrite(f, sp.coo_matrix(A).astype(np.int64), field="integer")
    with gzip.open(d / "features.tsv.gz", "wt") as f:
        f.writelines(f"{i}\t{s}\tGene Expression\n" for i, s in zip(ids, symbols))
    with gzip.open(d / "barcodes.tsv.gz", "wt") as f:
        f.writelines(f"{b}\n" for b in barcodes)
    return d


def write_10x_h5(path, A, ids, symbols, barcodes, *, v2: bool = False):
    """Cell Ranger >= 3 (/matrix, /matrix/features) or 2 (/<genome> with genes, gene_names)."""
    A = sp.csc_matrix(A)
    with h5py.File(path, "w") as f:
        g = f.create_group("GRCh38" if v2 else "matrix")
        g["data"] = A.data.astype(np.int32)
        g["indices"] = A.indices.astype(np.int64)
        g["indptr"] = A.indptr.astype(np.int64)
        g["shape"] = np.array(A.shape, dtype=np.int32)
        g["barcodes"] = np.array(barcodes, dtype="S")
        if v2:
            g["genes"] = np.array(ids, dtype="S")
            g["gene_names"] = np.array(symbols, dtype="S")
        else:
            fg = g.create_group("features")
            fg["id"] = np.array(ids, dtype="S")
            fg["name"] = np.array(symbols, dtype="S")
            fg["feature_type"] = np.array(["Gene Expression"] * len(ids), dtype="S")
            fg["genome"] = np.array(["GRCh38"] * len(ids), dtype="S")
            fg["_all_tag_keys"] = np.array([b"genome"])
        if not v2:
            f.attrs["filetype"] = "matrix"
            f.attrs["version"] = 2
    return path


@pytest.fixture(scope="module")
def layouts(counts, tmp_path_factory):
    d = tmp_path_factory.mktemp("tenx")
    return {
        "10x-mtx": write_10x_dir(d / "filtered_feature_bc_matrix", *counts),
        "10x-h5": write_10x_h5(d / "filtered_feature_bc_matrix.h5", *counts),
        "10x-h5-v2": write_10x_h5(d / "v2.h5", *counts, v2=True),
    }


@pytest.mark.parametrize("kind", ["10x-mtx", "10x-h5", "10x-h5-v2"])
def test_reads_matrix_and_names(layouts, counts, kind):
    A, ids, symbols, barcodes = counts
    path = layouts[kind]
    assert detect_format(path) == kind.removesuffix("-v2")
    X = open_matrix(path, block_nnz=100)
    assert X.shape == A.shape and (X.npartitions > 1 or kind == "10x-mtx")
    np.testing.assert_array_equal(sp.csc_matrix(X.compute()).toarray(), A.toarray())
    rows, cols = read_metadata(path)
    assert list(rows["gene_ids"]) == ids and list(rows.index) == symbols
    assert list(cols.index) == barcodes
    info = matrix_info(path)
    assert tuple(info["shape"]) == A.shape and info["nnz"] == A.nnz


@pytest.mark.parametrize("kind", ["10x-mtx", "10x-h5"])
def test_agrees_with_scanpy(layouts, kind):
    sc = pytest.importorskip("scanpy")
    path = layouts[kind]
    ref = sc.read_10x_mtx(path) if kind == "10x-mtx" else sc.read_10x_h5(path)
    X = open_matrix(path).compute()
    np.testing.assert_array_equal(sp.csc_matrix(X).toarray().T, ref.X.toarray())
    rows, cols = read_metadata(path)
    assert list(rows["gene_ids"]) == list(ref.var["gene_ids"])
    assert list(cols.index) == list(ref.obs_names)
    assert list(rows["gene_symbols"]) == [s.rsplit("-", 1)[0] if s.startswith("GENE3-")
                                          else s for s in ref.var_names]


def test_h5_is_lazy(layouts, monkeypatch):
    """Building the array reads only the pointer; each block's task reads its slice."""
    from dask_factor.io import tenx

    calls = []
    real = tenx.TenxH5Reader.__call__
    monkeypatch.setattr(tenx.TenxH5Reader, "__call__",
                        lambda self, a, b: calls.append((a, b)) or real(self, a, b))
    X = open_matrix(layouts["10x-h5"], block_nnz=100)
    assert calls == []
    X.blocks[0, 1].compute()
    assert len(calls) == 1


@pytest.mark.parametrize("kind", ["10x-mtx", "10x-h5"])
def test_nmf_and_cli_take_10x(layouts, counts, kind, tmp_path):
    A = counts[0]
    ours = nmf(layouts[kind], 3, seed=1, maxit=5, tol=0)
    ref = nmf(A, 3, seed=1, maxit=5, tol=0)
    np.testing.assert_allclose(ours.W, ref.W, rtol=1e-4, atol=1e-6)
    from dask_factor.cli import main

    out = tmp_path / "fit.npz"
    assert main(["fit", str(layouts[kind]), str(out), "--k", "3", "--maxit", "3"]) in (0, None)
    assert out.exists()


def test_h5ad_still_h5ad(tmp_path):
    ad = pytest.importorskip("anndata")
    ad.AnnData(np.ones((3, 2))).write_h5ad(tmp_path / "a.h5ad")
    assert detect_format(tmp_path / "a.h5ad") == "h5ad"


def test_readme_example(layouts, monkeypatch, tmp_path):
    """The README's 10x example, run on the layouts written here."""
    import os
    import shutil
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
    from readme_blocks import readme_block

    code = readme_block("Inputs")
    shutil.copytree(layouts["10x-mtx"], tmp_path / "filtered_feature_bc_matrix")
    shutil.copy(layouts["10x-h5"], tmp_path / "sample_filtered_feature_bc_matrix.h5")
    monkeypatch.chdir(tmp_path)
    code = code.replace('nmf("sample_filtered_feature_bc_matrix.h5", 20)',
                        'nmf("sample_filtered_feature_bc_matrix.h5", 3, maxit=3)')
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["A"].shape == (60, 45) and len(ns["barcodes"]) == 45 and ns["model"].k == 3
    assert os.getcwd() == str(tmp_path)
