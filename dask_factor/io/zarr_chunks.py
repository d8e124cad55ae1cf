"""Reading a range of a 1-D zarr array straight from its chunk files, for the arrays we write.

A fit with ``cache="none"`` reads every block of its matrix at every pass, a few million
entries of ``indptr``, ``indices`` and ``data`` at a time.  Through zarr's array API such a
read costs two to three times the decompression it does (measured on the 200,000-cell scan
store: 60–95 M non-zeros/s/core through zarr against 190 M read this way, ``docs/io.md``):
zarr 3 runs every read through its asyncio event loop, hands each chunk to a thread, decodes
it into a buffer of its own and copies it into the result.

For a 1-D array of a kind we know — a local directory store, a regular chunk grid, zarr's
default chunk-key encoding, no sharding, and the codecs our writers use (the ``bytes`` codec,
then ``blosc`` or ``zstd``, then optionally ``crc32c``) — :func:`plan_of` describes where its
chunks live, and :func:`read_range` reads the chunk files a range touches, checks each CRC32C,
checks the compressed header's sizes and decompresses every whole chunk directly into its place
in the result (the two edge chunks, which the neighbouring blocks read too, decoded once per
process and kept a while: :data:`EDGE_KEEP_CHUNKS`).  :func:`iter_decoded` gives the
chunks of a range one at a time through a per-thread scratch buffer instead, for a reader that
transforms what it reads (summing the scan layout's row differences, widening its uint16
counts): each chunk is used while it is still in the core's cache and no range-sized
temporary is allocated (on the 200,000-cell scan store this cut a block read's CPU by about
30 %, ``docs/io.md``).  Anything else (another store, codec or layout) gets no plan and is
read through zarr as before.  The chunk files and their
names are zarr's v3 format (the specification's chunk-key encoding), not zarr internals; this
module is the only one that reads them.

A chunk that is missing, fails its checksum or decodes to another size raises
:class:`~dask_factor.io.errors.MatrixFormatError` naming the array and the chunk.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MatrixFormatError

__all__ = ["ChunkPlan", "iter_decoded", "plan_of", "read_range"]

_BLOSC_HEADER = 16
#: decoded chunks :func:`read_range` keeps per process when asked (``keep=True``: the column
#: pointer, whose chunks older stores made up to 8 MB long for a few kB read per block)
KEEP_BYTES = 64 << 20
#: decoded *edge* chunks kept per process: a chunk that a read covers only in part (the first
#: and last of a block's range) is usually read again by the neighbouring block, which the
#: scheduler runs next to it (the same pass, the same worker's run); decoding it once instead of
#: twice took a threaded streamed pass from 1.25 to 1.07 decompressions per chunk (docs/io.md).
#: A process holds at most this many such chunks, and at most :data:`KEEP_BYTES` of them (8 x 4
#: MB for the scan layout's uint16 arrays at atlas scale; the csc layout's float64 values, 16 MB
#: chunks, reach the byte bound at 4), besides the column pointers' :data:`KEEP_BYTES`.
EDGE_KEEP_CHUNKS = 8


@dataclass(frozen=True)
class ChunkPlan:
    """Where the chunks of a 1-D zarr array live and how they are encoded (picklable).

    Examples
    --------
    >>> import tempfile, zarr
    >>> root = tempfile.mkdtemp()
    >>> a = zarr.create_array(f"{root}/x", shape=(10,), chunks=(4,), dtype="int32")
    >>> a[:] = np.arange(10)
    >>> plan = plan_of(a)
    >>> plan.chunk, plan.size, plan.codec
    (4, 10, 'zstd')
    """

    #: the array's directory
    root: str
    #: entries per chunk (regular grid)
    chunk: int
    #: entries in the array
    size: int
    #: the stored dtype (little-endian)
    dtype: str
    #: "blosc", "zstd" or "none"
    codec: str
    #: whether a CRC32C follows the compressed bytes
    crc: bool
    #: the chunk-key separator ("/" or ".")
    separator: str
    #: what a missing chunk file holds (zarr's fill value), or None: a missing chunk is an error
    #: (stores written whole, ``all_chunks_written``)
    fill: float | int | None = 0

    def chunk_path(self, c: int) -> str:
        return os.path.join(self.root, "c" + self.separator + str(int(c)))


def plan_of(arr, *, all_written: bool = False) -> ChunkPlan | None:
    """The :class:`ChunkPlan` of a 1-D zarr v3 array whose chunk files this module can read,
    or None (read it through zarr).

    Parameters
    ----------
    arr : zarr.Array
    all_written : bool
        The store was written with every chunk (our writers): a missing chunk file was lost and
        is an error.  Otherwise it reads as the array's fill value, as in zarr.

    Returns
    -------
    ChunkPlan or None

    Examples
    --------
    >>> import tempfile, zarr
    >>> a = zarr.create_array(tempfile.mkdtemp(), shape=(4, 4), dtype="f4")
    >>> plan_of(a) is None   # 2-D: read through zarr
    True
    """
    # zarr.core's grid and key-encoding classes are how zarr 3 exposes an array's metadata (no
    # other public name for them); this is the only module that uses them, and a zarr that has
    # moved them gives no plan: the array is then read through zarr's API
    try:
        import zarr
        from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec
        from zarr.core.chunk_grids import RegularChunkGrid
        from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding
        from zarr.storage import LocalStore
    except ImportError:  # pragma: no cover - a zarr without these names: read through zarr
        return None
    if not isinstance(arr, zarr.Array) or arr.metadata.zarr_format != 3 or arr.ndim != 1:
        return None
    md = arr.metadata
    store = arr.store_path.store
    if not isinstance(store, LocalStore) or not isinstance(md.chunk_grid, RegularChunkGrid):
        return None
    enc = md.chunk_key_encoding
    if not isinstance(enc, DefaultChunkKeyEncoding) or enc.separator not in ("/", "."):
        return None
    codecs = list(md.codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    dtype = np.dtype(arr.dtype)
    if dtype.kind not in "iuf" or (dtype.itemsize > 1 and codecs[0].endian is None):
        return None
    if dtype.itemsize > 1 and codecs[0].endian.value != "little":
        return None
    rest = codecs[1:]
    crc = bool(rest) and isinstance(rest[-1], Crc32cCodec)
    if crc:
        rest = rest[:-1]
    if not rest:
        codec = "none"
    elif len(rest) == 1 and isinstance(rest[0], BloscCodec):
        codec = "blosc"
    elif len(rest) == 1 and isinstance(rest[0], ZstdCodec):
        codec = "zstd"
    else:
        return None
    # absolute: the plan travels to workers whose working directory may differ
    root = (Path(str(store.root)) / arr.store_path.path).resolve()
    fill = None if all_written else np.asarray(md.fill_value, dtype=dtype).item()
    return ChunkPlan(root=str(root), chunk=int(md.chunk_grid.chunk_shape[0]),
                     size=int(arr.shape[0]), dtype=dtype.newbyteorder("<").str, codec=codec,
                     crc=crc, separator=enc.separator, fill=fill)


def _missing(plan: ChunkPlan, c: int, where: str) -> None:
    if plan.fill is None:
        raise MatrixFormatError(f"{where}: chunk {c} ({plan.chunk_path(c)}) is missing "
                                "from a store written whole")


def _payload(plan: ChunkPlan, c: int, where: str) -> np.ndarray | None:
    """The compressed bytes of chunk ``c`` (CRC checked and stripped); None for a missing chunk
    that reads as the fill value."""
    path = plan.chunk_path(c)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        _missing(plan, c, where)
        return None
    buf = np.frombuffer(raw, dtype=np.uint8)
    if plan.crc:
        import google_crc32c

        if buf.size < 4:
            raise MatrixFormatError(f"{where}: chunk {c} ({path}) is truncated")
        body = buf[:-4]
        if int(google_crc32c.value(body)) != int.from_bytes(raw[-4:], "little"):
            raise MatrixFormatError(f"{where}: chunk {c} ({path}) fails its CRC32C checksum")
        return body
    return buf


def _decode_into(plan: ChunkPlan, body: np.ndarray | None, out: np.ndarray, c: int,
                 where: str) -> None:
    """Decompress one chunk into ``out`` (exactly one chunk long), checking its sizes; a
    missing chunk (``body`` None) is the fill value."""
    if body is None:
        out[:] = plan.fill
        return
    want = out.nbytes
    dest = out.view(np.uint8)
    if plan.codec == "none":
        if body.size != want:
            raise MatrixFormatError(f"{where}: chunk {c} holds {body.size} bytes, expected {want}")
        dest[:] = body
        return
    if plan.codec == "blosc":
        import numcodecs.blosc

        if body.size < _BLOSC_HEADER:
            raise MatrixFormatError(f"{where}: chunk {c} is truncated (no blosc header)")
        head = body[:_BLOSC_HEADER].tobytes()
        nbytes = int.from_bytes(head[4:8], "little")
        cbytes = int.from_bytes(head[12:16], "little")
        if nbytes != want or cbytes != body.size:
            raise MatrixFormatError(
                f"{where}: chunk {c}'s blosc header gives {nbytes} bytes from {cbytes}; the "
                f"chunk holds {body.size} bytes and should decode to {want}")
        try:
            numcodecs.blosc.decompress(body, dest)
        except RuntimeError as err:
            raise MatrixFormatError(f"{where}: chunk {c} does not decompress: {err}") from err
        return
    import numcodecs.zstd

    try:
        got = numcodecs.zstd.decompress(body)
    except RuntimeError as err:
        raise MatrixFormatError(f"{where}: chunk {c} does not decompress: {err}") from err
    if len(got) != want:
        raise MatrixFormatError(f"{where}: chunk {c} decodes to {len(got)} bytes, expected {want}")
    dest[:] = np.frombuffer(got, dtype=np.uint8)


class _ChunkPool:
    """Decoded chunks kept in this process while their files are unchanged (the same size,
    modification and change times and inode), the least recently used dropped first beyond
    ``max_bytes`` or ``max_chunks``; thread-safe. Its arrays are read-only."""

    def __init__(self, max_bytes: int, max_chunks: int | None = None):
        self.max_bytes, self.max_chunks = max_bytes, max_chunks
        self._chunks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, plan: ChunkPlan, c: int, where: str) -> np.ndarray:
        """Chunk ``c`` of ``plan`` decoded: kept, or decoded now and kept."""
        path = plan.chunk_path(c)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            _missing(plan, c, where)
            out = np.empty(plan.chunk, dtype=np.dtype(plan.dtype))
            _decode_into(plan, None, out, c, where)  # the fill value; nothing to keep
            return out
        # ctime too: a rewrite that keeps the size and sets the old mtime back still moves it
        key = (path, plan.dtype, plan.chunk, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
               st.st_ino)
        with self._lock:
            hit = self._chunks.get(key)
            if hit is not None:
                self._chunks.move_to_end(key)
                return hit
        out = np.empty(plan.chunk, dtype=np.dtype(plan.dtype))
        _decode_into(plan, _payload(plan, c, where), out, c, where)
        out.flags.writeable = False
        with self._lock:
            self._chunks[key] = out
            total = sum(v.nbytes for v in self._chunks.values())
            while len(self._chunks) > 1 and (
                    total > self.max_bytes
                    or (self.max_chunks is not None and len(self._chunks) > self.max_chunks)):
                total -= self._chunks.popitem(last=False)[1].nbytes
        return out


#: the column pointers' chunks (``read_range(..., keep=True)``)
_kept = _ChunkPool(KEEP_BYTES)
#: chunks that reads covered in part (:data:`EDGE_KEEP_CHUNKS`)
_edges = _ChunkPool(KEEP_BYTES, EDGE_KEEP_CHUNKS)


def _is_edge(plan: ChunkPlan, c: int, lo: int, hi: int) -> bool:
    """Whether a read takes only part (``lo:hi``) of chunk ``c``'s entries in the array: the
    rest belongs to a neighbouring read, so the decoded chunk is kept for it (:data:`_edges`)."""
    return hi - lo < min(plan.chunk, plan.size - c * plan.chunk)


def _spans(plan: ChunkPlan, start: int, stop: int):
    """``(c, lo, hi)``: each chunk ``c`` the entries ``start:stop`` touch and the entries
    ``lo:hi`` of the range it holds."""
    ch = plan.chunk
    for c in range(start // ch, (stop - 1) // ch + 1):
        yield c, max(start, c * ch), min(stop, (c + 1) * ch)


#: scratch buffers up to this size are kept per thread for the next read (a few per thread: the
#: chunk of each stored dtype a read decodes through)
SCRATCH_KEEP_BYTES = 8 << 20
_scratch = threading.local()


def _take_scratch(plan: ChunkPlan) -> np.ndarray:
    """A buffer of one chunk, this thread's kept one when free (no fresh pages to fault in at
    every read), else a new one."""
    key = (plan.dtype, plan.chunk)
    pool = getattr(_scratch, "pool", None)
    if pool is None:
        pool = _scratch.pool = {}
    free = pool.get(key)
    return free.pop() if free else np.empty(plan.chunk, dtype=np.dtype(plan.dtype))


def _give_scratch(plan: ChunkPlan, buf: np.ndarray) -> None:
    pool = getattr(_scratch, "pool", None)
    if pool is None:  # (a generator finished in another thread than the one it ran in)
        return
    if buf.nbytes <= SCRATCH_KEEP_BYTES:
        free = pool.setdefault((plan.dtype, plan.chunk), [])
        if not free:  # one per key and thread is all a read uses
            free.append(buf)


def iter_decoded(plan: ChunkPlan, start: int, stop: int, *, where: str):
    """Entries ``start:stop`` decoded one chunk at a time: yields ``(offset, piece)``, the
    entries ``start + offset : start + offset + len(piece)`` in the stored dtype.

    Each piece is a view of a scratch buffer of this thread that the next piece overwrites, or,
    for a chunk the range covers only in part, a read-only view of a chunk kept for the
    neighbouring read: use it (decode, convert, copy) before asking for the next, never write
    to it.  A chunk's decoded bytes are still in the core's cache when they are used, and no
    range-sized buffer of the stored type is allocated (its pages faulted in) at every read.

    Parameters
    ----------
    plan : ChunkPlan
    start, stop : int
        ``0 <= start <= stop <= plan.size`` (checked).
    where : str
        Names the source in errors.

    Yields
    ------
    (int, numpy.ndarray)

    Examples
    --------
    >>> import tempfile, zarr
    >>> a = zarr.create_array(tempfile.mkdtemp(), shape=(10,), chunks=(4,), dtype="int32")
    >>> a[:] = np.arange(10)
    >>> [(off, piece.tolist()) for off, piece in iter_decoded(plan_of(a), 3, 9, where="x")]
    [(0, [3]), (1, [4, 5, 6, 7]), (5, [8])]
    """
    start, stop = _check_range(plan, start, stop, where)
    if stop == start:
        return
    ch = plan.chunk
    buf = _take_scratch(plan)
    try:
        for c, lo, hi in _spans(plan, start, stop):
            if _is_edge(plan, c, lo, hi):
                yield lo - start, _edges.get(plan, c, where)[lo - c * ch : hi - c * ch]
                continue
            _decode_into(plan, _payload(plan, c, where), buf, c, where)
            yield lo - start, buf[lo - c * ch : hi - c * ch]
    finally:
        _give_scratch(plan, buf)


def _check_range(plan: ChunkPlan, start: int, stop: int, where: str) -> tuple[int, int]:
    start, stop = int(start), int(stop)
    if not 0 <= start <= stop <= plan.size:
        raise MatrixFormatError(f"{where}: entries {start}:{stop} are outside the stored "
                                f"{plan.size} (expected 0 <= start <= stop <= {plan.size})")
    return start, stop


def read_range(plan: ChunkPlan, start: int, stop: int, *, where: str,
               keep: bool = False, dtype=None) -> np.ndarray:
    """Entries ``start:stop`` of the array ``plan`` describes, decoded from its chunk files.

    Parameters
    ----------
    plan : ChunkPlan
    start, stop : int
        ``0 <= start <= stop <= plan.size``.
    where : str
        Names the source in errors.
    keep : bool
        Keep the decoded chunks in this process (up to :data:`KEEP_BYTES`, the least recently
        used dropped first) and reuse them while their files are unchanged: for small arrays
        read a little at a time, such as a column pointer.
    dtype : numpy dtype, optional
        Return this dtype instead of the stored one, converted chunk by chunk as each is
        decoded (:func:`iter_decoded`); the conversion must be exact for every value of the
        stored type (``numpy.can_cast(stored, dtype, "safe")``: uint16 counts to float32, not
        int32 to float32), else ``TypeError``; not with ``keep``.

    Returns
    -------
    numpy.ndarray of shape (stop - start,), the stored dtype or ``dtype``.

    Examples
    --------
    >>> import tempfile, zarr
    >>> a = zarr.create_array(tempfile.mkdtemp(), shape=(10,), chunks=(4,), dtype="int32")
    >>> a[:] = np.arange(10)
    >>> read_range(plan_of(a), 3, 9, where="x")
    array([3, 4, 5, 6, 7, 8], dtype=int32)
    >>> read_range(plan_of(a), 3, 9, where="x", dtype="float64")
    array([3., 4., 5., 6., 7., 8.])
    """
    start, stop = _check_range(plan, start, stop, where)
    stored = np.dtype(plan.dtype)
    if dtype is not None and np.dtype(dtype) != stored:
        if keep:
            raise ValueError("read_range: keep=True keeps chunks in the stored dtype; pass "
                             "dtype=None with it")
        dtype = np.dtype(dtype)
        if not np.can_cast(stored, dtype, "safe"):
            raise TypeError(f"{where}: {stored} values do not all convert exactly to {dtype} "
                            f"(expected a dtype numpy.can_cast({stored}, ..., 'safe') allows)")
        out = np.empty(stop - start, dtype=dtype)
        for off, piece in iter_decoded(plan, start, stop, where=where):
            out[off : off + piece.size] = piece
        return out
    out = np.empty(stop - start, dtype=stored)
    if stop == start:  # (an empty block's entries: no chunk to read)
        return out
    ch = plan.chunk
    for c, lo, hi in _spans(plan, start, stop):
        piece = out[lo - start : hi - start]
        if keep or _is_edge(plan, c, lo, hi):
            # a column pointer's chunk, or an edge that the neighbouring block reads too: kept
            piece[:] = (_kept if keep else _edges).get(plan, c, where)[lo - c * ch : hi - c * ch]
        elif hi - lo == ch:
            _decode_into(plan, _payload(plan, c, where), piece, c, where)
        else:  # the array's last chunk, stored whole, shorter in the array
            scratch = _take_scratch(plan)
            try:
                _decode_into(plan, _payload(plan, c, where), scratch, c, where)
                piece[:] = scratch[: hi - lo]
            finally:
                _give_scratch(plan, scratch)
    return out
