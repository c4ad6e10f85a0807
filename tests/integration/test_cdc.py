"""Change data capture into bronze against the real stack: changes land, a crash
between the Delta commit and the slot advance replays without duplicates, an
idle drain commits nothing, lag is measured."""

from __future__ import annotations

import dataclasses
import re

import pyarrow.compute as pc
import pytest

from paylake import contracts
from paylake.cdc.decoding import lsn_to_int
from paylake.cdc.stream import drain, follow, lag
from paylake.errors import PaylakeError
from paylake.extract.run import extract, sources
from paylake.extract.verify import verify_bronze
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake, postgres
from paylake.stores.replication import default_slot, drop_slot, ensure_slot
from tests.conftest import run_cli

DATABASE = "paylake_cdc_test"
SLOT = f"paylake_cdc_{DATABASE}"
TABLES = ["postgres.address", "postgres.merchant", "postgres.location", "postgres.transaction"]


@pytest.fixture(scope="module")
def cdc(settings, ray_cluster, tmp_path_factory):
    """Seeded sources of their own (their database's old slots dropped with it), then
    bronze extracted into a lake of its own: the extraction creates the slot."""
    isolated = isolated_sources(settings, DATABASE)
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=0))
    here = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("lake"))})
    report = extract(here, only=TABLES)
    assert report.slot is not None and (report.slot.name, report.slot.created) == (SLOT, True)
    yield here
    drop_slot(here, SLOT)


def write(settings, *statements: str) -> list:
    """Run statements in one transaction that waits for its WAL flush (the server
    runs with synchronous_commit=off, and decoding reads flushed WAL only);
    return the first row of each."""
    with postgres.connect(settings) as conn:
        conn.execute("set local synchronous_commit = on")
        return [conn.execute(s).fetchone() for s in statements]


def flushed(settings) -> str:
    with postgres.connect(settings) as conn:
        return conn.execute("select pg_current_wal_flush_lsn()::text").fetchone()[0]


def slot_position(settings) -> int:
    with postgres.connect(settings) as conn:
        return lsn_to_int(conn.execute("select confirmed_flush_lsn::text from pg_replication_slots"
                                       " where slot_name = %s", (SLOT,)).fetchone()[0])


def caught_up(settings, mark: str) -> bool:
    with postgres.connect(settings) as conn:
        return conn.execute("select confirmed_flush_lsn >= %s::pg_lsn from pg_replication_slots"
                            " where slot_name = %s", (mark, SLOT)).fetchone()[0]


def bronze(settings, table: str):
    return lake.read_table(settings, contracts.bronze(sources(settings, [table])[0]).uri(settings))


def versions(settings) -> dict[str, int]:
    from deltalake import DeltaTable

    return {t: DeltaTable(contracts.bronze(sources(settings, [t])[0]).uri(settings),
                          storage_options=lake.storage_options(settings)).version() for t in TABLES}


def assert_bronze_equals_sources(settings) -> None:
    assert [(r.table, r.result) for r in verify_bronze(settings, only=TABLES) if r.result != "equal"] == []


def test_inserts_updates_and_deletes_land_in_bronze(cdc):
    (address,), (merchant_name,), (location,), (transaction, at, partition) = write(
        cdc,
        "delete from oltp.address where addressid = (select min(addressid) from oltp.address) returning addressid",
        "update oltp.merchant set name = name || ' (cdc)' where merchantid = 1 returning name",
        "insert into oltp.location (city, region, country, latitude, longitude)"
        " values ('O''Brien, Cork', 'Munster', 'IE', 51.897900, -8.470100) returning locationid",
        "insert into oltp.transaction (datetime, customerid, merchantid, paymentmethodid, deviceid, locationid,"
        " productid, currencycode, amount, taxamount, feeamount, statusid)"
        " select datetime + interval '1 second', customerid, merchantid, paymentmethodid, deviceid, locationid,"
        " productid, currencycode, 12.34, 0, 0.25, 1 from oltp.transaction order by transactionid limit 1"
        " returning transactionid, datetime, tableoid::regclass::text")
    assert partition.startswith("oltp.transaction_"), "the change is decoded under a partition's name"
    mark = flushed(cdc)
    bytes_behind, seconds_behind = lag(cdc, SLOT)
    assert bytes_behind > 0 and 0 < seconds_behind < 60, "lag counts from the oldest pending commit"

    scored: list[tuple[str, list]] = []
    report = drain(cdc, slot=SLOT, sink=lambda table, rows: scored.append((table, rows["_op"].to_pylist())))

    tables = report.tables
    assert (tables["address"].deleted, tables["merchant"].updated, tables["location"].inserted,
            tables["transaction"].inserted) == (1, 1, 1, 1)
    assert address not in bronze(cdc, "postgres.address")["addressid"].to_pylist()
    merchants = bronze(cdc, "postgres.merchant").to_pylist()
    assert next(m["name"] for m in merchants if m["merchantid"] == 1) == merchant_name
    transactions = bronze(cdc, "postgres.transaction")
    new = transactions.filter(pc.equal(transactions["transactionid"], transaction)).to_pylist()
    assert len(new) == 1 and new[0]["datetime"] == at and str(new[0]["amount"]) == "12.34"
    assert (new[0]["_source"], new[0]["_batch_id"]) == ("postgres:oltp.transaction", report.batch)
    assert location in bronze(cdc, "postgres.location")["locationid"].to_pylist()
    assert sorted(scored) == [("address", ["D"]), ("location", ["I"]), ("merchant", ["U"]), ("transaction", ["I"])]
    assert_bronze_equals_sources(cdc)
    assert caught_up(cdc, mark)
    assert lag(cdc, SLOT)[1] == 0.0


def test_crash_between_commit_and_slot_advance_replays_without_duplicates(cdc):
    write(cdc, "update oltp.merchant set name = name || ' again' where merchantid in (2, 3) returning 1",
          "delete from oltp.address where addressid = (select max(addressid) from oltp.address) returning 1",
          "insert into oltp.location (city, region, country, latitude, longitude)"
          " values ('Gent', 'Flanders', 'BE', 51.054300, 3.717400) returning 1")
    before = slot_position(cdc)
    with pytest.raises(PaylakeError, match="crash injected"):
        drain(cdc, slot=SLOT, crash_after_commit=True)
    assert slot_position(cdc) == before, "the slot advances only after the commit"
    assert_bronze_equals_sources(cdc)  # the Delta commit happened
    committed = versions(cdc)
    content = {t: bronze(cdc, t).drop_columns(["_extracted_at"]).sort_by(
        [(k, "ascending") for k in sources(cdc, [t])[0].keys]) for t in TABLES}

    replay = drain(cdc, slot=SLOT)

    assert replay.transactions == 1 and {t.replayed for t in replay.tables.values()} == {True}
    assert versions(cdc) == committed
    for table in TABLES:
        rows = bronze(cdc, table).drop_columns(["_extracted_at"]).sort_by(
            [(k, "ascending") for k in sources(cdc, [table])[0].keys])
        assert rows.equals(content[table]), table
    assert slot_position(cdc) > before


def test_drain_with_nothing_new_commits_nothing(cdc):
    committed = versions(cdc)
    report = drain(cdc, slot=SLOT)
    assert (report.transactions, report.tables) == (0, {})
    assert versions(cdc) == committed
    assert lag(cdc, SLOT)[1] == 0.0


def test_follow_drains_until_stopped(cdc):
    write(cdc, "update oltp.location set region = region || ' (cdc)' where locationid = 1 returning 1")
    seen = []
    total = follow(cdc, slot=SLOT, interval_s=0.1, stop_after_s=0.5, on_batch=seen.append)
    assert total.drains == len(seen) >= 2
    assert (total.transactions, total.tables["location"].updated) == (1, 1)
    assert_bronze_equals_sources(cdc)


def test_changes_of_a_table_without_bronze_ask_for_an_extract_first(cdc):
    write(cdc, "update oltp.device set os = os || ' 2' where deviceid = 1 returning 1")
    with pytest.raises(PaylakeError, match=r"paylake extract --only postgres\.device"):
        drain(cdc, slot=SLOT)
    extract(cdc, only=["postgres.device"])
    report = drain(cdc, slot=SLOT)
    assert report.tables["device"].updated == 1
    assert lag(cdc, SLOT)[1] == 0.0


def test_paylake_cdc_drains_past_a_flood_of_changes_outside_the_publication(cdc, monkeypatch):
    """A big transaction of tables the publication leaves out (e.g. a bulk job) fills several micro-batches:
    the command goes on until the slot reaches the WAL position of its start, the deletes behind included."""
    with postgres.connect(cdc, autocommit=True) as conn:
        conn.execute("create table if not exists public.bulk_scratch (id bigint primary key, note text)")
    write(cdc, "insert into public.bulk_scratch select g, 'x' from generate_series(1, 400) g"
               " on conflict (id) do update set note = excluded.note || '!' returning 1")
    (address,) = write(cdc, "delete from oltp.address where addressid = (select min(addressid) from oltp.address)"
                            " returning addressid")[0]
    for _ in range(2):  # more whole transactions than one 100-change window
        write(cdc, "update public.bulk_scratch set note = note || '.' returning 1")
    mark = flushed(cdc)

    result = run_cli(cdc, monkeypatch, "cdc", "--slot", SLOT, "--max-changes", "100")

    assert result.exit_code == 0, result.output
    drains = re.search(r"(\d+) micro-batch\(es\)", result.output)
    assert drains and int(drains[1]) >= 3, result.output  # 400 + 1 + 400 + 400 changes, 100 a window
    assert caught_up(cdc, mark)
    assert address not in bronze(cdc, "postgres.address")["addressid"].to_pylist()
    assert_bronze_equals_sources(cdc)


def test_paylake_cdc_stopped_early_exits_non_zero_and_a_rerun_goes_on(cdc, monkeypatch):
    for _ in range(3):
        write(cdc, "update oltp.location set region = region || '.' where locationid = 2 returning 1")
    mark = flushed(cdc)
    stopped = run_cli(cdc, monkeypatch, "cdc", "--slot", SLOT, "--max-changes", "1", "--max-seconds", "0")
    assert stopped.exit_code == 1
    assert "run 'paylake cdc' again" in " ".join(stopped.output.split())
    assert not caught_up(cdc, mark)
    again = run_cli(cdc, monkeypatch, "cdc", "--slot", SLOT)
    assert again.exit_code == 0, again.output
    assert caught_up(cdc, mark)
    assert_bronze_equals_sources(cdc)


def test_a_slot_name_of_another_database_is_refused(cdc, settings):
    with pytest.raises(PaylakeError, match="choose another --slot"):
        ensure_slot(settings, SLOT)


def test_the_default_slot_is_named_after_the_database_and_kept_by_later_extracts(cdc):
    assert default_slot(cdc) == SLOT
    again = extract(cdc, only=["postgres.merchant"])
    assert again.slot is not None and not again.slot.created
    assert again.tables[0].mode in ("incremental", "unchanged")


def test_a_delete_right_after_the_first_extract_reaches_bronze(cdc):
    (merchant,) = write(cdc, "insert into oltp.merchant (name, industry, size, country, locationid)"
                             " select 'Gone Soon', industry, size, country, locationid from oltp.merchant"
                             " order by merchantid limit 1 returning merchantid")[0]
    drain(cdc, slot=SLOT)
    assert merchant in bronze(cdc, "postgres.merchant")["merchantid"].to_pylist()
    write(cdc, f"delete from oltp.merchant where merchantid = {merchant} returning 1")
    extract(cdc, only=["postgres.merchant"])  # an increment cannot see a delete ...
    assert merchant in bronze(cdc, "postgres.merchant")["merchantid"].to_pylist()
    report = drain(cdc, slot=SLOT)  # ... the slot's stream does
    assert report.tables["merchant"].deleted == 1
    assert merchant not in bronze(cdc, "postgres.merchant")["merchantid"].to_pylist()
    assert_bronze_equals_sources(cdc)


def test_a_slot_created_after_bronze_exists_reloads_postgres_tables_whole(cdc):
    drain(cdc, slot=SLOT)
    drop_slot(cdc, SLOT)
    try:
        (address,) = write(cdc, "delete from oltp.address where addressid = (select min(addressid)"
                                " from oltp.address) returning addressid")[0]
        report = extract(cdc, only=["postgres.address"])  # the delete happened with no slot to record it
        assert report.slot is not None and report.slot.created
        assert report.tables[0].mode == "full"
        assert address not in bronze(cdc, "postgres.address")["addressid"].to_pylist()
        # a table the recreating run did not extract is still reconciled with the old slot: whole too
        assert extract(cdc, only=["postgres.merchant"]).tables[0].mode == "full"
        assert extract(cdc, only=["postgres.merchant"]).tables[0].mode in ("incremental", "unchanged")
    finally:
        ensure_slot(cdc, SLOT)
