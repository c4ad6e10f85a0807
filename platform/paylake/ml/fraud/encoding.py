"""How feature rows become the fraud model's numeric matrix: shared by training and the scorer (a Serve
replica loads this, never the Ray Train trainer)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property

import pyarrow as pa

from paylake.ml.fraud import features


@dataclass(frozen=True)
class Encoding:
    """How feature rows become the model's numeric matrix: the columns and each category's code."""

    columns: tuple[str, ...]
    categories: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, table: pa.Table) -> Encoding:
        import pyarrow.compute as pc

        return cls(tuple(features.feature_columns()),
                   {c: sorted(v for v in pc.unique(table[c]).to_pylist() if v is not None)
                    for c in features.CATEGORICAL})

    def matrix(self, table: pa.Table):
        """A float pandas DataFrame in model column order; an unseen category becomes -1."""
        import pandas as pd
        import pyarrow.compute as pc

        data = {}
        for name in self.columns:
            column = table[name]
            if name in self.categories:
                codes = pc.index_in(column, value_set=pa.array(self.categories[name], pa.string()))
                data[name] = pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype("float64")
            else:
                data[name] = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return pd.DataFrame(data, columns=list(self.columns))

    def rows_matrix(self, rows: list[dict]):
        """``matrix`` for a scoring batch given as dict rows, as a float numpy array: the same numbers (tested),
        without building an Arrow table and a DataFrame for a few dozen rows (serving's path)."""
        import numpy as np

        codes = self._code_maps
        out = np.array([[row.get(c) for c in self.columns] for row in rows], dtype=object).reshape(len(rows),
                                                                                                    len(self.columns))
        for j, name in enumerate(self.columns):
            if name in codes:
                lookup = codes[name]
                out[:, j] = [lookup.get(v, -1.0) for v in out[:, j]]
        return np.where(out == None, np.nan, out).astype("float64")  # noqa: E711 - elementwise on an object array

    @cached_property
    def _code_maps(self) -> dict[str, dict[str, float]]:
        """Each category's code, as ``matrix`` assigns it (its index in the sorted list)."""
        return {name: {v: float(i) for i, v in enumerate(values)} for name, values in self.categories.items()}

    def to_json(self) -> str:
        return json.dumps({"columns": list(self.columns), "categories": self.categories})

    @classmethod
    def from_json(cls, text: str) -> Encoding:
        raw = json.loads(text)
        return cls(tuple(raw["columns"]), raw["categories"])
