"""The dashboard works after ``pip install "dask_factor[cluster]"``, ``performance_report`` around a
fit writes its report, and the scheduler sees the fit's tasks under readable prefixes."""

from __future__ import annotations

import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from dask_factor import cluster, datasets, nmf

pytestmark = [pytest.mark.cluster, pytest.mark.daemons]

ROOT = Path(__file__).resolve().parents[2]


def test_the_cluster_extra_brings_a_bokeh_the_dashboard_accepts():
    from distributed.versions import BOKEH_REQUIREMENT

    with open(ROOT / "pyproject.toml", "rb") as fh:
        extras = tomllib.load(fh)["project"]["optional-dependencies"]
    bokeh = [Requirement(r) for r in extras["cluster"] if Requirement(r).name == "bokeh"]
    assert len(bokeh) == 1, "bokeh belongs in the cluster extra (the dashboard needs it)"
    lowest = min(s.version for s in bokeh[0].specifier if s.operator == ">=")
    # every bokeh the extra allows is one distributed serves the dashboard with
    assert BOKEH_REQUIREMENT.specifier.contains(lowest)
    assert Version(lowest) >= Version("3.1")


@pytest.mark.timeout(300)
@pytest.mark.filterwarnings("ignore:nmf. stopped at maxit")
def test_performance_report_and_task_prefixes_of_a_fit(tmp_path):
    from distributed import performance_report

    A = datasets.load("hawaiibirds").matrix
    report = tmp_path / "fit-report.html"
    with cluster.local(n_workers=2, dashboard_address="127.0.0.1:0") as client:
        link = client.dashboard_link
        with urllib.request.urlopen(link, timeout=30) as page:  # the dashboard serves /status
            assert page.status == 200
            assert b"Dask" in page.read()
        with performance_report(filename=str(report)):
            model = nmf(A, k=4, seed=3, maxit=6, chunks=300, client=client)
            assert model.W.shape == (183, 4)
        prefixes = set(client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes)))
    assert {"nmf-block-solve", "nmf-reduce", "nmf-w-update"} <= prefixes, sorted(prefixes)
    # no unreadable one-word names from before (h, ht, w, wpack, red)
    assert not prefixes & {"h", "ht", "w", "wpack", "red"}, sorted(prefixes)
    text = report.read_text()
    assert report.stat().st_size > 10_000 and "<html" in text.lower()
    assert "nmf-block-solve" in text  # the report's task stream names the fit's tasks
