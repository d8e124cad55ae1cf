"""glibc malloc thresholds on cluster workers (``engine/malloc.py``).

distributed starts workers with ``MALLOC_TRIM_THRESHOLD_`` set, which makes every allocation of
128 KiB or more a fresh mapping whose pages fault in on first touch. The plugin's thresholds make
the arrays of a block come from malloc's heaps again: counted here as page faults, not time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import dask
import pytest

from dask_factor.engine import malloc

glibc = pytest.mark.skipif(not sys.platform.startswith("linux"),
                           reason="glibc's mallopt is not available")

_FAULTS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from dask_factor.engine import malloc

    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(20):
            a = np.empty(8 << 20, dtype=np.uint8)
            a[:] = 1  # touch every page
            del a
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults()
    plain = faults()
    assert malloc.set_thresholds()
    faults()
    print(plain, faults())
""")


@glibc
def test_thresholds_stop_page_faults_under_distributeds_trim_setting():
    """With distributed's worker setting, 20 allocations of 8 MB fault their pages in each time;
    after :func:`set_thresholds` the freed memory is reused and (almost) nothing faults."""
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    plain, tuned = int(out[0]), int(out[1])
    # (fewer faults than 4 KiB pages where the kernel maps some of them as huge pages)
    assert plain >= 20 * 100, plain
    assert tuned < 0.05 * plain, (tuned, plain)


class _FakeClient:
    def __init__(self):
        self.plugins = []

    def register_plugin(self, plugin, name=None):
        self.plugins.append(name)


def test_register_once_per_client_and_opt_out():
    c = _FakeClient()
    malloc.register(c)
    malloc.register(c)
    assert c.plugins == [malloc.MallocPlugin.name]
    off = _FakeClient()
    with dask.config.set({malloc.CONFIG_KEY: False}):
        malloc.register(off)
    assert off.plugins == []


@pytest.mark.cluster
@pytest.mark.daemons
@glibc
def test_a_fit_installs_the_plugin_on_every_worker(hawaiibirds):
    distributed = pytest.importorskip("distributed")
    from dask_factor import nmf

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, host="127.0.0.1") as lc, \
            distributed.Client(lc) as client:
        nmf(hawaiibirds.matrix, 3, seed=1, maxit=2, tol=0, client=client)
        seen = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert all(malloc.MallocPlugin.name in p for p in seen.values()), seen
        lc.scale(3)  # a worker that joins later gets it too
        client.wait_for_workers(3)
        seen = client.run(lambda dask_worker: sorted(dask_worker.plugins))
        assert len(seen) == 3 and all(malloc.MallocPlugin.name in p for p in seen.values())


@pytest.mark.cluster
@pytest.mark.daemons
def test_workers_in_the_clients_process_are_left_alone(hawaiibirds, monkeypatch):
    """``LocalCluster(processes=False)``: the workers are threads of this process, whose
    allocator the plugin does not touch."""
    distributed = pytest.importorskip("distributed")
    from dask_factor import nmf

    calls = []
    monkeypatch.setattr(malloc, "set_thresholds", lambda *a: calls.append(a) or True)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as lc, \
            distributed.Client(lc) as client:
        nmf(hawaiibirds.matrix, 3, seed=1, maxit=2, tol=0, client=client)
        assert all(malloc.MallocPlugin.name in p for p in
                   client.run(lambda dask_worker: sorted(dask_worker.plugins)).values())
    assert calls == []
