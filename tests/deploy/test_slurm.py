"""deploy/slurm on a live single-node SLURM: Debian's slurm-wlm (slurmctld + slurmd + munged)
started on 127.0.0.1 in this module's own directory by ``deploy/slurm/local_slurm.py``.

``SLURMCluster`` worker jobs (through :func:`dask_factor.cluster.slurm` and the recipe's
``jobqueue.yaml``) and the sbatch recipe (``fit.sbatch``: scheduler, ``srun`` workers,
``dask-factor fit``) each give exactly the factors of the local fit. Where SLURM cannot start,
the tests are skipped with the reason (``-ra`` prints it); with ``DASK_FACTOR_REQUIRE_SLURM=1``
(``.ci/run`` sets it when SLURM starts on the machine) they fail instead.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dask_factor import cluster, datasets, nmf
from dask_factor.io import write_matrix

pytestmark = [pytest.mark.slurm, pytest.mark.cluster, pytest.mark.daemons,
              pytest.mark.filterwarnings("ignore:nmf. stopped at maxit")]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "deploy" / "slurm"
BIN = Path(sys.executable).parent  # the venv's python, dask, dask-factor


def _local_slurm_module():
    spec = importlib.util.spec_from_file_location("local_slurm", RECIPE / "local_slurm.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_slurm", mod)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; ``SLURM_CONF`` set for the module; always stopped."""
    ls = _local_slurm_module()
    t0 = time.monotonic()
    instance = ls.LocalSlurm(cpus=max(os.cpu_count() or 1, 2), timeout=60)  # 2 jobs of 1 CPU
    try:
        instance.start()
    except ls.SlurmUnavailable as err:
        message = f"SLURM cannot start here: {err}"
        print(message, file=sys.stderr)
        if os.environ.get("DASK_FACTOR_REQUIRE_SLURM") == "1":
            pytest.fail(message)
        pytest.skip(message)
    print(f"local SLURM up in {time.monotonic() - t0:.1f} s ({instance.conf})", file=sys.stderr)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(instance.conf))
            yield instance
    finally:
        instance.stop()
        assert not instance.root.exists()


def _job_logs(directory: Path) -> str:
    parts = []
    for path in sorted(directory.glob("*")) if directory.is_dir() else []:
        if path.is_file():
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


@pytest.mark.timeout(300)
def test_slurmcluster_worker_jobs_fit_the_local_factors(slurm, tmp_path):
    A = datasets.load("hawaiibirds").matrix
    options = dict(k=4, seed=11, maxit=25, chunks=200)
    local = nmf(A, **options)

    logs = tmp_path / "jobs"
    t0 = time.monotonic()
    try:
        client = cluster.slurm(jobs=2, config=RECIPE / "jobqueue.yaml", cores=1, memory="1GiB",
                               walltime="00:10:00", interface="lo", log_directory=logs,
                               scheduler_options={"dashboard_address": ":0"}, timeout=120)
    except TimeoutError as err:
        pytest.fail(f"{err}\njobs: {slurm.jobs()}\n{_job_logs(logs)}")
    with client:
        up = time.monotonic() - t0
        script = client.cluster.job_script()
        assert "#SBATCH -J dask-factor" in script  # the recipe's settings were used
        assert "export OMP_NUM_THREADS=1" in script
        running = slurm.run("squeue", "-h", "-t", "RUNNING", "-o", "%i %j").stdout.split("\n")
        running = [line.split() for line in running if line.strip()]
        assert len(running) == 2 and all(name == "dask-factor" for _, name in running)
        job_ids = set(client.run(lambda: os.environ.get("SLURM_JOB_ID")).values())
        assert job_ids == {job for job, _ in running}  # each worker lives in its own SLURM job

        remote = nmf(A, **options, client=client)
        W, d, H = remote.W, remote.d, remote.H  # H is gathered from the workers
        fit_seconds = time.monotonic() - t0 - up
    assert slurm.wait_jobs_done(30), f"jobs left after close: {slurm.jobs()}"
    print(f"SLURM: 2 worker jobs up in {up:.1f} s, fit {fit_seconds:.1f} s", file=sys.stderr)

    assert remote.iterations == local.iterations
    np.testing.assert_array_equal(W, local.W)
    np.testing.assert_array_equal(d, local.d)
    np.testing.assert_array_equal(H, local.H)
    assert remote.loss_history == local.loss_history


@pytest.mark.timeout(300)
def test_readme_sbatch_command_fits_the_local_factors(slurm, tmp_path, readme_cluster):
    """The README's ``sbatch ... deploy/slurm/fit.sbatch cells.zarr model.npz --k 20 --seed 1``
    (with the input and output in this test's directory, a job log, and --maxit 20) writes the
    model of the same fit run locally."""
    argv = readme_cluster.command("sbatch")
    script = next(i for i, a in enumerate(argv) if a.endswith("fit.sbatch"))
    assert argv[script] == "deploy/slurm/fit.sbatch"
    sbatch_opts, fit_args = argv[1:script], argv[script + 1:]
    assert fit_args[:2] == ["cells.zarr", "model.npz"] and "--k" in fit_args

    A = datasets.load("hawaiibirds").matrix
    src = tmp_path / "cells.zarr"
    write_matrix(A, str(src))
    out = tmp_path / "model.npz"
    work = tmp_path / "work"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "DASK_FACTOR_INTERFACE": "lo", "DASK_FACTOR_WORKDIR": str(work),
           "DASK_FACTOR_WAIT": "120", "SLURM_CONF": str(slurm.conf)}
    log = tmp_path / "fit.out"
    fit_args = [str(src), str(out), *fit_args[2:], "--maxit", "20"]
    submit = subprocess.run(
        ["sbatch", "--parsable", *sbatch_opts, "--cpus-per-task=1", "--mem=2G",
         "--time=00:10:00", f"--output={log}", f"--chdir={tmp_path}", argv[script], *fit_args],
        env=env, capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert submit.returncode == 0, submit.stderr
    job = submit.stdout.strip().split(";")[0]

    deadline = time.monotonic() + 240
    while job in slurm.jobs():
        if time.monotonic() > deadline:
            slurm.run("scancel", job, check=False)
            pytest.fail(f"job {job} still running after 240 s\n{_job_logs(work)}")
        time.sleep(1)
    info = slurm.run("scontrol", "show", "job", job, check=False).stdout
    text = log.read_text(errors="replace") if log.exists() else "(no output)"
    assert "JobState=COMPLETED" in info and "ExitCode=0:0" in info, \
        f"{info}\n--- fit.out\n{text}\n{_job_logs(work)}"
    tasks = int(next(o.split("=")[1] for o in sbatch_opts if o.startswith("--ntasks=")))
    assert f"{tasks} workers connected" in text

    k, seed = int(fit_args[fit_args.index("--k") + 1]), int(fit_args[fit_args.index("--seed") + 1])
    local = nmf(str(src), k, seed=seed, maxit=20)
    with np.load(out) as z:
        # the batch job's processes reproduce the fit to the last bit of float32 W; float64 d
        # has differed from the local fit in its last bit (1 ulp, not understood yet)
        np.testing.assert_array_equal(z["W"], local.W)
        np.testing.assert_allclose(z["d"], local.d, rtol=1e-13)
        np.testing.assert_allclose(z["H"], local.H, rtol=1e-6, atol=1e-12)


def test_a_missing_slurm_is_reported_with_what_to_install(monkeypatch):
    """No daemons started: what the skip (and ``.ci/run``) prints when the packages are absent."""
    ls = _local_slurm_module()
    monkeypatch.setattr(ls.shutil, "which", lambda name, path=None: None)
    reason = ls.missing()
    assert "slurmctld" in reason and "apt-get install slurm-wlm munge" in reason
    with pytest.raises(ls.SlurmUnavailable, match="apt-get install slurm-wlm munge"):
        ls.LocalSlurm().start()
