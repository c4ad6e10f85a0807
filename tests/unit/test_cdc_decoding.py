"""Pure logic of CDC: the test_decoding tokenizer, typed values, last change per key, partition roots."""

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paylake.cdc.decoding import (
    UNCHANGED_TOAST,
    build_batches,
    commit_time,
    int_to_lsn,
    lsn_to_int,
    parse_change,
    parse_tuple,
    partition_roots,
    read_transactions,
    touched_tables,
)
from paylake.errors import ContractError
from paylake.extract.catalog import PgTable


def literal(text: str) -> str:
    """A string as test_decoding quotes it."""
    return "'" + text.replace("'", "''") + "'"


ADDRESS = PgTable("oltp", "address", (
    ("addressid", "int8", -1, True), ("customerid", "int8", -1, True), ("locationid", "int8", -1, True),
    ("streetencrypted", "bytea", -1, True), ("postalcode", "text", -1, True), ("isprimary", "bool", -1, True),
    ("createdat", "timestamptz", -1, True), ("updatedat", "timestamptz", -1, True)), ("addressid",), (), 0.0)
TRANSACTION = PgTable("oltp", "transaction", (
    ("transactionid", "int8", -1, True), ("datetime", "timestamptz", -1, True),
    ("amount", "numeric", (14 << 16 | 2) + 4, True), ("statusid", "int2", -1, True)),
    ("transactionid", "datetime"), (("oltp.transaction_2026_07", 0.0),), 0.0)
CUSTOMER = PgTable("oltp", "customer", (
    ("customerid", "int8", -1, True), ("username", "text", -1, True), ("password", "text", -1, True),
    ("country", "bpchar", 6, True), ("signupdate", "date", -1, True)), ("customerid",), (), 0.0)


def address_insert(addressid: int, postal: str = "75011", street: str = "\\xdeadbeef") -> str:
    return (f"table oltp.address: INSERT: addressid[bigint]:{addressid} customerid[bigint]:3 locationid[bigint]:4 "
            f"streetencrypted[bytea]:{literal(street)} postalcode[text]:{literal(postal)} isprimary[boolean]:true "
            "createdat[timestamp with time zone]:'2026-07-01 10:00:00.5+00' "
            "updatedat[timestamp with time zone]:'2026-07-01 10:00:00.123456+00'")


def txn(xid: int, start: int, *lines: str, committed: str = "2026-07-01 10:00:01.25+00") -> list[tuple]:
    rows = [(int_to_lsn(start), xid, f"BEGIN {xid}")]
    rows += [(int_to_lsn(start + 16 * (i + 1)), xid, line) for i, line in enumerate(lines)]
    rows.append((int_to_lsn(start + 16 * (len(lines) + 1)), xid, f"COMMIT {xid} (at {committed})"))
    return rows


# ----------------------------------------------------------------------------- tokenizer
def test_quoted_values_keep_quotes_commas_spaces_and_newlines():
    tricky = "it's, a \"test\"\nnew line: x[y]:'z' "
    items = parse_tuple(f"id[bigint]:1 note[text]:{literal(tricky)} other[text]:''''")
    assert items == [("id", "bigint", "1"), ("note", "text", tricky), ("other", "text", "'")]


def test_null_bare_numbers_and_negative_numerics():
    items = parse_tuple("a[numeric]:-12.50 b[smallint]:-3 c[boolean]:false d[text]:null e[text]:'null' f[numeric]:NaN")
    assert [v for _, _, v in items] == ["-12.50", "-3", "false", None, "null", "NaN"]


def test_type_names_with_spaces_and_brackets_and_quoted_column_names():
    items = parse_tuple('"Odd ""Name"""[timestamp with time zone]:\'2026-07-01 06:00:00-04\' '
                        "arr[text[]]:'{\"x y\",NULL,q''}' c[character]:'FR '")
    assert items == [('Odd "Name"', "timestamp with time zone", "2026-07-01 06:00:00-04"),
                     ("arr", "text[]", '{"x y",NULL,q\'}'), ("c", "character", "FR ")]


def test_unchanged_toast_is_a_marker_not_a_string():
    items = parse_tuple("big[text]:unchanged-toast-datum small[text]:'unchanged-toast-datum'")
    assert items[0][2] is UNCHANGED_TOAST and items[1][2] == "unchanged-toast-datum"


@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30), min_size=1, max_size=6))
def test_any_quoted_text_round_trips(values):
    line = " ".join(f"c{i}[text]:{literal(v)}" for i, v in enumerate(values))
    assert [v for _, _, v in parse_tuple(line)] == values


@pytest.mark.parametrize("line", ["a[text]:'unterminated", "a[text]:", "a[text:1", "a[text]:'x'junk"])
def test_malformed_tuples_are_refused(line):
    with pytest.raises(ValueError):
        parse_tuple(line)


def test_update_with_a_new_key_and_delete_with_the_key_only():
    update = parse_change("table oltp.merchant: UPDATE: old-key: merchantid[bigint]:1 new-tuple: "
                          "merchantid[bigint]:5 name[text]:'A b'", 100)
    assert (update.relation, update.op, update.old_key, update.values) == (
        "oltp.merchant", "U", {"merchantid": "1"}, {"merchantid": "5", "name": "A b"})
    delete = parse_change("table oltp.address: DELETE: addressid[bigint]:2", 101)
    assert (delete.op, delete.values, delete.old_key) == ("D", {"addressid": "2"}, None)
    assert parse_change('table "My Schema"."T.x": TRUNCATE: (no-flags)', 102).relation == "My Schema.T.x"
    assert parse_change("BEGIN 7", 1) is None


def test_lsn_text_and_integers_round_trip():
    assert lsn_to_int("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert int_to_lsn(lsn_to_int("16/B374D848")) == "16/B374D848"
    assert int_to_lsn(0) == "0/0"


def test_commit_time_is_utc_whatever_the_offset():
    assert commit_time("COMMIT 9 (at 2026-07-01 06:00:00.123456-04)") == dt.datetime(
        2026, 7, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    assert commit_time("COMMIT 9") is None


def test_transactions_are_complete_and_in_commit_order():
    rows = txn(10, 1000, address_insert(1)) + txn(11, 2000, address_insert(2)) + [("0/9000", 12, "BEGIN 12")]
    transactions = read_transactions(rows)
    assert [t.xid for t in transactions] == ["10", "11"]
    assert transactions[0].commit_lsn == 1000 + 32
    assert transactions[1].committed_at == dt.datetime(2026, 7, 1, 10, 0, 1, 250000, tzinfo=dt.UTC)


def test_an_unparseable_change_names_its_lsn_not_its_values():
    with pytest.raises(ContractError, match="LSN 0/3F8") as error:
        read_transactions(txn(10, 1000, "table oltp.address: INSERT: secret[text]:'4111 1111"))
    assert "4111" not in str(error.value)


# ----------------------------------------------------------------------------- partitions
def test_partitions_map_to_their_root_table_through_every_level():
    roots = partition_roots([("oltp.transaction_2026_07", "oltp.transaction"),
                             ("oltp.transaction_default", "oltp.transaction"),
                             ("oltp.t_2026_07_eu", "oltp.t_2026_07"), ("oltp.t_2026_07", "oltp.t")])
    assert roots == {"oltp.transaction_2026_07": "oltp.transaction", "oltp.transaction_default": "oltp.transaction",
                     "oltp.t_2026_07_eu": "oltp.t", "oltp.t_2026_07": "oltp.t"}


def test_changes_of_partitions_land_in_the_root_table_batch():
    line = ("table oltp.transaction_2026_07: INSERT: transactionid[bigint]:9 "
            "datetime[timestamp with time zone]:'2026-07-05 00:00:00+00' amount[numeric]:-0.50 statusid[smallint]:2")
    transactions = read_transactions(txn(5, 100, line))
    roots = partition_roots([("oltp.transaction_2026_07", "oltp.transaction")])
    assert touched_tables(transactions, roots) == {"oltp.transaction"}
    batch = build_batches(transactions, {"oltp.transaction": TRANSACTION}, roots)["oltp.transaction"]
    assert batch.rows.to_pylist() == [{"transactionid": 9, "datetime": dt.datetime(2026, 7, 5, tzinfo=dt.UTC),
                                       "amount": Decimal("-0.50"), "statusid": 2, "_op": "I", "_lsn": 116}]


# ----------------------------------------------------------------------------- typed batches
def test_values_are_typed_with_the_bronze_schema():
    transactions = read_transactions(txn(5, 100, address_insert(1)))
    batch = build_batches(transactions, {"oltp.address": ADDRESS}, {})["oltp.address"]
    assert batch.rows.schema.field("streetencrypted").type == pa.binary()
    assert batch.rows.schema.field("updatedat").type == pa.timestamp("us", tz="UTC")
    row = batch.rows.to_pylist()[0]
    assert row["streetencrypted"] == bytes.fromhex("deadbeef") and row["isprimary"] is True
    assert row["createdat"] == dt.datetime(2026, 7, 1, 10, 0, 0, 500000, tzinfo=dt.UTC)
    assert row["updatedat"] == dt.datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)


def test_columns_never_extracted_are_dropped():
    line = ("table oltp.customer: INSERT: customerid[bigint]:1 username[text]:'ann' password[text]:'$2a$08$x' "
            "country[character]:'FR' signupdate[date]:'2026-01-31'")
    batch = build_batches(read_transactions(txn(1, 10, line)), {"oltp.customer": CUSTOMER}, {})["oltp.customer"]
    assert "password" not in batch.rows.column_names
    assert batch.rows.to_pylist()[0]["signupdate"] == dt.date(2026, 1, 31)


def test_only_the_last_change_per_key_is_kept_in_stream_order():
    rows = (txn(1, 100, address_insert(1, "A"), address_insert(2, "B"))
            + txn(2, 200, address_insert(1, "C").replace("INSERT", "UPDATE"),
                  "table oltp.address: DELETE: addressid[bigint]:2")
            + txn(3, 300, address_insert(3, "D"), "table oltp.address: DELETE: addressid[bigint]:3"))
    batch = build_batches(read_transactions(rows), {"oltp.address": ADDRESS}, {})["oltp.address"]
    got = {r["addressid"]: (r["_op"], r["postalcode"]) for r in batch.rows.to_pylist()}
    assert got == {1: ("U", "C"), 2: ("D", None), 3: ("D", None)}
    assert batch.decoded == {"I": 3, "U": 1, "D": 2}
    assert [r["addressid"] for r in batch.rows.to_pylist() if r["_op"] != "D"] == [1]  # what sinks upsert


def test_a_key_change_deletes_the_old_key():
    line = address_insert(7).replace("INSERT: ", "UPDATE: old-key: addressid[bigint]:6 new-tuple: ")
    batch = build_batches(read_transactions(txn(1, 100, line)), {"oltp.address": ADDRESS}, {})["oltp.address"]
    assert sorted((r["addressid"], r["_op"]) for r in batch.rows.to_pylist()) == [(6, "D"), (7, "U")]


def test_values_breaking_the_contract_are_quarantined_and_supersede_older_changes():
    too_big = ("table oltp.transaction: UPDATE: transactionid[bigint]:9 datetime[timestamp with time zone]:"
               "'2026-07-05 00:00:00+00' amount[numeric]:123456789012345.5 statusid[smallint]:2")
    ok = too_big.replace("123456789012345.5", "10.00").replace("UPDATE", "INSERT")
    toast = ok.replace("amount[numeric]:10.00", "amount[numeric]:unchanged-toast-datum").replace(":9 ", ":10 ")
    batch = build_batches(read_transactions(txn(1, 100, ok, too_big, toast)),
                          {"oltp.transaction": TRANSACTION}, {})["oltp.transaction"]
    assert batch.rows.num_rows == 0
    reasons = batch.rejects["reason"].to_pylist()
    assert reasons[0].startswith("amount: not a valid decimal128(14, 2)")
    assert "unchanged TOAST" in reasons[1]
    assert batch.rejects["key"].to_pylist() == ["9/2026-07-05 00:00:00+00", "10/2026-07-05 00:00:00+00"]


def test_numeric_scale_and_precision_are_checked_exactly():
    ok = ("table oltp.transaction: INSERT: transactionid[bigint]:1 datetime[timestamp with time zone]:"
          "'2026-07-05 00:00:00+00' amount[numeric]:{} statusid[smallint]:2")
    values = ["999999999999.99", "-0.10", "0", "1.5000", "12.345", "1000000000000.00"]
    rows = [ok.format(v).replace("transactionid[bigint]:1", f"transactionid[bigint]:{i}") for i, v in enumerate(values)]
    batch = build_batches(read_transactions(txn(1, 100, *rows)), {"oltp.transaction": TRANSACTION}, {})
    amounts = batch["oltp.transaction"].rows["amount"].to_pylist()
    assert amounts == [Decimal("999999999999.99"), Decimal("-0.10"), Decimal("0"), Decimal("1.50")]
    assert batch["oltp.transaction"].rejects.num_rows == 2


def test_changes_of_tables_not_captured_are_left_out():
    line = "table oltp.auditlog: INSERT: auditid[bigint]:1 action[text]:'x'"
    assert build_batches(read_transactions(txn(1, 100, line)), {"oltp.address": ADDRESS}, {}) == {}


def test_truncate_is_counted_not_applied():
    batch = build_batches(read_transactions(txn(1, 100, "table oltp.address: TRUNCATE: (no-flags)")),
                          {"oltp.address": ADDRESS}, {})["oltp.address"]
    assert batch.rows.num_rows == 0 and batch.decoded == {"T": 1}
