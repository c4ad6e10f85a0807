"""Deploying the scoring service on a Ray cluster from ``serve/config.yaml`` (``paylake serve up``).

The file is the one source of the deployment settings (replicas, autoscaling,
``max_ongoing_requests``, batch options): ``up`` reads it, applies its
``deployments`` entries to the application built with its ``args`` (plus
overrides), starts Serve's HTTP proxy on the port of ``settings.serving.url``
and waits until ``/readyz`` answers 200 or the deadline passes (the models may
not be trained yet: the service then runs and says so).
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import yaml

from paylake.errors import ConfigError, PaylakeError
from paylake.serving.auth import operator_key
from paylake.settings import Settings

CONFIG = Path(__file__).resolve().parents[3] / "serve" / "config.yaml"


def read_config(path: Path = CONFIG) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path} not found: the Serve config of the scoring service")
    config = yaml.safe_load(path.read_text())
    apps = [a for a in config.get("applications", []) if a.get("name") == "paylake"]
    if not apps:
        raise ConfigError(f"{path} has no application named 'paylake'")
    return apps[0]


def application(overrides: dict | None = None, path: Path = CONFIG, deployments: dict | None = None):
    """The application of ``path`` with its deployments' options (updated by ``deployments``: name → options,
    e.g. ``{"fraud": {"num_replicas": 2, "autoscaling_config": None}}``) and ``overrides`` of its args."""
    from paylake.serving.app import ServeOptions, bind_app

    spec = read_config(path)
    options = ServeOptions.from_args({**spec.get("args", {}), **(overrides or {})})
    per_deployment = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in spec.get("deployments", [])}
    for name, changes in (deployments or {}).items():
        per_deployment.setdefault(name, {}).update(changes)
    return bind_app(options, per_deployment), options


def http_options(settings: Settings) -> dict:
    """Serve's HTTP options for the settings' URL: HTTPS with the configured certificate for an https URL
    (Serve's Python proxy terminates TLS; its HAProxy ingress cannot: README, Security)."""
    parts = urlsplit(settings.serving.url)
    options: dict = {"host": parts.hostname, "port": parts.port}
    if parts.scheme == "https":
        if not (settings.serving.tls_certfile and settings.serving.tls_keyfile):
            raise ConfigError(f"{settings.serving.url} is https but PAYLAKE_SERVING__TLS_CERTFILE / __TLS_KEYFILE "
                              "are not set")
        options.update(ssl_certfile=settings.serving.tls_certfile, ssl_keyfile=settings.serving.tls_keyfile)
    return options


def up(settings: Settings, overrides: dict | None = None, *, wait_s: float = 120.0, deployments: dict | None = None,
       progress=lambda m: None) -> dict:
    """Deploy (or update) the service; returns {"url", "ready", "models"} once it answers and, within
    ``wait_s``, both models are loaded (a model not registered yet leaves it answering but not ready)."""
    from ray import serve

    from paylake.raycluster import init_ray
    from paylake.serving.app import APP_NAME

    url = settings.serving.url.rstrip("/")
    parts = urlsplit(url)
    init_ray(settings, log_to_driver=False)  # the replicas' access logs stay in their files (and the dashboard)
    progress(f"starting Serve's HTTP proxy on {parts.hostname}:{parts.port}")
    serve.start(http_options=http_options(settings), proxy_location="HeadOnly")
    app, _ = application(overrides, deployments=deployments)
    progress("deploying the application (ingress, fraud, logs)")
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    progress("waiting for the models to load")
    return wait_ready(url, wait_s, key=operator_key(settings))


def models_info(url: str, key: str | None, wait_s: float = 10.0) -> dict:
    """``/v1/models`` with ``key`` (a key just written reaches the service's keyring within ~5 s)."""
    deadline = time.monotonic() + wait_s
    while True:
        response = httpx.get(f"{url}/v1/models", timeout=10,
                             headers={"Authorization": f"Bearer {key}"} if key else {})
        if response.status_code == 200:
            return response.json()
        if response.status_code != 401 or key is None or time.monotonic() > deadline:
            return {"error": f"/v1/models answered {response.status_code}"}
        time.sleep(0.5)


def wait_ready(url: str, wait_s: float, answer_s: float = 120.0, stable_s: float = 3.0,
               key: str | None = None) -> dict:
    """Wait up to ``answer_s`` for the service to answer, then up to ``wait_s`` for /readyz to say 200 for
    ``stable_s`` in a row: /readyz asks whichever replica the router picks, and a second replica may still be
    loading the version the first one already serves."""
    start = time.monotonic()
    ready = None
    ready_since = None
    while ready is None or time.monotonic() - start < wait_s:
        if ready:
            ready_since = ready_since or time.monotonic()
            if time.monotonic() - ready_since >= stable_s:
                break
        else:
            ready_since = None
        try:
            response = httpx.get(f"{url}/readyz", timeout=10)
            if "ready" in _json(response):  # the ingress answered (not the proxy: no route or replica yet)
                ready = response.status_code == 200
            else:
                raise httpx.HTTPError(f"HTTP {response.status_code} from the proxy")
        except httpx.HTTPError as exc:
            if time.monotonic() - start > answer_s:
                raise PaylakeError(f"the scoring service at {url} did not answer within {answer_s:.0f} s ({exc}): "
                                   "see the Serve logs in the Ray dashboard") from exc
        time.sleep(0.25 if ready else 0.5)
    return {"url": url, "ready": ready, "models": models_info(url, key)}


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def down(settings: Settings) -> None:
    from ray import serve

    from paylake.raycluster import init_ray
    from paylake.serving.app import APP_NAME

    init_ray(settings)
    serve.delete(APP_NAME)
