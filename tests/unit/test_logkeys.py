"""Log keys (pure logic): literals never change a key, statements keep only their shape,
unknown keys are explicit, the template miner merges messages that differ in values."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from paylake.ml.logs.keys import UNKNOWN, TemplateMiner, Vocabulary, line_key, mask, statement_shape


def stmt(sql: str, severity: str = "LOG", state: str = "00000") -> dict:
    return {"error_severity": severity, "state_code": state, "message": f"statement: {sql}", "statement": sql}


def test_two_lines_that_differ_only_in_literals_get_the_same_key():
    a = stmt("select CustomerID from oltp.Customer where UserName = 'alice' and CustomerID = 42")
    b = stmt("select CustomerID from oltp.Customer where UserName = 'bob' and CustomerID = 7")
    assert line_key(a) == line_key(b) == "LOG|00|stmt select oltp.customer [where]"
    c = {"error_severity": "LOG", "state_code": "00000", "message": "connection received: host=10.0.0.7 port=51234"}
    d = {"error_severity": "LOG", "state_code": "00000", "message": "connection received: host=127.0.0.1 port=48010"}
    assert line_key(c) == line_key(d) == "LOG|00|connection received: host=<ip> port=<num>"


@given(st.integers(min_value=0, max_value=10**12), st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=12))
def test_no_literal_reaches_a_key(number, word):
    line = stmt(f"update oltp.Customer set Segment = '{word}' where CustomerID = {number}")
    assert line_key(line) == "LOG|00|stmt update oltp.customer [where]"


def test_the_shape_shows_injection_marks_not_values():
    assert statement_shape("select a from oltp.Customer where u = '' or 1=1 --' and p = ''") == \
        "select oltp.customer [comment,tautology,where]"
    assert statement_shape("select a, b from oltp.Customer where u = '' union select x, y from pii.keyring --'") == \
        "select oltp.customer,pii.keyring [comment,union,where]"
    assert statement_shape("copy (select * from oltp.PaymentMethod) to stdout") == "copy oltp.paymentmethod []"


def test_errors_keep_severity_and_sqlstate_class_with_masked_messages():
    line = {"error_severity": "ERROR", "state_code": "42501", "message": 'permission denied to set role "paylake_admin"',
            "statement": "set role paylake_admin"}
    assert line_key(line) == "ERROR|42|permission denied to set role <id>"
    assert mask("session time: 0:00:00.031 user=alice database=paylake") == \
        "session time: <duration> user=<name> database=<name>"


def test_the_vocabulary_has_an_explicit_unknown_key_and_round_trips():
    vocabulary = Vocabulary.build([["a", "b", "a"], ["b", "c"]])
    assert vocabulary.keys == ["a", "b", "c"] and len(vocabulary) == 4
    assert vocabulary.encode(["a", "zzz", "c"]) == [1, 0, 3]
    assert vocabulary.key(0) == UNKNOWN and vocabulary.key(99) == UNKNOWN
    assert Vocabulary.from_json(vocabulary.to_json()).encode(["c", "b"]) == [3, 2]
    assert Vocabulary.build([["a", "a", "b"]], min_count=2).keys == ["a"]


def test_the_template_miner_merges_messages_that_differ_in_values():
    miner = TemplateMiner()
    first, created = miner.add("checkpoint starting: time wal")
    assert created and first == "checkpoint starting: time wal"
    merged, created = miner.add("checkpoint starting: immediate force")
    assert not created and merged == "checkpoint starting: <*> <*>"
    assert miner.match("checkpoint starting: shutdown immediate") == merged
    assert miner.match("a message of another shape") is None
    _, created = miner.add("replication slot x created")
    assert created and len(miner.templates()) == 2


def test_a_session_carries_per_line_parameters_beside_its_keys():
    import datetime as dt

    from paylake.ml.logs.data import to_sessions
    from paylake.ml.logs.keys import session_params

    t0 = dt.datetime(2026, 12, 2, 23, 59, 50, tzinfo=dt.UTC)
    lines = [{"message": "connection received", "timestamp": t0},
             {"message": "statement: select 1", "timestamp": t0 + dt.timedelta(seconds=30)},
             {"message": "no time on this one"},
             {"message": "disconnection", "timestamp": (t0 + dt.timedelta(seconds=45)).isoformat()}]
    params = session_params(lines, "auditor")
    assert [p["elapsed_s"] for p in params] == [0.0, 30.0, None, 15.0]
    assert [p["hour"] for p in params] == [23, 0, None, 0]
    assert {p["role"] for p in params} == {"auditor"}
    (session,) = to_sessions([{"session_id": "s", "db_user": "auditor", "lines": lines}]).sessions
    assert session.params == tuple(params) and len(session.keys) == len(session.params)
