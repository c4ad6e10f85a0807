"""Pure logic of extraction: partition planning, type mapping, contracts on Arrow."""

import datetime as dt

import pyarrow as pa
import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from paylake.errors import ContractError
from paylake.extract.catalog import arrow_type
from paylake.extract.mongo import _object_id_hex, bronze_schema, contract_violations
from paylake.extract.mongo import arrow_type as mongo_type
from paylake.extract.plan import partitions_for, plan_ranges, plan_time_ranges
from paylake.extract.postgres import conform


@given(st.integers(-10**12, 10**12), st.integers(0, 10**6), st.integers(1, 64))
def test_key_ranges_cover_the_range_exactly_once(low, width, parts):
    high = low + width
    ranges = plan_ranges(low, high, parts)
    assert ranges[0][0] == low and ranges[-1][1] == high + 1
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert len(ranges) <= parts


def test_empty_key_range_plans_nothing():
    assert plan_ranges(5, 4, 3) == []


def test_partitions_scale_with_rows_and_are_capped():
    assert partitions_for(0, 100, 8) == 1
    assert partitions_for(250, 100, 8) == 3
    assert partitions_for(10**9, 100, 8) == 8


@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1)),
       st.integers(0, 10**8), st.integers(1, 16))
def test_time_ranges_cover_whole_seconds_without_gaps(low, seconds, parts):
    low = low.replace(microsecond=0, tzinfo=dt.UTC)
    high = low + dt.timedelta(seconds=seconds)
    ranges = plan_time_ranges(low, high, parts)
    assert ranges[0][0] == low and ranges[-1][1] == high + dt.timedelta(seconds=1)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))


def test_catalog_types_map_to_exact_arrow_types():
    numeric_14_2 = ((14 << 16) | 2) + 4
    assert arrow_type("numeric", numeric_14_2) == pa.decimal128(14, 2)
    assert arrow_type("timestamptz", -1) == pa.timestamp("us", tz="UTC")
    assert arrow_type("bpchar", 7) == pa.string()
    with pytest.raises(ContractError, match="no Arrow mapping"):
        arrow_type("tsvector", -1)


def test_unparseable_values_are_held_back_with_their_reason():
    raw = pa.table({"id": [1, 2, 3], "amount": ["1.50", "NaN", "2.25"]})
    schema = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(14, 2))])
    good, rejects = conform(raw, schema, ["id"])
    assert good["id"].to_pylist() == [1, 3]
    assert rejects["key"].to_pylist() == ["2"]
    assert "amount" in rejects["reason"][0].as_py()


def test_json_schema_maps_to_nested_arrow():
    lines = bronze_schema("Log").field("lines").type
    assert pa.types.is_list(lines) and pa.types.is_struct(lines.value_type)
    assert lines.value_type.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert mongo_type({"bsonType": ["int", "long"]}) == pa.int64()
    assert mongo_type({"bsonType": ["string", "null"]}) == pa.string()


def test_contract_violations_are_found_without_a_row_loop():
    reviews = pa.table({
        "_id": pa.array([b"x" * 12] * 4, pa.binary(12)),
        "customerId": pa.array([1, 2, None, 4], pa.int64()),
        "merchantId": pa.array([1, 2, 3, 4], pa.int64()),
        "rating": pa.array([5, 9, 3, 1], pa.int64()),
        "message": ["ok", "ok", "ok", None],
        "timestamp": pa.array([dt.datetime(2026, 1, 1)] * 4, pa.timestamp("ms")),
    })
    assert contract_violations("CustomerReview", reviews).tolist() == [False, True, True, True]


def test_nested_items_are_checked_and_mapped_to_their_document():
    item = pa.struct([("timestamp", pa.timestamp("ms")), ("error_severity", pa.string()),
                      ("state_code", pa.string()), ("message", pa.string()), ("statement", pa.string())])
    ok = {"timestamp": dt.datetime(2026, 1, 1), "error_severity": "LOG", "state_code": "00000",
          "message": "m", "statement": None}
    logs = pa.table({
        "sessionId": ["a", "b"], "dbname": ["d", "d"], "user": ["u", "u"], "clientAddress": ["c", "c"],
        "startedAt": pa.array([dt.datetime(2026, 1, 1)] * 2, pa.timestamp("ms")),
        "endedAt": pa.array([dt.datetime(2026, 1, 1)] * 2, pa.timestamp("ms")),
        "label": ["normal", "weird"], "scenario": ["s", "s"],
        "lines": pa.array([[ok, ok], [ok, dict(ok, message=None)]], pa.list_(item)),
    })
    assert contract_violations("Log", logs).tolist() == [False, True]


def test_object_ids_become_their_hex_text():
    ids = [ObjectId(), ObjectId()]
    column = pa.chunked_array([pa.array([i.binary for i in ids], pa.binary(12))])
    assert _object_id_hex(column).to_pylist() == [str(i) for i in ids]
