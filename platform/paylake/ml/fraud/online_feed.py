"""The change stream into the online store: a CDC sink (``paylake.cdc.stream``'s ``sink``).

Every committed payment reaches the store whether or not Serve scored it, every fraud confirmation (a
status change to ``fraudulent``, or ``disputed`` for a fraud reason: ``paylake.ml.fraud.labels``) reaches
its merchant's tally, and new or changed locations, merchants and payment methods update the attributes
the features read. Both records are idempotent by transaction id, so a micro-batch replayed after a crash
(the slot advances only after every sink) or a payment Serve scored before it committed counts once.

Amounts are converted to EUR as silver does (``round(amount × rate, 2)``, the currency's rate at the
time of the batch). A payment deleted at the source is undone (``forget_transactions``); one older than
the store's raw events stays in its merchant's all-time tally until the next publish.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from paylake.ml.fraud.labels import FRAUD_DISPUTE_REASONS, FRAUD_STATUS
from paylake.ml.fraud.online import OnlineStore
from paylake.settings import Settings
from paylake.stores import postgres

log = logging.getLogger(__name__)

DIMENSIONS = {  # bronze table -> (store kind, key column, {store field: bronze column})
    "location": ("loc", "locationid", {"country": "country", "latitude": "latitude", "longitude": "longitude"}),
    "merchant": ("merchant", "merchantid", {"industry": "industry", "size": "size"}),
    "paymentmethod": ("pm", "paymentmethodid", {"type": "type"}),
}


@dataclass
class FeedReport:
    payments: int = 0  # new to the store
    forgotten: int = 0  # payments deleted at the source, undone
    confirmations: int = 0
    dimensions: int = 0
    seen: dict[str, int] = field(default_factory=dict)  # rows handed to the sink per table


class OnlineFeed:
    """``sink(table, rows)`` for ``paylake.cdc.stream.drain``: bronze-typed upserts → the online store."""

    def __init__(self, settings: Settings, store: OnlineStore) -> None:
        self.settings, self.store = settings, store
        self.report = FeedReport()
        self.recorded: list[dict] = []  # the payments of the last transaction batch, as recorded (EUR amounts)

    def __call__(self, table: str, changes: pa.Table) -> None:
        """``changes``: the last change per key of one table in one micro-batch, ``_op`` I, U or D."""
        self.report.seen[table] = self.report.seen.get(table, 0) + changes.num_rows
        deleted = pc.equal(changes["_op"], "D")
        rows = changes.filter(pc.invert(deleted))
        if table == "transaction":
            gone = changes.filter(deleted)["transactionid"].to_pylist()
            self.recorded = self.payments(rows) if rows.num_rows else []
            self.report.payments += self.store.record_transactions(self.recorded) if self.recorded else 0
            self.report.forgotten += self.store.forget_transactions(gone) if gone else 0
            return
        if not rows.num_rows:
            return
        if table == "transactionstatechanges":
            self.report.confirmations += self.store.record_confirmations(self._confirmations(rows))
        elif table in DIMENSIONS:
            kind, key, fields = DIMENSIONS[table]
            self.report.dimensions += self.store.upsert_dimensions(kind, [
                (row[key], {name: row[column] for name, column in fields.items()})
                for row in rows.select([key, *fields.values()]).to_pylist()])

    def payments(self, rows: pa.Table) -> list[dict]:
        """Bronze payment rows as the store records them (EUR amounts as silver computes them)."""
        codes = pc.unique(rows["currencycode"]).to_pylist()
        with postgres.connect(self.settings) as conn:
            rates = dict(conn.execute("select currencycode, ratetoeur from oltp.currency where currencycode = any(%s)",
                                      (codes,)).fetchall())
        missing = sorted(set(codes) - set(rates))
        if missing:
            log.warning("online feed: no rate for currency %s: those payments wait for the next publish", missing)
        known_codes = pa.array(sorted(rates), rows["currencycode"].type)
        known = rows.filter(pc.is_in(rows["currencycode"], known_codes))
        rate = pa.array([rates[c] for c in known_codes.to_pylist()], pa.decimal128(18, 8)).take(
            pc.index_in(known["currencycode"], value_set=known_codes))
        # silver's decimal(18, 2), then the double nearest to it (through its text: Arrow's decimal → double
        # cast multiplies by 10^-scale, which is one ulp off for e.g. 19.90)
        amount = pc.round(pc.multiply(known["amount"].cast(pa.decimal128(18, 2)), rate), 2,
                          round_mode="half_towards_infinity").cast(pa.decimal128(18, 2))
        amount = amount.cast(pa.string()).cast(pa.float64())
        columns = ["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid",
                   "locationid"]
        return known.select(columns).append_column("amount_eur", amount).to_pylist()

    def _confirmations(self, rows: pa.Table) -> list[tuple[int, int, object]]:
        with postgres.connect(self.settings) as conn:
            names = dict(conn.execute("select statusid, name from oltp.transactionstatus").fetchall())
            fraud = {i for i, n in names.items() if n == FRAUD_STATUS}
            disputed = {i for i, n in names.items() if n == "disputed"}
            mask = pc.or_(pc.is_in(rows["tostatusid"], pa.array(sorted(fraud), rows["tostatusid"].type)),
                          pc.and_(pc.is_in(rows["tostatusid"], pa.array(sorted(disputed), rows["tostatusid"].type)),
                                  pc.is_in(rows["reason"], pa.array(FRAUD_DISPUTE_REASONS))))
            confirmed = rows.filter(mask).select(["transactionid", "changedat"]).to_pylist()
            if not confirmed:
                return []
            merchants = dict(conn.execute("select transactionid, merchantid from oltp.transaction"
                                          " where transactionid = any(%s)",
                                          ([r["transactionid"] for r in confirmed],)).fetchall())
        return [(r["transactionid"], merchants[r["transactionid"]], r["changedat"]) for r in confirmed
                if r["transactionid"] in merchants]


def online_sink(settings: Settings, progress=lambda m: None) -> OnlineFeed | None:
    """The feed of the stack's online store, or None (said through ``progress``) when nothing is published
    there yet: the first publish ('paylake features') loads what silver holds."""
    from paylake.ml.fraud.online import RedisOnlineStore

    store = RedisOnlineStore(settings)
    if store.current() is None:
        progress("the online store holds no state yet ('paylake features' publishes it): not fed")
        return None
    return OnlineFeed(settings, store)
