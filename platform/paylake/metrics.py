"""The platform's own metrics on Ray's Prometheus endpoint (``ray_`` + these names; Grafana:
``cluster/grafana/paylake.json``).

    paylake_rows_total{table, direction}      rows read from a source / written to a lake table or the warehouse
    paylake_step_seconds{step, outcome}       pipeline step durations (histogram)
    paylake_cdc_lag_bytes{slot}               the replication slot's lag behind the WAL after a drain
    paylake_serving_stage_ms{stage}           scoring stages per batch (paylake.serving.app)

Metrics are an aid, never a reason to fail: outside a Ray worker or driver they are
no-ops, and an error in recording is swallowed.
"""

from __future__ import annotations

import functools
import logging

log = logging.getLogger(__name__)


@functools.cache
def _metrics() -> dict | None:
    try:
        import ray
        from ray.util import metrics

        if not ray.is_initialized():
            return None
        return {
            "rows": metrics.Counter("paylake_rows_total", description="rows read from a source or written to a table",
                                    tag_keys=("table", "direction")),
            "step": metrics.Histogram("paylake_step_seconds", description="duration of one pipeline step",
                                      boundaries=[1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
                                      tag_keys=("step", "outcome")),
            "lag": metrics.Gauge("paylake_cdc_lag_bytes", description="replication slot lag behind the WAL",
                                 tag_keys=("slot",)),
        }
    except Exception:  # noqa: BLE001
        return None


def _record(kind: str, how, value, tags: dict[str, str]) -> None:
    found = _metrics()
    if found is None:
        _metrics.cache_clear()  # Ray may be initialised later in this process
        return
    try:
        getattr(found[kind], how)(value, tags=tags)
    except Exception as exc:  # noqa: BLE001
        log.debug("metric %s not recorded: %s", kind, exc)


def rows(table: str, direction: str, count: int) -> None:
    """``direction``: read or written."""
    if count:
        _record("rows", "inc", float(count), {"table": table, "direction": direction})


def step_seconds(step: str, outcome: str, seconds: float) -> None:
    _record("step", "observe", seconds, {"step": step, "outcome": outcome})


def cdc_lag(slot: str, lag_bytes: int) -> None:
    _record("lag", "set", float(lag_bytes), {"slot": slot})
