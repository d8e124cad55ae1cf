"""Seeded mutation fuzzing of the readers, in a subprocess with a watchdog (issue 17, item 5).

A *worker* process applies mutation ``i`` (``numpy.random.default_rng([seed, i])`` decides
everything, so any case can be replayed alone) to a clean file or store, reads it the way a user
would, and prints one JSON line per mutation.  The *parent* (:func:`run`) reads those lines with
a watchdog: a worker that stops answering is killed and the mutation counted as a **hang**; a
worker that dies (a signal, an abort) is a **crash**; either way a new worker resumes after it.

Outcomes of a mutation:

``rejected``
    an error of an allowed type naming the file: ``MatrixFormatError``/``SpzFormatError``, or a
    ``ValueError``/``TypeError``/``OSError`` whose message (or ``filename``) names the path;
``same``
    read without error and equal to the original (the mutation hit bytes nothing depends on);
``wrong``
    read without error but different: a **silent wrong read**;
``unclear``
    any other exception (a bare ``KeyError``/``IndexError``/``JSONDecodeError``, a message
    without the path), or a ``MemoryError``;
``crash``, ``hang``
    as above.

Kinds: ``spz-kept`` (bytes of a ``.spz`` changed, the footer CRC left as it was),
``spz-recomputed`` (the CRC recomputed after the change: a forger or a buggy writer),
``spz-verified`` (the same, read with ``SpzFile.verify()``: the transpose checked), ``zarr``
(our CSC store), ``zarr-scan`` (our scan layout: blosc + CRC32C, read from the chunk files),
``anndata-zarr``, ``h5ad``.

Run by ``tests/hostile/test_fuzz.py``; by hand::

    python tests/hostile/fuzz.py --kind spz-recomputed --count 1000          # a summary
    python tests/hostile/fuzz.py --kind zarr --only 123 --show               # replay one case
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import queue
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
import zlib
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SPZ_DATA = REPO / "tests" / "data" / "spz"
KINDS = ("spz-kept", "spz-recomputed", "spz-verified", "zarr", "zarr-scan", "anndata-zarr",
         "h5ad")
OUTCOMES = ("rejected", "same", "wrong", "unclear", "crash", "hang")
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 15, 16, 127, 128, 255, 256, 65535, 2**31 - 1, 2**31,
               2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]


# --------------------------------------------------------------------------- corpus


def spz_corpus(scratch: Path, max_bytes: int | None = None) -> list[Path]:
    """RcppML's conformance files (every value type and codec, transposes, tables, row_sort)
    and a few of ours (escapes, several quant8 chunks, v3 transposes)."""
    files = sorted(p for p in SPZ_DATA.glob("tiny_*.spz"))
    files += [SPZ_DATA / "hawaiibirds.chunk100.rowsort.spz", SPZ_DATA / "aml.quant8.spz"]
    ours = scratch / "ours"
    if not ours.exists():
        import scipy.sparse as sp

        from dask_factor.io.spz import write_spz

        ours.mkdir()
        A = sp.random(40, 60, density=0.2, format="csc", random_state=3)
        A.data = np.round(A.data * 700)
        A.eliminate_zeros()
        write_spz(A, ours / "escapes.spz", chunk_cols=16)
        R = sp.random(30, 50, density=0.3, format="csc", random_state=4)
        write_spz(R, ours / "quant8.spz", value_type="quant8", chunk_cols=12)
        write_spz(R, ours / "fp16.spz", value_type="float16", chunk_cols=20)
        D = np.random.default_rng(5).standard_normal((12, 9))
        for codec in ("fp16", "quant8", "fp32_rans"):
            write_spz(D, ours / f"dense_{codec}.spz", codec=codec, chunk_cols=4,
                      include_transpose=True)
    files += sorted(ours.glob("*.spz"))
    if max_bytes is not None:
        files = [p for p in files if p.stat().st_size <= max_bytes]
    return files


def store_corpus(kind: str, scratch: Path) -> Path:
    """A clean store of ``kind`` holding :func:`hostile_helpers.base_matrix`."""
    sys.path.insert(0, str(HERE))
    from hostile_helpers import (
        base_matrix,
        clean_anndata_zarr,
        clean_h5ad,
        clean_scan_zarr,
        clean_zarr,
    )

    clean = scratch / "clean"
    clean.mkdir(exist_ok=True)
    build = {"zarr": clean_zarr, "zarr-scan": clean_scan_zarr, "h5ad": clean_h5ad,
             "anndata-zarr": clean_anndata_zarr}[kind]
    name = {"zarr": "a.zarr", "zarr-scan": "scan.zarr", "h5ad": "a.h5ad",
            "anndata-zarr": "ad.zarr"}[kind]
    if not (clean / name).exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build(base_matrix(), clean)
    return clean / name


# --------------------------------------------------------------------------- mutations


def fix_crc(data: bytes) -> bytes:
    if len(data) < 16:
        return data
    out = bytearray(data)
    struct.pack_into("<I", out, len(out) - 12, zlib.crc32(bytes(out[:-16])))
    return bytes(out)


def _pos(rng, n: int, structure: int = 0) -> int:
    """A position, half the time within the first ``structure`` bytes (headers, indices)."""
    if structure and rng.random() < 0.5:
        return int(rng.integers(0, min(structure, n)))
    return int(rng.integers(0, n))


def mutate_bytes(data: bytes, rng, structure: int = 0) -> tuple[bytes, str]:
    """One random change of a byte string; returns it and a description."""
    n = len(data)
    if n == 0:
        return b"\x00", "grow an empty file"
    op = str(rng.choice(["flip", "byte", "run", "field", "truncate", "insert", "delete"],
                        p=[0.3, 0.2, 0.1, 0.2, 0.08, 0.06, 0.06]))
    b = bytearray(data)
    pos = _pos(rng, n, structure)
    if op == "flip":
        bit = int(rng.integers(0, 8))
        b[pos] ^= 1 << bit
        return bytes(b), f"flip bit {bit} of byte {pos}"
    if op == "byte":
        v = int(rng.integers(0, 256))
        b[pos] = v if v != b[pos] else (v + 1) % 256
        return bytes(b), f"byte {pos} := {b[pos]}"
    if op == "run":
        k = int(rng.integers(2, 9))
        b[pos : pos + k] = rng.integers(0, 256, min(k, n - pos), dtype=np.uint8).tobytes()
        return bytes(b), f"bytes {pos}:{pos + k} random"
    if op == "field":
        size = int(rng.choice([1, 2, 4, 8]))
        pos -= pos % size
        if pos + size > n:
            pos = max(0, n - size)
        old = int.from_bytes(b[pos : pos + size], "little")
        pick = rng.random()
        if pick < 0.5:
            v = int(rng.choice(INTERESTING))
        elif pick < 0.8:
            v = old + int(rng.choice([-2, -1, 1, 2]))
        else:
            v = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        v %= 1 << (8 * min(size, n - pos))
        b[pos : pos + size] = v.to_bytes(min(size, n - pos), "little")
        return bytes(b), f"u{8 * size} at {pos}: {old} -> {v}"
    if op == "truncate":
        return bytes(b[:pos]), f"truncate to {pos} bytes"
    if op == "insert":
        k = int(rng.integers(1, 9))
        return (bytes(b[:pos]) + rng.integers(0, 256, k, dtype=np.uint8).tobytes()
                + bytes(b[pos:])), f"insert {k} bytes at {pos}"
    k = int(rng.integers(1, 9))
    return bytes(b[:pos]) + bytes(b[pos + k:]), f"delete bytes {pos}:{pos + k}"


def _spz_structure(data: bytes) -> int:
    """Bytes of header and forward index (where a change matters most)."""
    if len(data) >= 32 and data[4:6] in (b"\x02\x00", b"\x03\x00"):
        nch = struct.unpack_from("<I", data, 28)[0]
        width = 48 if data[4] == 2 else (24 if len(data) > 80 and data[80] == 0 else 40)
        return min(len(data), 128 + width * min(nch, 64))
    return 128


BAD_JSON = [None, -1, 0, 2**40, 2**63, 1.5, "x", "", [], {}, [1], [0, 0], [-1, 5], [10**12, 3],
            True, float("nan")]


def _json_paths(doc, prefix=()):
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield (*prefix, k)
            yield from _json_paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:8]):
            yield (*prefix, i)
            yield from _json_paths(v, (*prefix, i))


def mutate_json(text: bytes, rng) -> tuple[bytes, str]:
    """Delete a key, or give it a value of the wrong type or size."""
    doc = json.loads(text)
    paths = list(_json_paths(doc))
    if not paths:
        return b"{", "empty JSON -> '{'"
    path = paths[int(rng.integers(0, len(paths)))]
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if isinstance(parent, dict) and rng.random() < 0.3:
        del parent[path[-1]]
        return json.dumps(doc).encode(), f"delete {'/'.join(map(str, path))}"
    v = BAD_JSON[int(rng.integers(0, len(BAD_JSON)))]
    old = parent[path[-1]]
    if isinstance(old, int | float) and not isinstance(old, bool) and rng.random() < 0.5:
        v = old + int(rng.choice([-1, 1, 7, 1000]))
    parent[path[-1]] = v
    return json.dumps(doc).encode(), f"{'/'.join(map(str, path))} := {v!r}"


def mutate_store(root: Path, rng) -> str:
    """Damage a zarr store (a directory) in place."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    meta = [p for p in files if p.name in ("zarr.json", ".zarray", ".zattrs", ".zgroup",
                                           ".zmetadata")]
    chunks = [p for p in files if p not in meta]
    r = rng.random()
    if r < 0.04:
        dirs = sorted({p.parent for p in files if p.parent != root})
        d = dirs[int(rng.integers(0, len(dirs)))]
        shutil.rmtree(d)
        return f"remove directory {d.relative_to(root)}"
    target = (meta if (r < 0.6 or not chunks) else chunks)
    f = target[int(rng.integers(0, len(target)))]
    rel = f.relative_to(root)
    if rng.random() < 0.06:
        f.unlink()
        return f"remove {rel}"
    data = f.read_bytes()
    if f in meta and rng.random() < 0.6:
        try:
            new, what = mutate_json(data, rng)
            what = "edit " + what
        except (ValueError, RecursionError):
            new, what = mutate_bytes(data, rng)
    else:
        new, what = mutate_bytes(data, rng)
    f.write_bytes(new)
    return f"{rel}: {what}"


def mutate_h5(path: Path, rng) -> str:
    """Damage an HDF5 file: its bytes, or an object through h5py."""
    if rng.random() < 0.5:
        data = path.read_bytes()
        new, what = mutate_bytes(data, rng, structure=4096)
        path.write_bytes(new)
        return what
    import h5py

    with h5py.File(path, "r+") as f:
        return "edit " + _edit_h5(f, rng)


def _edit_h5(f, rng) -> str:
    """Change an object through h5py (checksums are recomputed: a deliberate edit)."""
    import h5py

    names: list[str] = []
    f.visit(names.append)
    name = names[int(rng.integers(0, len(names)))]
    obj = f[name]
    r = rng.random()
    if r < 0.2:
        del f[name]
        return f"delete {name}"
    if r < 0.5 and obj.attrs:
        keys = sorted(obj.attrs)
        key = keys[int(rng.integers(0, len(keys)))]
        if rng.random() < 0.4:
            del obj.attrs[key]
            return f"delete attribute {name}@{key}"
        v = [np.array([-1, 2**40]), "csc_matrix", "x", np.int64(-5), np.array([7])][
            int(rng.integers(0, 5))]
        obj.attrs[key] = v
        return f"attribute {name}@{key} := {v!r}"
    if isinstance(obj, h5py.Dataset) and obj.size and obj.dtype.kind in "iuf":
        flat = obj[...].reshape(-1)
        k = int(rng.integers(0, flat.size))
        v = rng.choice(INTERESTING[:16]) * (1 if rng.random() < 0.8 else -1)
        try:
            flat[k] = v
        except OverflowError:
            flat[k] = 0
        obj[...] = flat.reshape(obj.shape)
        return f"{name}[{k}] := {flat[k]}"
    if isinstance(obj, h5py.Dataset) and obj.maxshape and obj.maxshape[0] is None:
        n = int(rng.choice([0, 1, obj.shape[0] // 2, obj.shape[0] + 5, 10**9]))
        obj.resize((n, *obj.shape[1:]))
        return f"resize {name} to {n}"
    obj.attrs["encoding-type"] = "csr_matrix"
    return f"attribute {name}@encoding-type := 'csr_matrix'"


# --------------------------------------------------------------------------- reading


def read_spz(path: Path, deep: bool = False):
    """Everything a user can read from a .spz: matrix, transpose, tables, info (and with
    ``deep``, :meth:`SpzFile.verify`)."""
    from dask_factor.io.spz import SpzFile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = SpzFile(path, verify_crc=True)
    with f:
        if deep:
            f.verify()
        out = {"all": f.read_all(), "obs": f.obs, "var": f.var, "shape": f.shape}
        if f.has_transpose:
            out["t"] = [f.read_transpose_chunk(c) for c in range(f.transpose_bounds.size - 1)]
        f.info()
    return out


def read_store(path: Path):
    """What a user reads from a store: the matrix (every block), its info and metadata."""
    import dask

    from dask_factor.io import matrix_info, open_matrix, read_metadata

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = matrix_info(path)
        rows, cols = read_metadata(path)
        x = open_matrix(path)
        with dask.config.set(scheduler="synchronous"):
            a = x.compute()
    return {"all": a, "shape": info["shape"], "rows": rows, "cols": cols}


def _same_matrix(a, b) -> bool:
    import scipy.sparse as sp

    if sp.issparse(a) != sp.issparse(b):
        a = a.toarray() if sp.issparse(a) else a
        b = b.toarray() if sp.issparse(b) else b
    if sp.issparse(a):
        a, b = sp.csc_matrix(a), sp.csc_matrix(b)
        if a.shape != b.shape:
            return False
        a.sort_indices()
        b.sort_indices()
        return (np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
                and np.array_equal(np.asarray(a.data, np.float64), np.asarray(b.data, np.float64),
                                   equal_nan=True))
    return np.shape(a) == np.shape(b) and np.array_equal(np.asarray(a, np.float64),
                                                         np.asarray(b, np.float64),
                                                         equal_nan=True)


def same(x: dict, y: dict) -> bool:
    if not _same_matrix(x["all"], y["all"]) or ("t" in x) != ("t" in y):
        return False
    if "t" in x and not all(_same_matrix(p, q) for p, q in zip(x["t"], y["t"])):
        return False
    for key in ("obs", "var"):
        if key in x and (x[key] is None) != (y[key] is None):
            return False
        if key in x and x[key] is not None and not x[key].equals(y[key]):
            return False
    return True


def classify(exc: BaseException, path: Path) -> str:
    """``rejected`` for an error users are promised, else ``unclear``."""
    from dask_factor.io import MatrixFormatError

    if isinstance(exc, MemoryError):
        return "unclear"
    msg = str(exc) + " " + str(getattr(exc, "filename", "") or "")
    named = path.name in msg
    if isinstance(exc, MatrixFormatError | ValueError | TypeError | OSError) and named:
        return "rejected"
    return "unclear"


# --------------------------------------------------------------------------- worker


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _setup(kind: str, scratch: Path, max_bytes: int | None):
    """(list of originals, reader); originals are (path, decoded) pairs."""
    if kind.startswith("spz"):
        files = spz_corpus(scratch, max_bytes)
        reader = functools.partial(read_spz, deep=kind == "spz-verified")
        return [(p, reader(p)) for p in files], reader
    clean = store_corpus(kind, scratch)
    return [(clean, read_store(clean))], read_store


def mutate(kind: str, orig: Path, work: Path, rng) -> tuple[Path, str]:
    """Copy ``orig`` into ``work`` and damage the copy; returns it and a description."""
    dst = work / orig.name
    if dst.is_dir():
        shutil.rmtree(dst)
    if kind.startswith("spz"):
        data = orig.read_bytes()
        new, what = data, ""
        while new == data:  # a change that changes nothing is no mutation
            new, what = mutate_bytes(data, rng, _spz_structure(data))
        if kind != "spz-kept":
            new = fix_crc(new)
        dst.write_bytes(new)
        return dst, f"{orig.name}: {what}"
    if orig.is_dir():
        shutil.copytree(orig, dst)
        return dst, mutate_store(dst, rng)
    shutil.copy(orig, dst)
    return dst, mutate_h5(dst, rng)


def worker(args) -> None:
    import resource
    import tracemalloc

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        originals, reader = _setup(args.kind, scratch, args.max_file_bytes)
    work = Path(tempfile.mkdtemp(prefix="fuzz-", dir=scratch))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    selftest = os.environ.get("DASK_FACTOR_FUZZ_SELFTEST", "").split(",")
    if args.memory:
        tracemalloc.start()
    _emit({"ready": True, "files": len(originals)})
    stop = args.start + args.count if args.only is None else args.only + 1
    for i in range(args.start if args.only is None else args.only, stop):
        _emit({"start": i})
        rng = np.random.default_rng([args.seed, i])
        orig, decoded = originals[int(rng.integers(0, len(originals)))]
        path, what = mutate(args.kind, orig, work, rng)
        if args.memory:
            tracemalloc.reset_peak()
        if f"crash:{i}" in selftest:  # the harness's own test: die, or stop answering
            os.abort()
        if f"hang:{i}" in selftest:
            time.sleep(3600)
        try:
            out = reader(path)
        except Exception as exc:  # noqa: BLE001 - classify everything
            outcome = classify(exc, path)
            detail = f"{type(exc).__name__}: {str(exc)[:300]}"
            if args.show:
                traceback.print_exc(file=sys.stderr)
        else:
            outcome = "same" if same(out, decoded) else "wrong"
            detail = ""
        rec = {"i": i, "outcome": outcome, "what": what, "detail": detail,
               "size": path.stat().st_size if path.is_file() else None}
        if args.memory:
            rec["peak"] = tracemalloc.get_traced_memory()[1]
        _emit(rec)
    _emit({"done": True, "maxrss_delta": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
           * 1024 - base_rss})
    shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- parent


def _pump(stream, lines: queue.Queue) -> None:
    """Move a worker's output lines to a queue ('' at its end): the watchdog waits on it."""
    for line in stream:
        lines.put(line)
    lines.put("")


def run(kind: str, count: int, *, seed: int = 0, scratch: Path | None = None,
        timeout: float = 30.0, startup: float = 600.0, memory: bool = False,
        max_file_bytes: int | None = None) -> dict:
    """Run ``count`` mutations of ``kind`` in worker subprocesses with a watchdog.

    Returns a summary: ``counts`` per outcome, ``cases`` (every record), ``failures`` (crash,
    hang, unclear), ``wrong`` (silent wrong reads), and with ``memory`` the largest traced
    allocation (``peak``) and the growth of the worker's peak RSS (``maxrss_delta``).
    """
    own = scratch is None
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-")) if own else Path(scratch)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cases: dict[int, dict] = {}
    rss: list[int] = []
    i = 0
    try:
        while i < count:
            cmd = [sys.executable, str(Path(__file__)), "--worker", "--kind", kind, "--seed",
                   str(seed), "--start", str(i), "--count", str(count - i), "--scratch",
                   str(scratch)]
            if memory:
                cmd.append("--memory")
            if max_file_bytes is not None:
                cmd += ["--max-file-bytes", str(max_file_bytes)]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    env=env, cwd=str(REPO), text=True, start_new_session=True)
            lines: queue.Queue = queue.Queue()
            threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
            current, limit = None, startup
            while True:
                try:
                    line = lines.get(timeout=limit)
                except queue.Empty:  # watchdog: no line in time
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    if current is None:
                        raise RuntimeError(f"fuzz worker for {kind} did not start in {limit} s"
                                           ) from None
                    cases[current] = {"i": current, "outcome": "hang",
                                      "what": "(see --only)", "detail": f"> {timeout} s"}
                    i = current + 1
                    break
                if not line:  # the worker died
                    code = proc.wait()
                    if current is None:
                        raise RuntimeError(f"fuzz worker for {kind} failed to start ({code})")
                    if current in cases:  # died after its last record: resume after it
                        i = current + 1
                        break
                    cases[current] = {"i": current, "outcome": "crash", "what": "(see --only)",
                                      "detail": f"exit status {code}"}
                    i = current + 1
                    break
                rec = json.loads(line)
                if rec.get("ready"):
                    limit = timeout
                elif "start" in rec:
                    current = rec["start"]
                elif rec.get("done"):
                    rss.append(int(rec["maxrss_delta"]))
                    proc.wait()
                    i = count
                    break
                else:
                    cases[rec["i"]] = rec
    finally:
        if own:
            shutil.rmtree(scratch, ignore_errors=True)
    records = [cases[k] for k in sorted(cases)]
    counts = {o: sum(r["outcome"] == o for r in records) for o in OUTCOMES}
    out = {"kind": kind, "seed": seed, "count": count, "counts": counts, "cases": records,
           "failures": [r for r in records if r["outcome"] in ("crash", "hang", "unclear")],
           "wrong": [r for r in records if r["outcome"] == "wrong"]}
    if memory:
        out["peak"] = max((r.get("peak", 0) for r in records), default=0)
        out["maxrss_delta"] = max(rss, default=0)
    return out


def is_edit(rec: dict) -> bool:
    """A deliberate edit (through h5py, or of a JSON value) rather than damaged bytes."""
    return " edit " in f" {rec.get('what', '')}" or ": edit " in rec.get("what", "")


def silent_wrong(res: dict, edits: bool | None = None) -> tuple[int, int]:
    """(silent wrong reads, reads that changed) among all records, the edits or the others."""
    recs = [r for r in res["cases"] if edits is None or is_edit(r) == edits]
    changed = [r for r in recs if r["outcome"] != "same"]
    return sum(r["outcome"] == "wrong" for r in changed), len(changed)


def summary_line(res: dict) -> str:
    c = res["counts"]
    wrong, changed = silent_wrong(res)
    out = (f"{res['kind']}: {res['count']} mutations (seed {res['seed']}): "
           + ", ".join(f"{k} {v}" for k, v in c.items())
           + f"; silent wrong {wrong}/{changed} of the reads that changed = "
           + f"{wrong / max(changed, 1):.1%}")
    ew, ec = silent_wrong(res, True)
    if ec:
        bw, bc = silent_wrong(res, False)
        out += (f" (damaged bytes {bw}/{bc} = {bw / max(bc, 1):.1%}, deliberate edits "
                f"{ew}/{ec} = {ew / ec:.1%})")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=KINDS, required=True)
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--only", type=int, help="run just this mutation, in this process")
    ap.add_argument("--show", action="store_true", help="print tracebacks")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scratch", default=None)
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--max-file-bytes", type=int, default=None)
    args = ap.parse_args(argv)
    if args.worker or args.only is not None:
        if args.scratch is None:
            args.scratch = tempfile.mkdtemp(prefix="fuzz-")
        worker(args)
        return 0
    t = time.time()
    res = run(args.kind, args.count, seed=args.seed, memory=args.memory,
              max_file_bytes=args.max_file_bytes)
    print(summary_line(res), f"({time.time() - t:.0f} s)")
    for r in res["failures"] + res["wrong"][:20]:
        print(f"  #{r['i']} {r['outcome']}: {r['what']} -> {r['detail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
