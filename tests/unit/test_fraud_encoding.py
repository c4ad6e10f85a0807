"""The serving path's matrix (dict rows → numpy) gives the numbers of the batch path (Arrow → DataFrame)."""

import numpy as np
import pyarrow as pa

from paylake.ml.fraud import features
from paylake.ml.fraud.encoding import Encoding


def test_rows_matrix_equals_the_table_matrix():
    columns = tuple(features.feature_columns())
    categorical = [c for c in columns if c in features.CATEGORICAL]
    numeric = [c for c in columns if c not in features.CATEGORICAL]
    encoding = Encoding(columns, {c: ["a", "b", "c"] for c in categorical})
    rng = np.random.default_rng(3)
    rows = []
    for i in range(40):
        row = {c: (None if rng.random() < 0.2 else float(rng.normal())) for c in numeric}
        row[numeric[0]] = int(i)  # ints as the store's counts come
        for c in categorical:
            row[c] = [None, "a", "c", "unseen"][int(rng.integers(4))]
        rows.append(row)
    expected = encoding.matrix(pa.Table.from_pylist(rows)).to_numpy()
    got = encoding.rows_matrix(rows)
    assert got.dtype == np.float64 and got.shape == (40, len(columns))
    assert np.array_equal(got, expected, equal_nan=True)
    assert set(np.unique(got[:, columns.index(categorical[0])][~np.isnan(got[:, columns.index(categorical[0])])])) \
        <= {-1.0, 0.0, 2.0}  # "unseen" and missing categories become -1, as in training
    assert encoding.rows_matrix([]).shape == (0, len(columns))
