"""Passes to a target loss: exact ALS against block-sequential ALS (``nmf(updates_per_pass=B)``).

    python benchmarks/bench_online.py [--dataset pbmc3k | --simulate CELLS GENES | --path STORE]
                                      [--k 10] [--updates 1 2 4 8] [--seed 1]

1. Exact ALS (``updates_per_pass=1``) by the default stopping rule (``--tol``): its final loss
   L* is the target, its passes and time the reference.
2. For every B in ``--updates``: one fit with ``tol=0`` until the loss is at or below L* and
   the default rule would have stopped (at most ``--max-passes``). ``tol`` only decides when a
   fit stops, so this one history gives where the default rule stops (passes, loss against L*)
   and the passes (and time) to L*·(1 + 1e-3) and to L* itself.

``--path`` fits a zarr store streamed from disk (``cache="none"``, every pass reads every
block); the other sources are held in memory. Prints wall time and CPU time (this process; the
fits run on dask's threads) and the load average, so that runs on a busy machine can be read.
"""

from __future__ import annotations

import argparse
import os
import time

TARGETS = (1e-3, 0.0)


def _load() -> str:
    return "load average " + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + \
        f" on {os.cpu_count()} cores"


def _source(args):
    if args.path:
        return args.path, f"{args.path} (streamed, cache='none')"
    if args.simulate:
        from dask_factor.datasets import simulate_counts

        cells, genes = args.simulate
        A = simulate_counts(cells, genes, args.k, density=args.density, seed=args.seed)
        A = A.compute() if hasattr(A, "compute") else A
        return A, f"simulated {genes} x {cells} (in memory, nnz {A.nnz:,})"
    from dask_factor import datasets

    A = datasets.load(args.dataset).matrix
    return A, f"{args.dataset} {A.shape[0]} x {A.shape[1]} (in memory)"


def fit(A, args, B: int, *, tol: float, maxit: int, target: float | None = None) -> dict:
    """One fit; with ``target`` (and ``tol=0``) it stops once the loss is at or below it and
    the default stopping rule (``args.tol``) would have stopped."""
    from dask_factor import nmf
    from dask_factor.engine.driver import converged_history

    losses: list[float] = []
    stamps: list[float] = []

    def seen(it, mse, rel):
        losses.append(mse)
        stamps.append(time.perf_counter() - t0)
        return target is not None and mse <= target and converged_history(losses, args.tol)

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    model = nmf(A, args.k, seed=args.seed, tol=tol, maxit=maxit, updates_per_pass=B,
                cache="none" if isinstance(A, str) else "auto", on_iteration=seen)
    return {"B": B, "passes": model.iterations, "loss": float(model.loss_history[-1]),
            "losses": losses, "stamps": stamps, "total": time.perf_counter() - t0,
            "cpu": time.process_time() - cpu0, "converged": model.converged}


def rule_stop(losses: list[float], tol: float) -> int | None:
    """The pass at which the default stopping rule stops (1-based), if it does."""
    from dask_factor.engine.driver import converged_history

    return next((i for i in range(1, len(losses) + 1) if converged_history(losses[:i], tol)),
                None)


def passes_to(losses: list[float], target: float) -> int | None:
    return next((i + 1 for i, v in enumerate(losses) if v <= target), None)


def run(args) -> dict:
    A, what = _source(args)
    print(f"{what}, k = {args.k}, seed {args.seed}, tol {args.tol}; start: {_load()}")
    exact = fit(A, args, 1, tol=args.tol, maxit=args.max_passes)
    target = exact["loss"]
    print(f"exact ALS (B = 1): {exact['passes']} passes to the default rule, loss L* = "
          f"{target:.7g}, {exact['total']:.1f} s wall, {exact['cpu']:.1f} s CPU "
          f"({exact['total'] / exact['passes']:.2f} s/pass, "
          f"{exact['cpu'] / exact['passes']:.2f} s CPU/pass); passes to L*(1+1e-3): "
          f"{passes_to(exact['losses'], target * (1 + TARGETS[0]))}")
    out = {"target": target, "exact": exact, "online": []}
    for B in args.updates:
        if B == 1:
            continue
        run_ = fit(A, args, B, tol=0.0, maxit=args.max_passes, target=target)
        losses, stamps = run_["losses"], run_["stamps"]
        stop = rule_stop(losses, args.tol)
        hits = [passes_to(losses, target * (1 + t)) for t in TARGETS]
        t_hit = [stamps[h - 1] if h else None for h in hits]
        n = len(losses)
        rule = (f"default rule stops at pass {stop}, loss {losses[stop - 1]:.7g} "
                f"({losses[stop - 1] / target - 1:+.1e} vs L*), {stamps[stop - 1]:.1f} s"
                if stop else f"default rule not met in {n} passes")
        print(f"B = {B}: {rule}; passes to L*(1+1e-3): {hits[0]} ({_s(t_hit[0])}), to L*: "
              f"{hits[1]} ({_s(t_hit[1])}); {n} passes run, {run_['total']:.1f} s wall, "
              f"{run_['cpu']:.1f} s CPU ({run_['total'] / n:.2f} s/pass, "
              f"{run_['cpu'] / n:.2f} s CPU/pass)")
        out["online"].append({"run": run_, "rule_stop": stop, "passes_to": hits,
                              "time_to": t_hit})
    print(f"end: {_load()}")
    return out


def _s(t) -> str:
    return "-" if t is None else f"{t:.1f} s"


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", default="pbmc3k")
    src.add_argument("--simulate", type=int, nargs=2, metavar=("CELLS", "GENES"))
    src.add_argument("--path", help="a zarr store (streamed)")
    p.add_argument("--density", type=float, default=0.06)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--updates", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--max-passes", type=int, default=100)
    return p.parse_args(argv)


def main(argv=None) -> int:
    run(parse(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
