"""The fraud scorer: a registered version of ``paylake-fraud`` loaded to score, the one way to do it.

Serving (``paylake.serving``), drift (``paylake.ml.fraud.drift``) and
promotion (``paylake.ml.fraud.training``) all load a version through
``FraudScorer.load`` and score with ``scores`` / ``explain``: the same
encoding, the same calibration, the same threshold everywhere, so a served
probability, a drift score and a promotion figure mean one thing.

**Calibration.** LightGBM trains with ``scale_pos_weight`` (negatives /
positives), so its raw outputs over-state fraud by orders of magnitude. A
Platt map fitted on the *validation* window (logistic regression on the
raw score's logit) turns them into probabilities: ``fraud_probability`` is
``sigmoid(a * logit(raw) + b)``. The map is increasing (``a > 0``), so it
ranks, flags and scores AUC-PR exactly as the raw output; the stored threshold
is on the calibrated scale. Platt, not isotonic: a validation window holds tens
to hundreds of frauds, too few for a step function without over-fitting.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from paylake.errors import PaylakeError
from paylake.ml.fraud.encoding import Encoding
from paylake.ml.registry import ChampionUnreadable
from paylake.settings import Settings

EPS = 1e-9
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a load is no download to watch


@dataclass(frozen=True)
class Calibration:
    """``p = sigmoid(a * logit(raw) + b)``; the identity is a = 1, b = 0."""

    a: float = 1.0
    b: float = 0.0

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray) -> Calibration:
        """Platt scaling fitted on (raw score, label) pairs of the validation window."""
        from sklearn.linear_model import LogisticRegression

        x = _logit(raw).reshape(-1, 1)
        model = LogisticRegression(C=1e4, max_iter=1000).fit(x, labels)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if not np.isfinite(a) or a <= 0:  # a map that inverts the ranking would be a bug, not a calibration
            raise PaylakeError(f"calibration on validation found a non-increasing map (a = {a:.4g}): the model "
                               "does not rank frauds above legitimate payments there")
        return cls(a, b)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * _logit(raw) + self.b)))

    def to_json(self) -> str:
        return json.dumps({"method": "platt", "a": self.a, "b": self.b})

    @classmethod
    def from_json(cls, text: str | None) -> Calibration:
        if not text:  # a version trained before calibration: its raw scores, said so by the identity
            return cls()
        raw = json.loads(text)
        return cls(float(raw["a"]), float(raw["b"]))


def _logit(raw: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(raw, dtype=float), EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class FraudScorer:
    """A registered fraud model with what scoring needs from its metadata."""

    booster: Any  # lightgbm.Booster
    encoding: Encoding
    threshold: float  # on the calibrated scale: score >= threshold flags
    calibration: Calibration = Calibration()
    name: str = ""
    version: str = ""

    @classmethod
    def load(cls, settings: Settings, name: str, version: str) -> FraudScorer:
        """Version ``version`` of ``name`` from the MLflow registry."""
        import mlflow
        from mlflow.models import Model

        mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=tmp))
            metadata = Model.load(str(local / "MLmodel")).metadata or {}
            booster = mlflow.lightgbm.load_model(str(local))
        if "encoding" not in metadata or "threshold" not in metadata:
            raise ChampionUnreadable(f"{name} v{version} has no encoding/threshold metadata: retrain with "
                                     "'paylake train fraud'")
        return cls(booster, Encoding.from_json(metadata["encoding"]), float(metadata["threshold"]),
                   Calibration.from_json(metadata.get("calibration")), name, str(version))

    def raw(self, table: pa.Table, threads: int = 0) -> np.ndarray:
        return self.booster.predict(self.encoding.matrix(table), num_threads=threads)

    def scores(self, table: pa.Table, threads: int = 0) -> np.ndarray:
        """Calibrated fraud probabilities of the feature rows in ``table``."""
        return self.calibration.apply(self.raw(table, threads))

    def explain(self, rows: list[dict], top: int = 5, which: str | list[str] = "all") -> list[dict]:
        """Probability, decision and the ``top`` features by |contribution| (LightGBM ``pred_contrib``, on the
        raw log-odds scale) for feature rows given as dicts.

        ``which`` (one mode, or one per row): ``all``, ``flagged`` (only rows at or above the threshold: the
        reasons a decline needs) or ``none``; the others get ``top_features = []``. Contributions cost ~50x a
        score (bench/README, serve): a list of legitimate payments need not pay for them."""
        matrix = self.encoding.rows_matrix(rows)
        # one thread: a batch is a few dozen rows, and OpenMP's spinning threads would take the cores the
        # replica's event loop and the other replicas need (measured: 0.24 s -> see bench/README, serve rows)
        scores = self.calibration.apply(self.booster.predict(matrix, num_threads=1))
        modes = [which] * len(rows) if isinstance(which, str) else list(which)
        unknown = set(modes) - {"all", "flagged", "none"}
        if unknown:
            raise PaylakeError(f"explain must be all, flagged or none, not {sorted(unknown)}")
        wanted = np.array([m == "all" or (m == "flagged" and s >= self.threshold) for m, s in zip(modes, scores)],
                          dtype=bool)
        contributions = np.zeros((len(rows), matrix.shape[1]))
        if wanted.any():
            contributions[wanted] = self.booster.predict(matrix[wanted], pred_contrib=True, num_threads=1)[:, :-1]
        values = matrix
        columns = list(self.encoding.columns)
        categories = self.encoding.categories

        def shown(j: int, value: float):  # a category's name rather than its code
            if np.isnan(value):
                return None
            if columns[j] in categories:
                names = categories[columns[j]]
                return names[int(value)] if 0 <= value < len(names) else None
            return float(value)

        out = []
        for i, score in enumerate(scores):
            order = np.argsort(-np.abs(contributions[i]))[:top] if wanted[i] else []
            out.append({"fraud_probability": float(score),
                        "decision": "fraud" if score >= self.threshold else "legit",
                        "threshold": self.threshold,
                        "top_features": [{"feature": columns[j],
                                          "value": shown(j, values[i, j]),
                                          "contribution": round(float(contributions[i, j]), 6)} for j in order]})
        return out
