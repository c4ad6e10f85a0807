"""The online feature store, and the features of one incoming transaction from it.

**Why PostgreSQL.** The state behind a transaction's features is a few
indexed row sets per entity (recent events, first-seen devices and countries,
a merchant's tally) read together in one round trip and updated together
after each payment. PostgreSQL serves that in about a millisecond on a primary
key or an index range, updates it transactionally (a payment and its tally move
together), is already run, backed up and access-controlled for the OLTP system
(RDS in production), and needs no second server or client library. A Redis
deployment would shave a fraction of a millisecond at the price of a new
server, hand-written index structures and weaker transactions; the
``OnlineStore`` protocol below keeps that door open.

The store lives in schema ``feature_store`` of the database it is given. It
holds no PII: ids, amounts, times, countries, categories, coordinates of
cities. ``publish`` replaces it, in one transaction, with the state as of a
point in time computed from silver; ``record_transaction`` and
``record_confirmation`` move it forward as payments and fraud confirmations
happen (events older than the longest window are dropped by the next publish;
reads never look further back); ``transaction_features`` reads a transaction's entities and runs the
feature definition (``paylake.ml.fraud.features``) over them: the same SQL as the
batch path, so the two agree (``tests/integration/test_fraud_features.py``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from typing import Protocol

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from paylake.ml.fraud import features
from paylake.settings import Settings
from paylake.stores import postgres

SCHEMA = "feature_store"
KEEP = max(features.HISTORY.values())  # the events kept: the longest window of any entity
COMPACTED_AT = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)  # a merchant's tally before the snapshot, as one row

DDL = f"""
create schema if not exists {SCHEMA};
create table if not exists {SCHEMA}.event (
    transactionid bigint primary key, datetime timestamptz not null, customerid bigint not null,
    merchantid bigint not null, paymentmethodid bigint not null, deviceid bigint, locationid bigint,
    country text, amount_eur double precision not null);
create index if not exists event_customer on {SCHEMA}.event (customerid, datetime);
create index if not exists event_payment_method on {SCHEMA}.event (paymentmethodid, datetime);
create index if not exists event_device on {SCHEMA}.event (deviceid, datetime);
create index if not exists event_merchant on {SCHEMA}.event (merchantid, datetime);
create table if not exists {SCHEMA}.first_seen (
    customerid bigint not null, kind text not null, value text not null, seen_at timestamptz not null,
    primary key (customerid, kind, value));
create table if not exists {SCHEMA}.merchant_tally (
    merchantid bigint not null, tally_at timestamptz not null, txns bigint not null, frauds bigint not null);
create index if not exists merchant_tally_merchant on {SCHEMA}.merchant_tally (merchantid);
create table if not exists {SCHEMA}.customer (
    customerid bigint primary key, segment text, signupdate date, country text, home_lat double precision,
    home_lon double precision);
create table if not exists {SCHEMA}.merchant (merchantid bigint primary key, industry text, size text);
create table if not exists {SCHEMA}.payment_method (paymentmethodid bigint primary key, type text);
create table if not exists {SCHEMA}.location (
    locationid bigint primary key, country text, latitude double precision, longitude double precision);
create table if not exists {SCHEMA}.snapshot (
    id integer primary key check (id = 1), as_of timestamptz not null, published_at timestamptz not null);
"""

TABLES = ("event", "first_seen", "merchant_tally", "customer", "merchant", "payment_method", "location")

EVENT_SCHEMA = pa.schema([("transactionid", pa.int64()), ("datetime", pa.timestamp("us", tz="UTC")),
                          ("customerid", pa.int64()), ("merchantid", pa.int64()), ("paymentmethodid", pa.int64()),
                          ("deviceid", pa.int64()), ("locationid", pa.int64()), ("country", pa.string()),
                          ("amount_eur", pa.float64())])


class OnlineStore(Protocol):
    """The entity state behind online features (one implementation per store)."""

    def publish(self, state: dict[str, pa.Table], as_of: dt.datetime) -> None:
        """Replace the whole state by ``state`` (relations named as in ``TABLES``), as of ``as_of``."""

    def read(self, txn: dict) -> dict[str, pa.Table]:
        """The relations the features of ``txn`` need: its entities' events, first-seen, tally, dimensions."""

    def read_many(self, txns: list[dict]) -> dict[str, pa.Table]:
        """The same relations for several transactions at once (their union)."""

    def record_transaction(self, txn: dict) -> None:
        """Add a scored transaction to its entities' state."""

    def record_transactions(self, txns: list[dict]) -> None:
        """Add several, in one go."""

    def record_confirmation(self, merchantid: int, at: dt.datetime) -> None:
        """Count a fraud confirmed at ``at`` in its merchant's tally."""


class PostgresOnlineStore:
    """``OnlineStore`` in a PostgreSQL schema (see the module docstring)."""

    def __init__(self, settings: Settings, *, keep_connection: bool = False) -> None:
        """``keep_connection``: reuse one connection for reads and records (a long-lived scorer: a new
        connection costs a TLS/SCRAM handshake per transaction); calls then take turns on it."""
        self.settings = settings
        self.keep_connection = keep_connection
        self._shared: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self, **kwargs) -> psycopg.Connection:
        return postgres.connect(self.settings, **kwargs)

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """A connection for one unit of work, committed at the end (rolled back on error)."""
        if not self.keep_connection:
            with self._connect() as conn:
                yield conn
            return
        with self._lock:
            if self._shared is None or self._shared.closed or self._shared.broken:
                self._shared = self._connect()
            conn = self._shared
            try:
                yield conn
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None

    def ensure(self) -> None:
        with self._connect(autocommit=True) as conn:
            conn.execute(DDL)

    def publish(self, state: dict[str, pa.Table], as_of: dt.datetime) -> None:
        self.ensure()
        with self._connect() as conn:
            for table in TABLES:
                conn.execute(f"truncate {SCHEMA}.{table}")
                if state[table].num_rows:
                    postgres.copy_from_arrow(conn, f"{SCHEMA}.{table}", state[table])
            conn.execute(f"insert into {SCHEMA}.snapshot values (1, %s, now()) on conflict (id) do update"
                         " set as_of = excluded.as_of, published_at = excluded.published_at", (as_of,))
            conn.commit()

    def read(self, txn: dict) -> dict[str, pa.Table]:
        return self.read_many([txn])

    def read_many(self, txns: list[dict]) -> dict[str, pa.Table]:
        """One round trip per relation for all of ``txns``' entities (history from the earliest target's
        windows: older events than a target's windows never enter its features)."""
        earliest = min(t["datetime"] for t in txns)
        spans = {entity: earliest - span for entity, span in features.HISTORY.items()}

        def ids(field: str) -> list[int]:
            return sorted({int(t[field]) for t in txns if t.get(field) is not None})

        customers, merchants = ids("customerid"), ids("merchantid")
        with self._session() as conn, conn.cursor() as cur:
            cur.execute(f"""
                select transactionid, datetime, customerid, merchantid, paymentmethodid, deviceid, locationid,
                       country, amount_eur
                from {SCHEMA}.event
                where (customerid = any(%(c)s) and datetime >= %(cs)s)
                   or (paymentmethodid = any(%(p)s) and datetime >= %(ps)s)
                   or (deviceid = any(%(d)s) and datetime >= %(ds)s)
                   or (merchantid = any(%(m)s) and datetime >= %(ms)s)""",
                        {"c": customers, "cs": spans["customer"], "p": ids("paymentmethodid"),
                         "ps": spans["payment_method"], "d": ids("deviceid"), "ds": spans["device"],
                         "m": merchants, "ms": spans["merchant"]})
            relations = {"events": _rows(cur, EVENT_SCHEMA)}
            for name, sql, keys in (
                    ("first_seen", "select customerid, kind, value, seen_at from {s}.first_seen "
                                   "where customerid = any(%s)", customers),
                    ("merchant_tally", "select merchantid, tally_at, txns, frauds from {s}.merchant_tally "
                                       "where merchantid = any(%s)", merchants),
                    ("customer", "select * from {s}.customer where customerid = any(%s)", customers),
                    ("merchant", "select * from {s}.merchant where merchantid = any(%s)", merchants),
                    ("payment_method", "select * from {s}.payment_method where paymentmethodid = any(%s)",
                     ids("paymentmethodid")),
                    ("location", "select * from {s}.location where locationid = any(%s)", ids("locationid"))):
                cur.execute(sql.format(s=SCHEMA), (keys,))
                relations[name] = _rows(cur, None, name)
        return relations

    def record_transaction(self, txn: dict) -> None:
        self.record_transactions([txn])

    def record_transactions(self, txns: list[dict]) -> None:
        """Add scored payments to their entities' state, in one database transaction."""
        with self._session() as conn:
            for txn in txns:
                (country,) = conn.execute(f"select (select country from {SCHEMA}.location where locationid = %s)",
                                          (txn.get("locationid"),)).fetchone()
                inserted = conn.execute(
                    f"insert into {SCHEMA}.event values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                    (txn["transactionid"], txn["datetime"], txn["customerid"], txn["merchantid"],
                     txn["paymentmethodid"], txn.get("deviceid"), txn.get("locationid"), country,
                     float(txn["amount_eur"]))).rowcount
                if not inserted:  # already recorded: the tally must not count it twice
                    continue
                conn.execute(f"insert into {SCHEMA}.merchant_tally values (%s, %s, 1, 0)",
                             (txn["merchantid"], txn["datetime"]))
                seen = [("device", str(txn["deviceid"])) if txn.get("deviceid") is not None else None,
                        ("country", country) if country is not None else None]
                for kind, value in [s for s in seen if s]:
                    conn.execute(f"insert into {SCHEMA}.first_seen values (%s, %s, %s, %s) on conflict (customerid,"
                                 " kind, value) do update set seen_at = least(first_seen.seen_at, excluded.seen_at)",
                                 (txn["customerid"], kind, value, txn["datetime"]))
            conn.commit()  # older events are left to the next publish: reads only look back KEEP

    def record_confirmation(self, merchantid: int, at: dt.datetime) -> None:
        with self._session() as conn:
            conn.execute(f"insert into {SCHEMA}.merchant_tally values (%s, %s, 0, 1)", (merchantid, at))
            conn.commit()


_DIMENSION_SCHEMAS = {
    "first_seen": pa.schema([("customerid", pa.int64()), ("kind", pa.string()), ("value", pa.string()),
                             ("seen_at", pa.timestamp("us", tz="UTC"))]),
    "merchant_tally": pa.schema([("merchantid", pa.int64()), ("tally_at", pa.timestamp("us", tz="UTC")),
                                 ("txns", pa.int64()), ("frauds", pa.int64())]),
    "customer": pa.schema([("customerid", pa.int64()), ("segment", pa.string()), ("signupdate", pa.date32()),
                           ("country", pa.string()), ("home_lat", pa.float64()), ("home_lon", pa.float64())]),
    "merchant": pa.schema([("merchantid", pa.int64()), ("industry", pa.string()), ("size", pa.string())]),
    "payment_method": pa.schema([("paymentmethodid", pa.int64()), ("type", pa.string())]),
    "location": pa.schema([("locationid", pa.int64()), ("country", pa.string()), ("latitude", pa.float64()),
                           ("longitude", pa.float64())]),
}


def _rows(cur, schema: pa.Schema | None, name: str | None = None) -> pa.Table:
    schema = schema or _DIMENSION_SCHEMAS[name]
    rows = cur.fetchall()
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    return pa.table([pa.array(list(c), f.type) for c, f in zip(columns, schema)], schema=schema)


def state_as_of(settings: Settings, as_of: dt.datetime) -> dict[str, pa.Table]:
    """The store's state at ``as_of`` from silver: the events of the last ``KEEP`` before it, first
    uses and the merchants' tallies before it (compacted to one row each), the dimensions."""
    from paylake.ml.fraud.feature_build import silver_connection

    con = silver_connection(settings)
    try:
        con.execute("set variable as_of = ?", [as_of])
        con.execute("set variable keep_from = ?", [as_of - KEEP])
        state = {
            "event": con.sql("select * exclude (is_target) from events where datetime < getvariable('as_of')"
                             " and datetime >= getvariable('keep_from')").to_arrow_table(),
            "first_seen": con.sql("select customerid, kind, value, min(seen_at) as seen_at from first_seen"
                                  " where seen_at < getvariable('as_of') group by all"
                                  ).to_arrow_table(),
            "merchant_tally": con.sql("select merchantid, ?::timestamptz as tally_at, sum(txns)::bigint as txns,"
                                      " sum(frauds)::bigint as frauds from merchant_tally"
                                      " where tally_at < getvariable('as_of') group by merchantid",
                                      params=[COMPACTED_AT]).to_arrow_table(),
            "customer": con.sql("select * from customer").to_arrow_table(),
            "merchant": con.sql("select * from merchant").to_arrow_table(),
            "payment_method": con.sql("select * from payment_method").to_arrow_table(),
            "location": con.sql("select locationid, country, cast(latitude as double) as latitude,"
                                " cast(longitude as double) as longitude from location").to_arrow_table(),
        }
    finally:
        con.close()
    return state


def publish_state(settings: Settings, store: OnlineStore, as_of: dt.datetime | None = None) -> dt.datetime:
    """Publish the state as of ``as_of`` (default: just after the last transaction in silver)."""
    if as_of is None:
        from paylake.ml.fraud.feature_build import silver_connection

        con = silver_connection(settings)
        try:
            (last,) = con.execute("select max(datetime) from txn").fetchone()
        finally:
            con.close()
        as_of = (last or dt.datetime.now(dt.UTC)) + dt.timedelta(microseconds=1)
    store.publish(state_as_of(settings, as_of), as_of)
    return as_of


def transaction_features(store: OnlineStore, txn: dict) -> dict:
    """The features of one incoming transaction, from its entities' state (the batch definition's SQL)."""
    return transactions_features(store, [txn])[0]


def transactions_features(store: OnlineStore, txns: list[dict]) -> list[dict]:
    """The features of several incoming transactions in one run of the feature SQL (what a scoring batch
    calls: the SQL's fixed cost, ~0.1 s, is paid once per batch instead of once per transaction).

    Each transaction is a target; so that the answer equals scoring them one at a time in time order,
    recording each (``record_transaction``), an earlier target of the batch is history for a later one
    in every family: its event (windows), a tally row for its merchant and its first-seen device and
    country, exactly what recording it would have added. A target the store already holds (a retried
    request) is not added twice. Results are in the order of ``txns``."""
    for txn in txns:
        features.validate_transaction(txn)
    read = store.read_many(txns)
    ids = [int(t["transactionid"]) for t in txns]
    target_ids = pa.array(sorted(set(ids)), pa.int64())
    stored = read["events"]
    is_target = pc.is_in(stored["transactionid"], target_ids)
    known = set(pc.filter(stored["transactionid"], is_target).to_pylist())  # retried: already recorded
    history = stored.filter(pc.invert(is_target))
    countries = dict(zip(read["location"]["locationid"].to_pylist(), read["location"]["country"].to_pylist()))
    targets, tally, seen, done = [], [], [], set()
    for txn in txns:
        tid = int(txn["transactionid"])
        if tid in done:
            continue
        done.add(tid)
        country = countries.get(txn.get("locationid"))
        targets.append({"transactionid": tid, "datetime": txn["datetime"], "customerid": int(txn["customerid"]),
                        "merchantid": int(txn["merchantid"]), "paymentmethodid": int(txn["paymentmethodid"]),
                        "deviceid": txn.get("deviceid"), "locationid": txn.get("locationid"), "country": country,
                        "amount_eur": float(txn["amount_eur"])})
        if len(txns) > 1 and tid not in known:  # what recording it would add, for the later targets
            tally.append({"merchantid": int(txn["merchantid"]), "tally_at": txn["datetime"], "txns": 1, "frauds": 0})
            if txn.get("deviceid") is not None:
                seen.append({"customerid": int(txn["customerid"]), "kind": "device", "value": str(txn["deviceid"]),
                             "seen_at": txn["datetime"]})
            if country is not None:
                seen.append({"customerid": int(txn["customerid"]), "kind": "country", "value": country,
                             "seen_at": txn["datetime"]})
    target = pa.Table.from_pylist(targets, schema=EVENT_SCHEMA)
    events = pa.concat_tables([
        history.append_column("is_target", pa.repeat(pa.scalar(False), history.num_rows)),
        target.append_column("is_target", pa.repeat(pa.scalar(True), target.num_rows))])
    relations = {name: read[name] for name in ("first_seen", "merchant_tally", "customer", "merchant",
                                               "payment_method", "location")}
    if seen:
        relations["first_seen"] = pa.concat_tables([relations["first_seen"], pa.Table.from_pylist(
            seen, schema=_DIMENSION_SCHEMAS["first_seen"])])
    if tally:
        relations["merchant_tally"] = pa.concat_tables([relations["merchant_tally"], pa.Table.from_pylist(
            tally, schema=_DIMENSION_SCHEMAS["merchant_tally"])])
    con = _duckdb()
    try:
        con.register("events", events)
        for name, table in relations.items():
            con.register(name, table)
        rows = {row["transactionid"]: row for row in con.sql(_FEATURE_SQL).to_arrow_table().to_pylist()}
    finally:
        for name in ("events", *relations):
            con.unregister(name)
    return [rows[i] for i in ids]


_FEATURE_SQL = features.feature_sql()
_LOCAL = threading.local()


def _duckdb():
    """This thread's DuckDB connection for online features (opening one costs more than the query on a
    few hundred rows): one thread, UTC."""
    con = getattr(_LOCAL, "duckdb", None)
    if con is None:
        import duckdb

        con = duckdb.connect(config={"threads": 1})  # a few hundred rows: more threads only add contention
        con.execute("set TimeZone = 'UTC'")
        _LOCAL.duckdb = con
    return con
