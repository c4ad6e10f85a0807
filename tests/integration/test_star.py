"""Silver, the gold star schema and the Snowflake load, end to end on the local stack.

The tests of this module run in order on one pipeline: build, check, change the
source, rebuild incrementally, check again."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import uuid

import pyarrow as pa
import pytest

from paylake import contracts
from paylake.extract.run import extract
from paylake.sources import reference
from paylake.sources.generator import SCALES
from paylake.sources.migrate import isolated_sources
from paylake.sources.seed import seed
from paylake.stores import lake, postgres
from paylake.stores import snowflake as snowflake_store
from paylake.transform.silver import ENTITIES, build_silver
from paylake.transform.star import build_star
from paylake.warehouse import star_ddl
from paylake.warehouse.load import load_star
from tests.integration.business import SOURCE_SQL, source_answer, warehouse_answer


def run_all(settings):
    extract(settings)
    build_silver(settings)
    gold = {r.table: r for r in build_star(settings)}
    loads = {r.table: r for r in load_star(settings)}
    return gold, loads


@pytest.fixture(scope="module")
def star(settings, ray_cluster, tmp_path_factory):
    isolated = isolated_sources(settings, "paylake_star")
    seed(isolated, dataclasses.replace(SCALES["tiny"], log_sessions=8))
    with postgres.connect(isolated) as conn:  # the tiny world may lack them: the queries need French retailers
        conn.execute("update oltp.merchant set industry = 'Retail', country = 'FR' where merchantid in"
                     " (select merchantid from oltp.transaction group by 1 order by count(*) desc limit 3)")
    database = f"ANALYTICS_STAR_{uuid.uuid4().hex[:6].upper()}"
    configured = isolated.model_copy(update={"lake_root": str(tmp_path_factory.mktemp("lake")),
                                             "snowflake_database": database})
    gold, loads = run_all(configured)
    return {"settings": configured, "gold": gold, "loads": loads}


def pg(settings, sql, *params):
    with postgres.connect(settings) as conn:
        return conn.execute(sql, params).fetchall()


def test_gold_tables_have_exactly_the_ddl_columns_and_types(star):
    settings = star["settings"]
    for table in star_ddl.table_names():
        schema = lake.read_table(settings, contracts.gold(table).uri(settings)).schema
        expected = star_ddl.arrow_schema(table)
        assert [(f.name, f.type) for f in schema] == [(f.name, f.type) for f in expected], table


def test_every_table_was_loaded_and_reconciled(star):
    for table in star_ddl.table_names():
        assert star["loads"][table].state.startswith("loaded"), table
    settings = star["settings"]
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        for table in ("FACT_Revenue", "DIM_Customer"):
            cur.execute(f"select count(*) from {settings.snowflake_database}.STAR.{table}")
            assert cur.fetchone()[0] == lake.read_table(settings, contracts.gold(table).uri(settings)).num_rows


@pytest.mark.parametrize("question", list(SOURCE_SQL))
def test_business_answers_equal_the_source(star, question):
    settings = star["settings"]
    expected = source_answer(settings, question)
    assert expected, "the tiny world has an answer to every question"
    assert warehouse_answer(settings, question) == expected


# Keyed hashes (``*_key``) are pseudonyms, the point of silver: allowed.
PII_COLUMN = re.compile(r"^(?!.*_key$).*(email|fullname|password|street|token|fingerprint|address)", re.I)


def test_no_clear_pii_in_silver_gold_or_snowflake(star):
    settings = star["settings"]
    from paylake.security import keys

    emails = {v["email"] for v in keys.reveal_customers(settings, range(1, 51)).values()}
    names = {f"{f} {last}" for f in reference.FIRST_NAMES for last in reference.LAST_NAMES}
    texts: set[str] = set()
    uris = [contracts.gold(t).uri(settings) for t in star_ddl.table_names()] + [contracts.silver(e.name).uri(settings) for e in ENTITIES]
    for uri in uris:
        data = lake.read_table(settings, uri)
        assert not [c for c in data.column_names if PII_COLUMN.search(c)], uri
        for column in data.columns:
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                texts |= set(column.drop_null().unique().to_pylist())
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        cur.execute(f"select table_name, column_name from {settings.snowflake_database}.information_schema.columns"
                    " where data_type like 'TEXT%' or data_type like 'VARCHAR%'")
        for table, column in cur.fetchall():
            assert not PII_COLUMN.search(column), (table, column)
            cur.execute(f"select distinct {column} from {settings.snowflake_database}.STAR.{table}")
            texts |= {r[0] for r in cur.fetchall() if r[0]}
    assert emails and not texts & emails
    assert not any("@" in t for t in texts)
    assert not texts & names


def test_scd2_keeps_the_old_version_when_a_segment_changes(star):
    settings = star["settings"]
    customer_id, segment = pg(settings, "select customerid, segment from oltp.customer where segment <> 'premium'"
                                        " order by customerid limit 1")[0]
    with postgres.connect(settings) as conn:
        conn.execute("update oltp.customer set segment = 'premium' where customerid = %s", (customer_id,))
    star["changed_customer"] = customer_id
    gold, _ = run_all(settings)
    assert "1 SCD2 change" in gold["DIM_Customer"].state
    dim = lake.read_table(settings, contracts.gold("DIM_Customer").uri(settings)).to_pylist()
    versions = sorted((r for r in dim if r["CustomerID"] == customer_id), key=lambda r: r["ValidFrom"])
    assert [(v["Segment"], v["IsCurrent"]) for v in versions] == [(segment, False), ("premium", True)]
    assert versions[0]["ValidTo"] == versions[1]["ValidFrom"]
    assert versions[1]["ValidTo"] == dt.datetime(9999, 12, 31)
    facts = lake.read_table(settings, contracts.gold("FACT_CustomerSegmentation").uri(settings)).to_pylist()
    keys = {f["CustomerKey"] for f in facts}
    assert versions[0]["CustomerKey"] in keys, "past facts keep the version valid at their time"


def test_incremental_rebuild_replaces_only_the_touched_dates(star):
    settings = star["settings"]
    before = lake.read_table(settings, contracts.gold("FACT_Revenue").uri(settings))
    txid, when = pg(settings, "select transactionid, datetime from oltp.transaction t join oltp.transactionstatus"
                              " s using (statusid) where s.name = 'succeeded' order by transactionid limit 1")[0]
    with postgres.connect(settings) as conn:
        conn.execute("select oltp.change_transaction_status(%s, %s, 'refunded', 'customer return', 'test')",
                     (txid, when))
    date_key = int(when.astimezone(dt.UTC).strftime("%Y%m%d"))
    gold, loads = run_all(settings)
    assert gold["FACT_Revenue"].state == "replaced 1 date(s)"
    assert loads["FACT_Revenue"].state == "loaded 1 date(s)"
    assert loads["FACT_Revenue"].updated >= 1
    after = lake.read_table(settings, contracts.gold("FACT_Revenue").uri(settings))
    other = pa.compute.not_equal(before["DateKey"], date_key)
    other_after = pa.compute.not_equal(after["DateKey"], date_key)
    assert after.filter(other_after).sort_by([(c, "ascending") for c in star_ddl.primary_key("FACT_Revenue")]) \
        .equals(before.filter(other).sort_by([(c, "ascending") for c in star_ddl.primary_key("FACT_Revenue")]))
    refunds = after.filter(pa.compute.equal(after["DateKey"], date_key))["RefundAmount"]
    assert pa.compute.sum(refunds).as_py() > 0


def test_a_second_load_loads_nothing(star):
    settings = star["settings"]
    results = load_star(settings)
    assert {r.state for r in results} == {"unchanged"}
    assert {r.table for r in build_star(settings) if r.state != "unchanged"} == set()
