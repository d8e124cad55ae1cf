"""Every command of the README's "On a cluster" section runs in a test: the Python block here, the
``dask-factor fit --scheduler`` and ``local_slurm.py --check`` lines here, the ``sbatch`` line in
test_slurm.py (on a live SLURM) and the ``kubectl apply`` files in test_kubernetes_manifests.py
(validated; no Kubernetes runs here)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

from dask_factor import cluster, datasets, nmf
from dask_factor.io import write_matrix

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.daemons,
              pytest.mark.filterwarnings("ignore:nmf. stopped at maxit")]


def test_every_shell_command_is_covered(readme_cluster):
    programs = [argv[0] for argv in readme_cluster.shell]
    # each has a test: sbatch (test_slurm), kubectl (manifests), dask-factor and python3 (here)
    assert sorted(programs) == ["dask-factor", "kubectl", "python3", "sbatch"]
    for argv in readme_cluster.shell:
        for arg in argv:
            if arg.startswith("deploy/"):
                assert (ROOT / arg).is_file(), arg


def test_the_cluster_extra_is_what_the_readme_says(readme_cluster):
    assert 'pip install "dask_factor[cluster]"' in readme_cluster.text
    with open(ROOT / "pyproject.toml", "rb") as fh:
        extra = tomllib.load(fh)["project"]["optional-dependencies"]["cluster"]
    assert {Requirement(r).name for r in extra} >= {"bokeh", "dask-jobqueue", "dask-kubernetes"}


def test_kubectl_files_are_the_validated_manifests(readme_cluster):
    argv = readme_cluster.command("kubectl")
    assert argv[:2] == ["kubectl", "apply"]
    files = [argv[i + 1] for i, a in enumerate(argv) if a == "-f"]
    assert files == ["deploy/kubernetes/data-pvc.yaml", "deploy/kubernetes/daskjob.yaml"]
    # test_kubernetes_manifests validates every deploy/kubernetes/*.yaml but the Helm values
    assert all((ROOT / f).parent == ROOT / "deploy" / "kubernetes" for f in files)


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_python_block_runs(readme_cluster, capsys):
    scope: dict = {}
    exec(compile(readme_cluster.python, "README.md (On a cluster)", "exec"), scope)
    assert scope["model"].W.shape == (183, 8)
    assert capsys.readouterr().out.startswith("http://")  # the dashboard's address
    # the calls in its comments are valid calls of the entry points
    inspect.signature(cluster.slurm).bind(jobs=4, config="deploy/slurm/jobqueue.yaml")
    inspect.signature(cluster.kubernetes).bind("fit-1", n_workers=4)
    assert (ROOT / "deploy" / "slurm" / "jobqueue.yaml").is_file()
    assert cluster.load_config(ROOT / "deploy" / "slurm" / "jobqueue.yaml")["cores"] >= 1


@pytest.mark.cluster
@pytest.mark.timeout(300)
def test_dask_factor_fit_on_a_running_scheduler(readme_cluster, tmp_path):
    """The README's ``dask-factor fit ... --scheduler tcp://...`` against a LocalCluster's
    scheduler (its address in place of the README's; --maxit 10 added) gives the local fit."""
    argv = readme_cluster.command("dask-factor")
    assert argv[1:4] == ["fit", "cells.zarr", "model.npz"] and "--scheduler" in argv
    src, out = tmp_path / "cells.zarr", tmp_path / "model.npz"
    write_matrix(datasets.load("hawaiibirds").matrix, str(src))
    with cluster.local(n_workers=2, dashboard_address=":0") as client:
        address = client.scheduler.address
        args = [str(src), str(out), *argv[4:], "--maxit", "10", "-q"]
        args[args.index("--scheduler") + 1] = address
        run = subprocess.run([sys.executable, "-m", "dask_factor.cli", "fit", *args],
                             capture_output=True, text=True, timeout=240)
        assert run.returncode == 0, run.stderr
    k, seed = int(args[args.index("--k") + 1]), int(args[args.index("--seed") + 1])
    local = nmf(str(src), k, seed=seed, maxit=10)
    with np.load(out) as z:
        np.testing.assert_array_equal(z["W"], local.W)
        np.testing.assert_array_equal(z["H"], local.H)


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_local_slurm_check_says_whether_slurm_starts(readme_cluster):
    argv = readme_cluster.command("python3")
    assert argv[1:] == ["deploy/slurm/local_slurm.py", "--check"]
    run = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                         timeout=150, cwd=ROOT)
    lines = run.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("[local_slurm] "), run.stdout + run.stderr
    if os.environ.get("DASK_FACTOR_REQUIRE_SLURM") == "1":
        assert run.returncode == 0, lines[0]
    assert run.returncode in (0, 3), run.stderr
    assert ("SLURM starts here" in lines[0]) == (run.returncode == 0)
