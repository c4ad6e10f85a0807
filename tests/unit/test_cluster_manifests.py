"""cluster/: the KubeRay and EKS manifests are what 'paylake cluster render' makes, and they validate offline:
ray.io kinds against the KubeRay v1.7.0 CRDs' openAPIV3Schema (../shared/vendor), core kinds with
kubernetes-validate; resources agree with rayStartParams; images carry the pinned Ray version; serveConfigV2 is
serve/config.yaml for a multi-node cluster."""

from __future__ import annotations

import copy
import functools

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml

from paylake import kuberay

CRDS = kuberay.ROOT.parent / "shared" / "vendor" / "kuberay-v1.7.0-crds"
K8S_VERSION = "1.33"


@functools.cache
def crd_schemas() -> dict[str, dict]:
    """kind → the v1 openAPIV3Schema."""
    assert CRDS.is_dir(), f"the KubeRay CRDs are not at {CRDS} (../shared/vendor beside the clone)"
    out = {}
    for path in sorted(CRDS.glob("ray.io_*.yaml")):
        crd = yaml.safe_load(path.read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        out[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    return out


def validate(document: dict) -> None:
    if document["apiVersion"] == "ray.io/v1":
        jsonschema.validate(document, crd_schemas()[document["kind"]], cls=jsonschema.Draft7Validator)
        for group in ray_pod_templates(document):  # the pod templates inside, as core kinds
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"},
                                          "template": group}, K8S_VERSION, strict=True)
    elif document["apiVersion"] != "eksctl.io/v1alpha5":
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def ray_specs(document: dict) -> list[dict]:
    spec = document.get("spec", {})
    kind = document["kind"]
    if kind == "RayCluster":
        return [spec]
    if kind == "RayService":
        return [spec["rayClusterConfig"]]
    return []


def ray_pod_templates(document: dict) -> list[dict]:
    out = []
    for spec in ray_specs(document):
        out.append(spec["headGroupSpec"]["template"])
        out += [g["template"] for g in spec["workerGroupSpecs"]]
    if document["kind"] == "RayJob":
        out.append(document["spec"]["submitterPodTemplate"])
    if document["kind"] == "RayCronJob":
        out.append(document["spec"]["jobTemplate"]["submitterPodTemplate"])
    return out


@pytest.fixture(scope="module")
def documents() -> dict[str, list[dict]]:
    return kuberay.load_documents()


def test_the_files_are_what_the_render_makes():
    stale = [name for name, text in kuberay.render_files().items()
             if (kuberay.ROOT / "cluster" / name).read_text() != text]
    assert not stale, f"{stale}: run 'paylake cluster render'"


def test_every_manifest_validates(documents):
    kinds = set()
    for docs in documents.values():
        for document in docs:
            validate(document)
            kinds.add(document["kind"])
    assert {"RayCluster", "RayJob", "RayCronJob", "RayService", "ServiceAccount", "Secret", "ConfigMap",
            "Deployment", "Service", "Namespace", "ClusterConfig"} <= kinds


@pytest.mark.parametrize("breakage", ["unknown field", "wrong type", "missing required"])
def test_a_broken_manifest_fails_validation(documents, breakage):
    cluster = copy.deepcopy(documents["k8s/raycluster.yaml"][0])
    if breakage == "unknown field":
        cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    elif breakage == "wrong type":
        cluster["spec"]["workerGroupSpecs"][0]["maxReplicas"] = "twenty"
    else:
        del cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises((jsonschema.ValidationError, kubernetes_validate.ValidationError)):
        validate(cluster)


def quantity_cpus(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def quantity_bytes(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[:-2]) * factor)
    return int(text)


def test_ray_resources_agree_with_the_pods_and_images_carry_the_pinned_ray(documents):
    checked = 0
    for docs in documents.values():
        for document in docs:
            for spec in ray_specs(document):
                assert spec["rayVersion"] == ray.__version__
                assert spec["authOptions"]["mode"] == "token" and spec["enableInTreeAutoscaling"] is True
                assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # the head runs no task
                for group in spec["workerGroupSpecs"]:
                    params = group["rayStartParams"]
                    (container,) = group["template"]["spec"]["containers"]
                    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
                    assert limits == requests
                    assert float(params["num-cpus"]) == quantity_cpus(limits["cpu"])
                    assert int(params["memory"]) == quantity_bytes(limits["memory"])
                    assert params.get("num-gpus", "0") == limits.get("nvidia.com/gpu", "0")
                    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
                    checked += 1
            for template in ray_pod_templates(document):
                for container in template["spec"]["containers"]:
                    tag = container["image"].rsplit(":", 1)[1]
                    assert tag.startswith(f"{ray.__version__}-py311-"), container["image"]
    assert checked >= 4  # cpu + gpu groups of the RayCluster and of the RayService's cluster


def test_the_rayservice_serves_serve_config_on_every_node(documents):
    (service,) = documents["k8s/rayservice.yaml"]
    served = yaml.safe_load(service["spec"]["serveConfigV2"])
    local = yaml.safe_load((kuberay.ROOT / "serve" / "config.yaml").read_text())
    assert served["http_options"]["host"] == "0.0.0.0" and served["proxy_location"] == "EveryNode"
    assert [a["import_path"] for a in served["applications"]] == [a["import_path"] for a in local["applications"]]
    assert served["applications"][0]["args"] == local["applications"][0]["args"]
    deployments = {d["name"]: d for d in served["applications"][0]["deployments"]}
    for original in local["applications"][0]["deployments"]:
        assert deployments[original["name"]]["autoscaling_config"] == original["autoscaling_config"]
        assert deployments[original["name"]]["ray_actor_options"]["num_cpus"] == 1


def test_no_secret_value_is_committed_and_the_eks_groups_fit_the_pods(documents):
    for docs in documents.values():
        for document in docs:
            if document["kind"] == "Secret":
                assert all(value == "" for value in document["stringData"].values())
    (eks,) = documents["eks/cluster.yaml"]
    groups = {g["name"]: g for g in eks["managedNodeGroups"]}
    for shape in (kuberay.HEAD, kuberay.CPU_WORKERS, kuberay.GPU_WORKERS):
        assert groups[shape.group]["instanceType"] == shape.instance
        assert shape.pod_cpus < shape.node_cpus and shape.pod_memory_gib < shape.node_memory_gib
    (cluster,) = documents["k8s/raycluster.yaml"]
    for group in cluster["spec"]["workerGroupSpecs"]:
        selector = group["template"]["spec"]["nodeSelector"]["paylake.io/node-group"]
        assert groups[selector]["maxSize"] >= group["maxReplicas"]


def test_the_dockerfile_builds_on_the_official_ray_image_of_the_pins():
    text = (kuberay.ROOT / "cluster" / "Dockerfile").read_text()
    assert f"ARG RAY_VERSION={ray.__version__}" in text and "ARG PYTHON_TAG=py311" in text
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}" in text
    assert "-c constraints.txt" in text


