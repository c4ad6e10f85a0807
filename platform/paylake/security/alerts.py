"""``paylake monitor logs``: score the new database sessions, raise one alert per anomalous session.

1. New sessions: those of ``silver/log_session`` not yet in
   ``gold/security/scored_session`` (every session scored once, whatever the verdict).
2. Each is scored by the log-sequence model registered as
   ``paylake-logseq@champion`` and checked by the rules
   (``paylake.security.rules``). An alert is raised when the model or a rule
   says so: time, database user, client-address hash, the evidence (the lines
   whose key the model did not expect, with the expected keys, and the rules'
   findings: log keys, never literals), score, model version.
3. Alerts are inserted into the append-only ``gold/security/alert`` (a Delta
   MERGE that only inserts, keyed by the session: a re-run, even after a crash
   half-way, never raises an alert twice), then the scored sessions are
   recorded, then the alert table is loaded into Snowflake's
   ``SECURITY_Alert`` (PUT + COPY + MERGE, idempotent).
New keys (a statement shape the model never learnt) are kept under review
(``paylake.security.key_review``) and left out of the model's reading once
admitted: a new legitimate statement does not alert forever.
Sessions that cannot be scored (no lines, wrong types, …) are counted by
reason in the summary and recorded as scored (with the reason), so they are
not counted again on the next run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass, field

import pyarrow as pa

from paylake import contracts
from paylake.ml.logs.data import read_sessions
from paylake.security import key_review, rules
from paylake.settings import Settings
from paylake.stores import lake

APP_ID = contracts.MONITOR_APP
ALERT_TABLE = "SECURITY_Alert"


@dataclass(frozen=True)
class MonitorOptions:
    model_name: str = "paylake-logseq"  # scored with its ``champion``
    export_rows: int = rules.DEFAULT_EXPORT_ROWS
    load_warehouse: bool = True
    review: key_review.ReviewOptions = key_review.ReviewOptions()  # when a new key stops alerting


@dataclass
class MonitorReport:
    model_version: str
    new_sessions: int
    alerts: list[dict]
    skipped: dict[str, int]
    by_source: dict[str, int] = field(default_factory=dict)
    warehouse_rows: int | None = None
    seconds: float = 0.0
    keys_in_review: int = 0
    keys_admitted: list[str] = field(default_factory=list)


ALERT_SCHEMA = pa.schema([
    ("AlertID", pa.string()), ("SessionID", pa.string()), ("DateKey", pa.int64()),
    ("SessionStartedAt", pa.timestamp("us", tz="UTC")), ("DetectedAt", pa.timestamp("us", tz="UTC")),
    ("DbUser", pa.string()), ("ClientKey", pa.string()), ("Source", pa.string()), ("Rules", pa.string()),
    ("Severity", pa.string()), ("Score", pa.float64()), ("ModelName", pa.string()), ("ModelVersion", pa.string()),
    ("AnomalousLines", pa.int64()), ("Evidence", pa.string()),
])
SNAPSHOT_SCHEMA = pa.schema([
    ("observed_at", pa.timestamp("us", tz="UTC")), ("role", pa.string()), ("table_name", pa.string()),
    ("privilege", pa.string()), ("allowed", pa.bool_()),
])
REVIEW_SCHEMA = pa.schema([
    ("key", pa.string()), ("first_seen", pa.timestamp("us", tz="UTC")), ("last_seen", pa.timestamp("us", tz="UTC")),
    ("sessions", pa.int64()), ("blocked", pa.bool_()),
])
SCORED_SCHEMA = pa.schema([
    ("session_id", pa.string()), ("scored_at", pa.timestamp("us", tz="UTC")), ("model_version", pa.string()),
    ("anomalous", pa.bool_()), ("score", pa.float64()), ("alerted", pa.bool_()), ("skipped_reason", pa.string()),
])


def alert_id(session_id: str) -> str:
    return hashlib.sha256(f"paylake-alert|{session_id}".encode()).hexdigest()[:32]


def make_alert(session, verdict: dict, fired: list[dict], model_name: str, model_version: str,
               detected_at: dt.datetime) -> dict | None:
    """The alert of one scored session, or None when neither the model nor a rule flags it (pure)."""
    if not verdict["anomalous"] and not fired:
        return None
    source = "+".join(s for s, on in (("model", verdict["anomalous"]), ("rules", bool(fired))) if on)
    started = session.started_at
    evidence = {"lines": [{**line, "expected": line["expected"][:3]} for line in verdict["lines"][:10]],
                "rules": fired}
    return {"AlertID": alert_id(session.session_id), "SessionID": session.session_id,
            "DateKey": int(started.strftime("%Y%m%d")) if started else int(detected_at.strftime("%Y%m%d")),
            "SessionStartedAt": started, "DetectedAt": detected_at, "DbUser": session.user,
            "ClientKey": session.client_key, "Source": source, "Rules": ",".join(r["rule"] for r in fired),
            "Severity": "high" if source == "model+rules" or any(r["rule"] != "mass_export" for r in fired)
            else "medium", "Score": float(verdict["score"]), "ModelName": model_name, "ModelVersion": model_version,
            "AnomalousLines": len(verdict["lines"]), "Evidence": json.dumps(evidence, sort_keys=True)}


def _scored_ids(settings: Settings) -> list[str]:
    uri = contracts.SCORED_SESSIONS.uri(settings)
    if lake.table_version(settings, uri) is None:
        return []
    return lake.read_table(settings, uri, columns=["session_id"])["session_id"].to_pylist()


def _batch(settings: Settings, uri: str) -> int:
    return lake.delta_state(settings, uri, APP_ID).batch + 1


def monitor_logs(settings: Settings, options: MonitorOptions = MonitorOptions(),
                 progress=lambda m: None) -> MonitorReport:
    """Score the sessions that arrived since the last run and raise their alerts (see the module docstring)."""
    from paylake.ml.logs.scorer import load_scorer

    began = time.perf_counter()
    scorer, version = load_scorer(settings, options.model_name)
    progress("reading new sessions")
    new = read_sessions(settings, exclude=_scored_ids(settings))
    now = dt.datetime.now(dt.UTC)
    catalog = rules.load_catalog(settings, new.sessions) if new.sessions else rules.Catalog()
    catalog = rules.with_history(catalog, _earlier_snapshots(settings, catalog))
    reviews = _reviews(settings)
    admitted = key_review.admitted_keys(reviews, now, options.review)
    progress(f"scoring {len(new.sessions)} new session(s) with {options.model_name} v{version}")
    verdicts = score_with_admitted(scorer, [s.keys for s in new.sessions], admitted, [s.user for s in new.sessions])
    alerts, scored, reviewed = [], [], []
    for session, verdict in zip(new.sessions, verdicts):
        fired = rules.evaluate(session, catalog, options.export_rows)
        reviewed.append((session.keys, session.started_at or now, bool(fired), session.user))
        alert = make_alert(session, verdict, fired, options.model_name, version, now)
        if alert:
            alerts.append(alert)
        scored.append({"session_id": session.session_id, "scored_at": now, "model_version": version,
                       "anomalous": verdict["anomalous"], "score": float(verdict["score"]),
                       "alerted": alert is not None, "skipped_reason": None})
    scored += [{"session_id": sid, "scored_at": now, "model_version": version, "anomalous": None, "score": None,
                "alerted": False, "skipped_reason": reason} for sid, reason in new.skipped_ids]
    new_alerts = _insert(settings, contracts.SECURITY_ALERTS.uri(settings), alerts, ALERT_SCHEMA, "AlertID")
    _record_snapshot(settings, catalog)
    known = scorer.vocabulary.index
    with_new = [n for n, (keys, _, fired, _) in enumerate(reviewed) if not fired and any(not known(k) for k in keys)]
    rests = {n: [k for k in reviewed[n][0] if known(k)] for n in with_new}
    readable = [n for n in with_new if rests[n]]  # a session of new keys only tells nothing in their favour
    verdicts_rest = dict(zip(readable, scorer.score_keys([rests[n] for n in readable],
                                                         [reviewed[n][3] for n in readable]))) if readable else {}
    for n in with_new:  # suspicious apart from its new keys: the model, reading the session without them, flags it
        reviewed[n] = (*reviewed[n][:2], n not in verdicts_rest or bool(verdicts_rest[n]["anomalous"]), reviewed[n][3])
    reviews = key_review.review_keys(reviews, [r[:3] for r in reviewed], lambda key: known(key) != 0)
    _store_reviews(settings, reviews)
    _insert(settings, contracts.SCORED_SESSIONS.uri(settings), scored, SCORED_SCHEMA, "session_id")
    report = MonitorReport(version, len(new.sessions), alerts, dict(new.skipped), keys_in_review=len(reviews),
                           keys_admitted=admitted)
    for alert in alerts:
        report.by_source[alert["Source"]] = report.by_source.get(alert["Source"], 0) + 1
    if options.load_warehouse:
        from paylake.warehouse import snowflake, star_ddl

        snowflake.apply_ddl(settings, star_ddl.security_tables())  # database, schema, SECURITY_Alert
        if new_alerts or _warehouse_behind(settings):
            progress("loading the alerts into Snowflake")
            report.warehouse_rows = load_alerts(settings)
    report.seconds = time.perf_counter() - began
    return report


def _insert(settings: Settings, uri: str, rows: list[dict], schema: pa.Schema, key: str) -> int:
    """Insert the rows whose key is not in the table yet (never update); returns the rows inserted."""
    if not rows:
        return 0
    data = pa.Table.from_pylist(rows, schema=schema)
    metrics = lake.merge_rows(settings, uri, data, keys=[key], app_id=APP_ID, batch=_batch(settings, uri),
                              state={"rows": data.num_rows}, changed="false")
    return int(metrics.get("num_target_rows_inserted", 0))


def score_with_admitted(scorer, sessions: list[tuple[str, ...]], admitted: list[str],
                        roles: list[str | None] | None = None) -> list[dict]:
    """``scorer.score_keys`` on the sessions (their ``roles``, for the role rule) less their admitted keys, line
    numbers given back in the session's own numbering; a session of admitted keys only is normal to the model."""
    roles = roles if roles is not None else [None] * len(sessions)
    if not admitted:
        return scorer.score_keys(sessions, roles)
    kept = [[i for i, key in enumerate(keys) if not any(key_review.matches(a, key) for a in admitted)]
            for keys in sessions]
    scorable = [n for n, idx in enumerate(kept) if idx]
    verdicts = dict(zip(scorable, scorer.score_keys([[sessions[n][i] for i in kept[n]] for n in scorable],
                                                    [roles[n] for n in scorable])))
    out = []
    for n, keys in enumerate(sessions):
        verdict = verdicts.get(n, {"anomalous": False, "decision": "normal", "score": 0.0, "lines": []})
        for line in verdict["lines"]:
            line["line"] = kept[n][line["line"]] if line["line"] < len(kept[n]) else len(keys)
        out.append(verdict)
    return out


def _reviews(settings: Settings) -> list[key_review.Review]:
    uri = contracts.KEY_REVIEW.uri(settings)
    if lake.table_version(settings, uri) is None:
        return []
    return [key_review.Review(**row) for row in lake.read_table(settings, uri).to_pylist()]


def _store_reviews(settings: Settings, reviews: list[key_review.Review]) -> None:
    import dataclasses

    uri = contracts.KEY_REVIEW.uri(settings)
    if not reviews and lake.table_version(settings, uri) is None:
        return
    data = pa.Table.from_pylist([dataclasses.asdict(r) for r in reviews], schema=REVIEW_SCHEMA)
    lake.overwrite_rows(settings, uri, data, app_id=APP_ID, batch=_batch(settings, uri), state={"rows": len(reviews)})


def _earlier_snapshots(settings: Settings, catalog: rules.Catalog) -> list[dict]:
    """The privilege readings of earlier runs for the roles ``catalog`` asks about."""
    uri = contracts.PRIVILEGE_SNAPSHOTS.uri(settings)
    roles = sorted({role for role, _, _ in catalog.privileges})
    if not roles or lake.table_version(settings, uri) is None:
        return []
    import pyarrow.compute as pc

    table = lake.read_table(settings, uri)
    return table.filter(pc.is_in(table["role"], value_set=pa.array(roles, pa.string()))).to_pylist()


def _record_snapshot(settings: Settings, catalog: rules.Catalog) -> None:
    """Append this run's privilege readings (every one, changed or not: a reading bounds when a change can have
    happened; a few dozen rows per run): the history the next runs judge older sessions by."""
    rows = rules.snapshot_rows(catalog)
    if rows and catalog.read_at is not None:
        uri = contracts.PRIVILEGE_SNAPSHOTS.uri(settings)
        lake.append_rows(settings, uri, pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA), app_id=APP_ID,
                         batch=_batch(settings, uri), state={"rows": len(rows)})


def _warehouse_behind(settings: Settings) -> bool:
    """Whether the lake's alert table has a version Snowflake has not received (e.g. a crash before the load)."""
    from paylake.warehouse.load import loaded_versions

    version = lake.table_version(settings, contracts.SECURITY_ALERTS.uri(settings))
    return version is not None and loaded_versions(settings).get(ALERT_TABLE.upper()) != version


def load_alerts(settings: Settings) -> int:
    """Load ``gold/security/alert`` into Snowflake's ``SECURITY_Alert`` (idempotent); returns its rows."""
    from paylake.warehouse import load as warehouse_load
    from paylake.warehouse import snowflake, star_ddl

    uri = contracts.SECURITY_ALERTS.uri(settings)
    version = lake.table_version(settings, uri)
    data = lake.read_table(settings, uri)
    snowflake.apply_ddl(settings, star_ddl.security_tables())
    load_id = f"alerts-v{version}-{time.time_ns() % 10**9}"
    snowflake.load_table(settings, ALERT_TABLE, data, load_id=load_id)
    snowflake.reconcile(settings, ALERT_TABLE, data)
    warehouse_load.record_load(settings, ALERT_TABLE.upper(), version, load_id)
    return data.num_rows
