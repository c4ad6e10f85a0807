"""Security alerts on database sessions of a held-out seed: false alerts per 1,000 normal sessions and
recall per anomalous scenario, model and rules apart, in one run.

    .venv/bin/python bench/log_alerts.py [--train-sessions 300] [--held-out 400] [--anomalous-fraction 0.2]

Sources of its own (``paylake_bench_logs``: a tiny payments world, so table
sizes are real), a lake in a temporary folder and a model name of its own:
``--train-sessions`` real sessions (seed 5, 20 % anomalous) are extracted and the
log-sequence model trained on their normal ones (``paylake train logs``); then
``--held-out`` sessions of another seed (99) arrive and ``paylake monitor logs``
scores only those. Reported per source (the model, the rules, either): false
alerts per 1,000 normal held-out sessions with a 95 % Wilson interval, and the
share of each anomalous scenario alerted. The last line prints the false-alert
rate and the overall recall.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import uuid

from hdfs_eval import wilson

from paylake import contracts
from paylake.extract.run import ExtractOptions, extract
from paylake.ml.logs.data import read_sessions
from paylake.ml.logs.model import LogTrainOptions, train_logs
from paylake.report import console, summary_table
from paylake.security.alerts import MonitorOptions, monitor_logs
from paylake.settings import load_settings
from paylake.sources.dblogs import generate_log_sessions
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import mongo
from paylake.transform.silver import build_silver


def refresh(settings) -> None:
    extract(settings, only=["mongo.Log"], options=ExtractOptions(quarantine_threshold=0.5))
    build_silver(settings, only=["log_session"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-sessions", type=int, default=300)
    parser.add_argument("--held-out", type=int, default=400)
    parser.add_argument("--anomalous-fraction", type=float, default=0.2, help="of the held-out sessions")
    parser.add_argument("--export-rows", type=int, default=100, help="mass-export rule (tiny world tables)")
    args = parser.parse_args()

    main_settings = load_settings()
    settings = isolated_sources(main_settings, "paylake_bench_logs")
    seed(settings, dataclasses.replace(SCALES["tiny"], log_sessions=0))
    settings = settings.model_copy(update={"lake_root": tempfile.mkdtemp(prefix="paylake-bench-logs-"),
                                           "snowflake_schema": f"BENCH_LOGS_{uuid.uuid4().hex[:6].upper()}"})
    model = f"paylake-logseq-bench-{uuid.uuid4().hex[:6]}"
    with mongo.client(settings) as client:
        db = mongo.database(client, settings)
        console.print(f"running {args.train_sessions} training-period sessions (seed 5)")
        generate_log_sessions(settings, db, sessions=args.train_sessions, anomalous_fraction=0.2, seed=5)
        refresh(settings)
        report = train_logs(settings, LogTrainOptions(model_name=model))
        console.print(f"trained {model} v{report.version}: h={report.window} g={report.top_g} end threshold "
                      f"{report.end_threshold}; test split F1 {report.test['f1']:.3f}, precision at 1 in 1,000 "
                      f"{report.test['precision_at_mix']:.3f}")
        monitor_logs(settings, MonitorOptions(model_name=model, export_rows=args.export_rows))  # the past
        console.print(f"running {args.held_out} held-out sessions (seed 99)")
        generate_log_sessions(settings, db, sessions=args.held_out, anomalous_fraction=args.anomalous_fraction,
                              seed=99)
    refresh(settings)
    result = monitor_logs(settings, MonitorOptions(model_name=model, export_rows=args.export_rows))
    sessions = {s.session_id: s for s in read_sessions(settings).sessions}
    alerts = {a["SessionID"]: a for a in result.alerts}
    scored = [sessions[sid] for sid in _new_ids(settings) if sid in sessions]  # this run's sessions
    normal = [s for s in scored if not s.anomalous]
    anomalous = [s for s in scored if s.anomalous]

    def flagged(session, source: str) -> bool:
        alert = alerts.get(session.session_id)
        return alert is not None and (source == "either" or source in alert["Source"].split("+"))

    rows = []
    for source in ("model", "rules", "either"):
        false = sum(flagged(s, source) for s in normal)
        low, high = wilson(false, len(normal))
        recall = sum(flagged(s, source) for s in anomalous) / max(len(anomalous), 1)
        per = {name: sum(flagged(s, source) for s in anomalous if s.scenario == name) for name in
               sorted({s.scenario for s in anomalous})}
        totals = {name: sum(s.scenario == name for s in anomalous) for name in per}
        rows.append((source, f"{1000 * false / max(len(normal), 1):.1f}", f"[{1000 * low:.1f}, {1000 * high:.1f}]",
                     f"{recall:.3f}", json.dumps({k: f"{per[k]}/{totals[k]}" for k in per})))
    console.print(summary_table(f"held-out seed: {len(normal)} normal, {len(anomalous)} anomalous sessions",
                                ["alerts from", "false alerts / 1,000 normal", "95 % interval", "recall",
                                 "per scenario"], rows))
    either = rows[-1]
    print(f"false alerts per 1000 {either[1]} recall {either[3]}")


def _new_ids(settings) -> list[str]:
    """The sessions the last monitor run scored."""

    from paylake.stores import lake

    table = lake.read_table(settings, contracts.SCORED_SESSIONS.uri(settings), columns=["session_id", "scored_at"])
    latest = max(table["scored_at"].to_pylist())
    return [sid for sid, at in zip(table["session_id"].to_pylist(), table["scored_at"].to_pylist()) if at == latest]


if __name__ == "__main__":
    main()
