"""PostgreSQL connection factory (psycopg 3)."""

from __future__ import annotations

from urllib.parse import urlsplit

import psycopg

from paylake.errors import StoreUnavailable
from paylake.settings import Settings, redact_url


def where(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname}:{parts.port or 5432}"


def with_database(dsn: str, database: str) -> str:
    """``dsn`` naming another database (its TLS and other parameters kept)."""
    from urllib.parse import urlunsplit

    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


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


def copy_from_arrow(conn: psycopg.Connection, table: str, data, *, chunk_rows: int = 200_000) -> int:
    """Bulk-load an Arrow table into ``table`` with COPY (CSV written by Arrow's
    C++ writer, columns matched by name). Returns the number of rows."""
    import io

    import pyarrow.csv as pacsv
    from psycopg import sql

    columns = sql.SQL(", ").join(sql.Identifier(name.lower()) for name in data.column_names)
    target = sql.SQL(".").join(sql.Identifier(part) for part in table.lower().split("."))
    statement = sql.SQL("copy {} ({}) from stdin (format csv)").format(target, columns)
    options = pacsv.WriteOptions(include_header=False)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for offset in range(0, data.num_rows, chunk_rows):
            buffer = io.BytesIO()
            pacsv.write_csv(data.slice(offset, chunk_rows), buffer, options)
            copy.write(buffer.getbuffer())
    return data.num_rows


class bulk_load:  # noqa: N801 - used as a context manager, like contextlib helpers
    """Initial bulk load the way pg_restore does it: inside the caller's
    transaction, drop the table's foreign keys and disable its user triggers,
    load, then re-create the foreign keys (validated in one pass each) and
    re-enable the triggers. Columns the triggers maintain must come with the
    data or from defaults. Any failure rolls everything back."""

    def __init__(self, conn: psycopg.Connection, table: str) -> None:
        self.conn = conn
        self.table = table.lower()
        self.foreign_keys: list[tuple[str, str]] = []

    def __enter__(self) -> bulk_load:
        self.foreign_keys = self.conn.execute(
            "select conname, pg_get_constraintdef(oid) from pg_constraint"
            " where conrelid = %s::regclass and contype = 'f' and conparentid = 0", (self.table,)).fetchall()
        for name, _ in self.foreign_keys:
            self.conn.execute(f'alter table {self.table} drop constraint "{name}"')
        self.conn.execute(f"alter table {self.table} disable trigger user")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return  # the caller's transaction rolls back, constraints included
        self.conn.execute(f"alter table {self.table} enable trigger user")
        for name, definition in self.foreign_keys:
            self.conn.execute(f'alter table {self.table} add constraint "{name}" {definition}')
