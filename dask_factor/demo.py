"""The demo: fit NMF to the bundled pbmc3k single-cell matrix and summarise the factors.

Run with ``python3 run.py demo`` (sets itself up), ``python -m dask_factor.demo [--k K]`` or
``dask-factor demo [--k K]``: the same command, with the same options.
"""

from __future__ import annotations

import time

import numpy as np

from . import datasets
from ._params import validate_params
from .nmf import nmf


def run(dataset: str = "pbmc3k", k: int = 10, seed: int = 42, maxit: int = 100,
        progress: bool = True) -> dict:
    """Fit ``nmf(dataset, k)`` on the threaded scheduler and print a short summary.

    Returns
    -------
    dict
        ``shape``, ``k``, ``iterations``, ``mse``, ``seconds`` and, when the samples have a
        categorical label, the label each factor is most enriched in.

    Examples
    --------
    >>> summary = run("hawaiibirds", k=4, maxit=10, progress=False)
    dask_factor demo: hawaiibirds, 183 features × 1,183 samples, k = 4
    ... iterations (...), MSE ..., ... s
    <BLANKLINE>
    factor  d            top island (share of the factor's mean activity)
    ...
    >>> sorted(summary), summary["shape"], len(summary["top_label"])
    (['iterations', 'k', 'mse', 'seconds', 'shape', 'top_label'], (183, 1183), 4)
    """
    validate_params({"k": k, "seed": seed, "maxit": maxit}, entry="nmf")  # before any output
    A, rows, cols = datasets.load(dataset)
    label = next((c for c in ("cell_type", "category", "island") if c in cols.columns), None)
    print(f"dask_factor demo: {dataset}, {A.shape[0]:,} features × {A.shape[1]:,} samples, "
          f"k = {k}")
    t0 = time.perf_counter()
    model = nmf(A, k, seed=seed, maxit=maxit, progress=progress)
    seconds = time.perf_counter() - t0
    print(f"{model.iterations} iterations ({'converged' if model.converged else 'maxit'}), "
          f"MSE {model.mse:.6g}, {seconds:.2f} s")
    out = {"shape": A.shape, "k": k, "iterations": model.iterations, "mse": model.mse,
           "seconds": seconds}
    if label is not None:
        H = model.H
        labels = cols[label].astype(str).to_numpy()
        cats = np.unique(labels)
        means = np.stack([H[:, labels == c].mean(axis=1) for c in cats], axis=1)  # k × C
        share = means / np.maximum(means.sum(axis=1, keepdims=True), 1e-300)
        print(f"\nfactor  d            top {label} (share of the factor's mean activity)")
        tops = []
        for f in range(model.k):
            c = int(np.argmax(share[f]))
            tops.append(cats[c])
            print(f"  {f + 1:>3}   {model.d[f]:>11.1f}  {cats[c]} ({share[f, c]:.0%})")
        out["top_label"] = tops
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m dask_factor.demo [options]`` (what ``python3 run.py demo`` runs): exactly
    ``dask-factor demo [options]``, the same options, messages and exit status.

    Examples
    --------
    >>> main(["--dataset", "aml", "--k", "0", "-q"])  # stderr: ... error: --k: expected ...
    2
    """
    import sys

    from .cli import main as cli_main

    return cli_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
