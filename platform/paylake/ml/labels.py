"""Fraud labels from the status history, as known at a point in (data) time.

A transaction is fraud when its status later reached ``fraudulent``, or
``disputed`` for a fraud reason (a cardholder not recognising the payment, an
item-not-received claim after a refund). ``confirmed_at`` is when that first
became known: features may use a label only after it (a merchant's past fraud
rate counts the frauds confirmed before the transaction).

Label maturity: labels arrive days after the payment, so a recent transaction
with no fraud status yet is *unknown*, not legitimate. A transaction younger
than ``maturity`` at ``as_of`` is used only if it is already a confirmed fraud.
"""

from __future__ import annotations

import datetime as dt

FRAUD_STATUS = "fraudulent"
FRAUD_DISPUTE_REASONS = ("cardholder does not recognise payment", "item not received claim after refund")
DEFAULT_MATURITY = dt.timedelta(days=30)

# silver status_change -> (transactionid, confirmed_at): the first fraud evidence per transaction
CONFIRMATIONS_SQL = f"""
    select transactionid, min(changed_at) as confirmed_at
    from status_change
    where to_status = '{FRAUD_STATUS}'
       or (to_status = 'disputed' and reason in ({", ".join(f"'{r}'" for r in FRAUD_DISPUTE_REASONS)}))
    group by transactionid"""


def labelled_sql(features: str, confirmations: str, as_of: dt.datetime, maturity: dt.timedelta) -> str:
    """Rows of ``features`` (a relation with transactionid, datetime) usable for
    training at ``as_of``, with ``label`` (1 fraud, 0 legitimate) and ``confirmed_at``."""
    cutoff = (as_of - maturity).replace(tzinfo=None).isoformat(sep=" ")
    known = as_of.replace(tzinfo=None).isoformat(sep=" ")
    return f"""
        select f.*, (c.confirmed_at is not null and c.confirmed_at <= TIMESTAMPTZ '{known}+00')::integer as label,
               c.confirmed_at
        from {features} f left join {confirmations} c using (transactionid)
        where (c.confirmed_at is not null and c.confirmed_at <= TIMESTAMPTZ '{known}+00')
           or f.datetime <= TIMESTAMPTZ '{cutoff}+00'"""
