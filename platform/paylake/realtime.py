"""The real-time fraud path (``paylake stream``, ``jobs/stream.py``): the change stream, scored as it commits.

Each CDC micro-batch (``paylake.cdc.stream.follow``):

1. goes to bronze (the Delta MERGE of ``paylake cdc``, exactly once by commit LSN);
2. goes to the online store (``paylake.ml.fraud.online_feed``: payments, confirmations, deletes, attributes;
   idempotent by transaction id);
3. its new payments are scored by the champion fraud model on their online features as of their time (the
   store already holds every earlier payment of the stream, so a burst on one card is seen whole);
4. the scores land in Snowflake's ``REALTIME_FraudScore`` and those at or above the model's threshold in
   ``REALTIME_FraudAlert`` (PUT + COPY INTO + MERGE on TransactionID, one load per micro-batch);
5. only then does the slot advance.

A ``kill -9`` anywhere replays the micro-batch at the next start: bronze skips a batch it committed, the
store and the MERGEs are idempotent by transaction id, so every payment ends up once in every sink. The
champion is looked up at most every ``poll_seconds`` (a promotion reaches the stream without a restart).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from paylake.errors import PaylakeError
from paylake.settings import Settings

log = logging.getLogger(__name__)

SCORES, ALERTS = "REALTIME_FraudScore", "REALTIME_FraudAlert"
FAULT_ENV = "PAYLAKE_STREAM_FAULT"  # tests: "kill-after-sinks" kills the process (SIGKILL) before the slot moves


@dataclass
class StreamReport:
    batches: int = 0
    payments_scored: int = 0
    alerts: int = 0
    latencies_s: list[float] = field(default_factory=list)  # commit → Snowflake MERGE done, per scored batch


class RealtimeSink:
    """The stream's ``sink``: the online store, then scoring and Snowflake for the new payments."""

    def __init__(self, settings: Settings, *, model: str = "paylake-fraud", alias: str = "champion",
                 poll_seconds: float = 30.0, top_features: int = 3) -> None:
        from paylake.ml.fraud.online import RedisOnlineStore
        from paylake.ml.fraud.online_feed import OnlineFeed
        from paylake.warehouse import snowflake, star_ddl

        self.settings, self.model, self.alias = settings, model, alias
        self.poll_seconds, self.top_features = poll_seconds, top_features
        self.store = RedisOnlineStore(settings)
        if self.store.current() is None:
            raise PaylakeError("the online store holds no state yet: run 'paylake features' (it publishes) first")
        self.feed = OnlineFeed(settings, self.store)
        self.report = StreamReport()
        self._scorer, self._checked = None, 0.0
        snowflake.apply_ddl(settings, star_ddl.realtime_tables())

    def scorer(self):
        """The champion, re-resolved at most every ``poll_seconds``."""
        from paylake.ml import registry
        from paylake.ml.fraud.scorer import FraudScorer

        if self._scorer is None or time.monotonic() - self._checked > self.poll_seconds:
            version = registry.alias_version(self.settings, self.model, self.alias)
            if version is None:
                raise PaylakeError(f"no {self.model}@{self.alias} in the registry: run 'paylake train fraud'")
            if self._scorer is None or self._scorer.version != str(version):
                self._scorer = FraudScorer.load(self.settings, self.model, str(version))
                log.info("stream scores with %s v%s", self.model, version)
            self._checked = time.monotonic()
        return self._scorer

    def __call__(self, table: str, changes: pa.Table) -> None:
        self.feed(table, changes)
        if table != "transaction":
            return
        inserted = set(changes.filter(pc.equal(changes["_op"], "I"))["transactionid"].to_pylist())
        payments = [p for p in self.feed.recorded if p["transactionid"] in inserted]  # EUR, as the store has them
        if payments:
            self._score(payments, int(changes["_batch_id"][0].as_py()))
        if os.environ.get(FAULT_ENV) == "kill-after-sinks":
            os.kill(os.getpid(), signal.SIGKILL)

    def _score(self, payments: list[dict], lsn: int) -> None:
        from paylake.ml.fraud.online import transactions_features
        from paylake.warehouse.snowflake import load_table

        scorer = self.scorer()
        rows = transactions_features(self.store, payments)
        answers = scorer.explain(rows, self.top_features, which="flagged")  # the alerts' reasons
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        scored = [{"TransactionID": p["transactionid"], "TransactionAt": p["datetime"].astimezone(dt.UTC).replace(
                       tzinfo=None),
                   "DateKey": int(p["datetime"].astimezone(dt.UTC).strftime("%Y%m%d")),
                   "CustomerKey": p["customerid"], "MerchantKey": p["merchantid"], "AmountEUR": p["amount_eur"],
                   "FraudProbability": a["fraud_probability"], "Decision": a["decision"], "Threshold": a["threshold"],
                   "ModelName": scorer.name, "ModelVersion": scorer.version,
                   "TopFeatures": json.dumps(a["top_features"]), "CommitLsn": str(lsn), "ScoredAt": now}
                  for p, a in zip(payments, answers)]
        load_table(self.settings, SCORES, pa.Table.from_pylist(scored), load_id=f"stream-{lsn}")
        alerts = [{"TransactionID": s["TransactionID"], "TransactionAt": s["TransactionAt"],
                   "MerchantKey": s["MerchantKey"], "AmountEUR": s["AmountEUR"],
                   "FraudProbability": s["FraudProbability"], "Threshold": s["Threshold"],
                   "ModelVersion": s["ModelVersion"], "RaisedAt": now} for s in scored if s["Decision"] == "fraud"]
        if alerts:
            load_table(self.settings, ALERTS, pa.Table.from_pylist(alerts), load_id=f"stream-{lsn}")
            for alert in alerts:
                log.warning("fraud alert: transaction %s, p=%.3f (threshold %.3f)", alert["TransactionID"],
                            alert["FraudProbability"], alert["Threshold"])
        self.report.payments_scored += len(scored)
        self.report.alerts += len(alerts)


def stream(settings: Settings, *, interval_s: float = 0.2, stop_after_s: float | None = None,
           max_changes: int = 5_000, model: str = "paylake-fraud", alias: str = "champion",
           on_batch=None) -> StreamReport:
    """Run the real-time path until ``stop_after_s`` (or Ctrl-C); see the module docstring."""
    from paylake.cdc.stream import follow
    from paylake.stores.replication import default_slot, ensure_slot

    slot = default_slot(settings)
    if ensure_slot(settings, slot).created:
        log.warning("created replication slot %s: changes from now on are captured", slot)
    sink = RealtimeSink(settings, model=model, alias=alias)

    def counted(batch) -> None:
        if batch.transactions:
            sink.report.batches += 1
        if on_batch is not None:
            on_batch(batch, sink.report)

    follow(settings, slot=slot, interval_s=interval_s, stop_after_s=stop_after_s, sink=sink, max_changes=max_changes,
           on_batch=counted)
    return sink.report
