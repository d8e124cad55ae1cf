"""Fixtures of the factorization-graph tests: the bundled data and the views the article builds."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def geography(hawaiibirds):
    """The seed article's second view: scaled lat/lng, weighted to 10 % of the species signal.

    ``rbind(lat = scale(lat), lng = scale(lng)) * 0.1 * sum(|species|) / sum(|geo|)`` — signed,
    2 × 1183, dense.
    """
    A, _, cols = hawaiibirds

    def zscore(x):
        x = np.asarray(x, dtype=np.float64)
        return (x - x.mean()) / x.std(ddof=1)

    geo = np.vstack([zscore(cols["lat"]), zscore(cols["lng"])])
    weight = 0.1 * np.abs(A).sum() / np.abs(geo).sum()
    return geo * weight


@pytest.fixture(scope="module")
def cluster_client():
    """A 2-process LocalCluster on loopback, started and stopped by the tests that use it."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address="127.0.0.1:0", host="127.0.0.1") as cluster:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2)
            yield client
