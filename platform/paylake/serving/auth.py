"""API keys of the scoring service: only their SHA-256 is stored, each key carries scopes.

A key is 32 random bytes (``pl_`` + URL-safe base64), so a plain SHA-256 of it is
as strong as a slow password hash would be: there is no dictionary to try. The
service keeps a map hash → (client name, scopes); a request presents the key in
``Authorization: Bearer <key>`` or ``X-API-Key``. No key → 401; a key without
the scope the route needs → 403. Comparison is by hash lookup, so the time taken
does not depend on how much of a guessed key is right.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from paylake.errors import ConfigError
from paylake.settings import ApiKeyEntry, Settings, find_stack_file

SCOPES = ("fraud:score", "logs:score", "admin")
KEYS_FILE_NAME = "api_keys.json"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "pl_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]


class AuthError(Exception):
    """Refused: ``status`` 401 (no or unknown key) or 403 (key without the scope)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Keyring:
    """The clients allowed to call the service, by key hash."""

    def __init__(self, entries: list[ApiKeyEntry]) -> None:
        for entry in entries:
            unknown = set(entry.scopes) - set(SCOPES)
            if unknown:
                raise ConfigError(f"API key {entry.name!r} has unknown scope(s) {sorted(unknown)}: "
                                  f"choose from {', '.join(SCOPES)}")
        self._by_hash = {e.sha256: Principal(e.name, frozenset(e.scopes)) for e in entries}

    def __len__(self) -> int:
        return len(self._by_hash)

    def authorize(self, key: str | None, scope: str | None) -> Principal:
        """The key's principal, if it holds ``scope`` (``None``: any valid key will do)."""
        if not key:
            raise AuthError(401, "an API key is required (Authorization: Bearer <key> or X-API-Key)")
        principal = self._by_hash.get(hash_key(key))
        if principal is None:
            raise AuthError(401, "unknown API key")
        if scope is not None and scope not in principal.scopes:
            raise AuthError(403, f"this API key lacks the scope {scope!r}")
        return principal


def keys_file(settings: Settings) -> Path | None:
    if settings.serving.api_keys_file:
        return Path(settings.serving.api_keys_file)
    stack_file = find_stack_file()
    return stack_file.parent / KEYS_FILE_NAME if stack_file else None


def load_entries(path: Path | None) -> list[ApiKeyEntry]:
    if path is None or not path.is_file():
        return []
    try:
        return [ApiKeyEntry(**raw) for raw in json.loads(path.read_text())]
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a JSON list of API key entries ({exc}): fix or delete it") from exc


def keyring(settings: Settings) -> Keyring:
    """The settings' entries plus those of the keys file."""
    return Keyring([*settings.serving.api_keys, *load_entries(keys_file(settings))])


def add_key(path: Path, name: str, scopes: list[str]) -> str:
    """Create a key for ``name``, store its hash in ``path`` (replacing an entry of the same name), return
    the key itself: it is shown once and stored nowhere by the service."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ConfigError(f"scopes must be among {', '.join(SCOPES)} (got {', '.join(scopes) or 'none'})")
    key = new_key()
    entries = [e for e in load_entries(path) if e.name != name]
    entries.append(ApiKeyEntry(name=name, sha256=hash_key(key), scopes=sorted(set(scopes))))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([e.model_dump() for e in entries], indent=1))
    path.chmod(0o600)
    return key


OPERATOR = "paylake-operator"
OPERATOR_KEY_FILE = "operator.key"


def operator_key(settings: Settings) -> str | None:
    """The key the CLI itself uses for ``/v1/models`` (``paylake serve status``): made once beside the keys file
    (mode 0600, readable by whoever may read the stack file), scope ``admin``. None without a keys file."""
    path = keys_file(settings)
    if path is None:
        return None
    key_path = path.parent / OPERATOR_KEY_FILE
    known = {e.name: e for e in load_entries(path)}
    if key_path.is_file():
        key = key_path.read_text().strip()
        if OPERATOR in known and known[OPERATOR].sha256 == hash_key(key):
            return key
    key = add_key(path, OPERATOR, ["admin"])
    key_path.write_text(key)
    key_path.chmod(0o600)
    return key


class LiveKeyring:
    """``keyring(settings)``, re-read when the keys file changes (checked at most every ``every_s``): a key
    added or revoked with 'paylake serve key' takes effect without restarting the service."""

    def __init__(self, settings: Settings | None, every_s: float = 5.0) -> None:
        self.settings, self.every_s = settings, every_s
        self._ring = keyring(settings) if settings is not None else Keyring([])
        self._checked = 0.0
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> float | None:
        path = keys_file(self.settings) if self.settings is not None else None
        return path.stat().st_mtime if path is not None and path.is_file() else None

    def get(self) -> Keyring:
        import time

        now = time.monotonic()
        if self.settings is not None and now - self._checked >= self.every_s:
            self._checked = now
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._ring, self._stamp = keyring(self.settings), stamp
        return self._ring
