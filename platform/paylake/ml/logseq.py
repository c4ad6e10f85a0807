"""The log-sequence anomaly model (DeepLog): predict a session's next log key from the h before it.

Sessions are sequences of key indices (``paylake.ml.logkeys.Vocabulary``; 0 is
the unknown key). Training windows are every (h keys → next key) pair of the
*normal* sessions, each session padded on the left with ``PAD`` so that its
first lines are predicted too. The model is an LSTM over key embeddings with a
softmax over the vocabulary, trained with ``ray.train.torch.TorchTrainer``
(DDP over gloo on CPU; each worker a shard of the windows; a GPU worker group
when the cluster has GPUs). A checkpoint is reported every epoch from rank 0;
a run started again with the same name and storage path resumes from the
latest (``ray.train.get_checkpoint()``).

Detection: a line is anomalous when its key is not among the model's top-g
predictions (an unknown key never is); a session is anomalous when any line
is. Its score is the largest rank-surprise of its lines (0 = every key was the
top prediction, 1 = a key outside the top-g). h and g are chosen on a
validation split of normal sessions (the false-positive rate budget), never on
the test data.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD = 0  # shares the index of the unknown key: "nothing known before"


@dataclass(frozen=True)
class LogModelConfig:
    vocabulary_size: int
    window: int = 10  # h
    top_g: int = 9  # g
    embedding: int = 32
    hidden: int = 64
    layers: int = 2
    epochs: int = 12
    batch_size: int = 512
    learning_rate: float = 0.003


def windows(sessions: Sequence[Sequence[int]], h: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (h previous keys, next key) pair of the sessions, left-padded with PAD."""
    xs, ys = [], []
    for session in sessions:
        padded = [PAD] * h + list(session)
        for i in range(len(session)):
            xs.append(padded[i:i + h])
            ys.append(session[i])
    if not xs:
        return np.zeros((0, h), np.int64), np.zeros(0, np.int64)
    return np.asarray(xs, np.int64), np.asarray(ys, np.int64)


def build_model(config: LogModelConfig):
    import torch
    from torch import nn

    class NextKey(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.vocabulary_size, config.embedding)
            self.lstm = nn.LSTM(config.embedding, config.hidden, num_layers=config.layers, batch_first=True)
            self.out = nn.Linear(config.hidden, config.vocabulary_size)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden, _ = self.lstm(self.embed(x))
            return self.out(hidden[:, -1, :])

    return NextKey()


def _train_loop(loop: dict) -> None:
    """One TorchTrainer worker: its shard of the windows, DDP, a checkpoint per epoch, resumable."""
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint

    config = LogModelConfig(**loop["config"])
    torch.manual_seed(7)
    model = ray.train.torch.prepare_model(build_model(config))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a resumed run: the latest epoch's weights and optimiser
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder, "state.pt"), weights_only=True)
        target = model.module if hasattr(model, "module") else model
        target.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start_epoch = state["epoch"] + 1
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    x = torch.from_numpy(np.asarray(loop["x"])[rank::size])
    y = torch.from_numpy(np.asarray(loop["y"])[rank::size])
    generator = torch.Generator().manual_seed(11)
    for epoch in range(start_epoch, config.epochs):
        began = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        total, batches = 0.0, 0
        model.train()
        for i in range(0, len(x), config.batch_size):
            pick = order[i:i + config.batch_size]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
            loss.backward()
            optimiser.step()
            total, batches = total + float(loss), batches + 1
        metrics = {"epoch": epoch, "loss": total / max(batches, 1), "seconds": time.perf_counter() - began,
                   "resumed_at_epoch": start_epoch}
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                target = model.module if hasattr(model, "module") else model
                torch.save({"model": target.state_dict(), "optimiser": optimiser.state_dict(), "epoch": epoch},
                           Path(folder, "state.pt"))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if loop.get("stop_after_epoch") is not None and epoch >= loop["stop_after_epoch"]:
            raise RuntimeError(f"stopped after epoch {epoch} (test)")


def train_model(sessions: Sequence[Sequence[int]], config: LogModelConfig, *, num_workers: int = 2,
                run_name: str = "logseq", storage_path: str | None = None, storage_filesystem=None,
                stop_after_epoch: int | None = None):
    """Train on normal sessions with TorchTrainer; returns (model, last metrics, seconds). Running again
    with the same ``run_name`` and ``storage_path`` resumes from the latest checkpoint."""
    import torch
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    x, y = windows(sessions, config.window)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"config": config.__dict__, "x": x, "y": y, "stop_after_epoch": stop_after_epoch},
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=run_name, storage_path=storage_path or str(Path(tempfile.gettempdir())
                                                                              / "paylake-train"),
                             storage_filesystem=storage_filesystem, failure_config=FailureConfig(max_failures=0)),
    )
    begin = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - begin
    model = build_model(config)
    with result.checkpoint.as_directory() as folder:
        model.load_state_dict(torch.load(Path(folder, "state.pt"), weights_only=True)["model"])
    model.eval()
    return model, dict(result.metrics), seconds


@dataclass(frozen=True)
class SessionVerdict:
    anomalous: bool
    score: float  # 0..1: the largest rank-surprise of its lines
    lines: list[dict]  # anomalous lines: position, key seen, expected keys (top-g)


def score_sessions(model, sessions: Sequence[Sequence[int]], window: int, top_g: int) -> list[SessionVerdict]:
    """Each session's verdict (see the module docstring); batched over all lines of all sessions."""
    import torch

    x, y = windows(sessions, window)
    if len(x) == 0:
        return [SessionVerdict(False, 0.0, []) for _ in sessions]
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 8192])) for i in range(0, len(x), 8192)])
    ranks = (logits > logits.gather(1, torch.from_numpy(y)[:, None])).sum(1).numpy()
    top = logits.topk(top_g, dim=1).indices.numpy()
    verdicts, at = [], 0
    for session in sessions:
        n = len(session)
        bad = [i for i in range(n) if y[at + i] == 0 or ranks[at + i] >= top_g]
        surprise = [1.0 if (y[at + i] == 0 or ranks[at + i] >= top_g) else ranks[at + i] / top_g for i in range(n)]
        verdicts.append(SessionVerdict(bool(bad), max(surprise, default=0.0),
                                       [{"position": i, "seen": int(y[at + i]),
                                         "expected": [int(k) for k in top[at + i]]} for i in bad]))
        at += n
    return verdicts
