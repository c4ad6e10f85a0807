"""Real transactions to show and load the service with: the latest payments of silver, as the API takes
them (ids, time as ISO text, amount; no PII)."""

from __future__ import annotations

import json
import shlex

from paylake.settings import Settings

FIELDS = ["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid", "locationid",
          "amount_eur"]


def recent_transactions(settings: Settings, n: int) -> list[dict]:
    from paylake.ml.fraud.feature_build import silver_connection

    con = silver_connection(settings)
    try:
        rows = con.execute(f"select {', '.join(FIELDS)} from events order by datetime desc, transactionid desc "
                           "limit ?", [n]).fetchall()
    finally:
        con.close()
    out = []
    for row in rows:
        txn = dict(zip(FIELDS, row))
        txn["datetime"] = txn["datetime"].isoformat()
        out.append({k: v for k, v in txn.items() if v is not None})
    return out


def latest_transaction(settings: Settings) -> dict:
    return recent_transactions(settings, 1)[0]


def curl(url: str, path: str, body: dict, key_hint: str = "$PAYLAKE_API_KEY") -> str:
    return (f"curl -s -X POST {url}{path} -H 'Content-Type: application/json' "
            f"-H \"Authorization: Bearer {key_hint}\" -d {shlex.quote(json.dumps(body))}")
