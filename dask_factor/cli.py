"""The ``dask-factor`` command line.

Each subcommand has an ``_add_<name>_parser(subparsers)`` function that declares its arguments
and sets ``func`` to the function running it; :func:`main` builds the parser from the list
:data:`SUBCOMMANDS`, so a new subcommand (``fit``, ``demo``) is one more ``_add_*`` function and one
more list entry.  Errors the user can fix (a bad path or option) print one line and return 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__

#: exit status for errors in the user's input
EXIT_USAGE = 2
#: a closed output pipe (128 + SIGPIPE, what a shell reports for a tool killed by it)
EXIT_BROKEN_PIPE = 141


def _human(n) -> str:
    return "?" if n is None else f"{int(n):,}"


def _format_info(info: dict) -> str:
    m, n = info["shape"]
    lines = [
        f"path:        {info['path']}",
        f"format:      {info['format']} (version {info.get('version')}"
        + (f", {info['encoding']}" if info.get("encoding") else "") + ")",
        f"shape:       {m:,} features x {n:,} samples",
    ]
    nnz = info.get("nnz")
    if info.get("dense"):
        lines.append("nnz:         dense")
    else:
        dens = f" (density {100.0 * nnz / max(m * n, 1):.3f}%)" if nnz is not None else ""
        lines.append(f"nnz:         {_human(nnz)}{dens}")
    lines.append(f"value type:  {info.get('value_type')}")
    lines.append(f"chunking:    {info.get('chunking')}")
    for key, label in (("layers", "layers"), ("has_transpose", "transpose"),
                       ("crc", "crc")):
        if key in info:
            lines.append(f"{label + ':':<12} {info[key]}")
    for key, label in (("row_meta_columns", "row (feature) metadata"),
                       ("col_meta_columns", "column (sample) metadata")):
        cols = info.get(key) or []
        lines.append(f"{label}: {', '.join(cols) if cols else '-'}")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


# --------------------------------------------------------------------------- info


def _run_info(args) -> int:
    from .io import matrix_info

    info = matrix_info(args.path)
    if args.json:
        print(json.dumps(_jsonable(info), indent=2))
    else:
        print(_format_info(info))
    return 0


def _add_info_parser(subparsers) -> None:
    p = subparsers.add_parser("info", help="describe a matrix file (header only)",
                              description="Shape, nnz, format, version, chunking, value type "
                                          "and metadata columns of a matrix file or store.")
    p.add_argument("path", help=".spz, zarr store, .h5ad, AnnData zarr or .mtx[.gz]")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_info)


# --------------------------------------------------------------------------- convert


def _run_convert(args) -> int:
    from .io import write_matrix

    opts = {}
    if args.value_type is not None:
        opts["value_type"] = args.value_type
    if args.no_transpose:
        opts["include_transpose"] = False
    if args.layout is not None:
        opts["layout"] = args.layout
    read_opts = {}
    if args.layer is not None:
        read_opts["layer"] = args.layer
    if args.raw:
        read_opts["raw"] = True
    write_matrix(args.src, args.dst, args.format, block_nnz=args.block_nnz, dtype=args.dtype,
                 overwrite=args.overwrite, progress=not args.quiet, read_opts=read_opts, **opts)
    if not args.quiet:
        print(f"wrote {args.dst}")
    return 0


def _add_convert_parser(subparsers) -> None:
    p = subparsers.add_parser("convert", help="convert between matrix formats (streaming)",
                              description="Stream SRC into DST block by block; DST is written "
                                          "to a temporary name and renamed when complete.")
    p.add_argument("src", help="source matrix (.spz, zarr, .h5ad, AnnData zarr, .mtx[.gz])")
    p.add_argument("dst", help="destination (.zarr, .spz or .h5ad)")
    p.add_argument("--format", choices=["zarr", "spz", "h5ad"], default=None,
                   help="output format (default: from DST's suffix)")
    p.add_argument("--value-type", default=None,
                   help=".spz value type (auto, uint8, uint16, uint32, float32, float16, "
                        "quant8, float64)")
    p.add_argument("--layout", choices=["csc", "scan"], default=None,
                   help="zarr layout: csc (AnnData's encoding, the default) or scan (read fast at "
                        "every iteration of a fit; docs/io.md)")
    p.add_argument("--no-transpose", action="store_true",
                   help=".spz: do not store the transpose section")
    p.add_argument("--block-nnz", type=int, default=None,
                   help="target stored entries per column block")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="value dtype to store (default: the source's)")
    p.add_argument("--layer", default=None, help="AnnData source: read this layer")
    p.add_argument("--raw", action="store_true", help="AnnData source: read raw.X")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_convert)


# --------------------------------------------------------------------------- simulate


def _run_simulate(args) -> int:
    from .datasets.simulate import simulate_counts

    opts = {}
    if args.value_type is not None:
        opts["value_type"] = args.value_type
    if args.layout is not None:
        opts["layout"] = args.layout
    simulate_counts(args.samples, args.features, args.k, density=args.density, seed=args.seed,
                    path=args.out, format=args.format, block_cols=args.block_cols,
                    overwrite=args.overwrite, progress=not args.quiet, **opts)
    if not args.quiet:
        print(f"wrote {args.out}")
    return 0


def _add_simulate_parser(subparsers) -> None:
    p = subparsers.add_parser("simulate", help="write a simulated count matrix",
                              description="Negative-binomial counts from planted non-negative "
                                          "factors, generated block by block (deterministic "
                                          "for a seed).")
    p.add_argument("out", help="output path (.zarr, .spz or .h5ad)")
    p.add_argument("--samples", type=int, required=True, help="number of samples (columns)")
    p.add_argument("--features", type=int, required=True, help="number of features (rows)")
    p.add_argument("--k", type=int, default=10, help="number of planted programs")
    p.add_argument("--density", type=float, default=0.06, help="fraction of non-zeros")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-cols", type=int, default=None, help="columns per written block")
    p.add_argument("--format", choices=["zarr", "spz", "h5ad"], default=None)
    p.add_argument("--value-type", default=None, help=".spz value type (default auto)")
    p.add_argument("--layout", choices=["csc", "scan"], default=None,
                   help="zarr layout: csc (AnnData's encoding, the default) or scan (read fast at "
                        "every iteration of a fit; docs/io.md)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_simulate)


# --------------------------------------------------------------------------- demo / fit


def _run_demo(args) -> int:
    from .demo import run

    run(args.dataset, args.k, args.seed, args.maxit, progress=not args.quiet)
    return 0


def _add_demo_parser(subparsers) -> None:
    from .datasets import available

    p = subparsers.add_parser("demo", help="fit NMF to a bundled dataset and summarise it",
                              description="Fit nmf() to a bundled dataset on the local threaded "
                                          "scheduler and print the factors' top labels.")
    p.add_argument("--dataset", default="pbmc3k", choices=sorted(available()))
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--maxit", type=int, default=100)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_demo)


def _fit_output(path: str) -> tuple[Path, str]:
    """OUT of ``dask-factor fit`` and its format, checked before the fit starts (not after it).

    OUT is the zarr store of :meth:`NMFResult.save` (``"nmf_result"``), or, for a name ending in
    ``.npz``, the older ``.npz`` (``"npz"``). It may replace only an earlier fit's result of
    that format (a re-run of the same command), never another file or a directory; its
    directory must exist and be writable.
    """
    from .io.targets import REPLACEABLE, check_target

    fmt = "npz" if str(path).lower().endswith(".npz") else "nmf_result"
    try:
        out = check_target(path, fmt=fmt, overwrite=True, what="OUT")
    except FileExistsError as err:  # OUT is replaced only when it holds an earlier fit
        raise FileExistsError(str(err).replace(
            f"overwrite=True only replaces a {REPLACEABLE[fmt]}",
            "fit only replaces a .npz or a saved NMF result (zarr) of an earlier fit")) from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"OUT={path!r}: cannot write in the directory {str(out.parent)!r}")
    return out, fmt


#: what ``--anndata`` writes into SRC (NMFResult.to_anndata's keys)
ANNDATA_KEYS = [("obsm", "X_nmf"), ("varm", "NMF_W"), ("uns", "nmf")]


def _fit_anndata(src: str, overwrite: bool) -> None:
    """``--anndata``: SRC must be a writable ``.h5ad`` without the keys (unless ``--overwrite``);
    checked before the fit, as a spec's ``output.anndata`` is."""
    from .graph.store import check_h5ad_keys

    try:
        check_h5ad_keys(src, ANNDATA_KEYS, overwrite=overwrite, what="SRC")
    except ValueError as err:
        raise ValueError(f"--anndata: SRC={src!r} must be an .h5ad file to write into ({err})"
                         ) from None
    if not os.access(src, os.W_OK):
        raise PermissionError(f"SRC={src!r}: --anndata cannot write it (no write permission)")


def _robust_value(text: str) -> str | float:
    """``--robust``'s value: ``mae`` or a number (the Huber delta, checked by nmf).

    Examples
    --------
    >>> _robust_value("mae"), _robust_value("0.5")
    ('mae', 0.5)
    """
    if text.lower() == "mae":
        return "mae"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'mae' or a Huber delta > 0, got {text!r}") from None


#: ``dask-factor fit SRC OUT``'s options and their defaults (None: not given on the command line)
FIT_DEFAULTS = {"k": None, "seed": None, "maxit": 100, "tol": 1e-4, "L1": 0.0, "L2": 0.0,
                "solver": "auto", "dtype": "float32", "cache": "auto", "checkpoint": None,
                "checkpoint_every": None, "loss": "mse", "dispersion": "per_row",
                "tweedie_power": 1.5, "updates_per_pass": 1, "robust": False, "zi": "none"}

#: where each of those options lives in a SPEC.yaml
_SPEC_HOME = {"k": "layers[i].k", "seed": "config.seed", "maxit": "config.maxit",
              "tol": "config.tol", "L1": "layers[i].L1", "L2": "layers[i].L2",
              "solver": "config.solver", "dtype": "config.dtype", "cache": None,
              "checkpoint": "checkpoint.path", "checkpoint_every": "checkpoint.every",
              "loss": "config.loss", "dispersion": None, "tweedie_power": None,
              "updates_per_pass": None, "robust": None, "zi": None}


def is_spec(path: str) -> bool:
    """Whether ``dask-factor fit``'s first argument is a spec file (``.yaml``/``.yml``).

    Examples
    --------
    >>> is_spec("fit.yaml"), is_spec("cells.h5ad")
    (True, False)
    """
    return str(path).lower().endswith((".yaml", ".yml"))


def _fit_client(args, spec_cluster=None):
    """The Client of ``--scheduler``/``--cluster`` (or the spec's), None for local threads."""
    from .spec import ClusterSpec, start_client

    return start_client(spec_cluster or ClusterSpec(), kind=args.cluster,
                        scheduler=args.scheduler, connect_timeout=args.connect_timeout)


def _run_fit_spec(args) -> int:
    from .spec import load_spec, run_spec

    if args.out is not None:
        raise ValueError(f"OUT={args.out!r}: a SPEC.yaml names its output (output.path); "
                         f"give only the spec")
    if args.anndata:
        raise ValueError("--anndata: a spec writes into its AnnData input with output.anndata")
    for name in FIT_DEFAULTS:
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            home = _SPEC_HOME[name]
            raise ValueError(f"{flag}: set it in the spec ({home}), not on the command line"
                             if home else f"{flag}: applies to SRC OUT fits only")
    # every check of the spec (inputs, graph, config, checkpoint, output) before any cluster
    spec = load_spec(args.src, resume=args.resume or None, overwrite=args.overwrite or None)
    client = _fit_client(args, spec.cluster)
    try:
        report = run_spec(spec, client=client, progress=not args.quiet)
    finally:
        if client is not None:
            client.close()
    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        layers = ", ".join(f"{name} (k={v['k']}, MSE {v['mse']:.6g})"
                           for name, v in summary["layers"].items())
        where = " and ".join(str(p) for p in report.written.values())
        print(f"{summary['iterations']} iterations "
              f"({'converged' if summary['converged'] else 'maxit'}), {layers}, "
              f"{report.seconds:.2f} s -> {where}")
    return 0


def _run_fit(args) -> int:
    import time
    import warnings

    from ._nmf_result_io import save_npz
    from ._optional import MissingExtra
    from .io import matrix_info
    from .nmf import nmf
    from .spec import matrix_names

    if is_spec(args.src):
        return _run_fit_spec(args)
    if args.out is None:
        raise ValueError("OUT: required with a matrix SRC (dask-factor fit SRC OUT --k K), or "
                         "give a SPEC.yaml")
    if args.k is None:
        raise ValueError("--k: required with a matrix SRC (dask-factor fit SRC OUT --k K)")
    if args.overwrite and not args.anndata:
        raise ValueError("--overwrite: applies to a SPEC.yaml's output, or with --anndata to "
                         "SRC's keys; OUT is replaced only when it holds an earlier fit")
    opt = {name: default if getattr(args, name) is None else getattr(args, name)
           for name, default in FIT_DEFAULTS.items()}
    out, fmt = _fit_output(args.out)
    if args.anndata:
        _fit_anndata(args.src, args.overwrite)
    features = samples = None
    try:
        features, samples = matrix_names(args.src, tuple(matrix_info(args.src)["shape"]))
    except MissingExtra as err:  # the fit needs no extra; only reading these names does
        warnings.warn(f"OUT will have no gene/cell names: {err}", stacklevel=1)
    client = _fit_client(args)
    try:
        t0 = time.perf_counter()
        model = nmf(args.src, opt["k"], seed=opt["seed"], maxit=opt["maxit"], tol=opt["tol"],
                    L1=opt["L1"], L2=opt["L2"], solver=opt["solver"], dtype=opt["dtype"],
                    cache=opt["cache"], client=client, progress=not args.quiet,
                    checkpoint=opt["checkpoint"], checkpoint_every=opt["checkpoint_every"],
                    resume=True if args.resume else None, loss=opt["loss"],
                    dispersion=opt["dispersion"], tweedie_power=opt["tweedie_power"],
                    updates_per_pass=opt["updates_per_pass"], robust=opt["robust"],
                    zi=opt["zi"])
        seconds = time.perf_counter() - t0
        model.feature_names, model.sample_names = features, samples
        if fmt == "npz":
            save_npz(model, out)
        else:
            model.save(out, overwrite=True)
        written = [str(out)]
        if args.anndata:
            model.to_anndata(args.src, overwrite=args.overwrite)
            written.append(str(args.src))
        summary = {"iterations": model.iterations, "converged": model.converged,
                   "mse": model.mse, "seconds": round(seconds, 3), "out": str(out)}
        objective = ""
        if model.loss != "mse":
            summary.update(loss=model.loss, objective=model.objective)
            objective = f", {model.loss} objective {model.objective:.8g}"
        if args.anndata:
            summary["anndata"] = str(args.src)
        print(json.dumps(summary) if args.json else
              f"{model.iterations} iterations, MSE {model.mse:.6g}{objective}, {seconds:.2f} s "
              f"-> {' and '.join(written)}")
    finally:
        if client is not None:
            client.close()
    return 0


def _add_fit_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "fit", help="fit NMF to a matrix file, or the graph a SPEC.yaml describes",
        usage="%(prog)s SRC OUT --k K [options]\n       %(prog)s SPEC.yaml [--scheduler ADDRESS "
              "| --cluster {local,slurm,kubernetes}] [--resume] [--overwrite] [--json] [-q]",
        description="With SRC OUT: fit nmf() to SRC (read block by block inside the Dask "
                    "tasks) and save the model to OUT: a zarr store (NMFResult.save: W, d, H, "
                    "histories, settings, SRC's gene and cell names; NMFResult.load reads it) "
                    "or, for OUT.npz, the older .npz; --anndata also writes it into an .h5ad "
                    "SRC (obsm X_nmf, varm NMF_W, uns nmf). With a "
                    "SPEC.yaml: check the whole spec (inputs, layers, config, checkpoint, "
                    "output; docs/spec.md) before anything starts, fit its factorization graph "
                    "and write the result (zarr, with names; optionally into the AnnData "
                    "input).")
    p.add_argument("src", metavar="SRC|SPEC.yaml",
                   help="matrix (.spz, zarr, .h5ad, AnnData zarr, .mtx[.gz]) or a spec "
                        "(.yaml/.yml)")
    p.add_argument("out", nargs="?", default=None, metavar="OUT",
                   help="output zarr store (NMFResult.save, with SRC's names), or OUT.npz (W, "
                        "d, H, loss_history, settings, names); an existing OUT is replaced only "
                        "if it is an earlier fit's; not with a spec")
    g = p.add_argument_group("SRC OUT fits (a spec sets these in its layers and config)")
    g.add_argument("--k", type=int, default=None, help="rank (required)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--maxit", type=int, default=None, help="default 100")
    g.add_argument("--tol", type=float, default=None, help="default 1e-4")
    g.add_argument("--L1", type=float, default=None, help="default 0")
    g.add_argument("--L2", type=float, default=None, help="default 0")
    g.add_argument("--solver", choices=["auto", "cd", "cholesky"], default=None,
                   help="default auto")
    g.add_argument("--dtype", choices=["float32", "float64"], default=None,
                   help="default float32")
    g.add_argument("--cache", choices=["auto", "memory", "none"], default=None,
                   help="default auto")
    g.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="write the fit's state there every --checkpoint-every iterations")
    g.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="iterations between checkpoints (default 10)")
    g.add_argument("--loss", choices=["mse", "kl", "nb", "gp", "gamma", "inverse_gaussian",
                                       "tweedie"], default=None,
                   help="objective (default mse; the others by IRLS, docs/losses.md)")
    g.add_argument("--dispersion", choices=["per_row", "global", "none"], default=None,
                   help="NB size / GP theta: per row (default), shared, or fixed")
    g.add_argument("--tweedie-power", type=float, default=None, metavar="Q",
                   help="variance power of --loss tweedie (default 1.5)")
    g.add_argument("--robust", nargs="?", const=True, default=None, type=_robust_value,
                   metavar="DELTA|mae", help="Huber-robust fit (no value: delta 1.345; 'mae'; "
                   "or a delta > 0); any --loss, docs/losses.md")
    g.add_argument("--zi", choices=["none", "row", "col"], default=None,
                   help="zero inflation per row or column (--loss nb or gp; default none)")
    g.add_argument("--updates-per-pass", type=int, default=None, metavar="B",
                   help="W updates per pass over SRC (default 1: exact ALS; docs/online.md)")
    g.add_argument("--anndata", action="store_true",
                   help="also write the model into SRC, an .h5ad (obsm X_nmf, varm NMF_W, uns "
                        "nmf; in place, without reading X); existing keys need --overwrite")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="address of a running dask scheduler (default: local threads, or "
                            "the spec's scheduler/cluster)")
    where.add_argument("--cluster", choices=["local", "slurm", "kubernetes"], default=None,
                       help="start a cluster with dask_factor.cluster (with a spec: its "
                            "cluster.<type> options) and close it after the fit")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on --scheduler after this long (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint if it exists (a re-queued job runs the "
                        "same command); needs --seed (a spec: config.seed)")
    p.add_argument("--overwrite", action="store_true",
                   help="a spec's output (output.overwrite: true): replace an earlier result "
                        "and the AnnData keys; with --anndata: replace SRC's keys")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_fit)


# --------------------------------------------------------------------------- main

#: parser builders, in the order ``--help`` lists them
SUBCOMMANDS: list[Callable] = [_add_info_parser, _add_convert_parser, _add_simulate_parser,
                               _add_fit_parser, _add_demo_parser]


def build_parser() -> argparse.ArgumentParser:
    """The ``dask-factor`` argument parser with every registered subcommand.

    Examples
    --------
    >>> build_parser().parse_args(["info", "x.zarr"]).command
    'info'
    """
    parser = argparse.ArgumentParser(prog="dask-factor",
                                     description="Out-of-core NMF/SVD on Dask: tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


#: per subcommand: the library's argument names → the command's options (messages use these)
OPTION_NAMES: dict[str, dict[str, str]] = {
    "fit": {"k": "--k", "seed": "--seed", "maxit": "--maxit", "tol": "--tol", "L1": "--L1",
            "L2": "--L2", "solver": "--solver", "dtype": "--dtype", "cache": "--cache",
            "checkpoint": "--checkpoint", "checkpoint_every": "--checkpoint-every",
            "resume": "--resume", "overwrite": "--overwrite", "client": "--scheduler",
            "updates_per_pass": "--updates-per-pass", "robust": "--robust", "zi": "--zi"},
    "demo": {"k": "--k", "seed": "--seed", "maxit": "--maxit", "dataset": "--dataset"},
    "convert": {"value_type": "--value-type", "block_nnz": "--block-nnz", "dtype": "--dtype",
                "overwrite": "--overwrite", "format": "--format", "layer": "--layer",
                "raw": "--raw", "path": "DST", "layout": "--layout"},
    "simulate": {"n_samples": "--samples", "n_features": "--features", "k": "--k",
                 "density": "--density", "seed": "--seed", "block_cols": "--block-cols",
                 "value_type": "--value-type", "overwrite": "--overwrite", "format": "--format",
                 "path": "OUT", "layout": "--layout"},
}

#: options that are switches (``overwrite=True`` is ``--overwrite``)
SWITCHES = {"--overwrite", "--resume", "--raw"}


#: with a SPEC.yaml, the fit's arguments are fields of the spec
SPEC_NAMES = {"maxit": "config.maxit", "tol": "config.tol", "seed": "config.seed",
              "checkpoint": "checkpoint.path", "checkpoint_every": "checkpoint.every",
              "resume": "checkpoint.resume", "overwrite": "output.overwrite"}


def cli_words(message: str, command: str, *, spec: bool = False) -> str:
    """A library message in the words of ``dask-factor COMMAND``: argument names become the
    command's options (``overwrite=True`` → ``--overwrite``, ``k: …`` → ``--k: …``,
    ``set checkpoint=PATH too`` → ``set --checkpoint PATH too``, ``maxit=3`` → ``--maxit 3``);
    with ``spec`` (``fit SPEC.yaml``), the spec's fields (``config.maxit=3``).

    Examples
    --------
    >>> cli_words("k: expected 1 <= k <= min(m, n) = 50, got 500", "fit")
    '--k: expected 1 <= k <= min(m, n) = 50, got 500'
    >>> cli_words("path='x.zarr' exists (a directory); pass overwrite=True to replace it",
    ...           "convert")
    "DST='x.zarr' exists (a directory); pass --overwrite to replace it"
    >>> cli_words("checkpoint_every: set checkpoint=PATH too", "fit")
    '--checkpoint-every: set --checkpoint PATH too'
    >>> cli_words("stopped at maxit=3 (tol=0.0001); raise maxit or tol", "fit")
    'stopped at --maxit 3 (--tol 0.0001); raise --maxit or --tol'
    >>> cli_words("stopped at maxit=3 (tol=0.0001); raise maxit or tol", "fit", spec=True)
    'stopped at config.maxit=3 (config.tol=0.0001); raise config.maxit or config.tol'
    """
    import re

    if spec:
        for name, key in sorted(SPEC_NAMES.items(), key=lambda kv: -len(kv[0])):
            n = re.escape(name)
            message = re.sub(rf"(?<![\w.-]){n}=True\b", f"{key}: true", message)
            message = re.sub(rf"(?<![\w.-]){n}(?==|: )", key, message)
            message = re.sub(rf"\braise {n}\b", f"raise {key}", message)
            message = re.sub(rf"\b(raise \S+ or ){n}\b", rf"\g<1>{key}", message)
        return message
    names = OPTION_NAMES.get(command, {})
    for name, flag in sorted(names.items(), key=lambda kv: -len(kv[0])):
        n = re.escape(name)
        if flag in SWITCHES:
            message = re.sub(rf"(?<![\w.-]){n}=True\b", flag, message)
        if flag.startswith("--"):
            # NAME=PLACEHOLDER, NAME=<number>, NAME= (value left out)
            message = re.sub(rf"(?<![\w.-]){n}=(?=[A-Z]+\b|[-+]?\.?\d)", flag + " ", message)
            message = re.sub(rf"(?<![\w.-]){n}=(?=[\s),;]|$)", flag, message)
        else:  # a positional argument: path='x' → DST='x'
            message = re.sub(rf"(?<![\w.-]){n}=(?=['\"])", flag + "=", message)
        # the argument a message is about: "k: …", "n_samples must …", after "; " or a start
        message = re.sub(rf"(^|; ){n}(?=: | must )", rf"\g<1>{flag}", message)
    if command in ("fit", "demo"):
        message = message.replace("raise maxit or tol", "raise --maxit or --tol")
    return message


def _show_warning(command: str, spec: bool):
    def show(message, category, filename, lineno, file=None, line=None):
        out = sys.stderr if file is None else file
        try:
            out.write(f"dask-factor {command}: {category.__name__}: "
                      f"{cli_words(str(message), command, spec=spec)}\n")
        except (OSError, ValueError):  # a closed stream: as warnings itself does
            pass
    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dask-factor`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Errors the user can fix print one line in the command's words (its options, not the
    library's argument names; a spec's errors name the YAML field) and return 2; warnings
    print one line each.

    Examples
    --------
    >>> main(["info", "counts.zarr", "--json"])  # doctest: +SKIP
    0
    """
    import warnings

    from .spec import SpecError

    args = build_parser().parse_args(argv)
    spec = args.command == "fit" and is_spec(args.src)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning(args.command, spec)
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # here, where a closed pipe can still be handled
            return code
    except BrokenPipeError:
        # whoever read our output stopped (``dask-factor info x.spz | head``): stop quietly like
        # other command-line tools, and keep Python from failing again on its exit flush
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except SpecError as err:
        print(f"dask-factor {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError,
            NotADirectoryError, PermissionError, ImportError, ConnectionError, OSError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"dask-factor {args.command}: error: "
              f"{cli_words(str(msg), args.command, spec=spec)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
