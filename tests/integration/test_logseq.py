"""The log-sequence model on Ray Train (2 workers): it learns normal sessions, flags a session with
an out-of-place or unknown key, and a run killed after an epoch resumes from its checkpoint."""

from __future__ import annotations

import random
import uuid

import numpy as np
import pyarrow.fs as pafs
import pytest

from paylake.ml.logs.model import (
    LineRanks,
    LogModelConfig,
    average_models,
    build_model,
    line_ranks,
    score_sessions,
    seen_transitions,
    train_model,
    train_models,
    transition_memory,
)
from paylake.stores import lake

CONFIG = LogModelConfig(vocabulary_size=12, window=4, top_g=2, epochs=20, hidden=32, embedding=16,
                        batch_size=128, learning_rate=0.01)
RESUME = LogModelConfig(vocabulary_size=12, window=4, top_g=2, epochs=6, hidden=16, embedding=8, checkpoint_every=2)


def normal_session(rng: random.Random) -> list[int]:
    """login, then 1–4 read/write pairs, then logout: 1 (2 3)+ 4 5."""
    return [1] + [k for _ in range(rng.randint(1, 4)) for k in (2, 3)] + [4, 5]


@pytest.fixture(scope="module")
def sessions():
    rng = random.Random(3)
    return [normal_session(rng) for _ in range(600)]


def test_two_workers_learn_normal_sessions_and_flag_anomalies(ray_cluster, sessions, tmp_path):
    model, metrics, _ = train_model(sessions, CONFIG, num_workers=2, run_name="test-logseq",
                                    storage_path=str(tmp_path))
    assert metrics["epoch"] == CONFIG.epochs - 1
    normal, out_of_place, unknown = [1, 2, 3, 2, 3, 4, 5], [1, 2, 3, 5, 4], [1, 2, 3, 0, 4, 5]
    verdicts = score_sessions(model, [normal, out_of_place, unknown], CONFIG.window, CONFIG.top_g)
    assert [v.anomalous for v in verdicts] == [False, True, True]
    assert verdicts[1].lines[0]["seen"] == 5 and 4 in verdicts[1].lines[0]["expected"]
    assert verdicts[2].lines[0] == {"position": 3, "seen": 0, "expected": verdicts[2].lines[0]["expected"]}


def test_models_of_one_run_each_learn_their_own_sessions(ray_cluster, sessions, tmp_path):
    """``datasets``: one set of sessions per model in one Ray Train run (the HDFS benchmark's cross-validation
    folds); a model knows its own grammar only."""
    rng = random.Random(5)
    other = [[1] + [k for _ in range(rng.randint(1, 4)) for k in (6, 7)] + [4, 5] for _ in range(600)]
    models, _, _ = train_models(None, [CONFIG, CONFIG], num_workers=2, run_name="test-datasets",
                                storage_path=str(tmp_path), datasets=[sessions, other])
    first, second = [1, 2, 3, 2, 3, 4, 5], [1, 6, 7, 6, 7, 4, 5]
    assert [v.anomalous for v in score_sessions(models[0], [first, second], CONFIG.window, CONFIG.top_g)] == [
        False, True]
    assert [v.anomalous for v in score_sessions(models[1], [first, second], CONFIG.window, CONFIG.top_g)] == [
        True, False]
    with pytest.raises(ValueError, match="one each"):
        train_models(None, [CONFIG, CONFIG], datasets=[sessions])


def test_a_killed_run_resumes_from_its_last_checkpoint_in_the_lake_object_store_and_only_as_itself(ray_cluster, settings, sessions):
    assert settings.lake_is_s3
    where = {"storage_path": lake.table_uri(settings, "checkpoints", uuid.uuid4().hex).removeprefix("s3://"),
             "storage_filesystem": lake.filesystem(settings)}
    with pytest.raises(Exception, match="stopped after epoch 2"):  # checkpoints after epochs 1, 3, 5
        train_model(sessions, RESUME, num_workers=2, run_name="test-resume", stop_after_epoch=2, **where)
    _, metrics, _ = train_model(sessions, RESUME, num_workers=2, run_name="test-resume", **where)
    assert metrics["resumed_at_epoch"] == 2 and metrics["epoch"] == RESUME.epochs - 1
    stored = lake.filesystem(settings).get_file_info(pafs.FileSelector(where["storage_path"], recursive=True))
    assert any(info.base_name == "state.pt" for info in stored), "the checkpoints are in the object store"
    other = LogModelConfig(**{**RESUME.__dict__, "vocabulary_size": 14})  # same run name, another model
    with pytest.raises(Exception, match="another configuration"):
        train_model(sessions, other, num_workers=2, run_name="test-resume", **where)



def test_the_transition_memory_excuses_a_rare_seen_step_and_averaged_models_score_like_one():
    memory = transition_memory([[1, 2, 3], [1, 2, 4]], order=1, vocabulary_size=12)
    assert memory == {(12, 1), (1, 2), (2, 3), (2, 4)}  # the pad index (12) starts each session
    seen = seen_transitions([[1, 2, 4], [1, 3, 0]], memory, order=1, vocabulary_size=12)
    assert seen.tolist() == [True, True, True, False, True, False, False, False]  # ends never seen
    # one session [1, 2, 4] whose key 4 ranks 5th: anomalous at g=3 unless its step 2 -> 4 was seen in training
    ranks = LineRanks([4], np.array([1, 2, 4, 13]), np.array([0, 0, 5, 0]), np.array([0.9, 0.9, 0.01, 0.9]),
                      np.array([False, False, False, True]), np.zeros((4, 3), np.int64))
    assert ranks.verdicts(3, 0.01)[0].anomalous
    assert not ranks.verdicts(3, 0.01, seen[:4])[0].anomalous
    unknown = LineRanks([2], np.array([0, 13]), np.array([5, 0]), np.array([0.01, 0.9]), np.array([False, True]),
                        np.zeros((2, 3), np.int64))
    assert unknown.verdicts(3, 0.01, np.array([True, False]))[0].anomalous  # an unknown key is never excused

    import torch

    torch.manual_seed(0)
    config = LogModelConfig(vocabulary_size=12, window=4, hidden=8, embedding=4)
    one, other = build_model(config).eval(), build_model(config).eval()
    sessions = [[1, 2, 3, 2, 3, 4, 5], [1, 5, 4]]
    alone, twice = line_ranks(one, sessions, 4, 5), line_ranks(average_models([one, one]), sessions, 4, 5)
    assert (alone.ranks == twice.ranks).all() and np.allclose(alone.probability, twice.probability, atol=1e-6)
    mean = line_ranks(average_models([one, other]), sessions, 4, 5)
    both = (line_ranks(one, sessions, 4, 5).probability + line_ranks(other, sessions, 4, 5).probability) / 2
    assert np.allclose(mean.probability, both, atol=1e-6)
