"""The real-time fraud path: payments committed in PostgreSQL to their row in Snowflake's REALTIME_FraudScore.

    .venv/bin/python bench/stream.py [--rates 2 10 40] [--seconds 30]

On the stack of ``.paylake/stack.env`` (``make demo`` first: bronze, the CDC slot, the online store and the
fraud champion). Starts ``paylake stream`` (its own process, as a user runs it), then for each insert rate
commits payments one per transaction at that rate for ``--seconds`` (copies of recent payments, at the
time of their commit), and polls Snowflake every 0.1 s for their rows. For each rate: the offered and the
sustained rate (rows landed per second while inserting, as a ratio of the offered one: 1.00x keeps up),
and p50 / p99 / max of commit → row visible in Snowflake (the client's commit to the first poll that sees
the row: the figure includes up to 0.1 s of polling). Goal: p99 < 5 s at the highest rate sustained.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from common import save_result

from paylake.report import console, summary_table
from paylake.settings import find_stack_file, load_settings
from paylake.stores import postgres
from paylake.stores import snowflake as snowflake_store

GOAL_P99_S = 5.0  # issue #24: commit → Snowflake p99 under 5 s at the highest rate sustained

INSERT = """
    insert into oltp.transaction (datetime, customerid, merchantid, paymentmethodid, deviceid, locationid, productid,
                                  currencycode, amount, taxamount, feeamount, statusid)
    select clock_timestamp(), customerid, merchantid, paymentmethodid, deviceid, locationid, productid, currencycode,
           amount, taxamount, feeamount, 2
    from oltp.transaction where transactionid = %s
    returning transactionid"""


def sustained(levels: list[dict]) -> float:
    """The highest offered rate at which every payment landed with a p99 under the goal. (Rows landed *within*
    the offering window trail the offered rate by the latency itself: ~0.9x of a 30 s window at a p50 of 2.5 s.)"""
    kept_up = [m["offered_per_s"] for m in levels if m["not_landed"] == 0 and m["p99_s"] < GOAL_P99_S]
    return max(kept_up, default=0.0)


def offer(settings, rate: float, seconds: float, templates: list[int], committed: dict[int, float]) -> int:
    """Commit payments at ``rate`` per second for ``seconds``; records each one's commit time."""
    sent = 0
    with postgres.connect(settings, autocommit=True) as conn:
        conn.execute("set synchronous_commit = on")
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            due = start + sent / rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            (txid,) = conn.execute(INSERT, (templates[sent % len(templates)],)).fetchone()
            committed[txid] = time.monotonic()
            sent += 1
    return sent


def watch(settings, committed: dict[int, float], seen: dict[int, float], stop: threading.Event) -> None:
    table = f"{settings.snowflake_database}.STAR.REALTIME_FRAUDSCORE"
    with snowflake_store.connect(settings) as conn:
        cur = conn.cursor()
        while not stop.is_set():
            waiting = [t for t in list(committed) if t not in seen]
            if waiting:
                cur.execute(f"select TransactionID from {table} where TransactionID >= {min(waiting)}")
                now = time.monotonic()
                for (txid,) in cur.fetchall():
                    seen.setdefault(int(txid), now)
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[2.0, 10.0, 40.0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    settings = load_settings()
    with postgres.connect(settings) as conn:
        templates = [r[0] for r in conn.execute("select transactionid from oltp.transaction order by transactionid"
                                                " desc limit 500").fetchall()]
    log = Path(find_stack_file()).parent / "logs" / "bench-stream.log"
    stream = subprocess.Popen([str(Path(sys.executable).parent / "paylake"), "stream"], stdout=log.open("w"),
                              stderr=subprocess.STDOUT, env=dict(os.environ))
    rows, measured = [], []
    try:
        time.sleep(15)  # the stream starts (Ray-free: settings, registry, the champion's load)
        if stream.poll() is not None:
            raise SystemExit(f"paylake stream exited ({stream.returncode}): see {log}")
        for rate in args.rates:
            committed: dict[int, float] = {}
            seen: dict[int, float] = {}
            stop = threading.Event()
            watcher = threading.Thread(target=watch, args=(settings, committed, seen, stop), daemon=True)
            watcher.start()
            began = time.monotonic()
            sent = offer(settings, rate, args.seconds, templates, committed)
            offered_s = time.monotonic() - began
            deadline = time.monotonic() + 60
            while len([t for t in committed if t in seen]) < sent and time.monotonic() < deadline:
                time.sleep(0.2)
            stop.set()
            watcher.join()
            landed_in_window = sum(1 for t, at in seen.items() if t in committed and at <= began + offered_s)
            latencies = np.array([seen[t] - committed[t] for t in committed if t in seen])
            lost = sent - len(latencies)
            p50, p99, worst = (np.percentile(latencies, 50), np.percentile(latencies, 99), latencies.max()) \
                if len(latencies) else (float("nan"),) * 3
            rows.append((f"{rate:g}", sent, f"{sent / offered_s:.1f}", f"{landed_in_window / offered_s:.1f}",
                         f"{landed_in_window / sent:.2f}x", f"{p50:.2f}", f"{p99:.2f}", f"{worst:.2f}", lost))
            console.print(f"  rate {rate:g}/s: {sent} payments, p50 {p50:.2f} s, p99 {p99:.2f} s, not landed {lost}",
                          highlight=False)
            measured.append({"offered_per_s": rate, "landed_per_s": landed_in_window / offered_s,
                             "p50_s": float(p50), "p99_s": float(p99), "not_landed": lost})
    finally:
        stream.terminate()
        try:
            stream.wait(30)
        except subprocess.TimeoutExpired:
            stream.kill()
    save_result("stream", {"levels": measured, "processes": 1, "sustained_per_s": sustained(measured),
                           "goal_p99_s": GOAL_P99_S})
    console.print(summary_table("commit in PostgreSQL → row in Snowflake REALTIME_FraudScore (paylake stream)",
                                ["offered /s", "payments", "committed /s", "landed /s", "landed vs offered",
                                 "p50 s", "p99 s", "max s", "not landed"], rows))


if __name__ == "__main__":
    main()
