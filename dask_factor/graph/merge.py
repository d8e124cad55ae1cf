"""Merge nodes of a factorization graph: ``factor_shared``, ``factor_concat``, ``factor_add`` and
``factor_condition``.

``factor_shared`` row-binds *inputs* with the same samples (one layer on it shares H);
``factor_concat``/``factor_add`` combine the H of *layers* (stack / sum); ``factor_condition``
appends fixed covariate rows to either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..engine.plan import ConditionPart, SumPart
from .nodes import FactorInput, Node, check_name, check_node, is_layer

__all__ = [
    "FactorShared", "FactorConcat", "FactorAdd", "FactorCondition", "factor_shared",
    "factor_concat", "factor_add", "factor_condition", "branch_rank", "check_add_ranks",
    "orient_z",
]




def _branch_labels(nodes) -> str:
    return ", ".join(repr(n.label) for n in nodes)


@dataclass(eq=False)
class FactorShared(Node):
    """Row-binds inputs that share their samples; one layer on it shares H across them."""

    inputs: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.inputs)

    def row_parts(self, c):
        return [p for x in self.inputs for p in x.row_parts(c)]

    def ref(self, c) -> str:
        return "shared:" + ",".join(c.name(x) for x in self.inputs)

    def shares_samples(self) -> bool:
        return True

    @property
    def label(self) -> str:
        return self.name or f"factor_shared({_branch_labels(self.inputs)})"

    def __repr__(self) -> str:
        return f"factor_shared({_branch_labels(self.inputs)})"


def factor_shared(*inputs: FactorInput, name: str | None = None) -> FactorShared:
    """Row-bind several inputs with the same samples; a layer on it shares one H.

    The row-bound matrix is never formed: the layer's Gram and right-hand side are sums over the
    inputs' blocks, and its W comes back as a dict of per-input blocks (input order).

    Parameters
    ----------
    *inputs : FactorInput
        At least 2 inputs (m_i × n, same n), dense or sparse.
    name : str, optional
        A label for messages.

    Returns
    -------
    FactorShared

    Raises
    ------
    TypeError
        An argument is not a ``factor_input``.
    ValueError
        Fewer than 2 inputs, or their sample counts differ.

    Examples
    --------
    >>> import numpy as np
    >>> from dask_factor.graph import factor_input
    >>> a = factor_input(np.ones((5, 20)), name="rna")
    >>> b = factor_input(np.ones((3, 20)), name="protein")
    >>> factor_shared(a, b)
    factor_shared('rna', 'protein')
    """
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    if len(inputs) < 2:
        raise ValueError(f"factor_shared: requires at least 2 inputs, got {len(inputs)}")
    for i, x in enumerate(inputs):
        check_node("factor_shared", f"inputs[{i}]", x)
        if not isinstance(x, FactorInput):
            raise TypeError(f"factor_shared: inputs[{i}] ({x.label!r}) is not a factor_input; "
                            f"factor_shared row-binds inputs (use factor_concat to combine "
                            f"layers)")
    if len({id(x) for x in inputs}) != len(inputs):
        raise ValueError(f"factor_shared: the same input is given twice "
                         f"({_branch_labels(inputs)})")
    check_same_samples("factor_shared", inputs)
    return FactorShared(inputs=tuple(inputs), name=check_name("factor_shared", name))


def check_same_samples(where: str, inputs) -> None:
    known = [(x, x.shape[1]) for x in inputs if isinstance(x, FactorInput) and x.shape]
    if len({n for _, n in known}) > 1:
        desc = ", ".join(f"{x.label!r} has {n}" for x, n in known)
        raise ValueError(f"{where}: inputs must share the samples (columns): {desc}")


def branch_rank(x: Node) -> int | None:
    """The number of rows a node contributes to a downstream layer's input (None if unknown)."""
    if is_layer(x):
        return x.k
    if isinstance(x, FactorConcat):
        ranks = [branch_rank(b) for b in x.branches]
        return None if any(r is None for r in ranks) else int(sum(ranks))
    if isinstance(x, FactorAdd):
        return branch_rank(x.branches[0])
    if isinstance(x, FactorCondition):
        r = branch_rank(x.input)
        return None if r is None else r + x.p
    return None


def _check_branches(where: str, branches) -> tuple[Node, ...]:
    if len(branches) == 1 and isinstance(branches[0], (list, tuple)):
        branches = tuple(branches[0])
    if len(branches) < 2:
        raise ValueError(f"{where}: requires at least 2 branches, got {len(branches)}")
    for i, b in enumerate(branches):
        check_node(where, f"branches[{i}]", b)
        if isinstance(b, (FactorInput, FactorShared)) or (
                isinstance(b, FactorCondition) and branch_rank(b) is None):
            raise TypeError(f"{where}: branches[{i}] ({b.label!r}) is an input; {where} combines "
                            f"the H of layers (use factor_shared to combine inputs)")
    return tuple(branches)


@dataclass(eq=False)
class FactorConcat(Node):
    """Stacks the H of parallel branches: rank = the sum of the branch ranks."""

    branches: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.branches)

    def row_parts(self, c):
        return [p for b in self.branches for p in b.row_parts(c)]

    def ref(self, c) -> str:
        return "concat:" + ",".join(b.ref(c).split(":", 1)[1] for b in self.branches)

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_concat({_branch_labels(self.branches)})"

    def __repr__(self) -> str:
        return f"factor_concat({_branch_labels(self.branches)})"


def factor_concat(*branches: Node, name: str | None = None) -> FactorConcat:
    """Stack the H matrices of parallel branches (rank = sum of the branch ranks).

    A layer on it factorises ``t([H_1; H_2; …])`` (samples × Σk).

    Parameters
    ----------
    *branches : Node
        At least 2 layers (or merges of layers) over the same samples.
    name : str, optional

    Returns
    -------
    FactorConcat

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> both = factor_concat(nmf_layer(inp, 3, name="lo"), nmf_layer(inp, 10, name="hi"))
    >>> both.rank
    13
    """
    branches = _check_branches("factor_concat", branches)
    return FactorConcat(branches=branches, name=check_name("factor_concat", name))


@dataclass(eq=False)
class FactorAdd(Node):
    """Element-wise sum of the H of branches with equal rank (a skip connection)."""

    branches: tuple[Node, ...] = field(default_factory=tuple)
    name: str | None = None

    def upstream(self):
        return tuple(self.branches)

    def layers(self) -> list[Node]:
        """The summed layers, nested sums flattened (in order)."""
        return [x for b in self.branches
                for x in (b.layers() if isinstance(b, FactorAdd) else [b])]

    def row_parts(self, c):
        flat = self.layers()
        return [SumPart(flat[0].k, "+".join(c.name(b) for b in flat),
                        sources=tuple(c.layer_pos(b) for b in flat))]

    def ref(self, c) -> str:
        return "add:" + ",".join(b.ref(c).split(":", 1)[1] for b in self.branches)

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_add({_branch_labels(self.branches)})"

    def __repr__(self) -> str:
        return f"factor_add({_branch_labels(self.branches)})"


def check_add_ranks(where: str, branches) -> None:
    ranks = [(b, branch_rank(b)) for b in branches]
    known = [(b, r) for b, r in ranks if r is not None]
    if len({r for _, r in known}) > 1:
        desc = ", ".join(f"{b.label!r} (k={r})" for b, r in known)
        raise ValueError(f"{where}: requires all branches to have the same rank k, got: {desc}")


def factor_add(*branches: Node, name: str | None = None) -> FactorAdd:
    """Element-wise sum of the H of branches with the same rank (a skip connection).

    Parameters
    ----------
    *branches : Node
        At least 2 layers (or sums of layers) with equal k, over the same samples.
    name : str, optional

    Returns
    -------
    FactorAdd

    Raises
    ------
    ValueError
        Fewer than 2 branches or different ranks (the message lists each branch's k).

    Examples
    --------
    >>> from dask_factor import datasets
    >>> from dask_factor.graph import factor_input, nmf_layer
    >>> A, rows, cols = datasets.load("aml")
    >>> inp = factor_input(A, name="aml")
    >>> factor_add(nmf_layer(inp, 4, name="a"), nmf_layer(inp, 4, name="b")).rank
    4
    """
    branches = _check_branches("factor_add", branches)
    for i, b in enumerate(branches):
        if not (is_layer(b) or isinstance(b, FactorAdd)):
            raise TypeError(f"factor_add: branches[{i}] ({b.label!r}) must be a layer or a "
                            f"factor_add of layers")
    check_add_ranks("factor_add", branches)
    return FactorAdd(branches=branches, name=check_name("factor_add", name))


@dataclass(eq=False)
class FactorCondition(Node):
    """Appends the rows of a fixed matrix Z (p × n) to its input."""

    input: Node
    Z: np.ndarray
    name: str | None = None

    def upstream(self):
        return (self.input,)

    def row_parts(self, c):
        z = c.condition_z(self)
        return [*self.input.row_parts(c),
                ConditionPart(int(z.shape[0]), c.name(self), source=c.condition_pos(self))]

    def ref(self, c) -> str:
        return f"cond:{c.name(self)}({self.input.ref(c)})"

    def shares_samples(self) -> bool:
        return self.input.shares_samples()

    @property
    def p(self) -> int:
        """Rows appended (Z's covariates); orientation settled once n is known."""
        return int(self.Z.shape[0])

    @property
    def rank(self) -> int | None:
        return branch_rank(self)

    @property
    def label(self) -> str:
        return self.name or f"factor_condition({self.input.label!r})"

    def __repr__(self) -> str:
        return (f"factor_condition({self.input.label!r}, Z=<{self.Z.shape[0]}×"
                f"{self.Z.shape[1]}>)")


def factor_condition(input: Node, Z, *, name: str | None = None) -> FactorCondition:
    """Append external covariates Z as extra rows of a node's matrix.

    On an input, a layer then factorises ``[A; Z]`` and its W gains Z's rows; on a layer (or a
    merge of layers), the downstream layer factorises ``t([H; Z])``. Z is used as p × n when its
    column count equals the samples, transposed when only its row count does (as RcppML).

    Parameters
    ----------
    input : Node
    Z : array-like of shape (p, n) or (n, p)
        Numeric, finite.
    name : str, optional
        Name of Z's row block (W blocks, messages); default ``"Z"``.

    Returns
    -------
    FactorCondition

    Examples
    --------
    >>> import numpy as np
    >>> from dask_factor.graph import factor_input
    >>> inp = factor_input(np.ones((5, 20)), name="x")
    >>> factor_condition(inp, np.zeros((2, 20)))
    factor_condition('x', Z=<2×20>)
    """
    check_node("factor_condition", "input", input)
    if sp.issparse(Z):
        Z = Z.toarray()
    if hasattr(Z, "to_numpy"):
        Z = Z.to_numpy()
    try:
        Z = np.asarray(Z, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"factor_condition: 'Z' must be a numeric matrix, got "
                        f"{type(Z).__name__}") from exc
    if Z.ndim == 1:
        Z = Z[None, :]
    if Z.ndim != 2 or Z.size == 0:
        raise ValueError(f"factor_condition: 'Z' must be a non-empty 2-D matrix, got shape "
                         f"{Z.shape}")
    if not np.all(np.isfinite(Z)):
        raise ValueError("factor_condition: 'Z' must hold finite values")
    n = _samples_of(input)
    if n is not None:
        Z = orient_z("factor_condition", Z, n)
    return FactorCondition(input=input, Z=Z, name=check_name("factor_condition", name))


def orient_z(where: str, Z: np.ndarray, n: int) -> np.ndarray:
    """Z as p × n (used as is if it has n columns, transposed if only its rows match)."""
    if Z.shape[1] == n:
        return Z
    if Z.shape[0] == n:
        return np.ascontiguousarray(Z.T)
    raise ValueError(f"{where}: Z has shape {Z.shape}; expected p × n or n × p with n = {n} "
                     f"samples")


def _samples_of(node: Node, _seen=None) -> int | None:
    """The sample count of a node, if an input upstream knows its shape."""
    _seen = _seen or set()
    if id(node) in _seen:
        return None
    _seen.add(id(node))
    if isinstance(node, FactorInput):
        return node.shape[1] if node.shape else None
    for up in node.upstream():
        n = _samples_of(up, _seen)
        if n is not None:
            return n
    return None
