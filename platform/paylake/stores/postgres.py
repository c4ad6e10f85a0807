"""PostgreSQL connection factory (psycopg 3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from paylake.errors import StoreUnavailable
from paylake.settings import Settings, redact_url


def where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


def connect(settings: Settings, *, autocommit: bool = False, dsn: str | None = None, **kwargs) -> psycopg.Connection:
    """A psycopg connection to the OLTP database (or to ``dsn``)."""
    target = dsn or settings.postgres_dsn.get_secret_value()
    try:
        return psycopg.connect(target, autocommit=autocommit, connect_timeout=5, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise StoreUnavailable(
            f"Postgres at {where(target)} refused the connection ({reason}): "
            f"run 'paylake stack up' or check PAYLAKE_POSTGRES_DSN ({redact_url(target)})"
        ) from exc
