"""The log-sequence anomaly model (DeepLog): predict a session's next log key from the h before it.

Sessions are sequences of key indices (``paylake.ml.logs.keys.Vocabulary``; 0 is
the unknown key). Two more indices follow the vocabulary: ``config.pad`` (the
start-of-session padding, not the unknown key) and ``config.end`` (end of
session). Training windows are every (h keys → next key) pair of the *normal*
sessions, each session padded on the left with ``pad`` so that its first lines
are predicted too, and followed by ``end`` as one more target so that a session
that stops early is checked too. The model is an LSTM over key embeddings with a
softmax over the vocabulary, trained with ``ray.train.torch.TorchTrainer``
(DDP over gloo on CPU; each worker a shard of the windows; a GPU worker group
when the cluster has GPUs). A checkpoint is reported every ``checkpoint_every``
epochs and after the last from rank 0 (a report is a barrier: ~2 s here);
a run started again with the same name and storage path resumes from the
latest (``ray.train.get_checkpoint()``).

Detection: a line is anomalous when its key is not among the model's top-g
predictions (an unknown key never is); the end of a session is anomalous when
the model gives it a probability below ``end_threshold`` (a rank test is too
lax there: after "5 22" the few keys that can follow take all the probability
and the end, at ~1e-4, still ranks 4th); a session is anomalous when it holds
an unknown key or an unlikely end, or at least ``min_lines`` keys outside the
top-g (1, the default: any line, DeepLog's rule; more drops normal sessions
that leave the learnt steps once while anomalies do so several times). Its
score is the largest rank-surprise of its lines (0 = every key was the top
prediction, 1 = a key outside the top-g or an unlikely end). h, g, the end
threshold and min lines are chosen on a validation split, never on the test
data, under a **false-alert budget** (``choose_under_budget``): among the
settings whose false alerts stay within ``false_alert_budget`` per 1,000
normal validation sessions, the one that catches the most validation anomalies;
ties, and sessions without labels (real logs: nothing to measure recall on),
go to the most sensitive setting (smaller g, larger end threshold, fewer min
lines). F1 at the validation split's class mix (about 45 % anomalies on the
generated sessions) would reward alerting on everything; precision is
reported at a stated production mix (``production_mix``, 1 anomalous session
per 1,000 by default) from the measured recall and false-alert rate.

**The role rule** (``role_rule``, chosen on validation under the budget like
g): the keys carry no role, so a normal session replayed by another role looks
normal to the LSTM. The scorer keeps, per role, the statement keys the role
ran in the normal training sessions; with the rule on, a known statement that
the session's role never ran there flags the session ("outside the role's
statements"). A role absent from training is not judged by it (nothing to
compare with).

Optional, for rare but normal transitions (``transition_memory``): a key outside
the top-g is excused when the same n keys followed by it occurred in the normal
training sessions (the LSTM gives a pattern seen a handful of times a rank as
low as an anomaly's; an n-gram memory alone flags every new combination of
known steps: a line is anomalous only when both find it surprising). Several
models trained alike (``average_models``) predict the mean of their
probabilities (less dependent on one initialisation).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from paylake import contracts
from paylake.ml import registry
from paylake.ml.logs.keys import STATEMENT_MARK
from paylake.settings import Settings


@dataclass(frozen=True)
class LogModelConfig:
    vocabulary_size: int
    window: int = 10  # h
    top_g: int = 9  # g
    end_threshold: float = 0.01  # the end of a session is anomalous below this probability
    min_lines: int = 1  # keys outside the top g that make a session anomalous (1: any line, DeepLog's rule)
    role_rule: bool = False  # a statement its role never ran in training makes the session anomalous
    embedding: int = 32
    hidden: int = 64
    layers: int = 2
    epochs: int = 12
    batch_size: int = 512  # global: each of N workers takes batch_size // N per step
    learning_rate: float = 0.003
    checkpoint_every: int = 10  # epochs between checkpoints (each report is a ~2 s barrier here); the last always

    @property
    def pad(self) -> int:  # start-of-session padding (0 stays the unknown key)
        return self.vocabulary_size

    @property
    def end(self) -> int:  # end of session: the target after a session's last key
        return self.vocabulary_size + 1

    @property
    def classes(self) -> int:
        return self.vocabulary_size + 2


def windows(sessions: Sequence[Sequence[int]], h: int, vocabulary_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (h previous keys, next key) pair of the sessions, left-padded with the pad index; the last
    target of each session is the end index (len(session) + 1 pairs per session)."""
    pad, end = vocabulary_size, vocabulary_size + 1
    xs, ys = [], []
    for session in sessions:
        padded = [pad] * h + list(session)
        targets = list(session) + [end]
        for i in range(len(targets)):
            xs.append(padded[i:i + h])
            ys.append(targets[i])
    if not xs:
        return np.zeros((0, h), np.int64), np.zeros(0, np.int64)
    return np.asarray(xs, np.int64), np.asarray(ys, np.int64)


def build_model(config: LogModelConfig):
    import torch
    from torch import nn

    class NextKey(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(config.classes, config.embedding)
            self.lstm = nn.LSTM(config.embedding, config.hidden, num_layers=config.layers, batch_first=True)
            self.out = nn.Linear(config.hidden, config.classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden, _ = self.lstm(self.embed(x))
            return self.out(hidden[:, -1, :])

    return NextKey()


def _train_loop(loop: dict) -> None:
    """One TorchTrainer worker: its shard of the windows of every candidate configuration (e.g. several h),
    one DDP model each, trained side by side epoch by epoch (one worker group for all candidates), a
    checkpoint of all of them every ``checkpoint_every`` epochs, resumable."""
    import ray.train
    import ray.train.torch
    import torch
    from ray.train import Checkpoint

    configs = [LogModelConfig(**c) for c in loop["configs"]]
    torch.manual_seed(7)
    models = [ray.train.torch.prepare_model(build_model(c)) for c in configs]
    optimisers = [torch.optim.Adam(m.parameters(), lr=c.learning_rate) for m, c in zip(models, configs)]

    def unwrapped(model):
        return model.module if hasattr(model, "module") else model

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:  # a resumed run: the latest epoch's weights and optimisers
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder, "state.pt"), weights_only=True)
        if state.get("configs") != loop["configs"]:
            raise ValueError("the latest checkpoint of this run name was trained with another configuration "
                             f"({state.get('configs')} vs {loop['configs']}): resume with the same configuration, "
                             "or train under another run name")
        for model, optimiser, saved, saved_optimiser in zip(models, optimisers, state["models"],
                                                            state["optimisers"]):
            unwrapped(model).load_state_dict(saved)
            optimiser.load_state_dict(saved_optimiser)
        start_epoch = state["epoch"] + 1
    context = ray.train.get_context()
    rank, size = context.get_world_rank(), context.get_world_size()
    data = [(torch.from_numpy(np.asarray(x)[rank::size]), torch.from_numpy(np.asarray(y)[rank::size]))
            for x, y in loop["data"]]
    generator = torch.Generator().manual_seed(11)
    epochs, every = max(c.epochs for c in configs), max(configs[0].checkpoint_every, 1)
    for epoch in range(start_epoch, epochs):
        began = time.perf_counter()
        losses = []
        for model, optimiser, (x, y), config in zip(models, optimisers, data, configs):
            if epoch >= config.epochs:
                continue
            batch = max(1, config.batch_size // size)  # the global batch (and steps per epoch) whatever the workers
            order = torch.randperm(len(x), generator=generator)
            total, batches = 0.0, 0
            model.train()
            for i in range(0, len(x), batch):
                pick = order[i:i + batch]
                optimiser.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[pick]), y[pick])
                loss.backward()
                optimiser.step()
                total, batches = total + float(loss), batches + 1
            losses.append(total / max(batches, 1))
        metrics = {"epoch": epoch, "loss": float(np.mean(losses)), "losses": losses,
                   "seconds": time.perf_counter() - began, "resumed_at_epoch": start_epoch}
        if (epoch + 1) % every and epoch != epochs - 1:
            pass  # no report this epoch (a checkpoint is a barrier)
        elif rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"models": [unwrapped(m).state_dict() for m in models],
                            "optimisers": [o.state_dict() for o in optimisers], "epoch": epoch,
                            "configs": loop["configs"]}, Path(folder, "state.pt"))
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if loop.get("stop_after_epoch") is not None and epoch >= loop["stop_after_epoch"]:
            raise RuntimeError(f"stopped after epoch {epoch} (test)")


def train_models(sessions: Sequence[Sequence[int]] | None, configs: Sequence[LogModelConfig], *,
                 num_workers: int = 2, run_name: str = "logseq", storage_path: str | None = None,
                 storage_filesystem=None, stop_after_epoch: int | None = None,
                 datasets: Sequence[Sequence[Sequence[int]]] | None = None):
    """Train one model per configuration on the same normal sessions (or, with ``datasets``, each on its own
    sessions: e.g. the folds of a cross-validation), in one TorchTrainer run (one worker group start-up for
    all of them); returns (models, last metrics, seconds). Running again with the same ``run_name`` and
    ``storage_path`` resumes from the latest checkpoint."""
    import torch
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if datasets is None:
        datasets = [sessions] * len(configs)
    elif len(datasets) != len(configs):
        raise ValueError(f"{len(datasets)} datasets for {len(configs)} configurations: one each")
    data = [windows(d, c.window, c.vocabulary_size) for d, c in zip(datasets, configs)]
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"configs": [c.__dict__ for c in configs], "data": data,
                           "stop_after_epoch": stop_after_epoch},
        scaling_config=ScalingConfig(num_workers=num_workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=run_name, storage_path=storage_path or str(Path(tempfile.gettempdir())
                                                                              / "paylake-train"),
                             storage_filesystem=storage_filesystem, failure_config=FailureConfig(max_failures=0)),
    )
    begin = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - begin
    with result.checkpoint.as_directory() as folder:
        states = torch.load(Path(folder, "state.pt"), weights_only=True)["models"]
    models = []
    for config, state in zip(configs, states):
        model = build_model(config)
        model.load_state_dict(state)
        model.eval()
        models.append(model)
    return models, dict(result.metrics), seconds


def train_model(sessions: Sequence[Sequence[int]], config: LogModelConfig, **kwargs):
    """``train_models`` for one configuration: (model, last metrics, seconds)."""
    models, metrics, seconds = train_models(sessions, [config], **kwargs)
    return models[0], metrics, seconds


@dataclass(frozen=True)
class SessionVerdict:
    anomalous: bool
    score: float  # 0..1: the largest rank-surprise of its lines
    lines: list[dict]  # anomalous lines: position, key seen, expected keys (top-g); an unlikely end of session
    # is the position len(session) with seen = -1


@dataclass(frozen=True)
class LineRanks:
    """Each line's rank among the model's predictions (0 = the top one), computed once for any g."""

    lengths: list[int]  # lines per session, its end included (len(session) + 1)
    seen: np.ndarray  # key index of each line (0: unknown; the last of each session: the end index)
    ranks: np.ndarray
    probability: np.ndarray  # the probability the model gave the key seen (or the end)
    end: np.ndarray  # True for the end-of-session targets
    top: np.ndarray  # the best ``max_g`` predictions of each line

    def bad_lines(self, top_g: int, end_threshold: float = 0.01, seen_before: np.ndarray | None = None,
                  min_lines: int = 1) -> np.ndarray:
        """One flag per line: anomalous at this g and end threshold. ``seen_before`` (optional, one flag per line,
        from ``seen_transitions``): a key outside the top-g is not anomalous when its transition occurred in the
        normal training sessions (an unknown key always is). ``min_lines``: keys outside the top-g (and not
        excused) count only in a session holding at least that many of them (1: DeepLog's rule, any line);
        unknown keys and unlikely ends always count."""
        outside = self._outside_lines(top_g, seen_before)
        if min_lines > 1 and self.lengths:
            outside &= np.repeat(self._per_session(outside) >= min_lines, self.lengths)
        return self._hard_lines(end_threshold) | outside

    def _outside_lines(self, top_g: int, seen_before: np.ndarray | None) -> np.ndarray:
        """Known keys outside the top-g that the memory (if any) does not excuse."""
        outside = ~self.end & (self.ranks >= top_g) & (self.seen != 0)
        return outside & ~seen_before if seen_before is not None else outside

    def _hard_lines(self, end_threshold: float) -> np.ndarray:
        """Unknown keys and unlikely ends: anomalous whatever g and min lines."""
        return (self.seen == 0) | (self.end & (self.probability < end_threshold))

    def _per_session(self, line_flags: np.ndarray) -> np.ndarray:
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        return np.add.reduceat(line_flags.astype(np.int64), starts)

    def hard_sessions(self, end_threshold: float) -> np.ndarray:
        """Per session: whether it holds an unknown key or an unlikely end (anomalous whatever g and min lines)."""
        return self._per_session(self._hard_lines(end_threshold)) > 0 if self.lengths else np.zeros(0, bool)

    def outside_counts(self, top_g: int, seen_before: np.ndarray | None = None) -> np.ndarray:
        """Per session: how many known keys outside the top-g (not excused) it holds. A session is anomalous at
        min lines m when ``hard_sessions`` says so or this count reaches m (what ``anomalous`` decides, for every
        m and end threshold at once)."""
        return self._per_session(self._outside_lines(top_g, seen_before)) if self.lengths else np.zeros(0, np.int64)

    def anomalous(self, top_g: int, end_threshold: float = 0.01, seen_before: np.ndarray | None = None,
                  min_lines: int = 1) -> np.ndarray:
        """One flag per session (any anomalous line), vectorised: what ``verdicts`` decides, without the detail."""
        if not self.lengths:
            return np.zeros(0, bool)
        return self._per_session(self.bad_lines(top_g, end_threshold, seen_before, min_lines)) > 0

    def verdicts(self, top_g: int, end_threshold: float = 0.01, seen_before: np.ndarray | None = None,
                 min_lines: int = 1) -> list[SessionVerdict]:
        """Each session's verdict with its anomalous lines (``bad_lines``)."""
        bad_line = self.bad_lines(top_g, end_threshold, seen_before, min_lines)
        surprise = np.where(bad_line, 1.0, np.minimum(self.ranks / top_g, 0.999))
        verdicts, at = [], 0
        for n in self.lengths:
            bad = np.flatnonzero(bad_line[at:at + n])
            verdicts.append(SessionVerdict(bool(len(bad)), float(surprise[at:at + n].max(initial=0.0)),
                                           [{"position": int(i), "seen": -1 if self.end[at + i] else
                                             int(self.seen[at + i]),
                                             "expected": [int(k) for k in self.top[at + i, :top_g]]} for i in bad]))
            at += n
        return verdicts


def transition_memory(sessions: Sequence[Sequence[int]], order: int, vocabulary_size: int) -> frozenset:
    """Every (``order`` previous keys, next key) of the normal sessions, left-padded with the pad index (the
    memory of ``seen_transitions``; ends of sessions are not in it)."""
    memory = set()
    for session in sessions:
        padded = [vocabulary_size] * order + list(session)
        memory.update(tuple(padded[i:i + order + 1]) for i in range(len(session)))
    return frozenset(memory)


def seen_transitions(sessions: Sequence[Sequence[int]], memory: frozenset, order: int,
                     vocabulary_size: int) -> np.ndarray:
    """One flag per line of ``line_ranks`` (each key, then the end): its ``order`` previous keys followed by it
    are in ``memory`` (``transition_memory`` of the training sessions); the end is never."""
    flags = []
    for session in sessions:
        padded = [vocabulary_size] * order + list(session)
        flags.extend(tuple(padded[i:i + order + 1]) in memory for i in range(len(session)))
        flags.append(False)
    return np.asarray(flags, bool)


def average_models(models: Sequence):
    """One model predicting the mean of the models' probabilities (as log-probabilities: ``line_ranks`` and
    ``score_sessions`` take it like one model)."""
    import torch
    from torch import nn

    class Mean(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = nn.ModuleList(models)

        @property
        def embed(self) -> nn.Module:  # line_ranks reads the vocabulary size from it
            return self.members[0].embed

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(torch.stack([torch.softmax(m(x), 1) for m in self.members]).mean(0))

    return Mean().eval()


def line_ranks(model, sessions: Sequence[Sequence[int]], window: int, max_g: int) -> LineRanks:
    """The model's predictions for every line (and the end) of the sessions, batched."""
    import torch

    vocabulary_size = model.embed.num_embeddings - 2  # the pad and end indices follow the vocabulary
    x, y = windows(sessions, window, vocabulary_size)
    end = y == vocabulary_size + 1
    lengths = [len(s) + 1 for s in sessions]
    if len(x) == 0:
        return LineRanks(lengths, y, y, np.zeros(0), end, np.zeros((0, max_g), np.int64))
    with torch.no_grad():
        logits = torch.cat([model(torch.from_numpy(x[i:i + 8192])) for i in range(0, len(x), 8192)])
    target = logits.gather(1, torch.from_numpy(y)[:, None])
    ranks = (logits > target).sum(1).numpy()
    probability = torch.softmax(logits, 1).gather(1, torch.from_numpy(y)[:, None])[:, 0].numpy()
    top = logits.topk(min(max_g, logits.shape[1]), dim=1).indices.numpy()
    return LineRanks(lengths, y, ranks, probability, end, top)


def score_sessions(model, sessions: Sequence[Sequence[int]], window: int, top_g: int,
                   end_threshold: float = 0.01, min_lines: int = 1) -> list[SessionVerdict]:
    """Each session's verdict (see the module docstring); batched over all lines of all sessions."""
    return line_ranks(model, sessions, window, top_g).verdicts(top_g, end_threshold, min_lines=min_lines)


def role_statements(sessions: Sequence[tuple[str, Sequence[str]]]) -> dict[str, frozenset[str]]:
    """Per role, the statement keys it ran in these (normal training) sessions, given as (role, keys)."""
    out: dict[str, set[str]] = {}
    for role, keys in sessions:
        out.setdefault(role, set()).update(k for k in keys if STATEMENT_MARK in k)
    return {role: frozenset(keys) for role, keys in out.items()}


def role_outliers(sessions: Sequence[Sequence[str]], roles: Sequence[str | None],
                  statements: dict[str, frozenset[str]], known) -> list[list[int]]:
    """Per session, the lines holding a known statement (``known(key)``) that its role never ran in training;
    a role absent from ``statements`` (or None) is not judged."""
    out = []
    for keys, role in zip(sessions, roles):
        ran = statements.get(role) if role is not None else None
        out.append([] if ran is None else [i for i, k in enumerate(keys)
                                           if STATEMENT_MARK in k and known(k) and k not in ran])
    return out


# ----------------------------------------------------------------------------- scorer (what Serve calls)
SCORER_FORMAT = 2  # 2: pad and end-of-session indices after the vocabulary
@dataclass
class LogScorer:
    """A trained model with its vocabulary, window and g: scores sessions given as log lines."""

    model: object
    config: LogModelConfig
    vocabulary: object  # paylake.ml.logs.keys.Vocabulary
    statements_by_role: dict[str, frozenset[str]] | None = None  # the role rule's memory (``role_statements``)

    def score_keys(self, sessions: Sequence[Sequence[str]], roles: Sequence[str | None] | None = None) -> list[dict]:
        """Per session: ``anomalous``, ``decision``, ``score`` and the anomalous lines (line number, the key
        seen, the expected keys). ``roles``: each session's database role, for the role rule."""
        verdicts = score_sessions(self.model, [self.vocabulary.encode(keys) for keys in sessions],
                                  self.config.window, self.config.top_g, self.config.end_threshold,
                                  self.config.min_lines)
        outside = [[] for _ in sessions]
        if self.config.role_rule and self.statements_by_role and roles is not None:
            outside = role_outliers(sessions, roles, self.statements_by_role,
                                    lambda k: self.vocabulary.index(k) != 0)
        out = []
        for keys, verdict, odd in zip(sessions, verdicts, outside):
            lines = [{"line": line["position"],
                      "seen": keys[line["position"]] if line["seen"] >= 0 else "<end of session>",
                      "known": line["seen"] != 0,
                      "expected": [self.key_name(k) for k in line["expected"]]} for line in verdict.lines]
            flagged = {line["line"] for line in lines}
            lines += [{"line": i, "seen": keys[i], "known": True, "expected": ["<outside the role's statements>"]}
                      for i in odd if i not in flagged]
            anomalous = verdict.anomalous or bool(odd)
            out.append({"anomalous": anomalous, "decision": "anomalous" if anomalous else "normal",
                        "score": 1.0 if odd else round(float(verdict.score), 6),
                        "lines": sorted(lines, key=lambda line: line["line"])})
        return out

    def key_name(self, index: int) -> str:
        if index == self.config.end:
            return "<end of session>"
        if index == self.config.pad:
            return "<start of session>"
        return self.vocabulary.key(index)

    def score_lines(self, lines: object, role: str | None = None) -> dict:
        """One session from its raw log lines (a ``Log`` document's ``lines``) and its role (optional); a
        ContractError names what is wrong with malformed input."""
        from paylake.errors import ContractError
        from paylake.ml.logs.data import clean_lines
        from paylake.ml.logs.keys import session_keys

        cleaned, reason = clean_lines(lines)
        if reason is not None:
            raise ContractError(f"log session not scored: {reason}")
        return self.score_keys([session_keys(cleaned)], [role])[0]

    def save(self, folder: Path) -> None:
        import json

        import torch

        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / "state.pt")
        (folder / "config.json").write_text(json.dumps({"format": SCORER_FORMAT, **self.config.__dict__}))
        (folder / "vocabulary.json").write_text(self.vocabulary.to_json())
        if self.statements_by_role is not None:
            (folder / "role_statements.json").write_text(json.dumps(
                {role: sorted(keys) for role, keys in self.statements_by_role.items()}))

    @classmethod
    def load(cls, folder: Path) -> LogScorer:
        import json

        import torch

        from paylake.ml.logs.keys import Vocabulary
        from paylake.ml.registry import ChampionUnreadable

        saved = json.loads((folder / "config.json").read_text())
        if saved.pop("format", None) != SCORER_FORMAT:
            raise ChampionUnreadable(f"log model saved in another format than this code's {SCORER_FORMAT} (before "
                                     "the end-of-session target): retrain with 'paylake train logs'")
        config = LogModelConfig(**saved)
        model = build_model(config)
        model.load_state_dict(torch.load(folder / "state.pt", weights_only=True))
        model.eval()
        roles = folder / "role_statements.json"  # absent in scorers saved before the role rule
        statements = ({role: frozenset(keys) for role, keys in json.loads(roles.read_text()).items()}
                      if roles.exists() else None)
        return cls(model, config, Vocabulary.from_json((folder / "vocabulary.json").read_text()), statements)


# ----------------------------------------------------------------------------- evaluation (pure)
def detection_metrics(flags: Sequence[bool], truth: Sequence[bool]) -> dict[str, float]:
    """Precision, recall, F1, false-positive rate and false alerts per 1,000 normal sessions."""
    tp = sum(f and t for f, t in zip(flags, truth))
    fp = sum(f and not t for f, t in zip(flags, truth))
    positives, negatives = sum(truth), len(truth) - sum(truth)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / positives if positives else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / negatives if negatives else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "fpr": fpr, "false_alerts_per_1000": 1000 * fpr,
            "sessions": float(len(truth)), "anomalous": float(positives)}


END_THRESHOLDS = (0.03, 0.01, 0.003, 0.001, 0.0003)


def precision_at_mix(recall: float, fpr: float, mix: float) -> float:
    """Precision when ``mix`` of the sessions are anomalous, from recall and the false-positive rate."""
    caught, false = recall * mix, fpr * (1 - mix)
    return caught / (caught + false) if caught + false else 0.0


def budget_metrics(flags: Sequence[bool], truth: Sequence[bool], mix: float) -> dict[str, float]:
    """``detection_metrics`` plus the false-alert rate's Wilson upper bound (95 %) and precision at ``mix``
    (from the measured rate and from its upper bound: the worst case the data allows)."""
    from paylake.ml.evaluation import wilson

    metrics = detection_metrics(flags, truth)
    negatives = int(metrics["sessions"] - metrics["anomalous"])
    false = round(metrics["fpr"] * negatives)
    high = wilson(false, negatives)[1] if negatives else 1.0
    return {**metrics, "false_alerts": float(false), "false_alerts_per_1000_high": 1000 * high,
            "precision_at_mix": precision_at_mix(metrics["recall"], metrics["fpr"], mix),
            "precision_at_mix_low": precision_at_mix(metrics["recall"], high, mix)}


def choose_under_budget(ranks: LineRanks, truth: Sequence[bool], max_g: int, budget: float,
                        end_thresholds: Sequence[float] = END_THRESHOLDS,
                        min_lines: Sequence[int] = (1,),
                        role_flags: Sequence[bool] | None = None) -> tuple[int, float, int, dict[str, float]]:
    """g, the end threshold and min lines under a false-alert budget (``budget`` per 1,000 of the normal
    sessions here, rounded down to whole sessions): the most recall among the settings within it, then the most
    sensitive (smaller g, larger end threshold, smaller min lines); sessions without an anomaly among them (real,
    unlabelled logs) are chosen by sensitivity alone. When no setting keeps within the budget, the one with the
    fewest false alerts. ``role_flags`` (one per session: the role rule's verdict): the rule is chosen alike,
    on or off (off is the more lenient; ``metrics["role_rule"]`` says which)."""
    truth_array = np.asarray(truth, dtype=bool)
    rules = [(0, np.zeros(len(truth_array), bool))]
    if role_flags is not None:
        rules.append((1, np.asarray(role_flags, dtype=bool)))
    normal = ~truth_array
    allowed = int(np.floor(budget * int(normal.sum()) / 1000 + 1e-9))
    positives = max(int(truth_array.sum()), 1)
    best = None
    for g in range(1, max_g + 1):
        for threshold in end_thresholds:
            hard, outside = ranks.hard_sessions(threshold), ranks.outside_counts(g)
            for m in min_lines:
                for rule, extra in rules:
                    flags = hard | (outside >= m) | extra
                    false = int((flags & normal).sum())
                    recall = int((flags & truth_array).sum()) / positives
                    rank = ((1, recall, 0, -g, threshold, -m, rule) if false <= allowed
                            else (0, 0.0, -false, -g, threshold, -m, -rule))
                    if best is None or rank > best[0]:
                        best = (rank, g, threshold, m, flags, rule)
    _, g, threshold, m, flags, rule = best
    return g, threshold, m, {**detection_metrics(flags.tolist(), truth_array.tolist()), "role_rule": float(rule)}


# ----------------------------------------------------------------------------- the job
MODEL_NAME = "paylake-logseq"
EXPERIMENT = "paylake-logseq"


@dataclass(frozen=True)
class LogTrainOptions:
    num_workers: int = 2
    windows: tuple[int, ...] = (4, 8)  # h candidates, chosen on validation
    max_g: int = 10
    min_lines: tuple[int, ...] = (1, 2, 3)  # session rules chosen on validation (1: any line)
    false_alert_budget: float = 10.0  # false alerts per 1,000 normal sessions the choice may spend
    production_mix: float = 0.001  # anomalous share of the sessions, for the precision reported
    ignore_labels: bool = False  # treat the sessions as real logs: no label, no scenario
    epochs: int = 30
    valid_fraction: float = 0.2
    test_fraction: float = 0.2
    min_train_sessions: int = 10
    model_name: str = MODEL_NAME
    experiment: str = EXPERIMENT
    storage_path: str | None = None  # Ray Train checkpoints (default: a temporary folder)
    checkpoints_in_lake: bool = False  # checkpoints under <lake_root>/checkpoints/ (the lake's object store)


@dataclass
class LogTrainReport:
    model_name: str
    version: str
    alias: str
    alias_reason: str
    window: int
    top_g: int
    end_threshold: float
    min_lines: int
    sessions: dict[str, int]
    skipped: dict[str, int]
    vocabulary_size: int
    valid: dict[str, float]
    test: dict[str, float]
    per_scenario: dict[str, tuple[int, int]]  # scenario -> (flagged, sessions) on test
    per_scenario_known: dict[str, tuple[int, int]]  # the same, sessions without an unknown key only
    labelled: bool  # False: real logs, chosen and promoted on false alerts alone
    train_seconds: float
    run_id: str


def train_logs(settings: Settings, options: LogTrainOptions = LogTrainOptions(),
               progress=lambda m: None, promote_now: bool = True) -> LogTrainReport:
    """Train the log-sequence model on the normal sessions of ``silver/log_session``; choose h and g on the
    validation split; evaluate once on the test split; log, register and alias it in MLflow. ``promote_now``
    False (the pipeline): aliased ``candidate``, its held-out sessions logged; ``promote_candidate`` decides."""
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    from paylake.errors import PaylakeError
    from paylake.ml.logs.data import read_sessions, split
    from paylake.ml.logs.keys import Vocabulary
    from paylake.ml.logs.pyfunc import LogSeqModel, example_input
    from paylake.raycluster import init_ray
    from paylake.stores import lake

    init_ray(settings)
    progress("reading silver/log_session")
    silver_version = lake.table_version(settings, contracts.LOG_SESSIONS.uri(settings))
    data = read_sessions(settings)
    if options.ignore_labels:
        data.sessions = [dataclasses.replace(s, label=None, scenario=None) for s in data.sessions]
    labelled = any(s.label is not None for s in data.sessions)
    parts = split(data.sessions, options.valid_fraction, options.test_fraction)
    if len(parts["train"]) < options.min_train_sessions:
        raise PaylakeError(f"{len(parts['train'])} normal session(s) to train on (need {options.min_train_sessions}):"
                           " seed more with 'paylake seed --log-sessions N', then extract and build silver")
    vocabulary = Vocabulary.build(s.keys for s in parts["train"])
    storage_path, filesystem = options.storage_path, None
    if options.checkpoints_in_lake:  # through the lake's filesystem (S3 with its endpoint, or local)
        storage_path = lake.table_uri(settings, "checkpoints").removeprefix("s3://")
        filesystem = lake.filesystem(settings)
    truth = {name: [s.anomalous for s in part] for name, part in parts.items()}
    run_name = f"logseq-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    configs = [LogModelConfig(vocabulary_size=len(vocabulary), window=h, epochs=options.epochs)
               for h in options.windows]
    progress(f"training h in {options.windows} on {len(parts['train'])} normal sessions with "
             f"{options.num_workers} workers")
    models, _, seconds = train_models([vocabulary.encode(s.keys) for s in parts["train"]], configs,
                                      num_workers=options.num_workers, run_name=run_name,
                                      storage_path=storage_path, storage_filesystem=filesystem)
    by_role = role_statements([(s.user, s.keys) for s in parts["train"]])
    valid_roles = [bool(lines) for lines in role_outliers([s.keys for s in parts["valid"]],
                                                          [s.user for s in parts["valid"]], by_role,
                                                          lambda k: vocabulary.index(k) != 0)]
    candidates = []
    for model, config in zip(models, configs):
        max_g = min(options.max_g, len(vocabulary) - 1)
        ranks = line_ranks(model, [vocabulary.encode(s.keys) for s in parts["valid"]], config.window, max_g)
        g, threshold, least, metrics = choose_under_budget(ranks, truth["valid"], max_g, options.false_alert_budget,
                                                           min_lines=options.min_lines, role_flags=valid_roles)
        within = metrics["false_alerts_per_1000"] <= options.false_alert_budget
        candidates.append(((within, metrics["recall"] if within else -metrics["fpr"], -config.window), config.window,
                           g, threshold, least, metrics, model, config))
    _, window, top_g, end_threshold, min_lines, chosen, model, config = max(candidates, key=lambda c: c[0])
    scorer = LogScorer(model, LogModelConfig(**{**config.__dict__, "top_g": top_g, "end_threshold": end_threshold,
                                                "min_lines": min_lines, "role_rule": bool(chosen["role_rule"])}),
                       vocabulary, by_role)
    valid_metrics = budget_metrics([r["anomalous"] for r in scorer.score_keys(
        [s.keys for s in parts["valid"]], [s.user for s in parts["valid"]])], truth["valid"], options.production_mix)
    results = scorer.score_keys([s.keys for s in parts["test"]], [s.user for s in parts["test"]])
    flags = [r["anomalous"] for r in results]
    test_metrics = budget_metrics(flags, truth["test"], options.production_mix)
    per_scenario: dict[str, tuple[int, int]] = {}
    per_scenario_known: dict[str, tuple[int, int]] = {}
    for session, flagged in zip(parts["test"], flags):
        name = session.scenario or "-"
        hit, total = per_scenario.get(name, (0, 0))
        per_scenario[name] = (hit + flagged, total + 1)
        if all(vocabulary.index(k) != 0 for k in session.keys):  # no key unknown to the model
            hit, total = per_scenario_known.get(name, (0, 0))
            per_scenario_known[name] = (hit + flagged, total + 1)

    progress("logging to MLflow")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_experiment(options.experiment)
    with mlflow.start_run(run_name=run_name) as run, tempfile.TemporaryDirectory() as folder:
        mlflow.log_params({"false_alert_budget_per_1000": options.false_alert_budget, "labelled": labelled,
                           "production_mix": options.production_mix,
                           "num_workers": options.num_workers, "window": window, "top_g": top_g,
                           "role_rule": scorer.config.role_rule,
                           "end_threshold": end_threshold, "min_lines": min_lines,
                           "windows_tried": ",".join(map(str, options.windows)), "epochs": options.epochs,
                           "silver_log_session_version": silver_version,
                           "vocabulary_size": len(vocabulary), "hidden": config.hidden, "layers": config.layers,
                           "train_sessions": len(parts["train"]), "valid_sessions": len(parts["valid"]),
                           "test_sessions": len(parts["test"]), **{f"skipped {k}": v for k, v in
                                                                   data.skipped.items()}})
        mlflow.log_metrics({**{f"valid_{k}": v for k, v in valid_metrics.items()},
                            **{f"test_{k}": v for k, v in test_metrics.items()}, "train_seconds": seconds})
        mlflow.log_text(vocabulary.to_json(), "vocabulary.json")
        mlflow.log_dict(_jsonable({"labelled": labelled, "test_metrics": test_metrics,
                                   "sessions": [{"lines": list(s.lines), "user": s.user, "anomalous": s.anomalous}
                                                for s in parts["test"]]}),
                        f"{registry.PROMOTION_ARTIFACT}/test_sessions.json")  # what the promote step scores
        scorer.save(Path(folder, "scorer"))
        example = example_input(parts["train"][0].lines)
        info = mlflow.pyfunc.log_model(
            name="model", python_model=LogSeqModel(), artifacts={"scorer": str(Path(folder, "scorer"))},
            signature=infer_signature(example, pd.DataFrame([{"anomalous": False, "score": 0.0,
                                                              "anomalous_lines": "[]"}])),
            input_example=example, registered_model_name=options.model_name,
            metadata={"window": window, "top_g": top_g, "end_threshold": end_threshold, "min_lines": min_lines,
                      "vocabulary_size": len(vocabulary)})
    version = str(info.registered_model_version)

    test_lines = [(list(s.lines), s.user) for s in parts["test"]]

    def decide(uri: str, current: str) -> registry.Decision:
        champion = mlflow.pyfunc.load_model(uri).unwrap_python_model().scorer
        theirs = detection_metrics([champion.score_lines(lines, role)["anomalous"] for lines, role in test_lines],
                                   truth["test"])
        return promotion_decision(test_metrics, theirs, labelled, f"champion v{current}")

    if promote_now:
        alias, reason = registry.promote(settings, options.model_name, version, decide)
    else:
        registry.set_candidate(settings, options.model_name, version)
        alias, reason = registry.CANDIDATE, "the pipeline's promote step decides"
    return LogTrainReport(options.model_name, version, alias, reason, window, top_g, end_threshold, min_lines,
                          {k: len(v) for k, v in parts.items()}, dict(data.skipped), len(vocabulary),
                          valid_metrics, test_metrics, per_scenario, per_scenario_known, labelled, seconds,
                          run.info.run_id)


def promote_candidate(settings: Settings, options: LogTrainOptions = LogTrainOptions()) -> tuple[str, str, str] | None:
    """Decide the ``candidate`` version on the held-out sessions its training logged (the champion scored on the
    same sessions); None when there is no candidate. Returns (version, alias, why)."""
    import json

    import mlflow

    version = registry.alias_version(settings, options.model_name, registry.CANDIDATE)
    if version is None:
        return None
    path = registry.promotion_inputs(settings, options.model_name, version, "test_sessions.json")
    with open(path) as f:
        held_out = json.load(f, object_hook=_from_json)
    sessions = held_out["sessions"]

    def decide(uri: str, current: str) -> registry.Decision:
        champion = mlflow.pyfunc.load_model(uri).unwrap_python_model().scorer
        theirs = detection_metrics([champion.score_lines(s["lines"], s["user"])["anomalous"] for s in sessions],
                                   [s["anomalous"] for s in sessions])
        return promotion_decision(held_out["test_metrics"], theirs, held_out["labelled"], f"champion v{current}")

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    alias, reason = registry.promote(settings, options.model_name, version, decide)
    registry.clear_candidate(settings, options.model_name)
    return version, alias, reason


def _jsonable(value):
    """``value`` as JSON types, datetimes tagged (``_from_json`` reads them back as datetimes)."""
    import json

    def default(o):
        if isinstance(o, dt.datetime):
            return {"$datetime": o.isoformat()}
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        return str(o)

    return json.loads(json.dumps(value, default=default))


def _from_json(obj: dict):
    if set(obj) == {"$datetime"}:
        return dt.datetime.fromisoformat(obj["$datetime"])
    return obj


def promotion_decision(ours: dict[str, float], theirs: dict[str, float], labelled: bool,
                       champion: str = "the champion") -> registry.Decision:
    """On the same held-out sessions: a challenger replaces the champion when it raises fewer false alerts
    without catching fewer anomalies, or as many false alerts and more anomalies (labelled sessions only);
    everything else keeps the champion."""
    fa_ours, fa_theirs = ours["false_alerts_per_1000"], theirs["false_alerts_per_1000"]
    figures = f"false alerts per 1,000 normal sessions {fa_ours:.1f} vs {fa_theirs:.1f} for {champion}"
    if labelled:
        figures += f", recall {ours['recall']:.3f} vs {theirs['recall']:.3f}"
        better = (fa_ours < fa_theirs and ours["recall"] >= theirs["recall"]) or (
            fa_ours == fa_theirs and ours["recall"] > theirs["recall"])
    else:
        better = fa_ours < fa_theirs
    return registry.Decision(better, f"{figures} on the same held-out sessions: "
                                     + ("promoted" if better else "the champion stays"))
