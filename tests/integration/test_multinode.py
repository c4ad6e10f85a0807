"""Nothing assumes one node: the extract and the star build on a local three-node Ray cluster spread their tasks
over the nodes, with the lake on the S3 server, and give the same tables as a single-node run."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from paylake.extract.run import ExtractOptions, extract
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake
from paylake.transform.silver import build_silver
from paylake.transform.star import build_star

JOB = Path(__file__).resolve().parents[1] / "helpers" / "multinode_job.py"


def delta_tables(settings) -> list[str]:
    """Every Delta table under the lake root, relative to it."""
    fs, root = lake.filesystem(settings), settings.lake_root.removeprefix("s3://").rstrip("/")
    found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(info.path[len(root) + 1:-len("/_delta_log")] for info in found
                  if info.type == pafs.FileType.Directory and info.path.endswith("/_delta_log"))


def content(settings, table: str):
    """The table's rows without the run's own metadata (load times, batch ids), in a canonical order."""
    import pyarrow as pa

    data = lake.read_table(settings, f"{settings.lake_root.rstrip('/')}/{table}")
    data = data.select([c for c in data.column_names if not c.startswith("_")])
    keys = [(f.name, "ascending") for f in data.schema
            if not pa.types.is_nested(f.type) and not pa.types.is_dictionary(f.type)]
    return data.sort_by(keys) if keys and data.num_rows else data


def test_extract_and_star_on_three_nodes_equal_a_single_node_run(settings, ray_cluster):
    world = isolated_sources(settings, "paylake_multinode")
    seed(world, SCALES["tiny"])
    assert settings.lake_is_s3
    bucket_root = settings.lake_root.rstrip("/")
    run = uuid.uuid4().hex[:8]
    one = world.model_copy(update={"lake_root": f"{bucket_root}-multinode/{run}/one"})
    many = world.model_copy(update={"lake_root": f"{bucket_root}-multinode/{run}/many"})

    extract(one, options=ExtractOptions(capture_changes=False))  # on the test stack's single node
    build_silver(one)
    build_star(one)

    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PAYLAKE_LAKE_ROOT": many.lake_root,
           "PAYLAKE_POSTGRES_DSN": many.postgres_dsn.get_secret_value(), "PAYLAKE_MONGO_DATABASE": many.mongo_database,
           "PAYLAKE_ONLINE_STORE_PREFIX": many.online_store_prefix}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, str(JOB)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    workers = set(report["workers"])
    for kind, nodes in report["nodes"].items():
        assert nodes and set(nodes) <= workers, (kind, nodes)  # never the head (num-cpus 0)
    assert len(set(report["nodes"]["extract"])) == 3, report  # the extract's ranges spread over the three
    assert len({n for nodes in report["nodes"].values() for n in nodes}) == 3

    tables = delta_tables(one)
    assert tables == delta_tables(many)
    layers = [t.split("/")[0] for t in tables]
    assert layers.count("bronze") >= 10 and layers.count("silver") >= 5 and layers.count("gold") >= 5, tables
    for table in tables:
        a, b = content(one, table), content(many, table)
        assert a.num_rows == b.num_rows, table
        assert a.equals(b), table
