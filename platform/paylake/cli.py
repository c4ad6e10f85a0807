"""The ``paylake`` command line. Commands parse arguments and call the library."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from paylake.errors import PaylakeError
from paylake.report import console, summary_table

app = typer.Typer(help="paylake: the payments data platform on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The embedded local stack: real servers on loopback.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")

StateDir = Annotated[Optional[Path], typer.Option("--state-dir", help="Where the stack keeps its state "
                                                  "(default: ./.paylake).")]


def expected_failures(command):
    """Print a PaylakeError as one line and exit 1; keep tracebacks for bugs."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PaylakeError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _parse_ports(values: list[str] | None) -> dict[str, int]:
    ports = {}
    for value in values or []:
        name, _, number = value.partition("=")
        if not number.isdigit():
            raise PaylakeError(f"--port {value!r} is not NAME=NUMBER (e.g. --port postgres=5433)")
        ports[name] = int(number)
    return ports


@stack_app.command("up")
@expected_failures
def stack_up(
    state_dir: StateDir = None,
    service: Annotated[Optional[list[str]], typer.Option("--service", "-s", help="Only this service "
                       "(repeatable): postgres, mongo, s3, snowflake, mlflow, ray.")] = None,
    port: Annotated[Optional[list[str]], typer.Option("--port", help="Port of a service, NAME=N (repeatable): "
                    "postgres, mongo, s3, snowflake, mlflow, ray_dashboard, ray_gcs.")] = None,
) -> None:
    """Start the local stack (idempotent: running servers are reused)."""
    from paylake.stack import LocalStack

    stack = LocalStack(state_dir)
    with console.status("starting the local stack") as status:
        states = stack.up(service, _parse_ports(port), progress=lambda msg: status.update(msg))
    console.print(summary_table("local stack", ["service", "url", "pid", "state"],
                                [(s.name, s.url, s.pid or "-", s.state) for s in states]))
    console.print(f"settings written to {stack.stack_file}")


@stack_app.command("status")
@expected_failures
def stack_status(state_dir: StateDir = None) -> None:
    """Show each service of the local stack, its URL and health (exit 1 if any is not healthy)."""
    from paylake.stack import LocalStack

    states = LocalStack(state_dir).status()
    console.print(summary_table("local stack", ["service", "url", "pid", "health"],
                                [(s.name, s.url, s.pid or "-", s.state) for s in states]))
    if any(s.state != "healthy" for s in states):
        raise typer.Exit(1)


@stack_app.command("down")
@expected_failures
def stack_down(state_dir: StateDir = None) -> None:
    """Stop every server the local stack started, and nothing else (state is kept)."""
    from paylake.stack import LocalStack

    stopped = LocalStack(state_dir).down()
    names = ", ".join(s.name for s in stopped) or "nothing was running"
    console.print(f"stopped: {names}")


@app.command("smoke")
@expected_failures
def smoke() -> None:
    """Touch every service from Ray tasks (what the smoke job runs)."""
    from paylake.raycluster import init_ray
    from paylake.settings import load_settings
    from paylake.smoke import run_smoke

    settings = load_settings()
    init_ray(settings)
    checks = run_smoke(settings)
    console.print(summary_table("smoke job", ["service", "check", "ok", "seconds", "detail"],
                                [(c.service, c.what, "yes" if c.ok else "NO", c.seconds, c.detail) for c in checks]))
    if not all(c.ok for c in checks):
        raise PaylakeError("smoke job: " + ", ".join(c.service for c in checks if not c.ok) + " failed (see above)")


@app.command("demo")
@expected_failures
def demo(state_dir: StateDir = None) -> None:
    """Bring the stack up, run the main job through 'ray job submit', print where to look."""
    from paylake.raycluster import submit_job
    from paylake.settings import load_settings
    from paylake.stack import LocalStack

    stack = LocalStack(state_dir)
    with console.status("starting the local stack") as status:
        states = stack.up(progress=lambda msg: status.update(msg))
    settings = load_settings(stack.stack_file)
    project = Path(__file__).resolve().parents[2]
    console.rule("ray job submit -- python jobs/smoke.py")
    job_id, final = submit_job(settings, "python jobs/smoke.py", project, echo=lambda s: console.print(
        s, highlight=False, markup=False))
    console.rule(f"job {job_id}: {final}")
    console.print(summary_table("where to look", ["service", "url"], [(s.name, s.url) for s in states]))
    console.print(f"Ray dashboard: {settings.ray_dashboard_url}   MLflow: {settings.mlflow_tracking_uri}")
    console.print(f"Submit more: ray job submit --address {settings.ray_dashboard_url} --working-dir . -- "
                  "python jobs/smoke.py")
    if final != "SUCCEEDED":
        raise PaylakeError(f"Ray job {job_id} ended {final}: see its logs above or in the Ray dashboard")


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
