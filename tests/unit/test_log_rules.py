"""Pure logic of the log pipeline: which log documents are usable, the security rules, alert records,
detection metrics and the choice of g."""

from __future__ import annotations

import datetime as dt

import numpy as np

from paylake.ml.logdata import clean_lines, to_sessions
from paylake.ml.logkeys import line_key
from paylake.ml.logseq import LineRanks, choose_top_g, detection_metrics
from paylake.security.alerts import alert_id, make_alert
from paylake.security.rules import Catalog, evaluate, needed_checks, parse_statement_key

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def line(message: str, severity: str = "LOG", state: str = "00000") -> dict:
    return {"timestamp": T0, "error_severity": severity, "state_code": state, "message": message}


def session(lines: list[dict], user: str = "analyst_1", started: dt.datetime = T0):
    return to_sessions([{"session_id": "s1", "db_user": user, "client_key": "k", "started_at": started,
                         "lines": lines}]).sessions[0]


def test_malformed_sessions_are_skipped_with_a_counted_reason():
    rows = [{"session_id": "a", "lines": None}, {"session_id": "b", "lines": "oops"},
            {"session_id": "c", "lines": []}, {"session_id": "d", "lines": [{"message": 42}]},
            {"session_id": "e", "lines": ["text"]}, {"session_id": "f", "lines": [{"message": "x", "state_code": 1}]},
            {"session_id": None, "lines": [line("connection received: host=10.0.0.1 port=5")]},
            {"session_id": "ok", "lines": [line("connection received: host=10.0.0.1 port=5")]}]
    found = to_sessions(rows)
    assert [s.session_id for s in found.sessions] == ["ok"]
    assert found.skipped == {"no lines": 1, "lines is not a list": 1, "empty session": 1,
                             "a line has no text message": 1, "a line is not an object": 1,
                             "a line has a non-text severity, state code or statement": 1, "no session id": 1}
    assert ("c", "empty session") in found.skipped_ids and len(found.skipped_ids) == 6
    assert clean_lines([line("x")]) == ([line("x")], None)


def test_statement_keys_are_parsed_back():
    key = line_key(line("statement: copy (select * from oltp.Customer) to stdout"))
    parsed = parse_statement_key(key)
    assert parsed.command == "copy" and parsed.tables == ("oltp.customer",)
    assert parse_statement_key(line_key(line("connection received: host=1.2.3.4 port=9"))) is None


def test_rules_fire_on_grants_exports_and_validity_and_stay_quiet_on_normal_reads():
    export = session([line("statement: copy (select * from oltp.Customer) to stdout")])
    checks = needed_checks([export])
    assert checks[0] == {("analyst_1", "oltp.customer", "SELECT")}
    catalog = Catalog(privileges={("analyst_1", "oltp.customer", "SELECT"): True}, rows={"oltp.customer": 5000.0})
    assert [r["rule"] for r in evaluate(export, catalog, export_rows=1000)] == ["mass_export"]
    assert evaluate(export, catalog, export_rows=10_000) == []

    lookup = session([line("statement: select * from oltp.Customer where CustomerID = 7")])
    assert evaluate(lookup, catalog, export_rows=1000) == []

    denied = session([line("statement: update oltp.Customer set Segment = 'x' where CustomerID = 1"),
                      line("permission denied for table customer", "ERROR", "42501")])
    catalog.privileges[("analyst_1", "oltp.customer", "UPDATE")] = False
    fired = evaluate(denied, catalog)
    assert [r["rule"] for r in fired] == ["outside_grants"] and len(fired[0]["evidence"]) == 2

    late = session([line("connection authorized: user=contractor_1")], user="contractor_1",
                   started=T0 + dt.timedelta(days=2))
    catalog.valid_until["contractor_1"] = T0
    assert [r["rule"] for r in evaluate(late, catalog)] == ["login_outside_validity"]
    catalog.valid_until["contractor_1"] = T0 + dt.timedelta(days=30)
    assert evaluate(late, catalog) == []


def test_an_alert_carries_its_evidence_and_is_keyed_by_session():
    s = session([line("statement: select * from pii.Keyring")])
    quiet = {"anomalous": False, "score": 0.1, "lines": []}
    assert make_alert(s, quiet, [], "paylake-logseq", "3", T0) is None
    verdict = {"anomalous": True, "score": 1.0,
               "lines": [{"line": 0, "seen": "k", "known": False, "expected": ["a", "b", "c", "d"]}]}
    alert = make_alert(s, verdict, [{"rule": "outside_grants", "evidence": ["x"]}], "paylake-logseq", "3", T0)
    assert alert["AlertID"] == alert_id("s1") != alert_id("s2")
    assert alert["Source"] == "model+rules" and alert["Severity"] == "high" and alert["DateKey"] == 20261201
    assert '"expected": ["a", "b", "c"]' in alert["Evidence"]


def test_detection_metrics_and_the_choice_of_g():
    metrics = detection_metrics([True, True, False, False], [True, False, False, True])
    assert metrics["precision"] == 0.5 and metrics["recall"] == 0.5 and metrics["fpr"] == 0.5
    assert metrics["false_alerts_per_1000"] == 500.0
    # three one-line sessions (each with its end, which the model finds likely): an anomaly whose key ranks
    # 3rd, normals ranking 0 and 1
    ranks = LineRanks([2, 2, 2], np.array([5, 9, 6, 9, 7, 9]), np.array([2, 0, 0, 0, 1, 0]),
                      np.array([0.1, 0.9, 0.5, 0.9, 0.3, 0.9]), np.array([False, True] * 3),
                      np.zeros((6, 4), np.int64))
    g, threshold, least, chosen = choose_top_g(ranks, [True, False, False], max_g=4, end_thresholds=(0.5,),
                                               min_lines=(1, 2))
    # g=1 flags a normal session; g=3 misses the anomaly; m=2 would miss its one line (ties go to m=1 anyway)
    assert (g, threshold, least) == (2, 0.5, 1) and chosen["f1"] == 1.0
    # an anomaly out of place twice and a normal session out of place once: only m=2 separates them
    twice = LineRanks([3, 3], np.array([5, 6, 9, 5, 6, 9]), np.array([3, 3, 0, 3, 0, 0]), np.full(6, 0.9),
                      np.array([False, False, True] * 2), np.zeros((6, 4), np.int64))
    g, _, least, chosen = choose_top_g(twice, [True, False], max_g=4, end_thresholds=(0.5,), min_lines=(1, 2))
    assert (least, chosen["f1"], chosen["fpr"]) == (2, 1.0, 0.0) and g <= 3
    # an end the model finds unlikely flags the session, whatever g
    early = LineRanks([2], np.array([5, 9]), np.array([0, 0]), np.array([0.9, 0.001]), np.array([False, True]),
                      np.zeros((2, 4), np.int64))
    (verdict,) = early.verdicts(top_g=4, end_threshold=0.01)
    assert verdict.anomalous and verdict.lines[0]["position"] == 1 and verdict.lines[0]["seen"] == -1


def test_a_saved_scorer_loads_back_and_an_older_format_is_refused_clearly(tmp_path):
    import json

    import pytest

    from paylake.ml.logkeys import Vocabulary
    from paylake.ml.logseq import LogModelConfig, LogScorer, build_model
    from paylake.ml.registry import ChampionUnreadable

    vocabulary = Vocabulary.build([["a", "b", "c"]])
    config = LogModelConfig(vocabulary_size=len(vocabulary), window=2, top_g=2, hidden=8, embedding=4)
    LogScorer(build_model(config).eval(), config, vocabulary).save(tmp_path / "s")
    loaded = LogScorer.load(tmp_path / "s")
    assert loaded.config == config and loaded.key_name(config.end) == "<end of session>"
    saved = json.loads((tmp_path / "s" / "config.json").read_text())
    del saved["format"]  # a model saved before the format was recorded
    (tmp_path / "s" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ChampionUnreadable, match="another format"):
        LogScorer.load(tmp_path / "s")
