"""Snowflake connection factory (snowflake-connector-python).

The same code talks to a real account (password or key-pair auth) and to the
local fakesnow server (``snowflake_host``/``snowflake_port``/``protocol``)."""

from __future__ import annotations

from pathlib import Path

import snowflake.connector
from snowflake.connector.errors import Error as SnowflakeError

from paylake.errors import ConfigError, StoreUnavailable
from paylake.settings import Settings


def connection_args(settings: Settings) -> dict:
    from paylake.security import tls

    tls.trust(settings.tls_ca_file)  # the connector's requests read REQUESTS_CA_BUNDLE
    args: dict = {
        "account": settings.snowflake_account,
        "user": settings.snowflake_user,
        "database": settings.snowflake_database,
        "schema": settings.snowflake_schema,
        "warehouse": settings.snowflake_warehouse,
        "login_timeout": 15,
        "network_timeout": 120,
    }
    if settings.snowflake_role:
        args["role"] = settings.snowflake_role
    if settings.snowflake_host:
        args.update(host=settings.snowflake_host, protocol=settings.snowflake_protocol)
        if settings.snowflake_port:
            args["port"] = settings.snowflake_port
    if settings.snowflake_private_key_path:
        key_path = Path(settings.snowflake_private_key_path)
        if not key_path.is_file():
            raise ConfigError(f"Snowflake private key {key_path} not found: fix PAYLAKE_SNOWFLAKE_PRIVATE_KEY_PATH")
        args["private_key_file"] = str(key_path)
        args["authenticator"] = "SNOWFLAKE_JWT"
    elif settings.snowflake_password is not None:
        args["password"] = settings.snowflake_password.get_secret_value()
    else:
        raise ConfigError(
            "No Snowflake credentials: set PAYLAKE_SNOWFLAKE_PASSWORD or PAYLAKE_SNOWFLAKE_PRIVATE_KEY_PATH"
        )
    return args


def connect(settings: Settings, *, with_database: bool = True) -> snowflake.connector.SnowflakeConnection:
    """A connection; ``with_database=False`` for bootstrapping before the database exists."""
    args = connection_args(settings)
    if not with_database:
        args.pop("database", None)
        args.pop("schema", None)
    where = settings.snowflake_host or f"{settings.snowflake_account}.snowflakecomputing.com"
    try:
        return snowflake.connector.connect(**args)
    except SnowflakeError as exc:
        raise StoreUnavailable(
            f"Snowflake at {where} refused the connection ({exc.msg or type(exc).__name__}): "
            "run 'paylake stack up' or check the PAYLAKE_SNOWFLAKE_* settings"
        ) from exc
