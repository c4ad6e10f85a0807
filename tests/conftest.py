"""Session fixtures: one local stack (and one Ray) for the whole test session.

The test stack lives in ``.paylake-test/`` with its own ports (the Ray
dashboard included), so a developer's ``make demo`` stack keeps running
beside it. Set PAYLAKE_KEEP_TEST_STACK=1 to leave it up between sessions."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from paylake.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
TEST_STATE_DIR = ROOT / ".paylake-test"


@pytest.fixture(scope="session")
def local_stack():
    from paylake.stack import LocalStack
    from paylake.stack.process import free_port

    stack = LocalStack(TEST_STATE_DIR)
    ports = {}
    if not (TEST_STATE_DIR / "stack.json").exists():
        ports["ray_dashboard"] = free_port()
        ports["serve"] = free_port(avoid={ports["ray_dashboard"]})
    stack.up(port_overrides=ports)
    yield stack
    if os.environ.get("PAYLAKE_KEEP_TEST_STACK") != "1":
        stack.down()


@pytest.fixture(scope="session")
def settings(local_stack) -> Settings:
    # what the code under test finds by itself (the CLI's settings, the keys file beside the stack file) is
    # the test stack's too, never a demo stack's .paylake/ in the working tree
    os.environ["PAYLAKE_STACK_FILE"] = str(local_stack.stack_file.resolve())
    return load_settings(local_stack.stack_file)


@pytest.fixture(scope="session")
def ray_cluster(settings):
    """The test stack's Ray head, joined once by this process."""
    import ray

    from paylake.raycluster import init_ray

    init_ray(settings)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def migrated_postgres(settings) -> Settings:
    """The OLTP schema applied (idempotent) to the test stack's PostgreSQL."""
    from paylake.sources.migrate import migrate_postgres

    migrate_postgres(settings)
    return settings


@pytest.fixture(scope="session")
def migrated(settings) -> Settings:
    """Both source systems migrated (PostgreSQL schema, Mongo collections)."""
    from paylake.sources.migrate import migrate

    migrate(settings)
    return settings


@pytest.fixture(scope="session")
def seeded(settings):
    """Source systems of their own, filled with the ``tiny`` synthetic world.
    Yields (settings, seed report)."""
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import isolated_sources
    from paylake.sources.seed import seed

    isolated = isolated_sources(settings, "paylake_seeded")
    report = seed(isolated, SCALES["tiny"])
    return isolated, report


def fraud_world(**changes):
    """The fraud tests' world: 90 days of 1,000 customers, so that with the default 30-day label maturity
    every window of the time split holds both classes (40 / 16 / 48 frauds)."""
    import dataclasses

    from paylake.sources.generator import SCALES

    return dataclasses.replace(SCALES["tiny"], customers=1000, merchants=60, days=90, log_sessions=0, **changes)


FRAUD_WORLD = fraud_world()


@pytest.fixture(scope="session")
def fraud_lake(settings, ray_cluster, tmp_path_factory):
    """Sources of their own with enough days and frauds for a time split, extracted into a
    lake of their own, silver built, fraud features computed once."""

    from paylake.extract.run import extract
    from paylake.ml.fraud.feature_build import build_features
    from paylake.sources.migrate import isolated_sources
    from paylake.sources.seed import seed
    from paylake.transform.silver import build_silver

    isolated = isolated_sources(settings, "paylake_fraud")
    seed(isolated, FRAUD_WORLD)
    here = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("fraud-lake"))})
    extract(here)
    build_silver(here)
    assert build_features(here).state == "built"
    return here


FRAUD_MODEL = f"paylake-fraud-test-{uuid.uuid4().hex[:8]}"  # fresh: its first version is champion


@pytest.fixture(scope="session")
def trained_fraud(fraud_lake):
    """The fraud model trained once on the fraud lake with the production defaults (2 workers), registered as
    ``FRAUD_MODEL`` v1."""
    from paylake.ml.fraud.training import TrainOptions, train_fraud

    return train_fraud(fraud_lake, TrainOptions(model_name=FRAUD_MODEL, experiment=FRAUD_MODEL))


LOG_MODEL = f"paylake-logseq-test-{uuid.uuid4().hex[:8]}"  # a fresh registry entry: its first version is champion
MALFORMED_LOGS = [  # inserted past the collection's validator, as a buggy writer could
    {"sessionId": "bad-no-lines", "user": "x", "label": "normal", "scenario": "app_traffic"},
    {"sessionId": "bad-lines-type", "user": "x", "label": "normal", "scenario": "app_traffic", "lines": "oops"},
    {"sessionId": "bad-line-type", "user": "x", "label": "normal", "scenario": "app_traffic",
     "lines": [{"message": 42}]},
]


def refresh_logs(settings) -> None:
    """Extract the Log collection and rebuild silver/log_session."""
    from paylake.extract.run import ExtractOptions, extract
    from paylake.transform.silver import build_silver

    extract(settings, only=["mongo.Log"], options=ExtractOptions(quarantine_threshold=0.5))
    build_silver(settings, only=["log_session"])


@pytest.fixture(scope="session")
def log_lake(settings, ray_cluster, tmp_path_factory):
    """Sources with a tiny world (so table sizes are real) and 120 real database sessions, 25 % anomalous,
    plus malformed and empty Log documents; extracted and built into a lake of their own."""
    import dataclasses
    import datetime as dt

    from bson import ObjectId

    from paylake.sources.dblogs import LOG_COLLECTION, generate_log_sessions
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import isolated_sources
    from paylake.sources.seed import seed
    from paylake.stores import mongo

    isolated = isolated_sources(settings, "paylake_logs")
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=0))
    here = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("log-lake")),
                                       "snowflake_schema": f"LOGTEST_{uuid.uuid4().hex[:8].upper()}"})
    now = dt.datetime.now(dt.UTC)
    with mongo.client(here) as client:
        db = mongo.database(client, here)
        generate_log_sessions(here, db, sessions=120, anomalous_fraction=0.25, seed=5)
        db[LOG_COLLECTION].insert_many([{**doc, "_id": ObjectId()} for doc in MALFORMED_LOGS],
                                       bypass_document_validation=True)
        db[LOG_COLLECTION].insert_one({"sessionId": "empty-session", "dbname": "paylake", "user": "app_service",
                                       "clientAddress": "127.0.0.1", "startedAt": now, "endedAt": now,
                                       "label": "normal", "scenario": "app_traffic", "lines": []},
                                      bypass_document_validation=True)
    refresh_logs(here)
    return here


@pytest.fixture(scope="session")
def trained_logs(log_lake):
    """The log model trained once (2 workers) on the log lake, registered as ``LOG_MODEL``."""
    from paylake.ml.logs.model import LogTrainOptions, train_logs

    return train_logs(log_lake, LogTrainOptions(num_workers=2, windows=(4,), epochs=25, model_name=LOG_MODEL))


def run_cli(settings: Settings, monkeypatch, *args: str):
    """``paylake <args>`` as a user runs it, in-process, against ``settings``' own world (its database, Mongo
    database, lake, warehouse database and online store prefix; the rest from the test stack's file)."""
    from typer.testing import CliRunner

    from paylake.cli import app

    for name, value in {"POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
                        "MONGO_DATABASE": settings.mongo_database, "LAKE_ROOT": settings.lake_root,
                        "SNOWFLAKE_DATABASE": settings.snowflake_database,
                        "ONLINE_STORE_PREFIX": settings.online_store_prefix}.items():
        monkeypatch.setenv(f"PAYLAKE_{name}", value)
    return CliRunner().invoke(app, list(args))
