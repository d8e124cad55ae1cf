"""Issue 17, item 3 (stores): a damaged zarr or h5ad store gives an error naming it.

zarr, h5py, numcodecs, json and anndata report damage with ``KeyError``, ``JSONDecodeError``,
``RuntimeError``, ``IORegistryError`` or an ``OSError`` without a file name.  Through every
entry point (``open_matrix`` and its blocks, ``matrix_info``, ``read_metadata``, ``nmf``, the CLI)
each damage below must give a ``MatrixFormatError`` (or a ``ValueError``/``OSError``) whose
message names the store — never a bare ``KeyError``/``IndexError``/``JSONDecodeError``.  Stores
we write carry checksums (zstd frames, HDF5 fletcher32) and every chunk, so damaged or lost
chunks are refused rather than read as other numbers or zeros.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dask
import numpy as np
import pytest
from hostile_helpers import base_matrix

from dask_factor.io import MatrixFormatError, matrix_info, open_matrix, read_metadata


def _json_edit(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _flip(path: Path, pos: int = -40) -> None:
    b = bytearray(path.read_bytes())
    b[pos] ^= 0x10
    path.write_bytes(bytes(b))


def _first_chunk(d: Path) -> Path:
    return sorted(p for p in d.rglob("*")
                  if p.is_file() and not p.name.startswith((".z", "zarr")))[0]


ZARR = {
    "root attributes missing shape": lambda p: _json_edit(
        p / "zarr.json", lambda d: d["attributes"].pop("shape")),
    "root attributes shape not a pair": lambda p: _json_edit(
        p / "zarr.json", lambda d: d["attributes"].__setitem__("shape", "x")),
    "root zarr.json truncated": lambda p: (p / "zarr.json").write_bytes(
        (p / "zarr.json").read_bytes()[:50]),
    "root attributes not an object": lambda p: _json_edit(
        p / "zarr.json", lambda d: d.__setitem__("attributes", 0)),
    "indices removed": lambda p: shutil.rmtree(p / "indices"),
    "indptr metadata removed": lambda p: (p / "indptr" / "zarr.json").unlink(),
    "data metadata not JSON": lambda p: (p / "data" / "zarr.json").write_bytes(b"\xff\xfe{"),
    "data dtype unknown": lambda p: _json_edit(
        p / "data" / "zarr.json", lambda d: d.__setitem__("data_type", "complex512")),
    "indptr one entry short": lambda p: _json_edit(
        p / "indptr" / "zarr.json", lambda d: d.__setitem__("shape", [d["shape"][0] - 1])),
    "block bounds garbage": lambda p: _json_edit(
        p / "zarr.json", lambda d: d["attributes"].__setitem__("block_bounds", [5, 3, "x"])),
    "a data chunk flipped": lambda p: _flip(_first_chunk(p / "data")),
    "an indices chunk flipped": lambda p: _flip(_first_chunk(p / "indices"), 20),
    "an indptr chunk lost": lambda p: _first_chunk(p / "indptr").unlink(),
    "a data chunk lost": lambda p: _first_chunk(p / "data").unlink(),
}

ANNDATA_ZARR = {
    "X attributes missing shape": lambda p: (
        _json_edit(p / "X" / ".zattrs", lambda d: d.pop("shape")), _drop_consolidated(p)),
    "consolidated metadata not JSON": lambda p: (p / ".zmetadata").write_bytes(b"{\"meta"),
    "X indices removed": lambda p: (shutil.rmtree(p / "X" / "indices"), _drop_consolidated(p)),
    "X encoding unknown": lambda p: (
        _json_edit(p / "X" / ".zattrs", lambda d: d.__setitem__("encoding-type", "x")),
        _drop_consolidated(p)),
    "obs index removed": lambda p: (shutil.rmtree(p / "obs" / "_index"), _drop_consolidated(p)),
}


def _drop_consolidated(p: Path) -> None:
    (p / ".zmetadata").unlink(missing_ok=True)


def _h5(edit):
    def run(p: Path) -> None:
        import h5py

        with h5py.File(p, "r+") as f:
            edit(f)
    return run


H5AD = {
    "X indices deleted": _h5(lambda f: f["X"].__delitem__("indices")),
    "X shape attribute deleted": _h5(lambda f: f["X"].attrs.__delitem__("shape")),
    "X shape attribute a string": _h5(lambda f: f["X"].attrs.__setitem__("shape", "csc")),
    "X encoding unknown": _h5(lambda f: f["X"].attrs.__setitem__("encoding-type", "x")),
    "X deleted": _h5(lambda f: f.__delitem__("X")),
    "obs index deleted": _h5(lambda f: f["obs"].__delitem__("_index")),
    "file truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "superblock damaged": lambda p: _flip(p, 20),
    "a data chunk flipped": lambda p: _flip_h5_data(p),
}


def _flip_h5_data(p: Path) -> None:
    """Flip a bit inside X/data's first chunk (found through h5py, changed as raw bytes)."""
    import h5py

    with h5py.File(p, "r") as f:
        off = f["X"]["data"].id.get_chunk_info(0).byte_offset
    _flip(p, off + 8)


CASES = ([("zarr", k) for k in ZARR] + [("anndata-zarr", k) for k in ANNDATA_ZARR]
         + [("h5ad", k) for k in H5AD])
ENTRIES = ["open_matrix", "matrix_info", "read_metadata", "nmf", "cli"]


def _damaged(kind: str, name: str, tmp_path: Path, clean_files) -> Path:
    src = clean_files[kind]
    dst = tmp_path / src.name
    (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    {"zarr": ZARR, "anndata-zarr": ANNDATA_ZARR, "h5ad": H5AD}[kind][name](dst)
    return dst


def _call(entry: str, p: Path, capsys):
    if entry == "open_matrix":
        with dask.config.set(scheduler="synchronous"):
            return open_matrix(p).compute()
    if entry == "matrix_info":
        return matrix_info(p)
    if entry == "read_metadata":
        return read_metadata(p)
    if entry == "nmf":
        from dask_factor import nmf

        with dask.config.set(scheduler="synchronous"):
            return nmf(p, k=2, maxit=2, seed=1)
    from dask_factor.cli import main

    code = main(["info", str(p)])
    err = capsys.readouterr().err
    if code:
        assert "Traceback" not in err and p.name in err, err
        raise MatrixFormatError(err)
    return None


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(("kind", "name"), CASES)
def test_damage_gives_an_error_naming_the_store(kind, name, entry, tmp_path, clean_files,
                                                capsys):
    p = _damaged(kind, name, tmp_path, clean_files)
    try:
        out = _call(entry, p, capsys)
    except (MatrixFormatError, ValueError, TypeError, OSError) as err:
        assert type(err) not in (KeyError, IndexError, json.JSONDecodeError), repr(err)
        msg = f"{err} {getattr(err, 'filename', '') or ''}"
        assert p.name in msg, msg
        return
    # reading without an error is allowed only where the damage does not reach (and then the
    # matrix read is exact): the obs table for the matrix, chunks for headers and metadata
    if entry == "open_matrix":
        np.testing.assert_array_equal(out.toarray(), base_matrix().toarray())
    reaches = {"open_matrix": "obs" not in name, "nmf": "obs" not in name,
               "read_metadata": "obs" in name,
               "matrix_info": not any(w in name for w in ("chunk", "obs", "file truncated")),
               "cli": not any(w in name for w in ("chunk", "obs", "file truncated"))}[entry]
    assert not reaches, f"{name}: read without an error through {entry}"


def test_missing_layer_is_a_value_error_naming_the_file(clean_files):
    from dask_factor.io.errors import MissingElementError

    with pytest.raises(MissingElementError, match="layers/nope") as ei:
        open_matrix(clean_files["h5ad"], layer="nope")
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, KeyError)
    assert "a.h5ad" in str(ei.value) and not str(ei.value).startswith("'")


def test_store_checksums_are_written(clean_files):
    import h5py
    import zarr

    g = zarr.open_group(str(clean_files["zarr"]), mode="r")
    codecs = json.loads((clean_files["zarr"] / "data" / "zarr.json").read_text())["codecs"]
    assert any(c["name"] == "zstd" and c["configuration"]["checksum"] for c in codecs)
    assert g.attrs["all_chunks_written"] is True
    with h5py.File(clean_files["h5ad"], "r") as f:
        assert all(f["X"][k].fletcher32 for k in ("data", "indices", "indptr"))
