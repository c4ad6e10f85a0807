"""The capacity plan's arithmetic (pure logic: figures as the benchmarks save them)."""

import json

import pytest

from paylake import capacity
from paylake.errors import PaylakeError


def inputs(**overrides) -> dict:
    figures = {"extract": {"rows_per_s_per_cpu": 50_000}, "star": {"input_rows_per_s_per_cpu": 100_000,
                                                                   "input_rows": 2_000_000, "output_rows": 500_000},
               "load": {"rows_per_s": 50_000}, "features": {"rows_per_s_per_cpu": 80_000},
               "train_fraud": {"cpu_seconds_per_million_rows": 20.0}, "serve": {"serve": {"single_rps": 300}},
               "stream": {"sustained_per_s": 100}}
    figures.update(overrides)
    return {name: {"figures": f, "measured_at": "2026-12-05T17:00:00+00:00", "machine": {"cpus": 2}}
            for name, f in figures.items()}


def test_the_plan_scales_the_measured_rates_and_prices_the_shape():
    small = capacity.plan(capacity.Volume(transactions_per_day=1e8, peak_scoring_rps=1_000), inputs())
    large = capacity.plan(capacity.Volume(transactions_per_day=1e9, peak_scoring_rps=10_000), inputs())
    by = {role: count for role, _, count, _ in large.nodes}
    # 1e9 / 50k + 1e9 / 100k + 1e9 / 80k = 42,500 CPU-seconds in 4 h at 70 %: 4.2 CPUs -> 1 worker of 14
    assert by["CPU workers, nightly batch"] == 1
    # 20 CPU-s per million rows x 9e10 rows = 500 CPU-hours; 8 h x 14 CPUs x 70 % = 78.4 per worker: 7 workers
    assert by["CPU workers, fraud training"] == 7
    assert by["CPU workers, serving (always on)"] == 7  # 10,000 / (150 per core x 0.7) = 95 CPUs
    slower = capacity.plan(capacity.Volume(), inputs(extract={"rows_per_s_per_cpu": 500}))
    assert {r: c for r, _, c, _ in slower.nodes}["CPU workers, nightly batch"] == 15  # 2.02 M CPU-s / 10,080 s = 201 CPUs
    assert large.monthly_usd > small.monthly_usd > 0
    assert any("stream needs" in w for w in large.warnings)  # 34,722/s at 100/s per process
    assert "| nightly extract" in capacity.markdown(large)


def test_missing_or_unusable_measurements_are_named(tmp_path):
    with pytest.raises(PaylakeError, match=r"no measured figures for extract \(bench/extract.py\)"):
        capacity.load_inputs(tmp_path)
    for name in capacity.NEEDED:
        (tmp_path / f"{name}.json").write_text(json.dumps(inputs()[name]))
    assert set(capacity.load_inputs(tmp_path)) == set(capacity.NEEDED)
    with pytest.raises(PaylakeError, match="stream.json: sustained_per_s = 0.0"):
        capacity.plan(capacity.Volume(), inputs(stream={"sustained_per_s": 0}))


def test_paylake_capacity_plans_from_the_committed_measurements():
    from typer.testing import CliRunner

    from paylake.cli import app

    result = CliRunner().invoke(app, ["capacity", "--transactions-per-day", "1e8", "--peak-scoring-rps", "2000",
                                      "--price", "m6i.4xlarge=0.5"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "bench/serve.py" in output and "bench/extract.py" in output and "USD a month of EC2" in output
    bad = CliRunner().invoke(app, ["capacity", "--price", "m6i.4xlarge"])
    assert bad.exit_code == 1 and "is not INSTANCE=USD" in bad.output
