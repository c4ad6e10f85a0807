"""``paylake serve up|status|down|key``: the Ray Serve scoring service."""

from __future__ import annotations

from typing import Annotated

import typer

from paylake.cli.base import app, expected_failures, needs
from paylake.errors import PaylakeError
from paylake.report import console, summary_table

serve_app = typer.Typer(help="The Ray Serve scoring service (fraud and log models over HTTP).",
                        no_args_is_help=True)
app.add_typer(serve_app, name="serve")


def _serve_overrides(values: list[str] | None) -> dict:
    import yaml

    overrides = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise PaylakeError(f"--set {item!r}: expected option=value (e.g. poll_seconds=2)")
        overrides[key] = yaml.safe_load(value)
    return overrides


@serve_app.command("up")
@expected_failures
@needs('mlflow', 'ray')
def serve_up(
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override an option of serve/config.yaml's "
                                                   "args (repeat), e.g. --set poll_seconds=2.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for both models to load.")] = 120.0,
) -> None:
    """Deploy serve/config.yaml on the stack's Ray (own HTTP port), wait for /readyz, print the models."""
    from paylake.serving.deploy import up
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("deploying") as status:
        result = up(settings, _serve_overrides(set_), wait_s=wait, progress=lambda m: status.update(m))
    print_service(result)


def print_service(result: dict) -> None:
    models = {kind: m for kind, m in result["models"].items() if isinstance(m, dict)}
    rows = [(kind, m["name"], m["alias"], m["version"] or "-", m["loaded_at"] or "-", m["error"] or "")
            for kind, m in models.items()]
    if "error" in result["models"]:
        console.print(f"[yellow]models not listed:[/] {result['models']['error']}", highlight=False)
    console.print(summary_table(f"scoring service at {result['url']} ({'ready' if result['ready'] else 'NOT ready'})",
                                ["model", "name", "alias", "version", "loaded at", "error"], rows))
    console.print(f"API docs: {result['url']}/docs   health: {result['url']}/healthz   readiness: "
                  f"{result['url']}/readyz", highlight=False)


@serve_app.command("status")
@expected_failures
@needs('ray')
def serve_status() -> None:
    """What the running service has loaded."""
    from paylake.serving.auth import operator_key
    from paylake.serving.deploy import wait_ready
    from paylake.settings import load_settings

    settings = load_settings()
    print_service(wait_ready(settings.serving.url.rstrip("/"), 5.0, stable_s=0.0, key=operator_key(settings)))


@serve_app.command("down")
@expected_failures
@needs('ray')
def serve_down() -> None:
    """Delete the scoring application from the cluster."""
    from paylake.serving.deploy import down
    from paylake.settings import load_settings

    down(load_settings())
    console.print("scoring service deleted")


@serve_app.command("key")
@expected_failures
def serve_key(
    name: Annotated[str, typer.Argument(help="Who holds the key (a client system).")],
    scope: Annotated[list[str], typer.Option(help="fraud:score, logs:score or admin (repeat).")],
) -> None:
    """Create an API key: printed once; only its SHA-256 is stored (api_keys.json beside the stack file)."""
    from paylake.serving.auth import add_key, keys_file
    from paylake.settings import load_settings

    path = keys_file(load_settings())
    if path is None:
        raise PaylakeError("no stack file found: run 'paylake stack up' or set PAYLAKE_SERVING__API_KEYS_FILE")
    key = add_key(path, name, scope)
    console.print(f"API key for {name} ({', '.join(scope)}), shown once; its hash is in {path} (the running "
                  "service picks it up within seconds).", highlight=False)
    print(key)
