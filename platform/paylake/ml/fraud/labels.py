"""Fraud labels from the status history, as known at the label snapshot.

A transaction is fraud when its status later reached ``fraudulent``, or
``disputed`` for a fraud reason (a cardholder not recognising the payment, an
item-not-received claim after a refund). ``confirmed_at`` is when that first
became known: features may use a label only after it (a merchant's past fraud
rate counts the frauds confirmed before the transaction).

**The snapshot.** Labels are known as of the *label snapshot*: the newest
status change that the last extraction brought into silver, not the newest
payment. It is never later than the extraction itself, and a label stream that
recorded nothing since (a stalled fraud-ops queue, a seed world whose clock
stopped) vouches for nothing after its last event, so the wall-clock time of
the extraction is not used.

**Maturity: one cut for every window.** Labels arrive days after the payment
(the generator's slowest, a collusion ring, up to 30 days; chargebacks in the
card networks' rules up to 120), so a payment younger than ``maturity`` at the
snapshot has an *unknown* label, not a legitimate one. Every row after
``snapshot - maturity`` leaves training, validation and test alike, confirmed
frauds included. Keeping the already-confirmed frauds of recent days (the
earlier rule) filled the last windows with frauds only, and with the quickly
confirmed kinds only (account takeovers, not collusion rings): a test window
with one class, AUC-PR 1.0 for any scorer, and a champion that can never be
beaten. The alternative, each window labelled as of its own end + maturity,
would let the test window use labels that arrived after the snapshot the model
is judged at; one cut is simpler and the same for all three.
"""

from __future__ import annotations

import datetime as dt

FRAUD_STATUS = "fraudulent"
FRAUD_DISPUTE_REASONS = ("cardholder does not recognise payment", "item not received claim after refund")
DEFAULT_MATURITY = dt.timedelta(days=30)  # covers the generator's slowest label (collusion rings: 10-30 days)

# silver status_change -> (transactionid, confirmed_at): the first fraud evidence per transaction
CONFIRMATIONS_SQL = f"""
    select transactionid, min(changed_at) as confirmed_at
    from status_change
    where to_status = '{FRAUD_STATUS}'
       or (to_status = 'disputed' and reason in ({", ".join(f"'{r}'" for r in FRAUD_DISPUTE_REASONS)}))
    group by transactionid"""

# the label snapshot: the newest status change extracted (a relation ``status_change`` of silver)
SNAPSHOT_SQL = "select max(changed_at) from status_change"


def labelled_sql(features: str, confirmations: str) -> str:
    """Rows of ``features`` (a relation with transactionid, datetime) matured at the snapshot, with
    ``label`` (1 fraud, 0 legitimate) and ``confirmed_at``. Named parameters: ``snapshot`` and
    ``cutoff`` (``snapshot - maturity``)."""
    return f"""
        select f.*, (c.confirmed_at is not null and c.confirmed_at <= $snapshot)::integer as label,
               c.confirmed_at
        from {features} f left join {confirmations} c using (transactionid)
        where f.datetime <= $cutoff"""
