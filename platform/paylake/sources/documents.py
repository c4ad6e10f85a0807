"""The MongoDB side of the synthetic world, built from the generated tables
(pure). Documents are assembled as nested Arrow columns and turned into dicts
by Arrow in one call, not field by field in Python."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from paylake.sources import reference as ref
from paylake.sources.generator import DAY_S, SeedData

RATING_MESSAGES = {
    1: "Terrible experience, I was charged for something I never bought.",
    2: "Disappointing service and slow support.",
    3: "It was okay, nothing special.",
    4: "Good service, fast payment.",
    5: "Excellent, smooth checkout and great products!",
}
EVENT_TYPES = np.array(["login", "view", "search", "add_to_cart", "checkout", "logout"])
PAGES = np.array(["/home", "/search", "/product", "/cart", "/checkout", "/account", "/offers"])


def _end_of(data: SeedData) -> dt.datetime:
    return dt.datetime.combine(data.spec.end, dt.time(23, 59, 59), dt.UTC)


def customer_documents(data: SeedData) -> list[dict]:
    customer = data.customer
    ids = customer["CustomerID"].to_numpy()
    first_device = _first_per_owner(data.device["CustomerID"].to_numpy(), data.device["DeviceType"], len(ids))
    first_pm = _first_per_owner(data.payment_method["CustomerID"].to_numpy(), data.payment_method["Type"], len(ids))
    currency_of = {c.code: c.currency for c in ref.COUNTRIES}
    country = customer["Country"].to_numpy(zero_copy_only=False)
    segment = customer["Segment"].to_numpy(zero_copy_only=False)
    extra = np.where(segment == "premium", "high_value", np.where(segment == "basic", "price_sensitive", "core"))
    segments = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * len(ids) + 1, 2, dtype=np.int32)),
                                        pa.array(np.column_stack([segment, extra]).ravel().astype(str)))
    table = pa.table({
        "_id": pa.array(ids),
        "segment": pa.array(segment.astype(str)),
        "preferences": pa.StructArray.from_arrays(
            [pa.array(first_device), pa.array(first_pm), pa.array([currency_of[c] for c in country])],
            names=["device", "paymentMethod", "currency"]),
        "segments": segments,
        "updatedAt": pa.array([_end_of(data)] * len(ids), pa.timestamp("ms", tz="UTC")),
    })
    return table.to_pylist()


def merchant_documents(data: SeedData) -> list[dict]:
    merchant = data.merchant
    n = merchant.num_rows
    industry = merchant["Industry"].to_numpy(zero_copy_only=False).astype(str)
    size = merchant["Size"].to_numpy(zero_copy_only=False).astype(str)
    tags = pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                    pa.array(np.column_stack([np.char.lower(industry), size]).ravel()))
    table = pa.table({
        "_id": merchant["MerchantID"], "name": merchant["Name"], "industry": merchant["Industry"],
        "size": merchant["Size"], "country": merchant["Country"], "tags": tags,
        "updatedAt": pa.array([_end_of(data)] * n, pa.timestamp("ms", tz="UTC")),
    })
    return table.to_pylist()


def review_documents(data: SeedData, rng: np.random.Generator, share: float = 0.02) -> list[dict]:
    """Reviews of a sample of purchases; victims of fraud rate their merchant low."""
    tx = data.transaction
    n = tx.num_rows
    rows = np.flatnonzero(rng.random(n) < share)
    rating = rng.choice([1, 2, 3, 4, 5], size=len(rows), p=[0.05, 0.07, 0.13, 0.35, 0.40])
    fraud = data.scenario[rows] != ""
    rating[fraud] = rng.choice([1, 2], size=int(fraud.sum()))
    seconds = tx["DateTime"].to_numpy().astype("datetime64[s]").astype(np.int64)[rows]
    at = np.minimum(seconds + rng.integers(DAY_S, 5 * DAY_S, len(rows)), int(_end_of(data).timestamp()))
    table = pa.table({
        "customerId": pa.array(tx["CustomerID"].to_numpy()[rows]),
        "merchantId": pa.array(tx["MerchantID"].to_numpy()[rows]),
        "rating": pa.array(rating.astype(np.int32)),
        "message": pa.array([RATING_MESSAGES[r] for r in range(1, 6)]).take(pa.array(rating - 1)),
        "timestamp": pa.array(at * 1000, pa.timestamp("ms", tz="UTC")),
    })
    return table.to_pylist()


def interaction_documents(data: SeedData, rng: np.random.Generator, max_sessions: int = 150_000) -> list[dict]:
    """Web/app sessions: device, start time and a few timed events each."""
    spec = data.spec
    sessions = min(max_sessions, max(1, spec.customers * spec.days // 20))
    devices = data.device.combine_chunks()
    pick = rng.integers(0, devices.num_rows, sessions)
    start_s = int(dt.datetime.combine(spec.start, dt.time(), dt.UTC).timestamp())
    started = start_s + rng.integers(0, spec.days * DAY_S, sessions)
    counts = rng.integers(3, 9, sessions)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    owner = np.repeat(np.arange(sessions), counts)
    event_at = started[owner] + np.cumsum(rng.integers(5, 120, len(owner)))
    events = pa.StructArray.from_arrays(
        [pa.array(rng.choice(EVENT_TYPES, len(owner))), pa.array(event_at * 1000, pa.timestamp("ms", tz="UTC")),
         pa.array(rng.choice(PAGES, len(owner)))], names=["type", "at", "page"])
    session_ids = np.char.add("s-", np.char.zfill(np.arange(1, sessions + 1).astype(str), 9))
    table = pa.table({
        "customerId": devices["CustomerID"].take(pa.array(pick)),
        "sessionId": pa.array(session_ids),
        "device": pa.StructArray.from_arrays([devices["OS"].chunk(0).take(pa.array(pick)),
                                              devices["DeviceType"].chunk(0).take(pa.array(pick))],
                                             names=["os", "type"]),
        "startedAt": pa.array(started * 1000, pa.timestamp("ms", tz="UTC")),
        "events": pa.ListArray.from_arrays(pa.array(offsets), events),
    })
    return table.to_pylist()


def _first_per_owner(owner_ids: np.ndarray, values: pa.ChunkedArray, n_owners: int) -> list[str]:
    """The first value per owner id (1..n), rows being grouped by owner."""
    first_row = np.full(n_owners, -1)
    unique, index = np.unique(owner_ids, return_index=True)
    first_row[unique - 1] = index
    return values.take(pa.array(first_row)).to_pylist()
