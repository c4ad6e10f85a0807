"""MLflow tracking client factory."""

from __future__ import annotations

import mlflow
from mlflow.tracking import MlflowClient

from paylake.settings import Settings


def tracking(settings: Settings) -> MlflowClient:
    """Point the mlflow module at the tracking server and return a client (verifying its TLS certificate
    against the stack's CA when one is configured)."""
    from paylake.security import tls

    tls.trust(settings.tls_ca_file)
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
