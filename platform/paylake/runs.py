"""Run records: what each step of each pipeline run did, in the lake (``runs/pipeline_step``, Delta, append).

A step writes a ``running`` record when it starts and a ``done`` / ``failed`` /
``skipped`` record when it ends; a step's state is its newest record, so a run
killed mid-step shows that step ``running`` (``paylake runs``) and
``paylake pipeline --resume RUN_ID`` starts again at the first step of the run
that is not ``done`` or ``skipped``. Each record is one commit with its run's
Delta app id and a batch number (the run's records so far + 1): a retried
commit is not appended twice.

Errors are kept as text, with every secret of the settings blanked out.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

import pyarrow as pa

from paylake import contracts
from paylake.errors import PaylakeError
from paylake.settings import Settings
from paylake.stores import lake

SCHEMA = pa.schema([
    ("run_id", pa.string()), ("step", pa.string()), ("position", pa.int32()), ("attempt", pa.int32()),
    ("state", pa.string()), ("optional", pa.bool_()), ("started_at", pa.timestamp("us", tz="UTC")),
    ("ended_at", pa.timestamp("us", tz="UTC")), ("seconds", pa.float64()), ("rows", pa.int64()),
    ("summary", pa.string()), ("error", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("plan", pa.string()),  # the run's steps, comma-separated (what a resume continues)
])
FINISHED = ("done", "skipped")  # a resume starts after these
MAX_ERROR = 4000


def new_run_id(now: dt.datetime | None = None) -> str:
    """Sortable by start time, unique: ``20261205T171500-3fa2``."""
    return f"{(now or dt.datetime.now(dt.UTC)):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def scrub(text: str, settings: Settings) -> str:
    """``text`` without any secret of ``settings`` (a DSN's password inside a driver's message ...)."""
    from pydantic import SecretStr

    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            raw = value.get_secret_value()
            candidates = [raw]
            if "://" in raw:  # a URL: its password alone may be quoted too
                from urllib.parse import urlsplit

                password = urlsplit(raw).password
                if password:
                    candidates.append(password)
            for candidate in candidates:
                if candidate and len(candidate) >= 4:
                    text = text.replace(candidate, "***")
    return text[:MAX_ERROR]


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    step: str
    position: int
    attempt: int
    state: str  # running, done, failed, skipped
    optional: bool
    started_at: dt.datetime
    ended_at: dt.datetime | None
    seconds: float | None
    rows: int | None
    summary: str | None
    error: str | None
    plan: str | None = None


class RunLog:
    """The records of one run: written as its steps go, read back to resume it."""

    def __init__(self, settings: Settings, run_id: str, plan: list[str]) -> None:
        self.settings, self.run_id, self.plan = settings, run_id, ",".join(plan)
        self.uri = contracts.PIPELINE_RUNS.uri(settings)
        self._written = len(read_records(settings, run_id))

    def write(self, record: StepRecord) -> None:
        self._written += 1
        row = {**record.__dict__, "error": scrub(record.error, self.settings) if record.error else None,
               "recorded_at": dt.datetime.now(dt.UTC), "plan": self.plan}
        lake.append_rows(self.settings, self.uri, pa.Table.from_pylist([row], schema=SCHEMA),
                         app_id=f"pipeline-run-{self.run_id}", batch=self._written, state={"step": record.step})


def read_records(settings: Settings, run_id: str | None = None) -> list[StepRecord]:
    """Every record (of one run), oldest first."""
    import pyarrow.compute as pc

    uri = contracts.PIPELINE_RUNS.uri(settings)
    if not lake.table_exists(settings, uri):
        return []
    table = lake.read_table(settings, uri)
    if run_id is not None:
        table = table.filter(pc.equal(table["run_id"], run_id))
    table = table.sort_by([("recorded_at", "ascending")])
    names = [f for f in StepRecord.__dataclass_fields__]
    return [StepRecord(**{k: row[k] for k in names}) for row in table.select(names).to_pylist()]


def latest_by_step(records: list[StepRecord]) -> dict[str, StepRecord]:
    """Each step's newest record (its state)."""
    out: dict[str, StepRecord] = {}
    for record in records:
        out[record.step] = record
    return out


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    started_at: dt.datetime
    ended_at: dt.datetime | None
    state: str  # done, failed, running (or killed: a step left running)
    steps: int
    done: int
    failed: list[str]


def summarize(records: list[StepRecord]) -> list[RunSummary]:
    """One line per run, newest first."""
    by_run: dict[str, list[StepRecord]] = {}
    for record in records:
        by_run.setdefault(record.run_id, []).append(record)
    out = []
    for run_id, rows in by_run.items():
        steps = latest_by_step(rows)
        failed = [s.step for s in steps.values() if s.state == "failed"]
        running = any(s.state == "running" for s in steps.values())
        blocking = [s for s in steps.values() if s.state == "failed" and not s.optional]
        state = "failed" if blocking else "running" if running else "done"
        ends = [s.ended_at for s in steps.values() if s.ended_at is not None]
        out.append(RunSummary(run_id, min(r.started_at for r in rows), max(ends) if ends and not running else None,
                              state, len(steps), sum(s.state in FINISHED for s in steps.values()), failed))
    return sorted(out, key=lambda r: r.started_at, reverse=True)


def require_run(settings: Settings, run_id: str) -> list[StepRecord]:
    records = read_records(settings, run_id)
    if not records:
        known = [r.run_id for r in summarize(read_records(settings))[:5]]
        raise PaylakeError(f"no pipeline run {run_id!r} in {contracts.PIPELINE_RUNS.uri(settings)}"
                           + (f"; the latest: {', '.join(known)}" if known else ": no run recorded yet")
                           + " ('paylake runs' lists them)")
    return records
