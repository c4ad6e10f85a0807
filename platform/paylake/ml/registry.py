"""The MLflow model registry rule both models follow: ``champion`` moves only on improvement.

A newly registered version becomes ``champion`` when there is none yet, or when
it beats the current champion on the *same* held-out data (the caller scores
the champion there: the comparison is never against a figure measured on
another window). Otherwise it is aliased ``challenger``. Serving loads
``models:/<name>@champion``.
"""

from __future__ import annotations

from collections.abc import Callable

from paylake.errors import PaylakeError
from paylake.settings import Settings

CHAMPION, CHALLENGER = "champion", "challenger"


class ChampionUnreadable(PaylakeError):
    """The current champion was saved in a format this code cannot load (an older model layout)."""


def champion_version(settings: Settings, name: str) -> str | None:
    """The version ``champion`` points at, or None (no model or no alias yet)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(settings.mlflow_tracking_uri).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def promote(settings: Settings, name: str, version: str, metric: str, ours: float,
            champion_score: Callable[[str], float]) -> tuple[str, str]:
    """Alias ``version`` of ``name``: ``champion`` when it beats the current champion's ``metric`` (higher
    is better; ``champion_score(uri)`` scores the champion loaded from ``uri`` on the same data as ``ours``),
    else ``challenger``. Returns (alias, why)."""
    from mlflow import MlflowClient

    client = MlflowClient(settings.mlflow_tracking_uri)
    current = champion_version(settings, name)
    if current is None or current == version:
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, "no champion yet"
    try:
        theirs = champion_score(f"models:/{name}@{CHAMPION}")
    except ChampionUnreadable as exc:  # it could not serve either: the new version replaces it
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, f"champion v{current} cannot be loaded by this code ({exc}): replaced"
    if ours > theirs:
        client.set_registered_model_alias(name, CHAMPION, version)
        return CHAMPION, f"{metric} {ours:.4f} beats champion v{current} ({theirs:.4f}) on this test window"
    client.set_registered_model_alias(name, CHALLENGER, version)
    return CHALLENGER, f"{metric} {ours:.4f} does not beat champion v{current} ({theirs:.4f}) on this test window"


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
