"""The star DDL read as data, its Arrow mapping, the holiday calendar and DIM_Date (pure logic)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from paylake.errors import ConfigError, ContractError
from paylake.warehouse import star_ddl
from paylake.warehouse.calendar import build_dim_date, date_key, easter_sunday, holidays
from paylake.warehouse.snowflake import arrow_totals, delete_replaced_sql, integrity_sql, merge_sql, totals_differ

DOSSIER_TABLES = ["DIM_Date", "DIM_Customer", "DIM_Merchant", "DIM_Location", "DIM_PaymentMethod", "DIM_Product",
                  "FACT_Revenue", "FACT_FraudAnalysis", "FACT_CustomerSegmentation", "FACT_ComplianceAudit"]

SAMPLE = """
-- a comment; with a semicolon
create table if not exists DIM_A (
    AKey integer not null comment 'surrogate, with a comma',
    Label varchar(20),
    Rate number(5, 4) not null,
    constraint PK_DIM_A primary key (AKey),
    constraint UQ_DIM_A unique (Label)
) comment = 'it''s a table; really';
create table if not exists FACT_B (
    DateKey integer not null,
    AKey number(38,0) not null,
    Amount number(18,2) not null,
    Seen timestamp_ntz,
    Ok boolean,
    Score float,
    Day date,
    constraint PK_FACT_B primary key (DateKey, AKey),
    constraint FK_FACT_B_A foreign key (AKey) references DIM_A (AKey)
);
"""


# ----------------------------------------------------------------------------- parsing
def test_parse_ddl_gives_columns_and_normalised_types():
    assert star_ddl.parse_ddl(SAMPLE) == {
        "DIM_A": [("AKey", "INTEGER"), ("Label", "VARCHAR(20)"), ("Rate", "NUMBER(5,4)")],
        "FACT_B": [("DateKey", "INTEGER"), ("AKey", "NUMBER(38,0)"), ("Amount", "NUMBER(18,2)"),
                   ("Seen", "TIMESTAMP_NTZ"), ("Ok", "BOOLEAN"), ("Score", "FLOAT"), ("Day", "DATE")],
    }


def test_parse_reads_keys_nullability_and_comments():
    tables = star_ddl.parse_tables(SAMPLE)
    dim, fact = tables["DIM_A"], tables["FACT_B"]
    assert dim.primary_key == ("AKey",) and dim.unique == (("Label",),)
    assert dim.comment == "it's a table; really"
    assert [c.nullable for c in dim.columns] == [False, True, False]
    assert fact.primary_key == ("DateKey", "AKey")
    assert fact.foreign_keys == (star_ddl.ForeignKey(("AKey",), "DIM_A", ("AKey",)),)


def test_statements_split_outside_string_literals_and_comments():
    statements = star_ddl.split_statements("select 'a;b'; -- x; y\nselect 2;")
    assert statements == ["select 'a;b'", "select 2"]


def test_a_table_without_primary_key_is_refused():
    with pytest.raises(ConfigError, match="no primary key"):
        star_ddl.parse_tables("create table if not exists T (A integer not null);")


def test_a_key_on_an_unknown_column_is_refused():
    with pytest.raises(ConfigError, match="not columns"):
        star_ddl.parse_tables("create table T (A integer, constraint PK primary key (B));")


# ----------------------------------------------------------------------------- Arrow mapping
@pytest.mark.parametrize(("sql_type", "arrow"), [
    ("INTEGER", pa.int64()), ("BIGINT", pa.int64()), ("NUMBER(38,0)", pa.int64()), ("NUMBER", pa.int64()),
    ("NUMBER(18,2)", pa.decimal128(18, 2)), ("NUMBER(5, 4)", pa.decimal128(5, 4)),
    ("DECIMAL(10,0)", pa.decimal128(10, 0)), ("VARCHAR", pa.string()), ("VARCHAR(2)", pa.string()),
    ("STRING", pa.string()), ("DATE", pa.date32()), ("TIMESTAMP_NTZ", pa.timestamp("us")),
    ("TIMESTAMP_NTZ(9)", pa.timestamp("us")), ("BOOLEAN", pa.bool_()), ("FLOAT", pa.float64()),
    ("DOUBLE", pa.float64()),
])
def test_snowflake_types_map_to_arrow(sql_type, arrow):
    assert star_ddl.arrow_type(sql_type) == arrow


@pytest.mark.parametrize("sql_type", ["VARIANT", "TIMESTAMP_TZ", "GEOGRAPHY"])
def test_unmapped_types_are_refused(sql_type):
    with pytest.raises(ConfigError, match="no Arrow mapping"):
        star_ddl.arrow_type(sql_type)


# ----------------------------------------------------------------------------- the star itself
def test_the_star_has_the_dossier_tables_dimensions_first():
    assert star_ddl.table_names() == DOSSIER_TABLES


def test_lookups_are_case_insensitive():
    assert star_ddl.star_table("fact_revenue").name == "FACT_Revenue"
    with pytest.raises(ConfigError, match="not a table of the star"):
        star_ddl.star_table("FACT_Nope")


def test_primary_keys_are_the_grain():
    assert star_ddl.primary_key("DIM_Customer") == ["CustomerKey"]
    assert star_ddl.primary_key("FACT_Revenue") == ["DateKey", "MerchantKey", "LocationKey", "ProductKey",
                                                    "PaymentMethodKey"]
    assert star_ddl.primary_key("FACT_CustomerSegmentation") == ["DateKey", "CustomerKey", "LocationKey"]
    assert star_ddl.primary_key("FACT_ComplianceAudit") == ["DateKey", "EventType", "Role"]


def test_every_fact_key_references_a_dimension_declared_before_it():
    names = star_ddl.table_names()
    for name in names:
        for fk in star_ddl.foreign_keys(name):
            assert names.index(fk.table) < names.index(name)
            assert list(fk.references) == star_ddl.primary_key(fk.table)
    assert {fk.table for fk in star_ddl.foreign_keys("FACT_FraudAnalysis")} == {
        "DIM_Date", "DIM_Customer", "DIM_Merchant", "DIM_Location", "DIM_PaymentMethod"}


def test_gold_arrow_schemas_follow_the_ddl():
    revenue = star_ddl.arrow_schema("FACT_Revenue")
    assert revenue.names == ["DateKey", "MerchantKey", "LocationKey", "ProductKey", "PaymentMethodKey", "Amount",
                             "TaxAmount", "FeeAmount", "RefundAmount", "TransactionCount"]
    assert revenue.field("Amount").type == pa.decimal128(18, 2)
    assert revenue.field("TransactionCount").type == pa.int64()
    customer = star_ddl.arrow_schema("DIM_Customer")
    assert customer.field("ValidFrom").type == pa.timestamp("us")
    assert customer.field("IsCurrent").type == pa.bool_()
    assert not customer.field("CustomerKey").nullable
    date = star_ddl.arrow_schema("DIM_Date")
    assert date.field("FullDate").type == pa.date32()
    assert date.field("HolidayCountries").nullable
    assert star_ddl.arrow_schema("DIM_Product").field("TaxRate").type == pa.decimal128(5, 4)


def test_no_pii_columns_in_the_star():
    columns = {c.lower() for name in star_ddl.table_names() for c in star_ddl.star_table(name).column_names}
    assert not columns & {"email", "emailhash", "fullname", "username", "street", "token", "last4", "password"}


# ----------------------------------------------------------------------------- conforming data
def test_conform_orders_casts_and_drops_extra_columns():
    data = pa.table({"name": ["Visa"], "paymentmethodkey": pa.array([7], pa.int32()), "Type": ["Credit Card"],
                     "extra": [1]})
    conformed = star_ddl.conform("DIM_PaymentMethod", data)
    assert conformed.schema == star_ddl.arrow_schema("DIM_PaymentMethod")
    assert conformed.to_pylist() == [{"PaymentMethodKey": 7, "Name": "Visa", "Type": "Credit Card"}]


def test_conform_turns_zoned_timestamps_into_utc_wall_time():
    paris = dt.timezone(dt.timedelta(hours=1))
    data = pa.table({"CustomerKey": [1], "CustomerID": [1], "Segment": ["basic"], "Country": ["FR"],
                     "SignupCohort": ["2026-01"],
                     "ValidFrom": pa.array([dt.datetime(2026, 1, 1, 1, 0, tzinfo=paris)], pa.timestamp("us", "UTC")),
                     "ValidTo": [dt.datetime(9999, 12, 31)], "IsCurrent": [True]})
    conformed = star_ddl.conform("DIM_Customer", data)
    assert conformed["ValidFrom"].to_pylist() == [dt.datetime(2026, 1, 1, 0, 0)]


def test_conform_refuses_missing_columns_and_nulls_in_not_null_columns():
    with pytest.raises(ContractError, match="lacks column"):
        star_ddl.conform("DIM_PaymentMethod", pa.table({"PaymentMethodKey": [1]}))
    with pytest.raises(ContractError, match="not null"):
        star_ddl.conform("DIM_PaymentMethod", pa.table({"PaymentMethodKey": [1], "Name": [None], "Type": ["x"]}))


def test_conform_refuses_amounts_that_do_not_fit():
    data = pa.table({"ProductKey": [1], "ProductID": [1], "Category": ["food"],
                     "TaxRate": pa.array([Decimal("0.12345")], pa.decimal128(6, 5))})
    with pytest.raises(ContractError, match="do not fit"):
        star_ddl.conform("DIM_Product", data)


def test_duplicates_counts_repeated_keys():
    data = pa.table({"a": [1, 1, 2, 3, 3, 3], "b": ["x", "x", "y", "z", "z", "w"]})
    count, sample = star_ddl.duplicates(data, ["a", "b"])
    assert count == 2 and {"a": 1, "b": "x"} in sample


# ----------------------------------------------------------------------------- load SQL (pure)
def test_merge_updates_only_changed_non_key_columns_and_never_natural_keys():
    sql = merge_sql(star_ddl.star_table("DIM_Merchant"), "DB.S.DIM_MERCHANT", "DB.S.DIM_MERCHANT_STAGING")
    assert "on t.MerchantKey = s.MerchantKey" in sql
    assert "t.Name is distinct from s.Name" in sql
    update = sql.split("then update set ")[1].split("\n")[0]
    assert "MerchantID" not in update and "MerchantKey" not in update
    assert "insert (MerchantKey, MerchantID, Name, Industry, Size, Country)" in sql


def test_merge_of_a_table_with_nothing_to_update_only_inserts():
    sql = merge_sql(star_ddl.star_table("DIM_PaymentMethod"), "T", "S")
    assert "when matched" not in sql and "when not matched then insert" in sql


def test_replaced_dates_delete_only_rows_missing_from_the_new_data():
    sql = delete_replaced_sql(star_ddl.star_table("FACT_CustomerSegmentation"), "DB.S.FACT_CUSTOMERSEGMENTATION",
                              "DB.S.FACT_CUSTOMERSEGMENTATION_STAGING", [20260101, 20260102])
    assert "DateKey in (20260101, 20260102)" in sql
    assert "s.CustomerKey = FACT_CUSTOMERSEGMENTATION.CustomerKey" in sql


def test_integrity_checks_each_foreign_key():
    sql, labels = integrity_sql(star_ddl.star_table("FACT_CustomerSegmentation"), "DB.S", "DB.S.STG")
    assert sql.count("not exists") == 3
    assert labels == ["DateKey not in DIM_Date", "CustomerKey not in DIM_Customer", "LocationKey not in DIM_Location"]
    assert integrity_sql(star_ddl.star_table("DIM_Date"), "DB.S", "DB.S.STG") is None


def test_totals_are_exact_for_decimals_and_big_keys():
    data = pa.table({"k": pa.array([2**62, 2**62], pa.int64()),
                     "amount": pa.array([Decimal("0.10"), Decimal("0.20")], pa.decimal128(18, 2))})
    totals = arrow_totals(data, ["k", "amount"])
    assert totals == {"rows": 2, "k": Decimal(2**63), "amount": Decimal("0.30")}
    assert not totals_differ(totals["amount"], Decimal("0.3"))
    assert totals_differ(totals["amount"], Decimal("0.31"))
    assert not totals_differ(0.1 + 0.2, 0.3)


# ----------------------------------------------------------------------------- calendar
@pytest.mark.parametrize(("year", "easter"), [(2024, dt.date(2024, 3, 31)), (2025, dt.date(2025, 4, 20)),
                                              (2026, dt.date(2026, 4, 5)), (2027, dt.date(2027, 3, 28)),
                                              (2038, dt.date(2038, 4, 25))])
def test_easter_sunday(year, easter):
    assert easter_sunday(year) == easter


def test_bastille_day_is_french_only():
    assert holidays(2026)[dt.date(2026, 7, 14)] == ["FR"]


def test_christmas_is_a_holiday_in_every_served_country():
    assert holidays(2026)[dt.date(2026, 12, 25)] == sorted(["FR", "DE", "GB", "US", "ES", "IT", "NL", "SE", "PL",
                                                            "CH"])


def test_easter_monday_2026():
    assert holidays(2026)[dt.date(2026, 4, 6)] == ["CH", "DE", "FR", "GB", "IT", "NL", "PL", "SE"]


def test_weekday_rules():
    found = holidays(2026)
    assert "US" in found[dt.date(2026, 11, 26)]  # Thanksgiving: fourth Thursday of November
    assert "US" in found[dt.date(2026, 1, 19)]  # Martin Luther King Jr. Day: third Monday of January
    assert "GB" in found[dt.date(2026, 5, 4)] and "GB" in found[dt.date(2026, 8, 31)]  # first / last Monday
    assert "SE" in found[dt.date(2026, 6, 20)]  # Midsummer Day: Saturday from 20 June
    assert "PL" in found[dt.date(2026, 6, 4)]  # Corpus Christi: Easter + 60


def test_holidays_from_a_given_year_only():
    assert dt.date(2020, 6, 19) not in holidays(2020)
    assert holidays(2021)[dt.date(2021, 6, 19)] == ["US"]
    assert dt.date(2024, 12, 24) not in holidays(2024)
    assert holidays(2025)[dt.date(2025, 12, 24)] == ["PL"]


def test_an_ordinary_day_is_no_holiday():
    assert dt.date(2026, 3, 10) not in holidays(2026)


def test_dim_date_covers_each_day_with_flags():
    dim = build_dim_date(dt.date(2025, 12, 30), dt.date(2026, 1, 5))
    assert dim.schema == star_ddl.arrow_schema("DIM_Date")
    rows = {row["DateKey"]: row for row in dim.to_pylist()}
    assert list(rows) == [20251230, 20251231, 20260101, 20260102, 20260103, 20260104, 20260105]
    assert [rows[k]["IsWeekend"] for k in rows] == [False, False, False, False, True, True, False]
    new_year = rows[20260101]
    assert new_year["IsHoliday"] and new_year["HolidayCountries"] == "CH,DE,ES,FR,GB,IT,NL,PL,SE,US"
    assert (new_year["Day"], new_year["Month"], new_year["Quarter"], new_year["Year"]) == (1, 1, 1, 2026)
    assert not rows[20260102]["IsHoliday"] and rows[20260102]["HolidayCountries"] is None
    assert rows[20251231]["Quarter"] == 4


def test_dim_date_of_a_whole_year():
    dim = build_dim_date(dt.date(2028, 1, 1), dt.date(2028, 12, 31))
    assert dim.num_rows == 366
    assert date_key(dt.date(2028, 2, 29)) in dim["DateKey"].to_pylist()
    assert sum(dim["IsWeekend"].to_pylist()) == 106  # 52 weeks, and 2028 starts on a Saturday


def test_dim_date_refuses_an_inverted_range():
    with pytest.raises(ValueError):
        build_dim_date(dt.date(2026, 2, 1), dt.date(2026, 1, 1))
