"""Ray Serve scoring service vs a plain FastAPI + uvicorn process, same model and feature code, same run.

    .venv/bin/python bench/serve.py [--concurrency 1 8 64] [--seconds 8] [--max-requests 3000]
                                    [--batch 50] [--configs replicas2,batched]

On the stack of ``.paylake/stack.env`` (``make demo`` first: the fraud champion and the online store).
A bounded load generator on loopback (``--generator httpx``: an async client in this process, per level at
most ``--seconds`` and ``--max-requests``; it takes a core of this 2-core machine at c=64, so it bounds what
it measures. ``--generator wrk``: the C load generator, a few % of a core, per level ``--seconds``) posts the
2,000 newest payments of the generated world (silver, before anything a benchmark cloned since) to
``/v1/fraud/score``: single bodies at each
concurrency level, then bodies of ``--batch`` transactions. The baseline is
``python -m paylake.serving.plain`` (one uvicorn process) started here with the same key. Every
Serve configuration is deployed with ``paylake.serving.deploy.up`` and measured the same way.
Each system's ``/healthz`` is measured at the top concurrency with the same generator: the ingress's own
limit, the yardstick of scoring's throughput. Prints throughput (requests/s and transactions/s), p50/p99
latency and the ratios to the baseline, then the goals per system: single-body scoring over /healthz at the
top concurrency, p99 at c=8, and payments/s in lists of ``--batch``.

Serve's HTTP ingress is the stack's (shown beside each configuration): to compare Serve's Python proxy with
HAProxy, run once per ingress (``paylake stack down -s ray && paylake stack up --serve-ingress haproxy``, then
``paylake serve up``); the plain baseline is measured again in each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
import numpy as np
from common import save_result

from paylake.report import console, summary_table
from paylake.serving.auth import KEYS_FILE_NAME, add_key
from paylake.serving.sample import generated_world_sample
from paylake.settings import find_stack_file, load_settings

CONFIGS = {
    "batched": {"max_batch_size": 32, "batch_wait_s": 0.005},
    "unbatched": {"max_batch_size": 1, "batch_wait_s": 0.0},
    "batched-wait10ms": {"max_batch_size": 32, "batch_wait_s": 0.01},
    "replicas2": {"max_batch_size": 32, "batch_wait_s": 0.005},  # two fraud replicas, no autoscaling
}


@dataclass
class Level:
    system: str
    body: str
    concurrency: int
    requests: int
    transactions: int
    seconds: float
    failures: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.transactions / self.seconds


async def load(url: str, key: str, bodies: list | None, concurrency: int, seconds: float,
               max_requests: int) -> tuple[list[float], int, float]:
    """Post ``bodies`` to /v1/fraud/score (``None``: GET /healthz, the ingress's own limit) from
    ``concurrency`` clients; returns (latencies of the answers, failures, elapsed)."""
    latencies: list[float] = []
    failures = 0
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker():
            nonlocal sent, failures
            while time.perf_counter() < deadline and sent < max_requests:
                body = bodies[sent % len(bodies)] if bodies is not None else None
                sent += 1
                t0 = time.perf_counter()
                try:
                    if body is None:
                        response = await client.get(url + "/healthz")
                    else:
                        response = await client.post(url + "/v1/fraud/score", json=body,
                                                     headers={"Authorization": f"Bearer {key}"})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, failures, time.perf_counter() - start


WRK_SCRIPT = r"""
local bodies, at = {}, 0
local path, key = os.getenv("BENCH_PATH"), os.getenv("BENCH_KEY")
init = function(args)
  local file = io.open(os.getenv("BENCH_BODIES"), "r")
  if file then
    for line in file:lines() do bodies[#bodies + 1] = line end
    file:close()
  end
end
request = function()
  if #bodies == 0 then return wrk.format("GET", path) end
  at = at % #bodies + 1
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
                                   ["Authorization"] = "Bearer " .. key}, bodies[at])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH %d %d %d %.1f %.1f\n", summary.requests, e.status + e.connect + e.read + e.write
    + e.timeout, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def load_wrk(url: str, key: str, bodies: list | None, concurrency: int,
             seconds: float) -> tuple[int, int, float, float, float]:
    """The same load from ``wrk`` (C, one thread: a few % of a core where httpx takes one): requests answered
    2xx, failures, elapsed s, p50 and p99 ms. wrk counts every answer in its latencies: with failures the
    percentiles include them (reported beside)."""
    import json
    import shutil
    import tempfile

    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("--generator wrk needs the wrk binary (apt-get install wrk)")
    with tempfile.TemporaryDirectory() as tmp:
        script, lines = os.path.join(tmp, "bench.lua"), os.path.join(tmp, "bodies.jsonl")
        with open(script, "w") as f:
            f.write(WRK_SCRIPT)
        with open(lines, "w") as f:
            for body in bodies or []:
                f.write(json.dumps(body) + "\n")
        env = {**os.environ, "BENCH_BODIES": lines, "BENCH_KEY": key,
               "BENCH_PATH": "/healthz" if bodies is None else "/v1/fraud/score"}
        out = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
                              "-s", script, url], env=env, capture_output=True, text=True, check=True).stdout
    fields = next(line for line in out.splitlines() if line.startswith("BENCH ")).split()[1:]
    total, failures, micros = int(fields[0]), int(fields[1]), int(fields[2])
    return total - failures, failures, micros / 1e6, float(fields[3]) / 1000, float(fields[4]) / 1000


def measure(system: str, url: str, key: str, txns: list[dict], levels: list[int], seconds: float,
            max_requests: int, batch: int, generator: str = "httpx") -> list[Level]:
    out = []
    shapes = [("healthz", None, 0), ("single", txns, 1),
              (f"list of {batch}", [txns[i:i + batch] for i in range(0, len(txns), batch)], batch)]
    for body, bodies, per_body in shapes:
        for concurrency in levels:
            asyncio.run(load(url, key, bodies, min(concurrency, 4), 1.0, 50))  # warm-up
            if body == "healthz" and concurrency != max(levels):
                continue  # the ingress's limit: at the top concurrency only
            if generator == "wrk":
                answered, failures, elapsed, p50, p99 = load_wrk(url, key, bodies, concurrency, seconds)
            else:
                latencies, failures, elapsed = asyncio.run(load(url, key, bodies, concurrency, seconds,
                                                                max_requests))
                ms = np.array(latencies) * 1000 if latencies else np.array([float("nan")])
                answered, p50, p99 = len(latencies), float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
            level = Level(system, body, concurrency, answered, answered * per_body, elapsed, failures, p50, p99)
            console.print(f"  {system:>18} {body:>10} c={concurrency:<4} {level.rps:8.1f} req/s "
                          f"{level.tps:8.1f} txn/s p50 {level.p50_ms:7.1f} ms p99 {level.p99_ms:7.1f} ms "
                          f"failures {failures}", highlight=False)
            out.append(level)
    return out


def wait_http(url: str, deadline_s: float = 120) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer within {deadline_s:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=8.0, help="time limit per level")
    parser.add_argument("--max-requests", type=int, default=3000, help="request limit per level")
    parser.add_argument("--batch", type=int, default=50, help="transactions per body in the list runs")
    parser.add_argument("--configs", default="replicas2,batched",
                        help=f"Serve configurations, among {','.join(CONFIGS)}")
    parser.add_argument("--plain-port", type=int, default=8187)
    parser.add_argument("--generator", choices=["httpx", "wrk"], default="httpx",
                        help="the load generator: httpx (Python, in this process: takes a core at c=64) or wrk "
                             "(C; apt-get install wrk)")
    args = parser.parse_args()

    from paylake.serving.deploy import up
    from paylake.stack import LocalStack

    settings = load_settings()
    stack_file = find_stack_file()
    ingress = LocalStack(stack_file.parent).context().serve_ingress
    key = add_key(stack_file.parent / KEYS_FILE_NAME, "bench-serve", ["fraud:score"])
    txns = generated_world_sample(settings, 2000)  # not payments bench/stream.py cloned since
    console.print(f"{len(txns):,} real transactions of silver; levels {args.concurrency}; "
                  f"≤ {args.seconds:.0f} s and ≤ {args.max_requests:,} requests per level")
    results: list[Level] = []

    plain_url = f"http://127.0.0.1:{args.plain_port}"
    plain = subprocess.Popen([sys.executable, "-m", "paylake.serving.plain", "--port", str(args.plain_port)],
                             env={**os.environ, "PAYLAKE_STACK_FILE": str(stack_file)})
    try:
        wait_http(plain_url)
        console.print("[bold]plain FastAPI + uvicorn (one process)[/]")
        results += measure("plain", plain_url, key, txns, args.concurrency, args.seconds, args.max_requests,
                           args.batch, args.generator)
    finally:
        plain.terminate()
        try:
            plain.wait(10)
        except subprocess.TimeoutExpired:  # requests still queued in it: no graceful end needed
            plain.kill()

    for name in args.configs.split(","):
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}: choose from {', '.join(CONFIGS)}")
        overrides = dict(CONFIGS[name])
        console.print(f"[bold]Ray Serve: {name}[/] {overrides}, ingress: {ingress}")
        deployments = {"fraud": {"num_replicas": 2, "autoscaling_config": None}} if name == "replicas2" else None
        result = up(settings, overrides, wait_s=120, deployments=deployments)
        if not result["ready"]:
            raise SystemExit(f"service not ready: {result['models']}")
        results += measure(f"serve {name} ({ingress})", settings.serving.url.rstrip("/"), key, txns, args.concurrency,
                           args.seconds, args.max_requests, args.batch, args.generator)

    plain_by = {(r.body, r.concurrency): r for r in results if r.system == "plain"}
    rows = []
    for r in results:
        base = plain_by[(r.body, r.concurrency)]
        rate, base_rate = (r.rps, base.rps) if r.body == "healthz" else (r.tps, base.tps)
        rows.append((r.system, r.body, r.concurrency, f"{rate:.1f}", f"{r.p50_ms:.1f}", f"{r.p99_ms:.1f}",
                     r.failures, f"{rate / base_rate:.2f}x", f"{r.p99_ms / base.p99_ms:.2f}x"))
    console.print(summary_table("fraud scoring over HTTP (loopback)", ["system", "body", "concurrency", "txn/s",
                                                                        "p50 ms", "p99 ms", "failures",
                                                                        "txn/s vs plain", "p99 vs plain"], rows))
    top, low = max(args.concurrency), 8 if 8 in args.concurrency else min(args.concurrency)
    goals = []
    for system in dict.fromkeys(r.system for r in results):
        by = {(r.body, r.concurrency): r for r in results if r.system == system}
        limit, single = by[("healthz", top)], by[("single", top)]
        lists = by[(f"list of {args.batch}", top)]
        goals.append((system, f"{single.tps:.0f} / {limit.rps:.0f} = {single.tps / limit.rps:.2f}x",
                      f"{by[('single', low)].p99_ms:.0f}", f"{lists.tps:,.0f}"))
    figures = {}
    for system in dict.fromkeys(r.system for r in results):
        by = {(r.body, r.concurrency): r for r in results if r.system == system}
        replicas = 2 if "replicas2" in system else 1
        figures[system] = {"fraud_replicas": replicas, "single_rps": by[("single", top)].rps,
                           "single_rps_per_replica": by[("single", top)].rps / replicas,
                           "healthz_rps": by[("healthz", top)].rps, "p99_ms_c8": by[("single", low)].p99_ms,
                           "list_payments_per_s": by[(f"list of {args.batch}", top)].tps,
                           "list_payments_per_s_per_replica": by[(f"list of {args.batch}", top)].tps / replicas}
    serve_systems = [s for s in figures if s != "plain"]
    save_result("serve", {"generator": args.generator, "ingress": ingress, "concurrency": top,
                          "systems": figures, "serve": figures[serve_systems[0]] if serve_systems else {}},
                baseline=figures.get("plain"))
    console.print(summary_table(f"the goals: single at c={top} ≥ 0.6x of /healthz; p99 ≤ 100 ms at c={low}; "
                                f"lists of {args.batch} ≥ 3,000 payments/s",
                                ["system", f"single / healthz (c={top})", f"p99 ms (c={low})",
                                 f"lists of {args.batch}: payments/s"], goals))


if __name__ == "__main__":
    main()
