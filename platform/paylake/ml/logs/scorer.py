"""The log scorer: a registered version of ``paylake-logseq`` loaded to score, the one way to do it.

Serving (``/v1/logs/score``) and ``paylake monitor logs`` load a version here
and score with ``LogScorer.score_lines`` (one session's raw lines, validated)
or ``score_keys`` (sessions as log keys): the same vocabulary, window, g, end
threshold and session rule everywhere. Neither imports the Ray Train trainer.
"""

from __future__ import annotations

import os

from paylake.errors import PaylakeError
from paylake.ml import registry
from paylake.ml.logs.model import LogScorer
from paylake.settings import Settings

__all__ = ["LogScorer", "load_log_scorer", "load_scorer"]
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a load is no download to watch


def load_log_scorer(settings: Settings, name: str, version: str) -> LogScorer:
    """Version ``version`` of ``name`` from the MLflow registry."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model().scorer


def load_scorer(settings: Settings, name: str, alias: str = registry.CHAMPION) -> tuple[LogScorer, str]:
    """The scorer registered as ``name@alias`` and its version (PaylakeError when there is none)."""
    version = registry.alias_version(settings, name, alias)
    if version is None:
        raise PaylakeError(f"no {name}@{alias} in the MLflow registry: run 'paylake train logs' first")
    return load_log_scorer(settings, name, version), version
