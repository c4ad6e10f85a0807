"""Log keys: each line of a database session as a template, the alphabet of the log-sequence model.

A line's key is ``<severity>|<SQLSTATE class>|<template>``:

- a statement line (``statement: …``) is reduced to the statement's *shape*:
  the command, the tables it touches and the shape of its clauses (``where``,
  ``join``, ``union``, ``group``, ``order``, ``limit``, a subquery, a comment,
  a tautology such as ``or 1=1``), never its literals: ``select oltp.customer
  [tautology,comment,where]``;
- any other line is its message with the literals masked (timestamps, IP
  addresses and ports, quoted strings, quoted identifiers, hexadecimal ids,
  numbers, file paths): ``connection received: host=<ip> port=<num>``.

Two lines that differ only in literals get the same key; the key holds no
value from the data (no name, password, amount): it is safe to keep in silver.

``Vocabulary`` numbers the keys seen in training (index 0 is the explicit
unknown key, for keys never seen); ``TemplateMiner`` is a small Drain-style
online miner (a prefix tree by token count and first tokens, clusters merged
when enough tokens agree, differing positions becoming ``<*>``) that turns
messages the masks leave apart into shared templates as new lines arrive.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

UNKNOWN = "<unknown>"
STATEMENT_MARK = "|stmt "  # in a statement line's key, between the severity/SQLSTATE prefix and its shape

_MASKS: tuple[tuple[re.Pattern, str], ...] = (
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:\s?(?:[+-]\d{2}(?::?\d{2})?|UTC|Z))?"),
     "<ts>"),
    (re.compile(r"\b\d+:\d{2}:\d{2}(?:\.\d+)?\b"), "<duration>"),
    (re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?(?![\w.])"), "<ip>"),
    (re.compile(r"(?<![\w:$])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{1,4}\b"), "<ip>"),
    (re.compile(r"\b(user|database|application_name|identity|role)=(?:\"[^\"]*\"|\S+)"), r"\1=<name>"),
    (re.compile(r"'(?:[^']|'')*'"), "<str>"),
    (re.compile(r'"(?:[^"]|"")*"'), "<id>"),
    (re.compile(r"(?:/[\w.\-]+)+(?::\d+)?"), "<path>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"), "<hex>"),
    (re.compile(r"\b[0-9a-f]*\d[0-9a-f]*\.[0-9a-f]+\b"), "<hex>"),  # session ids such as 6b0ff53b.1acd
    (re.compile(r"\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?(?![\w>])"), "<num>"),
)
_SPACES = re.compile(r"\s+")


def mask(text: str) -> str:
    """``text`` with every literal replaced by its kind (``<ts>``, ``<ip>``, ``<str>``, ``<id>``, …)."""
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip()


_COMMANDS = ("select", "insert", "update", "delete", "copy", "grant", "revoke", "create", "alter", "drop",
             "truncate", "set", "reset", "show", "begin", "commit", "rollback", "start", "with", "explain",
             "analyze", "vacuum", "call", "do", "lock", "listen", "notify", "declare", "fetch", "close")
_TABLE_AFTER = re.compile(r"\b(?:from|join|into|update|table|on)\s+((?:[a-z_][\w$]*\.)?[a-z_][\w$]*)", re.I)
_NOT_TABLES = {"select", "lateral", "only", "unnest", "generate_series", "all", "schema", "function", "database"}
_LINE_COMMENT = re.compile(r"--[^\n]*")
_BLOCK_COMMENT = re.compile(r"/\*.*?\*/", re.S)
_TAUTOLOGY = re.compile(r"\bor\s+(<\w+>|\w+)\s*=\s*\1(?!\w)", re.I)
_STATEMENT_PREFIX = re.compile(r"^(?:statement|execute [^:]*|parse [^:]*|bind [^:]*): ")


def statement_shape(statement: str) -> str:
    """The statement's command, tables and clause shape, without any literal."""
    masked = mask(statement)
    flags = set()
    if _LINE_COMMENT.search(masked) or _BLOCK_COMMENT.search(masked):
        flags.add("comment")
    if _TAUTOLOGY.search(masked):
        flags.add("tautology")
    body = _BLOCK_COMMENT.sub(" ", _LINE_COMMENT.sub(" ", masked)).lower()
    words = body.split()
    command = words[0] if words and words[0] in _COMMANDS else (words[0] if words else "empty")
    if command not in _COMMANDS:
        command = "other"
    tables = sorted({t.lower() for t in _TABLE_AFTER.findall(body) if t.lower() not in _NOT_TABLES
                     and not t.startswith("<")})
    for clause in ("where", "join", "union", "group by", "order by", "limit", "having", "returning"):
        if re.search(rf"\b{clause}\b", body):
            flags.add(clause.split()[0])
    if body.count("select") > 1 and "union" not in flags:
        flags.add("subquery")
    if _TAUTOLOGY.search(body):
        flags.add("tautology")
    return f"{command} {','.join(tables) or '-'} [{','.join(sorted(flags))}]"


def line_key(line: dict) -> str:
    """The key of one log line (a ``Log`` document's line: error_severity, state_code, message, statement)."""
    severity = str(line.get("error_severity") or "LOG").upper()
    state = str(line.get("state_code") or "00000")[:2]
    message = str(line.get("message") or "")
    statement = line.get("statement")
    prefix = _STATEMENT_PREFIX.match(message)
    if prefix:  # a statement logged (simple or extended protocol): its shape, never its text
        template = "stmt " + statement_shape(str(statement) if statement else message[prefix.end():])
    else:
        template = mask(message)
    return f"{severity}|{state}|{template}"


def session_keys(lines: Sequence[dict]) -> list[str]:
    """The keys of a session's lines, in order."""
    return [line_key(line) for line in lines]


def session_params(lines: Sequence[dict], role: str | None) -> list[dict]:
    """The parameters of a session's lines, beside their keys: the role (the session's user), seconds since
    the previous line and the hour of day (UTC), None where a line has no timestamp. Rows affected are
    not among them: the server's log lines carry no row counts (``log_statement`` logs the text only)."""
    import datetime as dt

    out, previous = [], None
    for line in lines:
        when = line.get("timestamp")
        if isinstance(when, str):
            try:
                when = dt.datetime.fromisoformat(when)
            except ValueError:
                when = None
        if not isinstance(when, dt.datetime):
            when = None
        elif when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        elapsed = None if when is None or previous is None else max((when - previous).total_seconds(), 0.0)
        out.append({"role": role or None, "elapsed_s": 0.0 if when is not None and previous is None else elapsed,
                    "hour": when.astimezone(dt.UTC).hour if when is not None else None})
        previous = when if when is not None else previous
    return out


@dataclass
class Vocabulary:
    """Keys numbered from 1 in order of frequency (ties by key); 0 is the unknown key."""

    keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index = {key: i + 1 for i, key in enumerate(self.keys)}

    @classmethod
    def build(cls, sessions: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        counts = Counter(key for session in sessions for key in session)
        return cls(sorted((k for k, n in counts.items() if n >= min_count), key=lambda k: (-counts[k], k)))

    def __len__(self) -> int:  # with the unknown key
        return len(self.keys) + 1

    def index(self, key: str) -> int:
        return self._index.get(key, 0)

    def encode(self, keys: Sequence[str]) -> list[int]:
        return [self._index.get(key, 0) for key in keys]

    def key(self, index: int) -> str:
        return self.keys[index - 1] if 0 < index <= len(self.keys) else UNKNOWN

    def to_json(self) -> str:
        return json.dumps({"unknown": UNKNOWN, "keys": self.keys})

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(list(json.loads(text)["keys"]))


@dataclass
class _Cluster:
    tokens: list[str]
    size: int = 1


class TemplateMiner:
    """Drain-style online template mining over masked messages.

    Messages are grouped by token count and their first ``depth`` tokens (a
    token holding a mask, like ``<num>``, matches any); within a group a
    message joins the most similar template when at least ``similarity`` of
    its tokens agree, and the positions that differ become ``<*>``; otherwise
    it starts a template of its own."""

    WILDCARD = "<*>"

    def __init__(self, depth: int = 2, similarity: float = 0.5) -> None:
        self.depth, self.similarity = depth, similarity
        self._groups: dict[tuple, list[_Cluster]] = {}

    def _prefix(self, tokens: list[str]) -> tuple:
        head = tuple("<>" if t.startswith("<") else t for t in tokens[:self.depth])
        return (len(tokens), *head)

    def add(self, message: str) -> tuple[str, bool]:
        """(the message's template, whether a new template was created)."""
        tokens = mask(message).split()
        clusters = self._groups.setdefault(self._prefix(tokens), [])
        best, score = None, -1.0
        for cluster in clusters:
            same = sum(a == b for a, b in zip(cluster.tokens, tokens) if a != self.WILDCARD)
            fixed = sum(a != self.WILDCARD for a in cluster.tokens) or 1
            if same / fixed > score:
                best, score = cluster, same / fixed
        if best is not None and score >= self.similarity:
            best.tokens = [a if a == b else self.WILDCARD for a, b in zip(best.tokens, tokens)]
            best.size += 1
            return " ".join(best.tokens), False
        clusters.append(_Cluster(tokens))
        return " ".join(tokens), True

    def match(self, message: str) -> str | None:
        """The template a message fits without changing anything (None: it would be new)."""
        tokens = mask(message).split()
        for cluster in self._groups.get(self._prefix(tokens), []):
            if all(a == self.WILDCARD or a == b for a, b in zip(cluster.tokens, tokens)):
                return " ".join(cluster.tokens)
        return None

    def templates(self) -> list[tuple[str, int]]:
        return sorted(((" ".join(c.tokens), c.size) for group in self._groups.values() for c in group),
                      key=lambda t: -t[1])
