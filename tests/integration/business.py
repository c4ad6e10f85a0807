"""The three business questions, asked of Snowflake (the star) and of PostgreSQL
(the OLTP truth), in one comparable shape: tests assert the two are equal."""

from __future__ import annotations

from paylake.stores import postgres
from paylake.warehouse.queries import run_query

CAPTURED = "s.name not in ('failed', 'pending')"

SOURCE_SQL = {
    "monthly_tax_retail_france": f"""
        select extract(year from t.datetime at time zone 'UTC')::int, extract(month from t.datetime at time zone
               'UTC')::int, sum(round(t.taxamount * c.ratetoeur, 2))
        from oltp.transaction t join oltp.merchant m using (merchantid) join oltp.currency c using (currencycode)
        join oltp.transactionstatus s using (statusid)
        where m.industry = 'Retail' and m.country = 'FR' and {CAPTURED} group by 1, 2 order by 1, 2""",
    "daily_credit_card_fraud_small_merchants": """
        select (t.datetime at time zone 'UTC')::date, count(*)
        from oltp.transaction t join oltp.merchant m using (merchantid) join oltp.paymentmethod p
             using (paymentmethodid) join oltp.transactionstatus s using (statusid)
        where p.type = 'Credit Card' and m.size = 'small' and s.name in ('fraudulent', 'disputed')
        group by 1 order by 1""",
    # customers' current segment: equal to the star's SCD2 answer while no customer changed segment
    "yearly_spend_premium_france": f"""
        select extract(year from t.datetime at time zone 'UTC')::int, sum(round(t.amount * c.ratetoeur, 2))
        from oltp.transaction t join oltp.customer k using (customerid) join oltp.currency c using (currencycode)
        join oltp.transactionstatus s using (statusid)
        where k.segment = 'premium' and k.country = 'FR' and {CAPTURED} group by 1 order by 1""",
}


def source_answer(settings, name: str) -> list[tuple]:
    with postgres.connect(settings) as conn:
        return [tuple(r) for r in conn.execute(SOURCE_SQL[name]).fetchall()]


def warehouse_answer(settings, name: str) -> list[tuple]:
    rows = run_query(settings, name).to_pylist()
    if name == "monthly_tax_retail_france":
        return [(r["YEAR"], r["MONTH"], r["TAXAMOUNT"]) for r in rows]
    if name == "daily_credit_card_fraud_small_merchants":  # the star lists days without fraud too
        return [(r["FULLDATE"], r["FRAUDCOUNT"]) for r in rows if r["FRAUDCOUNT"]]
    return [(r["YEAR"], r["TOTALSPENT"]) for r in rows]


def answers_differ(settings) -> dict[str, tuple[list, list]]:
    """{question: (PostgreSQL's answer, Snowflake's)} for every question whose answers differ."""
    differ = {}
    for name in SOURCE_SQL:
        expected, actual = source_answer(settings, name), warehouse_answer(settings, name)
        if expected != actual:
            differ[name] = (expected, actual)
    return differ
