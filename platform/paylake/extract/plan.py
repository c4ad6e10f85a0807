"""Partition planning: pure functions over plain numbers."""

from __future__ import annotations

import datetime as dt
import math


def plan_ranges(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """Split the closed key range [low, high] into at most ``parts`` half-open
    ranges [lo, hi) that cover it exactly, without overlap, in order."""
    if high < low:
        return []
    parts = max(1, min(parts, high - low + 1))
    span = high - low + 1
    bounds = [low + (span * i) // parts for i in range(parts)] + [high + 1]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


def partitions_for(rows: int, rows_per_task: int, max_tasks: int) -> int:
    """How many read tasks a table of ``rows`` rows deserves."""
    return max(1, min(max_tasks, math.ceil(max(rows, 0) / max(rows_per_task, 1))))


def plan_time_ranges(low: dt.datetime, high: dt.datetime, parts: int) -> list[tuple[dt.datetime, dt.datetime]]:
    """Split [low, high] (inclusive) into ``parts`` half-open time ranges; the last
    one ends one second after ``high`` (ObjectIds carry whole seconds)."""
    end = high + dt.timedelta(seconds=1)
    if end <= low:
        return []
    parts = max(1, parts)
    step = (end - low) / parts
    edges = [low + step * i for i in range(parts)] + [end]
    edges = [e.replace(microsecond=0) for e in edges[:-1]] + [end]
    ranges = [(edges[i], edges[i + 1]) for i in range(parts) if edges[i] < edges[i + 1]]
    return ranges
