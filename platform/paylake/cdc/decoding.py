"""Decoded changes (``test_decoding`` text) → one Arrow batch per captured table.

Pure functions over plain data: no connection, no lake. ``stream`` feeds them
the rows of ``pg_logical_slot_peek_changes`` and the catalog it read.

Why ``test_decoding`` and not ``pgoutput``: psycopg 3 has no replication
protocol, so changes are read through the SQL interface of logical decoding.
There ``test_decoding`` gives one text row per change, with the commit
timestamp (``include-timestamp``) and without empty transactions
(``skip-empty-xacts``); ``pgoutput`` would need a binary protocol parser
(Begin/Relation/Insert/... messages, relation metadata re-sent at every call)
for no gain at micro-batch sizes. Both plugins ship with every PostgreSQL,
managed services included. The price of ``test_decoding`` is paid here: it
ignores publications (``stream`` keeps the tables of publication
``paylake_cdc`` itself), names partitions rather than their root table
(mapped with ``pg_inherits``), and prints values as SQL literals, which this
module tokenizes. The output looks like::

    BEGIN 1307
    table oltp.address: INSERT: addressid[bigint]:7 postalcode[text]:'75011' isprimary[boolean]:true ...
    table oltp.merchant: UPDATE: merchantid[bigint]:3 name[text]:'Chez l''Ami' ...
    table oltp.merchant: UPDATE: old-key: merchantid[bigint]:3 new-tuple: merchantid[bigint]:4 ...
    table oltp.transaction_2026_07: DELETE: transactionid[bigint]:9 datetime[timestamp with time zone]:'...'
    table oltp.address: TRUNCATE: (no-flags)
    COMMIT 1307 (at 2026-07-01 10:00:00.123456+00)

Values follow the output settings of the decoding session, which ``stream``
pins: ``TimeZone=UTC``, ``DateStyle=ISO``, ``bytea_output=hex``. Numbers and
booleans are bare, everything else is quoted with ``''`` escapes, ``null``
is bare, and a TOASTed value an UPDATE left unchanged is the bare word
``unchanged-toast-datum`` (such a change is quarantined: its value is not in
the WAL). With the default replica identity a DELETE carries only the key.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal

import pyarrow as pa

from paylake.errors import ContractError
from paylake.extract.catalog import PgTable
from paylake.extract.postgres import QUARANTINE_SCHEMA

OPS = {"INSERT": "I", "UPDATE": "U", "DELETE": "D", "TRUNCATE": "T"}
CHANGE_FIELDS = [pa.field("_op", pa.string(), nullable=False), pa.field("_lsn", pa.int64(), nullable=False)]


class _UnchangedToast:
    """The value of a TOASTed column that an UPDATE did not change (not in the WAL)."""

    def __repr__(self) -> str:
        return "UNCHANGED_TOAST"


UNCHANGED_TOAST = _UnchangedToast()
Value = str | None | _UnchangedToast


# ----------------------------------------------------------------------------- LSNs
def lsn_to_int(lsn: str) -> int:
    """``'16/B374D848'`` → its 64-bit position."""
    high, _, low = lsn.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def int_to_lsn(position: int) -> str:
    """A 64-bit WAL position → PostgreSQL's ``'16/B374D848'`` notation."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


# ----------------------------------------------------------------------------- the tokenizer
class _Scanner:
    """A cursor over one line of test_decoding output."""

    __slots__ = ("text", "pos")

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    def done(self) -> bool:
        return self.pos >= len(self.text)

    def at(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def take(self, literal: str) -> bool:
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def expect(self, literal: str) -> None:
        if not self.take(literal):
            raise ValueError(f"expected {literal!r} at offset {self.pos}")

    def until(self, stop: str) -> str:
        """The bare text up to (not including) ``stop``."""
        end = self.text.find(stop, self.pos)
        if end < 0:
            raise ValueError(f"expected {stop!r} after offset {self.pos}")
        token, self.pos = self.text[self.pos:end], end
        return token

    def quoted(self, quote: str) -> str:
        """The rest of a quoted token (opening quote consumed); a doubled quote is one quote."""
        text, parts = self.text, []
        while True:
            end = text.find(quote, self.pos)
            if end < 0:
                raise ValueError(f"unterminated {quote}-quoted token")
            parts.append(text[self.pos:end])
            if text.startswith(quote, end + 1):
                parts.append(quote)
                self.pos = end + 2
                continue
            self.pos = end + 1
            return "".join(parts)

    def identifier(self, stop: str) -> str:
        """A name as ``quote_identifier`` prints it: double-quoted (a doubled quote is one quote) or bare
        up to ``stop``."""
        if self.take('"'):
            return self.quoted('"')
        name = self.until(stop)
        if not name:
            raise ValueError(f"missing name at offset {self.pos}")
        return name

    def value(self) -> Value:
        """One literal: ``'quoted'``, ``null``, ``unchanged-toast-datum`` or a bare token (numbers, booleans)."""
        if self.take("'"):
            return self.quoted("'")
        end = self.text.find(" ", self.pos)
        end = len(self.text) if end < 0 else end
        token, self.pos = self.text[self.pos:end], end
        if token == "null":
            return None
        if token == "unchanged-toast-datum":
            return UNCHANGED_TOAST
        if not token:
            raise ValueError(f"missing value at offset {self.pos}")
        return token

    def columns(self, stop: str | None = None) -> list[tuple[str, str, Value]]:
        """``name[type]:value`` items separated by one space, up to the end or ``stop``."""
        text, items = self.text, []
        while self.pos < len(text) and not (stop and text.startswith(stop, self.pos)):
            if text[self.pos] == '"':
                name = self.identifier("[")
                self.expect("[")
            else:  # a bare name, the common case: kept tight
                bracket = text.find("[", self.pos)
                if bracket <= self.pos:
                    raise ValueError(f"missing column name at offset {self.pos}")
                name, self.pos = text[self.pos:bracket], bracket + 1
            close = text.find("]:", self.pos)  # types may hold brackets themselves: text[]
            if close < 0:
                raise ValueError(f"expected ']:' after offset {self.pos}")
            type_name, self.pos = text[self.pos:close], close + 2
            items.append((name, type_name, self.value()))
            if not text.startswith(" ", self.pos):
                break
            self.pos += 1
        return items


def parse_tuple(text: str) -> list[tuple[str, str, Value]]:
    """The ``(column, type, value)`` items of a tuple as test_decoding prints it."""
    scanner = _Scanner(text)
    items = scanner.columns()
    if not scanner.done():
        raise ValueError(f"unexpected text at offset {scanner.pos}")
    return items


# ----------------------------------------------------------------------------- changes and transactions
@dataclass(frozen=True, slots=True)
class Change:
    """One decoded row change."""

    relation: str  # as decoded: schema.table, possibly a partition
    op: str  # 'I', 'U', 'D' or 'T' (truncate)
    values: dict[str, Value]  # new tuple (I, U) or the key (D)
    old_key: dict[str, Value] | None  # UPDATE that changed the key (or replica identity full): the old one
    lsn: int


@dataclass(frozen=True, slots=True)
class Transaction:
    """A committed transaction of the slot's stream."""

    xid: str
    commit_lsn: int  # end of the commit record: where the slot may advance to
    committed_at: dt.datetime | None
    changes: tuple[Change, ...]


def parse_change(data: str, lsn: int) -> Change | None:
    """A ``table ...`` line as a Change (None for any other line: BEGIN, COMMIT, messages)."""
    if not data.startswith("table "):
        return None
    scanner = _Scanner(data, len("table "))
    schema_name = scanner.identifier(".")
    scanner.expect(".")
    table_name = scanner.identifier(":")
    scanner.expect(": ")
    op_name = scanner.until(":")
    if op_name not in OPS:
        raise ValueError(f"unknown operation {op_name!r}")
    scanner.expect(":")
    scanner.take(" ")
    relation, op = f"{schema_name}.{table_name}", OPS[op_name]
    if op == "T" or scanner.take("(no-tuple-data)"):
        return Change(relation, op, {}, None, lsn)
    old_key = None
    if scanner.take("old-key: "):
        old_key = {name: value for name, _, value in scanner.columns(stop="new-tuple: ")}
        scanner.expect("new-tuple: ")
    values = {name: value for name, _, value in scanner.columns()}
    if not scanner.done():
        raise ValueError(f"unexpected text at offset {scanner.pos}")
    return Change(relation, op, values, old_key, lsn)


def commit_time(data: str) -> dt.datetime | None:
    """The timestamp of a ``COMMIT <xid> (at <timestamptz>)`` line (None without include-timestamp)."""
    start = data.find("(at ")
    if start < 0 or not data.endswith(")"):
        return None
    return dt.datetime.fromisoformat(data[start + 4:-1]).astimezone(dt.UTC)


def read_transactions(rows: Iterable[tuple[str, object, str]]) -> list[Transaction]:
    """Group the ``(lsn, xid, data)`` rows of ``pg_logical_slot_peek_changes``
    into committed transactions, in commit order; a trailing transaction
    without its COMMIT is left out."""
    committed: list[Transaction] = []
    changes: list[Change] | None = None
    for lsn_text, xid, data in rows:
        if data.startswith("BEGIN"):
            changes = []
        elif data.startswith("COMMIT"):
            if changes is not None:
                committed.append(Transaction(str(xid), lsn_to_int(lsn_text), commit_time(data), tuple(changes)))
            changes = None
        elif changes is not None:  # non-transactional messages come outside BEGIN/COMMIT
            lsn = lsn_to_int(lsn_text)
            try:
                change = parse_change(data, lsn)
            except ValueError as exc:  # the text is not logged: it holds row values
                raise ContractError(f"cannot parse the change decoded at LSN {lsn_text} ({exc}): the output of "
                                    "test_decoding differs from what paylake.cdc.decoding expects") from None
            if change is not None:
                changes.append(change)
    return committed


def partition_roots(edges: Iterable[tuple[str, str]]) -> dict[str, str]:
    """``child → top-most ancestor`` from the ``(child, parent)`` pairs of
    ``pg_inherits`` (sub-partitions resolve to the root table)."""
    parent = dict(edges)
    roots: dict[str, str] = {}
    for child in parent:
        top, seen = child, {child}
        while top in parent:
            top = parent[top]
            if top in seen:
                raise ValueError(f"inheritance cycle through {top}")
            seen.add(top)
        roots[child] = top
    return roots


def touched_tables(transactions: Iterable[Transaction], roots: Mapping[str, str]) -> set[str]:
    """The root tables (schema.table) the transactions changed."""
    return {roots.get(c.relation, c.relation) for t in transactions for c in t.changes}


# ----------------------------------------------------------------------------- typed values
_BOOLEANS = {"true": True, "false": False}


def _boolean(text: str) -> bool:
    return _BOOLEANS[text]


def _timestamptz(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError("no time zone offset")
    return value.astimezone(dt.UTC)


def _timestamp(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("unexpected time zone offset")
    return value


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError("bytea not in hex format (bytea_output=hex)")
    return bytes.fromhex(text[2:])


def _decimal(precision: int, scale: int) -> Callable[[str], Decimal]:
    def convert(text: str) -> Decimal:
        value = Decimal(text)
        if not value.is_finite():
            raise ValueError("not a finite number")
        sign, digits, exponent = value.as_tuple()
        while exponent < -scale and digits and digits[-1] == 0:  # trailing zeros beyond the scale
            digits, exponent = digits[:-1], exponent + 1
        if exponent < -scale or (any(digits) and len(digits) + exponent > precision - scale):
            raise ValueError(f"does not fit decimal({precision}, {scale})")
        return Decimal((sign, digits, exponent))

    return convert


def value_converter(kind: pa.DataType) -> Callable[[str], object]:
    """Text of a decoded value → the Python value of the bronze Arrow type ``kind``."""
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_floating(kind):
        return float
    if pa.types.is_decimal(kind):
        return _decimal(kind.precision, kind.scale)
    if pa.types.is_boolean(kind):
        return _boolean
    if pa.types.is_timestamp(kind):
        return _timestamptz if kind.tz else _timestamp
    if pa.types.is_date(kind):
        return dt.date.fromisoformat
    if pa.types.is_binary(kind):
        return _bytea
    if pa.types.is_string(kind):
        return str
    raise ContractError(f"no CDC decoding for the Arrow type {kind}: add it to paylake.cdc.decoding.value_converter")


# ----------------------------------------------------------------------------- per-table batches
@dataclass(frozen=True)
class TableBatch:
    """What one micro-batch does to one table."""

    table: PgTable
    rows: pa.Table  # the last change per primary key: bronze data columns (nullable) + _op + _lsn
    rejects: pa.Table  # changes that broke the contract (QUARANTINE_SCHEMA)
    decoded: Counter  # changes decoded per op ('I', 'U', 'D', 'T'), before keeping the last per key


class _Rejected(Exception):
    def __init__(self, reason: str, key: tuple | None) -> None:
        super().__init__(reason)
        self.key = key


class _TableChanges:
    """Accumulates one table's changes in stream order, keeping the last per key."""

    def __init__(self, table: PgTable) -> None:
        self.table = table
        self.schema = table.arrow_schema()
        self.names = self.schema.names
        self.converters = [value_converter(f.type) for f in self.schema]
        self.key_index = [self.names.index(k) for k in table.primary_key]
        self.other_index = [i for i in range(len(self.names)) if i not in self.key_index]
        self.latest: dict[tuple, tuple[str, int, list]] = {}
        self.rejects: list[tuple[str, str, str]] = []
        self.decoded: Counter = Counter()

    def add(self, change: Change) -> None:
        self.decoded[change.op] += 1
        if change.op == "T":
            return
        if change.old_key is not None:  # the key moved: the old row goes
            try:
                old, new = self._key(change.old_key), self._key(change.values)
            except _Rejected:
                old = new = None
            if old is not None and old != new:
                self._keep("D", change.old_key, change)
        self._keep(change.op, change.values, change)

    def _key(self, values: Mapping[str, Value]) -> tuple:
        return tuple(self._convert(values, i) for i in self.key_index)

    def _convert(self, values: Mapping[str, Value], i: int) -> object:
        name = self.names[i]
        raw = values.get(name)
        if raw is None:
            if i in self.key_index:
                raise _Rejected(f"{name}: primary key column missing from the change (replica identity?)", None)
            return None
        if raw is UNCHANGED_TOAST:
            raise _Rejected(f"{name}: unchanged TOAST value is not in the change; run 'paylake extract --only "
                            f"postgres.{self.table.name}'", None)
        try:
            return self.converters[i](raw)
        except (ValueError, ArithmeticError, KeyError):
            raise _Rejected(f"{name}: not a valid {self.schema.field(i).type}", None) from None

    def _keep(self, op: str, values: Mapping[str, Value], change: Change) -> None:
        key = None
        try:
            key = self._key(values)
            row = [None] * len(self.names)
            for i, k in zip(self.key_index, key):
                row[i] = k
            if op != "D":
                for i in self.other_index:
                    row[i] = self._convert(values, i)
        except _Rejected as exc:
            if key is not None:  # a newer change that failed supersedes the older ones of its key
                self.latest.pop(key, None)
            self.rejects.append(self._reject(op, values, change, str(exc)))
            return
        self.latest.pop(key, None)  # re-insert: the dict keeps stream order of the last changes
        self.latest[key] = (op, change.lsn, row)

    def _reject(self, op: str, values: Mapping[str, Value], change: Change, reason: str) -> tuple[str, str, str]:
        kept = {n: ("<unchanged toast>" if v is UNCHANGED_TOAST else v) for n, v in values.items() if n in self.names}
        key = "/".join(str(values.get(k)) for k in self.table.primary_key)
        raw = json.dumps({"op": op, "lsn": int_to_lsn(change.lsn), "relation": change.relation, "values": kept},
                         sort_keys=True)
        return key, reason, raw

    def batch(self) -> TableBatch:
        entries = list(self.latest.values())
        columns = list(zip(*(row for _, _, row in entries))) if entries else [()] * len(self.names)
        arrays = [pa.array(column, f.type) for column, f in zip(columns, self.schema)]
        arrays += [pa.array([e[0] for e in entries], pa.string()), pa.array([e[1] for e in entries], pa.int64())]
        schema = pa.schema([f.with_nullable(True) for f in self.schema] + CHANGE_FIELDS)
        rejects = pa.table([list(c) for c in zip(*self.rejects)] if self.rejects else [[], [], []],
                           schema=QUARANTINE_SCHEMA)
        return TableBatch(self.table, pa.Table.from_arrays(arrays, schema=schema), rejects, self.decoded)


def build_batches(transactions: Iterable[Transaction], tables: Mapping[str, PgTable],
                  roots: Mapping[str, str]) -> dict[str, TableBatch]:
    """One TableBatch per table of ``tables`` (keyed ``schema.table``) that the
    transactions changed; changes of other relations are left out. Partitions
    count as their root table (``roots``, see ``partition_roots``)."""
    accumulators: dict[str, _TableChanges] = {}
    for transaction in transactions:
        for change in transaction.changes:
            name = roots.get(change.relation, change.relation)
            if name not in tables:
                continue
            if name not in accumulators:
                accumulators[name] = _TableChanges(tables[name])
            accumulators[name].add(change)
    return {name: acc.batch() for name, acc in accumulators.items()}
