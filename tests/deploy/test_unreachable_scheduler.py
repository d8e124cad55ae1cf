"""``dask-factor fit ... --scheduler ADDRESS`` with nothing listening there fails within the
connect timeout with one line and exit status 2 (it used to retry 31 s and print a traceback)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from dask_factor import cluster, datasets
from dask_factor.io import write_matrix

pytestmark = pytest.mark.daemons  # starts the CLI against dead schedulers (a separate step)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    path = tmp_path_factory.mktemp("unreachable") / "birds.zarr"
    write_matrix(datasets.load("hawaiibirds").matrix, str(path))
    return path


def _fit(src, out, *extra, timeout=60):
    t0 = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "dask_factor.cli", "fit", str(src), str(out),
                          "--k", "3", *extra], capture_output=True, text=True, timeout=timeout)
    return run, time.monotonic() - t0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1", "closed"])
def test_unreachable_scheduler_is_one_line_and_exit_2(src, tmp_path, address):
    address = f"tcp://127.0.0.1:{_closed_port()}" if address == "closed" else address
    out = tmp_path / "model.npz"
    run, seconds = _fit(src, out, "--scheduler", address)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2, run.stderr
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("dask-factor fit: error: no Dask scheduler answered at "
                               f"{address} within 10 s"), lines[0]
    assert "Traceback" not in run.stderr and run.stdout == ""
    # the 10 s connect timeout plus interpreter start-up and imports (the old failure took 31 s)
    assert seconds < 20, seconds
    assert not out.exists()


@pytest.mark.timeout(60)
def test_connect_timeout_option(src, tmp_path):
    run, seconds = _fit(src, tmp_path / "m.npz", "--scheduler", "tcp://127.0.0.1:1",
                        "--connect-timeout", "2")
    assert run.returncode == 2 and "within 2 s" in run.stderr, run.stderr
    assert seconds < 2 + 10, seconds


@pytest.mark.cluster
@pytest.mark.timeout(120)
def test_connect_reaches_a_running_scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, processes=False, protocol="tcp", host="127.0.0.1",
                      dashboard_address=":0") as lc, \
            cluster.connect(lc.scheduler_address, timeout=10) as client:
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3
