"""Real transactions to show and load the service with: the latest payments of silver, as the API takes
them (ids, time as ISO text, amount; no PII)."""

from __future__ import annotations

import datetime as dt
import json
import shlex

from paylake.settings import Settings

FIELDS = ["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid", "locationid",
          "amount_eur"]


def recent_transactions(settings: Settings, n: int, before: dt.datetime | None = None) -> list[dict]:
    """The ``n`` newest payments of silver (those before ``before`` when given: benchmarks draw from the
    generated world, not from payments another benchmark cloned a moment ago)."""
    from paylake.ml.fraud.feature_build import silver_connection

    con = silver_connection(settings)
    try:
        where = "where datetime < ?" if before is not None else ""
        rows = con.execute(f"select {', '.join(FIELDS)} from events {where} order by datetime desc, "
                           "transactionid desc limit ?", [*([before] if before is not None else []), n]).fetchall()
    finally:
        con.close()
    out = []
    for row in rows:
        txn = dict(zip(FIELDS, row))
        txn["datetime"] = txn["datetime"].isoformat()
        out.append({k: v for k, v in txn.items() if v is not None})
    return out


def generated_world_sample(settings: Settings, n: int) -> list[dict]:
    """The ``n`` newest payments of the generated world (``paylake seed``'s last day and before): what the
    benchmarks load the service with, not payments a benchmark cloned a moment ago."""
    from paylake.sources.generator import SeedSpec

    return recent_transactions(settings, n, dt.datetime.combine(SeedSpec.end + dt.timedelta(days=1), dt.time(),
                                                                dt.UTC))


def latest_transaction(settings: Settings) -> dict:
    return recent_transactions(settings, 1)[0]


def curl(url: str, path: str, body: dict, key_hint: str = "$PAYLAKE_API_KEY") -> str:
    return (f"curl -s -X POST {url}{path} -H 'Content-Type: application/json' "
            f"-H \"Authorization: Bearer {key_hint}\" -d {shlex.quote(json.dumps(body))}")
