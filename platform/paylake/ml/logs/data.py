"""Database sessions for the log-sequence model, read from ``silver/log_session``.

A session is usable when it has at least one line and every line is an object
with a text ``message`` (severity and SQLSTATE, when present, are text too).
Anything else — no ``lines``, ``lines`` that is not a list, an empty session, a
line of the wrong type — is skipped and counted under a fixed reason
(``SessionSet.skipped``), never a crash: the same check guards training,
monitoring and the scoring API (``clean_lines``).

Ground truth (``label``, ``scenario``) exists only for the seed's sessions; it
is used to pick normal sessions for training and to measure, never as a feature.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from paylake import contracts
from paylake.ml.logs.keys import session_keys, session_params
from paylake.settings import Settings
from paylake.stores import lake

SILVER_COLUMNS = ["session_id", "dbname", "db_user", "client_key", "started_at", "label", "scenario", "lines"]
TEXT_FIELDS = ("error_severity", "state_code", "message", "statement")


@dataclass(frozen=True)
class LogSession:
    session_id: str
    user: str
    client_key: str
    started_at: dt.datetime | None
    label: str | None  # "normal" / "anomalous" for seed sessions, else None
    scenario: str | None
    lines: tuple[dict, ...]
    keys: tuple[str, ...]
    params: tuple[dict, ...] = ()  # per line: role, elapsed_s since the previous line, hour (logkeys.session_params)

    @property
    def anomalous(self) -> bool:
        return self.label == "anomalous"


@dataclass
class SessionSet:
    sessions: list[LogSession] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)  # reason -> sessions
    skipped_ids: list[tuple[str, str]] = field(default_factory=list)  # (session id, reason) when it has an id


def clean_lines(raw: Any) -> tuple[list[dict] | None, str | None]:
    """(lines, None) when ``raw`` is a usable list of log lines, else (None, reason)."""
    if raw is None:
        return None, "no lines"
    if not isinstance(raw, (list, tuple)):
        return None, "lines is not a list"
    if not raw:
        return None, "empty session"
    lines = []
    for line in raw:
        if not isinstance(line, dict):
            return None, "a line is not an object"
        if not isinstance(line.get("message"), str):
            return None, "a line has no text message"
        if any(line.get(name) is not None and not isinstance(line.get(name), str) for name in TEXT_FIELDS):
            return None, "a line has a non-text severity, state code or statement"
        lines.append(line)
    return lines, None


def to_sessions(rows: Iterable[dict]) -> SessionSet:
    """Usable sessions of silver-like rows (``lines`` plus the session fields), skips counted."""
    out = SessionSet()
    for row in rows:
        lines, reason = clean_lines(row.get("lines"))
        has_id = isinstance(row.get("session_id"), str) and bool(row["session_id"])
        if reason is None and not has_id:
            reason = "no session id"
        if reason is not None:
            out.skipped[reason] += 1
            if has_id:
                out.skipped_ids.append((row["session_id"], reason))
            continue
        out.sessions.append(LogSession(row["session_id"], str(row.get("db_user") or ""),
                                       str(row.get("client_key") or ""), row.get("started_at"), row.get("label"),
                                       row.get("scenario"), tuple(lines), tuple(session_keys(lines)),
                                       tuple(session_params(lines, row.get("db_user")))))
    out.sessions.sort(key=lambda s: (s.started_at or dt.datetime.min.replace(tzinfo=dt.UTC), s.session_id))
    return out


def read_sessions(settings: Settings, exclude: Sequence[str] = ()) -> SessionSet:
    """The sessions of ``silver/log_session`` (minus the ids in ``exclude``), in start order."""
    uri = contracts.LOG_SESSIONS.uri(settings)
    if lake.table_version(settings, uri) is None:
        from paylake.errors import PaylakeError

        raise PaylakeError("silver/log_session does not exist: run 'paylake extract' and 'paylake build-silver' "
                           "(the Log collection) first")
    table = lake.read_table(settings, uri, columns=SILVER_COLUMNS)
    if exclude:
        table = table.filter(pc.invert(pc.is_in(table["session_id"], value_set=pa.array(list(exclude), pa.string()))))
    return to_sessions(table.to_pylist())


def split(sessions: Sequence[LogSession], valid: float = 0.2, test: float = 0.2) -> dict[str, list[LogSession]]:
    """Time-ordered split: normal sessions → train (oldest) / valid / test (newest); anomalous ones → valid
    (older half) / test (newer half). The model never trains on an anomalous session."""
    normal = [s for s in sessions if not s.anomalous]
    anomalous = [s for s in sessions if s.anomalous]
    cut_train = int(round(len(normal) * (1 - valid - test)))
    cut_valid = int(round(len(normal) * (1 - test)))
    half = len(anomalous) // 2
    return {"train": normal[:cut_train],
            "valid": normal[cut_train:cut_valid] + anomalous[:half],
            "test": normal[cut_valid:] + anomalous[half:]}
