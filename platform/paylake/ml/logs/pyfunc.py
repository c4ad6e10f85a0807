"""The log-sequence model as an MLflow ``pyfunc``: the format chosen on purpose.

MLflow 3's default PyTorch format (``pt2``, an exported program) loads back as a
graph without the model's Python methods, and the model alone is not enough to
score a session: the vocabulary, the window h and g come with it. So the
registered model is a ``pyfunc`` whose artifact is a ``LogScorer`` folder
(``state.pt`` — the state dict, loaded into ``build_model``'s class —,
``config.json``, ``vocabulary.json``). ``predict`` takes a DataFrame with one
column ``lines`` (a session's log lines as JSON text) and returns
``anomalous``, ``score`` and ``anomalous_lines`` (JSON); callers that want the
whole verdict use ``load_model(...).unwrap_python_model().scorer``.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import pandas as pd


def example_input(lines) -> pd.DataFrame:
    """A one-session input example (timestamps as text)."""
    return pd.DataFrame({"lines": [json.dumps(list(lines), default=str)]})


class LogSeqModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from paylake.ml.logs.model import LogScorer

        self.scorer = LogScorer.load(Path(context.artifacts["scorer"]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        rows = []
        for text in model_input["lines"]:
            verdict = self.scorer.score_lines(json.loads(text))
            rows.append({"anomalous": verdict["anomalous"], "score": verdict["score"],
                         "anomalous_lines": json.dumps(verdict["lines"])})
        return pd.DataFrame(rows, columns=["anomalous", "score", "anomalous_lines"])
