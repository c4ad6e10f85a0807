"""The business's OLAP queries over the star, in ``sql/queries/snowflake/<name>.sql``.

Each file is one Snowflake ``select`` with unqualified table names: it runs in
the star's schema of the settings (``ANALYTICS.STAR`` by default).
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
from snowflake.connector.errors import Error as SnowflakeError

from paylake.errors import ConfigError
from paylake.settings import Settings
from paylake.stores import snowflake as snowflake_store
from paylake.warehouse.snowflake import WarehouseError, schema_name

QUERY_DIR = Path(__file__).resolve().parents[3] / "sql" / "queries" / "snowflake"
_QUERY_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def list_queries() -> list[str]:
    """The names of the queries (file names without ``.sql``)."""
    return sorted(path.stem for path in QUERY_DIR.glob("*.sql"))


def query_text(name: str) -> str:
    """The SQL of query ``name``, without its trailing semicolon."""
    path = QUERY_DIR / f"{name}.sql"
    if not _QUERY_NAME.match(name) or not path.is_file():
        raise ConfigError(f"no Snowflake query named {name!r} in {QUERY_DIR}: use one of "
                          f"{', '.join(list_queries())}")
    return path.read_text(encoding="utf-8").strip().rstrip(";").strip()


def run_query(settings: Settings, name: str) -> pa.Table:
    """Run query ``name`` in the star's schema; the result as an Arrow table
    (column names as Snowflake returns them: upper-case)."""
    sql = query_text(name)
    schema = schema_name(settings)
    with snowflake_store.connect(settings) as conn:
        cursor = conn.cursor()
        try:
            cursor.execute(f"use schema {schema}")
        except SnowflakeError as exc:
            raise ConfigError(f"Snowflake schema {schema} is not there ({exc.msg}): apply the star DDL and "
                              "load the star first") from exc
        try:
            cursor.execute(sql)
            return cursor.fetch_arrow_all(force_return_table=True)
        except SnowflakeError as exc:
            raise WarehouseError(f"query {name} failed in {schema} ({exc.msg or type(exc).__name__}): "
                                 f"check sql/queries/snowflake/{name}.sql against the star DDL") from exc
