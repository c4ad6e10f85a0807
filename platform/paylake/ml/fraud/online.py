"""The online feature store: window aggregates as tiles in Redis, fed by the change stream, merged at read time.

**Why Redis, not PostgreSQL.** The store used to be a schema of the OLTP database: each publish
truncated and reloaded it there (its WAL flooded the CDC slot, scoring waited on the lock) and each read
windowed over every raw event of the payment's entities in DuckDB (~33 ms of CPU per payment).
``bench/online_store.py`` measures reads of a batch of entity keys on both stores: Redis with the
tiles below answers a feature vector in one round trip of a server-side script, a PostgreSQL database
of its own reads the raw rows back over an index and leaves the windows to the client (the figures are
in ``bench/README.md``). Redis is also what production online stores run (ElastiCache for
Valkey/Redis; Feast's and Tecton's online stores), and its scripts make a record-then-read atomic: two
replicas scoring payments of one card never read state without each other.

**Tiles.** Per entity (customer, payment method, device, merchant) the store keeps hour tiles — cumulative
counts and sums up to the end of each hour that holds events, and for payment methods each hour's distinct
merchants and countries — and the raw events of the partial hours at a window's edges (a sorted set by
time). A window ``[t - w, t)`` is the raw events of its first partial hour, its whole hours (the difference
of two cumulative tiles, whatever the window's length) and the raw events of ``t``'s own hour so far:
exact to the microsecond (the batch's ``range … exclude group`` frame), and a read costs a few lookups
per window, not every event (``bench/online_store.py``: per-hour and per-day tiles read in one HMGET per
window answered 2.1x fewer payments per second here). The
merchant's fraud rate uses all-time tallies minus what happened at or after ``t``; new device / new country
the first time each was seen; the customer's 30-day median the raw amounts. The windows, spans and
smoothing are ``paylake.ml.fraud.features``' (``WINDOWS``, ``HISTORY``, ``MEDIAN_WINDOW``, the prior):
one definition, two executions — the batch runs it as window SQL over silver, the store as tiles.

**Fed by the change stream.** ``record_transactions`` (payments), ``record_confirmations`` (fraud
confirmations) and ``forget_transactions`` (payments deleted at the source) are idempotent by
transaction id: the CDC sink (``paylake.cdc.online``) calls them for
every committed payment and status change, Serve for every payment it scores (``read(..., record=True)``:
recorded, then read, in one atomic script); a payment scored and later committed counts once.

**Publishing** (a backfill, a change of definition) builds a new generation of keys aside while live
writes go to both, replays into it what the live generation recorded after the snapshot, then swaps the
pointer ``pl:current`` in one command and drops the old generation: reads never wait and later events are
never erased. The store holds no PII: ids, amounts, times, countries, categories, coordinates of cities.
"""

from __future__ import annotations

import datetime as dt
import math
import time
import uuid
from pathlib import Path
from typing import Protocol

import pyarrow as pa

from paylake import contracts
from paylake.errors import PaylakeError
from paylake.ml.fraud import features
from paylake.settings import Settings

KEEP = max(features.HISTORY.values())  # the raw events kept at a publish: the longest window of any entity
SCRIPT = (Path(__file__).with_name("online_tiles.lua")).read_text()
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_WINDOW_US = [int(features.window_span(w).total_seconds() * 1_000_000) for w in features.WINDOWS]
_MEDIAN_US = int(features.window_span("median").total_seconds() * 1_000_000)
_DISTINCT_US = int(features.window_span(features.DISTINCT_WINDOW).total_seconds() * 1_000_000)
assert _WINDOW_US == sorted(_WINDOW_US) and _DISTINCT_US in _WINDOW_US, "the tiles read windows shortest first"
_ENTITIES = ("cust", "pm", "dev", "merch")
LAYOUT = "hour-prefix-1"  # the keys' layout: a read of a state published in another one is refused (republish)
CHUNK = 500  # items per script call when loading or replaying (reads of other clients interleave)
_MODES = {"live": "0", "bulk": "1", "into": "2"}


class OnlineStore(Protocol):
    """The entity state behind online features (one implementation per store)."""

    def publish(self, state: dict[str, pa.Table], as_of: dt.datetime, progress=lambda m: None) -> dict:
        """Replace the state by ``state`` as of ``as_of``, keeping what was recorded after it."""

    def read(self, txns: list[dict], *, record: bool = False) -> list[list[str]]:
        """The raw aggregates of each transaction as of its time (``record``: record each first)."""

    def record_transactions(self, txns: list[dict]) -> int:
        """Add payments to their entities' state (idempotent by transaction id); returns how many were new."""

    def record_confirmations(self, confirmations: list[tuple[int, int, dt.datetime]]) -> int:
        """Count frauds confirmed: (transactionid, merchantid, confirmed_at); idempotent by transaction id."""

    def forget_transactions(self, txids: list[int]) -> int:
        """Undo payments deleted at the source, once each."""

    def upsert_dimensions(self, kind: str, rows: list[tuple[int, dict]]) -> int:
        """Set entities' attributes (customer, merchant, pm, loc)."""

    def current(self) -> str | None:
        """The published generation reads go to (None: nothing published)."""


def micros(at: dt.datetime) -> int:
    if at.tzinfo is None:
        raise PaylakeError("online store times must be timezone-aware")
    delta = at - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _s(value) -> str:
    return "" if value is None else str(value)


def _amount(value) -> str:
    return repr(float(value))


class RedisOnlineStore:
    """``OnlineStore`` on a Redis server (see the module docstring). Thread-safe (a connection pool)."""

    def __init__(self, settings: Settings, prefix: str | None = None) -> None:
        """``prefix``: the keys' prefix (default the settings' ``online_store_prefix``, ``pl``; a test's or a
        benchmark's own world on the same server)."""
        from paylake.stores import online

        prefix = prefix or settings.online_store_prefix
        if not prefix or ":" in prefix or "*" in prefix:
            raise PaylakeError(f"online store prefix {prefix!r}: a non-empty name without ':' or '*'")
        self.settings, self.prefix = settings, prefix
        self.client = online.client(settings)
        self.script = self.client.register_script(SCRIPT)

    def _call(self, *args):
        import redis

        from paylake.stores import online

        try:
            return self.script(args=[args[0], self.prefix, *args[1:]])
        except redis.ConnectionError as exc:
            raise online.unreachable(self.settings, exc) from None
        except redis.ResponseError as exc:
            if "no online state published" in str(exc):
                raise PaylakeError("the online store holds no state yet: run 'paylake features' (it publishes)"
                                   ) from None
            if "another key layout" in str(exc):
                raise PaylakeError("the online store was published by an older paylake (another key layout): run "
                                   "'paylake features' to republish it") from None
            raise

    def _k(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def close(self) -> None:
        self.client.close()

    # ------------------------------------------------------------------ writes
    @staticmethod
    def _txn_args(txn: dict) -> list[str]:
        return [str(int(txn["transactionid"])), str(micros(txn["datetime"])), str(int(txn["customerid"])),
                str(int(txn["merchantid"])), str(int(txn["paymentmethodid"])), _s(txn.get("deviceid")),
                _s(txn.get("locationid")), _amount(txn["amount_eur"]), _s(txn.get("country"))]

    def record_transactions(self, txns: list[dict], *, mode: str = "live", generation: str = "") -> int:
        """``mode``: ``live`` (every generation being written), ``bulk`` (a publish's load into ``generation``:
        the all-time tallies are loaded apart) or ``into`` (a publish's replay into ``generation``)."""
        added = 0
        for at in range(0, len(txns), CHUNK):
            args = [a for txn in txns[at:at + CHUNK] for a in self._txn_args(txn)]
            added += int(self._call("record", _MODES[mode], generation, *args))
        return added

    def record_confirmations(self, confirmations: list[tuple[int, int, dt.datetime]], *, mode: str = "live",
                             generation: str = "") -> int:
        added = 0
        flag = _MODES[mode]
        for at in range(0, len(confirmations), CHUNK):
            args = [a for txid, merchant, when in confirmations[at:at + CHUNK]
                    for a in (str(int(txid)), str(int(merchant)), str(micros(when)))]
            added += int(self._call("confirm", flag, generation, *args))
        return added

    def forget_transactions(self, txids: list[int], *, mode: str = "live", generation: str = "") -> int:
        """Undo payments deleted at the source (their windows, tiles and tally), once each; a payment older
        than the generation's raw events is left to the next publish. Returns how many were undone."""
        undone = 0
        for at in range(0, len(txids), CHUNK):
            undone += int(self._call("forget", _MODES[mode], generation, *[str(int(t)) for t in txids[at:at + CHUNK]]))
        return undone

    def upsert_dimensions(self, kind: str, rows: list[tuple[int, dict]]) -> int:
        """Set the attributes of entities (``kind``: customer, merchant, pm, loc) in every generation being
        written; a None attribute is removed."""
        generations = sorted(self.client.smembers(self._k("writers"))) or [g for g in [self.current()] if g]
        pipe = self.client.pipeline(transaction=True)
        for ns in generations:
            for key, attributes in rows:
                name = self._k(f"{ns}:dim:{kind}:{key}")
                present = {k: _dim(v) for k, v in attributes.items() if v is not None}
                pipe.hset(name, mapping={**present, "_": "1"})
                for gone in [k for k, v in attributes.items() if v is None]:
                    pipe.hdel(name, gone)
        pipe.execute()
        return len(rows) if generations else 0

    # ------------------------------------------------------------------ reads
    def read(self, txns: list[dict], *, record: bool = False) -> list[list[str]]:
        args = []
        for txn in txns:
            args += self._txn_args(txn)[:8]
        return self._call("read", "1" if record else "0", ",".join(map(str, _WINDOW_US)), str(_MEDIAN_US),
                          str(_DISTINCT_US), LAYOUT, *args)

    def current(self) -> str | None:
        """The generation reads go to (None: nothing published yet)."""
        import redis

        from paylake.stores import online

        try:
            return self.client.get(self._k("current"))
        except redis.ConnectionError as exc:
            raise online.unreachable(self.settings, exc) from None

    # ------------------------------------------------------------------ publish
    def publish(self, state: dict[str, pa.Table], as_of: dt.datetime, progress=lambda m: None) -> dict:
        """Build generation N+1 aside from ``state`` (live writes go to both meanwhile), replay what the live
        generation recorded since ``as_of - KEEP``, swap, drop the old one. One publish at a time."""
        token = uuid.uuid4().hex
        self.current()  # a clear error when the server is down
        if not self.client.set(self._k("publishing"), token, nx=True, ex=3600):
            raise PaylakeError("another publish of the online store is running: wait for it")
        try:
            old = self.current()
            new = f"g{self.client.incr(self._k('generation'))}"
            self._drop(new)  # leftovers of a publish that died half-way
            writers = [new] + ([old] if old else [])
            self.client.sadd(self._k("writers"), *writers)
            started = time.perf_counter()
            self._load(new, state)
            replayed = self._replay(old, new, as_of - KEEP, state) if old else 0
            pipe = self.client.pipeline(transaction=True)
            pipe.set(self._k("current"), new)
            pipe.set(self._k("layout"), LAYOUT)
            pipe.set(self._k("as_of"), as_of.isoformat())
            pipe.delete(self._k("writers"))
            pipe.sadd(self._k("writers"), new)
            pipe.execute()
            if old:
                self._drop(old)
            progress(f"online store generation {new} published in {time.perf_counter() - started:.1f} s")
            return {"generation": new, "replayed": replayed, "events": state["event"].num_rows}
        finally:
            if self.client.get(self._k("publishing")) == token:
                self.client.delete(self._k("publishing"))

    def _load(self, ns: str, state: dict[str, pa.Table]) -> None:
        p = self._k(f"{ns}:")
        pipe = self.client.pipeline(transaction=False)
        for row in state["customer"].to_pylist():
            pipe.hset(f"{p}dim:customer:{row['customerid']}", mapping={
                k: _dim(row[k]) for k in ("segment", "signupdate", "country", "home_lat", "home_lon")
                if row[k] is not None} or {"_": "1"})
        for row in state["merchant"].to_pylist():
            pipe.hset(f"{p}dim:merchant:{row['merchantid']}",
                      mapping={k: _dim(row[k]) for k in ("industry", "size") if row[k] is not None} or {"_": "1"})
        for row in state["payment_method"].to_pylist():
            pipe.hset(f"{p}dim:pm:{row['paymentmethodid']}",
                      mapping={"type": _dim(row["type"])} if row["type"] is not None else {"_": "1"})
        for row in state["location"].to_pylist():
            pipe.hset(f"{p}dim:loc:{row['locationid']}", mapping={
                k: _dim(row[k]) for k in ("country", "latitude", "longitude") if row[k] is not None} or {"_": "1"})
        for row in state["merchant_tally"].to_pylist():
            pipe.hset(f"{p}mt:{row['merchantid']}", mapping={"txns": int(row["txns"]), "frauds": int(row["frauds"])})
        for row in state["first_seen"].to_pylist():
            prefix = "d:" if row["kind"] == "device" else "c:"
            pipe.hset(f"{p}fs:{row['customerid']}", f"{prefix}{row['value']}", str(micros(row["seen_at"])))
        pipe.execute()
        events = state["event"].sort_by("datetime").to_pylist()  # in time order: each adds to its hour only
        self.record_transactions(events, mode="bulk", generation=ns)
        confirmations = [(r["transactionid"], r["merchantid"], r["confirmed_at"])
                         for r in state["confirmation"].to_pylist()]
        self.record_confirmations(confirmations, mode="bulk", generation=ns)

    def _replay(self, old: str, new: str, since: dt.datetime, state: dict[str, pa.Table]) -> int:
        """Replay into ``new`` what the live generation ``old`` recorded since ``since``: a payment silver holds
        is replayed only when the live stream wrote it after silver was built (the stream is newer: an update
        or a delete silver has not seen yet); silver's version stands otherwise (e.g. a payment moved at the
        source while the store was not fed)."""
        import pyarrow.compute as pc

        entries = self.client.zrangebyscore(self._k(f"{old}:log"), micros(since), "+inf", withscores=True)
        ids = [int(member.split("|")[1]) for member, _ in entries]
        wrote: list[str | None] = []
        for at in range(0, len(ids), 5000):
            wrote += self.client.hmget(self._k(f"{old}:wrote"), ids[at:at + 5000]) if ids[at:at + 5000] else []
        in_silver = pc.is_in(pa.array(ids, pa.int64()), value_set=state["silver_ids"]).to_pylist() if ids else []
        built = micros(state["silver_built_at"])
        txns, confirmations, forgotten = [], [], []
        for (member, score), known, written in zip(entries, in_silver, wrote):
            parts = member.split("|")
            when = EPOCH + dt.timedelta(microseconds=int(score))
            if parts[0] == "c":
                confirmations.append((int(parts[1]), int(parts[2]), when))
                continue
            if known and (written is None or int(written) <= built):
                continue  # silver is as new as the stream for this payment
            if parts[0] == "x":
                forgotten.append(int(parts[1]))
            elif parts[0] == "e":
                txid, c, m, pm, dev, loc, amount, country = parts[1:9]
                txns.append({"transactionid": int(txid), "datetime": when, "customerid": int(c), "merchantid": int(m),
                             "paymentmethodid": int(pm), "deviceid": int(dev) if dev else None,
                             "locationid": int(loc) if loc else None, "amount_eur": float(amount),
                             "country": country or None})
        return (self.record_transactions(txns, mode="into", generation=new)
                + self.record_confirmations(confirmations, mode="into", generation=new)
                + self.forget_transactions(forgotten, mode="into", generation=new))  # after their payments

    def _drop(self, ns: str) -> None:
        from paylake.stores.online import unlink_matching

        unlink_matching(self.client, self._k(f"{ns}:*"))


def _dim(value) -> str:
    from decimal import Decimal

    if isinstance(value, float | Decimal):
        return repr(float(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def state_as_of(settings: Settings, as_of: dt.datetime) -> dict[str, pa.Table]:
    """The store's state at ``as_of`` from silver: the events of the last ``KEEP`` before it, first uses and
    the merchants' tallies before it (all time), the confirmations before it, the dimensions."""
    from paylake.ml.fraud.feature_build import silver_connection
    from paylake.ml.fraud.labels import CONFIRMATIONS_SQL

    con = silver_connection(settings)
    try:
        con.execute("set variable as_of = ?", [as_of])
        con.execute("set variable keep_from = ?", [as_of - KEEP])
        return {
            "event": con.sql("select * exclude (is_target) from events where datetime < getvariable('as_of')"
                             " and datetime >= getvariable('keep_from')").to_arrow_table(),
            "first_seen": con.sql("select customerid, kind, value, min(seen_at) as seen_at from first_seen"
                                  " where seen_at < getvariable('as_of') group by all").to_arrow_table(),
            "merchant_tally": con.sql("select merchantid, sum(txns)::bigint as txns, sum(frauds)::bigint as frauds"
                                      " from merchant_tally where tally_at < getvariable('as_of') group by merchantid"
                                      ).to_arrow_table(),
            "confirmation": con.sql(f"select c.transactionid, t.merchantid, c.confirmed_at from ({CONFIRMATIONS_SQL})"
                                    " c join txn t using (transactionid)"
                                    " where c.confirmed_at < getvariable('as_of')").to_arrow_table(),
            "silver_ids": con.sql("select transactionid from txn").to_arrow_table()["transactionid"].combine_chunks(),
            "silver_built_at": silver_built_at(settings),
            "customer": con.sql("select * from customer").to_arrow_table(),
            "merchant": con.sql("select * from merchant").to_arrow_table(),
            "payment_method": con.sql("select * from payment_method").to_arrow_table(),
            "location": con.sql("select locationid, country, cast(latitude as double) as latitude,"
                                " cast(longitude as double) as longitude from location").to_arrow_table(),
        }
    finally:
        con.close()


def silver_built_at(settings: Settings) -> dt.datetime:
    """When silver's payments were last committed (what a publish's replay compares the live stream with)."""
    from deltalake import DeltaTable

    from paylake.stores import lake

    table = DeltaTable(contracts.silver("transaction").uri(settings), storage_options=lake.storage_options(settings))
    (last,) = table.history(1)
    return EPOCH + dt.timedelta(milliseconds=int(last["timestamp"]))


def publish_state(settings: Settings, store: OnlineStore, as_of: dt.datetime | None = None,
                  progress=lambda m: None) -> dt.datetime:
    """Publish the state as of ``as_of`` (default: just after the last transaction in silver)."""
    if as_of is None:
        from paylake.ml.fraud.feature_build import silver_connection

        con = silver_connection(settings)
        try:
            (last,) = con.execute("select max(datetime) from txn").fetchone()
        finally:
            con.close()
        as_of = (last or dt.datetime.now(dt.UTC)) + dt.timedelta(microseconds=1)
    store.publish(state_as_of(settings, as_of), as_of, progress=progress)
    return as_of


# ----------------------------------------------------------------------------- features from the aggregates
def transaction_features(store: OnlineStore, txn: dict) -> dict:
    """The features of one incoming transaction as of its time (nothing recorded)."""
    return transactions_features(store, [txn])[0]


def transactions_features(store: OnlineStore, txns: list[dict], *, record: bool = False) -> list[dict]:
    """The features of ``txns``, each as of its own time, in one round trip. ``record``: each payment is
    recorded (idempotently) just before its read, in order, atomically with the reads: an earlier payment
    of the list is history for a later one, and a concurrent scorer never misses it. Each row carries
    ``record_seq``, the store's order of the recording (None when it was already recorded)."""
    for txn in txns:
        features.validate_transaction(txn)
    raw = store.read(txns, record=record)
    return [from_aggregates(txn, values) for txn, values in zip(txns, raw)]


def from_aggregates(txn: dict, v: list[str]) -> dict:
    """One feature row (the batch's columns) from the store's answer for ``txn`` (see online_tiles.lua)."""
    t: dt.datetime = txn["datetime"].astimezone(dt.UTC)
    amount = float(txn["amount_eur"])
    row = {"transactionid": int(txn["transactionid"]), "datetime": t, "customerid": int(txn["customerid"]),
           "amount_eur": amount, "record_seq": int(v[0]) if v[0] else None}
    at = 1
    for prefix in _ENTITIES:
        for window in features.WINDOWS:
            n, s = v[at], v[at + 1]
            at += 2
            row[f"{prefix}_n_{window}"] = int(n) if n else 0
            row[f"{prefix}_sum_{window}"] = float(s) if s else 0.0
    row["pm_distinct_merchants_24h"], row["pm_distinct_countries_24h"] = int(v[at]), int(v[at + 1])
    median = float(v[at + 2]) if v[at + 2] else None
    txns_before, frauds_before = int(v[at + 3]), int(v[at + 4])
    first_device, first_country = v[at + 5], v[at + 6]
    dims = [None if x == "\0" else x for x in v[at + 7:at + 18]]
    segment, signup, home_country, home_lat, home_lon, industry, size, pm_type, country, lat, lon = dims
    has_customer, has_merchant, has_pm, has_location = (x == "1" for x in v[at + 18:at + 22])
    row["merch_txns_before"], row["merch_frauds_before"] = txns_before, frauds_before
    row["merch_fraud_rate"] = ((frauds_before + features.PRIOR_WEIGHT * features.FRAUD_PRIOR)
                               / (txns_before + features.PRIOR_WEIGHT))
    row["cust_median_30d"] = median if median is not None else -1.0
    row["amount_to_median"] = amount / median if median is not None and median > 0 else 1.0
    row["hour"], row["weekday"] = t.hour, t.isoweekday()
    row["industry"], row["merchant_size"] = industry or "unknown", size or "unknown"
    row["pm_type"], row["segment"] = pm_type or "unknown", segment or "unknown"
    row["tenure_days"] = (t.date() - dt.date.fromisoformat(signup)).days if signup else -1
    row["home_distance_km"] = (_haversine(float(home_lat), float(home_lon), float(lat), float(lon))
                               if None not in (home_lat, home_lon, lat, lon) else -1.0)
    row["foreign_country"] = int(home_country is not None and country is not None and country != home_country)
    now = micros(t)
    device = txn.get("deviceid")
    row["new_device"] = int(device is not None and not (first_device and int(first_device) < now))
    row["new_country"] = int(country is not None and not (first_country and int(first_country) < now))
    row["defaulted"] = [name for name, known in (("merchant", has_merchant), ("payment_method", has_pm),
                                                 ("customer", has_customer), ("location", has_location),
                                                 ("device", device is not None)) if not known]
    return row


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The batch's distance from home (km), written as its SQL is."""
    a = (math.sin(math.radians(lat2 - lat1) / 2) ** 2
         + math.cos(math.radians(lat1)) * math.cos(math.radians(lat2)) * math.sin(math.radians(lon2 - lon1) / 2) ** 2)
    return 2 * 6371.0 * math.asin(math.sqrt(a))

