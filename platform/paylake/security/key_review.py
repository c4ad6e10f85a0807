"""New log keys under review: a new legitimate statement must not alert forever.

A key the champion never saw in training is the *unknown key*, and a session
holding one is anomalous: that is how most attacks are caught. But a release
that adds a statement (a new report, a new column in the app's lookup) would
then make every later session anomalous until the next retraining. So every
``paylake monitor logs`` run keeps the keys it could not recognise under
review (``gold/security/key_review``):

- Unknown statement keys are reviewed as they are (a statement's key is
  already its shape: command, tables, clauses). Unknown keys of other lines
  go through the Drain-style ``TemplateMiner`` first, so that messages the
  masks leave apart (a name, a setting) become one template with ``<*>``
  where they differ, reviewed as one.
- Only what a release can legitimately bring is reviewed at all
  (``admissible``): a successful line (severity LOG, SQLSTATE class 00), and
  for a statement, no injection marks in its shape (a tautology, a comment, a
  union). An error or a probe stays unknown, and alerting, for good.
- A key (or template) is **admitted** once it has been seen for at least
  ``window`` since its first sighting, in at least ``min_sessions`` sessions,
  and none of those sessions was suspicious apart from the new keys: no rule
  fired (grants, exports, validity) and the model, reading the session
  without its unknown keys, found it normal. One such session blocks the key
  for good.
- Admitted keys are left out of a session before the model scores it (the
  model cannot predict a key it never learnt; the rest of the session is still
  checked), until a retraining puts them in the vocabulary; the rules still
  read every line.

Pure logic here; ``paylake.security.alerts`` reads and writes the table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from paylake.ml.logs.keys import STATEMENT_MARK as STATEMENT
from paylake.ml.logs.keys import TemplateMiner

SUSPICIOUS_FLAGS = frozenset({"tautology", "comment", "union"})


def admissible(key: str) -> bool:
    """Whether a new key could be a release's legitimate line: a successful one, no injection marks."""
    if not key.startswith("LOG|00|"):
        return False
    if STATEMENT in key and "[" in key:
        flags = set(key[key.rindex("[") + 1:].rstrip("]").split(","))
        return not flags & SUSPICIOUS_FLAGS
    return True


@dataclass(frozen=True)
class ReviewOptions:
    window: dt.timedelta = dt.timedelta(days=7)  # seen for at least this long ...
    min_sessions: int = 5  # ... in at least this many sessions, with no rule alert among them


@dataclass(frozen=True)
class Review:
    key: str  # a statement key, or a template of other lines' keys (``<*>`` where messages differ)
    first_seen: dt.datetime
    last_seen: dt.datetime
    sessions: int
    blocked: bool = False  # a session holding it made a rule fire

    def admitted(self, now: dt.datetime, options: ReviewOptions) -> bool:
        return (not self.blocked and self.sessions >= options.min_sessions
                and now - self.first_seen >= options.window)


def matches(template: str, key: str) -> bool:
    """Whether ``key`` fits ``template`` (same tokens, ``<*>`` standing for any one token)."""
    if template == key:
        return True
    if TemplateMiner.WILDCARD not in template:
        return False
    wanted, tokens = template.split(" "), key.split(" ")
    return len(wanted) == len(tokens) and all(w == TemplateMiner.WILDCARD or w == t for w, t in zip(wanted, tokens))


def _split(key: str) -> tuple[str, str]:
    """(``severity|state|``, the message) of a key."""
    severity, state, message = key.split("|", 2) if key.count("|") >= 2 else ("", "", key)
    return f"{severity}|{state}|", message


def review_keys(reviews: Sequence[Review], sessions: Iterable[tuple[Sequence[str], dt.datetime, bool]],
                known: Callable[[str], bool]) -> list[Review]:
    """``reviews`` updated with a run's sessions, each (its keys, its start, whether it was suspicious apart from
    its new keys): every admissible key the model does not know is counted once per session under its review
    entry (a new one when no entry's template fits it; other lines' messages mined into templates together, per
    severity and SQLSTATE class)."""
    by_key = {r.key: r for r in reviews}
    miners: dict[str, TemplateMiner] = {}

    def mined(key: str) -> str:
        prefix, message = _split(key)
        template, _ = miners.setdefault(prefix, TemplateMiner()).add(message)
        return prefix + template

    for review in reviews:  # the known templates seed the miners, so new messages join them
        if STATEMENT not in review.key:
            mined(review.key)
    for keys, started, fired in sessions:
        seen: set[str] = set()
        for key in keys:
            if known(key) or not admissible(key):
                continue
            entry = next((k for k in by_key if matches(k, key)), None)
            if entry is None and STATEMENT not in key:
                template = mined(key)
                entry = next((k for k in by_key if matches(template, k)), None)
                if entry is not None and entry != template:  # the template widened: the entry follows it
                    by_key[template] = replace(by_key.pop(entry), key=template)
                entry = template
            entry = entry or key
            if entry in seen:
                continue
            seen.add(entry)
            old = by_key.get(entry)
            by_key[entry] = Review(entry, started, started, 1, fired) if old is None else Review(
                entry, min(old.first_seen, started), max(old.last_seen, started), old.sessions + 1,
                old.blocked or fired)
    return sorted(by_key.values(), key=lambda r: (r.first_seen, r.key))


def admitted_keys(reviews: Iterable[Review], now: dt.datetime, options: ReviewOptions) -> list[str]:
    return [r.key for r in reviews if r.admitted(now, options)]
