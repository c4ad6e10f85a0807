"""The capacity plan: what a given volume needs, from throughputs the benchmarks measured (``bench/results``).

Every rate comes from a file a benchmark wrote on this machine (``bench/common.save_result``): extraction,
the star build and the features per CPU, the Snowflake load per loader, training CPU-seconds per million rows,
scoring per core, the stream per process. Nothing is typed in but the volume, the windows and the prices, which
are stated. The plan scales those rates linearly: it is a first sizing to be checked on the cluster, not a
promise (network, S3 and Snowflake limits of a real account are not measured here).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from paylake import kuberay
from paylake.errors import PaylakeError

RESULTS = kuberay.ROOT / "bench" / "results"
NEEDED = {"extract": "bench/extract.py", "star": "bench/star.py", "load": "bench/load.py",
          "features": "bench/features.py", "train_fraud": "bench/train_fraud.py", "serve": "bench/serve.py",
          "stream": "bench/stream.py"}
# On-demand Linux prices, USD per hour, AWS us-east-1 list prices (check the AWS price list for your region:
# --price INSTANCE=USD overrides one)
PRICES = {"m6i.large": 0.096, "m6i.2xlarge": 0.384, "m6i.4xlarge": 0.768, "g5.2xlarge": 1.212}
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Volume:
    transactions_per_day: float = 1e9
    peak_scoring_rps: float = 10_000
    batch_window_hours: float = 4.0  # the nightly pipeline must fit in it
    training_days: int = 90  # history the fraud model trains on
    trainings_per_month: int = 4
    training_window_hours: float = 8.0  # a training must fit in it (the autoscaler adds workers for it)
    peak_factor: float = 3.0  # peak payments/s over the day's average (the stream)
    utilisation: float = 0.7  # plan to this share of the measured rates


@dataclass
class Plan:
    volume: Volume
    inputs: dict[str, dict]
    lines: list[tuple[str, str, str]] = field(default_factory=list)  # (what, need, from which measurement)
    nodes: list[tuple[str, str, float, float]] = field(default_factory=list)  # (role, instance, count, hours/mo)
    monthly_usd: float = 0.0
    warnings: list[str] = field(default_factory=list)


def load_inputs(folder: Path = RESULTS) -> dict[str, dict]:
    missing = [f"{name} ({bench})" for name, bench in NEEDED.items() if not (folder / f"{name}.json").is_file()]
    if missing:
        raise PaylakeError(f"no measured figures for {', '.join(missing)} in {folder}: run those benchmarks on the "
                           "demo stack first (each saves bench/results/<name>.json)")
    return {name: json.loads((folder / f"{name}.json").read_text()) for name in NEEDED}


def _figure(inputs: dict, bench: str, key: str) -> float:
    try:
        value = float(inputs[bench]["figures"][key])
    except (KeyError, TypeError, ValueError):
        raise PaylakeError(f"bench/results/{bench}.json has no figure {key!r}: run {NEEDED[bench]} again") from None
    if not value > 0:
        raise PaylakeError(f"bench/results/{bench}.json: {key} = {value}: a plan needs a positive rate")
    return value


def plan(volume: Volume, inputs: dict[str, dict], prices: dict[str, float] | None = None) -> Plan:
    prices = {**PRICES, **(prices or {})}
    out = Plan(volume, inputs)
    tpd, u = volume.transactions_per_day, volume.utilisation
    window_s = volume.batch_window_hours * 3600

    def dated(bench: str) -> str:
        return f"{NEEDED[bench]}, {inputs[bench]['measured_at'][:10]}"

    # the nightly batch: extract + star + features over the day's payments, CPU-seconds at the measured rates
    cpu_s = {
        "extract": tpd / _figure(inputs, "extract", "rows_per_s_per_cpu"),
        "star": tpd / _figure(inputs, "star", "input_rows_per_s_per_cpu"),
        "features": tpd / _figure(inputs, "features", "rows_per_s_per_cpu"),
    }
    for step, seconds in cpu_s.items():
        out.lines.append((f"nightly {step}: {tpd:,.0f} payments", f"{seconds / 3600:,.1f} CPU-hours", dated(step)))
    pod_cpus = kuberay.CPU_WORKERS.pod_cpus
    batch_cpus = sum(cpu_s.values()) / (window_s * u)
    batch_workers = math.ceil(batch_cpus / pod_cpus)
    out.lines.append((f"nightly batch in {volume.batch_window_hours:g} h at {u:.0%} of the measured rates",
                      f"{batch_cpus:,.0f} CPUs = {batch_workers} CPU workers ({pod_cpus} CPUs each)", "sum of the above"))

    star = inputs["star"]["figures"]
    gold_rows = tpd * float(star["output_rows"]) / float(star["input_rows"])
    loaders = math.ceil(gold_rows / (_figure(inputs, "load", "rows_per_s") * window_s * u))
    out.lines.append((f"Snowflake load: up to {gold_rows:,.0f} gold rows (the star bench's output per input row)",
                      f"{loaders} loader(s) in the window", dated("load")))

    train_rows = tpd * volume.training_days
    train_cpu_h = _figure(inputs, "train_fraud", "cpu_seconds_per_million_rows") * train_rows / 1e6 / 3600
    train_workers = math.ceil(train_cpu_h / (volume.training_window_hours * pod_cpus * u))
    out.lines.append((f"fraud training on {volume.training_days} days ({train_rows:,.0f} rows), "
                      f"{volume.trainings_per_month}x a month",
                      f"{train_cpu_h:,.0f} CPU-hours: {train_workers} CPU workers for "
                      f"{volume.training_window_hours:g} h", dated("train_fraud")))
    if train_workers > 4:
        out.warnings.append(f"training on every payment of {volume.training_days} days takes {train_cpu_h:,.0f} "
                            "CPU-hours: at this volume the legitimate payments are sampled (the model's "
                            "calibration corrects for it) or the history shortened")

    serve = inputs["serve"]["figures"]["serve"]
    machine_cpus = float(inputs["serve"]["machine"]["cpus"])
    per_core = float(serve["single_rps"]) / machine_cpus  # the whole service (ingress, replicas, store) per core
    serve_cpus = volume.peak_scoring_rps / (per_core * u)
    serve_workers = math.ceil(serve_cpus / pod_cpus)
    out.lines.append((f"scoring at {volume.peak_scoring_rps:,.0f} requests/s (single bodies)",
                      f"{serve_cpus:,.0f} CPUs = {serve_workers} CPU workers, always on "
                      f"({per_core:,.0f} requests/s per core measured)", dated("serve")))

    peak_changes = tpd / 86_400 * volume.peak_factor
    per_process = _figure(inputs, "stream", "sustained_per_s")
    processes = math.ceil(peak_changes / (per_process * u))
    out.lines.append((f"the stream at {peak_changes:,.0f} payments/s (peak {volume.peak_factor:g}x the average)",
                      f"{processes} stream process(es) at {per_process:,.0f}/s each", dated("stream")))
    if processes > 16:
        out.warnings.append(f"the stream needs {processes} processes at its measured rate: one slot is read by "
                            "one process, so this volume needs the stream partitioned (several slots or a "
                            "Kafka/Debezium tier) before it can be met")

    out.nodes = [
        ("Ray head (no tasks)", kuberay.HEAD.instance, 1, HOURS_PER_MONTH),
        ("CPU workers, serving (always on)", kuberay.CPU_WORKERS.instance, serve_workers, HOURS_PER_MONTH),
        ("CPU workers, nightly batch", kuberay.CPU_WORKERS.instance, batch_workers, volume.batch_window_hours * 30),
        ("CPU workers, fraud training", kuberay.CPU_WORKERS.instance, train_workers,
         volume.training_window_hours * volume.trainings_per_month),
        ("GPU worker, log model training (nightly, 1 h)", kuberay.GPU_WORKERS.instance, 1, 30),
        ("services (MLflow, monitoring)", kuberay.SERVICES_NODES.instance, kuberay.SERVICES_NODES.min_nodes,
         HOURS_PER_MONTH),
    ]
    unknown = sorted({instance for _, instance, _, _ in out.nodes} - set(prices))
    if unknown:
        raise PaylakeError(f"no price for {', '.join(unknown)}: give --price INSTANCE=USD")
    out.monthly_usd = sum(count * hours * prices[instance] for _, instance, count, hours in out.nodes)
    peak_workers = serve_workers + max(batch_workers, train_workers)
    if peak_workers > kuberay.CPU_WORKERS.max_nodes:
        out.warnings.append(f"the CPU worker group allows {kuberay.CPU_WORKERS.max_nodes} nodes "
                            f"(paylake.kuberay.CPU_WORKERS.max_nodes): raise it to {peak_workers} "
                            "and run 'paylake cluster render'")
    return out


def markdown(result: Plan, prices: dict[str, float] | None = None) -> str:
    prices = {**PRICES, **(prices or {})}
    v = result.volume
    lines = ["# Capacity plan", "",
             f"Generated by `paylake capacity --write` for {v.transactions_per_day:,.0f} payments a day and "
             f"{v.peak_scoring_rps:,.0f} scoring requests/s at peak, from the figures the benchmarks saved in "
             "`bench/results/` (measured on the 2-core development machine; rates scaled linearly, planned at "
             f"{v.utilisation:.0%} of them). Regenerate after a benchmark run.", "",
             "| what | need | measured by |", "|---|---|---|"]
    lines += [f"| {what} | {need} | {source} |" for what, need, source in result.lines]
    lines += ["", "## Cluster shape and monthly cost", "",
              "| role | instance | nodes | hours / month | USD / month |", "|---|---|---|---|---|"]
    lines += [f"| {role} | {instance} | {count:g} | {hours:,.0f} | {count * hours * prices[instance]:,.0f} |"
              for role, instance, count, hours in result.nodes]
    lines += ["", f"**About {result.monthly_usd:,.0f} USD a month** of EC2 on-demand (us-east-1 list prices: "
              + ", ".join(f"{k} {v:.3f}/h" for k, v in sorted(prices.items())) + "), before EKS, storage, "
              "transfer, Snowflake and savings plans.", ""]
    if result.warnings:
        lines += ["## What this volume needs first", ""] + [f"- {w}" for w in result.warnings] + [""]
    return "\n".join(lines)
