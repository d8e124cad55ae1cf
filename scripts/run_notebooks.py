"""Re-execute the notebooks in ``notebooks/`` and save them with their outputs.

``python scripts/run_notebooks.py`` runs every notebook top to bottom in a fresh kernel (the
Python running this script; ``ipykernel``, ``nbclient`` and ``nbformat`` come with the ``test``
extra) at the published size and rewrites it in place, outputs included, so that it reads on
GitHub. Name notebooks to run only those (``python scripts/run_notebooks.py 06``: every notebook
whose file name contains ``06``). ``--scale 0.1`` sets ``DASK_FACTOR_NOTEBOOK_SCALE`` for the
notebooks that read it (the atlas walk-through; CI runs it at 0.1); ``--check`` executes without
saving (what ``tests/notebooks`` does, minus its checks).

Each notebook is written to a temporary file and renamed over the old one only when it ran
without an error. A cell's consecutive stream outputs are merged and carriage returns applied, so
a progress bar is stored in its final state rather than as every redraw. Figures are PNG at 72 dpi
(the notebooks set it); the script prints each notebook's size and warns above 400 KB.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SIZE_WARN = 400 * 1024


def _apply_carriage_returns(text: str) -> str:
    """Roughly what a terminal shows: on every line, the last text written after a carriage
    return (a redraw is never shorter than the bar it replaces, so no overlay is needed)."""
    lines = re.sub(r"\r+\n", "\n", text).split("\n")
    return "\n".join(next((part for part in reversed(line.split("\r")) if part), "")
                     for line in lines)


def coalesce_streams(nb) -> None:
    """Merge each cell's consecutive stdout/stderr outputs; keep a progress bar's last state."""
    for cell in nb.cells:
        merged = []
        for out in cell.get("outputs", []):
            if (out.get("output_type") == "stream" and merged
                    and merged[-1].get("output_type") == "stream"
                    and merged[-1]["name"] == out["name"]):
                merged[-1]["text"] += out["text"]
            else:
                merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                out["text"] = _apply_carriage_returns(out["text"])
        if "outputs" in cell:
            cell["outputs"] = [o for o in merged if o.get("output_type") != "stream"
                               or o["text"].strip()]


def execute(path: Path, timeout: int = 900):
    """Run a notebook in a fresh kernel (working directory: its folder); return the result."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in nb.cells:  # no volatile metadata in the stored notebook
        cell.metadata.pop("execution", None)
    coalesce_streams(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only notebooks whose name contains these")
    parser.add_argument("--scale", default=None,
                        help="DASK_FACTOR_NOTEBOOK_SCALE for the run (default: unset, the "
                             "published size)")
    parser.add_argument("--check", action="store_true", help="execute without saving")
    args = parser.parse_args(argv)

    import nbformat

    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if any(n in p.name for n in args.names)]
    if not paths:
        print(f"no notebook in {NOTEBOOKS} matches {args.names}", file=sys.stderr)
        return 2
    if args.scale is None:
        os.environ.pop("DASK_FACTOR_NOTEBOOK_SCALE", None)
    else:
        os.environ["DASK_FACTOR_NOTEBOOK_SCALE"] = str(args.scale)
    for path in paths:
        start = time.perf_counter()
        nb = execute(path)
        took = time.perf_counter() - start
        if args.check:
            print(f"{path.name}: ran in {took:.1f} s")
            continue
        tmp = path.with_name(f".{path.name}.tmp")
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
        size = path.stat().st_size
        note = "  (over 400 KB: smaller figures?)" if size > SIZE_WARN else ""
        print(f"{path.name}: ran in {took:.1f} s, {size / 1024:.0f} KB{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
