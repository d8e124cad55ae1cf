"""deploy/kubernetes validated without a cluster: every manifest against the Kubernetes schemas
(``kubernetes-validate``) and the Dask operator's CRD schemas (shipped in the dask-kubernetes
package), strictly: an unknown field fails here, where the API server would silently drop it.
The Python entry points (``kubernetes_spec``, ``kubernetes_job_spec``) must produce the manifests,
and the Helm values must describe the same pods.
"""

from __future__ import annotations

import json
import shutil
import sys
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referencing import Registry, Resource

from dask_factor import cluster

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "helm-values.yaml")
DATA = dict(data_claim="dask-factor-data")
JOB_ARGS = ["/data/cells.zarr", "/data/model.npz", "--k", "20", "--seed", "1",
            "--checkpoint", "/data/model.ckpt", "--resume"]
#: the oldest and newest Kubernetes versions kubernetes-validate ships schemas for
VERSIONS = sorted({kubernetes_validate.utils.all_versions()[0],
                   kubernetes_validate.latest_version()})


def _docs(path: Path) -> list[dict]:
    with open(path) as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


# --------------------------------------------------------------------------- schemas


def _crds() -> dict[str, dict]:
    """The operator's CustomResourceDefinitions by kind, from the installed dask-kubernetes."""
    crd_dir = (files("dask_kubernetes.operator") / "deployment" / "helm"
               / "dask-kubernetes-operator" / "crds")
    out = {}
    for entry in crd_dir.iterdir():
        if entry.name.endswith(".yaml"):
            crd = yaml.safe_load(entry.read_text())
            out[crd["spec"]["names"]["kind"]] = crd
    return out


def _strict(schema):
    """An OpenAPI schema that refuses unknown fields (the API server would prune them)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (_strict(v) if k != "properties" else {n: _strict(s) for n, s in v.items()})
           for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


def _k8s_validator(name: str, version: str) -> jsonschema.protocols.Validator:
    """A strict validator for one Kubernetes definition (``podspec-v1``, ``envvar-v1``, ...)."""
    base = files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
    schema = json.loads((base / f"{name}.json").read_text())
    defs = json.loads((base / "_definitions.json").read_text())
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate_custom(doc: dict, crds: dict[str, dict]) -> None:
    crd = crds[doc["kind"]]
    served = [v for v in crd["spec"]["versions"] if v.get("served")]
    version = next(v for v in served if f"{crd['spec']['group']}/{v['name']}" == doc["apiVersion"])
    schema = _strict(version["schema"]["openAPIV3Schema"])
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft202012Validator(schema).validate(body)
    for v in VERSIONS:
        _k8s_validator("objectmeta-meta-v1", v).validate(doc["metadata"])


def _validate(doc: dict, crds: dict[str, dict]) -> None:
    if doc["apiVersion"].startswith("kubernetes.dask.org/"):
        _validate_custom(doc, crds)
    else:
        for v in VERSIONS:
            kubernetes_validate.validate(doc, v, strict=True)


@pytest.fixture(scope="module")
def crds():
    found = _crds()
    assert {"DaskCluster", "DaskJob", "DaskWorkerGroup"} <= set(found)
    return found


# --------------------------------------------------------------------------- tests


def test_there_are_manifests_for_a_cluster_a_job_and_their_volume():
    kinds = {d["kind"] for p in MANIFESTS for d in _docs(p)}
    assert {"DaskCluster", "DaskJob", "PersistentVolumeClaim"} <= kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_manifest_validates(path, crds):
    docs = _docs(path)
    assert docs, f"{path.name} is empty"
    for doc in docs:
        _validate(doc, crds)


def test_pods_in_the_custom_resources_are_valid_pod_specs(crds):
    """The CRDs embed PodSpec; check it with the Kubernetes schemas of every version too."""
    cluster_doc = _docs(K8S / "daskcluster.yaml")[0]
    job_doc = _docs(K8S / "daskjob.yaml")[0]
    pods = [cluster_doc["spec"]["worker"]["spec"], cluster_doc["spec"]["scheduler"]["spec"],
            job_doc["spec"]["job"]["spec"]]
    for v in VERSIONS:
        for pod in pods:
            _k8s_validator("podspec-v1", v).validate(pod)
        _k8s_validator("servicespec-v1", v).validate(cluster_doc["spec"]["scheduler"]["service"])


def test_strict_validation_catches_typos_and_wrong_types(crds):
    """Not vacuous: a misspelt field and a string count are refused."""
    doc = _docs(K8S / "daskcluster.yaml")[0]
    typo = json.loads(json.dumps(doc))
    typo["spec"]["worker"]["replica"] = typo["spec"]["worker"].pop("replicas")
    with pytest.raises(jsonschema.ValidationError, match="replica"):
        _validate(typo, crds)
    wrong = json.loads(json.dumps(doc))
    wrong["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        _validate(wrong, crds)
    bad_pod = json.loads(json.dumps(doc))
    bad_pod["spec"]["worker"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(jsonschema.ValidationError, match="volumeMount"):
        _validate(bad_pod, crds)
    pvc = _docs(K8S / "data-pvc.yaml")[0]
    pvc["spec"]["accesModes"] = pvc["spec"].pop("accessModes")
    with pytest.raises(jsonschema.ValidationError):
        _validate(pvc, crds)


def test_python_specs_are_the_manifests():
    assert cluster.kubernetes_spec("dask-factor", **DATA) == _docs(K8S / "daskcluster.yaml")[0]
    assert (cluster.kubernetes_job_spec("dask-factor-fit", JOB_ARGS, **DATA)
            == _docs(K8S / "daskjob.yaml")[0])


def test_python_spec_options_validate(crds):
    spec = cluster.kubernetes_spec("big-fit", n_workers=16, cpu="8", memory="64Gi",
                                   env={"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "60s"},
                                   idle_timeout=3600)
    _validate(spec, crds)
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 16
    args = worker["spec"]["containers"][0]["args"]
    assert args[:6] == ["dask", "worker", "--nthreads", "8", "--memory-limit", "64Gi"]
    job = cluster.kubernetes_job_spec("j", ["a.zarr", "m.npz", "--k", "3"], n_workers=1)
    _validate(job, crds)
    assert job["spec"]["cluster"]["spec"]["scheduler"]["service"]["selector"][
        "dask.org/cluster-name"] == "j"  # the operator names a DaskJob's cluster after the job


def test_containers_start_commands_the_image_has():
    """``dask`` and ``dask-factor`` are console scripts of the installed packages (the image
    installs the same); the operator's default ``dask-scheduler`` is not used."""
    bindir = Path(sys.executable).parent
    for path in MANIFESTS:
        for doc in _docs(path):
            pods = []
            if doc["kind"] == "DaskCluster":
                pods = [doc["spec"]["worker"]["spec"], doc["spec"]["scheduler"]["spec"]]
            elif doc["kind"] == "DaskJob":
                c = doc["spec"]["cluster"]["spec"]
                pods = [doc["spec"]["job"]["spec"], c["worker"]["spec"], c["scheduler"]["spec"]]
            for pod in pods:
                for container in pod["containers"]:
                    command = container["args"][0]
                    assert command in ("dask", "dask-factor"), (path.name, container["name"])
                    assert shutil.which(command, path=str(bindir)), command


#: the keys of the dask chart's values.yaml these values may set (chart appVersion 2025.11.0)
CHART_KEYS = {
    "scheduler": {"name", "enabled", "image", "replicas", "serviceType", "loadBalancerIP",
                  "servicePort", "serviceAnnotations", "env", "extraArgs", "resources",
                  "tolerations", "affinity", "nodeSelector", "securityContext",
                  "serviceAccountName", "metrics", "livenessProbe", "readinessProbe"},
    "worker": {"name", "image", "replicas", "strategy", "custom_scheduler_url",
               "default_resources", "env", "extraArgs", "resources", "mounts", "annotations",
               "tolerations", "affinity", "nodeSelector", "securityContext",
               "serviceAccountName", "port", "portDashboard", "threads_per_worker", "metrics",
               "livenessProbe", "readinessProbe"},
    "image": {"repository", "tag", "pullPolicy", "pullSecrets", "dask_worker"},
    "mounts": {"volumes", "volumeMounts"},
    "top": {"nameOverride", "fullnameOverride", "scheduler", "webUI", "worker",
            "additional_worker_groups", "jupyter"},
}


def test_helm_values_use_the_charts_keys_and_valid_kubernetes_objects():
    values = _docs(K8S / "helm-values.yaml")[0]
    assert set(values) <= CHART_KEYS["top"]
    assert values["jupyter"] == {"enabled": False}
    for role in ("scheduler", "worker"):
        assert set(values[role]) <= CHART_KEYS[role], role
        assert set(values[role]["image"]) <= CHART_KEYS["image"], role
    assert set(values["worker"]["mounts"]) <= CHART_KEYS["mounts"]
    for v in VERSIONS:
        for role in ("scheduler", "worker"):
            _k8s_validator("resourcerequirements-v1", v).validate(values[role]["resources"])
            for var in values[role]["env"]:
                _k8s_validator("envvar-v1", v).validate(var)
        for volume in values["worker"]["mounts"]["volumes"]:
            _k8s_validator("volume-v1", v).validate(volume)
        for mount in values["worker"]["mounts"]["volumeMounts"]:
            _k8s_validator("volumemount-v1", v).validate(mount)


def test_helm_values_describe_the_same_pods_as_the_daskcluster():
    values = _docs(K8S / "helm-values.yaml")[0]
    spec = cluster.kubernetes_spec("dask-factor", **DATA)["spec"]
    pod = spec["worker"]["spec"]
    worker = pod["containers"][0]
    for role in ("scheduler", "worker"):
        image = values[role]["image"]
        assert f"{image['repository']}:{image['tag']}" == cluster.DEFAULT_IMAGE
        assert values[role]["env"] == worker["env"]
        assert values[role]["resources"] == worker["resources"]
    args = worker["args"]
    assert str(values["worker"]["threads_per_worker"]) == args[args.index("--nthreads") + 1]
    # the chart passes resources.limits.memory as --memory-limit, as the DaskCluster does
    assert values["worker"]["resources"]["limits"]["memory"] == \
        args[args.index("--memory-limit") + 1]
    assert values["worker"]["replicas"] == spec["worker"]["replicas"]
    assert values["worker"]["mounts"] == {"volumes": pod["volumes"],
                                          "volumeMounts": worker["volumeMounts"]}
    # the chart starts `dask-worker`/`dask-scheduler`: the image's wrappers (deploy/Dockerfile)
    assert values["worker"]["image"]["dask_worker"] == "dask-worker"


def test_a_missing_extra_names_the_pip_command(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_kubernetes(name, *args, **kwargs):
        if name.startswith("dask_kubernetes"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kubernetes)
    for mod in [m for m in sys.modules if m.startswith("dask_kubernetes")]:
        monkeypatch.delitem(sys.modules, mod)
    with pytest.raises(cluster.MissingExtra, match=r'pip install "dask_factor\[cluster\]"'):
        cluster.kubernetes_spec("x")
    with pytest.raises(ImportError, match="dask-kubernetes|dask_kubernetes"):
        cluster.kubernetes("x")
