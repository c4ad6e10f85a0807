"""Extract + silver + gold on a local three-node Ray cluster (``ray.cluster_utils.Cluster``), in a process of
its own (one Ray per process): run by tests/integration/test_multinode.py with the world's settings in the
environment (PAYLAKE_*). Prints one JSON line: the nodes each kind of task ran on."""

import json
import socket

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_tasks


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    from paylake.extract.run import ExtractOptions, extract
    from paylake.settings import load_settings
    from paylake.transform.silver import build_silver
    from paylake.transform.star import build_star

    dashboard = free_port()
    # the head schedules nothing (as on the cluster, num-cpus 0): every task goes to one of three workers
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": dashboard})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        settings = load_settings()
        extract(settings, options=ExtractOptions(capture_changes=False))
        build_silver(settings)
        build_star(settings)
        tasks = list_tasks(address=f"http://127.0.0.1:{dashboard}", limit=10_000, raise_on_missing_output=False,
                           detail=True)
        nodes = {}
        for prefix in ("extract ", "silver ", "gold facts "):
            nodes[prefix.strip()] = sorted({t.node_id for t in tasks if (t.name or "").startswith(prefix)
                                            and t.node_id})
        print(json.dumps({"workers": sorted(w.node_id for w in workers), "head": cluster.head_node.node_id,
                          "nodes": nodes}))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
