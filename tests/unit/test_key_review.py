"""New log keys under review (pure logic): a new legitimate statement stops alerting after a review window;
one seen in a session that made a rule fire never does; messages that differ in a word are reviewed as one
template."""

from __future__ import annotations

import datetime as dt

from paylake.security.alerts import score_with_admitted
from paylake.security.key_review import (
    ReviewOptions,
    admissible,
    admitted_keys,
    matches,
    review_keys,
)

T0 = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
KNOWN = {"LOG|00|stmt select oltp.customer [where]", "LOG|00|connection authorized: user=<name>"}
NEW = "LOG|00|stmt select oltp.merchant [where]"  # a release's new lookup


def known(key: str) -> bool:
    return key in KNOWN


def day(n: float) -> dt.datetime:
    return T0 + dt.timedelta(days=n)


def test_a_new_statement_is_admitted_after_the_window_and_enough_sessions():
    options = ReviewOptions(window=dt.timedelta(days=7), min_sessions=5)
    reviews = []
    for n in range(5):  # one session a day holding the new statement, twice: counted once per session
        reviews = review_keys(reviews, [((*KNOWN, NEW, NEW), day(n), False)], known)
    (review,) = reviews
    assert (review.key, review.sessions, review.first_seen, review.blocked) == (NEW, 5, day(0), False)
    assert admitted_keys(reviews, day(6), options) == []  # seen for 6 days only
    assert admitted_keys(reviews, day(7), options) == [NEW]
    assert admitted_keys(review_keys([], [((NEW,), day(0), False)], known), day(30), options) == []  # one session


def test_a_key_seen_where_a_rule_fired_is_never_admitted():
    reviews = review_keys([], [((NEW,), day(n), n == 2) for n in range(10)], known)
    assert reviews[0].blocked and admitted_keys(reviews, day(60), ReviewOptions(min_sessions=1)) == []


def test_messages_that_differ_in_a_word_are_reviewed_as_one_template():
    keys = [f"LOG|00|feature flag {name} enabled for the session" for name in ("alpha", "beta", "gamma")]
    reviews = review_keys([], [((key,), day(n), False) for n, key in enumerate(keys)], known)
    assert len(reviews) == 1 and reviews[0].sessions == 3 and "<*>" in reviews[0].key
    assert matches(reviews[0].key, "LOG|00|feature flag delta enabled for the session")
    assert not matches(reviews[0].key, "LOG|00|feature flag delta disabled for the session now")
    later = review_keys(reviews, [(("LOG|00|feature flag delta enabled for the session",), day(5), False)], known)
    assert len(later) == 1 and later[0].sessions == 4


def test_admitted_lines_are_left_out_of_the_models_reading_with_line_numbers_kept():
    class Scorer:  # flags every key it is given that is not known, at its position in what it reads
        def __init__(self):
            self.read = []

        def score_keys(self, sessions, roles=None):
            self.read.extend(sessions)
            return [{"anomalous": any(not known(k) for k in keys), "score": 1.0,
                     "lines": [{"line": i, "seen": k} for i, k in enumerate(keys) if not known(k)]}
                    for keys in sessions]

    other = "LOG|00|stmt delete oltp.customer [where]"
    sessions = [(NEW, "LOG|00|stmt select oltp.customer [where]", other), (NEW,)]
    scorer = Scorer()
    verdicts = score_with_admitted(scorer, sessions, [NEW])
    assert scorer.read == [["LOG|00|stmt select oltp.customer [where]", other]]  # NEW left out; (NEW,) not read
    assert verdicts[0]["lines"] == [{"line": 2, "seen": other}]  # the session's own line number
    assert not verdicts[1]["anomalous"]


def test_only_a_successful_line_without_injection_marks_is_ever_reviewed():
    assert admissible(NEW) and admissible("LOG|00|feature flag alpha enabled")
    assert not admissible("ERROR|42|syntax error at or near <str>")
    assert not admissible("LOG|00|stmt select oltp.customer [comment,tautology,where]")
    assert not admissible("LOG|00|stmt select oltp.customer [union,where]")
    probe = "LOG|00|stmt select oltp.customer [comment,tautology,where]"
    reviews = review_keys([], [((probe, "ERROR|42|syntax error"), day(n), False) for n in range(10)], known)
    assert reviews == []
