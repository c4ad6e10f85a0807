"""Pure logic of the scoring service: API keys and scopes, the body limit and request ids, the model slot's
atomic swap, option parsing."""

from __future__ import annotations

import asyncio
import json

import pytest

from paylake.errors import ConfigError, PaylakeError
from paylake.serving.asgi import BodyLimit, RequestId
from paylake.serving.auth import AuthError, Keyring, add_key, hash_key, load_entries
from paylake.serving.models import ModelNotReady, ModelSlot
from paylake.settings import ApiKeyEntry


def test_keys_are_stored_as_hashes_and_scopes_are_enforced(tmp_path):
    path = tmp_path / "api_keys.json"
    key = add_key(path, "risk-engine", ["fraud:score"])
    assert key.startswith("pl_") and key not in path.read_text()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    ring = Keyring(load_entries(path))
    assert ring.authorize(key, "fraud:score").name == "risk-engine"
    with pytest.raises(AuthError) as missing:
        ring.authorize(None, "fraud:score")
    with pytest.raises(AuthError) as wrong:
        ring.authorize(key + "x", "fraud:score")
    with pytest.raises(AuthError) as scope:
        ring.authorize(key, "admin")
    assert (missing.value.status, wrong.value.status, scope.value.status) == (401, 401, 403)
    again = add_key(path, "risk-engine", ["fraud:score", "logs:score"])  # a new key replaces the old one
    assert len(load_entries(path)) == 1 and hash_key(again) == load_entries(path)[0].sha256
    with pytest.raises(ConfigError, match="scopes must be among"):
        add_key(path, "x", ["fraud:write"])
    with pytest.raises(ConfigError, match="unknown scope"):
        Keyring([ApiKeyEntry(name="x", sha256="0" * 64, scopes=["root"])])


async def _call(app, body: bytes, headers: list | None = None, chunks: int = 1):
    sent = []
    size = -(-len(body) // chunks) if body else 1
    parts = [body[i:i + size] for i in range(0, len(body), size)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    await app(scope, receive, send)
    return sent, scope


async def _echo(scope, receive, send):
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_the_body_limit_answers_413_before_the_application_and_replays_smaller_bodies():
    app = BodyLimit(_echo, max_bytes=10)
    sent, _ = asyncio.run(_call(app, b"x" * 11, [(b"content-length", b"11")]))
    assert sent[0]["status"] == 413 and "larger than 10 bytes" in json.loads(sent[1]["body"])["detail"]
    sent, _ = asyncio.run(_call(app, b"y" * 30, chunks=3))  # no content-length: counted as it arrives
    assert sent[0]["status"] == 413
    sent, _ = asyncio.run(_call(app, b"0123456789", chunks=2))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"0123456789"


def test_a_request_id_is_echoed_when_well_formed_and_made_otherwise():
    app = RequestId(_echo)
    sent, scope = asyncio.run(_call(app, b"", [(b"x-request-id", b"abc-1")]))
    assert (b"x-request-id", b"abc-1") in sent[0]["headers"] and scope["state"]["request_id"] == "abc-1"
    sent, scope = asyncio.run(_call(app, b"", [(b"x-request-id", b"bad id\n<script>")]))
    made = scope["state"]["request_id"]
    assert made != "bad id" and len(made) == 32 and (b"x-request-id", made.encode()) in sent[0]["headers"]


def test_the_model_slot_swaps_atomically_and_keeps_the_old_version_when_a_load_fails():
    registry = {"alias": None}
    loads = []

    def load(version):
        if version == "3":
            raise OSError("artifact store down")
        loads.append(version)
        return f"model-{version}"

    slot = ModelSlot("m", "champion", lambda: registry["alias"], load)
    assert slot.refresh() is False and "no m@champion" in slot.info()["error"]
    with pytest.raises(ModelNotReady):
        slot.get()
    registry["alias"] = "1"
    assert slot.refresh() is True and slot.refresh() is False and loads == ["1"]
    in_flight = slot.get()  # a request holding version 1
    registry["alias"] = "2"
    slot.refresh()
    assert in_flight.model == "model-1" and slot.get().model == "model-2"
    registry["alias"] = "3"
    assert slot.refresh() is False
    assert slot.get().version == "2" and "OSError" in slot.info()["error"]
    assert "artifact store down" not in slot.info()["error"], "no raw exception text reaches a client"


def test_serve_options_refuse_unknown_names():
    from paylake.serving.app import ServeOptions

    assert ServeOptions.from_args({"poll_seconds": 2}).poll_seconds == 2
    with pytest.raises(PaylakeError, match="unknown serve option"):
        ServeOptions.from_args({"pol_seconds": 2})


def test_field_errors_name_the_field_and_the_rule_never_the_value():
    from pydantic import ValidationError

    from paylake.serving.schemas import FraudTransaction, field_errors

    body = {"transactionid": 1, "datetime": "2026-01-01T00:00:00+00:00", "customerid": 1, "merchantid": 1,
            "paymentmethodid": 1, "amount_eur": -77.5, "card_number": "4111111111111111"}
    with pytest.raises(ValidationError) as raised:
        FraudTransaction.model_validate(body)
    errors = field_errors(raised.value.errors())
    assert sorted((e["loc"][-1], e["type"]) for e in errors) == [("amount_eur", "greater_than"),
                                                                 ("card_number", "extra_forbidden")]
    assert next(e for e in errors if e["type"] == "greater_than")["ctx"] == {"gt": 0}
    text = json.dumps(errors)
    assert "4111111111111111" not in text and "77.5" not in text


def test_the_operator_key_is_made_once_and_kept(tmp_path):
    from paylake.serving.auth import OPERATOR, operator_key
    from paylake.settings import ServingSettings, Settings

    keys = tmp_path / "api_keys.json"
    settings = Settings(serving=ServingSettings(api_keys_file=str(keys)))
    key = operator_key(settings)
    assert key and operator_key(settings) == key
    assert (tmp_path / "operator.key").stat().st_mode & 0o077 == 0
    assert Keyring(load_entries(keys)).authorize(key, "admin").name == OPERATOR
