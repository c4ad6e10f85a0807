"""The whole DAG at tiny scale, twice: the second run changes nothing."""

import uuid

from paylake.pipeline import run_pipeline
from paylake.sources.migrate import isolated_sources
from paylake.stores import postgres


def test_pipeline_runs_end_to_end_and_a_rerun_changes_nothing(settings, ray_cluster, tmp_path):
    isolated = isolated_sources(settings, "paylake_e2e")
    with postgres.connect(isolated) as conn:  # the pipeline seeds empty sources itself
        (customers,) = conn.execute("select count(*) from oltp.customer").fetchone()
    assert customers == 0
    configured = isolated.model_copy(update={"lake_root": str(tmp_path / "lake"),
                                             "snowflake_database": f"ANALYTICS_E2E_{uuid.uuid4().hex[:6].upper()}"})
    first = {r.step: r.outcome for r in run_pipeline(configured, scale="tiny", progress=lambda m: None)}
    assert "transactions" in first["seed --scale tiny"]
    assert "10 table(s) loaded" in first["load → Snowflake"]
    assert "monthly_tax_retail_france" in first["business queries"]
    assert first["fraud features + online store"].startswith("gold/features/fraud ")
    assert "paylake-fraud" in first["train fraud (Ray Train, MLflow)"] or \
        first["train fraud (Ray Train, MLflow)"].startswith("not trained: ")
    assert "paylake-logseq" in first["train logs (Ray Train, MLflow)"], first["train logs (Ray Train, MLflow)"]
    assert "alert(s)" in first["monitor logs (security alerts)"], first["monitor logs (security alerts)"]
    second = {r.step: r.outcome for r in run_pipeline(configured, scale="tiny", progress=lambda m: None)}
    assert second["migrate"] == "0 change(s) applied"
    assert second["seed --scale tiny"].startswith("already seeded")
    assert "0 table(s) committed" in second["extract → bronze"]
    assert second["build-star (silver, gold)"].endswith("gold: unchanged")
    assert second["load → Snowflake"] == "nothing to load"
    assert "unchanged" in second["fraud features + online store"]
    assert second["train logs (Ray Train, MLflow)"].endswith(": kept")
    assert second["monitor logs (security alerts)"].startswith("0 new session(s) scored, 0 alert(s)")
