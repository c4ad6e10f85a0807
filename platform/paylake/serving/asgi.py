"""Two ASGI middlewares of the scoring API (Serve has no request-size option).

``BodyLimit`` answers 413 before the application sees a body larger than
``max_bytes``: at once from ``Content-Length``, else while the chunks arrive
(the body is buffered up to the limit, then replayed to the application).
``RequestId`` echoes a well-formed ``X-Request-ID`` or makes one, stores it in
``scope["state"]["request_id"]`` and adds it to every response's headers (Ray
Serve's proxy already puts its request id in the request's and the response's
headers: ``RequestId.echo = False`` there, so the id is sent once).
"""

from __future__ import annotations

import json
import re
import uuid

REQUEST_ID_HEADER = b"x-request-id"
_WELL_FORMED = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


async def _send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = {"detail": f"request body larger than {self.max_bytes} bytes"}
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await _send_json(send, 413, too_large)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_json(send, 413, too_large)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def request_id_of(headers) -> str:
    given = dict(headers or []).get(REQUEST_ID_HEADER)
    return given.decode() if given and _WELL_FORMED.match(given) else uuid.uuid4().hex


class RequestId:
    echo = True  # False behind Serve's proxy, which echoes the same id itself

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = request_id_of(scope.get("headers"))
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_id(message):
            if message["type"] == "http.response.start" and self.echo:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (REQUEST_ID_HEADER, request_id.encode())]}
            await send(message)

        return await self.app(scope, receive, with_id)
