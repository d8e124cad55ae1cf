"""Count-data losses: time per iteration against least squares and RcppML 1.0, in the same run,
and each loss's objective against RcppML's model at the same settings (pbmc3k, k = 10).

    python benchmarks/bench_losses.py [--maxit 3] [--losses kl nb ...] [--threads 1 2]
                                      [--no-rcppml]
                                      [--write tests/data/rcppml_losses_pbmc3k.json]
                                      [--rcppml-dir DIR]

For every loss it runs ``nmf(A, 10, seed=1, rng="rcppml", maxit=M, tol=0, loss=...)`` (the same
initial W as R's ``set.seed(1); runif``) after a warm-up fit (numba compilation), and RcppML's
``nmf(A, 10, seed=1, maxit=M, tol=0, loss=..., threads=T)`` through ``benchmarks/rcppml_losses.R``,
for each thread count T of ``--threads`` (ours on T Dask threads with BLAS limited to T)
(``kl`` is RcppML's ``loss="gp", dispersion="none"``). A case may add zero inflation or a robust
fit after ``+`` (``nb+zi_row``, ``gp+zi_col``, ``mse+robust``, ``kl+mae``: :data:`OPTIONS`), run
the same way on both sides. It prints seconds per iteration, the ratio
to our least-squares iteration and to RcppML's, and both models' objectives scored the same way
(``NMFResult.evaluate(A, loss=..., zi=..., robust=...)``: every entry the loss covers, NB with
each model's own size per row — RcppML's from its moments estimate on its final model when it
does not return one —, zero inflation with each model's own π).

``--write`` stores RcppML's scored objectives with the command that produced them (losses already
in the file at the same settings are kept, each with its own command); the slow test
``tests/api/test_losses_rcppml.py`` fits ours at the same settings and compares.
``--rcppml-dir DIR`` reads RcppML's models from an earlier ``rcppml_losses.R`` run into DIR (its
printed lines saved as ``DIR/out.txt``) instead of running R again (RcppML's Gamma and inverse
Gaussian fits took over a minute per iteration on pbmc3k; its Tweedie fit about 3.5 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # benchmarks/peers.py
from peers import dump_csc  # noqa: E402

LOSSES = ["kl", "nb", "gp", "gamma", "inverse_gaussian", "tweedie"]
#: a case is a loss, or a loss with options after "+": ``zi_row``/``zi_col`` (zero inflation),
#: ``robust`` (Huber, δ = 1.345) or ``mae``; rcppml_losses.R reads the same names
OPTIONS = {"zi_row": {"zi": "row"}, "zi_col": {"zi": "col"}, "robust": {"robust": True},
           "mae": {"robust": "mae"}}


def case_kwargs(case: str) -> dict:
    """``nmf()`` keyword arguments of a case name: ``"nb+zi_row"`` → loss="nb", zi="row"."""
    loss, *opts = case.split("+")
    if loss not in LOSSES + ["mse"] or any(o not in OPTIONS for o in opts):
        raise SystemExit(f"--losses: unknown case {case!r} (a loss of {LOSSES + ['mse']}, "
                         f"optionally followed by +{'/+'.join(OPTIONS)})")
    out = {"loss": loss}
    for o in opts:
        out.update(OPTIONS[o])
    return out


def run_rcppml(d: Path, k: int, maxit: int, losses: list[str], threads: int = 1) -> dict:
    cmd = ["Rscript", str(HERE / "rcppml_losses.R"), str(d), str(k), str(maxit), "0",
           str(threads), *losses]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return parse_rcppml(out)


def parse_rcppml(out: str) -> dict:
    """``{loss: {seconds, iterations, rcppml_loss}}`` from rcppml_losses.R's printed lines."""
    res = {}
    for line in out.strip().splitlines():
        loss, secs, iters, own = line.split()
        res[loss] = dict(seconds=float(secs), iterations=int(iters), rcppml_loss=float(own))
    return res


def rcppml_model(d: Path, loss: str, m: int, n: int, k: int):
    from dask_factor.nmf_fit import NMFResult

    def rd(s):
        return np.fromfile(d / f"rcppml_{loss}_{s}.bin", dtype=np.float64)

    W, dd, H = rd("w").reshape(k, m).T, rd("d"), rd("h").reshape(n, k).T
    import dask.array as da

    return NMFResult(W=W, d=dd, H_dask=da.from_array(H), iterations=0, converged=False,
                     sse=np.nan, mse=np.nan, loss_history=[], tol_history=[],
                     settings={"tweedie_power": 1.5})


def score_rcppml(A, d: Path, case: str, m: int, n: int, k: int) -> float:
    """RcppML's model of ``case`` scored by our objective of the same case: NB with each row's
    size by moments on its model, GP with its θ, zero inflation with its π (by row or column),
    robust fits with the same δ."""
    kw = case_kwargs(case)
    loss = kw["loss"]
    theirs = rcppml_model(d, case, m, n, k)
    disp = None
    if loss == "nb":
        disp = nb_moments(A, theirs.W, theirs.d, theirs.H)
    elif loss == "gp":
        th = d / f"rcppml_{case}_theta.bin"
        disp = np.fromfile(th, dtype=np.float64) if th.exists() else np.zeros(m)
    extra = {}
    if "zi" in kw:
        extra = dict(zi=kw["zi"], pi=np.fromfile(d / f"rcppml_{case}_pi.bin", dtype=np.float64))
    if "robust" in kw:
        extra = dict(robust=kw["robust"])
    return theirs.evaluate(A, loss=loss, dispersion=disp, **extra)


def nb_moments(A, W, d, H, lo=0.01, hi=1e6):
    """Each row's NB size by moments on a model: Σμ² / Σ[(y − μ)² − μ] (dense; pbmc3k fits)."""
    mu = (W * d) @ H
    Y = A.toarray()
    num = (mu ** 2).sum(1)
    den = ((Y - mu) ** 2 - mu).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((den > 1e-10) & (num > 1e-10), np.clip(num / den, lo, hi), hi)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--maxit", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--losses", nargs="+", default=LOSSES)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="thread counts: ours (Dask threads, BLAS limited alike) and RcppML's")
    ap.add_argument("--no-rcppml", action="store_true")
    ap.add_argument("--write", default=None)
    ap.add_argument("--rcppml-dir", default=None)
    args = ap.parse_args(argv)
    if args.rcppml_dir and len(args.threads) != 1:
        ap.error("--rcppml-dir: the directory holds one RcppML run; give its thread count as "
                 f"the one --threads value (got {args.threads})")

    import dask
    from threadpoolctl import threadpool_limits

    from dask_factor import datasets, nmf

    A = datasets.load("pbmc3k").matrix
    m, n = A.shape
    k, M = args.k, args.maxit
    common = dict(seed=1, rng="rcppml", maxit=M, tol=0)
    nmf(A, k, seed=1, maxit=1, tol=0)  # warm-up: numba caches
    for loss in args.losses:  # two iterations: the cold and the warm-started solves
        nmf(A[:, :200], k, seed=1, maxit=2, tol=0, **case_kwargs(loss))
    print(f"pbmc3k {m}×{n}, k={k}, {M} iterations, tol=0; ours and RcppML at the same thread "
          f"count")
    tmp = tempfile.TemporaryDirectory()
    d = Path(args.rcppml_dir or tmp.name)
    if args.rcppml_dir:
        rc_dir = parse_rcppml((d / "out.txt").read_text())
    elif not args.no_rcppml:
        dump_csc(A, d)
    rows = {}
    for threads in args.threads:
        with threadpool_limits(threads), dask.config.set(scheduler="threads",
                                                           num_workers=threads):
            t0 = time.perf_counter()
            nmf(A, k, **common)
            mse_it = (time.perf_counter() - t0) / M
            print(f"\nthreads={threads}: mse {mse_it * 1e3:.0f} ms/iteration (ours)")
            rc = {}
            if args.rcppml_dir:
                rc = rc_dir
            elif not args.no_rcppml:
                rc = run_rcppml(d, k, M, args.losses, threads)
            print(f"{'loss':18s} {'ours s/it':>10s} {'/mse':>7s} {'RcppML s/it':>12s}"
                  f" {'ours/RcppML':>12s} {'our objective':>15s} {'RcppML objective':>17s}"
                  f" {'ratio':>8s}")
            for loss in args.losses:
                t0 = time.perf_counter()
                model = nmf(A, k, **case_kwargs(loss), **common)
                ours_it = (time.perf_counter() - t0) / M
                row = dict(ours_s_per_it=ours_it, objective=model.objective)
                line = f"{loss:18s} {ours_it:10.2f} {ours_it / mse_it:7.1f}"
                if loss in rc:
                    r_it = rc[loss]["seconds"] / rc[loss]["iterations"]
                    r_obj = score_rcppml(A, d, loss, m, n, k)
                    row.update(rcppml_s_per_it=r_it, rcppml_objective=r_obj,
                               rcppml_own_loss=rc[loss]["rcppml_loss"])
                    line += (f" {r_it:12.2f} {ours_it / r_it:12.2f} {model.objective:15.6g}"
                             f" {r_obj:17.6g} {model.objective / r_obj:8.4f}")
                else:
                    line += f" {'':12s} {'':12s} {model.objective:15.6g}"
                if threads == args.threads[0]:  # --write records the first thread count
                    rows[loss] = row
                print(line, flush=True)
    if args.write:
        cmd = "python benchmarks/bench_losses.py " + " ".join(argv if argv else sys.argv[1:])
        new = {loss: {**{kk: float(v) for kk, v in r.items()}, "command": cmd,
                      "kwargs": case_kwargs(loss)}
               for loss, r in rows.items()}
        out = {"command": cmd,
               "rcppml": f"RcppML 1.0.0 (zdebruine/RcppML df69ddd), threads={args.threads[0]}",
               "dataset": "pbmc3k", "k": k, "maxit": M, "tol": 0, "seed": 1, "rng": "rcppml",
               "note": "objectives of RcppML's models scored by NMFResult.evaluate(A, loss=...)",
               "losses": new}
        path = Path(args.write)
        if path.exists():  # keep the losses measured earlier at the same settings
            old = json.loads(path.read_text())
            if (old.get("k"), old.get("maxit")) == (k, M):
                for r in old["losses"].values():
                    r.setdefault("command", old["command"])
                out["command"] = old["command"]
                out["losses"] = {**old["losses"], **new}
        tmp_path = path.with_suffix(".tmp")
        tmp_path.write_text(json.dumps(out, indent=1) + "\n")
        tmp_path.replace(path)  # atomic
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
