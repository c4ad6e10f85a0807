"""OIDC token verification: keys made here, tokens signed with PyJWT, the JWKS inline or served on 127.0.0.1."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from paylake.errors import PaylakeError
from paylake.security import oidc
from paylake.security.oidc import JwksCache, OidcConfig, OidcError

ISSUER, AUDIENCE, NOW = "https://idp.example.com/realms/paylake", "paylake-api", 1_800_000_000


@pytest.fixture(scope="module")
def keys() -> dict:
    return {"rsa-1": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ec-1": ec.generate_private_key(ec.SECP256R1()),
            "rsa-2": rsa.generate_private_key(public_exponent=65537, key_size=2048)}


def jwk_of(kid: str, private_key) -> dict:
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk, alg = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True), "RS256"
    else:
        jwk, alg = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True), "ES256"
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


def jwks_of(keys: dict, *kids: str) -> dict:
    return {"keys": [jwk_of(kid, keys[kid]) for kid in kids]}


@pytest.fixture(scope="module")
def config(keys) -> OidcConfig:
    return OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_of(keys, "rsa-1", "ec-1"))


def claims(**overrides) -> dict:
    base = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": NOW + 300, "iat": NOW - 10, "nbf": NOW - 10,
            "scope": "openid profile paylake:admin"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(keys: dict, kid: str = "rsa-1", *, key: str | None = None, alg: str | None = None, **overrides) -> str:
    alg = alg or ("ES256" if kid.startswith("ec") else "RS256")
    return jwt.encode(claims(**overrides), keys[key or kid], algorithm=alg, headers={"kid": kid})


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def refused(token: str, config: OidcConfig, message: str, **kwargs) -> None:
    with pytest.raises(OidcError) as caught:
        oidc.verify_token(token, config, now=kwargs.pop("now", NOW), **kwargs)
    assert str(caught.value) == message
    assert "\n" not in message and token.split(".")[-1] not in message and token.split(".")[1] not in message


@pytest.mark.parametrize("kid", ["rsa-1", "ec-1"])
def test_a_valid_admin_token_gives_its_claims(keys, config, kid):
    got = oidc.verify_token(sign(keys, kid), config, now=NOW)
    assert got["sub"] == "alice" and got["iss"] == ISSUER


def test_the_clock_defaults_to_now(keys, config):
    now = int(time.time())
    assert oidc.verify_token(sign(keys, exp=now + 60, iat=now, nbf=now), config)["sub"] == "alice"


def test_expiry_with_leeway(keys, config):
    assert oidc.verify_token(sign(keys, exp=NOW - 30), config, now=NOW)  # within the 60 s leeway
    refused(sign(keys, exp=NOW - 61), config, "the token has expired")
    refused(sign(keys, exp=None), config, "the token has no exp claim")
    refused(sign(keys, exp="tomorrow"), config, "the token's exp claim is not a number of seconds")


def test_tokens_from_the_future_are_refused(keys, config):
    refused(sign(keys, nbf=NOW + 120), config,
            "the token is not valid yet (its nbf is in the future: check the clocks)")
    refused(sign(keys, iat=NOW + 120, nbf=None), config,
            "the token was issued in the future (its iat is ahead: check the clocks)")
    assert oidc.verify_token(sign(keys, nbf=NOW + 30, iat=NOW + 30), config, now=NOW)


def test_wrong_issuer(keys, config):
    refused(sign(keys, iss="https://evil.example.com"), config,
            f"the token was issued by 'https://evil.example.com', not the configured issuer {ISSUER}")
    refused(sign(keys, iss=None), config, "the token has no iss claim")


def test_wrong_audience(keys, config):
    refused(sign(keys, aud="another-api"), config, "the token is for the audience 'another-api', not paylake-api")
    refused(sign(keys, aud=None), config, "the token has no aud claim")
    assert oidc.verify_token(sign(keys, aud=["another-api", AUDIENCE]), config, now=NOW)


def test_missing_admin_scope(keys, config):
    refused(sign(keys, scope="openid profile"), config, "the token lacks the paylake:admin scope")
    refused(sign(keys, scope="openid paylake:admin-read"), config, "the token lacks the paylake:admin scope")
    refused(sign(keys, scope=None), config, "the token lacks the paylake:admin scope")


def test_a_groups_claim_may_be_a_list(keys):
    config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=jwks_of(keys, "rsa-1"), admin_claim="groups",
                        admin_value="paylake admins")
    assert oidc.verify_token(sign(keys, groups=["staff", "paylake admins"]), config, now=NOW)
    assert oidc.verify_token(sign(keys, groups="paylake admins"), config, now=NOW)  # one value, not split
    refused(sign(keys, groups=["staff", "paylake"]), config, "the token's groups claim does not include paylake admins")


def test_unknown_or_missing_kid(keys, config):
    refused(sign(keys, "rsa-2"), config, "the token's key id 'rsa-2' is not among the issuer's keys")
    token = jwt.encode(claims(), keys["rsa-1"], algorithm="RS256")
    refused(token, config, "the token has no kid header: the issuer's key cannot be chosen")


def test_another_key_with_the_same_kid(keys, config):
    refused(sign(keys, "rsa-1", key="rsa-2"), config, "the token's signature does not verify against the issuer's keys")


def test_alg_none_is_refused(keys, config):
    header = b64(json.dumps({"alg": "none", "kid": "rsa-1", "typ": "JWT"}).encode())
    token = f"{header}.{b64(json.dumps(claims()).encode())}."
    with pytest.raises(OidcError, match=r"^the token is unsigned \(alg none\): only signed tokens are accepted$"):
        oidc.verify_token(token, config, now=NOW)


def test_hs256_keyed_with_the_public_key_is_refused(keys, config):
    """Algorithm confusion: an HMAC keyed with the issuer's public key (which anyone can read)."""
    public_pem = keys["rsa-1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'rsa-1'}).encode())}.{b64(json.dumps(claims()).encode())}"
    token = f"{signing_input}.{b64(hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest())}"
    refused(token, config, "the token is signed with a shared secret ('HS256'), not with the issuer's private key")


def test_a_tampered_payload_is_refused(keys, config):
    header, _, signature = sign(keys, scope="openid").split(".")
    forged = f"{header}.{b64(json.dumps(claims(scope='openid paylake:admin')).encode())}.{signature}"
    refused(forged, config, "the token's signature does not verify against the issuer's keys")


def test_an_algorithm_not_allowed_or_not_fitting_the_key(keys, config):
    refused(sign(keys, alg="RS384"), config, "the token's algorithm 'RS384' is not one of the allowed RS256, ES256")
    # an ES256 header naming the RSA key: the key is bound to RS256
    token = jwt.encode(claims(), keys["ec-1"], algorithm="ES256", headers={"kid": "rsa-1"})
    refused(token, config, "the token's algorithm ES256 does not match the issuer's key 'rsa-1' ('RS256')")
    bare = {"keys": [{k: v for k, v in jwk_of("rsa-1", keys["rsa-1"]).items() if k != "alg"}]}
    refused(token, OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=bare),
            "the issuer's key 'rsa-1' cannot verify ES256 tokens (wrong key type, curve or size)")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "!!.??.**"])
def test_malformed_tokens(config, token):
    with pytest.raises(OidcError, match="^the token is not a well-formed JWT"):
        oidc.verify_token(token, config, now=NOW)


def test_bad_configurations_are_refused(keys):
    jwks = jwks_of(keys, "rsa-1")
    with pytest.raises(OidcError, match="must be among .*not \\['HS256'\\]"):
        OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, algorithms=("RS256", "HS256"))
    with pytest.raises(OidcError, match="either jwks_url or an inline jwks"):
        OidcConfig(issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(OidcError, match="must be https"):
        OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url="http://idp.example.com/jwks")
    with pytest.raises(PaylakeError, match="needs an issuer and an audience"):
        OidcConfig(issuer="", audience=AUDIENCE, jwks=jwks)


class JwksServer:
    """The issuer's JWKS endpoint on 127.0.0.1, in a thread; ``jwks`` can change while it runs."""

    def __init__(self, jwks: dict) -> None:
        self.jwks, self.requests = jwks, 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                body, status = json.dumps(outer.jwks).encode(), 200 if self.path == "/jwks" else 500
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_the_jwks_is_fetched_cached_refetched_on_rotation_and_its_outage_is_clear(keys):
    served = JwksServer(jwks_of(keys, "rsa-1"))
    try:
        url = f"{served.url}/jwks"
        config = OidcConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=url)
        clock = [0.0]
        cache = JwksCache(url, clock=lambda: clock[0])
        assert oidc.verify_token(sign(keys, "rsa-1"), config, cache, now=NOW)
        assert oidc.verify_token(sign(keys, "rsa-1"), config, cache, now=NOW)
        assert (served.requests, cache.fetches) == (1, 1)  # cached

        served.jwks = jwks_of(keys, "rsa-1", "ec-1")  # the issuer rotates in a new key
        clock[0] = 20.0
        assert oidc.verify_token(sign(keys, "ec-1"), config, cache, now=NOW)
        assert served.requests == 2  # the unknown kid made it refetch once
        refused(sign(keys, "rsa-2"), config, "the token's key id 'rsa-2' is not among the issuer's keys", cache=cache)
        assert served.requests == 2  # a made-up kid right after does not hammer the issuer

        clock[0] = 400.0  # past the 300 s TTL
        assert oidc.verify_token(sign(keys, "ec-1"), config, cache, now=NOW)
        assert served.requests == 3

        assert oidc.verify_token(sign(keys, "rsa-1"), config, now=NOW)  # without a cache: fetched on the call
        assert served.requests == 4

        broken = JwksCache(f"{served.url}/broken")
        with pytest.raises(OidcError, match=f"^the issuer's JWKS at {served.url}/broken cannot be fetched: HTTP 500$"):
            broken.key("rsa-1")
    finally:
        served.stop()

    clock[0] = 800.0
    message = f"^the issuer's JWKS at {url} cannot be fetched: ConnectError .+"
    with pytest.raises(OidcError, match=message):
        oidc.verify_token(sign(keys, "rsa-1"), config, cache, now=NOW)
    with pytest.raises(OidcError, match=message):  # remembered: no new timeout for every request
        oidc.verify_token(sign(keys, "rsa-1"), config, cache, now=NOW)
    with pytest.raises(OidcError, match=message):
        oidc.verify_token(sign(keys, "rsa-1"), config, now=NOW)
