"""The one iteration driver: every iterative fit (plain ALS, masked/CV, graph sweeps) runs here.

A *fit kind* is a small object that says what one step computes; the driver owns everything the
kinds would otherwise repeat::

    kind.setup(ctx)                  static data (column blocks, targets) placed where tasks run
    kind.initial_state()             slot -> value (small packages) or list of per-block values
    kind.build(g, keys, step)        one step's tasks; returns the new state's keys and the keys
                                     of the statistics to fetch
    kind.record(step, stats)         the step's score (or None for an unscored warm-up step)
    kind.model(prev, new)            which slots make the model the step scored (default: new)

per step      graph = kind.build(...)            one task per column block, the one fixed-order
                                                  tree (:meth:`Step.reduce`), the factor update
              run it, keep the new state where it was computed, fetch the statistics
              convergence (relative change < tol for 5 steps), best-iteration tracking and
              early stopping (CV), ``on_iteration``/progress, ``ConvergenceWarning``
              snapshot every few steps (a cluster), checkpoint every ``checkpoint_every`` steps

on a cluster  each snapshot gathers the state to the client and re-registers it as plain data:
              the scheduler forgets the history (its task count stays flat), and between two
              snapshots Dask itself recomputes whatever a lost worker held. When a root is lost
              (scattered data), the step fails; the driver restores the last snapshot, re-places
              the static data and replays the steps since: the result is the undisturbed fit's,
              bit for bit, for every solver and every fit kind. It keeps recovering while steps
              complete, and gives up with :class:`WorkerLostError` naming the workers otherwise.

              With the blocks held in memory, step t + 1 is started before step t's statistics
              are fetched (its graph needs only step t's futures), so the client's round trip
              overlaps the tasks; when step t ends the fit (convergence, a callback, early
              stopping) the step started ahead is dropped, and no step is started ahead of a
              snapshot or checkpoint. Blocks read from a source each pass are not started
              ahead (their reads would all start at once and hold the matrix in memory).

on resume     the snapshot comes from a checkpoint on disk (:mod:`.checkpoint`), verified against
              the kind's fingerprint (input, rank, graph, settings).

Task keys read as what they do on the dashboard: ``{prefix}-{label}-{token}-{step}-{index}``
(e.g. ``nmf-block-solve``, ``nmf-reduce``, ``nmf-w-update``).
"""

from __future__ import annotations

import math
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .blocks import computes, is_read
from .executor import Executor, WorkerLostError, is_worker_loss, local_blas_limit

#: partials of this many blocks are summed per reduction task (in block order)
REDUCE_FANIN = 8
#: consecutive steps the relative change of the score must stay under ``tol`` (RcppML's patience)
CONVERGENCE_PATIENCE = 5
#: on a cluster, the state is gathered and re-registered without history every this many steps
SNAPSHOT_EVERY = 8
#: failed attempts in a row without completing a new step before recovery gives up
MAX_STALLED_RECOVERIES = 4


def relative_change(previous: float, current: float) -> float:
    """The driver's convergence measure between two successive scores:
    ``|previous − current| / (|previous| + 1e-15)``.

    Examples
    --------
    >>> round(relative_change(2.0, 1.5), 12)
    0.25
    """
    return abs(previous - current) / (abs(previous) + 1e-15)


def converged_history(history, tol: float) -> bool:
    """Whether a score history meets the driver's rule: the relative change stayed below
    ``tol`` for the last :data:`CONVERGENCE_PATIENCE` steps (for results saved without the flag).

    Examples
    --------
    >>> converged_history([10.0, 5.0, 4.9, 4.9, 4.9, 4.9, 4.9, 4.9], 1e-3)
    True
    >>> converged_history([10.0, 5.0, 4.9], 1e-3)
    False
    """
    rels = [relative_change(a, b) for a, b in zip(history, history[1:])]
    return len(rels) >= CONVERGENCE_PATIENCE and all(
        r < tol for r in rels[-CONVERGENCE_PATIENCE:])


class _ConvergenceWarning(UserWarning):
    """A fit stopped at ``maxit`` before its tolerance was met (without scikit-learn)."""


def _convergence_warning() -> type[Warning]:
    """scikit-learn's ``ConvergenceWarning`` when it is installed (so filters users set for it
    apply to ours too), else our own. Resolved lazily: workers unpickle this module's task
    functions and must not pay for importing scikit-learn."""
    try:
        from sklearn.exceptions import ConvergenceWarning
    except ImportError:  # pragma: no cover - scikit-learn is optional
        return _ConvergenceWarning
    return ConvergenceWarning


def __getattr__(name: str):
    if name == "ConvergenceWarning":
        return _convergence_warning()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------
# building one step's graph


def tree_schedule(n: int, split_every: int = REDUCE_FANIN) -> list[list[list[int]]]:
    """Fixed-order reduction schedule: levels of consecutive groups of at most ``split_every``."""
    levels = []
    count = n
    while count > 1:
        groups = [list(range(i, min(i + split_every, count)))
                  for i in range(0, count, split_every)]
        levels.append(groups)
        count = len(groups)
    return levels


class BlockOutput(tuple):
    """What a block task returns: ``(value kept with the block, partials for the reduction)``.

    The reduction reads the partials straight from the block task (no extra task per block);
    :func:`kept_value` picks the value to keep.
    """


def kept_value(out):
    return out[0]


def stats_of(pack):
    """The statistics a package carries (fetched to the client after each step)."""
    return pack.stats


def sum_partials(*parts):
    """The one combine: sum partials of equal structure (tuples/lists of arrays and numbers) in
    the order given; a :class:`BlockOutput` contributes its partials."""
    return _sum([p[1] if isinstance(p, BlockOutput) else p for p in parts])


def _sum(items):
    head = items[0]
    if isinstance(head, (tuple, list)):
        summed = [_sum([it[j] for it in items]) for j in range(len(head))]
        return tuple(summed) if isinstance(head, tuple) else summed
    if isinstance(head, np.ndarray):
        out = np.array(head, dtype=np.float64, copy=True)
        for it in items[1:]:
            if np.shape(it) == out.shape:
                out += it  # in place: the same additions in the same order, no temporaries
            else:
                out = out + it
        return out
    out = head
    for it in items[1:]:
        out = out + it
    return out


def _combine_then(combine: Callable, n: int, *args):
    """``func(combine(*args[:n]), *rest)`` with ``args[n:] = (func, *rest)``: a reduction's root
    task followed by the step's next task (:meth:`Step.reduce`'s ``then``)."""
    return args[n](combine(*args[:n]), *args[n + 1:])


class Step:
    """The graph of one step under construction (keys, tasks and the one reduction)."""

    def __init__(self, prefix: str, token: str, step: int, base: dict,
                 owners: dict[str, str] | None = None):
        self.prefix = prefix
        self.token = token
        self.step = step
        self.dsk: dict = dict(base)
        self.n_base = len(base)
        #: static key -> the worker holding it (blocks placed by ``Executor.scatter_blocks``)
        self.owners = owners or {}

    def key(self, label: str, *index) -> str:
        tail = "".join(f"-{i}" for i in index)
        return f"{self.prefix}-{label}-{self.token}-{self.step}{tail}"

    def task(self, label: str, index: tuple, func: Callable, *args) -> str:
        """Add ``func(*args)`` (arguments may name keys) under a readable key; return the key."""
        key = self.key(label, *index)
        self.dsk[key] = (func, *args)
        return key

    def reduce(self, parts: list[str], combine: Callable = sum_partials, label: str = "reduce",
               *, split_every: int = REDUCE_FANIN, then: tuple | None = None,
               then_label: str | None = None) -> str:
        """Sum ``parts`` with ``combine`` in a fixed-order tree (the same for any scheduler).

        Level-0 groups always get a task, so ``combine`` sees every block output (even a lone
        one, which lets it pick the partials out of a block task's result); later singletons
        pass through. Returns the root's key.

        ``then = (func, *args)``: the root task returns ``func(total, *args)`` instead of the
        total (the step's next task runs where the sum ends, one scheduler round trip fewer),
        under ``then_label`` (default ``label``: the name the dashboard shows).

        On a cluster whose blocks lie in contiguous runs per worker, a level-0 group of
        :func:`sum_partials` that spans workers is summed as a chain: the first worker's run,
        then that sum plus the next worker's run, and so on. A left fold cut anywhere is the
        same sequence of additions, so the result is bit for bit the one-task sum; what moves
        between workers is one partial per run boundary instead of one per block.
        """
        sched = tree_schedule(len(parts), split_every)
        last = len(sched) - 1

        def task(index, items, root):
            if root and then is not None:
                return self.task(then_label or label, index, _combine_then, combine, len(items),
                                 *items, *then)
            return self.task(label, index, combine, *items)

        if not sched:
            return task((0, 0), [parts[0]], True)
        for lvl, groups in enumerate(sched):
            nxt = []
            for gi, g in enumerate(groups):
                if len(g) == 1 and lvl > 0:
                    nxt.append(parts[g[0]])
                    continue
                items = [parts[i] for i in g]
                runs = self._owner_runs(items) if lvl == 0 and combine is sum_partials else []
                root = lvl == last
                if len(runs) <= 1:
                    nxt.append(task((lvl, gi), items, root))
                    continue
                acc = task((lvl, gi, 0), runs[0], False)
                for j, run in enumerate(runs[1:], 1):
                    acc = task((lvl, gi, j), [acc, *run], root and j == len(runs) - 1)
                nxt.append(acc)
            parts = nxt
        return parts[0]

    def _owner_runs(self, items: list[str]) -> list[list[str]]:
        """``items`` cut where the worker holding their block changes (one run if unknown)."""
        if not self.owners:
            return [items]
        runs: list[list[str]] = []
        last = None
        for it in items:
            w = self._owner(it)
            if runs and (w is None or w == last):
                runs[-1].append(it)
            else:
                runs.append([it])
                last = w if w is not None else last
        return runs

    def placement(self) -> dict[str, str]:
        """Tasks that read a placed block -> that block's worker (where they should run)."""
        if not self.owners:
            return {}
        out = {}
        for key in list(self.dsk)[self.n_base:]:
            w = self._owner(key)
            if w is not None:
                out[key] = w
        return out

    def _owner(self, key: str) -> str | None:
        """The worker of the first placed block a task reads (its direct arguments)."""
        task = self.dsk.get(key)
        if not isinstance(task, tuple):
            return None
        for a in task[1:]:
            for x in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(x, str) and x in self.owners:
                    return self.owners[x]
        return None

    def with_reads_inlined(self, reads: set[str]) -> dict:
        """The step's graph with each block read (``reads``: :func:`inlinable_reads`) that one
        task of the step uses run inside that task: a task and a scheduler round trip fewer
        per block and pass, and the block is never held or moved on its own."""
        if not reads:
            return self.dsk
        uses: dict[str, int] = {}  # every mention of a read, nested ones included
        direct: set[str] = set()  # reads that are some task's own argument (replaceable)

        def count(x):
            if isinstance(x, str):
                if x in reads:
                    uses[x] = uses.get(x, 0) + 1
            elif isinstance(x, (tuple, list)):
                for y in x:
                    count(y)

        step_keys = list(self.dsk)[self.n_base:]
        for key in step_keys:
            t = self.dsk[key]
            count(t)
            if isinstance(t, tuple):
                direct.update(a for a in t[1:] if isinstance(a, str) and a in reads)
        once = {k for k in direct if uses[k] == 1}
        out = {k: v for k, v in self.dsk.items() if k not in once}
        for key in step_keys:
            t = out[key]
            if isinstance(t, tuple) and any(isinstance(a, str) and a in once for a in t[1:]):
                out[key] = (t[0], *(self.dsk[a] if isinstance(a, str) and a in once else a
                                    for a in t[1:]))
        return out

    @property
    def size(self) -> int:
        return len(self.dsk) - self.n_base


def inlinable_reads(static: dict) -> set[str]:
    """The keys of a static graph's block reads (tasks run each pass, :func:`computes`) that no
    other static task depends on: a step may run them inside their one user."""
    import dask.core

    reads = {k for k, v in static.items() if is_read(v)}
    if reads:
        for k in list(static):
            reads -= dask.core.get_dependencies(static, k)
    return reads


@dataclass
class Built:
    """What :meth:`FitKind.build` returns: the new state's keys and the statistics' keys."""

    state: dict[str, Any]  # slot -> key, or list of keys (None entries allowed)
    stats: list[str]


@dataclass
class Report:
    """A scored step: ``score`` drives best-model selection; ``parts`` the relative change;
    ``loss`` (default: the score) is the training loss, which must stay finite."""

    score: float
    parts: tuple[float, ...] = ()
    loss: float | None = None


class NonFiniteModelError(FloatingPointError):
    """A fit produced a non-finite factor or loss (it stops; nothing NaN is returned)."""


class Context:
    """Where static data go: :meth:`put` places a value (scattered once on a cluster)."""

    def __init__(self, ex: Executor, token: str, prefix: str):
        self.ex = ex
        self.token = token
        self.prefix = prefix
        self.static: dict = {}

    def put(self, label: str, value: Any) -> str:
        key = f"{self.prefix}-{label}-{self.token}"
        self.static[key] = self.ex.scatter(key, value) if self.ex.distributed else value
        return key

    def blocks(self, bm, *, delta: bool = False) -> list[str]:
        """The keys of a blocked matrix's column blocks (their read tasks join the static graph);
        ``delta``: the kind's tasks also take blocks as a scan-layout store holds them
        (:func:`~.blocks.block_graph`)."""
        from .blocks import block_graph

        dsk, keys = block_graph(bm, self.ex, tag=self.token, delta=delta)
        self.static.update(dsk)
        return keys


class FitKind:
    """Base of the fit kinds (see the module docstring for the protocol)."""

    prefix = "fit"
    #: unscored steps before the scored ones (graph warm-up)
    warmup_steps = 0
    #: select the step with the lowest score (CV) instead of the last one
    select_best = False
    #: with ``select_best``: stop after this many steps without a new best
    patience: int | None = None
    #: ``build`` reads only the state and step number it is given (never what ``record`` saw), so
    #: on a cluster the driver may start step t + 1 before step t's statistics have reached the
    #: client (every kind here; a kind whose steps depend on the recorded scores sets False)
    lookahead = True

    def setup(self, ctx: Context) -> None:
        raise NotImplementedError

    def initial_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def build(self, g: Step, state: dict[str, Any], step: int) -> Built:
        raise NotImplementedError

    def record(self, step: int, stats: list) -> Report | None:
        raise NotImplementedError

    def model(self, prev: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        return new

    def fingerprint(self) -> dict:
        """What a checkpoint must match to be resumed (input, rank, graph, settings)."""
        return {}


# --------------------------------------------------------------------------------------------
# the loop


@dataclass
class DriveResult:
    """What a driven fit leaves: the final (or best) state's handles and the histories."""

    state: dict[str, Any]  # slot -> handle(s) of the last step
    best: dict[str, Any] | None  # the best step's model (select_best)
    stats: list  # per step, the fetched statistics
    scores: list[float]  # per scored step
    rels: list[float]  # relative change per scored step (from the second on)
    iterations: int  # scored steps run
    best_iter: int  # 1-based, among scored steps
    converged: bool
    seconds: float
    graph_sizes: list[int] = field(default_factory=list)
    recoveries: int = 0


@dataclass
class _Progress:
    """The driver's bookkeeping, recomputed from the per-step statistics (so it can be restored)."""

    stats: list = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    parts: list[tuple] = field(default_factory=list)
    rels: list[float] = field(default_factory=list)
    below: int = 0
    best_score: float = math.inf
    best_iter: int = 0
    since_best: int = 0

    def add(self, stats, report: Report | None, tol: float) -> float:
        self.stats.append(stats)
        if report is None:
            return math.nan
        rel = math.nan
        parts = tuple(report.parts) or (report.score,)
        if self.parts:
            prev = self.parts[-1]
            rel = max(relative_change(a, b) for a, b in zip(prev, parts))
            self.rels.append(rel)
            self.below = self.below + 1 if rel < tol else 0
        self.parts.append(parts)
        self.scores.append(float(report.score))
        if report.score < self.best_score or not self.best_iter:
            self.best_score = float(report.score)
            self.best_iter = len(self.scores)
            self.since_best = 0
        else:
            self.since_best += 1
        return rel


def _flat_keys(tree: dict[str, Any]) -> list[str]:
    out = []
    for v in tree.values():
        if isinstance(v, list):
            out.extend(k for k in v if k is not None)
        elif v is not None:
            out.append(v)
    return out


def _map(tree: dict[str, Any], f: Callable) -> dict[str, Any]:
    return {s: ([None if x is None else f(x) for x in v] if isinstance(v, list)
                else (None if v is None else f(v))) for s, v in tree.items()}


class _Run:
    """One driven fit: the kind, where it runs, its held state and its last snapshot."""

    def __init__(self, kind: FitKind, ex: Executor):
        self.kind = kind
        self.ex = ex
        self.static: dict = {}
        self.token = ""
        self.state: dict[str, Any] = {}  # slot -> handle(s)
        self.best: dict[str, Any] | None = None
        self.sizes: list[int] = []
        self._resetup()

    def _resetup(self):
        """(Re-)place the static data under fresh keys (after a loss the old ones may linger)."""
        self.token = uuid.uuid4().hex[:8]
        ctx = Context(self.ex, self.token, self.kind.prefix)
        self.kind.setup(ctx)
        self.static = ctx.static
        self.reads = inlinable_reads(self.static)
        self.owners = {k: w for k, v in self.static.items()
                       if (w := self.ex.owner_of(v, k)) is not None}

    def place(self, *trees: dict[str, Any]) -> list[dict[str, Any]]:
        """Client-side values -> handles where the tasks run (plain data, no history).

        A value shared by several trees (the best model is often the current state) is placed
        once.
        """
        if not self.ex.distributed:
            return [dict(t) for t in trees]
        uniq: dict[int, Any] = {}
        for t in trees:
            for v in t.values():
                for x in (v if isinstance(v, list) else [v]):
                    if x is not None:
                        uniq.setdefault(id(x), x)
        handles = dict(zip(uniq, self.ex.scatter_many(list(uniq.values()))))
        return [_map(t, lambda x: handles[id(x)]) for t in trees]

    def restore(self, state: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Hold client-side ``state`` (and ``best``) where the tasks run. No other reference to
        the placed handles may survive: the history is only forgotten once they are released."""
        placed = self.place(state, best or {})
        self.state = placed[0]
        self.best = placed[1] if best else None

    def values(self, trees: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Handles -> client-side values (gathered once for all trees)."""
        if not self.ex.distributed:
            return [dict(t) for t in trees]
        handles = []
        for t in trees:
            for v in t.values():
                handles.extend(x for x in (v if isinstance(v, list) else [v]) if x is not None)
        uniq = {id(h): h for h in handles}
        vals = dict(zip(uniq, self.ex.gather(list(uniq.values()))))
        return [_map(t, lambda h: vals[id(h)]) for t in trees]

    def submit(self, step: int) -> tuple[list, dict, dict]:
        """Start one step from the held state, which becomes the step's new state.

        Returns (statistics handles for ``ex.fetch``, new state handles, previous state
        handles). On a cluster nothing is waited for; locally the step has run.
        """
        g = Step(self.kind.prefix, self.token, step, self.static, self.owners)
        keys = _map(self.state, lambda h: _handle_key(h, g))
        built = self.kind.build(g, keys, step)
        keep = _flat_keys(built.state)
        kept, stats = self.ex.submit(g.with_reads_inlined(self.reads), keep, built.stats,
                                     g.placement())
        self.sizes.append(g.size)
        prev = self.state
        self.state = _map(built.state, lambda k: kept[k])
        return stats, self.state, prev

    def withdraw(self, ahead: tuple[list, dict, dict]) -> None:
        """Forget a step started ahead (:meth:`submit`): the held state is its previous one
        again; its tasks are released with its handles."""
        self.state = ahead[2]
        self.sizes.pop()


def _handle_key(h, g: Step) -> str:
    """Name a held handle inside a step's graph (values locally, futures on a cluster)."""
    key = f"held-{id(h):x}"
    g.dsk[key] = h
    g.n_base += 1
    return key


def drive(
    kind: FitKind,
    *,
    maxit: int,
    tol: float,
    client=None,
    on_iteration: Callable[[int, float, float], Any] | None = None,
    checkpoint: Any = None,
    checkpoint_every: int | None = None,
    resume: Any = None,
    snapshot_every: int = SNAPSHOT_EVERY,
    name: str = "fit",
) -> DriveResult:
    """Run ``kind`` until convergence, early stop, a callback's stop or ``maxit`` scored steps.

    Parameters
    ----------
    kind : FitKind
    maxit : int
        Scored steps at most (warm-up steps come on top).
    tol : float
        Convergence: the relative change of every component of the score stays below ``tol`` for
        :data:`CONVERGENCE_PATIENCE` consecutive steps. ``tol=0`` runs ``maxit`` steps.
    client : distributed.Client, optional
        Default: the current Dask scheduler (threads, or the active client).
    on_iteration : callable(iteration, score, rel) -> bool, optional
        Called once per scored step (never again for a step replayed after a lost worker);
        returning True stops the fit.
    checkpoint : path, optional
        Write the state there every ``checkpoint_every`` steps (atomic zarr, see
        :mod:`.checkpoint`).
    resume : path, optional
        Continue from this checkpoint (verified against ``kind.fingerprint()``).
    snapshot_every : int
        On a cluster: steps between in-memory snapshots (recovery points that also cut the
        scheduler's history).
    name : str
        Used in warnings and errors (``"nmf"``, ``"factor_net"``).

    Returns
    -------
    DriveResult
    """
    ex = Executor(client)
    with local_blas_limit(ex):
        return _drive(kind, ex, maxit=maxit, tol=tol, on_iteration=on_iteration,
                      checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume,
                      snapshot_every=max(1, int(snapshot_every)), name=name)


def _drive(kind, ex, *, maxit, tol, on_iteration, checkpoint, checkpoint_every, resume,
           snapshot_every, name):
    from . import checkpoint as ckpt

    t0 = time.perf_counter()
    run = placing(ex, name, lambda: _Run(kind, ex))
    total = kind.warmup_steps + maxit
    # on a cluster, step t + 1 is started before step t's statistics are fetched (kinds whose
    # next step does not depend on what the driver records); the fit is the same, step for step.
    # Not when the blocks are read each pass: reads left as tasks of their own would start at
    # once and hold the whole matrix in the workers' memory (reads run inside their block solve,
    # Step.with_reads_inlined, wait for the step's W; look-ahead for those is not tried yet)
    lookahead = ex.distributed and kind.lookahead and not computes(run.static)
    prog = _Progress()
    if resume is not None:
        snap = ckpt.load(resume, kind.fingerprint(), name=name)
        done, state_v, best_v = snap.step, snap.state, snap.best or {}
        for st in snap.stats:
            prog.add(st, kind.record(len(prog.stats) + 1, st), tol)
    else:
        done, state_v, best_v = 0, kind.initial_state(), {}
    placing(ex, name, lambda: run.restore(state_v, best_v))
    base = (done, state_v, best_v, list(prog.stats))  # the last recovery point (client side)
    reported = done  # steps whose callback has run (a replay does not call it again)
    highest = done
    stalled = 0
    recoveries = 0
    converged = False
    step = done
    workers = _workers(ex)

    def recover(exc: BaseException) -> int:
        """Restore the last snapshot after a lost worker; return the step to go on from."""
        nonlocal stalled, recoveries, prog, workers
        now = _workers(ex)
        lost = sorted(workers - now) or ["(unknown: the scheduler had replaced them)"]
        stalled += 1
        if stalled > MAX_STALLED_RECOVERIES:
            raise WorkerLostError(
                f"{name}: lost workers {', '.join(lost)} and could not complete step "
                f"{highest + 1} in {MAX_STALLED_RECOVERIES} attempts; the cluster keeps "
                f"losing the data (last error: {exc!r})") from exc
        recoveries += 1
        wait_for_a_worker(ex, name, lost, exc)
        b_step, b_state, b_best, b_stats = base
        warnings.warn(
            f"{name}: lost data on the cluster at step {highest + 1} (workers "
            f"{', '.join(lost)}; {type(exc).__name__}); resuming exactly from the snapshot "
            f"of step {b_step}", RuntimeWarning, stacklevel=user_stacklevel())
        def replace():  # fresh keys for the static data, then the snapshot's state
            run._resetup()
            run.restore(b_state, b_best)

        placing(ex, name, replace)
        prog = _Progress()
        for i, st in enumerate(b_stats):
            prog.add(st, kind.record(i + 1, st), tol)
        workers = now
        return b_step

    ahead = None  # the next step, started before this one's statistics came back
    while step < total:
        try:
            stats_h, new, prev = ahead if ahead is not None else run.submit(step + 1)
            ahead = None
            if lookahead and step + 2 <= total and not _gathers_after(
                    step + 1, snapshot_every, checkpoint, checkpoint_every):
                ahead = _start_ahead(run, step + 2)  # hides the round trip behind this step
            stats = ex.fetch(stats_h)
        except Exception as exc:
            if not (ex.distributed and is_worker_loss(exc)):
                raise
            ahead = None
            step = recover(exc)
            continue
        step += 1
        if step > highest:
            highest = step
            stalled = 0
        report = kind.record(step, stats)
        if report is not None:
            loss = report.score if report.loss is None else report.loss
            if not math.isfinite(loss) or not all(math.isfinite(x) for x in report.parts):
                raise NonFiniteModelError(
                    f"{name}: the model became non-finite at iteration {len(prog.scores) + 1} "
                    f"(training loss {loss!r}); the input's values or their products overflow "
                    f"the working precision: rescale A, or use dtype='float64'")
        rel = prog.add(stats, report, tol)
        if report is not None and (not kind.select_best or prog.best_iter == len(prog.scores)):
            run.best = kind.model(prev, new)  # the model this step scored
        stop = False
        if report is not None and step > reported:
            reported = step
            if on_iteration is not None:
                stop = bool(on_iteration(len(prog.scores), report.score, rel))
        if report is not None and prog.below >= CONVERGENCE_PATIENCE:
            converged = True
        early = (report is not None and kind.select_best and kind.patience is not None
                 and prog.since_best >= kind.patience)
        finished = converged or early or stop or step >= total
        if finished and ahead is not None:
            run.withdraw(ahead)  # its results are not wanted: the fit ends at this step
            ahead = None
        try:  # gathering the state can meet a lost worker too: recover as for a step
            if ex.distributed and _snapshot_due(step, snapshot_every) and not finished:
                state_v, best_v = run.values([run.state, run.best or {}])
                run.restore(state_v, best_v)  # plain data again: the scheduler forgets history
                base = (step, state_v, best_v, list(prog.stats))
                workers = _workers(ex)
            if _checkpoint_due(step, checkpoint, checkpoint_every) and not finished:
                state_v, best_v = run.values([run.state, run.best or {}])
                ckpt.save(checkpoint, ckpt.Snapshot(step=step, state=state_v,
                                                    best=best_v if run.best else None,
                                                    stats=list(prog.stats)),
                          kind.fingerprint())
        except Exception as exc:
            if not (ex.distributed and is_worker_loss(exc)):
                raise
            step = recover(exc)
            continue
        if finished:
            break
    if not converged and tol > 0 and step >= total and prog.scores and not (
            kind.select_best and kind.patience is not None
            and prog.since_best >= kind.patience):
        warnings.warn(f"{name}: stopped at maxit={maxit} before the relative change stayed "
                      f"below tol={tol:g} for {CONVERGENCE_PATIENCE} iterations; raise maxit "
                      f"or tol", _convergence_warning(), stacklevel=user_stacklevel())
    return DriveResult(
        state=run.state, best=run.best, stats=prog.stats, scores=prog.scores, rels=prog.rels,
        iterations=len(prog.scores), best_iter=prog.best_iter, converged=converged,
        seconds=time.perf_counter() - t0, graph_sizes=run.sizes, recoveries=recoveries)


def _start_ahead(run: _Run, step: int):
    """Start ``step`` ahead of time; None if the cluster refuses (the error then belongs to
    that step, when it is started in its turn)."""
    try:
        return run.submit(step)
    except Exception as exc:
        if not is_worker_loss(exc):
            raise
        return None  # nothing changed: submit holds the new state only once it is started


def _snapshot_due(step: int, snapshot_every: int) -> bool:
    """Whether a cluster fit snapshots its state after ``step``."""
    return step % snapshot_every == 0


def _checkpoint_due(step: int, checkpoint, checkpoint_every) -> bool:
    """Whether the fit writes a checkpoint after ``step``."""
    return bool(checkpoint is not None and checkpoint_every and step % checkpoint_every == 0)


def _gathers_after(step: int, snapshot_every: int, checkpoint, checkpoint_every) -> bool:
    """Whether the driver gathers the state after ``step`` (a snapshot or a checkpoint): no step
    is started ahead of it, so that the state gathered is the held one."""
    return _snapshot_due(step, snapshot_every) or _checkpoint_due(step, checkpoint,
                                                                  checkpoint_every)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a warning point at the first caller outside this package."""
    import os
    import sys

    pkg = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    f, level = sys._getframe(1), 1
    while f is not None and os.path.abspath(f.f_code.co_filename).startswith(pkg):
        f, level = f.f_back, level + 1
    return level


#: seconds a recovery waits for at least one worker (a nanny or the batch system restarts them)
WORKER_WAIT = 120.0


def wait_for_a_worker(ex: Executor, name: str, lost: list[str], exc: BaseException) -> None:
    """Block until the cluster has a worker again (or raise :class:`WorkerLostError`)."""
    if isinstance(exc, WorkerLostError):
        raise exc
    try:
        ex.client.wait_for_workers(1, timeout=WORKER_WAIT)
    except Exception as err:  # distributed raises its TimeoutError
        raise WorkerLostError(
            f"{name}: lost workers {', '.join(lost)} and no worker joined the cluster within "
            f"{WORKER_WAIT:.0f} s; the fit cannot go on (last error: {exc!r})") from err


#: attempts at placing data on a cluster (scatters) while workers are being lost
MAX_PLACE_ATTEMPTS = 5
#: seconds between them, times the attempt: the scheduler needs a moment to notice a dead worker
PLACE_BACKOFF = 0.5


def placing(ex: Executor, name: str, place: Callable[[], Any]) -> Any:
    """Run ``place()``, which puts data on the workers; if a worker dies meanwhile, wait for one
    and place again (the scatter may have picked the dead worker before the scheduler knew).

    Placing is idempotent here: every caller places under fresh keys or replaces what it held.
    Gives up with :class:`WorkerLostError` after :data:`MAX_PLACE_ATTEMPTS` attempts.
    """
    for attempt in range(1, MAX_PLACE_ATTEMPTS + 1):
        try:
            return place()
        except Exception as exc:
            if not (ex.distributed and is_worker_loss(exc)):
                raise
            if attempt == MAX_PLACE_ATTEMPTS:
                raise WorkerLostError(
                    f"{name}: could not place data on the cluster in {MAX_PLACE_ATTEMPTS} "
                    f"attempts: workers keep being lost (last error: {exc!r})") from exc
            warnings.warn(f"{name}: a worker was lost while data were placed on the cluster "
                          f"({type(exc).__name__}); placing them again", RuntimeWarning,
                          stacklevel=user_stacklevel())
            wait_for_a_worker(ex, name, ["(a worker)"], exc)
            time.sleep(PLACE_BACKOFF * attempt)
    raise AssertionError("unreachable")


def _workers(ex: Executor) -> set[str]:
    if not ex.distributed:
        return set()
    try:
        return set(ex.client.scheduler_info().get("workers", {}))
    except Exception:  # the scheduler itself is unreachable: nothing to name
        return set()
