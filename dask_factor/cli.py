"""The ``dask-factor`` command line.

Each subcommand has an ``_add_<name>_parser(subparsers)`` function that declares its arguments
and sets ``func`` to the function running it; :func:`main` builds the parser from the list
:data:`SUBCOMMANDS`, so a new subcommand (``fit``, ``demo``) is one more ``_add_*`` function and one
more list entry.  Errors the user can fix (a bad path or option) print one line and return 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import __version__

#: exit status for errors in the user's input
EXIT_USAGE = 2


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


def _fit_output(path: str) -> Path:
    """OUT of ``dask-factor fit``, checked before the fit starts (not after it).

    It may replace only the ``.npz`` of an earlier fit (a re-run of the same command), never
    another file or a directory; its directory must exist and be writable.
    """
    from .io.targets import check_target

    out = check_target(path, fmt="npz", overwrite=True, what="OUT")
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise PermissionError(f"OUT={path!r}: cannot write in the directory {str(out.parent)!r}")
    return out


def _run_fit(args) -> int:
    import json
    import time

    import numpy as np

    from .io.targets import replacing
    from .nmf import nmf

    out = _fit_output(args.out)
    client = None
    if args.scheduler:
        from .cluster import connect

        client = connect(args.scheduler, timeout=args.connect_timeout)
    try:
        t0 = time.perf_counter()
        model = nmf(args.src, args.k, seed=args.seed, maxit=args.maxit, tol=args.tol,
                    L1=args.L1, L2=args.L2, solver=args.solver, dtype=args.dtype,
                    cache=args.cache, client=client, progress=not args.quiet,
                    checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
                    resume=True if args.resume else None)
        seconds = time.perf_counter() - t0
        with replacing(out, fmt="npz", overwrite=True, what="OUT") as tmp, \
                open(tmp, "wb") as fh:  # a file handle: numpy adds no suffix
            np.savez(fh, W=model.W, d=model.d, H=model.H,
                     loss_history=np.asarray(model.loss_history),
                     settings=json.dumps(model.settings, default=str))
        summary = {"iterations": model.iterations, "converged": model.converged,
                   "mse": model.mse, "seconds": round(seconds, 3), "out": str(out)}
        print(json.dumps(summary) if args.json else
              f"{model.iterations} iterations, MSE {model.mse:.6g}, {seconds:.2f} s -> {out}")
    finally:
        if client is not None:
            client.close()
    return 0


def _add_fit_parser(subparsers) -> None:
    p = subparsers.add_parser("fit", help="fit NMF to a matrix file",
                              description="Fit nmf() to SRC (read block by block inside the "
                                          "Dask tasks) and save W, d, H and the loss history "
                                          "to OUT (.npz).")
    p.add_argument("src", help="matrix (.spz, zarr, .h5ad, AnnData zarr, .mtx[.gz])")
    p.add_argument("out", help="output .npz with W (m × k), d, H (k × n), loss_history (an "
                               "existing OUT is replaced only if it is an earlier fit's .npz)")
    p.add_argument("--k", type=int, required=True, help="rank")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--maxit", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-4)
    p.add_argument("--L1", type=float, default=0.0)
    p.add_argument("--L2", type=float, default=0.0)
    p.add_argument("--solver", choices=["auto", "cd", "cholesky"], default="auto")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--cache", choices=["auto", "memory", "none"], default="auto")
    p.add_argument("--scheduler", default=None,
                   help="address of a running dask scheduler (default: local threads)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="give up on --scheduler after this long (default 10)")
    p.add_argument("--checkpoint", default=None, metavar="PATH",
                   help="write the fit's state there every --checkpoint-every iterations")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="iterations between checkpoints (default 10)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (a re-queued job runs the same "
                        "command); needs --seed")
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dask-factor`` with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Examples
    --------
    >>> main(["info", "counts.zarr", "--json"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError,
            NotADirectoryError, PermissionError, ImportError, ConnectionError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"dask-factor {args.command}: error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
