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


def test_fewer_training_rows_than_workers_is_a_clear_error_before_ray_starts():
    import dataclasses

    from paylake.errors import PaylakeError
    from paylake.ml.fraud import Encoding, TrainOptions, fit_lightgbm
    from paylake.settings import Settings

    one_row = pa.table({"label": [1], "amount_eur": [10.0]})
    options = dataclasses.replace(TrainOptions(), num_workers=2)
    with pytest.raises(PaylakeError, match="1 training row"):
        fit_lightgbm(Settings(ray_address="127.0.0.1:1"), {"train": one_row, "valid": one_row},
                     Encoding(("amount_eur",), {}), options, "too-few")
