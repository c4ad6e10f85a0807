"""Files committed by paylake's own writer (``write_data_file`` + ``commit_files``) stay filterable on every
column: Arrow and DuckDB filters pushed into ``lake.dataset`` find the rows (Delta statistics written for each
column type; a column without bounds made deltalake skip every file on any filter of it)."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from paylake.stores import lake

LONG = "x" * 40 + "tail"
TABLE = pa.table({
    "id": pa.array([1, 2, 3], pa.int64()),
    "name": ["alpha", "beta", LONG],
    "ratio": [0.5, float("nan"), 2.5],
    "flag": [True, False, None],
    "day": [dt.date(2024, 1, 1), dt.date(2024, 2, 1), None],
    "amount": pa.array([decimal.Decimal("0.10"), decimal.Decimal("19.99"), None], pa.decimal128(12, 2)),
    "ts": pa.array([dt.datetime(2024, 1, 1, tzinfo=dt.UTC)] * 3, pa.timestamp("us", tz="UTC")),
    "empty": pa.array([None, None, None], pa.string()),
})
FILTERS = [  # (column, Arrow expression, DuckDB predicate, rows expected)
    ("name", pc.field("name") == "beta", "name = 'beta'", 1),
    ("name", pc.field("name") == LONG, f"name = '{LONG}'", 1),
    ("ratio", pc.field("ratio") < 1.0, "ratio < 1.0", 1),
    ("flag", pc.field("flag") == True, "flag", 1),  # noqa: E712 - an Arrow expression
    ("day", pc.field("day") == dt.date(2024, 2, 1), "day = date '2024-02-01'", 1),
    ("amount", pc.field("amount") <= decimal.Decimal("0.10"), "amount <= 0.10", 1),
    ("ts", pc.field("ts") >= pa.scalar(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), pa.timestamp("us", tz="UTC")),
     "ts >= timestamptz '2024-01-01 00:00:00+00'", 3),
    ("empty", pc.field("empty").is_null(), "empty is null", 3),
]


@pytest.fixture(scope="module")
def written(settings):
    uri = lake.table_uri(settings, "test", "lake_files", uuid.uuid4().hex[:8])
    assert lake.append_rows(settings, uri, TABLE, app_id="test.lake_files", batch=1, state={})
    return settings, uri


@pytest.mark.parametrize("column,expression,predicate,expected", FILTERS, ids=[f"{f[0]}-{i}" for i, f in
                                                                               enumerate(FILTERS)])
def test_a_filter_on_any_column_finds_its_rows(written, column, expression, predicate, expected):
    settings, uri = written
    assert lake.dataset(settings, uri).to_table(filter=expression).num_rows == expected
    con = duckdb.connect()
    con.register("t", lake.dataset(settings, uri))
    assert con.execute(f"select count(*) from t where {predicate}").fetchone()[0] == expected


def test_statistics_bound_every_value(written):
    settings, uri = written
    from deltalake import DeltaTable

    actions = DeltaTable(uri, storage_options=lake.storage_options(settings)).get_add_actions(flatten=True)
    row = pa.table(actions).to_pylist()[0]
    assert row["min.name"] == "alpha" and row["max.name"] >= LONG  # the cut upper bound still bounds the value
    assert row["min.ratio"] == 0.5 and row["max.ratio"] == 2.5 and row["null_count.empty"] == 3
