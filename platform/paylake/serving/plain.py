"""The same fraud scoring without Ray: one FastAPI + uvicorn process (the baseline of bench/serve.py).

Same request model, auth, body limit, online features (``transactions_features``)
and LightGBM model as the Serve application; what it lacks is what Serve adds:
batching across requests, replicas, autoscaling, zero-downtime promotion.

    python -m paylake.serving.plain --port 8100 [--model paylake-fraud] [--alias champion]
"""

import argparse
import asyncio
from typing import Annotated

from fastapi import Body, Depends, FastAPI, HTTPException, Request

from paylake.serving import app as serving_app
from paylake.serving import schemas
from paylake.serving.asgi import BodyLimit, RequestId
from paylake.settings import load_settings


def create_app(model_name: str, alias: str = "champion", max_body_bytes: int = 256 * 1024) -> FastAPI:
    from paylake.ml.fraud.online import RedisOnlineStore, transactions_features
    from paylake.ml.fraud.scorer import FraudScorer
    from paylake.serving.auth import LiveKeyring
    from paylake.serving.models import alias_resolver

    settings = load_settings()
    version = alias_resolver(settings, model_name, alias)()
    if version is None:
        raise SystemExit(f"no {model_name}@{alias}: run 'paylake train fraud' first")
    model = FraudScorer.load(settings, model_name, version)
    store = RedisOnlineStore(settings)
    serving_app._KEYS["ring"] = LiveKeyring(settings)
    from paylake.security.sso import AdminTokens, admin_config

    serving_app._ADMIN["tokens"] = AdminTokens(admin_config(settings))
    api = FastAPI(title="paylake fraud scoring (plain uvicorn)")
    schemas.install_error_handlers(api)
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    api.add_middleware(RequestId)

    def score(txns: list[dict], explain: str) -> list[dict]:
        rows = transactions_features(store, txns, record=True)
        return [{"transactionid": txn["transactionid"], **prediction, "defaulted": list(row["defaulted"]),
                 "model": {"name": model_name, "version": version}}
                for txn, row, prediction in zip(txns, rows, model.explain(rows, which=explain))]

    @api.post("/v1/fraud/score", response_model=schemas.FraudResponse)
    async def fraud_score(request: Request, _: Annotated[str, Depends(serving_app.require("fraud:score"))],
                          body: Annotated[schemas.FraudRequest, Body()],
                          explain: schemas.ExplainMode = "flagged") -> dict:
        txns = [t.model_dump() for t in (body if isinstance(body, list) else [body])]
        try:
            results = await asyncio.to_thread(score, txns, explain)
        except Exception as exc:  # noqa: BLE001
            raise HTTPException(503, f"scoring failed ({type(exc).__name__}): retry") from None
        return {"request_id": request.scope["state"]["request_id"], "results": results}

    @api.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    return api


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--model", default="paylake-fraud")
    parser.add_argument("--alias", default="champion")
    args = parser.parse_args()
    uvicorn.run(create_app(args.model, args.alias), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False)


if __name__ == "__main__":
    main()
