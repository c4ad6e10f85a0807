"""The log-sequence model on the public HDFS log-key sessions (DeepLog's benchmark): shared by
``bench/logseq_hdfs.py`` and ``paylake train logs``.

Files: one session per line, space-separated 1-based key ids. The model trains
on normal sessions only. By default the 4,000 normal sessions are split by a
fixed shuffle into a pool (80 %: 3,200) and test (20 %: 800), the abnormal ones
into validation (half) and test (half). With ``outer_folds=K`` (nested
cross-validation, the bench's default) the normal sessions are instead dealt
into K test rounds, each round's pool the other sessions: every normal session
is tested once, and the figures are pooled over the rounds.

g, the end-of-session threshold and the order of the transition memory
(``transition_memory``; 0: none) are chosen jointly by K-fold cross-validation
on the pool, never on the test sessions: each fold's model (and its memory)
learns the other K - 1 folds and scores the fold's normal sessions and the
validation abnormal ones; the false positives are summed over the K folds (all
3,200 pool sessions scored by a model that never saw them) and the recall
averaged. 800 validation sessions cannot tell 0 false positives from 2 (a false
positive in 800 is ~700 false alarms at the paper's mix): with one validation
split the choice kept picking the edge of a plateau that the test sessions then
fell off. The final model then learns the whole pool (its memory too: every
normal step seen so far), the K fold models and the final one(s) trained side by
side in one Ray Train run, and scores the test sessions once. Several models
per fold can be trained alike and averaged (``average_models``).

The session rule is chosen too: DeepLog calls a session anomalous when any
line is; here a session is anomalous when it holds an unknown key or an
unlikely end, or at least m keys outside the top g that the memory does not
excuse, m in ``MIN_LINES`` (1 is DeepLog's rule). Normal sessions that miss
the pool's steps mostly do so once (a read served while the block is being
deleted, one extra addStoredBlock), abnormal ones several times (a whole
replication or deletion out of place), so a smaller g with m > 1 can keep
their recall and lose the lone surprises.

**The hold-out.** Before anything else, 10 % of the normal and 10 % of the
abnormal sessions (a fixed shuffle, ``HOLDOUT_SEED``) are set aside: no
choice, fold or nested round sees them. After the nested rounds, one more
round chooses by cross-validation on all the other normal sessions, trains on
them and scores the hold-out once (``holdout=True``); its figure is printed
beside the nested one and recorded in ``bench/hdfs_holdout.json``, and a later
run refuses to score the hold-out again unless told to (``rescore_holdout``):
a hold-out read twice is a validation set.

The choice keeps a margin of one rank on the normal sessions: a candidate (n, g,
t, m) is scored by the F1 at the paper's class mix with the false positives
counted at g - 1 (one rank stricter) and the recall at g. Ties: fewer false
positives at g, the larger g, the smaller threshold, the shorter memory, the
smaller m.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from paylake.ml.evaluation import wilson  # noqa: F401 - bench/log_alerts.py imports it from here
from paylake.settings import Settings

HDFS_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hdfs"
HOLDOUT_SEED = 29
HOLDOUT_FRACTION = 0.1
HOLDOUT_RECORD = Path(__file__).resolve().parent / "hdfs_holdout.json"
PAPER_NORMAL, PAPER_ABNORMAL = 553_366, 16_838
PUBLISHED = (("DeepLog (paper)", 0.950, 0.960, 0.960), ("DeepLog re-implementation (logdeep)", 0.958, 0.933, 0.945),
             ("DeepLog, Le & Zhang ICSE 2022", None, None, 0.908))


def read(path: Path) -> list[list[int]]:
    return [[int(k) for k in line.split()] for line in path.read_text().splitlines() if line.strip()]


def at_paper_mix(fpr: float, recall: float) -> tuple[float, float, float]:
    """Precision, recall and F1 at the paper's class mix, estimated from the two rates."""
    true_alarms, false_alarms = recall * PAPER_ABNORMAL, fpr * PAPER_NORMAL
    precision = true_alarms / (true_alarms + false_alarms) if true_alarms + false_alarms else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class HdfsRound:
    """One test round: the choice made by cross-validation on its pool, and its test counts."""

    top_g: int
    end_threshold: float
    memory_order: int  # 0: no transition memory
    min_lines: int  # keys outside the top-g a session must hold to be anomalous (1: DeepLog's any line)
    pool: int  # normal sessions the final model (and its memory) learnt
    valid_fp: int  # summed over the inner folds
    valid_normal: int  # every pool session, each scored by the fold model that did not learn it
    valid_recall: float  # mean over the inner folds, on the validation abnormal sessions
    valid_f1_mix: float
    test_fp: int
    test_normal: int
    unseen_fp: int  # false positives among the distinct test sequences unseen in the pool
    unseen_sequences: int
    new_key_hits: int
    with_new_key: int  # abnormal test sessions with a key unseen in the pool
    rest_hits: int
    rest: int
    test_abnormal: int
    seconds: float

    @property
    def f1_mix(self) -> float:
        hits = self.new_key_hits + self.rest_hits
        return at_paper_mix(self.test_fp / self.test_normal, hits / self.test_abnormal)[2]


@dataclass
class HdfsResult:
    window: int
    folds: int  # of the cross-validation that chose g, the end threshold, the memory order and min lines
    models: int
    hidden: int
    epochs: int
    rounds: list[HdfsRound]  # one, or one per outer fold (nested cross-validation: every normal session tested)
    train_seconds: float
    fpr: float
    fpr_interval: tuple[float, float]
    test_normal: int
    fpr_unseen: float
    fpr_unseen_interval: tuple[float, float]
    unseen_sequences: int
    recall_new_key: float
    with_new_key: int
    recall_rest: float
    rest: int
    recall: float
    test_abnormal: int
    precision_mix: float
    recall_mix: float
    f1_mix: float
    holdout: HdfsRound | None = None  # the round that scored the hold-out, once


def holdout_split(sessions: list, fraction: float = HOLDOUT_FRACTION, seed: int = HOLDOUT_SEED) -> tuple[list, list]:
    """(the rest, the hold-out): ``fraction`` of ``sessions`` set aside by a fixed shuffle, in file order."""
    order = list(range(len(sessions)))
    random.Random(seed).shuffle(order)
    held = set(order[:int(len(sessions) * fraction)])
    return ([s for i, s in enumerate(sessions) if i not in held], [s for i, s in enumerate(sessions) if i in held])


MEMORY_ORDERS = (0, 1, 2, 3, 4, 5)
MIN_LINES = (1, 2, 3, 4, 5)


def fold_indices(n: int, folds: int, seed: int = 11) -> list[list[int]]:
    """The pool's session indices dealt into ``folds`` folds after a fixed shuffle (sizes equal within one)."""
    from paylake.errors import PaylakeError

    if folds < 2:
        raise PaylakeError(f"cross-validation needs at least 2 folds, not {folds}")
    if n < folds:
        raise PaylakeError(f"{n} normal session(s) cannot be cut into {folds} folds")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return [sorted(order[f::folds]) for f in range(folds)]


@dataclass
class FoldScores:
    """One fold of the cross-validation: its model's ranks on the fold's normal sessions and on the validation
    abnormal ones, and the transition flags of each memory order (the memory of the fold's training sessions)."""

    normal: object  # LineRanks
    abnormal: object  # LineRanks
    normal_seen: dict[int, object]  # order -> flags
    abnormal_seen: dict[int, object]


def choose_on_validation(folds: list[FoldScores], max_g: int, end_thresholds, memory_orders,
                         min_lines=(1,)) -> tuple[tuple[int, int, float, int], int, int, float, float]:
    """(memory order, g, end threshold, min lines) by cross-validation (see the module docstring), with its false
    positives summed over the folds, the normal sessions scored, the mean recall and the F1 at the paper's mix
    (unmargined)."""
    n_normal = sum(len(f.normal.lengths) for f in folds)
    hard = {t: [(f.normal.hard_sessions(t), f.abnormal.hard_sessions(t)) for f in folds] for t in end_thresholds}
    counts = {}
    for order in memory_orders:
        for g in range(1, max_g + 1):
            outside = [(f.normal.outside_counts(g, f.normal_seen.get(order)),
                        f.abnormal.outside_counts(g, f.abnormal_seen.get(order))) for f in folds]
            for t in end_thresholds:
                for m in min_lines:
                    flagged = [(hn | (on >= m), ha | (oa >= m)) for (hn, ha), (on, oa) in zip(hard[t], outside)]
                    counts[order, g, t, m] = (sum(int(n.sum()) for n, _ in flagged),
                                              sum(float(a.mean()) for _, a in flagged) / len(folds))
    best, best_key = None, None
    for (order, g, t, m), (fp, recall) in counts.items():
        if g == 1:
            continue
        margin_fp = counts[order, g - 1, t, m][0]
        key = (at_paper_mix(margin_fp / n_normal, recall)[2], -fp, g, -t, -order, -m)
        if best_key is None or key > best_key:
            best, best_key = (order, g, t, m), key
    fp, recall = counts[best]
    return best, fp, n_normal, recall, at_paper_mix(fp / n_normal, recall)[2]


def evaluate_hdfs(settings: Settings, *, workers: int = 2, epochs: int = 12, window: int = 10, hidden: int = 64,
                  models: int = 1, folds: int = 4, outer_folds: int = 1,
                  memory_orders: tuple[int, ...] = MEMORY_ORDERS, min_lines: tuple[int, ...] = MIN_LINES,
                  train_file: Path | None = None, normal_file: Path | None = None,
                  abnormal_file: Path | None = None, data: Path = HDFS_DATA, holdout: bool = True,
                  rescore_holdout: bool = False, progress=lambda message: None) -> HdfsResult:
    """The figures on one test split (``outer_folds=1``: the fixed 80/20 split, or the files given), or by
    nested cross-validation (``outer_folds=K``: the normal sessions dealt into K outer folds, each the test
    sessions of one round whose pool is the rest, so every normal session is tested once by a model and a
    choice that never saw it)."""
    from paylake.errors import PaylakeError

    if holdout and (train_file or normal_file or abnormal_file):
        raise PaylakeError("the hold-out is carved from the default files: give --no-holdout with "
                           "--train/--normal/--abnormal")
    if holdout and HOLDOUT_RECORD.exists() and not rescore_holdout:
        raise PaylakeError(f"the hold-out was scored already ({HOLDOUT_RECORD.name}): a second look makes it a "
                           "validation set; run with --no-holdout, or --rescore-holdout knowingly")
    rng = random.Random(7)
    normal = read(data / "train_normal.txt")
    abnormal = read(abnormal_file) if abnormal_file else read(data / "abnormal.txt")
    held_normal: list = []
    held_abnormal: list = []
    if holdout:  # set aside first, in file order, so no later shuffle or choice can reach them
        normal, held_normal = holdout_split(normal)
        abnormal, held_abnormal = holdout_split(abnormal)
    rng.shuffle(normal)
    rng.shuffle(abnormal)
    valid_abnormal, test_abnormal = abnormal[:len(abnormal) // 2], abnormal[len(abnormal) // 2:]
    if outer_folds > 1:
        if train_file or normal_file:
            raise PaylakeError("--outer-folds deals the default normal sessions into test folds: give it without "
                               "--train/--normal (those files make one test round)")
        splits = []
        for held in fold_indices(len(normal), outer_folds, seed=13):
            out = set(held)
            splits.append(([s for i, s in enumerate(normal) if i not in out], [normal[i] for i in held]))
    else:
        cut = int(len(normal) * 0.8)
        splits = [(read(train_file) if train_file else normal[:cut], read(normal_file) if normal_file
                   else normal[cut:])]
    if not min_lines or min(min_lines) < 1:
        raise PaylakeError(f"--min-lines: each session rule needs at least 1 line, not {list(min_lines)}")
    for pool, _ in splits:
        fold_indices(len(pool), folds)  # a clear error before Ray starts
    size = max(max(s) for pool, test in splits for s in pool + test + abnormal + held_normal + held_abnormal
               if s) + 1
    rounds = []
    for number, (pool, test_normal) in enumerate(splits, 1):
        progress(f"round {number}/{len(splits)}: {folds}-fold cross-validation on {len(pool):,} normal sessions, "
                 f"then the final model")
        rounds.append(_round(settings, pool, test_normal, valid_abnormal, test_abnormal, size, workers=workers,
                             epochs=epochs, window=window, hidden=hidden, models=models, folds=folds,
                             memory_orders=memory_orders, min_lines=min_lines))
    fp, n_normal = sum(r.test_fp for r in rounds), sum(r.test_normal for r in rounds)
    unseen_fp, unseen = sum(r.unseen_fp for r in rounds), sum(r.unseen_sequences for r in rounds)
    new_hits, with_new = sum(r.new_key_hits for r in rounds), sum(r.with_new_key for r in rounds)
    rest_hits, rest = sum(r.rest_hits for r in rounds), sum(r.rest for r in rounds)
    n_abnormal = sum(r.test_abnormal for r in rounds)
    fpr, recall = fp / n_normal, (new_hits + rest_hits) / n_abnormal
    precision, recall_mix, f1 = at_paper_mix(fpr, recall)
    held = None
    if holdout:  # one more round: chosen on every other normal session, scoring the hold-out once
        progress(f"hold-out: {folds}-fold cross-validation on {len(normal):,} normal sessions, then the final model "
                 f"scores {len(held_normal):,} normal and {len(held_abnormal):,} abnormal held-out sessions once")
        held = _round(settings, normal, held_normal, valid_abnormal, held_abnormal, size, workers=workers,
                      epochs=epochs, window=window, hidden=hidden, models=models, folds=folds,
                      memory_orders=memory_orders, min_lines=min_lines)
        _record_holdout(held)
    return HdfsResult(window, folds, models, hidden, epochs, rounds, sum(r.seconds for r in rounds), fpr,
                      wilson(fp, n_normal), n_normal, unseen_fp / max(unseen, 1), wilson(unseen_fp, unseen), unseen,
                      new_hits / max(with_new, 1), with_new, rest_hits / max(rest, 1), rest, recall,
                      n_abnormal, precision, recall_mix, f1, held)


def _record_holdout(held: HdfsRound) -> None:
    import dataclasses
    import datetime as dt
    import json

    record = {"scored_at": dt.datetime.now(dt.UTC).isoformat(), "f1_at_paper_mix": held.f1_mix,
              **dataclasses.asdict(held)}
    HOLDOUT_RECORD.write_text(json.dumps(record, indent=2) + "\n")


def _round(settings: Settings, pool, test_normal, valid_abnormal, test_abnormal, size: int, *, workers: int,
           epochs: int, window: int, hidden: int, models: int, folds: int, memory_orders, min_lines,
           ) -> HdfsRound:
    """Choose (memory order, g, end threshold, min lines) by cross-validation on the pool, train the final model
    on the whole pool, score the test sessions once (the fold models and the final one in one Ray Train run)."""
    from paylake.ml.logs.model import (
        END_THRESHOLDS,
        LogModelConfig,
        average_models,
        line_ranks,
        seen_transitions,
        train_models,
        transition_memory,
    )
    from paylake.raycluster import init_ray

    trainings = []  # (the normal sessions a model learns, its held-out fold or None for the final model)
    for held in fold_indices(len(pool), folds):
        out = set(held)
        trainings.append(([s for i, s in enumerate(pool) if i not in out], [pool[i] for i in held]))
    trainings.append((pool, None))

    def encoder(learnt):  # keys never seen in a model's normal sessions become the unknown key (0)
        known = {k for s in learnt for k in s}
        return known, lambda sessions: [[k if k in known else 0 for k in s] for s in sessions]

    coders = [encoder(learnt) for learnt, _ in trainings]
    learnt_encoded = [encode(learnt) for (learnt, _), (_, encode) in zip(trainings, coders)]
    init_ray(settings)
    config = LogModelConfig(vocabulary_size=size, window=window, epochs=epochs, hidden=hidden)
    trained, _, seconds = train_models(None, [config] * (models * len(trainings)), num_workers=workers,
                                       run_name=f"bench-hdfs-{time.time_ns()}",
                                       datasets=[d for d in learnt_encoded for _ in range(models)])
    per_training = [average_models(trained[i:i + models]) if models > 1 else trained[i]
                    for i in range(0, len(trained), models)]

    max_g = min(15, size - 1)
    scores = []
    for (_, held), (_, encode), learnt, model in zip(trainings[:-1], coders, learnt_encoded, per_training):
        memories = {n: transition_memory(learnt, n, size) for n in memory_orders if n}
        held, abnormal = encode(held), encode(valid_abnormal)
        scores.append(FoldScores(
            line_ranks(model, held, window, max_g), line_ranks(model, abnormal, window, max_g),
            {n: seen_transitions(held, m, n, size) for n, m in memories.items()},
            {n: seen_transitions(abnormal, m, n, size) for n, m in memories.items()}))
    (order, g, threshold, least), valid_fp, valid_normal, valid_recall, valid_f1 = choose_on_validation(
        scores, max_g, END_THRESHOLDS, memory_orders, min_lines)

    model, (known, encode) = per_training[-1], coders[-1]
    memory = transition_memory(learnt_encoded[-1], order, size) if order else None

    def flagged(sessions) -> list[bool]:
        encoded = encode(sessions)
        flags = seen_transitions(encoded, memory, order, size) if order else None
        return line_ranks(model, encoded, window, g).anomalous(g, threshold, flags, least).tolist()

    normal_flags = flagged(test_normal)
    seen_sequences = {tuple(s) for s in pool}
    distinct_unseen = {tuple(s): f for s, f in zip(test_normal, normal_flags) if tuple(s) not in seen_sequences}
    abnormal_flags = flagged(test_abnormal)
    with_new = [f for s, f in zip(test_abnormal, abnormal_flags) if any(k not in known for k in s)]
    rest = [f for s, f in zip(test_abnormal, abnormal_flags) if all(k in known for k in s)]
    return HdfsRound(g, threshold, order, least, len(pool), valid_fp, valid_normal, valid_recall, valid_f1,
                     sum(normal_flags), len(test_normal), sum(distinct_unseen.values()),
                     len(distinct_unseen), sum(with_new), len(with_new), sum(rest), len(rest), len(test_abnormal),
                     seconds)


def print_hdfs(r: HdfsResult) -> None:
    """The choice of each round, the pooled test figures, and the last line ``P … R … F1 …`` at the paper's
    class mix."""
    from paylake.report import console, summary_table

    nested = len(r.rounds) > 1
    console.print(f"HDFS: {r.models} LSTM(s) per model (hidden {r.hidden}, {r.epochs} epochs), h={r.window}; in each "
                  f"round {r.folds} fold models + the final one trained in one Ray Train run ({r.train_seconds:.0f} s "
                  f"in all); g, the end threshold, the memory order and the min lines (keys outside the top g that "
                  f"make a session anomalous) chosen by {r.folds}-fold cross-validation on the round's pool"
                  + (f"; nested: {len(r.rounds)} rounds, each normal session tested once" if nested else ""))
    console.print(summary_table(
        f"each round: the choice by cross-validation on its pool of {r.rounds[0].pool:,} (CV), and its test", [
            "round", "g", "end t", "memory", "min lines", "CV FP", "CV recall", "CV F1", "test FP", "test F1"],
        [(i, x.top_g, f"{x.end_threshold:g}", x.memory_order or "none", x.min_lines,
          f"{x.valid_fp}/{x.valid_normal:,}", f"{x.valid_recall:.3f}", f"{x.valid_f1_mix:.3f}",
          f"{x.test_fp}/{x.test_normal:,}", f"{x.f1_mix:.3f}")
         for i, x in enumerate(r.rounds, 1)]))
    console.print("F1 at the paper's class mix; FP: false positives among the normal sessions", style="dim")
    rows = [("false-positive rate, held-out normal sessions", f"{r.fpr:.4f}",
             f"[{r.fpr_interval[0]:.4f}, {r.fpr_interval[1]:.4f}]", f"{r.test_normal:,}"),
            ("false-positive rate, held-out sequences unseen in training", f"{r.fpr_unseen:.4f}",
             f"[{r.fpr_unseen_interval[0]:.4f}, {r.fpr_unseen_interval[1]:.4f}]", f"{r.unseen_sequences:,}"),
            ("recall, abnormal sessions with a key unseen in training", f"{r.recall_new_key:.4f}", "",
             f"{r.with_new_key:,}"),
            ("recall, the other abnormal sessions", f"{r.recall_rest:.4f}", "", f"{r.rest:,}"),
            ("recall, all abnormal test sessions", f"{r.recall:.4f}", "", f"{r.test_abnormal:,}")]
    console.print(summary_table("HDFS test figures" + (f" pooled over the {len(r.rounds)} rounds (abnormal: the "
                                                       "test half, scored in each round)" if nested else ""),
                                ["figure", "value", "95 % interval", "sessions"], rows))
    if r.holdout is not None:
        h = r.holdout
        low, high = wilson(h.test_fp, h.test_normal)
        hits = h.new_key_hits + h.rest_hits
        console.print(summary_table(
            "the hold-out, scored once (set aside before any choice: 10 % of the normal and abnormal sessions)",
            ["figure", "value", "95 % interval", "sessions"],
            [("false-positive rate", f"{h.test_fp / h.test_normal:.4f}", f"[{low:.4f}, {high:.4f}]",
              f"{h.test_normal:,}"),
             ("recall, abnormal sessions with a key unseen in training", f"{h.new_key_hits / max(h.with_new_key, 1):.4f}",
              "", f"{h.with_new_key:,}"),
             ("recall, the other abnormal sessions", f"{h.rest_hits / max(h.rest, 1):.4f}", "", f"{h.rest:,}"),
             ("recall, all", f"{hits / h.test_abnormal:.4f}", "", f"{h.test_abnormal:,}"),
             ("F1 at the paper's mix", f"{h.f1_mix:.3f}", "", ""),
             ("chosen: g / end t / memory / min lines",
              f"{h.top_g} / {h.end_threshold:g} / {h.memory_order or 'none'} / {h.min_lines}", "", "")]))
    console.print(summary_table(
        f"at the paper's class mix ({PAPER_NORMAL:,} normal : {PAPER_ABNORMAL:,} abnormal)",
        ["model", "precision", "recall", "F1"],
        [("paylake logseq (LSTM, Ray Train)", f"{r.precision_mix:.3f}", f"{r.recall_mix:.3f}", f"{r.f1_mix:.3f}"),
         *[(name, "" if p is None else f"{p:.3f}", "" if rc is None else f"{rc:.3f}", f"{f:.3f}")
           for name, p, rc, f in PUBLISHED]]))
    print(f"HDFS P {r.precision_mix:.4f} R {r.recall_mix:.4f} F1 {r.f1_mix:.4f}")
