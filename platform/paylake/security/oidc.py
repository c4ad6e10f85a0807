"""Verify an OIDC token (a JWT) from the configured issuer for the admin scope of an HTTP API.

The issuer's public keys come from its JWKS (``jwks_url``, cached by ``JwksCache``) or are given inline
(``jwks``, for tests and offline use). A token is accepted only when all of these hold, each refusal
being an ``OidcError`` with its own one-line message (never the token itself):

- it is a compact JWS whose ``alg`` is in ``config.algorithms``: asymmetric only, so ``none`` and the
  HS* family (an HMAC keyed with the issuer's *public* key: algorithm confusion) are refused outright;
- its ``kid`` names one of the issuer's signing keys, of the type and curve the algorithm needs, and the
  signature verifies with that key (with PyJWT, the key bound to that one algorithm);
- ``iss`` is the configured issuer, ``aud`` is or contains the audience, ``exp`` (required) is not past
  and ``nbf``/``iat`` are not in the future, all with ``leeway_s`` of clock skew;
- the admin claim holds the admin value: a string claim ``scope``/``scp`` is space-separated, any other
  string claim is one value, a list claim (``groups``, ``roles``) is a list of values.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt

from paylake.errors import PaylakeError

ASYMMETRIC = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
SPACE_SEPARATED = ("scope", "scp")
LOOPBACK = ("127.0.0.1", "::1", "localhost")
MAX_TOKEN_CHARS = 16_384
MAX_JWKS_BYTES = 1_000_000


class OidcError(PaylakeError):
    """An OIDC token or the issuer's keys were refused or could not be read."""


@dataclass(frozen=True)
class OidcConfig:
    """Where tokens come from, whom they are for and what makes one an admin's."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    jwks: dict | None = None  # inline JWKS (tests, offline): used instead of jwks_url
    admin_claim: str = "scope"
    admin_value: str = "paylake:admin"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: int = 60
    ca_file: str | None = None  # CA bundle to verify the JWKS URL's TLS certificate (default: the system's)

    def __post_init__(self) -> None:
        if not self.issuer or not self.audience:
            raise OidcError("the OIDC configuration needs an issuer and an audience")
        if (self.jwks_url is None) == (self.jwks is None):
            raise OidcError("the OIDC configuration needs either jwks_url or an inline jwks, not both nor neither")
        if self.jwks_url is not None:
            url = urlsplit(self.jwks_url)
            if not url.hostname or url.scheme not in ("https", "http"):
                raise OidcError(f"the OIDC jwks_url {self.jwks_url} is not an http(s) URL")
            if url.scheme == "http" and url.hostname not in LOOPBACK:
                raise OidcError(f"the OIDC jwks_url {self.jwks_url} must be https (plain http only to localhost)")
        bad = [alg for alg in self.algorithms if alg not in ASYMMETRIC]
        if not self.algorithms or bad:
            raise OidcError(f"the OIDC algorithms must be among {', '.join(ASYMMETRIC)}, not {bad or 'none'}")
        if not self.admin_claim or not self.admin_value:
            raise OidcError("the OIDC configuration needs an admin_claim and an admin_value")
        if self.leeway_s < 0:
            raise OidcError(f"the OIDC leeway must be 0 or more seconds, not {self.leeway_s}")


class JwksCache:
    """The issuer's signing keys by ``kid``, fetched over HTTPS and kept ``ttl_s`` seconds (thread-safe).

    A ``kid`` not in the cached set triggers one refetch (key rotation), at most once every
    ``min_refetch_s`` so that tokens with made-up ``kid`` s cannot hammer the issuer; a failed fetch is
    remembered for as long, so an issuer that is down does not cost every request a timeout.
    """

    def __init__(self, url: str, *, ca_file: str | None = None, ttl_s: float = 300.0, timeout_s: float = 5.0,
                 min_refetch_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.ca_file = ca_file
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.min_refetch_s = min_refetch_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, dict] | None = None
        self._fetched_at = 0.0
        self._failed_at: float | None = None
        self._failure = ""
        self.fetches = 0  # successful fetches, for tests and metrics

    @classmethod
    def for_config(cls, config: OidcConfig) -> JwksCache:
        """A cache of ``config.jwks_url``, verified with ``config.ca_file``."""
        if config.jwks_url is None:
            raise OidcError("the OIDC configuration has no jwks_url to fetch")
        return cls(config.jwks_url, ca_file=config.ca_file)

    def key(self, kid: str) -> dict | None:
        """The issuer's signing key ``kid`` (a JWK), refetching once if it is unknown; None if it is not there."""
        with self._lock:
            now = self._clock()
            if self._keys is None or now - self._fetched_at >= self.ttl_s:
                self._fetch(now)
            found = self._keys.get(kid)
            if found is None and now - self._fetched_at >= self.min_refetch_s:
                self._fetch(now)
                found = self._keys.get(kid)
            return found

    def _fetch(self, now: float) -> None:
        if self._failed_at is not None and now - self._failed_at < self.min_refetch_s:
            raise OidcError(self._failure)
        try:
            self._keys = index_jwks(self._download(), f"the issuer's JWKS at {self.url}")
        except OidcError as failed:
            self._failed_at, self._failure = now, str(failed)
            raise
        self._fetched_at, self._failed_at = now, None
        self.fetches += 1

    def _download(self) -> Any:
        cannot = f"the issuer's JWKS at {self.url} cannot be fetched"
        try:
            verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        except (OSError, ssl.SSLError) as e:
            raise OidcError(f"{cannot}: the CA file {self.ca_file} cannot be read ({_one_line(e)})") from None
        try:
            response = httpx.get(self.url, timeout=self.timeout_s, verify=verify, follow_redirects=False,
                                 headers={"Accept": "application/json"})
        except httpx.HTTPError as e:
            raise OidcError(f"{cannot}: {type(e).__name__} {_one_line(e)}".rstrip()) from None
        if response.status_code != 200:
            raise OidcError(f"{cannot}: HTTP {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise OidcError(f"{cannot}: the answer is larger than {MAX_JWKS_BYTES} bytes")
        try:
            return response.json()
        except ValueError:
            raise OidcError(f"{cannot}: the answer is not JSON") from None


def index_jwks(jwks: Any, what: str = "the inline JWKS") -> dict[str, dict]:
    """The signing keys of a JWKS by ``kid`` (keys without a ``kid`` or meant for encryption left out)."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise OidcError(f"{what} is not a JWKS: it has no list of keys")
    keys: dict[str, dict] = {}
    for jwk in jwks["keys"]:
        if isinstance(jwk, dict) and isinstance(jwk.get("kid"), str) and jwk.get("use", "sig") == "sig":
            keys.setdefault(jwk["kid"], jwk)
    return keys


def verify_token(token: str, config: OidcConfig, cache: JwksCache | None = None, now: float | None = None) -> dict:
    """The claims of ``token`` once it is proven to be an admin's token from the configured issuer.

    ``cache`` serves ``config.jwks_url`` (keep one per process; without it the JWKS is fetched on each
    call); an inline ``config.jwks`` needs none. ``now`` is a Unix time (default: the clock).
    """
    if not isinstance(token, str) or not token or token.count(".") != 2:
        raise OidcError("the token is not a well-formed JWT (three dot-separated parts)")
    if len(token) > MAX_TOKEN_CHARS:
        raise OidcError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise OidcError("the token is not a well-formed JWT (its header cannot be read)") from None
    alg = _check_algorithm(header.get("alg"), config)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcError("the token has no kid header: the issuer's key cannot be chosen")
    jwk = _find_key(kid, config, cache)
    claims = _verified_claims(token, jwk, kid, alg)
    _check_claims(claims, config, time.time() if now is None else now)
    return claims


def _check_algorithm(alg: Any, config: OidcConfig) -> str:
    if not isinstance(alg, str) or not alg:
        raise OidcError("the token's header names no algorithm")
    if alg.lower() == "none":
        raise OidcError("the token is unsigned (alg none): only signed tokens are accepted")
    if alg.upper().startswith("HS"):
        raise OidcError(f"the token is signed with a shared secret ({_show(alg)}), not with the issuer's private key")
    if alg not in config.algorithms:
        raise OidcError(f"the token's algorithm {_show(alg)} is not one of the allowed {', '.join(config.algorithms)}")
    return alg


def _find_key(kid: str, config: OidcConfig, cache: JwksCache | None) -> dict:
    if config.jwks is not None:
        jwk = index_jwks(config.jwks).get(kid)
    else:
        if cache is None:
            cache = JwksCache.for_config(config)
        elif cache.url != config.jwks_url:
            raise OidcError(f"the JWKS cache is for {cache.url}, not the configured jwks_url {config.jwks_url}")
        jwk = cache.key(kid)
    if jwk is None:
        raise OidcError(f"the token's key id {_show(kid)} is not among the issuer's keys")
    return jwk


def _verified_claims(token: str, jwk: dict, kid: str, alg: str) -> dict:
    if "alg" in jwk and jwk["alg"] != alg:
        raise OidcError(f"the token's algorithm {alg} does not match the issuer's key {_show(kid)} "
                        f"({_show(jwk['alg'])})")
    unfit = f"the issuer's key {_show(kid)} cannot verify {alg} tokens (wrong key type, curve or size)"
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
    except jwt.PyJWTError:
        raise OidcError(unfit) from None
    # the claims are checked below, against ``now`` and with messages of our own
    off = ("verify_exp", "verify_nbf", "verify_iat", "verify_aud", "verify_iss", "verify_sub", "verify_jti")
    options: dict[str, Any] = {"verify_signature": True, "enforce_minimum_key_length": True,
                               **dict.fromkeys(off, False)}
    try:
        return jwt.decode(token, key=key, algorithms=[alg], options=options)
    except jwt.InvalidSignatureError:
        raise OidcError("the token's signature does not verify against the issuer's keys") from None
    except jwt.InvalidKeyError:
        raise OidcError(unfit) from None
    except jwt.DecodeError:
        raise OidcError("the token is not a well-formed JWT (its payload or signature cannot be read)") from None
    except jwt.PyJWTError as e:
        raise OidcError(f"the token cannot be verified ({type(e).__name__})") from None


def _check_claims(claims: dict, config: OidcConfig, now: float) -> None:
    issuer = claims.get("iss")
    if issuer is None:
        raise OidcError("the token has no iss claim")
    if issuer != config.issuer:
        raise OidcError(f"the token was issued by {_show(issuer)}, not the configured issuer {config.issuer}")
    audience = claims.get("aud")
    if audience is None:
        raise OidcError("the token has no aud claim")
    audiences = [audience] if isinstance(audience, str) else audience if isinstance(audience, list) else []
    if config.audience not in audiences:
        raise OidcError(f"the token is for the audience {_show(audience)}, not {config.audience}")
    leeway = config.leeway_s
    expires = _number(claims, "exp", required=True)
    if now > expires + leeway:
        raise OidcError("the token has expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and now + leeway < not_before:
        raise OidcError("the token is not valid yet (its nbf is in the future: check the clocks)")
    issued = _number(claims, "iat")
    if issued is not None and now + leeway < issued:
        raise OidcError("the token was issued in the future (its iat is ahead: check the clocks)")
    if config.admin_value not in _claim_values(claims.get(config.admin_claim), config.admin_claim):
        if config.admin_claim in SPACE_SEPARATED:
            raise OidcError(f"the token lacks the {config.admin_value} scope")
        raise OidcError(f"the token's {config.admin_claim} claim does not include {config.admin_value}")


def _claim_values(value: Any, claim: str) -> list[str]:
    if isinstance(value, str):
        return value.split() if claim in SPACE_SEPARATED else [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _number(claims: dict, name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise OidcError(f"the token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OidcError(f"the token's {name} claim is not a number of seconds")
    return value


def _show(value: Any, limit: int = 80) -> str:
    """A claim or header value fit for a one-line message: printable, quoted, cut at ``limit``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = "".join(c if c.isprintable() else "?" for c in text)
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())
