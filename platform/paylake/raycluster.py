"""Connecting to the Ray cluster and submitting jobs to it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray

from paylake.errors import PaylakeError
from paylake.settings import Settings

# Never upload these with a job's working directory.
WORKING_DIR_EXCLUDES = [".paylake", ".paylake-test", ".venv", ".git", "**/__pycache__", ".pytest_cache",
                        ".hypothesis", "*.egg-info"]


TRAIN_HEALTH_CHECK_INTERVAL_S = "0.25"


def init_ray(settings: Settings, *, log_to_driver: bool = True) -> None:
    """Join the cluster of ``settings.ray_address`` (inside a Ray job: the job's cluster). ``log_to_driver``
    False: the workers' and replicas' output stays in their log files (a deploy, a load generator)."""
    if ray.is_initialized():
        return
    # Ray Train's controller polls its workers every 2 s by default: a finished run is noticed up to 2 s
    # late, twice (measured here: 5 s after the loop for a no-op fit, 1 s at 0.25 s). Polling is one cheap RPC.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", TRAIN_HEALTH_CHECK_INTERVAL_S)
    address = os.environ.get("RAY_ADDRESS") or settings.ray_address
    try:
        ray.init(address=address, log_to_driver=log_to_driver, logging_level="WARNING")
    except ConnectionError as exc:
        raise PaylakeError(
            f"Ray at {address} did not answer ({exc}): run 'paylake stack up' or set PAYLAKE_RAY_ADDRESS"
        ) from exc


def quiet_output() -> None:
    """A job's output is its step summaries: Ray Data's progress bars off, Ray's and the libraries' warnings
    and deprecation notices to the log files, not the terminal (the workers' own output stays in their log
    files with ``init_ray(..., log_to_driver=False)``)."""
    import logging
    import warnings

    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.enable_operator_progress_bars = False
    if hasattr(context, "print_on_execution_start"):
        context.print_on_execution_start = False
    for name in ("ray", "ray.data", "ray.train", "ray.tune", "mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # numpy's RuntimeWarnings from Evidently's statistics on constant columns (a drift figure is NaN there and
    # the report says so) and MLflow's run links are not the job's output either
    for category in (DeprecationWarning, FutureWarning, UserWarning, RuntimeWarning):
        warnings.filterwarnings("ignore", category=category)
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"


def submit_job(settings: Settings, entrypoint: str, working_dir: Path, *, echo=print,
               timeout_s: float = 3600) -> tuple[str, str]:
    """Submit ``entrypoint`` as a Ray job, stream its logs, return (job id, final status)."""
    import logging

    from ray.job_submission import JobStatus, JobSubmissionClient

    # the client's own packaging notes (each ignored file, the upload) are not the job's output
    for name in ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        client = JobSubmissionClient(settings.ray_dashboard_url)
    except Exception as exc:  # noqa: BLE001 - the SDK raises plain exceptions for connection errors
        raise PaylakeError(
            f"Ray job API at {settings.ray_dashboard_url} did not answer ({type(exc).__name__}): "
            "run 'paylake stack up'"
        ) from exc
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={"working_dir": str(working_dir), "excludes": WORKING_DIR_EXCLUDES},
    )
    deadline = time.monotonic() + timeout_s
    seen = 0
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    while True:
        status = client.get_job_status(job_id)
        logs = client.get_job_logs(job_id)
        if len(logs) > seen:
            echo(logs[seen:].rstrip("\n"))
            seen = len(logs)
        if status in terminal:
            return job_id, str(status.value)
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise PaylakeError(f"Ray job {job_id} did not finish within {timeout_s:.0f} s: stopped it")
        time.sleep(0.5)
