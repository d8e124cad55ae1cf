"""Issue 17, item 2: writes never delete or replace what they were not asked to.

``write_matrix(A, "my_project", format="spz", overwrite=True)`` used to delete the directory and
everything in it.  Now every writer refuses an existing path without ``overwrite=True``, and
``overwrite=True`` replaces only a file or store of the format being written that we recognise;
temporaries are written next to the target, removed on failure, and the ones a killed writer left
behind are removed by the next write.  Each case checks that nothing on disk was lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hostile_helpers import base_matrix, listing

from dask_factor.io import BlockStream, open_matrix, write_matrix
from dask_factor.io.blocks import atomic_path
from dask_factor.io.targets import check_target, clean_stale, temp_sibling

FORMATS = ["zarr", "spz", "h5ad"]


def _victim(kind: str, d: Path, fmt: str) -> Path:
    """Something that is not ours to replace, at ``d / <name>``."""
    if kind == "project_dir":  # the case: a directory of the user's files
        p = d / "my_project"
        (p / "data").mkdir(parents=True)
        (p / "notes.txt").write_text("three weeks of work")
        (p / "data" / "counts.csv").write_text("1,2,3\n")
        return p
    if kind == "empty_dir":
        p = d / f"empty.{fmt}"
        p.mkdir()
        return p
    if kind == "text_file":
        p = d / f"readme.{fmt}"
        p.write_text("not a matrix")
        return p
    if kind == "other_format":  # a matrix, but not of the format being written
        other = {"zarr": "spz", "spz": "h5ad", "h5ad": "zarr", "npz": "spz"}[fmt]
        p = write_matrix(base_matrix(), d / f"other.{other}")
        return p.rename(d / f"other_as.{fmt}")
    if kind == "foreign_zarr":  # a zarr store someone else wrote
        import zarr

        p = d / f"foreign.{fmt}"
        g = zarr.open_group(str(p), mode="w")
        g.create_array("x", data=np.arange(5))
        return p
    if kind == "symlink_to_project":
        target = _victim("project_dir", d, fmt)
        p = d / f"link.{fmt}"
        p.symlink_to(target, target_is_directory=True)
        return p
    raise ValueError(kind)  # pragma: no cover


VICTIMS = ["project_dir", "empty_dir", "text_file", "other_format", "foreign_zarr",
           "symlink_to_project"]


def _snapshot(d: Path) -> dict[str, bytes]:
    out = {}
    for name in listing(d):
        p = d / name
        out[name] = p.read_bytes()
    return out


@pytest.mark.parametrize("victim", VICTIMS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_write_matrix_overwrite_refuses_what_is_not_ours(fmt, victim, tmp_path):
    p = _victim(victim, tmp_path, fmt)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="refusing to replace it") as ei:
        write_matrix(base_matrix(), p, format=fmt, overwrite=True)
    assert str(p) in str(ei.value) and "overwrite=True only replaces" in str(ei.value)
    assert _snapshot(tmp_path) == before  # nothing lost, nothing left behind


@pytest.mark.parametrize("victim", VICTIMS)
@pytest.mark.parametrize("fmt", FORMATS)
def test_write_matrix_without_overwrite_refuses_any_existing_path(fmt, victim, tmp_path):
    p = _victim(victim, tmp_path, fmt)
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="exists .*pass overwrite=True"):
        write_matrix(base_matrix(), p, format=fmt)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_overwrite_replaces_our_own_format(fmt, tmp_path):
    p = tmp_path / f"a.{fmt}"
    write_matrix(base_matrix(), p)
    B = base_matrix()[:, :100] * 2
    with pytest.raises(FileExistsError):
        write_matrix(B, p)
    write_matrix(B, p, overwrite=True)
    np.testing.assert_array_equal(open_matrix(p).compute().toarray(), B.toarray())
    assert sorted(os.listdir(tmp_path)) == [p.name]  # no .old/.tmp siblings


@pytest.mark.parametrize("fmt", FORMATS)
def test_failed_overwrite_keeps_the_old_content(fmt, tmp_path):
    p = tmp_path / f"a.{fmt}"
    write_matrix(base_matrix(), p)
    before = _snapshot(tmp_path)
    A = base_matrix()

    def blocks():
        yield A[:, :100]
        raise RuntimeError("source died")

    stream = BlockStream(A.shape, A.dtype, True, np.array([0, 100, A.shape[1]]), blocks)
    with pytest.raises(RuntimeError, match="source died"):
        write_matrix(stream, p, overwrite=True)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------- write_spz, the CLI


def test_write_spz_refuses_existing_and_foreign_files(tmp_path):
    from dask_factor.io.spz import write_spz

    p = tmp_path / "a.spz"
    write_spz(base_matrix(), p)
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        write_spz(base_matrix(), p)
    write_spz(base_matrix()[:, :10], p, overwrite=True)
    assert open_matrix(p).shape == (60, 10)
    for victim in ("text_file", "other_format", "project_dir"):
        q = _victim(victim, tmp_path, "spz")
        before = _snapshot(tmp_path)
        with pytest.raises((FileExistsError, ValueError), match="refusing|directory"):
            write_spz(base_matrix(), q, overwrite=True)
        assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("victim", ["project_dir", "text_file", "other_format"])
@pytest.mark.parametrize("command", ["convert", "simulate"])
def test_cli_refuses_to_replace_what_is_not_ours(command, victim, tmp_path, capsys):
    from dask_factor.cli import main

    src = write_matrix(base_matrix(), tmp_path / "src.zarr")
    p = _victim(victim, tmp_path, "spz")
    before = _snapshot(tmp_path)
    if command == "convert":
        argv = ["convert", str(src), str(p), "--format", "spz", "--overwrite", "-q"]
    else:
        argv = ["simulate", str(p), "--samples", "30", "--features", "20", "--format", "spz",
                "--overwrite", "-q"]
    assert main(argv) != 0
    assert "refusing to replace it" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("victim", ["project_dir", "text_file", "other_format"])
def test_cli_fit_refuses_an_out_that_is_not_a_fit_before_fitting(victim, tmp_path, capsys):
    from dask_factor.cli import main

    src = write_matrix(base_matrix(), tmp_path / "src.zarr")
    out = _victim(victim, tmp_path, "npz")
    before = _snapshot(tmp_path)
    t = time.perf_counter()
    assert main(["fit", str(src), str(out), "--k", "2", "--maxit", "50", "-q"]) != 0
    assert time.perf_counter() - t < 5  # refused up front, not after the fit
    assert "refusing to replace it" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_cli_fit_into_a_read_only_directory_fails_up_front(tmp_path, capsys):
    from dask_factor.cli import main

    src = write_matrix(base_matrix(), tmp_path / "src.zarr")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        assert main(["fit", str(src), str(ro / "m.npz"), "--k", "2", "-q"]) != 0
    finally:
        ro.chmod(0o700)
    assert "cannot write in the directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- atomic_path


def test_atomic_path_without_a_format_never_replaces_a_plain_directory(tmp_path):
    p = _victim("project_dir", tmp_path, "x")
    before = _snapshot(tmp_path)
    with pytest.raises(FileExistsError, match="refusing"), atomic_path(p, overwrite=True) as tmp:
        tmp.mkdir()  # pragma: no cover - never reached
    assert _snapshot(tmp_path) == before
    f = tmp_path / "plain.bin"
    f.write_bytes(b"old")
    with atomic_path(f, overwrite=True) as tmp:
        tmp.write_bytes(b"new")
    assert f.read_bytes() == b"new"


def test_check_target_messages(tmp_path):
    with pytest.raises(FileNotFoundError, match="parent directory does not exist"):
        check_target(tmp_path / "no" / "a.spz", fmt="spz", overwrite=True)
    assert check_target(tmp_path / "new.spz", fmt="spz", overwrite=False) == tmp_path / "new.spz"
    os.mkfifo(tmp_path / "pipe.spz")
    with pytest.raises(FileExistsError, match="it is a FIFO"):
        check_target(tmp_path / "pipe.spz", fmt="spz", overwrite=True)


# --------------------------------------------------------------------------- temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("fmt", FORMATS)
def test_stale_temporaries_of_dead_writers_are_removed(fmt, tmp_path):
    p = tmp_path / f"a.{fmt}"
    dead, alive = _dead_pid(), os.getppid()
    host = temp_sibling(p).name.split("-")[1]
    stale = [tmp_path / f".{p.name}.tmp-{host}-{dead}-0badc0de",
             tmp_path / f".{p.name}.spill-{host}-{dead}-0badc0de"]
    stale[0].mkdir()
    (stale[0] / "zarr.json").write_text("{}")
    stale[1].write_bytes(b"half a file")
    keep = [tmp_path / f".{p.name}.tmp-{host}-{alive}-0badc0de",  # a live writer's
            tmp_path / f".{p.name}.tmp-ffffffff-{dead}-0badc0de",  # another host's
            tmp_path / f".other.{fmt}.tmp-{host}-{dead}-0badc0de",  # another target's
            tmp_path / "user_file.txt"]
    for k in keep:
        k.write_bytes(b"x")
    write_matrix(base_matrix(), p)
    assert not any(s.exists() for s in stale)
    assert all(k.exists() for k in keep)


def test_an_interrupted_swap_is_put_back(tmp_path):
    p = tmp_path / "a.zarr"
    write_matrix(base_matrix(), p)
    host = temp_sibling(p).name.split("-")[1]
    old = tmp_path / f".a.zarr.old-{host}-{_dead_pid()}-0badc0de"
    os.replace(p, old)  # killed after moving the old store aside, before the new one arrived
    assert clean_stale(p) == [old]
    assert open_matrix(p).shape == base_matrix().shape and not old.exists()


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np, scipy.sparse as sp
    from dask_factor.io import BlockStream, write_matrix
    A = sp.random(60, 240, density=0.1, format="csc", random_state=0, dtype=np.float32)
    def blocks():
        yield A[:, :120]
        print("writing", flush=True)
        time.sleep(60)
        yield A[:, 120:]
    s = BlockStream(A.shape, A.dtype, True, np.array([0, 120, 240]), blocks, nnz=A.nnz)
    opts = {"value_type": sys.argv[3]} if len(sys.argv) > 3 else {}
    write_matrix(s, sys.argv[1], format=sys.argv[2], overwrite=True, **opts)
""")


@pytest.mark.parametrize("fmt, opts", [("spz", ["float32"]), ("spz", []), ("zarr", [])])
def test_a_killed_write_leaves_the_target_and_the_next_write_cleans_up(fmt, opts, tmp_path):
    p = tmp_path / f"a.{fmt}"
    write_matrix(base_matrix(), p)
    before = _snapshot(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(p), fmt, *opts],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [n for n in os.listdir(tmp_path) if n != p.name]
    assert all(n.startswith((f".{p.name}.tmp-", f"..{p.name}.tmp-")) for n in left), left
    # the kill's debris; an "auto" .spz spills to an unlinked file first: nothing to see
    assert bool(left) == (fmt == "zarr" or bool(opts))
    assert {k: v for k, v in _snapshot(tmp_path).items() if k in before} == before
    write_matrix(base_matrix()[:, :50], p, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == [p.name]
    assert open_matrix(p).shape == (60, 50)


@pytest.mark.parametrize("stream", [False, True])
def test_write_spz_of_a_damaged_matrix_leaves_nothing(stream, tmp_path):
    from dask_factor.io import MatrixFormatError
    from dask_factor.io.spz import write_spz

    A = base_matrix()
    blocks = [sp.csc_matrix(A[:, j:j + 80]) for j in range(0, 240, 80)]
    blocks[1].indptr[5] = 10**6  # (slicing a damaged matrix would crash scipy itself)
    A.indptr[5] = 10**6
    src = ((j, b) for j, b in zip(range(0, 240, 80), blocks)) if stream else A
    with pytest.raises(MatrixFormatError, match="indptr"):
        write_spz(src, tmp_path / "a.spz", shape=A.shape)
    assert os.listdir(tmp_path) == []
