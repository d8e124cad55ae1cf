"""Optional dependencies: import them where they are needed, or say which extra to install.

Every import of a package that is not a core dependency goes through :func:`require`, which
returns the module or raises :class:`MissingExtra` (an ``ImportError``) naming the command to run,
``pip install "dask_factor[<extra>]"``, instead of a bare ``ModuleNotFoundError``.
:data:`EXTRAS` maps each optional top-level package to the extra of ``pyproject.toml`` that
installs it (a test keeps the two in step).
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["EXTRAS", "MissingExtra", "require", "install_hint"]

#: optional top-level package → the ``pyproject.toml`` extra that installs it
EXTRAS: dict[str, str] = {
    "anndata": "anndata",
    "h5py": "anndata",
    "sklearn": "sklearn",
    "matplotlib": "plot",
    "dask_jobqueue": "cluster",
    "dask_kubernetes": "cluster",
    "bokeh": "cluster",
    "scanpy": "scanpy",
}

#: the distribution name to show when it differs from the import name
DISTRIBUTIONS = {"sklearn": "scikit-learn", "dask_jobqueue": "dask-jobqueue",
                  "dask_kubernetes": "dask-kubernetes"}


class MissingExtra(ModuleNotFoundError):
    """An optional dependency is not installed; the message says what to install."""


def install_hint(module: str, what: str | None = None) -> str:
    """The sentence telling a user to install the extra that provides ``module``.

    Examples
    --------
    >>> install_hint("matplotlib.pyplot", "dask_factor.plot")
    'dask_factor.plot needs matplotlib: pip install "dask_factor[plot]"'
    """
    top = module.split(".")[0]
    extra = EXTRAS[top]
    dist = DISTRIBUTIONS.get(top, top)
    return f'{what or "this"} needs {dist}: pip install "dask_factor[{extra}]"'


def require(module: str, what: str | None = None) -> ModuleType:
    """Import ``module`` (an optional dependency, or a submodule of one) and return it.

    Parameters
    ----------
    module : str
        Dotted module name; its top-level package must be in :data:`EXTRAS`.
    what : str, optional
        What needs it, for the message (``"dask_factor.tl"``, ``"reading 'x.h5ad'"``).

    Returns
    -------
    module

    Raises
    ------
    MissingExtra
        The package is not installed (or cannot be imported): the message names
        ``pip install "dask_factor[<extra>]"`` and the original error is chained.

    Examples
    --------
    >>> require("matplotlib.colors", "a plot").__name__  # doctest: +SKIP
    'matplotlib.colors'
    """
    top = module.split(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"module: {module!r} is not an optional dependency (known: "
                         f"{', '.join(sorted(EXTRAS))})")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"{install_hint(module, what)} ({err})", name=top) from err
