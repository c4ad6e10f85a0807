"""Single sign-on for the scoring API's admin scope: OIDC tokens from the configured issuer.

An admin call (``/v1/admin/*``) needs, besides an API key with the ``admin``
scope, an ID token of the company's identity provider in ``X-Paylake-Id-Token``:
signed by the issuer (verified against its JWKS, ``paylake.security.oidc``), for
the API's audience, holding the admin scope, and saying that the person passed a
second factor (``amr`` contains ``otp``, ``mfa`` or ``hwk``).

Production: the IdP (Okta, Entra ID, Cognito ...) issues the tokens; set
``PAYLAKE_SERVING__OIDC_ISSUER`` and ``__OIDC_JWKS_URL``. The local stack has an
issuer of its own (a P-256 key under ``<state>/tls/``, its JWKS beside it):
``paylake operators token`` checks an enrolled operator's TOTP code and mints a
five-minute token, as the IdP would after its own MFA.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from paylake.errors import ConfigError
from paylake.security.oidc import JwksCache, OidcConfig, OidcError, verify_token
from paylake.settings import Settings

LOCAL_ISSUER = "https://issuer.paylake.local"
AUDIENCE = "paylake-serve"
MFA_METHODS = {"otp", "mfa", "hwk", "swk"}
TOKEN_TTL_S = 300


def ensure_local_issuer(folder: Path) -> Path:
    """The stack's issuer key (0600) and its JWKS (public); returns the JWKS file."""
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    key_file, jwks_file = folder / "issuer.key", folder / "issuer-jwks.json"
    if not key_file.is_file():
        key = ec.generate_private_key(ec.SECP256R1())
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": _kid(jwk), "use": "sig", "alg": "ES256"})
    jwks_file.write_text(json.dumps({"keys": [jwk]}, indent=1))
    return jwks_file


def _kid(jwk: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, sort_keys=True).encode()
                          ).hexdigest()[:16]


def admin_config(settings: Settings) -> OidcConfig | None:
    """The admin scope's OIDC configuration (None: no issuer configured, admin calls are refused)."""
    serving = settings.serving
    if not serving.oidc_issuer:
        return None
    jwks = None
    if serving.oidc_jwks_file:
        path = Path(serving.oidc_jwks_file)
        if not path.is_file():
            raise ConfigError(f"the issuer's JWKS file {path} does not exist: fix PAYLAKE_SERVING__OIDC_JWKS_FILE")
        jwks = json.loads(path.read_text())
    return OidcConfig(issuer=serving.oidc_issuer, audience=serving.oidc_audience, jwks=jwks,
                      jwks_url=None if jwks is not None else serving.oidc_jwks_url,
                      admin_value=serving.oidc_admin_value, algorithms=("ES256", "RS256"),
                      ca_file=settings.tls_ca_file)


class AdminTokens:
    """Verifies admin ID tokens for one service process (the JWKS cached)."""

    def __init__(self, config: OidcConfig | None) -> None:
        self.config = config
        self.cache = JwksCache.for_config(config) if config is not None and config.jwks_url else None

    def check(self, token: str | None) -> dict:
        if self.config is None:
            raise OidcError("admin calls need single sign-on and no OIDC issuer is configured "
                            "(PAYLAKE_SERVING__OIDC_ISSUER)")
        if not token:
            raise OidcError("admin calls need an ID token of the identity provider in X-Paylake-Id-Token "
                            "('paylake operators token' on the local stack)")
        claims = verify_token(token, self.config, self.cache)
        methods = claims.get("amr") or []
        if not MFA_METHODS & set(methods if isinstance(methods, list) else [methods]):
            raise OidcError("the token does not show a second factor (amr lacks otp/mfa): sign in with MFA")
        return claims


def mint_local(settings: Settings, operator: str, *, ttl_s: int = TOKEN_TTL_S, now: float | None = None) -> str:
    """A token of the local stack's issuer for ``operator`` (callers check the operator's TOTP first)."""
    import jwt
    from cryptography.hazmat.primitives import serialization

    if settings.serving.oidc_issuer != LOCAL_ISSUER or not settings.serving.oidc_jwks_file:
        raise ConfigError("this stack's admin scope trusts another issuer: get the token from that identity "
                          "provider")
    folder = Path(settings.serving.oidc_jwks_file).parent
    key = serialization.load_pem_private_key((folder / "issuer.key").read_bytes(), password=None)
    kid = json.loads(Path(settings.serving.oidc_jwks_file).read_text())["keys"][0]["kid"]
    issued = int(now if now is not None else time.time())
    claims = {"iss": LOCAL_ISSUER, "aud": settings.serving.oidc_audience, "sub": operator, "iat": issued,
              "nbf": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex, "amr": ["otp"],
              "scope": f"openid {settings.serving.oidc_admin_value}"}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})
