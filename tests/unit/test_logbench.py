"""The HDFS benchmark's choice by cross-validation (pure logic: folds and the choice over them)."""

import numpy as np
import pytest

from paylake.errors import PaylakeError
from paylake.ml.logbench import FoldScores, choose_on_validation, fold_indices
from paylake.ml.logseq import LineRanks


def test_folds_partition_the_pool_in_equal_parts():
    folds = fold_indices(10, 4)
    assert sorted(i for f in folds for i in f) == list(range(10))
    assert sorted(len(f) for f in folds) == [2, 2, 3, 3]
    assert folds == fold_indices(10, 4)  # fixed shuffle: the same folds on every run
    assert folds != [sorted(range(10))[f::4] for f in range(4)]  # shuffled, not dealt in file order


@pytest.mark.parametrize("n, folds", [(10, 1), (3, 4)])
def test_impossible_folds_are_a_clear_error(n, folds):
    with pytest.raises(PaylakeError, match="fold"):
        fold_indices(n, folds)


def sessions(ranks: list[int], max_g: int = 8) -> LineRanks:
    """One line per session at the given rank, then a likely end of session."""
    n = len(ranks)
    return LineRanks(lengths=[2] * n, seen=np.array([1, 99] * n), ranks=np.array([r for x in ranks for r in (x, 0)]),
                     probability=np.ones(2 * n), end=np.array([False, True] * n),
                     top=np.zeros((2 * n, max_g), np.int64))


def flags(excused: list[bool]) -> np.ndarray:
    return np.array([f for x in excused for f in (x, False)])


def test_the_choice_sums_false_positives_over_folds_and_keeps_a_rank_of_margin():
    abnormal = sessions([5, 3, 1])
    folds = [FoldScores(sessions([0, 0, 2]), abnormal, {}, {}), FoldScores(sessions([0, 1]), abnormal, {}, {})]
    (order, g, threshold), fp, normal, recall, _ = choose_on_validation(folds, 8, (0.01,), (0,))
    # g=2 and g=3 keep fold 1's rank-2 line as a false positive (at g or at g - 1): g=4 is the first clean one
    # with its neighbour, g=5 catches as much (rank 5) and ties go to the larger g
    assert (order, g, threshold) == (0, 5, 0.01)
    assert (fp, normal) == (0, 5)
    assert recall == pytest.approx(1 / 3)


def test_a_memory_order_that_excuses_normal_steps_is_chosen():
    abnormal = sessions([5, 3, 1])
    folds = [FoldScores(sessions([0, 0, 2]), abnormal, {1: flags([False, False, True])}, {1: flags([False] * 3)}),
             FoldScores(sessions([0, 1]), abnormal, {1: flags([False, True])}, {1: flags([False] * 3)})]
    (order, g, _), fp, _, recall, _ = choose_on_validation(folds, 8, (0.01,), (0, 1))
    assert (order, g, fp) == (1, 3, 0)  # the excused steps are no false positive: g=3 catches the rank-3 one too
    assert recall == pytest.approx(2 / 3)


def test_vectorised_session_flags_agree_with_the_verdicts():
    rng = np.random.default_rng(3)
    lengths = rng.integers(1, 12, 300).tolist()
    n = sum(lengths)
    end = np.zeros(n, bool)
    end[np.cumsum(lengths) - 1] = True
    ranks = LineRanks(lengths, rng.integers(0, 6, n), rng.integers(0, 10, n), rng.random(n) / 50, end,
                      np.zeros((n, 8), np.int64))
    seen = rng.random(n) < 0.3
    for g, t, flags_ in [(3, 0.01, None), (6, 0.003, seen), (9, 0.0003, seen)]:
        assert ranks.anomalous(g, t, flags_).tolist() == [v.anomalous for v in ranks.verdicts(g, t, flags_)]
    assert 0 < ranks.anomalous(6, 0.003, seen).sum() < len(lengths)  # both outcomes occur


def test_nested_rounds_refuse_a_given_split_before_training(tmp_path):
    from paylake.ml.logbench import evaluate_hdfs

    given = tmp_path / "train.txt"
    given.write_text("5 22 5 11 9\n")
    with pytest.raises(PaylakeError, match="outer-folds"):
        evaluate_hdfs(None, outer_folds=5, train_file=given)
    with pytest.raises(PaylakeError, match="cannot be cut into 4 folds"):  # one session: no cross-validation
        evaluate_hdfs(None, train_file=given)
