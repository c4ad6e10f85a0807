"""The local KMS: moto's KMS API behind request signatures, key policies, TLS and a state file.

AWS KMS in production; on a laptop this server speaks the same API (boto3
reaches it with the stack's endpoint). What this entrypoint adds to moto's
in-memory KMS backend:

- **who is calling**: every request must carry a valid SigV4 signature by one
  of the principals in ``principals.json`` (access key id -> name and secret,
  written by ``paylake stack up``); a missing, unknown or wrong signature gets
  ``UnrecognizedClientException`` / ``InvalidSignatureException``, a request
  older or newer than 15 minutes ``InvalidSignatureException``;
- **what they may do**: the key's policy (AWS's JSON format, the one
  ``CreateKey``/``PutKeyPolicy`` store) is evaluated for the caller's ARN
  ``arn:aws:iam::<account>:user/<name>`` and the action (``kms:Decrypt``...),
  explicit Deny first; calls that name no key (CreateKey, ListKeys,
  ListAliases) need the principal's ``"admin": true``. A refusal is
  ``AccessDeniedException``, as AWS answers;
- **durability**: the backend's keys, aliases and policies are written to
  ``state.pkl`` (atomically, mode 0600) after every call that changes them and
  read back at start: keys survive ``stack down`` / ``up``;
- **TLS** with the stack's server certificate (``--certfile/--keyfile``).

    python -m paylake.stack.kms_server --host 127.0.0.1 --port 24000 --data .paylake/kms \
        --certfile .paylake/tls/server.pem --keyfile .paylake/tls/server.key
"""

from __future__ import annotations

import copyreg
import datetime as dt
import fnmatch
import hmac
import json
import logging
import os
import pickle
import re
import signal
import ssl
import sys
import threading
from pathlib import Path

ACCOUNT_ID = "123456789012"  # moto's account: ARNs of the local stack's principals use it
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/kms/aws4_request,"
                   r"\s*SignedHeaders=(?P<signed>[^,]+),\s*Signature=(?P<sig>[0-9a-f]{64})")
_READ_ONLY = {"DescribeKey", "ListKeys", "ListAliases", "GetKeyPolicy", "ListKeyRotations", "GetKeyRotationStatus",
              "ListResourceTags", "Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
              "GenerateRandom", "ReEncrypt", "GenerateMac", "VerifyMac", "Sign", "Verify", "GetPublicKey",
              "ListGrants"}
_NO_KEY = {"CreateKey", "ListKeys", "ListAliases", "GenerateRandom"}
MAX_SKEW = dt.timedelta(minutes=15)


def principal_arn(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT_ID}:user/{name}"


# ----------------------------------------------------------------------------- policy evaluation (pure)
def policy_allows(policy: dict, caller_arn: str, action: str) -> bool:
    """AWS key-policy evaluation for one caller and action: an explicit Deny wins, else any Allow."""
    allowed = False
    statements = policy.get("Statement", [])
    for statement in statements if isinstance(statements, list) else [statements]:
        if not (_matches_principal(statement.get("Principal"), caller_arn)
                and _matches_action(statement.get("Action", []), action)):
            continue
        if statement.get("Effect") == "Deny":
            return False
        if statement.get("Effect") == "Allow":
            allowed = True
    return allowed


def _matches_principal(principal, caller_arn: str) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, dict):
        return False
    names = principal.get("AWS", [])
    names = [names] if isinstance(names, str) else names
    root = f"arn:aws:iam::{ACCOUNT_ID}:root"
    # AWS: the account root in a key policy delegates to IAM; this local KMS has no IAM, so root means root only
    return any(n == "*" or n == caller_arn or (n == ACCOUNT_ID and caller_arn == root) for n in names)


def _matches_action(actions, action: str) -> bool:
    actions = [actions] if isinstance(actions, str) else actions
    return any(fnmatch.fnmatchcase(f"kms:{action}".lower(), a.lower()) for a in actions)


# ----------------------------------------------------------------------------- SigV4
def verify_signature(method: str, url: str, headers: dict[str, str], body: bytes,
                     principals: dict[str, dict], now: dt.datetime, service: str = "kms") -> tuple[str, str]:
    """Return (principal name, error code or "") for a request; recomputes the SigV4 signature with botocore
    (S3's variant for ``service="s3"``: the payload is the x-amz-content-sha256 header, paths not re-encoded)."""
    from botocore.auth import S3SigV4Auth, SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    lower = {k.lower(): v for k, v in headers.items()}
    pattern = _AUTH if service == "kms" else re.compile(_AUTH.pattern.replace("/kms/", f"/{service}/"))
    match = pattern.fullmatch(lower.get("authorization", "").strip())
    if not match:
        return "", "MissingAuthenticationToken"
    principal = principals.get(match["akid"])
    if principal is None:
        return "", "UnrecognizedClientException"
    stamp = lower.get("x-amz-date", "")
    try:
        when = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "", "InvalidSignatureException"
    if abs(now - when) > MAX_SKEW:
        return "", "InvalidSignatureException"
    signed = match["signed"].split(";")
    request = AWSRequest(method=method, url=url, data=body, headers={h: lower.get(h, "") for h in signed})
    request.context["timestamp"] = stamp
    auth = (S3SigV4Auth if service == "s3" else SigV4Auth)(Credentials(match["akid"], principal["secret"]), service,
                                                           match["region"])
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["sig"]):
        return "", "InvalidSignatureException"
    return principal.get("name") or principal.get("role", ""), ""


# ----------------------------------------------------------------------------- persistence
def _reduce_private_key(key):
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return _load_private_key, (pem,)


def _load_private_key(pem: bytes):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, password=None)


def _register_key_pickling() -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    for key in (rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP256R1())):
        copyreg.pickle(type(key), _reduce_private_key)


class State:
    """moto's KMS backend of the stack's account and region, saved to a file after each change."""

    def __init__(self, folder: Path, region: str) -> None:
        from moto.backends import get_backend

        _register_key_pickling()
        self.file = folder / "state.pkl"
        self.lock = threading.Lock()
        self.backend = get_backend("kms")[ACCOUNT_ID][region]
        if self.file.is_file():
            saved = pickle.loads(self.file.read_bytes())  # noqa: S301 - our own file, mode 0600
            self.backend.keys.update(saved["keys"])

    def save(self) -> None:
        with self.lock:
            body = pickle.dumps({"keys": dict(self.backend.keys)})
            tmp = self.file.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(body)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.file)

    def key_for(self, action: str, body: dict) -> str | None:
        """The key id a request acts on (None: no key named)."""
        from moto.kms.utils import _deserialize_ciphertext_blob

        named = body.get("KeyId") or body.get("TargetKeyId") or body.get("DestinationKeyId")
        if action == "ReEncrypt" or (action == "Decrypt" and not named):
            import base64

            try:
                return _deserialize_ciphertext_blob(base64.b64decode(body.get("CiphertextBlob", ""))).key_id
            except Exception:  # noqa: BLE001 - moto answers InvalidCiphertextException
                return None
        if action == "DeleteAlias":  # the key the alias points at now
            alias = body.get("AliasName", "")
            return next((k.id for k in self.backend.keys.values() if alias in k.aliases), None)
        if not named:
            return None
        try:
            return self.backend.any_id_to_key_id(named)
        except Exception:  # noqa: BLE001 - unknown key: moto answers NotFoundException
            return None


class Guard:
    """WSGI middleware: signature, then key policy, then moto; saves the state after a change."""

    def __init__(self, app, state: State, principals_file: Path) -> None:
        self.app = app
        self.state = state
        self.principals_file = principals_file
        self._principals: tuple[float, dict] = (0.0, {})

    def principals(self) -> dict[str, dict]:
        mtime = self.principals_file.stat().st_mtime if self.principals_file.is_file() else 0.0
        if mtime != self._principals[0]:
            loaded = json.loads(self.principals_file.read_text()) if mtime else {}
            self._principals = (mtime, loaded)
        return self._principals[1]

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        import io

        environ["wsgi.input"] = io.BytesIO(body)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        host = headers.get("host", f"{environ['SERVER_NAME']}:{environ['SERVER_PORT']}")
        query = environ.get("QUERY_STRING", "")
        url = f"https://{host}{environ.get('PATH_INFO', '/')}" + (f"?{query}" if query else "")
        action = headers.get("x-amz-target", "").rpartition(".")[2]
        name, error = verify_signature(environ["REQUEST_METHOD"], url, headers, body, self.principals(),
                                       dt.datetime.now(dt.UTC))
        if error:
            return _deny(start_response, error, "the request signature is missing, unknown or wrong", 403
                         if error != "MissingAuthenticationToken" else 400)
        try:
            request = json.loads(body or b"{}")
        except ValueError:
            return _deny(start_response, "SerializationException", "the body is not JSON", 400)
        principal = next(p for p in self.principals().values() if p["name"] == name)
        key_id = self.state.key_for(action, request)
        if key_id is None:
            if not principal.get("admin") and action in _NO_KEY | {"CreateAlias"}:
                return _deny(start_response, "AccessDeniedException",
                             f"User: {principal_arn(name)} is not authorized to perform: kms:{action}", 400)
        else:
            key = self.state.backend.keys.get(key_id)
            if key is not None and not policy_allows(json.loads(key.policy), principal_arn(name), action):
                return _deny(start_response, "AccessDeniedException",
                             f"User: {principal_arn(name)} is not authorized to perform: kms:{action} on resource: "
                             f"{key.arn} because no resource-based policy allows the kms:{action} action", 400)
            if key is not None and not key.enabled and action in ("Decrypt", "Encrypt", "GenerateDataKey",
                                                                 "ReEncrypt", "GenerateDataKeyWithoutPlaintext"):
                return _deny(start_response, "DisabledException", f"{key.arn} is disabled.", 400)
        result = self.app(environ, start_response)
        if action and action not in _READ_ONLY:
            self.state.save()
        return result


def _deny(start_response, code: str, message: str, status: int):
    body = json.dumps({"__type": code, "message": message}).encode()
    start_response(f"{status} {'Forbidden' if status == 403 else 'Bad Request'}",
                   [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))])
    return [body]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="folder of state.pkl and principals.json")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--certfile", type=Path, required=True)
    parser.add_argument("--keyfile", type=Path, required=True)
    args = parser.parse_args(argv)

    os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    args.data.mkdir(parents=True, exist_ok=True)
    state = State(args.data, args.region)
    app = create_backend_app("kms")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.certfile, args.keyfile)
    server = make_server(args.host, args.port, Guard(app.wsgi_app, state, args.data / "principals.json"),
                         threaded=True, ssl_context=context)

    def stop(*_) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever()
    state.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
