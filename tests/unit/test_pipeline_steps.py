"""The pipeline's step list and its run records (pure logic)."""

import datetime as dt

import pytest
from pydantic import SecretStr

from paylake import runs
from paylake.errors import PaylakeError
from paylake.pipeline import STEP_NAMES, STEPS, check_capacity, select_steps
from paylake.settings import Settings


def test_the_steps_run_in_the_dossiers_order_with_their_resources():
    assert STEP_NAMES == ("migrate", "seed", "extract", "cdc", "star", "load", "features", "train-fraud", "train-logs",
                          "drift", "promote", "monitor-logs", "queries", "smoke")
    assert all(s.num_cpus >= 0 and s.memory_gb > 0 for s in STEPS)
    assert [s.name for s in STEPS if s.local_only] == ["seed"]
    assert [s.name for s in STEPS if s.optional] == ["drift"]


def test_only_and_from_select_in_pipeline_order():
    assert [s.name for s in select_steps(["load,extract", "cdc"])] == ["extract", "cdc", "load"]
    assert [s.name for s in select_steps(start="queries")] == ["queries", "smoke"]
    assert len(select_steps()) == len(STEPS)
    with pytest.raises(PaylakeError, match="unknown pipeline step.*trian.*choose from migrate"):
        select_steps(["trian"])
    with pytest.raises(PaylakeError, match="--only or --from"):
        select_steps(["load"], "extract")


def test_a_step_the_cluster_cannot_hold_is_refused_before_the_run():
    check_capacity(list(STEPS), cpus=2, memory_gb=8)
    with pytest.raises(PaylakeError, match="1 CPU.*extract needs 2 CPU"):
        check_capacity(select_steps(["migrate", "extract"]), cpus=1, memory_gb=8)


def test_errors_are_recorded_without_the_settings_secrets():
    settings = Settings(postgres_dsn=SecretStr("postgresql://owner:s3cret-pw@db:5432/paylake"),
                        kms_secret_access_key=SecretStr("very-secret-key"))
    text = runs.scrub("auth failed for postgresql://owner:s3cret-pw@db:5432/paylake; key very-secret-key; "
                      "password s3cret-pw", settings)
    assert "s3cret-pw" not in text and "very-secret-key" not in text and text.count("***") == 3
    assert len(runs.scrub("x" * 10_000, settings)) == runs.MAX_ERROR


def record(run_id, step, state, at, optional=False, position=1):
    return runs.StepRecord(run_id, step, position, 1, state, optional, at, None if state == "running" else at,
                           1.0, None, None, None)


def test_a_runs_state_is_its_steps_newest_records():
    t0 = dt.datetime(2026, 12, 5, 12, tzinfo=dt.UTC)
    records = [record("a", "extract", "running", t0), record("a", "extract", "done", t0),
               record("a", "drift", "failed", t0, optional=True),
               record("b", "extract", "running", t0 + dt.timedelta(hours=1)),
               record("c", "extract", "done", t0 + dt.timedelta(hours=2)),
               record("c", "load", "failed", t0 + dt.timedelta(hours=2))]
    summaries = {s.run_id: s for s in runs.summarize(records)}
    assert [s.run_id for s in runs.summarize(records)] == ["c", "b", "a"]  # newest first
    assert summaries["a"].state == "done" and summaries["a"].failed == ["drift"]  # an optional failure
    assert summaries["b"].state == "running" and summaries["b"].ended_at is None  # killed, or still going
    assert summaries["c"].state == "failed" and summaries["c"].done == 1
    assert runs.new_run_id(t0).startswith("20261205T120000-")
