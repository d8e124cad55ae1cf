"""Issue 17, item 4: only regular files and directories are opened.

A FIFO named ``x.spz`` used to block ``open()`` forever (the reader waited for a writer).  Every
entry point now looks at the path with ``os.stat`` first and refuses a FIFO, socket or device with
an error naming it; the .spz codec also opens non-blocking and checks what it got.  Each case has
a timeout: a regression hangs no longer than that.
"""

from __future__ import annotations

import os

import pytest
from hostile_helpers import base_matrix

from dask_factor.io import (
    MatrixFormatError,
    detect_format,
    matrix_info,
    open_matrix,
    read_metadata,
    write_matrix,
)

pytestmark = pytest.mark.timeout(60)

NAMES = ["x.spz", "x.h5ad", "x.zarr", "matrix.mtx", "x.mtx.gz", "noext"]


def _entry_points():
    from dask_factor.io.registry import open_stream

    return {
        "open_matrix": lambda p: open_matrix(p),
        "open_matrix_format": lambda p: open_matrix(p, format="spz"),
        "detect_format": detect_format,
        "matrix_info": matrix_info,
        "read_metadata": read_metadata,
        "open_stream": open_stream,
        "write_matrix_source": lambda p: write_matrix(p, p.parent / "out.zarr"),
    }


@pytest.fixture
def fifo(tmp_path, request):
    p = tmp_path / request.param
    os.mkfifo(p)
    return p


@pytest.mark.parametrize("fifo", NAMES, indirect=True)
@pytest.mark.parametrize("entry", list(_entry_points()))
def test_a_fifo_is_refused_without_blocking(fifo, entry):
    with pytest.raises(MatrixFormatError, match="is a FIFO, not a regular file or directory") \
            as ei:
        _entry_points()[entry](fifo)
    assert str(fifo) in str(ei.value)
    assert not (fifo.parent / "out.zarr").exists()


@pytest.mark.parametrize("fifo", ["x.spz"], indirect=True)
def test_spz_codec_refuses_a_fifo(fifo):
    from dask_factor.io.spz import SpzFile, SpzFormatError

    with pytest.raises(SpzFormatError, match="is a FIFO"):
        SpzFile(fifo)


@pytest.mark.parametrize("fifo", ["x.spz", "x.h5ad"], indirect=True)
def test_nmf_and_the_cli_refuse_a_fifo(fifo, capsys):
    from dask_factor import nmf
    from dask_factor.cli import main

    with pytest.raises(MatrixFormatError, match="FIFO"):
        nmf(fifo, k=2, maxit=1)
    assert main(["info", str(fifo)]) != 0
    assert "FIFO" in capsys.readouterr().err


@pytest.mark.parametrize("fifo", ["x.spz"], indirect=True)
def test_a_symlink_to_a_fifo_is_refused(fifo):
    link = fifo.parent / "link.spz"
    link.symlink_to(fifo)
    with pytest.raises(MatrixFormatError, match="FIFO"):
        open_matrix(link)


@pytest.mark.parametrize("path", ["/dev/null", "/dev/zero"])
def test_devices_are_refused(path):
    if not os.path.exists(path):  # pragma: no cover
        pytest.skip(f"{path} missing")
    with pytest.raises(MatrixFormatError, match="is a device"):
        open_matrix(path, format="spz")


@pytest.mark.parametrize("fifo", ["x.spz", "x.zarr", "x.h5ad"], indirect=True)
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fifo_is_never_a_write_target(fifo, overwrite):
    with pytest.raises(FileExistsError, match="FIFO"):
        write_matrix(base_matrix(), fifo, overwrite=overwrite)
    assert fifo.exists() and sorted(os.listdir(fifo.parent)) == [fifo.name]


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        open_matrix(tmp_path / "missing.spz")
