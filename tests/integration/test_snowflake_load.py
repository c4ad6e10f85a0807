"""The star schema in the local Snowflake (fakesnow server): DDL, loads, reconciliation, the business queries."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from paylake.errors import ContractError
from paylake.stores import snowflake as snowflake_store
from paylake.warehouse import snowflake as warehouse
from paylake.warehouse.calendar import build_dim_date
from paylake.warehouse.queries import list_queries, run_query
from paylake.warehouse.star_ddl import arrow_schema, table_names

DATABASE = "ANALYTICS_LOADTEST"
OPEN_END = dt.datetime(9999, 12, 31)


def star_rows(table: str, rows: list[tuple]) -> pa.Table:
    """A gold table from tuples in DDL column order."""
    schema = arrow_schema(table)
    return pa.Table.from_pylist([dict(zip(schema.names, row)) for row in rows], schema=schema)


def d(text: str) -> Decimal:
    return Decimal(text)


# A hand-made star: merchants 1 and 4 are Retail in France, 1 and 2 are small;
# customer 100 was standard until 2026-03-01, then premium (SCD2 keys 1000, 1001).
STAR = {
    "DIM_Merchant": [(1, 501, "Boulangerie", "Retail", "small", "FR"), (2, 502, "Kaufhaus", "Retail", "small", "DE"),
                     (3, 503, "Voyages", "Travel", "large", "FR"), (4, 504, "Hypermarché", "Retail", "large", "FR")],
    "DIM_Location": [(1, 601, "Paris", "Île-de-France", "FR"), (2, 602, "Berlin", "Berlin", "DE")],
    "DIM_Product": [(1, 701, "food", d("0.0550")), (2, 702, "clothing", d("0.2000"))],
    "DIM_PaymentMethod": [(10, "Visa", "Credit Card"), (11, "Visa", "Debit Card"), (12, "Wallet", "Wallet")],
    "DIM_Customer": [
        (1000, 100, "standard", "FR", "2024-06", dt.datetime(2024, 6, 1), dt.datetime(2026, 3, 1), False),
        (1001, 100, "premium", "FR", "2024-06", dt.datetime(2026, 3, 1), OPEN_END, True),
        (1010, 101, "premium", "FR", "2025-01", dt.datetime(2025, 1, 10), OPEN_END, True),
        (1020, 102, "premium", "DE", "2025-02", dt.datetime(2025, 2, 1), OPEN_END, True),
    ],
    "FACT_Revenue": [
        (20251215, 4, 1, 2, 10, d("20.00"), d("4.00"), d("0.40"), d("0"), 1),
        (20260105, 1, 1, 1, 10, d("20.00"), d("1.10"), d("0.30"), d("0"), 2),
        (20260120, 4, 1, 2, 12, d("11.00"), d("2.20"), d("0.20"), d("0"), 1),
        (20260105, 2, 2, 1, 10, d("50.00"), d("9.99"), d("1.00"), d("0"), 3),
        (20260105, 3, 1, 2, 11, d("80.00"), d("7.77"), d("1.60"), d("10.00"), 1),
        (20260210, 1, 1, 1, 11, d("9.09"), d("0.50"), d("0.10"), d("0"), 1),
    ],
    "FACT_FraudAnalysis": [
        (20260105, 1010, 1, 1, 10, 2, d("30.00"), 5),
        (20260105, 1020, 2, 2, 10, 1, d("10.00"), 1),
        (20260105, 1010, 3, 1, 10, 4, d("99.00"), 4),
        (20260106, 1001, 1, 1, 11, 5, d("50.00"), 5),
        (20260107, 1000, 2, 2, 10, 1, d("5.00"), 2),
        (20260107, 1010, 1, 1, 12, 3, d("7.00"), 3),
        (20260108, 1020, 1, 1, 10, 0, d("0.00"), 7),
    ],
    "FACT_CustomerSegmentation": [
        (20250615, 1000, 1, 2, d("100.00")),
        (20260110, 1000, 1, 1, d("40.00")),
        (20260315, 1001, 1, 3, d("300.00")),
        (20250320, 1010, 1, 1, d("25.50")),
        (20260401, 1010, 2, 2, d("60.25")),
        (20260401, 1020, 2, 4, d("999.00")),
    ],
    "FACT_ComplianceAudit": [
        (20260105, "db_session", "paylake_readonly", 3, 120, 1),
        (20260105, "db_session", "paylake_admin", 1, 10, 0),
    ],
}


def execute(settings, sql: str) -> list[tuple]:
    with snowflake_store.connect(settings) as conn:
        cursor = conn.cursor()
        cursor.execute(sql)
        return cursor.fetchall()


def count(settings, table: str, where: str = "") -> int:
    (row,) = execute(settings, f"select count(*) from {DATABASE}.STAR.{table} {where}")
    return row[0]


@pytest.fixture(scope="module")
def star(settings):
    """A fresh star schema in its own database, the hand-made star loaded.
    Returns (settings, the actions of the first and second apply_ddl, the data, the rows counted after the load)."""
    loadtest = settings.model_copy(update={"snowflake_database": DATABASE})
    with snowflake_store.connect(loadtest, with_database=False) as conn:
        cursor = conn.cursor()
        cursor.execute(f"create database if not exists {DATABASE}")
        cursor.execute(f"drop schema if exists {DATABASE}.STAR cascade")
    first = warehouse.apply_ddl(loadtest)
    second = warehouse.apply_ddl(loadtest)
    data = {"DIM_Date": build_dim_date(dt.date(2025, 1, 1), dt.date(2026, 12, 31))}
    data.update({name: star_rows(name, rows) for name, rows in STAR.items()})
    for name in table_names():
        warehouse.load_table(loadtest, name, data[name], load_id="initial")
        warehouse.reconcile(loadtest, name, data[name])
    loaded = {name: count(loadtest, name) for name in table_names()}
    return loadtest, first, second, data, loaded


# ----------------------------------------------------------------------------- DDL
def test_apply_ddl_creates_every_table_then_nothing(star):
    _, first, second, _, _ = star
    assert first == [f"created schema {DATABASE}.STAR"] + [f"created table {DATABASE}.STAR.{t.upper()}"
                                                           for t in table_names()]
    assert second == []


def test_tables_have_the_ddl_types_and_comments(star):
    settings = star[0]
    columns = execute(settings, "select column_name, data_type, numeric_precision, numeric_scale "
                                f"from {DATABASE}.information_schema.columns where table_name = 'FACT_REVENUE' "
                                "and table_schema = 'STAR' order by ordinal_position")
    assert columns[0][:2] == ("DATEKEY", "NUMBER")
    assert ("AMOUNT", "NUMBER", 18, 2) in columns
    (comment,) = execute(settings, f"select comment from {DATABASE}.information_schema.tables "
                                   "where table_schema = 'STAR' and table_name = 'DIM_CUSTOMER'")
    assert "type 2" in comment[0]


# ----------------------------------------------------------------------------- loads
def test_every_table_holds_the_loaded_rows(star):
    _, _, _, data, loaded = star
    assert loaded == {name: data[name].num_rows for name in table_names()}


def test_rerun_of_the_same_load_changes_nothing(star):
    settings, _, _, data, _ = star
    for name, load_id in (("DIM_Merchant", "initial"), ("FACT_Revenue", "initial"), ("FACT_Revenue", "rerun")):
        result = warehouse.load_table(settings, name, data[name], load_id=load_id)
        assert (result.rows_staged, result.inserted, result.updated, result.deleted) == (
            data[name].num_rows, 0, 0, 0), name
        assert count(settings, name) == data[name].num_rows
        warehouse.reconcile(settings, name, data[name])


def test_changed_values_are_updated_and_new_rows_inserted(star):
    settings = star[0]
    products = star_rows("DIM_Product", [(1, 701, "groceries", d("0.0550")), (2, 702, "clothing", d("0.2000")),
                                         (3, 703, "books", d("0.0550"))])
    result = warehouse.load_table(settings, "DIM_Product", products, load_id="product-change")
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 0)
    assert execute(settings, f"select Category from {DATABASE}.STAR.DIM_Product where ProductKey = 1") == [
        ("groceries",)]
    warehouse.reconcile(settings, "DIM_Product", products)
    again = warehouse.load_table(settings, "DIM_Product", products, load_id="product-change")
    assert (again.inserted, again.updated) == (0, 0)


def test_an_scd2_version_closing_updates_the_old_row_and_adds_the_new(star):
    settings = star[0]
    rows = list(STAR["DIM_Customer"])
    rows[2] = (1010, 101, "premium", "FR", "2025-01", dt.datetime(2025, 1, 10), dt.datetime(2026, 6, 1), False)
    rows.append((1011, 101, "basic", "FR", "2025-01", dt.datetime(2026, 6, 1), OPEN_END, True))
    customers = star_rows("DIM_Customer", rows)
    result = warehouse.load_table(settings, "DIM_Customer", customers, load_id="scd2")
    assert (result.inserted, result.updated) == (1, 1)
    assert execute(settings, f"select CustomerKey, ValidTo, IsCurrent from {DATABASE}.STAR.DIM_Customer "
                             "where CustomerID = 101 order by ValidFrom") == [
        (1010, dt.datetime(2026, 6, 1), False), (1011, OPEN_END, True)]
    warehouse.reconcile(settings, "DIM_Customer", customers)


def test_replace_dates_removes_the_rows_missing_from_the_new_data(star):
    settings = star[0]
    audit = "FACT_ComplianceAudit"
    first = star_rows(audit, [(20260301, "db_session", "analyst", 3, 30, 0),
                              (20260301, "db_session", "admin", 1, 5, 0),
                              (20260301, "export", "analyst", 1, 1, 1),
                              (20260302, "db_session", "analyst", 2, 20, 0)])
    warehouse.load_table(settings, audit, first, load_id="audit-1", replace_dates=[20260301, 20260302])
    replacement = star_rows(audit, [(20260301, "db_session", "analyst", 4, 31, 0),
                                    (20260301, "scan", "admin", 1, 900, 1)])
    result = warehouse.load_table(settings, audit, replacement, load_id="audit-2", replace_dates=[20260301])
    assert (result.inserted, result.updated, result.deleted) == (1, 1, 2)
    assert execute(settings, f"select EventType, Role, EventCount from {DATABASE}.STAR.{audit} "
                             "where DateKey = 20260301 order by EventType, Role") == [
        ("db_session", "analyst", 4), ("scan", "admin", 1)]
    assert count(settings, audit, "where DateKey = 20260302") == 1
    warehouse.reconcile(settings, audit, replacement, replace_dates=[20260301])
    again = warehouse.load_table(settings, audit, replacement, load_id="audit-2", replace_dates=[20260301])
    assert (again.inserted, again.updated, again.deleted) == (0, 0, 0)


def test_replacing_a_date_with_no_rows_empties_it(star):
    settings = star[0]
    audit = "FACT_ComplianceAudit"
    warehouse.load_table(settings, audit, star_rows(audit, [(20260305, "db_session", "analyst", 1, 1, 0)]),
                         load_id="empty-1", replace_dates=[20260305])
    nothing = star_rows(audit, [])
    result = warehouse.load_table(settings, audit, nothing, load_id="empty-2", replace_dates=[20260305])
    assert (result.rows_staged, result.inserted, result.updated, result.deleted) == (0, 0, 0, 1)
    assert count(settings, audit, "where DateKey = 20260305") == 0
    warehouse.reconcile(settings, audit, nothing, replace_dates=[20260305])

def test_a_failure_inside_the_transaction_rolls_the_merge_back(star, monkeypatch):
    settings = star[0]
    audit = "FACT_ComplianceAudit"
    base = star_rows(audit, [(20260310, "db_session", "analyst", 1, 1, 0)])
    warehouse.load_table(settings, audit, base, load_id="tx-1", replace_dates=[20260310])
    monkeypatch.setattr(warehouse, "delete_replaced_sql", lambda *args: f"delete from {DATABASE}.STAR.NO_SUCH_TABLE")
    changed = star_rows(audit, [(20260310, "db_session", "analyst", 7, 7, 0),
                                (20260310, "export", "analyst", 1, 1, 1)])
    with pytest.raises(warehouse.WarehouseError, match="delete the replaced dates"):
        warehouse.load_table(settings, audit, changed, load_id="tx-2", replace_dates=[20260310])
    assert execute(settings, f"select EventType, EventCount from {DATABASE}.STAR.{audit} "
                             "where DateKey = 20260310") == [("db_session", 1)]


def test_reconcile_detects_a_row_deleted_behind_the_loader(star):
    settings = star[0]
    audit = "FACT_ComplianceAudit"
    rows = star_rows(audit, [(20260320, "db_session", "analyst", 2, 8, 0),
                             (20260320, "db_session", "admin", 1, 3, 1)])
    warehouse.load_table(settings, audit, rows, load_id="recon", replace_dates=[20260320])
    warehouse.reconcile(settings, audit, rows, replace_dates=[20260320])
    execute(settings, f"delete from {DATABASE}.STAR.{audit} where DateKey = 20260320 and Role = 'admin'")
    with pytest.raises(warehouse.ReconciliationError, match=r"rows 2 in the data vs 1 in Snowflake") as failure:
        warehouse.reconcile(settings, audit, rows, replace_dates=[20260320])
    assert "sum(PolicyViolationCount) 1 in the data vs 0 in Snowflake" in str(failure.value)
    repaired = warehouse.load_table(settings, audit, rows, load_id="recon", replace_dates=[20260320])
    assert repaired.inserted == 1
    warehouse.reconcile(settings, audit, rows, replace_dates=[20260320])


def test_a_fact_referencing_a_missing_dimension_row_is_refused(star):
    settings = star[0]
    orphan = star_rows("FACT_CustomerSegmentation", [(20260105, 999999, 1, 1, d("1.00"))])
    with pytest.raises(ContractError, match="CustomerKey not in DIM_Customer"):
        warehouse.load_table(settings, "FACT_CustomerSegmentation", orphan, load_id="orphan")
    assert count(settings, "FACT_CustomerSegmentation", "where CustomerKey = 999999") == 0


def test_a_changed_natural_key_for_a_surrogate_key_is_refused(star):
    settings = star[0]
    moved = star_rows("DIM_Location", [(1, 699, "Paris", "Île-de-France", "FR")])
    with pytest.raises(ContractError, match="natural key"):
        warehouse.load_table(settings, "DIM_Location", moved, load_id="moved")


def test_duplicate_keys_are_refused_before_anything_is_sent(star):
    settings = star[0]
    twice = star_rows("DIM_Location", [(9, 609, "Lyon", "Auvergne-Rhône-Alpes", "FR"),
                                       (9, 609, "Lyon", "Auvergne-Rhône-Alpes", "FR")])
    with pytest.raises(ContractError, match="more than once"):
        warehouse.load_table(settings, "DIM_Location", twice, load_id="twice")
    assert count(settings, "DIM_Location", "where LocationKey = 9") == 0


def test_loaded_files_do_not_stay_on_the_stage(star):
    settings = star[0]
    assert execute(settings, f"list @{DATABASE}.STAR.{warehouse.STAGE_NAME}") == []


# ----------------------------------------------------------------------------- the business queries
def test_the_three_queries_are_listed():
    assert list_queries() == ["daily_credit_card_fraud_small_merchants", "monthly_tax_retail_france",
                              "yearly_spend_premium_france"]


def test_monthly_tax_of_retail_merchants_in_france(star):
    result = run_query(star[0], "monthly_tax_retail_france")
    assert result.column_names == ["YEAR", "MONTH", "TAXAMOUNT"]
    assert [tuple(r.values()) for r in result.to_pylist()] == [
        (2025, 12, d("4.00")), (2026, 1, d("3.30")), (2026, 2, d("0.50"))]


def test_daily_credit_card_fraud_at_small_merchants(star):
    result = run_query(star[0], "daily_credit_card_fraud_small_merchants")
    assert [tuple(r.values()) for r in result.to_pylist()] == [
        (dt.date(2026, 1, 5), 3), (dt.date(2026, 1, 7), 1), (dt.date(2026, 1, 8), 0)]


def test_yearly_spend_counts_customers_while_premium_in_france(star):
    result = run_query(star[0], "yearly_spend_premium_france")
    # customer 100's spending while standard (2025: 100.00, 2026-01: 40.00) is not premium spending
    assert [tuple(r.values()) for r in result.to_pylist()] == [(2025, d("25.50")), (2026, d("360.25"))]
