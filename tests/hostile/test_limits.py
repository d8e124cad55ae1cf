"""Issue 17, item 1: decompression bombs and size limits.

A file may declare far more than it holds: these tests hand-make ``.spz`` files of a few hundred
bytes that declare 10⁸ entries, 2³² columns or rows, or a 20000 × 20000 dense panel (see
``spz_craft.py``), Matrix Market headers declaring 3.6·10⁹ values, and zarr / h5ad stores whose
attributes or array shapes lie.  Each is refused with a ``SizeLimitError`` (or a
``MatrixFormatError`` when the file cannot even hold what it declares) before anything is
allocated; the limits can be raised; and opening any file of at most 1 KB never takes more than
100 MB (measured in a fresh process).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import spz_craft as craft

from dask_factor.io import MatrixFormatError, matrix_info, open_matrix, write_matrix
from dask_factor.io.errors import SizeLimitError
from dask_factor.io.limits import Limits, get_limits, limits, parse_bytes, set_limits
from dask_factor.io.spz import SpzFile, SpzFormatError

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MB = 1 << 20

SPZ_BOMBS = {
    "dense_columns": (craft.bomb_dense_columns, "forward chunk 0 declares 100000000 entries"),
    "wide_empty": (craft.bomb_wide_empty, "declares shape 1 x 4294967295"),
    "tall": (craft.bomb_tall, "declares shape 4294967295 x 2"),
    "dense_rans": (craft.bomb_dense_rans, "forward panel 0 declares 20000 x 20000 values"),
    "dense_columns_many": (lambda: craft.bomb_dense_columns(300_000, 200),
                           "forward chunk 0 declares 60000000 entries"),
}

MTX_BOMBS = {
    "array.mtx": b"%%MatrixMarket matrix array real general\n60000 60000\n",
    "coordinate.mtx": b"%%MatrixMarket matrix coordinate real general\n10 10 3000000000\n1 1 1\n",
    "wide.mtx": b"%%MatrixMarket matrix coordinate real general\n1 4000000000 1\n1 1 1\n",
}


@pytest.fixture
def bombs(tmp_path):
    out = {}
    for name, (make, _) in SPZ_BOMBS.items():
        p = tmp_path / f"{name}.spz"
        p.write_bytes(make())
        out[name] = p
    return out


# --------------------------------------------------------------------------- .spz bombs


@pytest.mark.parametrize("name", list(SPZ_BOMBS))
def test_spz_bomb_refused_at_open(bombs, name):
    p = bombs[name]
    assert p.stat().st_size < 1024
    with pytest.raises(SizeLimitError, match=SPZ_BOMBS[name][1]) as ei:
        SpzFile(p)
    err = ei.value
    assert isinstance(err, SpzFormatError) and isinstance(err, MatrixFormatError)
    msg = str(err)
    assert str(p) in msg and "limit" in msg and "DASK_FACTOR_IO_MAX_RATIO" in msg
    assert f"{p.stat().st_size} B on disk" in msg


@pytest.mark.parametrize("name", list(SPZ_BOMBS))
@pytest.mark.parametrize("entry", ["open_matrix", "matrix_info", "nmf", "svd", "cli"])
def test_spz_bomb_refused_by_every_entry_point(bombs, name, entry, capsys):
    from dask_factor import nmf, svd
    from dask_factor.cli import main

    p = bombs[name]
    if entry == "cli":
        assert main(["info", str(p)]) != 0
        err = capsys.readouterr().err
        assert "limit" in err and p.name in err and "Traceback" not in err
        return
    call = {"open_matrix": lambda: open_matrix(p), "matrix_info": lambda: matrix_info(p),
            "nmf": lambda: nmf(p, k=2, maxit=1), "svd": lambda: svd(p, k=1)}[entry]
    with pytest.raises(SizeLimitError, match=SPZ_BOMBS[name][1]):
        call()


def _constant_columns(tmp_path: Path, m: int, cols: int) -> Path:
    p = tmp_path / f"ones_{m}x{cols}.spz"
    p.write_bytes(craft.bomb_dense_columns(m, cols))
    return p


def test_a_genuine_file_is_read_and_the_limits_can_be_tightened_or_raised(tmp_path):
    p = _constant_columns(tmp_path, 100_000, 10)  # 10^6 ones in 508 bytes: 34 MB to decode
    with SpzFile(p) as f:
        a = f.read_all()
    assert a.nnz == 10**6 and a.sum() == 10**6
    with limits(min_bytes="1M"), pytest.raises(SizeLimitError, match="min_bytes 1.0 MiB"):
        SpzFile(p)
    # a bigger one is refused by default and read once the limit is raised
    big = _constant_columns(tmp_path, 400_000, 10)
    with pytest.raises(SizeLimitError):
        SpzFile(big)
    with limits(min_bytes="512M"):
        with SpzFile(big) as f:
            assert f.read_columns(0, 1).nnz == 400_000


def test_the_limits_travel_with_the_tasks(tmp_path):
    import dask

    big = _constant_columns(tmp_path, 400_000, 4)
    with limits(min_bytes="512M"):
        x = open_matrix(big)  # opened (and its limits captured) inside the block
    with dask.config.set(scheduler="synchronous"):  # computed outside it: still allowed
        assert x[:, :1].compute().nnz == 400_000
    with limits(min_bytes="512M"):
        x = open_matrix(big, block_nnz=10**6)
    with limits(min_bytes="1M"), dask.config.set(scheduler="synchronous"):
        assert x[:, :1].compute().nnz == 400_000  # the task's limits are the open's


def test_whole_reads_are_checked_too(tmp_path):
    # each chunk of 400000 ones is within the limit, the whole matrix is not
    chunks = [{"gaps": craft.gap_stream([400_000]), "values": craft.constant_escape_block(1),
               "nnz": 400_000, "num_cols": 1} for _ in range(8)]
    p = tmp_path / "eight.spz"
    p.write_bytes(craft.file_v2(400_000, 8, 1, chunks))
    with SpzFile(p) as f:
        assert f.read_chunk(0).nnz == 400_000
        with pytest.raises(SizeLimitError, match=r"columns 0:8 hold 3200000 entries"):
            f.read_all()


def test_env_vars_set_the_limits_in_a_fresh_process(tmp_path):
    p = _constant_columns(tmp_path, 100_000, 10)
    code = ("import sys; from dask_factor.io.spz import SpzFile\n"
            "try:\n    SpzFile(sys.argv[1]); print('opened')\n"
            "except Exception as e:\n    print(type(e).__name__)\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), DASK_FACTOR_IO_MIN_BYTES="1M")
    out = subprocess.run([sys.executable, "-c", code, str(p)], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "SpzSizeLimitError"
    env["DASK_FACTOR_IO_MAX_RATIO"] = "1e6"
    out = subprocess.run([sys.executable, "-c", code, str(p)], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out == "opened"


def test_set_limits_and_validation():
    old = set_limits(max_ratio=5, min_bytes="2M")
    try:
        assert get_limits().max_ratio == 5 and get_limits().min_bytes == 2 * MB
        assert get_limits().budget(10**6) == 5 * 10**6
    finally:
        set_limits(reset=True)
    assert get_limits().max_ratio == old.max_ratio
    assert parse_bytes("1.5G") == 3 << 29 and parse_bytes("64 MiB") == 64 * MB
    for bad in ("lots", -1, float("nan"), True):
        with pytest.raises(ValueError):
            parse_bytes(bad)
    with pytest.raises(ValueError, match="max_ratio"):
        Limits(max_bytes=1, max_ratio=-1)
    assert Limits(max_bytes="1G").budget(10**12) == 1 << 30


# --------------------------------------------------------------------------- early refusal


def test_a_corrupt_value_stream_is_refused_before_the_gaps_are_decoded(tmp_path, monkeypatch):
    from dask_factor.io.spz import reader

    m, cols = 200_000, 5
    bad_values = craft.one_symbol_table(1)[:-2] + b"\x00\x10"  # frequencies sum to 4096
    bad_values += struct.pack("<I", 4) + craft.EMPTY_RANS + struct.pack("<I", 0)
    p = tmp_path / "badvalues.spz"
    p.write_bytes(craft.file_v2(m, cols, cols, [{"gaps": craft.gap_stream([m] * cols),
                                                 "values": bad_values, "nnz": m * cols,
                                                 "num_cols": cols}]))

    def never(*args):  # the decoder must not even start
        raise AssertionError("decode_chunk ran")

    monkeypatch.setattr(reader, "decode_chunk", never)
    with SpzFile(p) as f, pytest.raises(SpzFormatError, match="does not sum to 16384"):
        f.read_chunk(0)


def test_a_stream_too_short_for_its_symbols_is_refused(tmp_path):
    # two symbols of frequency 8192: every symbol costs a bit, so 4 bytes cannot hold 10^6
    table = struct.pack("<3H", 2, 8192, 8192)
    gaps = struct.pack("<I", 3) + craft.varint(10**6)
    gaps += table + struct.pack("<I", 4) + craft.EMPTY_RANS + struct.pack("<I", 0)
    p = tmp_path / "short.spz"
    p.write_bytes(craft.file_v2(10**6, 1, 1, [{"gaps": gaps, "nnz": 10**6, "num_cols": 1,
                                              "values": craft.constant_escape_block(1)}]))
    with SpzFile(p) as f, pytest.raises(SpzFormatError, match="too short for the number of"):
        f.read_chunk(0)


# --------------------------------------------------------------------------- Matrix Market


@pytest.mark.parametrize("name", list(MTX_BOMBS))
@pytest.mark.parametrize("gz", [False, True])
def test_mtx_header_bombs(tmp_path, name, gz):
    import gzip

    p = tmp_path / (name + (".gz" if gz else ""))
    p.write_bytes(gzip.compress(MTX_BOMBS[name]) if gz else MTX_BOMBS[name])
    with pytest.raises(MatrixFormatError, match="holds at most|limit") as ei:
        open_matrix(p)
    assert p.name in str(ei.value)
    with pytest.raises(MatrixFormatError):
        write_matrix(p, tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("line", ["10 x 3", "10 10", "-1 5 2", "3 3 3 3", ""])
def test_mtx_bad_size_line(tmp_path, line):
    p = tmp_path / "bad.mtx"
    p.write_text(f"%%MatrixMarket matrix coordinate real general\n{line}\n1 1 1\n")
    with pytest.raises(MatrixFormatError, match="bad.mtx") as ei:
        open_matrix(p)
    assert "size line" in str(ei.value) or "Truncated" in str(ei.value)


# --------------------------------------------------------------------------- zarr / h5ad


def _zarr_json(path: Path):
    return json.loads(path.read_text())


@pytest.fixture
def small_zarr(tmp_path):
    A = sp.random(30, 40, density=0.2, format="csc", random_state=1, dtype=np.float32)
    return write_matrix(A, tmp_path / "a.zarr", block_nnz=100)


def test_zarr_attributes_declaring_a_huge_shape(small_zarr):
    meta = small_zarr / "zarr.json"
    doc = _zarr_json(meta)
    doc["attributes"]["shape"] = [2**40, 40]
    meta.write_text(json.dumps(doc))
    with pytest.raises(SizeLimitError, match=r"declares shape 1099511627776 x 40") as ei:
        open_matrix(small_zarr)
    assert "a.zarr" in str(ei.value)


def test_zarr_arrays_declaring_more_entries_than_stored(small_zarr):
    # indices and data declare 2**40 entries; the pointer says the last column holds them all
    for key in ("indices", "data"):
        meta = small_zarr / key / "zarr.json"
        doc = _zarr_json(meta)
        doc["shape"] = [2**40]
        meta.write_text(json.dumps(doc))
    doc = _zarr_json(small_zarr / "zarr.json")
    doc["attributes"].pop("all_chunks_written")
    doc["attributes"].pop("block_bounds")
    doc["attributes"].pop("block_indptr")
    (small_zarr / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(MatrixFormatError, match="indptr ends at \\d+ but 1099511627776"):
        open_matrix(small_zarr)


def test_h5ad_declaring_a_huge_shape(tmp_path):
    import h5py

    A = sp.random(30, 40, density=0.2, format="csc", random_state=1, dtype=np.float32)
    p = write_matrix(A, tmp_path / "a.h5ad")
    with h5py.File(p, "r+") as f:
        f["X"].attrs["shape"] = np.array([2**40, 30])
    with pytest.raises(MatrixFormatError, match="a.h5ad"):
        open_matrix(p)


# --------------------------------------------------------------------------- memory


def _measure(paths: list[Path]) -> tuple[list[dict], int]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, str(HERE / "measure_open.py"), *map(str, paths)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    return lines[:-1], int(lines[-1]["maxrss_delta"])


def test_opening_small_files_never_takes_more_than_100_mb(tmp_path):
    """Every bomb above, plus garbage and near-limit files, each at most 1 KB."""
    paths = []
    for name, (make, _) in SPZ_BOMBS.items():
        paths.append(tmp_path / f"{name}.spz")
        paths[-1].write_bytes(make())
    for name, data in MTX_BOMBS.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    # near the largest constant matrix the default limit lets through (64 MB estimated)
    paths.append(_constant_columns(tmp_path, 110_000, 10))
    paths.append(tmp_path / "garbage.spz")
    paths[-1].write_bytes(b"SPRZ\x02\x00" + bytes(range(256)) * 3)
    assert all(p.stat().st_size <= 1024 for p in paths)
    records, rss = _measure(paths)
    assert len(records) == len(paths)
    for r in records:
        assert r["outcome"] == "ok" or "Error" in r["outcome"], r
        assert "MemoryError" not in r["outcome"], r
        assert r["peak"] < 100 * MB, r
    assert rss < 100 * MB, f"peak RSS grew by {rss / MB:.0f} MB"
    assert any(r["outcome"] == "ok" for r in records)  # the near-limit file was read


def test_opening_fuzzed_small_spz_files_never_takes_more_than_100_mb():
    import fuzz

    res = fuzz.run("spz-recomputed", 150, seed=17, memory=True, max_file_bytes=1024)
    assert not res["failures"], res["failures"][:5]
    assert res["peak"] < 100 * MB, res["peak"]
    assert res["maxrss_delta"] < 100 * MB, res["maxrss_delta"]
