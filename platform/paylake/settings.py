"""The one settings object: every endpoint paylake talks to.

Values come from environment variables ``PAYLAKE_*``, then from the stack file
written by ``paylake stack up`` (``.paylake/stack.env``, found by walking up
from the current directory, or named by ``PAYLAKE_STACK_FILE``), then from the
defaults below. Production differs from a laptop only in these values.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

STACK_DIR_NAME = ".paylake"
STACK_FILE_NAME = "stack.env"


class ApiKeyEntry(BaseModel):
    """One client of the scoring API: only the SHA-256 of its key is ever stored."""

    name: str = Field(description="who holds the key (shown in /v1/models and audit, never the key)")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the key")
    scopes: list[str] = Field(description="what it may call: fraud:score, logs:score, admin")


class ServingSettings(BaseModel):
    """The Ray Serve scoring service (``paylake.serving``). Env: ``PAYLAKE_SERVING__<FIELD>``."""

    url: str = Field("http://127.0.0.1:8000", description="where the service answers (Serve's HTTP proxy)")
    api_keys: list[ApiKeyEntry] = Field(default_factory=list,
                                        description="clients and the hashes of their keys (JSON list)")
    oidc_issuer: str | None = Field(None, description="SSO for the admin scope: the identity provider's issuer")
    oidc_audience: str = Field("paylake-serve", description="the audience its tokens name for this API")
    oidc_jwks_url: str | None = Field(None, description="the issuer's JWKS (its signing keys)")
    oidc_jwks_file: str | None = Field(None, description="... or a JWKS file (the local stack's own issuer)")
    oidc_admin_value: str = Field("paylake:admin", description="the scope an admin's token must hold")
    tls_certfile: str | None = Field(None, description="HTTPS: the proxy's certificate (with an https url)")
    tls_keyfile: str | None = Field(None, description="HTTPS: its private key")
    api_keys_file: str | None = Field(None, description="a JSON file of more entries (default: api_keys.json "
                                                        "beside the stack file, written by 'paylake serve key')")


class Settings(BaseSettings):
    """Connection settings of every store and service."""

    model_config = SettingsConfigDict(env_prefix="PAYLAKE_", extra="ignore", env_nested_delimiter="__")

    # PostgreSQL (OLTP): DSN of the application owner role.
    postgres_dsn: SecretStr = SecretStr("postgresql://paylake_admin@127.0.0.1:5432/paylake")

    # MongoDB (documents).
    mongo_uri: SecretStr = SecretStr("mongodb://127.0.0.1:27017/")
    mongo_database: str = "paylake"

    # The online feature store (Redis protocol): ElastiCache for Valkey/Redis in production
    # (rediss://user:password@<cluster>.cache.amazonaws.com:6379/0), the stack's own server on a laptop.
    online_store_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    online_store_prefix: str = "pl"  # the keys' prefix: one world per prefix (a test's own sources get their own)

    # The lake: a local path or s3://bucket/prefix.
    lake_root: str = ".paylake/lake"
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None

    # Snowflake (the warehouse). host/port/protocol only for a local server.
    snowflake_account: str = "paylake"
    snowflake_user: str = "paylake_loader"
    snowflake_password: SecretStr | None = None
    snowflake_private_key_path: str | None = None
    snowflake_database: str = "ANALYTICS"
    snowflake_schema: str = "STAR"
    snowflake_warehouse: str = "LOADING"
    snowflake_role: str | None = None
    snowflake_host: str | None = None
    snowflake_port: int | None = None
    snowflake_protocol: str = "https"

    # MLflow tracking server, and the account the platform uses there (None: no authentication).
    mlflow_tracking_uri: str = "http://127.0.0.1:5000"
    mlflow_username: str | None = None
    mlflow_password: SecretStr | None = None

    # Ray: the cluster address for ray.init, and the dashboard / job API.
    ray_address: str = "auto"
    ray_dashboard_url: str = "http://127.0.0.1:8265"

    # The HMAC key of PII pseudonyms before the KMS: when a database of that time keeps it nowhere else,
    # 'paylake db migrate' wraps it as the pseudonym data key v1 (pseudonyms stay stable), then it is unused.
    pii_hmac_key: SecretStr | None = None

    # The KMS that holds the master keys (paylake.security.keys): AWS KMS in production (no endpoint, the
    # pipeline's IAM role), the stack's own server on a laptop. The key administrator's credentials are not
    # here: 'paylake keys' reads them from PAYLAKE_KMS_ADMIN_* or keyadmin.env beside the stack file.
    kms_endpoint_url: str | None = None
    kms_region: str = "us-east-1"
    kms_access_key_id: SecretStr | None = None
    kms_secret_access_key: SecretStr | None = None
    kms_admin_access_key_id: SecretStr | None = None
    kms_admin_secret_access_key: SecretStr | None = None
    kms_alias_prefix: str = "alias/paylake"

    # TLS: the CA every client verifies servers against (None: the system's trust store).
    tls_ca_file: str | None = None

    # The scoring service.
    serving: ServingSettings = ServingSettings()

    @property
    def lake_is_s3(self) -> bool:
        return self.lake_root.startswith("s3://")


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` (for display)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def find_stack_file(start: Path | None = None) -> Path | None:
    """The stack file in force: ``PAYLAKE_STACK_FILE`` or the nearest
    ``.paylake/stack.env`` at or above ``start`` (default: the cwd)."""
    named = os.environ.get("PAYLAKE_STACK_FILE")
    if named:
        return Path(named)
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / STACK_DIR_NAME / STACK_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def load_settings(stack_file: Path | None = None) -> Settings:
    """Read the settings once, at the edge (CLI, job entrypoint, test fixture)."""
    from paylake.security import tls

    path = stack_file or find_stack_file()
    settings = Settings(_env_file=str(path), _env_file_encoding="utf-8") if path is not None and path.is_file() \
        else Settings()
    tls.trust(settings.tls_ca_file)
    if settings.mlflow_username and settings.mlflow_password:  # MLflow's client reads its credentials from here
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow_password.get_secret_value()
    return settings
