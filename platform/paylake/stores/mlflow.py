"""MLflow tracking client factory."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from paylake.settings import Settings


def tracking(settings: Settings) -> MlflowClient:
    """Point the mlflow module at the tracking server and return a client."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
