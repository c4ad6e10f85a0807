"""The MLflow model registry rule both models follow: ``champion`` moves only on improvement.

A newly registered version becomes ``champion`` when there is none yet, or when
the model family's rule says it is better than the current champion on the
*same* held-out data (the caller scores the champion there: the comparison is
never against a figure measured on another window; each family's rule is in
its training module: a significant AUC-PR gain for fraud, fewer false alerts
at the budget for logs). Otherwise it is aliased ``challenger``. Serving
loads ``models:/<name>@champion``; every alias lookup goes through
``alias_version``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from paylake.errors import PaylakeError
from paylake.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"
# a version trained and registered by a pipeline run, whose champion/challenger decision is the pipeline's
# promote step (the held-out data the decision needs is an artifact of its run: PROMOTION_ARTIFACT)
CANDIDATE = "candidate"
PROMOTION_ARTIFACT = "promotion"


class ChampionUnreadable(PaylakeError):
    """The current champion was saved in a format this code cannot load (an older model layout)."""


def alias_version(settings: Settings, name: str, alias: str = CHAMPION) -> str | None:
    """The version ``name@alias`` points at, or None when the model or the alias does not exist yet. Any
    other registry failure (the server down, a refused request) raises: it is not "nothing registered"."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE") \
                or "not found" in str(exc).lower():
            return None
        raise


def champion_version(settings: Settings, name: str) -> str | None:
    """The version ``champion`` points at, or None (no model or no alias yet)."""
    return alias_version(settings, name, CHAMPION)


@dataclass(frozen=True)
class Decision:
    """Whether a challenger replaces the champion, and why (one line, with the figures it rests on)."""

    promote: bool
    reason: str


def promote(settings: Settings, name: str, version: str, decide: Callable[[str, str], Decision]) -> tuple[str, str]:
    """Alias ``version`` of ``name``: ``champion`` when ``decide(champion_uri, champion_version)`` says so
    (the caller scores the champion on the same data as the new version), else ``challenger``.
    Returns (alias, why)."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    current = champion_version(settings, name)
    if current is None or current == version:
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, "no champion yet"
    try:
        decision = decide(f"models:/{name}/{current}", current)
    except ChampionUnreadable as exc:  # it could not serve either: the new version replaces it
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, f"champion v{current} cannot be loaded by this code ({exc}): replaced"
    alias = CHAMPION if decision.promote else CHALLENGER
    client.set_registered_model_alias(name, alias, version)
    return alias, decision.reason


def set_candidate(settings: Settings, name: str, version: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(settings.mlflow_tracking_uri).set_registered_model_alias(name, CANDIDATE, version)


def clear_candidate(settings: Settings, name: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(settings.mlflow_tracking_uri).delete_registered_model_alias(name, CANDIDATE)


def promotion_inputs(settings: Settings, name: str, version: str, file: str) -> str:
    """A local copy of ``file`` of the promotion artifact the training run of ``version`` logged."""
    import tempfile

    import mlflow
    from mlflow import MlflowClient

    run_id = MlflowClient(settings.mlflow_tracking_uri).get_model_version(name, version).run_id
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=f"{PROMOTION_ARTIFACT}/{file}",
                                               dst_path=tempfile.mkdtemp(prefix="paylake-promotion-"))


def trained_version(settings: Settings, name: str, param: str, value: object) -> str | None:
    """The registered version of ``name`` whose training run logged ``param`` = ``value`` (e.g. the Delta
    version of its training table), if any: a pipeline re-run does not retrain on unchanged data."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(settings.mlflow_tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return None
    for version in versions:
        if version.run_id and client.get_run(version.run_id).data.params.get(param) == str(value):
            return str(version.version)
    return None
