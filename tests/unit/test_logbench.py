"""The HDFS benchmark's choice by cross-validation (pure logic: folds and the choice over them)."""

import numpy as np
import pytest
from hdfs_eval import FoldScores, choose_on_validation, fold_indices

from paylake.errors import PaylakeError
from paylake.ml.logs.model import LineRanks


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
    (order, g, threshold, least), fp, normal, recall, _ = choose_on_validation(folds, 8, (0.01,), (0,))
    # g=2 and g=3 keep fold 1's rank-2 line as a false positive (at g or at g - 1): g=4 is the first clean one
    # with its neighbour, g=5 catches as much (rank 5) and ties go to the larger g
    assert (order, g, threshold, least) == (0, 5, 0.01, 1)
    assert (fp, normal) == (0, 5)
    assert recall == pytest.approx(1 / 3)


def test_a_memory_order_that_excuses_normal_steps_is_chosen():
    abnormal = sessions([5, 3, 1])
    folds = [FoldScores(sessions([0, 0, 2]), abnormal, {1: flags([False, False, True])}, {1: flags([False] * 3)}),
             FoldScores(sessions([0, 1]), abnormal, {1: flags([False, True])}, {1: flags([False] * 3)})]
    (order, g, _, _), fp, _, recall, _ = choose_on_validation(folds, 8, (0.01,), (0, 1))
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
    for g, t, flags_, m in [(3, 0.01, None, 1), (6, 0.003, seen, 1), (9, 0.0003, seen, 1), (3, 0.01, seen, 2),
                            (2, 0.003, None, 4)]:
        decided = ranks.anomalous(g, t, flags_, m)
        assert decided.tolist() == [v.anomalous for v in ranks.verdicts(g, t, flags_, m)]
        hard, outside = ranks.hard_sessions(t), ranks.outside_counts(g, flags_)
        assert decided.tolist() == (hard | (outside >= m)).tolist()
        assert 0 < decided.sum() < len(lengths)  # both outcomes occur


def line_sessions(per_session: list[list[tuple[int, int]]]) -> LineRanks:
    """Sessions of (key, rank) lines, each then a likely end."""
    seen, ranks, end = [], [], []
    for lines in per_session:
        seen += [k for k, _ in lines] + [99]
        ranks += [r for _, r in lines] + [0]
        end += [False] * len(lines) + [True]
    n = len(seen)
    return LineRanks([len(x) + 1 for x in per_session], np.array(seen), np.array(ranks), np.ones(n), np.array(end),
                     np.zeros((n, 8), np.int64))


def test_min_lines_counts_keys_outside_the_top_g_but_an_unknown_key_always_counts():
    ranks = line_sessions([[(1, 5), (2, 0), (3, 6)], [(1, 5)], [(0, 0)], [(1, 0), (2, 1)]])
    assert ranks.anomalous(3).tolist() == [True, True, True, False]  # DeepLog's rule: any line
    assert ranks.anomalous(3, min_lines=2).tolist() == [True, False, True, False]
    assert ranks.anomalous(3, min_lines=3).tolist() == [False, False, True, False]  # the unknown key still counts
    lone = ranks.verdicts(3, min_lines=2)
    assert [line["position"] for line in lone[0].lines] == [0, 2] and lone[1].lines == []


def test_the_choice_takes_a_session_rule_that_drops_lone_surprises():
    # normal sessions miss the top g once, abnormal ones three times: m=2 keeps the recall and loses the
    # false positives that m=1 has at every g that catches anything
    normal = line_sessions([[(1, 0), (2, 4)], [(1, 6), (2, 0)], [(1, 0), (2, 0)]])
    abnormal = line_sessions([[(1, 4), (2, 5), (3, 6)], [(1, 5), (2, 4), (3, 4)]])
    folds = [FoldScores(normal, abnormal, {}, {})] * 2
    (_, g, _, least), fp, _, recall, f1 = choose_on_validation(folds, 8, (0.01,), (0,), (1, 2, 3))
    # g=4 with m=2: the normal sessions' lone rank-4 and rank-6 lines do not count (nor at g=3, the margin),
    # both abnormal sessions hold 3 lines outside the top 4; at g=5 the second holds only one
    assert (g, least, fp, recall) == (4, 2, 0, 1.0)
    *_, f1_any = choose_on_validation(folds, 8, (0.01,), (0,), (1,))
    assert f1_any < f1  # DeepLog's any-line rule either flags a normal session or misses abnormal ones


def test_nested_rounds_refuse_a_given_split_before_training(tmp_path):
    from hdfs_eval import evaluate_hdfs

    given = tmp_path / "train.txt"
    given.write_text("5 22 5 11 9\n")
    with pytest.raises(PaylakeError, match="no-holdout"):  # the hold-out comes from the default files only
        evaluate_hdfs(None, train_file=given)
    with pytest.raises(PaylakeError, match="outer-folds"):
        evaluate_hdfs(None, outer_folds=5, train_file=given, holdout=False)
    with pytest.raises(PaylakeError, match="min-lines"):
        evaluate_hdfs(None, train_file=given, min_lines=(0, 2), holdout=False)
    with pytest.raises(PaylakeError, match="cannot be cut into 4 folds"):  # one session: no cross-validation
        evaluate_hdfs(None, train_file=given, holdout=False)


def test_the_hold_out_is_set_aside_by_a_fixed_shuffle_and_scored_once(tmp_path, monkeypatch):
    import hdfs_eval

    sessions = [[i, i + 1] for i in range(1000)]
    rest, held = hdfs_eval.holdout_split(sessions)
    assert len(held) == 100 and len(rest) == 900
    assert sorted(map(tuple, rest + held)) == sorted(map(tuple, sessions))  # disjoint and complete
    assert hdfs_eval.holdout_split(sessions)[1] == held  # the same sessions every run
    record = tmp_path / "hdfs_holdout.json"
    record.write_text("{}")
    monkeypatch.setattr(hdfs_eval, "HOLDOUT_RECORD", record)
    with pytest.raises(PaylakeError, match="scored already"):
        hdfs_eval.evaluate_hdfs(None)
