"""The lake: Delta tables under ``lake_root`` (a local path or s3://)."""

from __future__ import annotations

from pathlib import Path

import boto3

from paylake.settings import Settings


def table_uri(settings: Settings, *parts: str) -> str:
    """URI of a lake table, e.g. ``table_uri(s, "bronze", "postgres", "customer")``."""
    root = settings.lake_root.rstrip("/")
    if settings.lake_is_s3:
        return "/".join([root, *parts])
    return str(Path(root).resolve().joinpath(*parts))


def storage_options(settings: Settings) -> dict[str, str]:
    """deltalake / object_store options for the lake root."""
    if not settings.lake_is_s3:
        return {}
    options = {"AWS_REGION": settings.s3_region, "AWS_S3_ALLOW_UNSAFE_RENAME": "true"}
    if settings.s3_endpoint_url:
        options["AWS_ENDPOINT_URL"] = settings.s3_endpoint_url
        if settings.s3_endpoint_url.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        options["AWS_ACCESS_KEY_ID"] = settings.s3_access_key_id.get_secret_value()
        options["AWS_SECRET_ACCESS_KEY"] = settings.s3_secret_access_key.get_secret_value()
    return options


def s3_client(settings: Settings):
    """A boto3 S3 client for the lake's object store."""
    kwargs = {"region_name": settings.s3_region}
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        kwargs["aws_access_key_id"] = settings.s3_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.s3_secret_access_key.get_secret_value()
    return boto3.client("s3", **kwargs)
