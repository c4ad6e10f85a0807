"""Session fixtures: one local stack (and one Ray) for the whole test session.

The test stack lives in ``.paylake-test/`` with its own ports (the Ray
dashboard included), so a developer's ``make demo`` stack keeps running
beside it. Set PAYLAKE_KEEP_TEST_STACK=1 to leave it up between sessions."""

from __future__ import annotations

import os
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
    stack.up(port_overrides=ports)
    yield stack
    if os.environ.get("PAYLAKE_KEEP_TEST_STACK") != "1":
        stack.down()


@pytest.fixture(scope="session")
def settings(local_stack) -> Settings:
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


@pytest.fixture(scope="session")
def fraud_lake(settings, ray_cluster, tmp_path_factory):
    """Sources of their own with enough days and frauds for a time split, extracted into a
    lake of their own, silver built, fraud features computed once."""
    import dataclasses

    from paylake.extract.run import extract
    from paylake.ml.feature_build import build_features
    from paylake.sources.generator import SCALES
    from paylake.sources.migrate import isolated_sources
    from paylake.sources.seed import seed
    from paylake.transform.silver import build_silver

    isolated = isolated_sources(settings, "paylake_fraud")
    seed(isolated, dataclasses.replace(SCALES["tiny"], customers=500, merchants=50, days=75, log_sessions=0))
    here = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("fraud-lake"))})
    extract(here)
    build_silver(here)
    assert build_features(here).state == "built"
    return here
