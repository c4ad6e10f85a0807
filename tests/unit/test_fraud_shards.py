"""The fraud trainer's per-worker shards of the training rows (pure logic): dealt by a hash of the
transaction id, so every worker's rows span the whole training period."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from paylake.ml.fraud.training import shard_of, train_shards


@pytest.mark.parametrize(("rows", "workers"), [(10, 1), (1000, 2), (1001, 3), (0, 2)])
def test_every_row_goes_to_exactly_one_worker_in_order(rows, workers):
    table = pa.table({"transactionid": list(range(5000, 5000 + rows)), "label": [i % 2 for i in range(rows)]})
    shards = train_shards(table, workers)
    assert list(shards) == [f"train_{rank}" for rank in range(workers)]
    ids = sorted(i for shard in shards.values() for i in shard["transactionid"].to_pylist())
    assert ids == list(range(5000, 5000 + rows))  # disjoint and complete
    for shard in shards.values():  # each in the table's (time) order
        assert shard["transactionid"].to_pylist() == sorted(shard["transactionid"].to_pylist())
    if rows >= 1000:
        sizes = [shard.num_rows for shard in shards.values()]
        assert max(sizes) - min(sizes) <= 0.1 * rows / workers  # balanced within 10 %


def test_each_worker_sees_the_whole_period_not_one_slice_of_it():
    days = np.repeat(np.arange(60), 200)  # 60 days in time order, ids increasing with time
    table = pa.table({"transactionid": np.arange(len(days)) + 1, "day": days})
    for shard in train_shards(table, 2).values():
        seen = np.unique(shard["day"].to_numpy())
        assert seen.min() == 0 and seen.max() == 59 and len(seen) == 60


def test_the_hash_is_deterministic_and_the_row_number_stands_in_without_ids():
    ids = np.array([1, 2, 3, 10**12, 2**62])
    assert shard_of(ids, 4).tolist() == shard_of(ids.copy(), 4).tolist()
    table = pa.table({"label": [0, 1] * 500})
    shards = train_shards(table, 2)
    assert sum(s.num_rows for s in shards.values()) == 1000 and min(s.num_rows for s in shards.values()) > 400


def test_too_few_training_rows_for_the_workers_is_a_clear_error_before_ray_starts():
    import dataclasses

    from paylake.errors import PaylakeError
    from paylake.ml.fraud.training import Encoding, TrainOptions, fit_lightgbm
    from paylake.settings import Settings

    one_row = pa.table({"label": [1], "amount_eur": [10.0]})
    options = dataclasses.replace(TrainOptions(), num_workers=2)
    with pytest.raises(PaylakeError, match="1 training row"):
        fit_lightgbm(Settings(ray_address="127.0.0.1:1"), {"train": one_row, "valid": one_row},
                     Encoding(("amount_eur",), {}), options, "too-few")
