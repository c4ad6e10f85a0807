"""The Ray Serve scoring service on the local stack: both endpoints, auth and input errors, readiness,
promotion under load, 500 concurrent requests, online score == batch score, served-score records, and
logs without keys, bodies or PII. One deployment for the module (its own online store and lake: the
fraud test world; its own fraud model name, trained after the service started)."""

from __future__ import annotations

import asyncio
import time

import httpx
import mlflow
import pyarrow.compute as pc
import pytest
from mlflow import MlflowClient

from paylake import contracts
from paylake.ml.fraud.feature_build import silver_connection
from paylake.ml.fraud.online import RedisOnlineStore, publish_state
from paylake.ml.fraud.scorer import FraudScorer
from paylake.ml.logs.data import read_sessions, split
from paylake.serving import records, schemas
from paylake.serving.auth import KEYS_FILE_NAME, add_key, operator_key
from paylake.serving.deploy import up, wait_ready
from paylake.serving.sample import recent_transactions
from paylake.stores import lake

ALIAS = "serving-test"  # set once the service runs: it starts with no model under this alias
PREFIX = "serving_test"  # the service's own keys in the stack's online store
SECRET_AMOUNT = 4321.987  # sent once; must not appear in any log line


@pytest.fixture(scope="module")
def service(settings, local_stack, fraud_lake, trained_fraud, trained_logs):
    """The service over the fraud world's online store and lake, serving the test fraud model under an alias
    that is not set yet (so it starts not ready), then set to v1."""
    from ray import serve

    from paylake.serving.app import APP_NAME

    keys_path = local_stack.stack_file.parent / KEYS_FILE_NAME
    keys = {"all": add_key(keys_path, "test-all", ["fraud:score", "logs:score", "admin"]),
            "fraud": add_key(keys_path, "test-fraud", ["fraud:score"]),
            "logs": add_key(keys_path, "test-logs", ["logs:score"])}
    publish_state(fraud_lake, RedisOnlineStore(fraud_lake, prefix=PREFIX))
    name = trained_fraud.model_name
    overrides = {"fraud_model": name, "logs_model": trained_logs.model_name, "poll_seconds": 1,
                 "online_prefix": PREFIX, "lake_root": fraud_lake.lake_root, "record_every_s": 0.5}
    client = MlflowClient(fraud_lake.mlflow_tracking_uri)
    client.set_registered_model_alias(trained_logs.model_name, ALIAS, trained_logs.version)
    # two fraud replicas from the start (bench/serve.py: 2.5x one replica's throughput at concurrency 128;
    # the autoscaler starting one in the middle of the 500-request burst costs more than it brings here)
    before = up(settings, {**overrides, "alias": ALIAS}, wait_s=0,
                deployments={"fraud": {"num_replicas": 2, "autoscaling_config": None}})
    client.set_registered_model_alias(name, ALIAS, "1")
    after = wait_ready(before["url"], 60, key=operator_key(settings))
    yield {"url": before["url"], "keys": keys, "before": before, "after": after, "name": name}
    serve.delete(APP_NAME)


def post(service, path: str, body=None, key: str | None = "all", **kwargs) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {service['keys'][key]}"
    return httpx.post(service["url"] + path, json=body, headers=headers, timeout=60, **kwargs)


def test_readyz_is_false_before_the_models_load_and_true_after(service):
    assert service["before"]["ready"] is False
    assert service["before"]["models"]["fraud"]["loaded"] is False
    assert f"no {service['name']}@{ALIAS}" in service["before"]["models"]["fraud"]["error"]
    assert service["before"]["models"]["logs"]["loaded"] is True
    assert service["after"]["ready"] is True
    assert service["after"]["models"]["fraud"]["version"] == "1"
    assert httpx.get(service["url"] + "/healthz").json() == {"status": "alive"}
    assert "/v1/fraud/score" in httpx.get(service["url"] + "/openapi.json").json()["paths"]


def test_both_endpoints_score_valid_input(service, fraud_lake, log_lake, trained_logs):
    txns = recent_transactions(fraud_lake, 3)
    one = post(service, "/v1/fraud/score?explain=all", txns[0], headers={"X-Request-ID": "req-42"})
    assert one.status_code == 200, one.text
    assert one.headers["x-request-id"] == "req-42" and one.json()["request_id"] == "req-42"
    (result,) = one.json()["results"]
    assert 0.0 <= result["fraud_probability"] <= 1.0 and result["decision"] in ("fraud", "legit")
    assert len(result["top_features"]) == 5 and result["model"] == {"name": service["name"], "version": "1"}
    assert result["decision"] == ("fraud" if result["fraud_probability"] >= result["threshold"] else "legit")
    many = post(service, "/v1/fraud/score", txns)
    assert many.status_code == 200 and [r["transactionid"] for r in many.json()["results"]] == \
        [t["transactionid"] for t in txns]
    for r in many.json()["results"]:  # by default only flagged payments carry their reasons
        assert (len(r["top_features"]) == 5) == (r["decision"] == "fraud")
    assert all(r["top_features"] == [] for r in post(service, "/v1/fraud/score?explain=none", txns).json()["results"])
    assert post(service, "/v1/fraud/score?explain=some", txns).status_code == 422

    sessions = split(read_sessions(log_lake).sessions)
    anomalous = next(s for s in sessions["test"] if s.anomalous)
    normal = sessions["train"][0]
    lines = [{k: v for k, v in line.items() if k in schemas.LogLine.model_fields and v is not None}
             for line in anomalous.lines]
    for line in lines:
        line["timestamp"] = line["timestamp"].isoformat() if "timestamp" in line else None
    flagged = post(service, "/v1/logs/score", {"session_id": anomalous.session_id, "lines": lines})
    assert flagged.status_code == 200, flagged.text
    body = flagged.json()
    assert body["decision"] == "anomalous" and body["anomalous_lines"]
    assert body["anomalous_lines"][0]["expected"] and body["session_id"] == anomalous.session_id
    assert body["model"] == {"name": trained_logs.model_name, "version": trained_logs.version}
    passed = post(service, "/v1/logs/score", {"lines": [{"message": line["message"],
                                                          "error_severity": line.get("error_severity"),
                                                          "state_code": line.get("state_code"),
                                                          "statement": line.get("statement")}
                                                         for line in normal.lines]})
    assert passed.status_code == 200 and passed.json()["decision"] == "normal", passed.text


def test_auth_size_and_field_errors(service, fraud_lake):
    txn = recent_transactions(fraud_lake, 1)[0]
    assert post(service, "/v1/fraud/score", txn, key=None).status_code == 401
    assert httpx.post(service["url"] + "/v1/fraud/score", json=txn,
                      headers={"Authorization": "Bearer pl_not-a-key"}).status_code == 401
    assert post(service, "/v1/fraud/score", txn, key="logs").status_code == 403
    assert post(service, "/v1/logs/score", {"lines": [{"message": "x"}]}, key="fraud").status_code == 403
    assert post(service, "/v1/admin/reload", key="fraud").status_code == 403
    assert post(service, "/v1/admin/reload", key="all").status_code == 401, "an admin key alone is not enough"

    too_big = post(service, "/v1/logs/score", {"lines": [{"message": "x" * 10_000}] * 40})
    too_big = post(service, "/v1/logs/score", {"lines": [{"message": "x" * 10_000}] * 40})
    assert too_big.status_code == 413 and "larger than" in too_big.json()["detail"]
    negative = post(service, "/v1/fraud/score", dict(txn, amount_eur=-5))
    assert negative.status_code == 422
    assert any(err["loc"][-1] == "amount_eur" for err in negative.json()["detail"])
    assert post(service, "/v1/fraud/score", [txn] * (schemas.MAX_TRANSACTIONS + 1)).status_code == 422
    smuggled = post(service, "/v1/fraud/score", dict(txn, card_number="4111111111111111"))
    assert smuggled.status_code == 422
    assert "4111111111111111" not in smuggled.text, "a refused value is never echoed"
    assert ("card_number", "extra_forbidden") in [(e["loc"][-1], e["type"]) for e in smuggled.json()["detail"]]
    assert "4321.5" not in post(service, "/v1/fraud/score", dict(txn, amount_eur="-4321.5")).text
    assert post(service, "/v1/logs/score", {"lines": []}).status_code == 422
    assert post(service, "/v1/fraud/score", dict(txn, datetime="2026-01-01T00:00:00")).status_code == 422  # naive


def test_the_online_score_equals_the_batch_models_score_on_batch_features(service, fraud_lake):
    import numpy as np

    table = lake.read_table(fraud_lake, contracts.FRAUD_FEATURES.uri(fraud_lake)).sort_by("datetime")
    row = table.slice(int(table.num_rows * 0.9), 1).to_pylist()[0]
    con = silver_connection(fraud_lake)
    try:
        (txn,) = con.execute("select transactionid, datetime, customerid, merchantid, paymentmethodid, deviceid,"
                             " locationid, amount_eur from events where transactionid = ?",
                             [row["transactionid"]]).fetchall()
    finally:
        con.close()
    publish_state(fraud_lake, RedisOnlineStore(fraud_lake, prefix=PREFIX), row["datetime"])  # the state just before it
    body = dict(zip(["transactionid", "datetime", "customerid", "merchantid", "paymentmethodid", "deviceid",
                     "locationid", "amount_eur"], txn))
    body["datetime"] = body["datetime"].isoformat()
    answer = post(service, "/v1/fraud/score", {k: v for k, v in body.items() if v is not None})
    assert answer.status_code == 200, answer.text
    model = FraudScorer.load(fraud_lake, service["name"], "1")
    batch_score = float(model.scores(table.slice(int(table.num_rows * 0.9), 1))[0])
    assert answer.json()["results"][0]["fraud_probability"] == pytest.approx(batch_score, rel=1e-9, abs=1e-12)
    assert np.isfinite(batch_score)


async def _storm(url: str, key: str, bodies: list[dict], concurrency: int) -> list[httpx.Response | Exception]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=600) as client:
        async def one(body):
            try:
                return await client.post(url + "/v1/fraud/score", json=body,
                                         headers={"Authorization": f"Bearer {key}"})
            except httpx.HTTPError as exc:
                return exc
        return await asyncio.gather(*(one(b) for b in bodies))


def test_500_concurrent_requests_are_all_answered(service, fraud_lake):
    txns = recent_transactions(fraud_lake, 50)
    bodies = [dict(txns[i % len(txns)], amount_eur=round(10 + i * 0.37, 2)) for i in range(500)]
    bodies[7]["amount_eur"] = SECRET_AMOUNT
    answers = asyncio.run(_storm(service["url"], service["keys"]["fraud"], bodies, 500))
    failures = [a if isinstance(a, Exception) else (a.status_code, a.text[:200]) for a in answers
                if isinstance(a, Exception) or a.status_code != 200]
    assert failures == []


def test_a_burst_on_one_card_over_two_replicas_scores_each_payment_on_every_earlier_one(service, fraud_lake):
    """20 payments of one new card, sent at once to the two fraud replicas: every payment is recorded once, and
    each answer equals scoring the burst one payment at a time in the order the store recorded them (no
    replica read the card's state without a payment the other had recorded before)."""
    import datetime as dt
    import uuid

    from paylake.ml.fraud.online import transactions_features
    from paylake.stores.online import drop_prefix

    store = RedisOnlineStore(fraud_lake, prefix=PREFIX)
    as_of = dt.datetime.fromisoformat(store.client.get(f"{PREFIX}:as_of"))
    start = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ids = 9 * 10**11 + int(uuid.uuid4().int % 10**9)  # entities the world does not know: only the burst counts
    bodies = [{"transactionid": 8 * 10**12 + ids % 10**6 * 100 + i, "datetime": (start + dt.timedelta(seconds=3 * i)
                                                                                ).isoformat(),
               "customerid": ids, "merchantid": ids + 1, "paymentmethodid": ids + 2, "deviceid": ids + 3,
               "amount_eur": round(5 + 1.5 * i, 2)} for i in range(20)]
    answers = asyncio.run(_storm(service["url"], service["keys"]["fraud"], bodies, 20))
    assert all(not isinstance(a, Exception) and a.status_code == 200 for a in answers), answers
    order = store.client.hgetall(f"{PREFIX}:{store.current()}:order")
    seqs = {int(b["transactionid"]): int(order[str(b["transactionid"])]) for b in bodies}
    assert len(set(seqs.values())) == 20, "each payment recorded once"

    serial = RedisOnlineStore(fraud_lake, prefix=f"burst{uuid.uuid4().hex[:8]}")
    try:
        publish_state(fraud_lake, serial, as_of)
        results = {a.json()["results"][0]["transactionid"]: a.json()["results"][0] for a in answers}
        versions = {r["model"]["version"] for r in results.values()}
        assert len(versions) == 1
        model = FraudScorer.load(fraud_lake, service["name"], versions.pop())
        for body in sorted(bodies, key=lambda b: seqs[b["transactionid"]]):
            txn = dict(body, datetime=dt.datetime.fromisoformat(body["datetime"]))
            (row,) = transactions_features(serial, [txn], record=True)
            expected = model.explain([row])[0]["fraud_probability"]
            assert results[body["transactionid"]]["fraud_probability"] == pytest.approx(expected, rel=1e-9), body
    finally:
        serial.close()
        drop_prefix(fraud_lake, serial.prefix)


def test_a_fraud_replica_killed_under_load_fails_no_request(service, fraud_lake):
    """kill -9 of one of the two fraud replicas while 8 clients score: every request is answered 200 (the
    ingress retries a call whose replica died on the other one); the recovery time is reported."""
    import os
    import signal

    from ray.util.state import list_actors

    txns = recent_transactions(fraud_lake, 20)
    victims = [a for a in list_actors(address=fraud_lake.ray_dashboard_url, filters=[("state", "=", "ALIVE")],
                                      limit=1000)
               if "fraud" in (a.class_name or "") and "ServeReplica" in (a.class_name or "")]
    assert len(victims) == 2, [a.class_name for a in victims]
    statuses: list[int] = []
    answered: list[float] = []

    async def stream():
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=8), timeout=60) as http:
            deadline = time.monotonic() + 12
            killed = asyncio.Event()

            async def worker(n: int):
                i = n
                while time.monotonic() < deadline:
                    response = await http.post(service["url"] + "/v1/fraud/score", json=txns[i % len(txns)],
                                               headers={"Authorization": f"Bearer {service['keys']['fraud']}"})
                    statuses.append(response.status_code)
                    answered.append(time.monotonic())
                    i += 8
                    if len(statuses) == 40 and not killed.is_set():
                        killed.set()
                        os.kill(victims[0].pid, signal.SIGKILL)
                        answered.append(-time.monotonic())  # the kill's time, marked negative

            await asyncio.gather(*(worker(n) for n in range(8)))

    asyncio.run(stream())
    assert len(statuses) > 80 and set(statuses) == {200}, sorted(set(statuses))
    kill_at = -min(t for t in answered if t < 0)
    after = sorted(t for t in answered if t > kill_at)
    gaps = [b - a for a, b in zip([kill_at, *after], after)]
    print(f"replica killed: {len(after)} answers after it, longest gap {max(gaps):.2f} s")
    wait_ready(service["url"], 60, key=operator_key(fraud_lake))  # Serve restarts the replica


def test_promotion_switches_the_answering_version_under_load_without_failure(service, fraud_lake):
    client = MlflowClient(fraud_lake.mlflow_tracking_uri)
    first = client.get_model_version(service["name"], "1")
    mlflow.set_tracking_uri(fraud_lake.mlflow_tracking_uri)
    second = mlflow.register_model(first.source, service["name"])  # the same model again: only the alias moves
    txns = recent_transactions(fraud_lake, 20)
    seen: list[str] = []
    failures: list = []

    async def stream():
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(limits=limits, timeout=60) as http:
            promoted = asyncio.Event()
            deadline = time.monotonic() + 60

            async def worker(n: int):
                i = n
                while time.monotonic() < deadline and not (promoted.is_set() and seen[-20:] == [second.version] * 20):
                    response = await http.post(service["url"] + "/v1/fraud/score", json=txns[i % len(txns)],
                                               headers={"Authorization": f"Bearer {service['keys']['fraud']}"})
                    i += 8
                    if response.status_code != 200:
                        failures.append((response.status_code, response.text[:200]))
                        continue
                    seen.append(response.json()["results"][0]["model"]["version"])
                    if len(seen) == 30 and not promoted.is_set():
                        client.set_registered_model_alias(service["name"], ALIAS, second.version)
                        promoted.set()
            await asyncio.gather(*(worker(n) for n in range(8)))

    asyncio.run(stream())
    assert failures == []
    new = second.version
    assert seen[:30] == ["1"] * 30 and new in seen and seen[-20:] == [new] * 20, seen
    assert httpx.get(service["url"] + "/v1/models").status_code == 401  # a key is required
    models = httpx.get(service["url"] + "/v1/models",
                       headers={"Authorization": f"Bearer {service['keys']['fraud']}"}).json()
    assert models["fraud"]["version"] == second.version


def test_scored_transactions_are_recorded_in_the_lake_without_pii(service, fraud_lake):
    from ray import serve

    from paylake.serving.app import APP_NAME

    serve.get_deployment_handle("fraud", app_name=APP_NAME).flush_records.remote().result()
    rows = lake.read_table(fraud_lake, contracts.SERVED_FRAUD_SCORES.uri(fraud_lake))
    assert rows.schema.names == records.SCHEMA.names
    assert rows.num_rows >= 50 and "req-42" in rows["request_id"].to_pylist()  # the id the client sent
    assert len(set(pc.unique(rows["model_version"]).to_pylist())) >= 2  # before and after the promotion
    assert pc.min(rows["latency_ms"]).as_py() > 0


def test_no_log_line_holds_a_key_a_body_or_pii(service, local_stack):
    from paylake.stack.services import RayHead

    logs = RayHead().temp_dir(local_stack.context()) / "session_latest" / "logs"
    text = "\n".join(p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in
                     (".log", ".out", ".err") and ("serve" in p.name or "worker" in p.name))
    assert "/v1/fraud/score" in text  # the access log is there
    for secret in [*service["keys"].values(), str(SECRET_AMOUNT), "4111111111111111"]:
        assert secret not in text


def test_admin_calls_need_an_sso_token_with_a_second_factor(service, settings, monkeypatch):
    """The admin scope: the API key, plus an ID token of the configured issuer (the local stack's own, minted
    by 'paylake operators token' once an enrolled operator's TOTP code checks) showing MFA."""
    import time
    from pathlib import Path

    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from paylake.security import operators, sso, totp
    from tests.conftest import run_cli

    enrolment = operators.enroll(settings, "op-serve", replace=True)
    result = run_cli(settings, monkeypatch, "operators", "token", "--operator", "op-serve", "--totp",
                     totp.code_at(enrolment.secret, time.time()))
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]

    def admin(id_token: str | None) -> httpx.Response:
        return post(service, "/v1/admin/reload", headers={"X-Paylake-Id-Token": id_token} if id_token else {})

    assert admin(token).status_code == 200
    assert post(service, "/v1/admin/reload", key="fraud", headers={"X-Paylake-Id-Token": token}).status_code == 403
    refused = admin(None)
    assert refused.status_code == 401 and "X-Paylake-Id-Token" in refused.json()["detail"]
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256",
                        headers={"kid": jwt.get_unverified_header(token)["kid"]})
    assert "signature" in admin(forged).json()["detail"]
    no_mfa = sso.mint_local(settings, "op-serve")
    issuer_key = serialization.load_pem_private_key(
        (Path(settings.serving.oidc_jwks_file).parent / "issuer.key").read_bytes(), password=None)
    stripped = jwt.encode({**jwt.decode(no_mfa, options={"verify_signature": False}), "amr": ["pwd"]}, issuer_key,
                          algorithm="ES256", headers={"kid": jwt.get_unverified_header(no_mfa)["kid"]})
    assert "second factor" in admin(stripped).json()["detail"]
    expired = sso.mint_local(settings, "op-serve", now=time.time() - 3600)
    assert "expired" in admin(expired).json()["detail"]
