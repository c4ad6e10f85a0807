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

from paylake import contracts
from paylake.settings import Settings
from paylake.stores import lake

log = logging.getLogger(__name__)

SCHEMA = pa.schema([
    ("request_id", pa.string()), ("transactionid", pa.int64()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("score", pa.float64()), ("decision", pa.string()),
    ("defaulted", pa.int32()), ("latency_ms", pa.float64()), ("scored_at", pa.timestamp("us", tz="UTC")),
])


class ScoreRecorder:
    """The buffer and its writer. Never loses a record silently:

    * a flush cuts the buffer into a batch with a new number (numbers are never reused) and commits the
      batches still pending in order, under a flush lock (the thread and an explicit flush never interleave);
    * a failed commit keeps its batch, rows and number, for the next flush: if the failure came after the
      commit landed, the retry is recognised by its number (``append_rows`` answers False) and not
      appended twice;
    * the buffer is bounded (``max_buffer`` rows, pending batches included): a record beyond it is dropped
      and counted (``dropped``, and the Ray metric ``paylake_serving_records_dropped``), never held until
      the replica runs out of memory."""

    # max_rows: a flush before every_s only when this many wait. At 500, a replica scoring ~1,000 payments/s
    # committed twice a second and the local S3 server spent ~11 % of the machine on those commits
    # (bench/README, serve); a commit's cost hardly depends on its rows, so under load they wait for the timer.
    def __init__(self, settings: Settings, every_s: float = 2.0, max_rows: int = 50_000,
                 max_buffer: int = 200_000) -> None:
        self.settings, self.every_s, self.max_rows, self.max_buffer = settings, every_s, max_rows, max_buffer
        self.uri = contracts.SERVED_FRAUD_SCORES.uri(settings)
        self.app_id = f"serving-{uuid.uuid4().hex[:12]}"
        self._rows: list[dict] = []
        self._pending: list[tuple[int, list[dict]]] = []  # cut, not committed yet
        self._held = 0  # rows in _pending
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._batch = 0
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._metrics = _metrics()
        self._thread = threading.Thread(target=self._run, name="score-recorder", daemon=True)
        self._thread.start()

    def add(self, record: dict) -> bool:
        """Buffer one record; False (and counted) when the buffer is full."""
        with self._lock:
            if len(self._rows) + self._held >= self.max_buffer:
                self.dropped += 1
                if self._metrics:
                    self._metrics["dropped"].inc()
                return False
            self._rows.append(record)
            if len(self._rows) >= self.max_rows:
                self._wake.set()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.every_s)
            self._wake.clear()
            self.flush()

    def flush(self) -> int:
        """Commit what is buffered and pending; returns the rows committed by this call."""
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                if rows:
                    self._batch += 1
                    self._pending.append((self._batch, rows))
                    self._held += len(rows)
            done = 0
            while self._pending:
                batch, rows = self._pending[0]
                try:
                    committed = lake.append_rows(self.settings, self.uri, pa.Table.from_pylist(rows, schema=SCHEMA),
                                                 app_id=self.app_id, batch=batch, state={"rows": len(rows)})
                except Exception as exc:  # noqa: BLE001 - keep the batch for the next flush, say why
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("served-score records not written yet (%d rows kept, batch %d): %s",
                                self._held, batch, self.last_error)
                    break
                if not committed:
                    log.info("served-score batch %d was already committed (a retry after a lost answer)", batch)
                with self._lock:
                    self._pending.pop(0)
                    self._held -= len(rows)
                done += len(rows)
                self.last_error = None
            self.written += done
            if self._metrics and done:
                self._metrics["written"].inc(done)
            return done

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)
        self.flush()


def _metrics() -> dict | None:
    """Ray metrics of the recorder (None outside a Ray worker: tests of the pure logic)."""
    try:
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            return None
        return {"dropped": metrics.Counter("paylake_serving_records_dropped",
                                           description="served-score records dropped: the buffer was full"),
                "written": metrics.Counter("paylake_serving_records_written",
                                           description="served-score records committed to the lake")}
    except Exception:  # noqa: BLE001 - metrics are an aid, never a reason not to serve
        return None


def record(request_id: str, transactionid: int, name: str, version: str, result: dict, defaulted: int,
           latency_ms: float) -> dict:
    return {"request_id": request_id, "transactionid": transactionid, "model_name": name, "model_version": version,
            "score": result["fraud_probability"], "decision": result["decision"], "defaulted": defaulted,
            "latency_ms": latency_ms, "scored_at": dt.datetime.now(dt.UTC)}
