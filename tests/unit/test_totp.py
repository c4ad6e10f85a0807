"""TOTP (RFC 6238): the RFC's own vectors, the window, replays, malformed codes, the provisioning URI."""

import base64
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from paylake.errors import PaylakeError
from paylake.security import totp
from paylake.security.totp import MfaError

SEEDS = {"sha1": b"12345678901234567890", "sha256": b"12345678901234567890123456789012",
         "sha512": b"1234567890123456789012345678901234567890123456789012345678901234"}

# RFC 6238 appendix B: time -> (SHA1, SHA256, SHA512), 8 digits, 30 s step
VECTORS = {59: ("94287082", "46119246", "90693936"),
           1111111109: ("07081804", "68084774", "25091201"),
           1111111111: ("14050471", "67062674", "99943326"),
           1234567890: ("89005924", "91819424", "93441116"),
           2000000000: ("69279037", "90698825", "38618901"),
           20000000000: ("65353130", "77737706", "47863826")}


def b32(seed: bytes) -> str:
    return base64.b32encode(seed).decode().rstrip("=")


@pytest.mark.parametrize("at", sorted(VECTORS))
@pytest.mark.parametrize("index,algorithm", list(enumerate(("sha1", "sha256", "sha512"))))
def test_the_rfc_6238_vectors(at, index, algorithm):
    secret = b32(SEEDS[algorithm])
    expected = VECTORS[at][index]
    assert totp.code_at(secret, at, digits=8, algorithm=algorithm) == expected
    assert totp.verify(secret, expected, now=at, digits=8, algorithm=algorithm, window=0) == at // 30


def test_six_digit_codes_are_the_last_six_of_the_eight():
    secret = b32(SEEDS["sha1"])
    assert totp.code_at(secret, 59) == "287082"
    assert totp.code_at(secret, 1111111109) == "081804"  # leading zero kept


def test_new_secrets_are_160_random_bits_in_base32_without_padding():
    one, two = totp.new_secret(), totp.new_secret()
    assert one != two and len(one) == 32 and "=" not in one
    assert len(base64.b32decode(one)) == 20
    assert totp.verify(one, totp.code_at(one, 1_000_000), now=1_000_000) == 1_000_000 // 30


def test_the_window_accepts_the_previous_and_next_steps_and_nothing_further():
    secret, now = totp.new_secret(), 1_700_000_015.0
    current = int(now // 30)
    for offset in (-1, 0, 1):
        assert totp.verify(secret, totp.code_at(secret, now + 30 * offset), now=now) == current + offset
    for offset in (-2, 2):
        with pytest.raises(MfaError, match="^the TOTP code is wrong or expired$"):
            totp.verify(secret, totp.code_at(secret, now + 30 * offset), now=now)
    with pytest.raises(MfaError, match="wrong or expired"):
        totp.verify(secret, totp.code_at(secret, now - 30), now=now, window=0)
    assert totp.verify(secret, totp.code_at(secret, now - 60), now=now, window=2) == current - 2


def test_a_wrong_code_or_another_secret_is_refused():
    secret, now = totp.new_secret(), 1_700_000_000.0
    right = totp.code_at(secret, now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    with pytest.raises(MfaError, match="wrong or expired"):
        totp.verify(secret, wrong, now=now, window=0)
    with pytest.raises(MfaError, match="wrong or expired"):
        totp.verify(totp.new_secret(), right, now=now, window=0)


def test_a_code_is_never_accepted_twice():
    secret, now = totp.new_secret(), 1_700_000_000.0
    used = totp.verify(secret, totp.code_at(secret, now), now=now)
    with pytest.raises(MfaError, match="^this TOTP code was already used: wait for the next one$"):
        totp.verify(secret, totp.code_at(secret, now), now=now + 5, last_step=used)
    with pytest.raises(MfaError, match="already used"):  # an older code still in the window is a replay too
        totp.verify(secret, totp.code_at(secret, now - 30), now=now, last_step=used)
    assert totp.verify(secret, totp.code_at(secret, now + 30), now=now + 30, last_step=used) == used + 1


@pytest.mark.parametrize("code", ["", "12345", "1234567", "12345a", " 123456", "123 456", "١٢٣٤٥٦", None, 123456])
def test_malformed_codes_are_refused_before_any_check(code):
    with pytest.raises(MfaError, match="^the TOTP code must be 6 digits$"):
        totp.verify(totp.new_secret(), code, now=0)


def test_eight_digit_codes_are_asked_for_by_name():
    with pytest.raises(MfaError, match="must be 8 digits"):
        totp.verify(totp.new_secret(), "123456", digits=8, now=0)


def test_bad_options_and_secrets_are_refused_without_echoing_the_secret():
    secret = totp.new_secret()
    with pytest.raises(MfaError, match="6 or 8 digits, not 7"):
        totp.code_at(secret, 0, digits=7)
    with pytest.raises(MfaError, match="algorithm must be one of sha1, sha256, sha512, not 'md5'"):
        totp.code_at(secret, 0, algorithm="md5")
    with pytest.raises(MfaError, match="step must be a positive"):
        totp.code_at(secret, 0, step=0)
    with pytest.raises(MfaError) as refused:
        totp.verify("not*base32!secret", "123456", now=0)
    assert str(refused.value) == "the TOTP secret is not valid base32"
    assert isinstance(refused.value, PaylakeError)


def test_secrets_are_read_whatever_their_case_spacing_or_padding():
    secret = b32(SEEDS["sha1"])
    spaced = " ".join(secret[i:i + 4] for i in range(0, len(secret), 4)).lower()
    assert totp.code_at(spaced, 59, digits=8) == "94287082"
    assert base64.b32encode(b"123456").decode() == "GEZDGNBVGY======"
    assert totp.code_at("GEZDGNBVGY======", 59) == totp.code_at("gezdgnbvgy", 59)


def test_the_otpauth_url_parses_back_to_the_secret_and_settings():
    secret = totp.new_secret()
    uri = totp.otpauth_url(secret, "ops admin@example.com", issuer="paylake prod")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    issuer, account = (unquote(p) for p in parts.path.lstrip("/").split(":"))
    assert (issuer, account) == ("paylake prod", "ops admin@example.com")
    query = {k: v[0] for k, v in parse_qs(parts.query, strict_parsing=True).items()}
    assert query == {"secret": secret, "issuer": "paylake prod", "algorithm": "SHA1", "digits": "6", "period": "30"}
    assert " " not in uri
    # what the app computes from the URI is what the server verifies
    assert totp.verify(query["secret"], totp.code_at(query["secret"], 1_700_000_000), now=1_700_000_000) > 0


def test_the_otpauth_url_default_issuer_and_other_settings():
    uri = totp.otpauth_url(b32(SEEDS["sha256"]), "alice", digits=8, algorithm="sha256")
    assert uri.startswith("otpauth://totp/paylake:alice?secret=")
    assert "issuer=paylake&algorithm=SHA256&digits=8&period=30" in uri
    with pytest.raises(MfaError, match="account name must not be empty"):
        totp.otpauth_url(totp.new_secret(), "")
