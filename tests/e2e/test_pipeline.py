"""The whole DAG at tiny scale, twice: the second run changes nothing. Then a run whose step fails stops there,
is recorded, and resumes at that step once the cause is fixed."""

import re
import uuid

import pytest
from pydantic import SecretStr

from paylake import runs
from paylake.pipeline import STEP_NAMES, PipelineFailed, run_pipeline
from paylake.sources.migrate import isolated_sources
from paylake.stores import postgres
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def world(settings, ray_cluster, tmp_path_factory):
    isolated = isolated_sources(settings, "paylake_e2e")
    with postgres.connect(isolated) as conn:  # the pipeline seeds empty sources itself
        (customers,) = conn.execute("select count(*) from oltp.customer").fetchone()
    assert customers == 0
    return isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("lake")),
                                       "snowflake_database": f"ANALYTICS_E2E_{uuid.uuid4().hex[:6].upper()}"})


@pytest.fixture(scope="module")
def first_run(world):
    """The whole DAG once on the empty world (the scans below read what it built)."""
    return run_pipeline(world, scale="tiny", progress=lambda m: None)


def test_pipeline_runs_end_to_end_and_a_rerun_changes_nothing(world, first_run):
    first = {r.step: r.outcome for r in first_run}
    assert "transactions" in first["seed"]
    assert "10 table(s) loaded" in first["load → Snowflake"]
    assert "monthly_tax_retail_france" in first["business queries"]
    assert first["fraud features + online store"].startswith("gold/features/fraud ")
    assert "paylake-fraud" in first["train fraud (Ray Train, MLflow)"] or \
        first["train fraud (Ray Train, MLflow)"].startswith("not trained: ")
    assert "paylake-logseq" in first["train logs (Ray Train, MLflow)"], first["train logs (Ray Train, MLflow)"]
    assert "alert(s)" in first["monitor logs (security alerts)"], first["monitor logs (security alerts)"]
    # the training steps registered candidates; the promote step decided them (a first log model: champion)
    from paylake.ml import registry

    trained = re.match(r"paylake-logseq v(\d+) \(candidate\)", first["train logs (Ray Train, MLflow)"])
    if trained:  # not when a registry kept from an earlier session already holds a version for this table
        assert f"paylake-logseq v{trained[1]} → " in first["promote (champion or challenger)"], first
        assert registry.alias_version(world, "paylake-logseq") is not None
    assert registry.alias_version(world, "paylake-logseq", registry.CANDIDATE) is None
    second_run = run_pipeline(world, scale="tiny", progress=lambda m: None)
    second = {r.step: r.outcome for r in second_run}
    assert second["migrate"] == "0 change(s) applied"
    assert second["seed"].startswith("already seeded")
    assert "0 table(s) committed" in second["extract → bronze"]
    assert second["build-star (silver, gold)"].endswith("gold: unchanged")
    assert second["load → Snowflake"] == "nothing to load"
    assert "unchanged" in second["fraud features + online store"]
    assert second["train logs (Ray Train, MLflow)"].endswith(": kept")
    assert second["monitor logs (security alerts)"].startswith("0 new session(s) scored, 0 alert(s)")
    assert second["promote (champion or challenger)"].endswith("paylake-logseq: no candidate")

    # both runs are recorded, every step of each finished, in pipeline order
    summaries = {s.run_id: s for s in runs.summarize(runs.read_records(world))}
    for run in (first_run, second_run):
        assert summaries[run.run_id].state == "done"
        assert summaries[run.run_id].done == len(STEP_NAMES)
        steps = runs.latest_by_step(runs.read_records(world, run.run_id))
        assert sorted(steps, key=lambda s: steps[s].position) == list(STEP_NAMES)
        assert all(s.attempt == 1 and s.ended_at >= s.started_at for s in steps.values())
    assert runs.latest_by_step(runs.read_records(world, first_run.run_id))["extract"].rows > 0
    assert runs.latest_by_step(runs.read_records(world, second_run.run_id))["train-logs"].state == "skipped"

    # the dashboard names the platform's tasks by what they do, never by a private function
    from ray.util.state import list_tasks

    for private in ("_read", "_build", "_family", "_run_check", "_aggregate"):
        assert not list_tasks(address=world.ray_dashboard_url, filters=[("name", "=", private)],
                              raise_on_missing_output=False), private
    names = {t.name for t in list_tasks(address=world.ray_dashboard_url, limit=10_000, raise_on_missing_output=False)}
    for prefix in ("extract postgres:oltp.", "extract mongo:", "silver ", "gold facts ", "features ", "smoke "):
        assert any(n.startswith(prefix) for n in names), (prefix, sorted(names))

    # the platform's metrics reach the head's Prometheus endpoint (exported every few seconds)
    import time

    import httpx
    import ray

    port = next(n["MetricsExportPort"] for n in ray.nodes() if n["Alive"])
    wanted = ('ray_paylake_rows_total{', 'direction="written"', 'table="bronze/postgres/transaction"',
              "ray_paylake_step_seconds_bucket", 'step="extract"', "ray_paylake_cdc_lag_bytes")
    deadline, text = time.monotonic() + 60, ""
    while time.monotonic() < deadline and not all(w in text for w in wanted):
        time.sleep(2)
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]


def test_no_clear_pii_anywhere_after_the_run(world, first_run, settings, local_stack):
    """The scan of the security issue, on the world the pipeline just built: 120 clear values of 40 customers
    (emails, names, streets) are found nowhere: not in PostgreSQL as the developer role reads it, MongoDB, any
    file of the lake (every Delta version: each Parquet file decoded), Snowflake, nor any server or Ray log."""
    import glob
    import os
    from pathlib import Path

    import bson
    import psycopg
    import pyarrow.parquet as pq

    from paylake.security import keys
    from paylake.stores import mongo, snowflake

    revealed = keys.reveal_customers(world, range(1, 41))
    values = [v for c in revealed.values() for v in c.values() if v]
    needles = set(values)  # two customers may share a name or a street
    assert len(values) == 120 and len(needles) > 100

    def leaks(text: str) -> set[str]:
        return {n for n in needles if n in text}

    found: dict[str, set[str]] = {}
    dev, password = f"test_scan_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    with postgres.connect(world, autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), dev.encode(), b"scram-sha-256").decode()
        conn.execute(f"create role {dev} login password '{verifier}' in role paylake_developer")
        tables = [r[0] for r in conn.execute("select format('%I.%I', schemaname, tablename) from pg_tables where"
                                             " schemaname = 'oltp'")]
    try:
        with psycopg.connect(world.postgres_dsn.get_secret_value(), user=dev, password=password) as conn:
            for table in tables:
                with conn.cursor().copy(f"copy (select * from {table}) to stdout") as copy:
                    found[f"postgres {table}"] = leaks(b"".join(bytes(b) for b in copy).decode(errors="replace"))
    finally:
        with postgres.connect(world, autocommit=True) as conn:
            conn.execute(f"drop role {dev}")
    with mongo.client(world) as client:
        db = mongo.database(client, world)
        for name in db.list_collection_names():
            raw = b"".join(bson.encode(d) for d in db[name].find())
            found[f"mongo {name}"] = leaks(raw.decode(errors="replace"))
    for path in Path(world.lake_root).rglob("*"):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            text = " ".join(str(v) for col in table.columns for v in col.to_pylist() if isinstance(v, str | bytes))
        elif path.is_file():
            text = path.read_bytes().decode(errors="replace")
        else:
            continue
        found[f"lake {path.relative_to(world.lake_root)}"] = leaks(text)
    with snowflake.connect(world) as conn:
        cursor = conn.cursor()
        for (table,) in cursor.execute("select table_schema || '.' || table_name from information_schema.tables"
                                       " where table_schema not in ('INFORMATION_SCHEMA')").fetchall():
            rows = cursor.execute(f"select * from {table}").fetchall()  # noqa: S608 - names from the catalogue
            found[f"snowflake {table}"] = leaks(" ".join(str(v) for row in rows for v in row))
    logs = [*local_stack.state_dir.joinpath("logs").glob("*"), *glob.glob("/var/tmp/paylake-*/postgres/log/*"),
            *glob.glob(f"/tmp/paylake-ray-{local_stack.context().short_id}/session_latest/logs/*")]
    for path in map(Path, logs):
        if path.is_file() and os.access(path, os.R_OK):
            found[f"log {path.name}"] = leaks(path.read_bytes().decode(errors="replace"))
    assert len(found) > 50, "the scan read every store"
    assert {where: hits for where, hits in found.items() if hits} == {}


def test_a_destroyed_key_makes_the_bronze_copy_unreadable(world, first_run):
    """Crypto-shredding reaches the lake: bronze holds the sealed bytes, which open for everyone but the one
    customer whose key was destroyed (the same holds for every older Delta version: the bytes are the same)."""
    from paylake import contracts
    from paylake.extract.run import sources
    from paylake.security import keys
    from paylake.stores import lake

    (source,) = sources(world, ["postgres.customer"])
    bronze = lake.read_table(world, contracts.bronze(source).uri(world), ["customerid", "emailencrypted"])
    rows = {r["customerid"]: r["emailencrypted"] for r in bronze.to_pylist() if r["customerid"] in (41, 42)}
    with keys.Keyring(world) as ring:
        ring.destroy_subject(41, actor="test", reason="e2e erasure")
        subject = ring.subject_keys([41, 42])
    opened = keys.open_pii(subject, "oltp.customer", "EmailEncrypted", [41, 42], [rows[41], rows[42]])
    assert opened[0] is None and "@" in opened[1]


def test_a_failed_step_stops_the_run_and_resume_starts_there(world, monkeypatch):
    # what the steps below read (unchanged, hence quick, after the first test)
    run_pipeline(world, scale="tiny", only=["seed", "extract", "star", "load"], progress=lambda m: None)
    wrong = "not-the-password-9f2c"
    url = world.online_store_url.get_secret_value()
    scheme, rest = url.split("://", 1)
    broken = world.model_copy(update={"online_store_url": SecretStr(f"{scheme}://:{wrong}@{rest.split('@')[-1]}")})
    with pytest.raises(PipelineFailed, match="step features failed") as failure:
        run_pipeline(broken, only=["star,features", "queries"], progress=lambda m: None)
    run_id = failure.value.run_id
    steps = runs.latest_by_step(runs.read_records(world, run_id))
    assert steps["star"].state == "done" and steps["features"].state == "failed"
    assert "queries" not in steps  # a required step failed: nothing after it ran
    assert steps["features"].error and wrong not in steps["features"].error
    listed = run_cli(world, monkeypatch, "runs")
    assert listed.exit_code == 0 and run_id in listed.output and "failed" in listed.output

    resumed = run_cli(world, monkeypatch, "pipeline", "--resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming run" in resumed.output and "at features" in resumed.output
    steps = runs.latest_by_step(runs.read_records(world, run_id))
    assert {name: (s.state, s.attempt) for name, s in steps.items()} == {
        "star": ("done", 1), "features": ("done", 2), "queries": ("done", 1)}
    shown = run_cli(world, monkeypatch, "runs", run_id)
    assert shown.exit_code == 0 and "features" in shown.output and "monthly_tax_retail_france" in shown.output
    again = run_cli(world, monkeypatch, "pipeline", "--resume", run_id)
    assert again.exit_code == 0 and "nothing to resume" in again.output


def test_step_selection_is_checked_before_anything_runs(world, monkeypatch):
    result = run_cli(world, monkeypatch, "pipeline", "--only", "extract,trian-fraud")
    assert result.exit_code == 1 and "unknown pipeline step(s) trian-fraud" in result.output
    missing = run_cli(world, monkeypatch, "pipeline", "--resume", "20990101T000000-beef")
    assert missing.exit_code == 1 and "no pipeline run '20990101T000000-beef'" in missing.output


def test_a_run_killed_mid_step_resumes_and_loses_nothing(settings, ray_cluster, tmp_path, monkeypatch):
    """kill -9 of 'paylake pipeline' while a step runs: the record says so, --resume runs it again, and bronze
    equals the sources (the verify step), the star built once over it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from paylake.extract.verify import verify_bronze
    from paylake.sources.generator import SCALES
    from paylake.sources.seed import seed

    killed = isolated_sources(settings, "paylake_e2e_kill")
    seed(killed, SCALES["tiny"])
    killed = killed.model_copy(update={"lake_root": str(tmp_path / "lake")})
    env = {**os.environ, "PAYLAKE_POSTGRES_DSN": killed.postgres_dsn.get_secret_value(),
           "PAYLAKE_MONGO_DATABASE": killed.mongo_database, "PAYLAKE_LAKE_ROOT": killed.lake_root,
           "PAYLAKE_ONLINE_STORE_PREFIX": killed.online_store_prefix}
    paylake = str(Path(sys.executable).parent / "paylake")  # the command a user runs
    job = subprocess.Popen([paylake, "pipeline", "--only", "extract,star"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, running = time.monotonic() + 240, None
    try:
        while time.monotonic() < deadline and running is None:
            states = {r.step: r for r in runs.read_records(killed)}
            running = next((r for r in states.values() if r.step == "extract" and r.state == "running"), None)
            time.sleep(0.2)
        assert running is not None, "the extract step never started"
        time.sleep(1.0)  # in the middle of its Ray tasks
        os.kill(job.pid, signal.SIGKILL)
        job.wait(30)
    finally:
        if job.poll() is None:
            job.kill()
    run_id = running.run_id
    steps = runs.latest_by_step(runs.read_records(killed, run_id))
    interrupted = [s.step for s in steps.values() if s.state == "running"]
    assert len(interrupted) == 1, steps  # the step the kill cut short, left running
    assert runs.summarize(runs.read_records(killed, run_id))[0].state == "running"

    resumed = run_cli(killed, monkeypatch, "pipeline", "--resume", run_id)
    assert resumed.exit_code == 0, resumed.output
    steps = runs.latest_by_step(runs.read_records(killed, run_id))
    assert steps["extract"].state == "done" and steps["star"].state == "done"
    assert steps[interrupted[0]].attempt == 2  # the killed step ran again; a step done before it did not
    assert all(s.attempt == 1 for name, s in steps.items() if name != interrupted[0])
    checks = verify_bronze(killed)
    assert checks and all(c.result == "equal" for c in checks), [(c.table, c.result) for c in checks]
