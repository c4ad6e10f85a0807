"""The fraud trainer's per-worker slices of the training rows (pure logic)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from paylake.ml.fraud import train_shards


@pytest.mark.parametrize(("rows", "workers"), [(10, 1), (10, 2), (11, 3), (2, 3), (0, 2)])
def test_every_row_goes_to_exactly_one_worker_in_equal_slices(rows, workers):
    table = pa.table({"id": list(range(rows)), "label": [i % 2 for i in range(rows)]})
    shards = train_shards(table, workers)
    assert list(shards) == [f"train_{rank}" for rank in range(workers)]
    ids = [i for shard in shards.values() for i in shard["id"].to_pylist()]
    assert ids == list(range(rows))  # disjoint, complete, in order
    sizes = [shard.num_rows for shard in shards.values()]
    assert max(sizes) - min(sizes) <= 1
