"""Before a command connects to anything: are the services it needs answering? One line if not.

Each CLI command names the services it needs (``paylake.cli.base.needs``);
this module opens a TCP connection to each (1 s at most, all at once) and,
when one refuses or does not answer, stops the command with one line naming the
service, its address and what to run: ``paylake stack up`` on the local stack,
the setting to check elsewhere. Without it a command waited 45–80 s on Ray's
GCS printing Ray's retry warnings, or printed a driver's traceback.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from paylake.errors import PaylakeError
from paylake.settings import Settings, find_stack_file

SERVICES = ("postgres", "mongo", "online", "s3", "snowflake", "mlflow", "ray", "kms")
SETTING = {"postgres": "PAYLAKE_POSTGRES_DSN", "mongo": "PAYLAKE_MONGO_URI", "online": "PAYLAKE_ONLINE_STORE_URL",
           "s3": "PAYLAKE_S3_ENDPOINT_URL", "snowflake": "PAYLAKE_SNOWFLAKE_HOST / _PORT",
           "mlflow": "PAYLAKE_MLFLOW_TRACKING_URI", "ray": "PAYLAKE_RAY_ADDRESS", "kms": "PAYLAKE_KMS_ENDPOINT_URL"}


class ServiceDown(PaylakeError):
    pass


def _from_url(url: str, default_port: int) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if not parts.hostname or "," in (parts.netloc or ""):  # a replica set's host list: the driver's business
        return None
    return parts.hostname, parts.port or default_port


def address(settings: Settings, service: str) -> tuple[str, int] | None:
    """Where ``service`` listens per ``settings`` (None: nothing to probe, e.g. a local lake or Ray 'auto')."""
    if service == "postgres":
        return _from_url(settings.postgres_dsn.get_secret_value(), 5432)
    if service == "mongo":
        uri = settings.mongo_uri.get_secret_value()
        return None if uri.startswith("mongodb+srv://") else _from_url(uri, 27017)
    if service == "online":
        return _from_url(settings.online_store_url.get_secret_value(), 6379)
    if service == "s3":
        if not settings.lake_is_s3 or not settings.s3_endpoint_url:
            return None  # a local lake, or AWS's own endpoint
        return _from_url(settings.s3_endpoint_url, 443)
    if service == "snowflake":
        if not settings.snowflake_host:
            return None
        return settings.snowflake_host, settings.snowflake_port or 443
    if service == "mlflow":
        uri = settings.mlflow_tracking_uri
        return _from_url(uri, 443 if uri.startswith("https") else 80) if "://" in uri else None
    if service == "kms":
        return _from_url(settings.kms_endpoint_url, 443) if settings.kms_endpoint_url else None  # None: AWS KMS
    if service == "ray":
        if settings.ray_address in ("auto", "local") or "://" in settings.ray_address:
            return None
        host, _, port = settings.ray_address.rpartition(":")
        return (host, int(port)) if host and port.isdigit() else None
    raise PaylakeError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def _answers(where: tuple[str, int], timeout_s: float) -> bool:
    try:
        socket.create_connection(where, timeout=timeout_s).close()
        return True
    except OSError:
        return False


def require(settings: Settings, services: tuple[str, ...], timeout_s: float = 1.0) -> None:
    """Raise ``ServiceDown`` naming every needed service that does not accept a connection."""
    probes = {name: where for name in services if (where := address(settings, name)) is not None}
    if not probes:
        return
    with ThreadPoolExecutor(max_workers=len(probes)) as pool:
        answers = dict(zip(probes, pool.map(lambda w: _answers(w, timeout_s), probes.values())))
    down = [name for name in probes if not answers[name]]
    if not down:
        return
    where = ", ".join(f"{name} ({probes[name][0]}:{probes[name][1]})" for name in down)
    if find_stack_file() is not None:
        hint = "run 'paylake stack up'" + (" (or 'paylake stack status')" if len(down) < len(probes) else "")
    else:
        hint = "check " + ", ".join(SETTING[name] for name in down)
    raise ServiceDown(f"{where} not answering: {hint}")
