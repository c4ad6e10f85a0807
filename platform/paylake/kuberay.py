"""The cluster's manifests, generated: KubeRay (``ray.io/v1``, KubeRay 1.7) on EKS, one source of truth.

``paylake cluster render`` writes ``cluster/k8s/*.yaml`` and ``cluster/eks/cluster.yaml`` from this module, from
``serve/config.yaml`` (the RayService's ``serveConfigV2``) and from the node shapes below; the test suite renders
again, checks the files on disk are the same, and validates every manifest offline (the KubeRay CRDs'
``openAPIV3Schema``, core kinds with ``kubernetes-validate``).

    Namespace paylake, ServiceAccount paylake (IRSA: S3 for the lake and MLflow's artifacts, KMS key use)
    ConfigMap paylake-settings (non-secret PAYLAKE_* settings), Secrets paylake-sources / paylake-ray-token
      (templates: values come from the secret store, never from this repository)
    RayCluster paylake          head (no tasks) + CPU workers (autoscaled) + GPU workers (the log model)
    RayJob paylake-pipeline     python jobs/pipeline.py on that cluster; RayCronJob: nightly
    RayService paylake-serving  the scoring API, serveConfigV2 = serve/config.yaml for a multi-node cluster
    Deployment/Service mlflow   the tracking server on a PostgreSQL backend, artifacts on S3
    ConfigMaps                  Prometheus scrape rules for Ray's metrics, the Grafana dashboard
Token authentication is on (``spec.authOptions.mode: token``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "paylake"
CLUSTER = "paylake"
PYTHON_TAG = "py311"
REGISTRY = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"  # the account's ECR (placeholder account id)
REGION = "eu-west-1"
LAKE_BUCKET = "paylake-lake-prod"
MLFLOW_BUCKET = "paylake-mlflow-prod"
IRSA_ROLE = "arn:aws:iam::123456789012:role/paylake-ray"


def ray_version() -> str:
    import ray

    return ray.__version__


def image(flavour: str = "cpu") -> str:
    """The project's image (cluster/Dockerfile): its tag starts with the pinned Ray version."""
    return f"{REGISTRY}/paylake:{ray_version()}-{PYTHON_TAG}-{flavour}"


@dataclass(frozen=True)
class NodeShape:
    """An EKS node group and the Ray pod that fills one of its nodes (the rest: kubelet, daemonsets)."""

    group: str
    instance: str
    node_cpus: int
    node_memory_gib: int
    pod_cpus: int
    pod_memory_gib: int
    gpus: int = 0
    min_nodes: int = 0
    max_nodes: int = 1


HEAD = NodeShape("ray-head", "m6i.2xlarge", 8, 32, 6, 24, min_nodes=1, max_nodes=1)
CPU_WORKERS = NodeShape("ray-cpu", "m6i.4xlarge", 16, 64, 14, 56, min_nodes=2, max_nodes=30)  # CAPACITY.md: 28 at peak
GPU_WORKERS = NodeShape("ray-gpu", "g5.2xlarge", 8, 32, 7, 28, gpus=1, min_nodes=0, max_nodes=2)
SERVICES_NODES = NodeShape("services", "m6i.large", 2, 8, 1, 4, min_nodes=1, max_nodes=2)  # MLflow, monitoring

SETTINGS = {  # non-secret settings of every Ray pod
    "PAYLAKE_LAKE_ROOT": f"s3://{LAKE_BUCKET}/lake",
    "PAYLAKE_S3_REGION": REGION,
    "PAYLAKE_MLFLOW_TRACKING_URI": f"http://mlflow.{NAMESPACE}.svc.cluster.local:5000",
    "PAYLAKE_RAY_ADDRESS": "auto",
    "PAYLAKE_SNOWFLAKE_DATABASE": "ANALYTICS",
    "PAYLAKE_SNOWFLAKE_WAREHOUSE": "LOADING",
    "RAY_DEDUP_LOGS": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
SECRET_KEYS = {  # the secret store fills these (AWS Secrets Manager → External Secrets, or kubectl create secret)
    "paylake-sources": ["PAYLAKE_POSTGRES_DSN", "PAYLAKE_MONGO_URI", "PAYLAKE_ONLINE_STORE_URL",
                        "PAYLAKE_SNOWFLAKE_ACCOUNT", "PAYLAKE_SNOWFLAKE_USER", "PAYLAKE_SNOWFLAKE_PASSWORD"],
    # no PII key: data keys are wrapped by AWS KMS, which the pods reach with their IRSA role (paylake.security.keys)
    "paylake-mlflow-db": ["MLFLOW_BACKEND_STORE_URI"],
}
TOKEN_SECRET = "paylake-ray-token"


def _quantity_gib(n: int) -> str:
    return f"{n}Gi"


def _ray_container(name: str, shape: NodeShape, flavour: str, ports: list[dict] | None = None) -> dict:
    limits = {"cpu": str(shape.pod_cpus), "memory": _quantity_gib(shape.pod_memory_gib)}
    if shape.gpus:
        limits["nvidia.com/gpu"] = str(shape.gpus)
    container = {
        "name": name, "image": image(flavour), "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": dict(limits), "limits": dict(limits)},
        "envFrom": [{"configMapRef": {"name": "paylake-settings"}}, {"secretRef": {"name": "paylake-sources"}}],
        "lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "ray stop"]}}},
    }
    if ports:
        container["ports"] = ports
    return container


def _pod(container: dict, shape: NodeShape, metrics: bool = True) -> dict:
    spec: dict = {"serviceAccountName": "paylake", "containers": [container],
                  "nodeSelector": {"paylake.io/node-group": shape.group}}
    if shape.gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    template: dict = {"spec": spec}
    if metrics:
        template["metadata"] = {"labels": {"app.kubernetes.io/part-of": "paylake"},
                                "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8080"}}
    return template


def ray_cluster_spec() -> dict:
    """The RayCluster spec shared by the long-running cluster and the RayService's own."""
    head = _ray_container("ray-head", HEAD, "cpu", ports=[
        {"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"}, {"containerPort": 8000, "name": "serve"},
        {"containerPort": 8080, "name": "metrics"}])
    head["env"] = [
        {"name": "RAY_GRAFANA_HOST", "value": "http://grafana.monitoring.svc.cluster.local:80"},
        {"name": "RAY_PROMETHEUS_HOST", "value": "http://prometheus-server.monitoring.svc.cluster.local:80"},
        {"name": "RAY_GRAFANA_IFRAME_HOST", "value": "https://grafana.paylake.example.com"},
    ]

    def worker(shape: NodeShape, flavour: str, name: str) -> dict:
        params = {"num-cpus": str(shape.pod_cpus), "memory": str(shape.pod_memory_gib * 1024**3),
                  "metrics-export-port": "8080"}
        if shape.gpus:
            params["num-gpus"] = str(shape.gpus)
        return {"groupName": name, "replicas": shape.min_nodes, "minReplicas": shape.min_nodes,
                "maxReplicas": shape.max_nodes, "rayStartParams": params,
                "template": _pod(_ray_container("ray-worker", shape, flavour), shape)}

    return {
        "rayVersion": ray_version(),
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 300,
                              "resources": {"requests": {"cpu": "500m", "memory": "512Mi"},
                                            "limits": {"cpu": "500m", "memory": "512Mi"}}},
        "authOptions": {"mode": "token", "secretName": TOKEN_SECRET},
        "headGroupSpec": {
            # the head schedules no task (num-cpus 0): a busy GCS would slow every job; the dashboard on all
            # interfaces inside the pod network, reached through the Service (token auth on)
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0", "metrics-export-port": "8080"},
            "template": _pod(head, HEAD),
        },
        "workerGroupSpecs": [worker(CPU_WORKERS, "cpu", "cpu"), worker(GPU_WORKERS, "gpu", "gpu")],
    }


def _meta(name: str, **labels: str) -> dict:
    return {"name": name, "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "paylake", **labels}}


def serve_config(path: Path = ROOT / "serve" / "config.yaml") -> dict:
    """``serve/config.yaml`` for a multi-node cluster: HTTP on every node's proxy and all interfaces, and a CPU
    per replica (on a laptop replicas take no CPU, not to starve the local head's tasks)."""
    config = copy.deepcopy(yaml.safe_load(path.read_text()))
    config["proxy_location"] = "EveryNode"
    config["http_options"] = {**config.get("http_options", {}), "host": "0.0.0.0", "port": 8000}
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            deployment.setdefault("ray_actor_options", {})["num_cpus"] = 1
    return config


def manifests() -> dict[str, list[dict]]:
    """File name (under cluster/) → its documents."""
    base = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {**_meta("paylake"), "annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("paylake-settings"), "data": dict(SETTINGS)},
        *[{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
           "metadata": {**_meta(name), "annotations": {
               "paylake.io/filled-by": "the secret store (External Secrets from AWS Secrets Manager); never "
                                       "commit values"}},
           "stringData": {key: "" for key in keys}} for name, keys in SECRET_KEYS.items()],
        {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
         "metadata": {**_meta(TOKEN_SECRET), "annotations": {
             "paylake.io/filled-by": "a random token: kubectl create secret generic paylake-ray-token "
                                     "--from-literal=auth_token=$(openssl rand -hex 32)"}},
         "stringData": {"auth_token": ""}},
    ]
    cluster = [{"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": _meta(CLUSTER),
                "spec": ray_cluster_spec()}]
    job_spec = {
        "entrypoint": "python jobs/pipeline.py",
        "clusterSelector": {"ray.io/cluster": CLUSTER},
        "submissionMode": "K8sJobMode",
        "backoffLimit": 0,  # a failed run is resumed (paylake pipeline --resume), not restarted from the top
        "ttlSecondsAfterFinished": 86400,
        "submitterPodTemplate": {"spec": {"restartPolicy": "Never", "serviceAccountName": "paylake",
                                          "containers": [{"name": "submitter", "image": image("cpu"),
                                                          "resources": {"requests": {"cpu": "500m",
                                                                                     "memory": "1Gi"},
                                                                        "limits": {"cpu": "500m",
                                                                                   "memory": "1Gi"}}}]}},
    }
    job = [{"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": _meta("paylake-pipeline"), "spec": job_spec}]
    cron = [{"apiVersion": "ray.io/v1", "kind": "RayCronJob", "metadata": _meta("paylake-pipeline-nightly"),
             "spec": {"schedule": "0 2 * * *", "timeZone": "Etc/UTC", "jobTemplate": copy.deepcopy(job_spec)}}]
    service = [{"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": _meta("paylake-serving"),
                "spec": {"serveConfigV2": yaml.safe_dump(serve_config(), sort_keys=False),
                         "rayClusterConfig": ray_cluster_spec()}}]
    mlflow_labels = {"app.kubernetes.io/name": "mlflow"}
    mlflow = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("mlflow", **mlflow_labels),
         "spec": {"replicas": 1, "selector": {"matchLabels": mlflow_labels},
                  "template": {"metadata": {"labels": mlflow_labels}, "spec": {
                      "serviceAccountName": "paylake",
                      "nodeSelector": {"paylake.io/node-group": SERVICES_NODES.group},
                      "containers": [{
                          "name": "mlflow", "image": image("cpu"),
                          "command": ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000",
                                      "--backend-store-uri", "$(MLFLOW_BACKEND_STORE_URI)",
                                      "--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts",
                                      "--serve-artifacts", "--workers", "2"],
                          "envFrom": [{"secretRef": {"name": "paylake-mlflow-db"}}],
                          "ports": [{"containerPort": 5000, "name": "http"}],
                          "readinessProbe": {"httpGet": {"path": "/health", "port": 5000}},
                          "resources": {"requests": {"cpu": "1", "memory": "2Gi"},
                                        "limits": {"cpu": "1", "memory": "2Gi"}}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("mlflow", **mlflow_labels),
         "spec": {"selector": mlflow_labels, "ports": [{"name": "http", "port": 5000, "targetPort": 5000}]}},
    ]
    dashboard = (ROOT / "cluster" / "grafana" / "paylake.json").read_text()
    scrape = {"scrape_configs": [{
        "job_name": "ray", "kubernetes_sd_configs": [{"role": "pod", "namespaces": {"names": [NAMESPACE]}}],
        "relabel_configs": [
            {"source_labels": ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"], "action": "keep",
             "regex": "true"},
            {"source_labels": ["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
             "action": "replace", "regex": "([^:]+)(?::\\d+)?;(\\d+)", "replacement": "$1:$2",
             "target_label": "__address__"}]}]}
    monitoring = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("paylake-prometheus-scrape"),
         "data": {"scrape.yaml": yaml.safe_dump(scrape, sort_keys=False)}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {**_meta("paylake-grafana-dashboard", grafana_dashboard="1")},
         "data": {"paylake.json": dashboard}},
    ]
    eks = [eks_cluster()]
    return {"k8s/00-base.yaml": base, "k8s/raycluster.yaml": cluster, "k8s/rayjob-pipeline.yaml": job,
            "k8s/raycronjob-pipeline.yaml": cron, "k8s/rayservice.yaml": service, "k8s/mlflow.yaml": mlflow,
            "k8s/monitoring.yaml": monitoring, "eks/cluster.yaml": eks}


def eks_cluster() -> dict:
    """The eksctl ClusterConfig: one managed node group per shape, labelled for the pods' node selectors."""
    def group(shape: NodeShape) -> dict:
        node = {"name": shape.group, "instanceType": shape.instance, "minSize": shape.min_nodes,
                "maxSize": shape.max_nodes, "desiredCapacity": shape.min_nodes, "volumeSize": 200,
                "privateNetworking": True, "labels": {"paylake.io/node-group": shape.group},
                "iam": {"withAddonPolicies": {"autoScaler": True}}}
        if shape.gpus:
            node["taints"] = [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
        return node

    return {"apiVersion": "eksctl.io/v1alpha5", "kind": "ClusterConfig",
            "metadata": {"name": "paylake", "region": REGION, "version": "1.33"},
            "iam": {"withOIDC": True, "serviceAccounts": [{
                "metadata": {"name": "paylake", "namespace": NAMESPACE},
                # the lake's prefixes, and use (never administration) of the stores' KMS master keys
                "attachPolicyARNs": ["arn:aws:iam::123456789012:policy/paylake-lake-rw",
                                     "arn:aws:iam::123456789012:policy/paylake-kms-use"],
                "roleName": IRSA_ROLE.rsplit("/", 1)[1]}]},
            "managedNodeGroups": [group(s) for s in (HEAD, CPU_WORKERS, GPU_WORKERS, SERVICES_NODES)]}


HEADER = "# Generated by 'paylake cluster render' from paylake.kuberay and serve/config.yaml: edit those, not this.\n"


def render_files() -> dict[str, str]:
    out = {}
    for name, documents in manifests().items():
        out[name] = HEADER + "---\n".join(yaml.safe_dump(d, sort_keys=False, width=120) for d in documents)
    return out


def write(folder: Path = ROOT / "cluster") -> list[Path]:
    written = []
    for name, text in render_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def load_documents(folder: Path = ROOT / "cluster") -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all((folder / name).read_text()) if d]
            for name in render_files()}

