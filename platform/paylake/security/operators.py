"""Operators of sensitive commands and their second factor (TOTP, RFC 6238).

Decrypting PII, destroying a customer's key, rotating keys, privacy exports and
the scoring API's admin calls need, besides the caller's credentials, the
current code of an enrolled operator's authenticator. Enrolment
(``paylake operators enroll NAME``) shows the secret once (and an otpauth://
URI for an authenticator app); the secret is stored sealed under the data key
``security/operators`` (``keyring.Operator``), and each accepted code's time
step is recorded so that a code works once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from paylake.security import keys, totp
from paylake.security.totp import MfaError
from paylake.settings import Settings
from paylake.stores import postgres


def aad(operator_id: int) -> bytes:
    return f"keyring.operator:{int(operator_id)}".encode()


@dataclass(frozen=True)
class Enrolment:
    name: str
    secret: str
    uri: str


def enroll(settings: Settings, name: str, *, replace: bool = False) -> Enrolment:
    secret = totp.new_secret()
    with postgres.connect(settings, autocommit=True) as conn, keys.Keyring(settings, conn) as ring:
        version, key = ring.data_key(keys.OPERATOR_KEY)
        with conn.transaction():
            row = conn.execute("select OperatorID from keyring.Operator where Name = %s for update", (name,)).fetchone()
            if row and not replace:
                raise MfaError(f"operator {name!r} is already enrolled: pass --replace to issue a new secret")
            if row is None:
                row = conn.execute("insert into keyring.Operator (Name, KeyVersion, SecretSealed) values"
                                   " (%s, 0, '\\x00') returning OperatorID", (name,)).fetchone()
            conn.execute("update keyring.Operator set KeyVersion = %s, SecretSealed = %s, LastStep = 0,"
                         " EnrolledAt = now(), DisabledAt = null where OperatorID = %s",
                         (version, keys.seal(key, secret.encode(), aad(row[0]), version), row[0]))
            ring.log(name, "operator.enroll", keys.OPERATOR_KEY, {"operator": name})
    return Enrolment(name, secret, totp.otpauth_url(secret, name))


def require(settings: Settings, name: str | None, code: str | None, *, action: str, now: float | None = None) -> str:
    """Check an operator's TOTP code for ``action``; the operator's name when it passes, MfaError otherwise."""
    if not name or not code:
        raise MfaError(f"{action} needs a second factor: pass --operator NAME and --totp CODE (the current code of "
                       "that operator's authenticator; enrol with 'paylake operators enroll NAME')")
    with postgres.connect(settings, autocommit=True) as conn, keys.Keyring(settings, conn) as ring:
        with conn.transaction():
            row = conn.execute("select OperatorID, KeyVersion, SecretSealed, LastStep, DisabledAt from"
                               " keyring.Operator where Name = %s for update", (name,)).fetchone()
            if row is None or row[4] is not None:
                raise MfaError(f"{name!r} is not an enrolled operator: {action} refused")
            operator_id, version, sealed, last_step, _ = row
            _, key = ring.data_key(keys.OPERATOR_KEY, version)
            secret = keys.unseal(key, bytes(sealed), aad(operator_id), f"operator {name}'s TOTP secret").decode()
            try:
                step = totp.verify(secret, code, now=now if now is not None else time.time(), last_step=last_step)
            except MfaError as exc:
                ring.log(name, "operator.refused", keys.OPERATOR_KEY, {"action": action})
                raise MfaError(f"{action} refused: {exc}") from None
            conn.execute("update keyring.Operator set LastStep = %s where OperatorID = %s", (step, operator_id))
            ring.log(name, "operator.approved", keys.OPERATOR_KEY, {"action": action})
    return name


def listing(settings: Settings) -> list[tuple]:
    with postgres.connect(settings) as conn:
        return conn.execute("select Name, EnrolledAt, DisabledAt, KeyVersion from keyring.Operator order by Name"
                            ).fetchall()


# -- re-encryption hooks (keys.reencrypt)
def sealed_rows(conn, cursor: int, batch: int) -> list[tuple]:
    return conn.execute("select OperatorID, KeyVersion, SecretSealed from keyring.Operator where OperatorID > %s"
                        " order by OperatorID limit %s", (cursor, batch)).fetchall()


RESEAL = "update keyring.Operator set SecretSealed = %s, KeyVersion = %s where OperatorID = %s"
