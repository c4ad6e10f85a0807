"""The scoring application on Ray Serve: a FastAPI ingress composing two model deployments.

    ingress (FastAPI, auth, limits, request ids)
      ├── handle → fraud  (online features from the store → LightGBM, @serve.batch, records to the lake)
      └── handle → logs   (log keys → LSTM next-key model, @serve.batch)

Each model deployment loads ``models:/<name>@<alias>`` and watches the alias
(``poll_seconds``; ``POST /v1/admin/reload`` asks at once): a promotion is
picked up without restarting replicas (``paylake.serving.models.ModelSlot``).
A replica starts even when no version is registered yet: ``/readyz`` says 503
until both models are loaded.

Options (``ServeOptions``) come from ``serve/config.yaml``'s ``args`` or from
``paylake serve up``. Connection settings come from the environment of the Ray
nodes (``PAYLAKE_*``, or the stack file named by ``PAYLAKE_STACK_FILE``, which
the local Ray head carries): never through deployment arguments, which Serve
stores in its controller. ``online_prefix`` and ``lake_root`` redirect the
online store and the records (a test's or benchmark's own world): names, not
secrets. Replicas get no OLTP credentials: they touch the online store (Redis),
the registry and the lake's served-score table only.

Every scoring batch logs its stages (validation, store read, features, predict and
explain, record) at debug level and exports them as the Ray histogram
``paylake_serving_stage_ms`` (tag ``stage``) with ``paylake_serving_batch_size``.
A model not loaded, an overloaded replica or a dead one answers 503 with
``Retry-After``; the ingress retries a call whose replica died once on another
(scoring is idempotent by transaction id: the store counts a payment once).
"""

import asyncio
import logging
import threading
import time
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from ray import serve

from paylake.errors import ContractError, PaylakeError
from paylake.serving import schemas
from paylake.serving.asgi import BodyLimit, RequestId
from paylake.serving.auth import AuthError, LiveKeyring
from paylake.serving.models import ModelNotReady
from paylake.settings import Settings, load_settings

log = logging.getLogger("paylake.serving")

APP_NAME = "paylake"


@dataclass(frozen=True)
class ServeOptions:
    fraud_model: str = "paylake-fraud"
    logs_model: str = "paylake-logseq"
    alias: str = "champion"
    poll_seconds: float = 10.0  # how often replicas ask the registry where the alias points
    max_batch_size: int = 32  # @serve.batch, chosen with bench/serve.py
    batch_wait_s: float = 0.005
    max_body_bytes: int = 256 * 1024
    top_features: int = 5
    record_scores: bool = True  # served scores to gold/serving/fraud_score
    # each flush is one Delta commit per replica: at 2 s, two replicas under load kept the local S3 server at
    # ~50 % of a core (log listings and commits), taking CPU from scoring on 2 cores
    record_every_s: float = 10.0
    record_in_store: bool = True  # a scored payment moves its entities' online state forward
    online_prefix: str | None = None  # the online store's key prefix (default: the settings')
    lake_root: str | None = None

    @classmethod
    def from_args(cls, args: dict | None) -> "ServeOptions":
        args = dict(args or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(args) - known)
        if unknown:
            raise PaylakeError(f"unknown serve option(s) {unknown}: choose from {sorted(known)}")
        return cls(**args)


NO_OLTP = "postgresql://replica-without-oltp-access@invalid.invalid/none"


def replica_settings(options: ServeOptions) -> Settings:
    """The node's settings without the OLTP credentials (a replica has no business there), redirected to the
    options' lake (when given)."""
    from pydantic import SecretStr

    settings = load_settings()
    update: dict[str, Any] = {"postgres_dsn": SecretStr(NO_OLTP)}
    if options.lake_root:
        update["lake_root"] = options.lake_root
    return settings.model_copy(update=update)


class _StageMetrics:
    """Ray metrics of the scoring stages (created once per replica)."""

    def __init__(self) -> None:
        from ray.util import metrics

        self.stage = metrics.Histogram("paylake_serving_stage_ms", description="time of one scoring stage per batch",
                                       boundaries=[0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
                                       tag_keys=("stage",))
        self.batch = metrics.Histogram("paylake_serving_batch_size", description="payments per scoring batch",
                                       boundaries=[1, 2, 4, 8, 16, 32, 64, 128])

    def observe(self, stages: dict[str, float], size: int) -> None:
        for name, ms in stages.items():
            self.stage.observe(ms, tags={"stage": name})
        self.batch.observe(size)


class _Watcher:
    """Polls a model slot in a thread (the replica's event loop never waits for a load)."""

    def __init__(self, slot, every_s: float) -> None:
        self.slot, self.every_s = slot, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{slot.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.slot.refresh()
            self._stop.wait(self.every_s)



class _ModelDeployment:
    """What both model deployments share: the options, the node's settings, the slot of ``name@alias``
    watched in a thread, the batch options, ``info`` and ``reload``."""

    def _start(self, options: dict, name_of, load, batched) -> None:
        """``batched``: the deployment's ``@serve.batch`` method, given the options' batch size and wait."""
        from paylake.serving.models import ModelSlot, alias_resolver

        self.options = ServeOptions(**options)
        self.settings = replica_settings(self.options)
        name = name_of(self.options)
        self.slot = ModelSlot(name, self.options.alias, alias_resolver(self.settings, name, self.options.alias),
                              lambda version: load(self.settings, name, version))
        self.slot.refresh()
        self.watcher = _Watcher(self.slot, self.options.poll_seconds)
        batched.set_max_batch_size(self.options.max_batch_size)
        batched.set_batch_wait_timeout_s(self.options.batch_wait_s)

    def info(self) -> dict:
        return self.slot.info()

    def reload(self) -> dict:
        self.slot.refresh()
        return self.slot.info()


# ----------------------------------------------------------------------------- fraud
@serve.deployment(name="fraud", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class FraudDeployment(_ModelDeployment):
    def __init__(self, options: dict) -> None:
        from paylake.ml.fraud.online import RedisOnlineStore
        from paylake.ml.fraud.scorer import FraudScorer
        from paylake.serving.records import ScoreRecorder

        self._start(options, lambda o: o.fraud_model, FraudScorer.load, self.score)
        self.store = RedisOnlineStore(self.settings, prefix=self.options.online_prefix)
        self.recorder = ScoreRecorder(self.settings, self.options.record_every_s) if self.options.record_scores \
            else None
        self.metrics = _StageMetrics()

    def info(self) -> dict:
        info = self.slot.info()
        if self.recorder is not None:
            info["records_written"] = self.recorder.written
            info["records_dropped"] = self.recorder.dropped
        return info

    def flush_records(self) -> int:
        return self.recorder.flush() if self.recorder is not None else 0

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score(self, bodies: list[list[dict]]) -> list[list[dict]]:
        """One call per request body (its transactions, one or a list); calls are batched across requests,
        single and list bodies alike, into one read of the online store."""
        results = await asyncio.to_thread(self._score, [item for items in bodies for item in items])
        out, at = [], 0
        for items in bodies:
            out.append(results[at:at + len(items)])
            at += len(items)
        return out

    def _score(self, items: list[dict]) -> list[dict]:
        """``items``: {"txn": validated transaction, "request_id": ...}; one result dict per item (an
        ``error`` key with a status when that item could not be scored)."""
        from paylake.ml.fraud.features import validate_transaction
        from paylake.ml.fraud.online import from_aggregates
        from paylake.serving.records import record

        started = time.perf_counter()
        stages: dict[str, float] = {}

        def lap(name: str, since: float) -> float:
            now = time.perf_counter()
            stages[name] = (now - since) * 1000
            return now

        try:
            loaded = self.slot.get()
        except ModelNotReady as exc:
            return [{"error": str(exc), "status": 503}] * len(items)
        out: list[dict] = [{} for _ in items]
        ok = []
        for i, item in enumerate(items):
            try:
                validate_transaction(item["txn"])
                ok.append(i)
            except ContractError as exc:
                out[i] = {"error": str(exc), "status": 422}
        at = lap("validate", started)
        txns = [items[i]["txn"] for i in ok]
        try:  # one atomic script: record (idempotent by transaction id), then read, in order
            raw = self.store.read(txns, record=self.options.record_in_store) if txns else []
        except Exception as exc:  # noqa: BLE001 - the store: retryable
            log.warning("online features failed: %s", type(exc).__name__)
            error = {"error": f"online feature store unavailable ({type(exc).__name__}): retry", "status": 503}
            return [error if i in ok else out[i] for i in range(len(items))]
        at = lap("store_read", at)
        rows = [from_aggregates(txn, values) for txn, values in zip(txns, raw)]
        at = lap("features", at)
        if rows:
            predictions = loaded.model.explain(rows, self.options.top_features,
                                               [items[i].get("explain", "flagged") for i in ok])
            at = lap("predict_explain", at)
            latency_ms = (time.perf_counter() - started) * 1000
            for i, row, prediction in zip(ok, rows, predictions):
                txn = items[i]["txn"]
                out[i] = {"transactionid": txn["transactionid"], **prediction, "defaulted": list(row["defaulted"]),
                          "model": {"name": loaded.name, "version": loaded.version}}
                if self.recorder is not None:
                    self.recorder.add(record(items[i]["request_id"], txn["transactionid"], loaded.name,
                                             loaded.version, prediction, len(row["defaulted"]), latency_ms))
            lap("record", at)
        self.metrics.observe(stages, len(items))
        log.debug("scored %d: %s", len(items), " ".join(f"{k}={v:.1f}ms" for k, v in stages.items()))
        return out

    def __del__(self) -> None:
        if getattr(self, "recorder", None) is not None:
            self.recorder.close()


# ----------------------------------------------------------------------------- logs
@serve.deployment(name="logs", max_ongoing_requests=64, ray_actor_options={"num_cpus": 0})
class LogsDeployment(_ModelDeployment):
    def __init__(self, options: dict) -> None:
        from paylake.ml.logs.scorer import load_log_scorer

        self._start(options, lambda o: o.logs_model, load_log_scorer, self.score_one)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def score_one(self, items: list[dict]) -> list[dict]:
        return await asyncio.to_thread(self._score, items)

    def _score(self, items: list[dict]) -> list[dict]:
        from paylake.ml.logs.data import clean_lines
        from paylake.ml.logs.keys import session_keys

        try:
            loaded = self.slot.get()
        except ModelNotReady as exc:
            return [{"error": str(exc), "status": 503}] * len(items)
        out: list[dict] = [{} for _ in items]
        keys, roles, ok = [], [], []
        for i, item in enumerate(items):
            lines, reason = clean_lines(item["lines"])
            if reason is not None:
                out[i] = {"error": f"log session not scored: {reason}", "status": 422}
                continue
            keys.append(session_keys(lines))
            roles.append(item.get("user"))
            ok.append(i)
        for i, verdict in zip(ok, loaded.model.score_keys(keys, roles) if keys else []):
            out[i] = {"decision": verdict["decision"], "score": verdict["score"],
                      "anomalous_lines": verdict["lines"], "model": {"name": loaded.name, "version": loaded.version}}
        return out


# ----------------------------------------------------------------------------- ingress
api = FastAPI(title="paylake scoring API", version="1",
              description="Fraud and database-session anomaly scores. Keys: 'Authorization: Bearer <key>'.")
LIMITS = {"max_body_bytes": ServeOptions.max_body_bytes}
_KEYS: dict[str, LiveKeyring] = {"ring": LiveKeyring(None)}
_ADMIN: dict = {"tokens": None}


class _LimitFromOptions(BodyLimit):
    def __init__(self, app) -> None:
        super().__init__(app, LIMITS["max_body_bytes"])


schemas.install_error_handlers(api)
api.add_middleware(_LimitFromOptions)
api.add_middleware(RequestId)  # outermost: a 413 carries the request id too


def _key(authorization: Annotated[str | None, Header()] = None,
         x_api_key: Annotated[str | None, Header()] = None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return x_api_key


def require(scope: str | None):
    def check(key: Annotated[str | None, Depends(_key)],
              x_paylake_id_token: Annotated[str | None, Header()] = None) -> str:
        try:
            name = _KEYS["ring"].get().authorize(key, scope).name
        except AuthError as exc:
            raise HTTPException(exc.status, str(exc),
                                headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None) from None
        if scope == "admin":  # the admin scope also needs single sign-on with a second factor
            from paylake.security.oidc import OidcError
            from paylake.security.sso import AdminTokens

            try:
                claims = (_ADMIN["tokens"] or AdminTokens(None)).check(x_paylake_id_token)
            except OidcError as exc:
                raise HTTPException(401, f"admin call refused: {exc}") from None
            log.info("admin call by %s (SSO subject %s)", name, claims.get("sub"))
        return name
    return check


RETRY_AFTER_S = "1"


def _raise_for(result: dict) -> None:
    if "error" in result:
        headers = {"Retry-After": RETRY_AFTER_S} if result["status"] == 503 else None
        raise HTTPException(result["status"], result["error"], headers=headers)


async def _call(method, payload, what: str):
    """A deployment call from the ingress: retried once when its replica died (the router then picks a live
    one; scoring is idempotent by transaction id), a 503 with Retry-After when the replicas are overloaded
    or none is alive."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError

    for attempt in (1, 2):
        try:
            return await method.remote(payload)
        except BackPressureError:
            raise HTTPException(503, f"the {what} model is overloaded: retry",
                                headers={"Retry-After": RETRY_AFTER_S}) from None
        except (ActorDiedError, ActorUnavailableError, RayActorError) as exc:
            log.warning("%s replica lost (%s), attempt %d", what, type(exc).__name__, attempt)
            if attempt == 2:
                raise HTTPException(503, f"no {what} replica answered: retry",
                                    headers={"Retry-After": RETRY_AFTER_S}) from None


@serve.deployment(name="ingress", max_ongoing_requests=256, ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ingress:
    def __init__(self, fraud, logs, options: dict) -> None:
        self.fraud, self.logs = fraud, logs
        self.options = ServeOptions(**options)
        LIMITS["max_body_bytes"] = self.options.max_body_bytes
        RequestId.echo = False  # Serve's proxy puts its request id (the client's, when given) in the response
        _KEYS["ring"] = LiveKeyring(replica_settings(self.options))
        from paylake.security.sso import AdminTokens, admin_config

        _ADMIN["tokens"] = AdminTokens(admin_config(replica_settings(self.options)))
        if not len(_KEYS["ring"].get()):
            log.warning("no API key is configured: every scoring request will get 401 ('paylake serve key')")

    @api.get("/healthz", summary="the ingress is alive")
    async def healthz(self) -> dict:
        return {"status": "alive"}

    @api.get("/readyz", summary="both models are loaded")
    async def readyz(self) -> JSONResponse:
        fraud, logs = await asyncio.gather(self.fraud.info.remote(), self.logs.info.remote())
        ready = fraud["loaded"] and logs["loaded"]
        return JSONResponse({"ready": ready, "fraud": fraud["loaded"], "logs": logs["loaded"]},
                            status_code=200 if ready else 503)

    @api.get("/v1/models", summary="what each model deployment serves, from which alias, since when (any key)")
    async def models(self, _: Annotated[str, Depends(require(None))]) -> dict:
        fraud, logs = await asyncio.gather(self.fraud.info.remote(), self.logs.info.remote())
        return {"fraud": fraud, "logs": logs}

    @api.post("/v1/admin/reload", summary="ask the model deployments to check their alias now")
    async def reload(self, _: Annotated[str, Depends(require("admin"))]) -> dict:
        fraud, logs = await asyncio.gather(self.fraud.reload.remote(), self.logs.reload.remote())
        return {"fraud": fraud, "logs": logs}

    @api.post("/v1/fraud/score", response_model=schemas.FraudResponse,
              summary=f"score one transaction or a list of up to {schemas.MAX_TRANSACTIONS}")
    async def fraud_score(self, request: Request, _: Annotated[str, Depends(require("fraud:score"))],
                          body: Annotated[schemas.FraudRequest, Body()],
                          explain: schemas.ExplainMode = "flagged") -> dict:
        request_id = request.scope["state"]["request_id"]
        transactions = body if isinstance(body, list) else [body]
        results = await _call(self.fraud.score, [{"txn": t.model_dump(), "request_id": request_id,
                                                  "explain": explain} for t in transactions], "fraud")
        for result in results:
            _raise_for(result)
        return {"request_id": request_id, "results": results}

    @api.post("/v1/logs/score", response_model=schemas.LogResponse,
              summary="score one database session from its log lines")
    async def logs_score(self, request: Request, _: Annotated[str, Depends(require("logs:score"))],
                         body: schemas.LogSessionRequest) -> dict:
        request_id = request.scope["state"]["request_id"]
        lines = [line.model_dump(exclude_none=True) for line in body.lines]
        result = await _call(self.logs.score_one, {"lines": lines, "user": body.user}, "logs")
        _raise_for(result)
        return {"request_id": request_id, "session_id": body.session_id, **result}


def bind_app(options: ServeOptions, per_deployment: dict | None = None):
    """The application graph with ``options`` and each deployment's Serve options (name → options)."""
    opts, per_deployment = asdict(options), per_deployment or {}
    fraud = FraudDeployment.options(**per_deployment.get("fraud", {})).bind(opts)
    logs = LogsDeployment.options(**per_deployment.get("logs", {})).bind(opts)
    return Ingress.options(**per_deployment.get("ingress", {})).bind(fraud, logs, opts)


def build_app(args: dict | None = None):
    """The application (Serve's builder: ``import_path: paylake.serving.app:build_app`` with ``args``)."""
    return bind_app(ServeOptions.from_args(args))
