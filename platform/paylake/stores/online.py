"""The connection factory of the online store's server (Redis protocol; ElastiCache in production)."""

from __future__ import annotations

from paylake.errors import PaylakeError
from paylake.settings import Settings


def client(settings: Settings):
    """A Redis client (a pool: thread-safe) for the settings' online store, answers decoded as text."""
    import redis

    return redis.Redis.from_url(settings.online_store_url.get_secret_value(), decode_responses=True,
                                socket_connect_timeout=3, socket_timeout=30, health_check_interval=30)


def where(settings: Settings) -> str:
    """The server's address without credentials (for messages)."""
    return settings.online_store_url.get_secret_value().split("@")[-1]


def unreachable(settings: Settings, exc: Exception) -> PaylakeError:
    return PaylakeError(f"online store at {where(settings)} refused the connection ({exc}): run 'paylake stack up'")


def unlink_matching(conn, pattern: str) -> int:
    """Delete the keys matching ``pattern`` (SCAN + UNLINK in batches: the server never blocks on it)."""
    dropped, batch = 0, []
    for key in conn.scan_iter(match=pattern, count=2000):
        batch.append(key)
        if len(batch) >= 2000:
            dropped += conn.unlink(*batch)
            batch = []
    if batch:
        dropped += conn.unlink(*batch)
    return dropped


def drop_prefix(settings: Settings, prefix: str) -> int:
    """Delete every key of one world of the store (``<prefix>:*``); returns how many."""
    import redis

    if not prefix or ":" in prefix or "*" in prefix:
        raise PaylakeError(f"online store prefix {prefix!r}: a non-empty name without ':' or '*'")
    conn = client(settings)
    try:
        return unlink_matching(conn, f"{prefix}:*")
    except redis.ConnectionError as exc:
        raise unreachable(settings, exc) from None
    finally:
        conn.close()
