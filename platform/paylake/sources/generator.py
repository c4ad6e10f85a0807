"""The synthetic payments world, generated as Arrow tables (pure, no I/O).

Same spec and seed, same data. Everything is vectorised with numpy: a loop
runs over countries, scenarios or fraud events, never over transactions.

Fraud is something a model has to learn, not read off a flag: card-testing
bursts, account takeovers, merchant collusion rings and refund abuse are
injected as ordinary-looking transactions; their labels arrive later as
status changes (chargebacks), and only when they would have arrived by the end
of the generated period.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from paylake.sources import reference as ref

DAY_S = 86_400
STATUS_ID = {"pending": 1, "succeeded": 2, "failed": 3, "refunded": 4, "disputed": 5, "fraudulent": 6}


@dataclass(frozen=True)
class SeedSpec:
    customers: int
    merchants: int
    days: int
    seed: int = 7
    end: dt.date = dt.date(2026, 10, 31)  # last generated day (fixed: same seed, same data)
    fraud_rate: float = 0.005  # share of transactions that are fraud (0.1–1 %)
    log_sessions: int = 40
    anomalous_log_fraction: float = 0.2
    drift_days: int = 0  # the last N days are a shifted period (pricier, more cross-border): drift tests

    @property
    def start(self) -> dt.date:
        return self.end - dt.timedelta(days=self.days - 1)


SCALES: dict[str, SeedSpec] = {
    "tiny": SeedSpec(customers=300, merchants=40, days=45, log_sessions=30),
    "demo": SeedSpec(customers=6_000, merchants=400, days=120, log_sessions=200),
    "bench": SeedSpec(customers=30_000, merchants=2_000, days=365, log_sessions=400),
}


@dataclass
class SeedData:
    """Every table of the seed, as Arrow; ``customer`` holds clear PII that the
    loader encrypts inside PostgreSQL."""

    spec: SeedSpec
    currency: pa.Table
    location: pa.Table
    customer: pa.Table
    address: pa.Table
    merchant: pa.Table
    product: pa.Table
    device: pa.Table
    payment_method: pa.Table
    transaction: pa.Table
    status_change: pa.Table  # labels and refunds, applied through oltp.change_transaction_status
    scenario: np.ndarray  # per transaction: "" for legit, else the fraud scenario (ground truth, not loaded)
    stats: dict = field(default_factory=dict)


def generate(spec: SeedSpec) -> SeedData:
    """Generate the whole world of ``spec``."""
    rng = np.random.default_rng(spec.seed)
    currency = _currencies()
    location = _locations()
    customers = _customers(spec, rng, location)
    merchants = _merchants(spec, rng, location)
    products = _products(rng, merchants)
    devices = _devices(rng, customers)
    payment_methods = _payment_methods(rng, customers)
    tx = _legit_transactions(spec, rng, customers, merchants, products, devices, payment_methods)
    if spec.drift_days:
        _shift_period(spec, rng, tx, merchants, products)
    tx, changes, devices = _inject_fraud(spec, rng, tx, customers, merchants, products, devices, payment_methods)
    transaction, status_change, scenario = _finalise(spec, tx, changes, merchants, products)
    stats = {
        "transactions": transaction.num_rows,
        "fraud_transactions": int((scenario != "").sum()),
        "labelled_fraud": int(np.isin(status_change["ToStatusID"].to_numpy(),
                                      [STATUS_ID["fraudulent"], STATUS_ID["disputed"]]).sum()),
    }
    return SeedData(spec, currency, location, pa.table(customers["table"]), _addresses(rng, customers),
                    pa.table(merchants["table"]), products["table"], pa.table(devices["table"]),
                    payment_methods["table"], transaction, status_change, scenario, stats)


# ----------------------------------------------------------------------------- reference tables
def _currencies() -> pa.Table:
    codes, names, rates = zip(*ref.CURRENCIES)
    return pa.table({"CurrencyCode": codes, "Name": names,
                     "RateToEUR": pa.array([f"{r:.8f}" for r in rates]).cast(pa.decimal128(18, 8))})


def _locations() -> pa.Table:
    rows = [(city, region, c.code, lat, lon) for c in ref.COUNTRIES for city, region, lat, lon in c.cities]
    city, region, country, lat, lon = zip(*rows)
    return pa.table({
        "LocationID": pa.array(np.arange(1, len(rows) + 1), pa.int64()),
        "City": city, "Region": region, "Country": country,
        "Latitude": pa.array([f"{v:.6f}" for v in lat]).cast(pa.decimal128(9, 6)),
        "Longitude": pa.array([f"{v:.6f}" for v in lon]).cast(pa.decimal128(9, 6)),
    })


def _country_arrays():
    codes = np.array([c.code for c in ref.COUNTRIES])
    weights = np.array([c.weight for c in ref.COUNTRIES])
    return codes, weights / weights.sum()


def _location_of(rng, location: pa.Table, countries: np.ndarray) -> np.ndarray:
    """A random city (LocationID) in each row's country."""
    loc_country = location["Country"].to_numpy(zero_copy_only=False)
    loc_ids = location["LocationID"].to_numpy()
    out = np.empty(len(countries), np.int64)
    for code in np.unique(countries):
        rows = np.flatnonzero(countries == code)
        out[rows] = rng.choice(loc_ids[loc_country == code], size=len(rows))
    return out


# ----------------------------------------------------------------------------- parties
def _customers(spec: SeedSpec, rng, location: pa.Table) -> dict:
    n = spec.customers
    ids = np.arange(1, n + 1, dtype=np.int64)
    codes, weights = _country_arrays()
    country = rng.choice(codes, size=n, p=weights)
    segment_idx = rng.choice(len(ref.SEGMENTS), size=n, p=ref.SEGMENT_SHARE)
    first = rng.choice(ref.FIRST_NAMES, size=n)
    last = rng.choice(ref.LAST_NAMES, size=n)
    signup_offset = rng.integers(30, 5 * 365, size=n)
    signup = np.datetime64(spec.start) - signup_offset.astype("timedelta64[D]")
    id_text = np.char.zfill(ids.astype(str), 7)
    username = np.char.add("user", id_text)
    tld = np.char.lower(country.astype(str))
    email = np.char.add(np.char.add(np.char.add(np.char.lower(first.astype(str)), "."), username),
                        np.char.add("@mail.example.", tld))
    password = np.char.add("pw-", rng.integers(10**9, 10**10, size=n).astype(str))
    table = {
        "CustomerID": pa.array(ids),
        "UserName": pa.array(username),
        "PasswordClear": pa.array(password),
        "EmailClear": pa.array(email),
        "FullNameClear": pa.array(np.char.add(np.char.add(first.astype(str), " "), last.astype(str))),
        "Segment": pa.array(np.array(ref.SEGMENTS)[segment_idx]),
        "Country": pa.array(country),
        "SignupDate": pa.array(signup.astype("datetime64[D]")),
        "ConsentGDPRProcessing": pa.array(rng.random(n) < 0.92),
        "CCPADoNotSell": pa.array(np.where(country == "US", rng.random(n) < 0.18, False)),
    }
    return {"table": table, "ids": ids, "country": country, "segment": segment_idx,
            "home_location": _location_of(rng, location, country)}


def _addresses(rng, customers: dict) -> pa.Table:
    n = len(customers["ids"])
    street_no = rng.integers(1, 250, size=n).astype(str)
    street = np.char.add(street_no, rng.choice([" Rue de la Paix", " Main Street", " Hauptstrasse", " High Street",
                                                " Via Roma", " Calle Mayor", " Kerkstraat"], size=n))
    return pa.table({
        "AddressID": pa.array(customers["ids"]),
        "CustomerID": pa.array(customers["ids"]),
        "LocationID": pa.array(customers["home_location"]),
        "StreetClear": pa.array(street),
        "PostalCode": pa.array(np.char.zfill(rng.integers(1000, 99999, size=n).astype(str), 5)),
        "IsPrimary": pa.array(np.ones(n, bool)),
    })


def _merchants(spec: SeedSpec, rng, location: pa.Table) -> dict:
    m = spec.merchants
    ids = np.arange(1, m + 1, dtype=np.int64)
    codes, weights = _country_arrays()
    country = rng.choice(codes, size=m, p=weights)
    industry = rng.integers(0, len(ref.INDUSTRIES), size=m)
    # Zipf-like popularity; the most popular are the large merchants.
    rank = rng.permutation(m) + 1
    popularity = 1.0 / rank ** 1.1
    size = np.where(rank <= max(1, m // 10), "large", np.where(rank <= max(2, m * 4 // 10), "medium", "small"))
    names = np.char.add(np.char.add(rng.choice(ref.MERCHANT_WORDS, size=m), " "),
                        np.array([ref.INDUSTRIES[i].name for i in industry]))
    names = np.char.add(np.char.add(names, " #"), ids.astype(str))
    table = {
        "MerchantID": pa.array(ids),
        "Name": pa.array(names),
        "Industry": pa.array([ref.INDUSTRIES[i].name for i in industry]),
        "Size": pa.array(size),
        "Country": pa.array(country),
        "LocationID": pa.array(_location_of(rng, location, country)),
    }
    return {"table": table, "ids": ids, "country": country, "industry": industry, "popularity": popularity,
            "size": size, "location": table["LocationID"].to_numpy()}


def _products(rng, merchants: dict) -> dict:
    count = rng.integers(3, 9, size=len(merchants["ids"]))
    owner = np.repeat(np.arange(len(count)), count)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    vat = {c.code: c.vat for c in ref.COUNTRIES}
    categories, tax = [], []
    for m_idx in owner:  # one row per product (a few per merchant): reference-sized, not hot
        industry = ref.INDUSTRIES[merchants["industry"][m_idx]]
        category = industry.categories[rng.integers(len(industry.categories))]
        rate = vat[merchants["country"][m_idx]]
        reduced = industry.reduced_tax or category == "Books"
        categories.append(category)
        tax.append(round(rate * (0.3 if reduced else 1.0), 4))
    ids = np.arange(1, len(owner) + 1, dtype=np.int64)
    table = pa.table({
        "ProductID": pa.array(ids),
        "MerchantID": pa.array(merchants["ids"][owner]),
        "Name": pa.array(np.char.add(np.array(categories, dtype=str), np.char.add(" item ", ids.astype(str)))),
        "Category": pa.array(categories),
        "TaxRate": pa.array([f"{t:.4f}" for t in tax]).cast(pa.decimal128(5, 4)),
    })
    return {"table": table, "start": start, "count": count, "tax": np.array(tax)}


def _devices(rng, customers: dict) -> dict:
    count = rng.choice([1, 2], size=len(customers["ids"]), p=[0.65, 0.35])
    owner = np.repeat(np.arange(len(count)), count)
    kind = rng.choice(len(ref.DEVICE_KINDS), size=len(owner), p=ref.DEVICE_SHARE)
    kinds = np.array(ref.DEVICE_KINDS)
    table = {
        "DeviceID": pa.array(np.arange(1, len(owner) + 1, dtype=np.int64)),
        "CustomerID": pa.array(customers["ids"][owner]),
        "DeviceType": pa.array(kinds[kind, 0]),
        "OS": pa.array(kinds[kind, 1]),
        "Fingerprint": pa.array(_hex(rng, len(owner))),
    }
    return {"table": table, "start": np.concatenate([[0], np.cumsum(count)[:-1]]), "count": count}


def _payment_methods(rng, customers: dict) -> dict:
    count = rng.choice([1, 2, 3], size=len(customers["ids"]), p=[0.55, 0.35, 0.10])
    owner = np.repeat(np.arange(len(count)), count)
    n = len(owner)
    kind = rng.choice(len(ref.PAYMENT_TYPES), size=n, p=ref.PAYMENT_SHARE)
    is_card = kind <= 1
    brand = np.where(is_card, rng.choice(ref.CARD_BRANDS, size=n, p=[0.55, 0.38, 0.07]), None)
    last4 = np.where(is_card, np.char.zfill(rng.integers(0, 10_000, size=n).astype(str), 4), None)
    table = pa.table({
        "PaymentMethodID": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "CustomerID": pa.array(customers["ids"][owner]),
        "Type": pa.array(np.array(ref.PAYMENT_TYPES)[kind]),
        "Brand": pa.array(brand, pa.string()),
        "Last4": pa.array(last4, pa.string()),
        "Token": pa.array(np.char.add("tok_", _hex(rng, n))),
    })
    return {"table": table, "start": np.concatenate([[0], np.cumsum(count)[:-1]]), "count": count,
            "is_card": is_card, "owner": owner}


def _hex(rng, n: int) -> np.ndarray:
    return np.array([f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2))])


# ----------------------------------------------------------------------------- transactions
def _pick(rng, start: np.ndarray, count: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """For each row, a random index among its owner's children (devices, cards, products)."""
    return start[owner] + (rng.random(len(owner)) * count[owner]).astype(np.int64)


def _day_weights(spec: SeedSpec) -> np.ndarray:
    days = np.datetime64(spec.start) + np.arange(spec.days).astype("timedelta64[D]")
    weekday = (days.astype("datetime64[D]").view("int64") - 4) % 7  # 0 = Monday
    month = days.astype("datetime64[M]").astype(int) % 12 + 1
    weight = np.where(weekday >= 5, 1.25, 1.0)
    weight *= np.select([month == 12, month == 11, month == 1], [1.4, 1.15, 0.85], 1.0)
    return weight / weight.sum()


HOUR_WEIGHTS = np.array([1, 0.6, 0.4, 0.3, 0.3, 0.5, 1.2, 2.5, 3.5, 4, 4.2, 4.5,
                         5.2, 5, 4.6, 4.4, 4.6, 5, 5.4, 5.6, 5, 4, 2.8, 1.6])


def _times(spec: SeedSpec, rng, n: int) -> np.ndarray:
    """Seconds since the epoch (UTC) with seasonality, weekends and a daily rhythm."""
    day = rng.choice(spec.days, size=n, p=_day_weights(spec))
    hour = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    start_s = int(dt.datetime.combine(spec.start, dt.time(), dt.UTC).timestamp())
    return start_s + day * DAY_S + hour * 3600 + rng.integers(0, 3600, size=n)


def _choose_merchants(rng, merchants: dict, customer_country: np.ndarray) -> np.ndarray:
    """Zipf-popular merchants, mostly in the customer's own country."""
    n = len(customer_country)
    out = np.empty(n, np.int64)
    popularity = merchants["popularity"]
    domestic = rng.random(n) < 0.85
    global_rows = np.flatnonzero(~domestic)
    for code in np.unique(customer_country):
        local = np.flatnonzero(merchants["country"] == code)
        rows = np.flatnonzero(domestic & (customer_country == code))
        if len(local) == 0:
            global_rows = np.concatenate([global_rows, rows])
            continue
        out[rows] = rng.choice(local, size=len(rows), p=popularity[local] / popularity[local].sum())
    out[global_rows] = rng.choice(len(popularity), size=len(global_rows), p=popularity / popularity.sum())
    return out


def _amounts_eur(rng, merchants: dict, merchant_idx: np.ndarray, spend: np.ndarray) -> np.ndarray:
    mean = np.array([i.log_mean_eur for i in ref.INDUSTRIES])[merchants["industry"][merchant_idx]]
    sigma = np.array([i.log_sigma for i in ref.INDUSTRIES])[merchants["industry"][merchant_idx]]
    return np.maximum(0.5, np.exp(rng.normal(mean, sigma)) * spend)


def _legit_transactions(spec, rng, customers, merchants, products, devices, payment_methods) -> dict:
    rate = np.array(ref.SEGMENT_DAILY_RATE)[customers["segment"]] * rng.gamma(2.0, 0.5, len(customers["ids"]))
    per_customer = rng.poisson(rate * spec.days)
    cust = np.repeat(np.arange(len(per_customer)), per_customer)
    n = len(cust)
    merchant_idx = _choose_merchants(rng, merchants, customers["country"][cust])
    spend = np.array(ref.SEGMENT_SPEND)[customers["segment"][cust]]
    status = np.where(rng.random(n) < 0.03, STATUS_ID["failed"], STATUS_ID["succeeded"])
    return {
        "cust": cust, "merchant": merchant_idx, "time": _times(spec, rng, n),
        "amount_eur": _amounts_eur(rng, merchants, merchant_idx, spend),
        "pm": _pick(rng, payment_methods["start"], payment_methods["count"], cust),
        "device": _pick(rng, devices["start"], devices["count"], cust),
        "product": _pick(rng, products["start"], products["count"], merchant_idx),
        "status": status, "scenario": np.full(n, "", dtype=object),
    }


def _shift_period(spec, rng, tx: dict, merchants: dict, products: dict) -> None:
    """The last ``drift_days`` days change: a price and currency-mix shift (amounts x2.2) and half
    of the payments going cross-border (merchants drawn from every country)."""
    end_s = int(dt.datetime.combine(spec.end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp())
    rows = np.flatnonzero(tx["time"] >= end_s - spec.drift_days * DAY_S)
    tx["amount_eur"][rows] = tx["amount_eur"][rows] * 2.2
    abroad = rows[rng.random(len(rows)) < 0.5]
    popularity = merchants["popularity"]
    tx["merchant"][abroad] = rng.choice(len(popularity), size=len(abroad), p=popularity / popularity.sum())
    tx["product"][abroad] = _pick(rng, products["start"], products["count"], tx["merchant"][abroad])


# ----------------------------------------------------------------------------- fraud
def _inject_fraud(spec, rng, tx, customers, merchants, products, devices, payment_methods):
    """Add fraud transactions and the status changes through which labels arrive."""
    base = len(tx["cust"])
    target = max(8, int(base * spec.fraud_rate))
    parts, changes = [], []
    end_s = int(dt.datetime.combine(spec.end + dt.timedelta(days=1), dt.time(),
                                    dt.UTC).timestamp())
    start_s = end_s - spec.days * DAY_S

    def add(cust, merchant, time, amount_eur, pm, device, status, scenario):
        n = len(cust)
        parts.append({"cust": cust, "merchant": merchant, "time": time, "amount_eur": amount_eur, "pm": pm,
                      "device": device, "product": _pick(rng, products["start"], products["count"], merchant),
                      "status": status, "scenario": np.full(n, scenario, dtype=object)})
        return np.arange(n)

    offset = base

    # Card testing: many small amounts, one card, many merchants, minutes apart.
    cards = np.flatnonzero(payment_methods["is_card"])
    budget = int(target * 0.35)
    while budget > 0:
        size = int(rng.integers(8, 26))
        card = rng.choice(cards)
        t0 = rng.integers(start_s, end_s - DAY_S)
        times = t0 + np.cumsum(rng.exponential(40, size)).astype(np.int64)
        cust = np.full(size, payment_methods["owner"][card])
        merchant = rng.choice(len(merchants["ids"]), size=size)
        amount = np.round(rng.uniform(0.5, 4.99, size), 2)
        status = np.where(rng.random(size) < 0.6, STATUS_ID["failed"], STATUS_ID["succeeded"])
        rows = add(cust, merchant, times, amount, np.full(size, card), np.full(size, -1), status, "card_testing")
        changes.append(_label(rng, offset + rows, times, "fraudulent", "card testing reported by issuer",
                              "issuer", (2, 10)))
        offset += size
        budget -= size

    # Account takeover: new device, another country, high amounts after a quiet week.
    budget = int(target * 0.30)
    new_devices = []
    dropped = np.zeros(base, bool)  # legit rows removed to make the week before a takeover quiet
    while budget > 0:
        victim = int(rng.integers(len(customers["ids"])))
        t0 = int(rng.integers(start_s + 8 * DAY_S, end_s - DAY_S))
        dropped |= (tx["cust"] == victim) & (tx["time"] >= t0 - 7 * DAY_S) & (tx["time"] < t0)
        foreign = np.flatnonzero(merchants["country"] != customers["country"][victim])
        hot = foreign[np.isin(merchants["industry"][foreign], [2, 3])]  # Electronics, Travel
        pool = hot if len(hot) else foreign
        size = int(rng.integers(2, 5))
        merchant = rng.choice(pool, size=size)
        times = t0 + np.sort(rng.integers(0, 3600, size))
        amount = _amounts_eur(rng, merchants, merchant, np.full(size, 1.0)) * rng.uniform(5, 20, size)
        device_id = len(devices["table"]["DeviceID"]) + len(new_devices)  # index of the takeover device
        new_devices.append(victim)
        pm = _pick(rng, payment_methods["start"], payment_methods["count"], np.full(size, victim))
        rows = add(np.full(size, victim), merchant, times, amount, pm, np.full(size, device_id),
                   np.full(size, STATUS_ID["succeeded"]), "account_takeover")
        changes.append(_label(rng, offset + rows, times, "disputed", "cardholder does not recognise payment",
                              "cardholder", (1, 5)))
        changes.append(_label(rng, offset + rows, times, "fraudulent", "account takeover confirmed",
                              "fraud-ops", (6, 20)))
        offset += size
        budget -= size
    devices = _with_takeover_devices(rng, devices, customers, new_devices)

    # Merchant collusion rings: a few small merchants and customers cycling round amounts.
    budget = int(target * 0.20)
    small = np.flatnonzero(merchants["size"] == "small")
    while budget > 0 and len(small) >= 3:
        ring_merchants = rng.choice(small, size=min(len(small), int(rng.integers(3, 6))), replace=False)
        ring_customers = rng.choice(len(customers["ids"]), size=int(rng.integers(6, 13)), replace=False)
        size = int(rng.integers(25, 60))
        cust = rng.choice(ring_customers, size=size)
        merchant = rng.choice(ring_merchants, size=size)
        times = rng.integers(start_s, end_s - DAY_S, size)
        amount = rng.choice([100.0, 200.0, 250.0, 500.0, 1000.0], size=size)
        pm = _pick(rng, payment_methods["start"], payment_methods["count"], cust)
        device = _pick(rng, devices["start"], devices["count"], cust)
        rows = add(cust, merchant, times, amount, pm, device, np.full(size, STATUS_ID["succeeded"]), "collusion")
        changes.append(_label(rng, offset + rows, times, "fraudulent", "merchant collusion ring", "fraud-ops",
                              (10, 30)))
        offset += size
        budget -= size

    # Refund abuse: purchases refunded, then disputed as never received.
    budget = int(target * 0.15)
    shops = np.flatnonzero(np.isin(merchants["industry"], [2, 5]))  # Electronics, Fashion
    while budget > 0 and len(shops):
        abuser = int(rng.integers(len(customers["ids"])))
        size = int(rng.integers(3, 8))
        merchant = rng.choice(shops, size=size)
        times = rng.integers(start_s, end_s - 3 * DAY_S, size)
        amount = _amounts_eur(rng, merchants, merchant, np.full(size, 1.5))
        pm = _pick(rng, payment_methods["start"], payment_methods["count"], np.full(size, abuser))
        device = _pick(rng, devices["start"], devices["count"], np.full(size, abuser))
        rows = add(np.full(size, abuser), merchant, times, amount, pm, device,
                   np.full(size, STATUS_ID["succeeded"]), "refund_abuse")
        changes.append(_label(rng, offset + rows, times, "refunded", "customer return", "merchant", (1, 3)))
        changes.append(_label(rng, offset + rows, times, "disputed", "item not received claim after refund",
                              "cardholder", (5, 12)))
        offset += size
        budget -= size

    # Ordinary refunds of legitimate purchases.
    legit = np.flatnonzero((tx["status"] == STATUS_ID["succeeded"]) & ~dropped
                           & (rng.random(len(tx["cust"])) < 0.01))
    changes.append(_label(rng, legit, tx["time"][legit], "refunded", "customer return", "merchant", (1, 14)))

    kept = np.concatenate([~dropped, np.ones(offset - base, bool)])
    merged = {key: np.concatenate([tx[key]] + [p[key] for p in parts])[kept] for key in tx}
    change = {key: np.concatenate([c[key] for c in changes]) for key in changes[0]}
    change["row"] = (np.cumsum(kept) - 1)[change["row"]]  # row numbers after the quiet weeks were removed
    arrived = change["at"] < end_s  # labels that have not arrived yet stay unknown
    return merged, {key: value[arrived] for key, value in change.items()}, devices


def _label(rng, rows: np.ndarray, times: np.ndarray, status: str, reason: str, by: str, delay_days) -> dict:
    delay = rng.uniform(delay_days[0], delay_days[1], len(rows)) * DAY_S
    return {"row": rows.astype(np.int64), "status": np.full(len(rows), STATUS_ID[status], np.int16),
            "reason": np.full(len(rows), reason, dtype=object), "by": np.full(len(rows), by, dtype=object),
            "at": (times + delay).astype(np.int64)}


def _with_takeover_devices(rng, devices: dict, customers: dict, victims: list[int]) -> dict:
    if not victims:
        return devices
    table = devices["table"]
    first = len(table["DeviceID"]) + 1
    extra = {
        "DeviceID": pa.array(np.arange(first, first + len(victims), dtype=np.int64)),
        "CustomerID": pa.array(customers["ids"][np.array(victims)]),
        "DeviceType": pa.array(np.full(len(victims), "desktop")),
        "OS": pa.array(rng.choice(["Windows", "Linux"], size=len(victims))),
        "Fingerprint": pa.array(_hex(rng, len(victims))),
    }
    merged = {key: pa.concat_arrays([table[key], extra[key]]) for key in table}
    return {**devices, "table": merged}


# ----------------------------------------------------------------------------- final tables
def _finalise(spec, tx, changes, merchants, products):
    order = np.argsort(tx["time"], kind="stable")
    new_id = np.empty(len(order), np.int64)
    new_id[order] = np.arange(1, len(order) + 1)
    rates = {code: rate for code, _, rate in ref.CURRENCIES}
    currency_of = {c.code: c.currency for c in ref.COUNTRIES}
    cur = np.array([currency_of[c] for c in merchants["country"]])[tx["merchant"]][order]
    rate = np.array([rates[c] for c in cur])
    amount = np.round(np.maximum(0.5, tx["amount_eur"][order] / rate), 2)
    tax_rate = products["tax"][tx["product"][order]]
    tax = np.round(amount * tax_rate / (1 + tax_rate), 2)
    fee = np.round(amount * 0.014 + 0.25 / rate, 2)
    when = pa.array(tx["time"][order] * 1_000_000, pa.timestamp("us", tz="UTC"))
    device = tx["device"][order]
    transaction = pa.table({
        "TransactionID": pa.array(np.arange(1, len(order) + 1, dtype=np.int64)),
        "DateTime": when,
        "CustomerID": pa.array(tx["cust"][order] + 1),
        "MerchantID": pa.array(tx["merchant"][order] + 1),
        "PaymentMethodID": pa.array(tx["pm"][order] + 1),
        "DeviceID": pa.array(np.where(device >= 0, device + 1, 0), mask=device < 0),
        "LocationID": pa.array(merchants["location"][tx["merchant"][order]]),
        "ProductID": pa.array(tx["product"][order] + 1),
        "CurrencyCode": pa.array(cur),
        "Amount": _decimal(amount, 14, 2),
        "TaxAmount": _decimal(tax, 14, 2),
        "FeeAmount": _decimal(fee, 14, 2),
        "StatusID": pa.array(tx["status"][order].astype(np.int16)),
        "CreatedAt": when,
    })
    change_order = np.argsort(changes["at"], kind="stable")
    rows = changes["row"][change_order]
    status_change = pa.table({
        "TransactionID": pa.array(new_id[rows]),
        "DateTime": pa.array(tx["time"][rows] * 1_000_000, pa.timestamp("us", tz="UTC")),
        "ToStatusID": pa.array(changes["status"][change_order]),
        "Reason": pa.array(changes["reason"][change_order].astype(str)),
        "ChangedBy": pa.array(changes["by"][change_order].astype(str)),
        "ChangedAt": pa.array(changes["at"][change_order] * 1_000_000, pa.timestamp("us", tz="UTC")),
    })
    return transaction, status_change, tx["scenario"][order].astype(str)


def _decimal(values: np.ndarray, precision: int, scale: int) -> pa.Array:
    return pa.array(np.char.mod(f"%.{scale}f", values)).cast(pa.decimal128(precision, scale))
