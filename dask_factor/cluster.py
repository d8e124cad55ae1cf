"""Start a Dask cluster for a fit and get a :class:`distributed.Client` to pass as ``client=``.

Three entry points, one per place a fit runs; each returns a ``Client`` whose ``close()`` (or the
end of its ``with`` block) also shuts down the cluster it started:

* :func:`local` — a :class:`distributed.LocalCluster` of worker processes on this machine;
* :func:`slurm` — worker jobs submitted to SLURM by dask-jobqueue's ``SLURMCluster``
  (recipe and settings in ``deploy/slurm/``);
* :func:`kubernetes` — a ``DaskCluster`` created through the Dask Kubernetes operator
  (manifests in ``deploy/kubernetes/``); :func:`kubernetes_spec` is the resource it submits,
  :func:`kubernetes_job_spec` a ``DaskJob`` running ``dask-factor fit`` on such a cluster.

The SLURM and Kubernetes entry points need the ``cluster`` extra
(``pip install "dask_factor[cluster]"``); they import it only when called.  The same seed and
chunking give the same factors on all three (fixed-order reductions).

Examples
--------
>>> from dask_factor import cluster, datasets, nmf
>>> A, rows, cols = datasets.load("hawaiibirds")
>>> with cluster.local(n_workers=2, dashboard_address=":0") as client:
...     model = nmf(A, k=4, seed=1, maxit=5, client=client)
>>> model.W.shape
(183, 4)
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distributed import Client

from ._optional import MissingExtra, require

__all__ = ["connect", "local", "slurm", "kubernetes", "kubernetes_spec", "kubernetes_job_spec",
           "load_config", "MissingExtra", "SchedulerUnreachable", "CONNECT_TIMEOUT",
           "DEFAULT_IMAGE", "FIT_ENV"]

#: container image the Kubernetes entry point and ``deploy/`` use (built from deploy/Dockerfile)
DEFAULT_IMAGE = "ghcr.io/dask-factor/dask-factor:0.1.0"

#: environment for workers everywhere: one BLAS/OpenMP thread per Dask thread (our kernels are
#: single-threaded numba; nested thread pools only oversubscribe the cores)
FIT_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


#: seconds :func:`connect` (and ``dask-factor fit --scheduler``) waits for a scheduler
CONNECT_TIMEOUT = 10.0


class SchedulerUnreachable(ConnectionError):
    """No Dask scheduler answered at the address within the timeout."""


class _ClusterClient(Client):
    """A ``Client`` that also closes the cluster it was started with."""

    _owned_cluster = None

    def close(self, *args, **kwargs):
        try:
            return super().close(*args, **kwargs)
        finally:
            owned, self._owned_cluster = self._owned_cluster, None
            if owned is not None:
                owned.close()


def _client_for(cluster, n_workers: int, timeout: float | None, what: str) -> Client:
    try:
        client = _ClusterClient(cluster)
    except BaseException:
        cluster.close()
        raise
    client._owned_cluster = cluster
    if n_workers and timeout is not None:
        try:
            client.wait_for_workers(n_workers, timeout=timeout)
        except BaseException as err:
            have = len(client.scheduler_info(n_workers=-1)["workers"])
            client.close()
            if isinstance(err, TimeoutError | OSError):
                raise TimeoutError(f"{what}: {have} of {n_workers} workers connected within "
                                   f"{timeout:g} s") from None
            raise
    return client


# --------------------------------------------------------------------------- connect


def connect(address: str, timeout: float = CONNECT_TIMEOUT) -> Client:
    """A ``Client`` for the running scheduler at ``address``, or a one-line error in ``timeout`` s.

    distributed's own default is to retry for 30 s and raise an ``OSError`` buried in a long
    traceback; this fails sooner, with one sentence naming the address (what
    ``dask-factor fit --scheduler`` prints).

    Parameters
    ----------
    address : str
        ``tcp://host:port`` (or any address distributed accepts; ``host:port`` means tcp).
    timeout : float
        Seconds to keep trying.

    Returns
    -------
    distributed.Client

    Raises
    ------
    SchedulerUnreachable
        Nothing answered (refused, unreachable host, or no handshake) within ``timeout``.

    Examples
    --------
    >>> try:
    ...     connect("tcp://127.0.0.1:1", timeout=1)
    ... except SchedulerUnreachable as err:
    ...     print(err)
    no Dask scheduler answered at tcp://127.0.0.1:1 within 1 s; is it running, ...
    """
    import logging

    quiet = [logging.getLogger(name) for name in ("distributed.client", "distributed.comm.core",
                                                  "distributed.core")]
    levels = [log.level for log in quiet]
    for log in quiet:
        log.setLevel(logging.CRITICAL)  # the failure is reported once, below
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as err:
        text = str(err)
        cause = "" if not text or text.startswith("Timed out") else f" ({text})"
        raise SchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout:g} s{cause}; is it "
            "running, and is the address (tcp://HOST:PORT) reachable from here?") from None
    finally:
        for log, level in zip(quiet, levels):
            log.setLevel(level)


# --------------------------------------------------------------------------- local


def local(n_workers: int = 2, threads_per_worker: int = 1, *, processes: bool = True,
          memory_limit: str | int | None = "auto", dashboard_address: str | None = ":8787",
          **kwargs: Any) -> Client:
    """A :class:`distributed.LocalCluster` on this machine and a ``Client`` for it.

    Parameters
    ----------
    n_workers : int
        Worker processes (threads if ``processes=False``).
    threads_per_worker : int
        Threads per worker; each runs one column block's task at a time.
    processes : bool
        Workers in separate processes (the default), as on a cluster.
    memory_limit : str or int or None
        Per-worker limit, passed to ``LocalCluster``.
    dashboard_address : str or None
        Where the dashboard listens (``":0"``: any free port; ``None``: no dashboard pages).
        The dashboard needs bokeh, in the ``cluster`` extra.
    **kwargs
        Anything else ``LocalCluster`` takes.

    Returns
    -------
    distributed.Client
        Closing it closes the cluster. ``client.dashboard_link`` is the dashboard's address.

    Examples
    --------
    >>> from dask_factor import cluster
    >>> with cluster.local(n_workers=1, dashboard_address=":0") as client:
    ...     len(client.scheduler_info()["workers"])
    1
    """
    from distributed import LocalCluster

    kwargs.setdefault("host", "127.0.0.1")
    lc = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                      processes=processes, memory_limit=memory_limit,
                      dashboard_address=dashboard_address, **kwargs)
    return _client_for(lc, n_workers, 120.0, "local cluster")


# --------------------------------------------------------------------------- SLURM


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """``SLURMCluster`` arguments from a dask-jobqueue YAML file (``deploy/slurm/jobqueue.yaml``).

    Reads its ``jobqueue: slurm:`` section (the layout of ``~/.config/dask/jobqueue.yaml``);
    keys become argument names (``death-timeout`` -> ``death_timeout``, ``name`` ->
    ``job_name``) and ``null`` values are left out, so dask-jobqueue's defaults apply.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "jobqueue.yaml")
    >>> text = "jobqueue:\\n  slurm:\\n    cores: 4\\n    death-timeout: 90\\n    queue: null\\n"
    >>> _ = open(path, "w").write(text)
    >>> load_config(path)
    {'cores': 4, 'death_timeout': 90}
    """
    import yaml

    with open(path) as fh:
        tree = yaml.safe_load(fh) or {}
    section = tree.get("jobqueue", {}).get("slurm") if isinstance(tree, Mapping) else None
    if not isinstance(section, Mapping):
        raise ValueError(f"{os.fspath(path)}: no 'jobqueue: slurm:' section")
    extra = sorted(set(tree) - {"jobqueue"}) + sorted(set(tree["jobqueue"]) - {"slurm"})
    if extra:
        raise ValueError(f"{os.fspath(path)}: only 'jobqueue: slurm:' is read; found "
                         f"{', '.join(map(str, extra))}")
    rename = {"name": "job_name"}
    return {rename.get(k, k.replace("-", "_")): v for k, v in section.items() if v is not None}


def _processes_per_job(args: Mapping[str, Any]) -> int:
    """Worker processes per job, resolved as dask-jobqueue does (argument, config, from cores)."""
    import dask
    from distributed.deploy.utils import nprocesses_nthreads

    processes = args.get("processes") or dask.config.get("jobqueue.slurm.processes", None)
    if processes:
        return int(processes)
    cores = args.get("cores") or dask.config.get("jobqueue.slurm.cores", None) or 1
    return int(nprocesses_nthreads(int(cores))[0])


def slurm(jobs: int = 2, *, config: str | os.PathLike | None = None, cores: int | None = None,
          memory: str | None = None, processes: int | None = None, walltime: str | None = None,
          queue: str | None = None, account: str | None = None,
          log_directory: str | os.PathLike | None = None, interface: str | None = None,
          timeout: float | None = 600.0, **kwargs: Any) -> Client:
    """Submit ``jobs`` SLURM worker jobs (dask-jobqueue ``SLURMCluster``); a ``Client`` for them.

    The scheduler runs in this process (on the login node or in the job that calls this); each
    SLURM job runs ``processes`` Dask workers sharing ``cores`` threads and ``memory``.

    Parameters
    ----------
    jobs : int
        Worker jobs to submit (``cluster.scale(jobs=...)``).
    config : path, optional
        A Dask configuration YAML with a ``jobqueue: slurm:`` section, e.g.
        ``deploy/slurm/jobqueue.yaml``. Without it, dask's own configuration applies
        (``~/.config/dask/jobqueue.yaml`` and ``DASK_JOBQUEUE__SLURM__*`` variables).
    cores, memory, processes, walltime, queue, account, log_directory, interface
        Override the configuration: cores and memory per job (``"8GiB"``), worker processes per
        job, ``HH:MM:SS``, partition (``-p``), account (``-A``), where the jobs' ``.out``/``.err``
        go, the network interface for the scheduler and workers (``"ib0"``, ``"lo"``).
    timeout : float or None
        Seconds to wait for every worker to connect (``None``: do not wait). On timeout the
        jobs are cancelled and ``TimeoutError`` says how many connected.
    **kwargs
        Anything else ``SLURMCluster`` takes (``job_extra_directives``, ``scheduler_options``,
        ``job_script_prologue``, ``python``, ...).

    Returns
    -------
    distributed.Client
        Closing it cancels the jobs. ``client.cluster.job_script()`` shows what was submitted.

    Raises
    ------
    MissingExtra
        dask-jobqueue is not installed (says the pip command).

    Examples
    --------
    >>> from dask_factor import cluster, nmf
    >>> with cluster.slurm(jobs=2, config="deploy/slurm/jobqueue.yaml",
    ...                    cores=4, memory="16GiB") as client:  # doctest: +SKIP
    ...     model = nmf("cells.zarr", k=20, seed=1, client=client)
    """
    jq = require("dask_jobqueue", "dask_factor.cluster.slurm()")
    opts = {"cores": cores, "memory": memory, "processes": processes, "walltime": walltime,
            "queue": queue, "account": account, "interface": interface,
            "log_directory": None if log_directory is None else str(log_directory)}
    opts = {k: v for k, v in opts.items() if v is not None}
    if log_directory is not None:
        Path(log_directory).mkdir(parents=True, exist_ok=True)
    import dask

    args = {**(load_config(config) if config is not None else {}), **opts, **kwargs}
    if "job_script_prologue" not in kwargs:  # the file's (or dask's) prologue, then FIT_ENV
        first = args.get("job_script_prologue",
                         dask.config.get("jobqueue.slurm.job-script-prologue", None))
        args["job_script_prologue"] = [*(first or []),
                                       *(f"export {k}={v}" for k, v in FIT_ENV.items())]
    cluster = jq.SLURMCluster(**args)
    try:
        cluster.scale(jobs=jobs)
        n_workers = jobs * _processes_per_job(args)
    except BaseException:
        cluster.close()
        raise
    return _client_for(cluster, n_workers, timeout, f"SLURM ({jobs} jobs)")


# --------------------------------------------------------------------------- Kubernetes


def kubernetes_spec(name: str = "dask-factor", *, image: str = DEFAULT_IMAGE,
                    n_workers: int = 2, cpu: str = "2", memory: str = "8Gi",
                    threads: int | None = None, env: Mapping[str, str] | None = None,
                    data_claim: str | None = None, data_mount: str = "/data",
                    idle_timeout: int = 0) -> dict:
    """The ``DaskCluster`` resource :func:`kubernetes` creates (``deploy/kubernetes/`` holds it).

    Built with the operator's own ``make_cluster_spec``, then: the scheduler and workers start
    with ``dask scheduler``/``dask worker`` (distributed no longer installs ``dask-scheduler``);
    requests equal limits; each worker runs ``threads`` threads with ``--memory-limit`` equal
    to the pod's limit (what Dask spills and pauses against); ``data_claim`` mounts a
    PersistentVolumeClaim at ``data_mount`` in every pod, since workers read the input's
    blocks themselves.

    Parameters
    ----------
    name : str
        The ``DaskCluster``'s name (a DNS label); the scheduler's service is ``NAME-scheduler``.
    image : str
        Container image with dask_factor installed (``deploy/Dockerfile``).
    n_workers : int
        Worker pods in the default worker group.
    cpu, memory : str
        Kubernetes quantities per pod (scheduler and workers), e.g. ``"4"``, ``"16Gi"``.
    threads : int, optional
        Worker threads (default: ``cpu`` rounded down, at least 1).
    env : mapping, optional
        Extra environment for the scheduler and workers (``FIT_ENV`` is always set).
    data_claim : str, optional
        Name of a PersistentVolumeClaim holding the inputs (and outputs) of fits.
    data_mount : str
        Where ``data_claim`` is mounted.
    idle_timeout : int
        Seconds after which the operator deletes an idle cluster (0: never).

    Returns
    -------
    dict
        ``apiVersion: kubernetes.dask.org/v1``, ``kind: DaskCluster``.

    Examples
    --------
    >>> spec = kubernetes_spec("fit-1", n_workers=3)  # doctest: +SKIP
    >>> spec["kind"], spec["spec"]["worker"]["replicas"]  # doctest: +SKIP
    ('DaskCluster', 3)
    >>> spec["spec"]["worker"]["spec"]["containers"][0]["args"][:4]  # doctest: +SKIP
    ['dask', 'worker', '--nthreads', '2']
    """
    op = require("dask_kubernetes.operator", "dask_factor.cluster.kubernetes_spec()")
    if threads is None:
        try:
            threads = max(int(float(cpu)), 1)
        except ValueError:
            threads = 1
    resources = {"requests": {"cpu": cpu, "memory": memory},
                 "limits": {"cpu": cpu, "memory": memory}}
    environment = {**FIT_ENV, **(dict(env) if env else {})}
    worker_command = ["dask", "worker", "--nthreads", str(threads), "--memory-limit", memory]
    spec = op.make_cluster_spec(name=name, image=image, n_workers=n_workers,
                                resources=resources, env=environment,
                                worker_command=worker_command, idle_timeout=idle_timeout)
    scheduler = spec["spec"]["scheduler"]["spec"]["containers"][0]
    scheduler["args"] = ["dask", "scheduler", "--host", "0.0.0.0", *scheduler["args"][3:]]
    spec = copy.deepcopy(spec)  # make_cluster_spec shares env/resources between the pods
    if data_claim is not None:
        for role in ("scheduler", "worker"):
            _mount_claim(spec["spec"][role]["spec"], data_claim, data_mount)
    return spec


def _mount_claim(pod_spec: dict, claim: str, mount: str) -> None:
    pod_spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]
    for container in pod_spec["containers"]:
        container["volumeMounts"] = [{"name": "data", "mountPath": mount}]


def kubernetes_job_spec(name: str, fit_args: list[str], **cluster: Any) -> dict:
    """A ``DaskJob`` that runs ``dask-factor fit FIT_ARGS`` on its own ``DaskCluster``.

    The operator starts the cluster :func:`kubernetes_spec` describes (named after the job),
    then the job pod, whose ``--scheduler`` is the ``DASK_SCHEDULER_ADDRESS`` the operator
    gives it; the cluster is deleted when the fit ends. ``deploy/kubernetes/daskjob.yaml`` is
    one of these.

    Parameters
    ----------
    name : str
        The job's name (and its cluster's).
    fit_args : list of str
        Arguments of ``dask-factor fit``: ``[SRC, OUT, "--k", "20", ...]`` (paths inside the
        pods, e.g. on ``data_claim``).
    **cluster
        :func:`kubernetes_spec`'s options (``image``, ``n_workers``, ``cpu``, ``memory``,
        ``data_claim``, ...). The job pod gets the same image, environment and volume and
        one CPU.

    Returns
    -------
    dict
        ``apiVersion: kubernetes.dask.org/v1``, ``kind: DaskJob``.

    Examples
    --------
    >>> args = ["/data/x.zarr", "/data/m.npz", "--k", "8"]
    >>> job = kubernetes_job_spec("fit-1", args)  # doctest: +SKIP
    >>> job["spec"]["job"]["spec"]["containers"][0]["args"][-2:]  # doctest: +SKIP
    ['--scheduler', '$(DASK_SCHEDULER_ADDRESS)']
    """
    cluster_spec = kubernetes_spec(name, **cluster)
    worker = cluster_spec["spec"]["worker"]["spec"]["containers"][0]
    memory = cluster.get("memory", "8Gi")
    container = {
        "name": "job",
        "image": worker["image"],
        "args": ["dask-factor", "fit", *map(str, fit_args), "--quiet",
                 "--scheduler", "$(DASK_SCHEDULER_ADDRESS)"],
        "env": copy.deepcopy(worker["env"]),
        "resources": {"requests": {"cpu": "1", "memory": memory},
                      "limits": {"cpu": "1", "memory": memory}},
    }
    job_pod = {"restartPolicy": "Never", "containers": [container]}
    if cluster.get("data_claim") is not None:
        _mount_claim(job_pod, cluster["data_claim"], cluster.get("data_mount", "/data"))
    return {"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskJob",
            "metadata": {"name": name},
            "spec": {"job": {"spec": job_pod}, "cluster": {"spec": cluster_spec["spec"]}}}


def kubernetes(name: str = "dask-factor", *, namespace: str | None = None,
               image: str = DEFAULT_IMAGE, n_workers: int = 2, cpu: str = "2",
               memory: str = "8Gi", threads: int | None = None,
               env: Mapping[str, str] | None = None, data_claim: str | None = None,
               data_mount: str = "/data", idle_timeout: int = 0,
               timeout: float | None = 600.0, **kwargs: Any) -> Client:
    """Create a ``DaskCluster`` through the Dask Kubernetes operator; a ``Client`` for it.

    Needs the operator installed in the Kubernetes cluster (``deploy/kubernetes/README.md``)
    and a kubeconfig (or an in-cluster service account) allowed to create ``DaskCluster``
    resources in ``namespace``.

    Parameters
    ----------
    name, image, n_workers, cpu, memory, threads, env, data_claim, data_mount, idle_timeout
        As for :func:`kubernetes_spec`, which builds the resource.
    namespace : str, optional
        Kubernetes namespace (default: the kubeconfig's).
    timeout : float or None
        Seconds to wait for every worker to connect (``None``: do not wait).
    **kwargs
        Anything else ``KubeCluster`` takes (``port_forward_cluster_ip``, ``shutdown_on_close``,
        ``resource_timeout``, ...).

    Returns
    -------
    distributed.Client
        Closing it deletes the ``DaskCluster`` (unless ``shutdown_on_close=False``).

    Raises
    ------
    MissingExtra
        dask-kubernetes is not installed (says the pip command).

    Examples
    --------
    >>> from dask_factor import cluster, nmf
    >>> with cluster.kubernetes("fit-1", n_workers=4, memory="16Gi") as client:  # doctest: +SKIP
    ...     model = nmf("s3://bucket/cells.zarr", k=20, seed=1, client=client)
    """
    op = require("dask_kubernetes.operator", "dask_factor.cluster.kubernetes()")
    spec = kubernetes_spec(name, image=image, n_workers=n_workers, cpu=cpu, memory=memory,
                           threads=threads, env=env, data_claim=data_claim,
                           data_mount=data_mount, idle_timeout=idle_timeout)
    kc = op.KubeCluster(custom_cluster_spec=spec, namespace=namespace, **kwargs)
    return _client_for(kc, n_workers, timeout, f"Kubernetes DaskCluster {name!r}")
