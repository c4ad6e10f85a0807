"""Time-based one-time passwords (RFC 6238) for the second factor of the admin scope.

Standard library only (hmac, hashlib, base64, struct). A secret is base32 (RFC 4648, no padding) as
authenticator apps expect; a code is the HOTP (RFC 4226) of the time step ``floor(t / step)``.
``verify`` accepts ``window`` steps either side of now (clock drift), compares in constant time and
returns the matched step: the caller stores it and passes it back as ``last_step`` so that a code is
never accepted twice. Messages never hold the secret nor the code.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote, urlencode

from paylake.errors import PaylakeError

ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}
DIGITS = (6, 8)
SECRET_BYTES = 20  # 160 bits, as RFC 4226 recommends


class MfaError(PaylakeError):
    """A TOTP code or secret was refused."""


def new_secret() -> str:
    """A new random secret: 160 bits, base32 without padding (32 characters)."""
    return base64.b32encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii").rstrip("=")


def code_at(secret: str, at: float, *, digits: int = 6, algorithm: str = "sha1", step: int = 30) -> str:
    """The code of ``secret`` at the Unix time ``at``."""
    _check_options(digits, algorithm, step)
    return _hotp(_decode_secret(secret), _step_of(at, step), digits, algorithm)


def verify(secret: str, code: str, *, now: float | None = None, window: int = 1, last_step: int | None = None,
           digits: int = 6, algorithm: str = "sha1", step: int = 30) -> int:
    """Check ``code`` against ``secret`` at ``now`` (default: the clock), ``window`` steps either side.

    Returns the matched time step (store it, pass it back as ``last_step``). Raises MfaError when the
    code is malformed, wrong or expired, or was already used (its step is not after ``last_step``).
    """
    _check_options(digits, algorithm, step)
    if window < 0:
        raise MfaError(f"the TOTP window must be 0 or more steps, not {window}")
    if not isinstance(code, str) or len(code) != digits or not (code.isascii() and code.isdigit()):
        raise MfaError(f"the TOTP code must be {digits} digits")
    key = _decode_secret(secret)
    current = _step_of(time.time() if now is None else now, step)
    matched = None
    for candidate in range(current - window, current + window + 1):
        # every candidate is computed and compared, matched or not: the time taken says nothing of which one
        if hmac.compare_digest(_hotp(key, candidate, digits, algorithm).encode(), code.encode()):
            matched = candidate
    if matched is None:
        raise MfaError("the TOTP code is wrong or expired")
    if last_step is not None and matched <= last_step:
        raise MfaError("this TOTP code was already used: wait for the next one")
    return matched


def otpauth_url(secret: str, account: str, issuer: str = "paylake", *, digits: int = 6,
                     algorithm: str = "sha1", step: int = 30) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads (from a QR code) to enrol ``secret``."""
    _check_options(digits, algorithm, step)
    _decode_secret(secret)
    if not account:
        raise MfaError("the TOTP account name must not be empty")
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = urlencode({"secret": _normalise(secret), "issuer": issuer, "algorithm": algorithm.upper(),
                       "digits": digits, "period": step}, quote_via=quote)
    return f"otpauth://totp/{label}?{query}"


def _hotp(key: bytes, counter: int, digits: int, algorithm: str) -> str:
    """RFC 4226: HMAC of the 8-byte counter, dynamic truncation, last ``digits`` decimal digits."""
    mac = hmac.new(key, struct.pack(">Q", counter), ALGORITHMS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset:offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def _step_of(at: float, step: int) -> int:
    return int(at // step)


def _normalise(secret: str) -> str:
    return secret.replace(" ", "").replace("-", "").upper().rstrip("=")


def _decode_secret(secret: str) -> bytes:
    """The secret's bytes; spaces, dashes, case and missing padding tolerated."""
    if not isinstance(secret, str):
        raise MfaError("the TOTP secret must be a base32 string")
    text = _normalise(secret)
    try:
        key = base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise MfaError("the TOTP secret is not valid base32") from None
    if not key:
        raise MfaError("the TOTP secret is empty")
    return key


def _check_options(digits: int, algorithm: str, step: int) -> None:
    if digits not in DIGITS:
        raise MfaError(f"TOTP codes have 6 or 8 digits, not {digits}")
    if algorithm not in ALGORITHMS:
        raise MfaError(f"the TOTP algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    if not isinstance(step, int) or step <= 0:
        raise MfaError(f"the TOTP step must be a positive number of seconds, not {step!r}")
