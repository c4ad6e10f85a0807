"""The statistics every model decision rests on: pure numpy, no I/O.

- ``average_precision``: AUC-PR as scikit-learn computes it (step-wise, ties
  grouped), vectorised so a bootstrap can call it a thousand times.
- ``day_block_bootstrap``: confidence intervals that respect time. Payments of
  one day are not independent (a card-testing burst, a collusion ring's day),
  so resampling rows would make intervals too narrow; whole days are resampled
  with replacement instead. A resample holding one class only is drawn again
  (a figure over one class means nothing).
- ``wilson``: the Wilson score interval of a proportion (recall, a false-alert
  rate): correct near 0 and 1, where the normal approximation is not.
- ``two_proportions``: the two-sided z-test of two rates (the fraud rate of a
  matured window against the reference).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from paylake.errors import PaylakeError


class OneClassWindow(PaylakeError):
    """A window holds one class only: no ranking figure, threshold or comparison can be made on it."""


def require_both_classes(labels: np.ndarray, what: str = "the window") -> None:
    positives = int(np.sum(labels))
    if positives == 0 or positives == len(labels):
        raise OneClassWindow(f"{what} holds {positives:,} fraud(s) and {len(labels) - positives:,} legitimate "
                             "payment(s): a figure needs both classes")


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Average precision (scikit-learn's definition): sum over distinct thresholds of
    (recall step) x precision; rows with equal scores enter together."""
    labels = np.asarray(labels)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    ranked, truth = np.asarray(scores, dtype=float)[order], labels[order]
    ends = np.flatnonzero(np.diff(ranked)) if len(ranked) > 1 else np.array([], dtype=int)
    ends = np.r_[ends, len(ranked) - 1]  # the last row of each group of equal scores
    true_pos = np.cumsum(truth)[ends]
    flagged = ends + 1
    positives = true_pos[-1]
    if positives == 0:
        return float("nan")
    recall = true_pos / positives
    precision = true_pos / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    positives = int(np.sum(labels))
    return float(np.sum((scores >= threshold) & (labels == 1)) / positives) if positives else float("nan")


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def day_blocks(days: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by day (any sortable day key: dates, day numbers)."""
    order = np.argsort(days, kind="mergesort")
    _, starts = np.unique(np.asarray(days)[order], return_index=True)
    return np.split(order, starts[1:])


def day_block_bootstrap(statistic: Callable[[np.ndarray], float], labels: np.ndarray, days: np.ndarray,
                        resamples: int = 1000, level: float = 0.95, seed: int = 7) -> tuple[float, float]:
    """The ``level`` percentile interval of ``statistic(rows)`` over ``resamples`` day-block resamples
    (``rows``: indices into the window). Resamples of one class are drawn again (at most 10 x ``resamples``
    draws in all)."""
    blocks = day_blocks(days)
    if len(blocks) < 2:
        raise PaylakeError(f"a day-block bootstrap needs at least 2 days, the window spans {len(blocks)}")
    rng = np.random.default_rng(seed)
    values: list[float] = []
    draws = 0
    while len(values) < resamples and draws < 10 * resamples:
        draws += 1
        rows = np.concatenate([blocks[i] for i in rng.integers(0, len(blocks), len(blocks))])
        positives = int(np.sum(labels[rows]))
        if positives == 0 or positives == len(rows):
            continue
        values.append(statistic(rows))
    if len(values) < resamples // 2:
        raise OneClassWindow(f"the window's days hold too few frauds for a bootstrap: {len(values)} usable "
                             f"resamples of {draws}")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def wilson(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of ``successes / trials`` (95 % by default)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(successes_a: int, trials_a: int, successes_b: int, trials_b: int) -> float:
    """Two-sided p-value of the z-test that two rates are equal (pooled variance)."""
    if not trials_a or not trials_b:
        return float("nan")
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / trials_a + 1 / trials_b))
    if se == 0:
        return 1.0
    z = (successes_a / trials_a - successes_b / trials_b) / se
    return float(math.erfc(abs(z) / math.sqrt(2)))
