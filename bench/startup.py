"""Where a Ray Train run's start-up goes, from Ray's task events (the state API of the dashboard).

``trainer.fit()`` does not run the training loop at once: Ray Train V2 first starts
its controller actor, then the worker group (a synchronisation actor and one
actor per worker: a process each, its imports), then sets up each worker's train
context (the backend: LightGBM's network, Torch's process group) and the
datasets (the dataset manager actor, and a split coordinator when Ray Train splits a dataset). ``startup_phases``
reads those steps' task events and reports each phase's wall time, so that a
benchmark can say which part of the fixed cost is which.
"""

from __future__ import annotations

# (phase, task names): a phase runs from the first of its tasks' first event to its last one's finish
PHASES = (
    ("controller actor (process start + imports)", ("TrainController.__init__",)),
    ("worker group actors (processes + imports)", ("RayTrainWorker.__init__", "SynchronizationActor.__init__")),
    ("train context on the workers (backend set-up)", ("RayTrainWorker.init_train_context",)),
    ("dataset manager (and split coordinator)", ("DatasetManager.__init__", "SplitCoordinator.__init__")),
)


def startup_phases(begin_wall: float, loop_started_wall: float, dashboard_url: str) -> list[tuple[str, float]]:
    """Each start-up phase's wall time in seconds between ``begin_wall`` (``fit()`` called) and
    ``loop_started_wall`` (the loop's first line), from the state API at ``dashboard_url``; overlapping
    phases are not split, the remainder is what the controller did between them (scheduling, polling).
    Empty when the state API does not answer."""
    from ray.util.state import list_tasks

    names = [name for _, phase_names in PHASES for name in phase_names]
    try:  # one filtered query per task name: a long-lived cluster holds more tasks than one listing returns
        tasks = [task for name in names for task in list_tasks(
            address=dashboard_url, filters=[("func_or_class_name", "=", name)], detail=True, limit=10_000,
            raise_on_missing_output=False)]
    except Exception:  # noqa: BLE001 - a report, not a failure: no dashboard, no breakdown
        return []
    spans: dict[str, list[float]] = {}
    for task in tasks:
        events = [e["created_ms"] / 1000 for e in (task.events or [])]
        if not events or min(events) < begin_wall - 1 or max(events) > loop_started_wall + 60:
            continue  # another run's task
        for phase, phase_names in PHASES:
            if (task.func_or_class_name or "") in phase_names:
                span = spans.setdefault(phase, [min(events), max(events)])
                span[0], span[1] = min(span[0], min(events)), max(span[1], max(events))
    for span in spans.values():  # within the start-up
        span[0], span[1] = max(span[0], begin_wall), min(span[1], loop_started_wall)
        span[1] = max(span)
    phases = [(phase, spans[phase][1] - spans[phase][0]) for phase, _ in PHASES if phase in spans]
    covered = _union([tuple(spans[p]) for p, _ in PHASES if p in spans])
    phases.append(("between them (scheduling, placement, polling)", (loop_started_wall - begin_wall) - covered))
    return phases


def _union(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for low, high in sorted(spans):
        if high > end:
            total += high - max(low, end)
            end = high
    return total
