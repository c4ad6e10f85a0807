"""The log-sequence model on the public HDFS log-key sessions (DeepLog's benchmark): shared by
``bench/logseq_hdfs.py`` and ``paylake train logs``.

Files: one session per line, space-separated 1-based key ids. The model trains
on normal sessions only. By default the 4,000 normal sessions are split by a
fixed shuffle into train (60 %), validation (20 %) and test (20 %), the abnormal
ones into validation (half) and test (half). Several models are trained alike
and averaged (``average_models``); g, the end-of-session threshold and the
order of the transition memory (``transition_memory``; 0: none) are chosen
jointly on validation only, then the test sessions are scored once.

Once chosen, the transition memory is rebuilt from the training *and* the
validation normal sessions (the refit a deployed model gets: every normal step
seen so far is excused; the network and the thresholds stay as chosen). The 4,000
normal sessions hold few distinct sequences and the held-out false positives come
from steps that training alone never showed. "Unseen sequences" are then those
neither in training nor in validation. ``refit_memory=False`` keeps the memory
of training alone.

The choice keeps a margin of one rank on the normal sessions: a candidate (n, g,
t) is scored by the F1 at the paper's class mix with the validation false
positives counted at g - 1 (one rank stricter) and the recall at g. It prefers a
g whose neighbour is also clean, against choosing the edge of a plateau that 800
sessions cannot resolve (a false positive in 800 is ~700 false alarms at the
paper's mix). Ties: fewer false positives at g, the larger g, the smaller
threshold, the shorter memory.
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
    memory_sessions: int  # normal sessions the test-time memory holds (train, or train + validation)
    models: int
    hidden: int
    epochs: int
    valid_fp: int
    valid_normal: int
    valid_recall: float
    valid_f1_mix: float
    train_sessions: int
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


def choose_on_validation(valid_normal, valid_abnormal, max_g: int, end_thresholds, memory_orders,
                         normal_seen, abnormal_seen) -> tuple[tuple[int, int, float], int, float, float]:
    """(memory order, g, end threshold) on the validation sessions (see the module docstring), with its
    false positives, recall and F1 at the paper's mix (unmargined)."""
    n_normal, n_abnormal = len(valid_normal.lengths), len(valid_abnormal.lengths)
    counts = {}
    for order in memory_orders:
        for g in range(1, max_g + 1):
            for t in end_thresholds:
                fp = sum(v.anomalous for v in valid_normal.verdicts(g, t, normal_seen.get(order)))
                tp = sum(v.anomalous for v in valid_abnormal.verdicts(g, t, abnormal_seen.get(order)))
                counts[order, g, t] = fp, tp / n_abnormal
    best, best_key = None, None
    for (order, g, t), (fp, recall) in counts.items():
        if g == 1:
            continue
        margin_fp = counts[order, g - 1, t][0]
        key = (at_paper_mix(margin_fp / n_normal, recall)[2], -fp, g, -t, -order)
        if best_key is None or key > best_key:
            best, best_key = (order, g, t), key
    fp, recall = counts[best]
    return best, fp, recall, at_paper_mix(fp / n_normal, recall)[2]


def evaluate_hdfs(settings: Settings, *, workers: int = 2, epochs: int = 12, window: int = 10, hidden: int = 64,
                  models: int = 1, memory_orders: tuple[int, ...] = MEMORY_ORDERS,
                  train_file: Path | None = None, normal_file: Path | None = None,
                  abnormal_file: Path | None = None, data: Path = HDFS_DATA,
                  refit_memory: bool = True) -> HdfsResult:
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
    cut_train, cut_valid = int(len(normal) * 0.6), int(len(normal) * 0.8)
    train = read(train_file) if train_file else normal[:cut_train]
    valid_normal = normal[cut_train:cut_valid]
    test_normal = read(normal_file) if normal_file else normal[cut_valid:]
    abnormal = read(abnormal_file) if abnormal_file else read(data / "abnormal.txt")
    rng.shuffle(abnormal)
    valid_abnormal, test_abnormal = abnormal[:len(abnormal) // 2], abnormal[len(abnormal) // 2:]

    known = {k for s in train for k in s}
    size = max(max(s) for s in train + test_normal + abnormal if s) + 1

    def encode(sessions):  # keys never seen in normal training become the unknown key (0)
        return [[k if k in known else 0 for k in s] for s in sessions]

    init_ray(settings)
    config = LogModelConfig(vocabulary_size=size, window=window, epochs=epochs, hidden=hidden)
    trained, _, seconds = train_models(encode(train), [config] * models, num_workers=workers,
                                       run_name=f"bench-hdfs-{time.time_ns()}")  # each model its own initialisation
    model = average_models(trained) if models > 1 else trained[0]
    memories = {n: transition_memory(encode(train), n, size) for n in memory_orders if n}

    def seen(sessions):
        return {n: seen_transitions(encode(sessions), memory, n, size) for n, memory in memories.items()}

    max_g = min(15, size - 1)
    (order, g, threshold), valid_fp, valid_recall, valid_f1 = choose_on_validation(
        line_ranks(model, encode(valid_normal), window, max_g), line_ranks(model, encode(valid_abnormal), window,
                                                                            max_g),
        max_g, END_THRESHOLDS, memory_orders, seen(valid_normal), seen(valid_abnormal))

    remembered = train + valid_normal if refit_memory else train
    if order:
        memories = {order: transition_memory(encode(remembered), order, size)}

    def verdicts(sessions):
        return line_ranks(model, encode(sessions), window, g).verdicts(g, threshold, seen(sessions).get(order))

    normal_verdicts = verdicts(test_normal)
    fp = sum(v.anomalous for v in normal_verdicts)
    seen_sequences = {tuple(s) for s in remembered}
    distinct_unseen = {tuple(s): v.anomalous for s, v in zip(test_normal, normal_verdicts)
                       if tuple(s) not in seen_sequences}
    fp_unseen = sum(distinct_unseen.values())
    abnormal_verdicts = verdicts(test_abnormal)
    with_new = [v.anomalous for s, v in zip(test_abnormal, abnormal_verdicts) if any(k not in known for k in s)]
    rest = [v.anomalous for s, v in zip(test_abnormal, abnormal_verdicts) if all(k in known for k in s)]
    fpr, recall = fp / len(test_normal), sum(v.anomalous for v in abnormal_verdicts) / len(test_abnormal)
    precision, recall_mix, f1 = at_paper_mix(fpr, recall)
    return HdfsResult(window, g, threshold, order, len(remembered) if order else 0, models, hidden, epochs, valid_fp,
                      len(valid_normal), valid_recall, valid_f1, len(train), seconds, fpr, wilson(fp, len(test_normal)),
                      len(test_normal), fp_unseen / max(len(distinct_unseen), 1),
                      wilson(fp_unseen, len(distinct_unseen)), len(distinct_unseen),
                      sum(with_new) / max(len(with_new), 1), len(with_new), sum(rest) / max(len(rest), 1),
                      len(rest), recall, len(test_abnormal), precision, recall_mix, f1)


def print_hdfs(r: HdfsResult) -> None:
    """The figures as tables; the last line ``P … R … F1 …`` at the paper's class mix."""
    from paylake.report import console, summary_table

    held = "train + validation" if r.memory_sessions > r.train_sessions else "train"
    memory = (f"transition memory of order {r.memory_order} (at test: of {r.memory_sessions:,} normal sessions, "
              f"{held})" if r.memory_order else "no transition memory")
    console.print(f"HDFS: {r.models} LSTM(s) (hidden {r.hidden}, {r.epochs} epochs) trained on "
                  f"{r.train_sessions:,} normal sessions in {r.train_seconds:.0f} s; h={r.window}, g={r.top_g}, end "
                  f"threshold {r.end_threshold}, {memory} (chosen on validation: {r.valid_fp} false positive(s) in "
                  f"{r.valid_normal:,} normal sessions, recall {r.valid_recall:.4f}, F1 at the paper's mix "
                  f"{r.valid_f1_mix:.4f})")
    rows = [("false-positive rate, held-out normal sessions", f"{r.fpr:.4f}",
             f"[{r.fpr_interval[0]:.4f}, {r.fpr_interval[1]:.4f}]", f"{r.test_normal:,}"),
            ("false-positive rate, held-out sequences unseen in training and validation", f"{r.fpr_unseen:.4f}",
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
