"""Extraction into bronze: complete, incremental, exactly once, quarantine, on S3 and local lakes."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from bson import ObjectId

from paylake import contracts
from paylake.errors import ContractError, PaylakeError
from paylake.extract.run import ExtractOptions, extract, sources
from paylake.extract.verify import verify_bronze
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake, mongo, postgres


@pytest.fixture(scope="module")
def sources_db(settings, ray_cluster):
    """Source systems of their own (this module changes them), seeded tiny."""
    isolated = isolated_sources(settings, "paylake_extract")
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=6))
    return isolated


def on_lake(settings, root: str):
    return settings.model_copy(update={"lake_root": root})


@pytest.fixture(scope="module")
def s3_settings(sources_db):
    """A fresh prefix of the S3 lake, fully extracted once."""
    s = on_lake(sources_db, f"s3://paylake-lake/tests/{uuid.uuid4().hex[:8]}")
    extract(s)
    return s


def versions(settings) -> dict[str, int]:
    from deltalake import DeltaTable

    return {f"{s.kind}.{s.name}": DeltaTable(contracts.bronze(s).uri(settings), storage_options=lake.storage_options(
        settings)).version() for s in sources(settings)}


def test_full_load_lands_every_source_equal_to_it(s3_settings):
    results = verify_bronze(s3_settings)
    assert len(results) == 17
    assert [r for r in results if r.result != "equal"] == []
    assert all(contracts.bronze(s).uri(s3_settings).startswith("s3://paylake-lake/tests/") for s in sources(s3_settings))


def test_bronze_keeps_catalog_types_and_load_metadata(s3_settings):
    table = lake.read_table(s3_settings, contracts.bronze(next(
        s for s in sources(s3_settings, ["postgres.transaction"]))).uri(s3_settings))
    assert table.schema.field("amount").type == pa.decimal128(14, 2)
    assert table.schema.field("datetime").type == pa.timestamp("us", tz="UTC")
    assert set(table["_source"].unique().to_pylist()) == {"postgres:oltp.transaction"}
    assert table["_batch_id"].unique().to_pylist() == [1]
    customer = lake.read_table(s3_settings, contracts.bronze(sources(s3_settings, ["postgres.customer"])[0]).uri(s3_settings))
    assert "password" not in customer.column_names, "credentials never leave the OLTP system"
    log = lake.read_table(s3_settings, contracts.bronze(sources(s3_settings, ["mongo.Log"])[0]).uri(s3_settings))
    assert pa.types.is_list(log.schema.field("lines").type)
    assert pa.types.is_struct(log.schema.field("lines").type.value_type)


def test_rerun_without_changes_commits_nothing(s3_settings):
    before = versions(s3_settings)
    report = extract(s3_settings)
    assert versions(s3_settings) == before
    assert {t.mode for t in report.tables} == {"unchanged"}


def test_incremental_run_merges_changed_and_new_rows(s3_settings):
    with postgres.connect(s3_settings) as conn:
        conn.execute("update oltp.merchant set name = name || ' (renamed)' where merchantid in (1, 2)")
        conn.execute("insert into oltp.location (city, region, country, latitude, longitude)"
                     " values ('Lille', 'Hauts-de-France', 'FR', 50.629250, 3.057256)")
        (txid, when) = conn.execute("select transactionid, datetime from oltp.transaction order by transactionid"
                                    " desc limit 1").fetchone()
        conn.execute("select oltp.change_transaction_status(%s, %s, 'disputed', 'chargeback', 'test')",
                     (txid, when))
    with mongo.client(s3_settings) as client:
        mongo.database(client, s3_settings).Merchant.update_one(
            {"_id": 3}, {"$set": {"name": "Mongo renamed", "updatedAt": dt.datetime.now(dt.UTC)}})
    before = versions(s3_settings)
    report = {t.table: t for t in extract(s3_settings).tables}
    after = versions(s3_settings)
    for table in ("postgres.merchant", "postgres.location", "postgres.transaction",
                  "postgres.transactionstatechanges", "mongo.Merchant"):
        assert report[table].mode == "incremental", table
        assert after[table] == before[table] + 1, table
    assert report["postgres.merchant"].rows_written == 2
    assert report["postgres.location"].rows_written == 1
    assert after["postgres.customer"] == before["postgres.customer"]
    assert [r for r in verify_bronze(s3_settings) if r.result != "equal"] == []
    merchant = lake.read_table(s3_settings, contracts.bronze(sources(s3_settings, ["postgres.merchant"])[0]).uri(s3_settings))
    renamed = merchant.filter(pc.is_in(merchant["merchantid"], pa.array([1, 2])))
    assert all(name.endswith("(renamed)") for name in renamed["name"].to_pylist())
    assert set(renamed["_batch_id"].to_pylist()) == {2}
    state = lake.delta_state(s3_settings, contracts.bronze(sources(s3_settings, ["postgres.merchant"])[0]).uri(s3_settings),
                             "paylake.extract")
    assert state.batch == 2 and state.state["cursor"]


def test_crash_between_data_write_and_commit_then_rerun_gives_exact_source(sources_db, tmp_path):
    local = on_lake(sources_db, str(tmp_path / "lake"))
    with pytest.raises(PaylakeError, match="crash injected"):
        extract(local, only=["postgres.transaction"], options=ExtractOptions(crash_after_write="transaction"))
    uri = contracts.bronze(sources(local, ["postgres.transaction"])[0]).uri(local)
    assert not lake.table_exists(local, uri), "nothing is committed before the commit"
    assert any(p.suffix == ".parquet" for p in (tmp_path / "lake").rglob("*")), "the data files were written"
    extract(local, only=["postgres.transaction"])
    assert [r.result for r in verify_bronze(local, only=["postgres.transaction"])] == ["equal"]
    # a crash in a later batch leaves the committed one intact, and the re-run converges again
    with postgres.connect(local) as conn:
        conn.execute("update oltp.transaction set amount = amount + 1 where transactionid <= 5")
    with pytest.raises(PaylakeError, match="crash injected"):
        extract(local, only=["postgres.transaction"], options=ExtractOptions(crash_after_write="transaction"))
    assert lake.delta_state(local, uri, "paylake.extract").batch == 1
    extract(local, only=["postgres.transaction"])
    assert [r.result for r in verify_bronze(local, only=["postgres.transaction"])] == ["equal"]
    assert lake.read_table(local, uri, ["transactionid"]).num_rows == len(
        set(lake.read_table(local, uri, ["transactionid"])["transactionid"].to_pylist())), "no duplicates"


BAD_REVIEWS = [
    {"customerId": 1, "merchantId": 1, "rating": 9, "message": b"way too good", "timestamp": "not a date"},
    {"customerId": 1, "merchantId": 1, "rating": 3},
    {"customerId": "one", "merchantId": 1, "rating": 4, "message": b"id is text",
     "timestamp": dt.datetime(2026, 10, 1)},
]


def test_malformed_documents_go_to_quarantine_with_reasons(sources_db, tmp_path):
    local = on_lake(sources_db, str(tmp_path / "lake"))
    with mongo.client(local) as client:
        reviews = mongo.database(client, local).CustomerReview
        ids = reviews.insert_many([dict(d, _id=ObjectId()) for d in BAD_REVIEWS],
                                  bypass_document_validation=True).inserted_ids
        (good,) = [reviews.count_documents({})]
    try:
        tolerant = ExtractOptions(quarantine_threshold=0.5)
        report = extract(local, only=["mongo.CustomerReview"], options=tolerant).tables[0]
        assert report.quarantined == 3
        assert report.rows_written == good - 3
        source = sources(local, ["mongo.CustomerReview"])[0]
        held = lake.read_table(local, contracts.quarantine(source).uri(local)).to_pylist()
        by_key = {row["key"]: row for row in held}
        assert set(by_key) == {str(i) for i in ids}
        assert "rating" in by_key[str(ids[0])]["reason"] and "timestamp" in by_key[str(ids[0])]["reason"]
        assert "message" in by_key[str(ids[1])]["reason"]
        assert "customerId" in by_key[str(ids[2])]["reason"]
        assert '"rating": 9' in by_key[str(ids[0])]["raw"]
        bronze = lake.read_table(local, contracts.bronze(source).uri(local))
        assert not set(bronze["_id"].to_pylist()) & {str(i) for i in ids}
        extract(local, only=["mongo.CustomerReview"], options=dataclasses.replace(tolerant, full=True))
        assert lake.read_table(local, contracts.quarantine(source).uri(local)).num_rows == 3, "a replay adds nothing"
        with pytest.raises(ContractError, match="above the threshold"):
            extract(local, only=["mongo.CustomerReview"],
                    options=ExtractOptions(full=True, quarantine_threshold=0.0))
    finally:
        with mongo.client(local) as client:
            mongo.database(client, local).CustomerReview.delete_many({"_id": {"$in": ids}})


def test_verify_compares_the_source_minus_quarantined_and_survives_schema_breaking_documents(sources_db, tmp_path):
    local = on_lake(sources_db, str(tmp_path / "lake"))
    bad = {"_id": ObjectId(), "customerId": "one", "merchantId": 1, "rating": 11, "message": b"schema-breaking",
           "timestamp": "yesterday"}
    with mongo.client(local) as client:
        reviews = mongo.database(client, local).CustomerReview
        reviews.insert_one(bad, bypass_document_validation=True)
        total = reviews.count_documents({})
    original = None
    try:
        report = extract(local, only=["mongo.CustomerReview"], options=ExtractOptions(quarantine_threshold=0.5))
        assert report.tables[0].quarantined == 1
        (result,) = verify_bronze(local, only=["mongo.CustomerReview"])
        assert (result.source_rows, result.quarantined, result.bronze_rows) == (total, 1, total - 1)
        assert result.result == "equal"
        with mongo.client(local) as client:  # a good document changed behind the lake is still seen
            reviews = mongo.database(client, local).CustomerReview
            original = reviews.find_one({"_id": {"$ne": bad["_id"]}})
            reviews.update_one({"_id": original["_id"]}, {"$set": {"message": original["message"] + b" (changed)"}})
        (changed,) = verify_bronze(local, only=["mongo.CustomerReview"])
        assert changed.result.startswith("checksum differs")
    finally:
        with mongo.client(local) as client:
            reviews = mongo.database(client, local).CustomerReview
            reviews.delete_one({"_id": bad["_id"]})
            if original is not None:
                reviews.replace_one({"_id": original["_id"]}, original)


def test_unknown_source_names_the_choices(sources_db):
    with pytest.raises(PaylakeError, match="postgres.transaction"):
        sources(sources_db, ["postgres.nosuchtable"])
