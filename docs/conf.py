"""Sphinx configuration of the dask_factor documentation site.

Build (the ``docs`` extra installed): ``python3 run.py docs``, or
``sphinx-build -W --keep-going -b html docs docs/_build/html``. Pages are MyST markdown; the API
reference is autodoc + numpydoc; ``notebooks/*.ipynb`` are shown with the outputs stored in them
(myst-nb, never executed here: CI executes them in tests/notebooks/). Nothing is fetched from the
network (no intersphinx).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # document this checkout, not an installed copy
os.environ.setdefault("MPLBACKEND", "Agg")

import dask_factor  # noqa: E402

project = "dask_factor"
author = "the dask_factor authors"
copyright = "the dask_factor authors, GPL-3.0-or-later"
release = version = dask_factor.__version__

extensions = [
    "myst_nb",  # MyST markdown pages and notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
root_doc = "index"

# MyST
myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# notebooks: stored with their outputs, never executed by the docs build
nb_execution_mode = "off"
nb_merge_streams = True

# API reference
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"dask_factor {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_show_sourcelink = False


def _copy_notebooks() -> None:
    """Copy ``notebooks/*.ipynb`` into ``docs/examples/`` with an index page (none yet: a note)."""
    src, dst = ROOT / "notebooks", HERE / "examples"
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir()
    books = sorted(src.glob("*.ipynb")) if src.is_dir() else []
    for nb in books:
        shutil.copy2(nb, dst / nb.name)
    lines = ["# Notebooks", "",
             "Worked examples, stored with their outputs (`notebooks/` in the repository; the test",
             "suite executes each one top to bottom, `tests/notebooks/`).", ""]
    if books:
        lines += ["```{toctree}", ":maxdepth: 1", "", *[nb.stem for nb in books], "```", ""]
    else:
        lines += ["No notebooks in this checkout yet.", ""]
    (dst / "index.md").write_text("\n".join(lines), encoding="utf-8")


_copy_notebooks()
