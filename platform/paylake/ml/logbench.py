"""The log-sequence model on the public HDFS log-key sessions (DeepLog's benchmark): shared by
``bench/logseq_hdfs.py`` and ``paylake train logs``.

Files: one session per line, space-separated 1-based key ids. The model trains
on normal sessions only. By default the 4,000 normal sessions are split by a
fixed shuffle into a pool (80 %: 3,200) and test (20 %: 800), the abnormal ones
into validation (half) and test (half).

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

The choice keeps a margin of one rank on the normal sessions: a candidate (n, g,
t) is scored by the F1 at the paper's class mix with the false positives counted
at g - 1 (one rank stricter) and the recall at g. Ties: fewer false positives at
g, the larger g, the smaller threshold, the shorter memory.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

from paylake.settings import Settings

HDFS_DATA = Path(__file__).resolve().parents[4] / "shared" / "data" / "hdfs"
PAPER_NORMAL, PAPER_ABNORMAL = 553_366, 16_838
PUBLISHED = (("DeepLog (paper)", 0.950, 0.960, 0.960), ("DeepLog re-implementation (logdeep)", 0.958, 0.933, 0.945),
             ("DeepLog, Le & Zhang ICSE 2022", None, None, 0.908))


def read(path: Path) -> list[list[int]]:
    return [[int(k) for k in line.split()] for line in path.read_text().splitlines() if line.strip()]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def at_paper_mix(fpr: float, recall: float) -> tuple[float, float, float]:
    """Precision, recall and F1 at the paper's class mix, estimated from the two rates."""
    true_alarms, false_alarms = recall * PAPER_ABNORMAL, fpr * PAPER_NORMAL
    precision = true_alarms / (true_alarms + false_alarms) if true_alarms + false_alarms else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


@dataclass
class HdfsResult:
    window: int
    top_g: int
    end_threshold: float
    memory_order: int  # 0: no transition memory
    folds: int  # of the cross-validation that chose g, the end threshold and the memory order
    models: int
    hidden: int
    epochs: int
    valid_fp: int  # summed over the folds
    valid_normal: int  # every pool session, each scored by the fold model that did not learn it
    valid_recall: float  # mean over the folds, on the validation abnormal sessions
    valid_f1_mix: float
    train_sessions: int  # the pool: what the final model (and its memory) learnt
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


MEMORY_ORDERS = (0, 1, 2, 3, 4, 5)


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
                         ) -> tuple[tuple[int, int, float], int, int, float, float]:
    """(memory order, g, end threshold) by cross-validation (see the module docstring), with its false
    positives summed over the folds, the normal sessions scored, the mean recall and the F1 at the paper's mix
    (unmargined)."""
    n_normal = sum(len(f.normal.lengths) for f in folds)
    counts = {}
    for order in memory_orders:
        for g in range(1, max_g + 1):
            for t in end_thresholds:
                fp = recall = 0.0
                for f in folds:
                    fp += sum(v.anomalous for v in f.normal.verdicts(g, t, f.normal_seen.get(order)))
                    recall += (sum(v.anomalous for v in f.abnormal.verdicts(g, t, f.abnormal_seen.get(order)))
                               / len(f.abnormal.lengths))
                counts[order, g, t] = int(fp), recall / len(folds)
    best, best_key = None, None
    for (order, g, t), (fp, recall) in counts.items():
        if g == 1:
            continue
        margin_fp = counts[order, g - 1, t][0]
        key = (at_paper_mix(margin_fp / n_normal, recall)[2], -fp, g, -t, -order)
        if best_key is None or key > best_key:
            best, best_key = (order, g, t), key
    fp, recall = counts[best]
    return best, fp, n_normal, recall, at_paper_mix(fp / n_normal, recall)[2]


def evaluate_hdfs(settings: Settings, *, workers: int = 2, epochs: int = 12, window: int = 10, hidden: int = 64,
                  models: int = 1, folds: int = 4, memory_orders: tuple[int, ...] = MEMORY_ORDERS,
                  train_file: Path | None = None, normal_file: Path | None = None,
                  abnormal_file: Path | None = None, data: Path = HDFS_DATA) -> HdfsResult:
    from paylake.ml.logseq import (
        END_THRESHOLDS,
        LogModelConfig,
        average_models,
        line_ranks,
        seen_transitions,
        train_models,
        transition_memory,
    )
    from paylake.raycluster import init_ray

    rng = random.Random(7)
    normal = read(data / "train_normal.txt")
    rng.shuffle(normal)
    cut = int(len(normal) * 0.8)
    pool = read(train_file) if train_file else normal[:cut]
    test_normal = read(normal_file) if normal_file else normal[cut:]
    abnormal = read(abnormal_file) if abnormal_file else read(data / "abnormal.txt")
    rng.shuffle(abnormal)
    valid_abnormal, test_abnormal = abnormal[:len(abnormal) // 2], abnormal[len(abnormal) // 2:]
    size = max(max(s) for s in pool + test_normal + abnormal if s) + 1
    cuts = fold_indices(len(pool), folds)
    trainings = []  # (the normal sessions a model learns, its held-out fold or None for the final model)
    for held in cuts:
        out = set(held)
        trainings.append(([s for i, s in enumerate(pool) if i not in out], [pool[i] for i in held]))
    trainings.append((pool, None))

    def encoder(learnt):  # keys never seen in a model's normal sessions become the unknown key (0)
        known = {k for s in learnt for k in s}
        return known, lambda sessions: [[k if k in known else 0 for k in s] for s in sessions]

    init_ray(settings)
    config = LogModelConfig(vocabulary_size=size, window=window, epochs=epochs, hidden=hidden)
    encoded = [encoder(learnt)[1](learnt) for learnt, _ in trainings]
    trained, _, seconds = train_models(None, [config] * (models * len(trainings)), num_workers=workers,
                                       run_name=f"bench-hdfs-{time.time_ns()}",
                                       datasets=[d for d in encoded for _ in range(models)])
    per_training = [average_models(trained[i:i + models]) if models > 1 else trained[i]
                    for i in range(0, len(trained), models)]

    max_g = min(15, size - 1)
    scores = []
    for (learnt, held), model in zip(trainings[:-1], per_training[:-1]):
        _, encode = encoder(learnt)
        memories = {n: transition_memory(encode(learnt), n, size) for n in memory_orders if n}
        scores.append(FoldScores(
            line_ranks(model, encode(held), window, max_g), line_ranks(model, encode(valid_abnormal), window, max_g),
            {n: seen_transitions(encode(held), m, n, size) for n, m in memories.items()},
            {n: seen_transitions(encode(valid_abnormal), m, n, size) for n, m in memories.items()}))
    (order, g, threshold), valid_fp, valid_normal, valid_recall, valid_f1 = choose_on_validation(
        scores, max_g, END_THRESHOLDS, memory_orders)

    model, (known, encode) = per_training[-1], encoder(pool)
    memory = transition_memory(encode(pool), order, size) if order else None

    def verdicts(sessions):
        flags = seen_transitions(encode(sessions), memory, order, size) if order else None
        return line_ranks(model, encode(sessions), window, g).verdicts(g, threshold, flags)

    normal_verdicts = verdicts(test_normal)
    fp = sum(v.anomalous for v in normal_verdicts)
    seen_sequences = {tuple(s) for s in pool}
    distinct_unseen = {tuple(s): v.anomalous for s, v in zip(test_normal, normal_verdicts)
                       if tuple(s) not in seen_sequences}
    fp_unseen = sum(distinct_unseen.values())
    abnormal_verdicts = verdicts(test_abnormal)
    with_new = [v.anomalous for s, v in zip(test_abnormal, abnormal_verdicts) if any(k not in known for k in s)]
    rest = [v.anomalous for s, v in zip(test_abnormal, abnormal_verdicts) if all(k in known for k in s)]
    fpr, recall = fp / len(test_normal), sum(v.anomalous for v in abnormal_verdicts) / len(test_abnormal)
    precision, recall_mix, f1 = at_paper_mix(fpr, recall)
    return HdfsResult(window, g, threshold, order, folds, models, hidden, epochs, valid_fp, valid_normal,
                      valid_recall, valid_f1, len(pool), seconds, fpr, wilson(fp, len(test_normal)),
                      len(test_normal), fp_unseen / max(len(distinct_unseen), 1),
                      wilson(fp_unseen, len(distinct_unseen)), len(distinct_unseen),
                      sum(with_new) / max(len(with_new), 1), len(with_new), sum(rest) / max(len(rest), 1),
                      len(rest), recall, len(test_abnormal), precision, recall_mix, f1)


def print_hdfs(r: HdfsResult) -> None:
    """The figures as tables; the last line ``P … R … F1 …`` at the paper's class mix."""
    from paylake.report import console, summary_table

    memory = (f"transition memory of order {r.memory_order}" if r.memory_order else "no transition memory")
    console.print(f"HDFS: {r.models} LSTM(s) per model (hidden {r.hidden}, {r.epochs} epochs), {r.folds} fold "
                  f"models + the final one trained in {r.train_seconds:.0f} s; the final one (and its memory) on "
                  f"{r.train_sessions:,} normal sessions; h={r.window}, g={r.top_g}, end threshold "
                  f"{r.end_threshold}, {memory} (chosen by {r.folds}-fold cross-validation: {r.valid_fp} false "
                  f"positive(s) in {r.valid_normal:,} normal sessions, recall {r.valid_recall:.4f}, F1 at the "
                  f"paper's mix {r.valid_f1_mix:.4f})")
    rows = [("false-positive rate, held-out normal sessions", f"{r.fpr:.4f}",
             f"[{r.fpr_interval[0]:.4f}, {r.fpr_interval[1]:.4f}]", f"{r.test_normal:,}"),
            ("false-positive rate, held-out sequences unseen in training", f"{r.fpr_unseen:.4f}",
             f"[{r.fpr_unseen_interval[0]:.4f}, {r.fpr_unseen_interval[1]:.4f}]", f"{r.unseen_sequences:,}"),
            ("recall, abnormal sessions with a key unseen in training", f"{r.recall_new_key:.4f}", "",
             f"{r.with_new_key:,}"),
            ("recall, the other abnormal sessions", f"{r.recall_rest:.4f}", "", f"{r.rest:,}"),
            ("recall, all abnormal test sessions", f"{r.recall:.4f}", "", f"{r.test_abnormal:,}")]
    console.print(summary_table(f"HDFS, h={r.window}, g={r.top_g}", ["figure", "value", "95 % interval",
                                                                      "sessions"], rows))
    console.print(summary_table(
        f"at the paper's class mix ({PAPER_NORMAL:,} normal : {PAPER_ABNORMAL:,} abnormal)",
        ["model", "precision", "recall", "F1"],
        [("paylake logseq (LSTM, Ray Train)", f"{r.precision_mix:.3f}", f"{r.recall_mix:.3f}", f"{r.f1_mix:.3f}"),
         *[(name, "" if p is None else f"{p:.3f}", "" if rc is None else f"{rc:.3f}", f"{f:.3f}")
           for name, p, rc, f in PUBLISHED]]))
    print(f"HDFS P {r.precision_mix:.4f} R {r.recall_mix:.4f} F1 {r.f1_mix:.4f}")
