"""One progress bar for every iterative fit: ``nmf(progress=True)``, ``graph.fit(progress=True)``
(or ``factor_config(verbose=True)``) and ``dask-factor fit``.

The bar is ``tqdm.auto``'s: a text bar in a terminal (on stderr), a widget in a Jupyter notebook.
It shows the iteration out of ``maxit``, the loss, the relative change of the loss and the time
left if the fit ran to ``maxit`` (an upper bound: most fits converge earlier)::

    nmf k=10:  24%|██▍       | iteration 24/100 [00:03, ETA 00:09, loss=0.0215, rel=3.12e-04]

A fit that stops early (converged, cross-validation patience, ``on_iteration`` returned True)
ends its bar at the iteration it stopped. A resumed fit's bar starts at the checkpoint's
iteration and its ETA counts only the iterations run since. Without ``progress`` nothing is
imported or printed.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BAR_FORMAT", "IterationBar", "iteration_progress", "format_rel"]

#: what the bar shows (tqdm's fields; the postfix holds the loss and the relative change)
BAR_FORMAT = ("{desc}: {percentage:3.0f}%|{bar}| iteration {n_fmt}/{total_fmt} "
              "[{elapsed}, ETA {remaining}{postfix}]")

Callback = Callable[[int, float, float], Any]


def format_rel(rel: float) -> str:
    """The relative change as the bar shows it (``-`` before there is one).

    Examples
    --------
    >>> format_rel(float("nan")), format_rel(0.000312)
    ('-', '3.12e-04')
    """
    return "-" if rel is None or not math.isfinite(rel) else f"{rel:.2e}"


class IterationBar:
    """A tqdm bar over the iterations of one fit.

    Parameters
    ----------
    total : int
        ``maxit`` (iterations, or sweeps of a graph).
    desc : str
        What is fitted (``"nmf k=10"``, ``"factor_net (2 layers)"``).
    loss_name : str, default "loss"
        The postfix label of the value reported each iteration (``"test_loss"`` for a
        cross-validated fit, whose score is the held-out MSE).
    file : file-like, optional
        Where a text bar is written (default: stderr).
    mininterval : float, default 0.1
        Seconds between redraws (tqdm's; the last state is always drawn).

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> bar = IterationBar(4, "nmf k=3", file=out)
    >>> for it, loss, rel in [(1, 0.5, float("nan")), (2, 0.4, 0.2), (3, 0.39, 0.025)]:
    ...     _ = bar.update(it, loss, rel)
    >>> bar.close()
    >>> last = out.getvalue().split("\\r")[-1]
    >>> "iteration 3/3" in last, "loss=0.39" in last, "rel=2.50e-02" in last, "ETA" in last
    (True, True, True, True)
    """

    def __init__(self, total: int, desc: str, *, loss_name: str = "loss", file=None,
                 mininterval: float = 0.1):
        from tqdm.auto import tqdm

        self.loss_name = loss_name
        self.bar = tqdm(total=int(total), desc=desc, unit="it", leave=True, file=file,
                        bar_format=BAR_FORMAT, dynamic_ncols=True, mininterval=mininterval)
        self._started = False

    def update(self, it: int, loss: float, rel: float) -> None:
        """Show iteration ``it`` (1-based, counted over the whole fit) and its loss."""
        bar = self.bar
        if not self._started:
            self._started = True
            if it > 1:  # a resumed fit: start at the checkpoint, time only what runs now
                bar.initial = bar.n = bar.last_print_n = it - 1
                bar.start_t = bar.last_print_t = time.time()
        bar.set_postfix_str(f"{self.loss_name}={float(loss):.6g}, rel={format_rel(rel)}",
                            refresh=False)
        bar.update(max(int(it) - bar.n, 0))

    def close(self, finished: bool = True) -> None:
        """End the bar: where the fit stopped (100 %, no time left) when it ``finished``, as it
        is after an error (a notebook shows it red)."""
        bar = self.bar
        if finished and bar.n < (bar.total or 0):
            bar.total = bar.n
            container = getattr(bar, "container", None)  # tqdm.notebook's widget
            if container is not None:
                container.children[1].max = bar.n
            bar.refresh()
        bar.close()


@contextlib.contextmanager
def iteration_progress(enabled: bool, total: int, desc: str,
                       on_iteration: Callback | None = None, *, loss_name: str = "loss",
                       file=None) -> Iterator[Callback | None]:
    """The ``on_iteration`` callback to hand to a fit: ``on_iteration`` itself, also driving a
    bar when ``enabled``; the bar is closed when the block ends (also on an error).

    Parameters
    ----------
    enabled : bool
        Show a bar; False yields ``on_iteration`` unchanged (nothing is shown).
    total, desc, loss_name, file
        As for :class:`IterationBar`.
    on_iteration : callable(iteration, loss, rel_change), optional
        The user's callback, called after the bar is updated; its return value (True: stop)
        is passed on.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with iteration_progress(True, 10, "fit", lambda it, loss, rel: it >= 2,
    ...                         file=out) as cb:
    ...     stops = [cb(1, 1.0, float("nan")), cb(2, 0.5, 0.5)]
    >>> stops, "iteration 2/2" in out.getvalue()
    ([False, True], True)
    >>> with iteration_progress(False, 10, "fit") as cb:
    ...     cb is None
    True
    """
    if not enabled:
        yield on_iteration
        return
    bar = IterationBar(total, desc, loss_name=loss_name, file=file)

    def callback(it, loss, rel):
        bar.update(it, loss, rel)
        return bool(on_iteration(it, loss, rel)) if on_iteration is not None else False

    try:
        yield callback
    except BaseException:
        bar.close(finished=False)
        raise
    bar.close()
