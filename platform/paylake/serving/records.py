"""Every scored transaction, recorded to the lake in micro-batches (no PII, no request body).

A replica appends a record per answer to a buffer; a background thread writes
the buffer to ``gold/serving/fraud_score`` (Delta, append) every
``every_s`` seconds or as soon as ``max_rows`` are waiting, and once more when
the replica stops. Each write is one commit tagged with the replica's id and a
batch number, so a retried write is not appended twice. Drift compares these
served scores with the training scores (``paylake.ml.fraud.drift``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid

import pyarrow as pa

from paylake.settings import Settings
from paylake.stores import lake

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("request_id", pa.string()), ("transactionid", pa.int64()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("score", pa.float64()), ("decision", pa.string()),
    ("defaulted", pa.int32()), ("latency_ms", pa.float64()), ("scored_at", pa.timestamp("us", tz="UTC")),
])


def table_uri(settings: Settings) -> str:
    return lake.table_uri(settings, "gold", "serving", "fraud_score")


class ScoreRecorder:
    def __init__(self, settings: Settings, every_s: float = 2.0, max_rows: int = 500) -> None:
        self.settings, self.every_s, self.max_rows = settings, every_s, max_rows
        self.uri = table_uri(settings)
        self.app_id = f"serving-{uuid.uuid4().hex[:12]}"
        self._rows: list[dict] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._batch = 0
        self.written = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="score-recorder", daemon=True)
        self._thread.start()

    def add(self, record: dict) -> None:
        with self._lock:
            self._rows.append(record)
            if len(self._rows) >= self.max_rows:
                self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return 0
        self._batch += 1
        try:
            lake.append_rows(self.settings, self.uri, pa.Table.from_pylist(rows, schema=SCHEMA),
                             app_id=self.app_id, batch=self._batch, state={"rows": len(rows)})
        except Exception as exc:  # noqa: BLE001 - keep the rows for the next try, say why
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("served-score records not written yet (%d rows kept): %s", len(rows), self.last_error)
            with self._lock:
                self._rows[:0] = rows
            self._batch -= 1
            return 0
        self.written += len(rows)
        self.last_error = None
        return len(rows)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def record(request_id: str, transactionid: int, name: str, version: str, result: dict, defaulted: int,
           latency_ms: float) -> dict:
    return {"request_id": request_id, "transactionid": transactionid, "model_name": name, "model_version": version,
            "score": result["fraud_probability"], "decision": result["decision"], "defaulted": defaulted,
            "latency_ms": latency_ms, "scored_at": dt.datetime.now(dt.UTC)}
