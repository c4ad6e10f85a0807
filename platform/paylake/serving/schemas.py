"""Request and response bodies of the scoring API (pydantic: a bad field is a 422 naming it).

Unknown fields are refused (``extra="forbid"``): a client cannot slip a card
number or an e-mail into a request the service would then hold. A 422 names the
field and the rule it broke, never the value sent (``field_errors``): a card
number sent by mistake is not echoed back into a client's logs.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MAX_TRANSACTIONS = 100  # per request to /v1/fraud/score
MAX_LOG_LINES = 5_000  # per session to /v1/logs/score
MAX_TEXT = 20_000  # characters of one log message or statement


class FraudTransaction(BaseModel):
    """One payment as the payment system sees it when it asks for a score (ids, time, amount; no PII)."""

    model_config = ConfigDict(extra="forbid")

    transactionid: int = Field(ge=1)
    datetime: AwareDatetime
    customerid: int = Field(ge=1)
    merchantid: int = Field(ge=1)
    paymentmethodid: int = Field(ge=1)
    deviceid: int | None = Field(None, ge=1)
    locationid: int | None = Field(None, ge=1)
    amount_eur: float = Field(gt=0, allow_inf_nan=False)


FraudRequest = FraudTransaction | Annotated[list[FraudTransaction], Field(min_length=1, max_length=MAX_TRANSACTIONS)]
# which answers carry their top features (query parameter ``explain``): the flagged ones by default (the reasons
# a decline or a review needs; contributions cost ~50x a score), all of them, or none
ExplainMode = Literal["flagged", "all", "none"]


class Contribution(BaseModel):
    feature: str
    value: float | str | None  # a category's name for categorical features
    contribution: float


class ModelRef(BaseModel):
    name: str
    version: str


class FraudResult(BaseModel):
    transactionid: int
    fraud_probability: float
    decision: str  # "fraud" (at or above the model's threshold) or "legit"
    threshold: float
    top_features: list[Contribution]  # empty unless explained (query parameter explain: flagged, all, none)
    defaulted: list[str]  # features computed from defaults: entities the online store does not know
    model: ModelRef


class FraudResponse(BaseModel):
    request_id: str
    results: list[FraudResult]


class LogLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(max_length=MAX_TEXT)
    error_severity: str | None = Field(None, max_length=32)
    state_code: str | None = Field(None, max_length=5)
    statement: str | None = Field(None, max_length=MAX_TEXT)
    timestamp: dt.datetime | None = None


class LogSessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(None, max_length=128)
    user: str | None = Field(None, max_length=63, description="the session's database role (the role rule)")
    lines: list[LogLine] = Field(min_length=1, max_length=MAX_LOG_LINES)


class AnomalousLine(BaseModel):
    line: int
    seen: str
    known: bool
    expected: list[str]


class LogResponse(BaseModel):
    request_id: str
    session_id: str | None
    decision: str  # "anomalous" or "normal"
    score: float
    anomalous_lines: list[AnomalousLine]
    model: ModelRef


# the rule parameters a 422 may show (numbers and lengths of the schema, never what the client sent)
_RULE_CONTEXT = ("gt", "ge", "lt", "le", "min_length", "max_length", "multiple_of", "pattern")


def field_errors(errors: list[dict]) -> list[dict]:
    """Pydantic's errors without the refused values: location, rule (``type``), message and the rule's
    parameters. Pydantic puts the value in ``input`` (and may quote it in ``ctx``): both are dropped."""
    out = []
    for error in errors:
        entry = {"loc": list(error.get("loc", ())), "type": error.get("type"), "msg": error.get("msg")}
        context = {k: v for k, v in (error.get("ctx") or {}).items()
                   if k in _RULE_CONTEXT and isinstance(v, int | float | str)}
        if context:
            entry["ctx"] = context
        out.append(entry)
    return out


def install_error_handlers(api) -> None:
    """422 bodies from ``field_errors`` on a FastAPI app."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    async def refused(_request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": field_errors(exc.errors())}, status_code=422)

    api.add_exception_handler(RequestValidationError, refused)
