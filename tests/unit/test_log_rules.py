"""Pure logic of the log pipeline: which log documents are usable, the security rules, alert records,
detection metrics and the choice of g."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from paylake.ml.logs.data import clean_lines, to_sessions
from paylake.ml.logs.keys import line_key
from paylake.ml.logs.model import (
    LineRanks,
    budget_metrics,
    choose_under_budget,
    detection_metrics,
    precision_at_mix,
    promotion_decision,
    role_outliers,
    role_statements,
)
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
    g, threshold, least, chosen = choose_under_budget(ranks, [True, False, False], max_g=4, budget=10,
                                                      end_thresholds=(0.5,), min_lines=(1, 2))
    # g=1 flags a normal session; g=3 misses the anomaly; m=2 would miss its one line (ties go to m=1 anyway)
    assert (g, threshold, least) == (2, 0.5, 1) and chosen["f1"] == 1.0
    # an anomaly out of place twice and a normal session out of place once: only m=2 separates them
    twice = LineRanks([3, 3], np.array([5, 6, 9, 5, 6, 9]), np.array([3, 3, 0, 3, 0, 0]), np.full(6, 0.9),
                      np.array([False, False, True] * 2), np.zeros((6, 4), np.int64))
    g, _, least, chosen = choose_under_budget(twice, [True, False], max_g=4, budget=10, end_thresholds=(0.5,),
                                              min_lines=(1, 2))
    assert (least, chosen["f1"], chosen["fpr"]) == (2, 1.0, 0.0) and g <= 3
    # an end the model finds unlikely flags the session, whatever g
    early = LineRanks([2], np.array([5, 9]), np.array([0, 0]), np.array([0.9, 0.001]), np.array([False, True]),
                      np.zeros((2, 4), np.int64))
    (verdict,) = early.verdicts(top_g=4, end_threshold=0.01)
    assert verdict.anomalous and verdict.lines[0]["position"] == 1 and verdict.lines[0]["seen"] == -1


def test_rules_judge_a_session_by_the_rights_in_force_when_it_started():
    # validity: extended after the session (recorded by grant_contractor) does not excuse it
    late = session([line("connection authorized: user=contractor_1")], user="contractor_1",
                   started=T0 + dt.timedelta(hours=12))
    catalog = Catalog(valid_until={"contractor_1": T0 + dt.timedelta(days=30)}, validity_changes={
        "contractor_1": [(T0 - dt.timedelta(days=10), T0), (T0 + dt.timedelta(days=1), T0 + dt.timedelta(days=30))]})
    fired = evaluate(late, catalog)
    assert [r["rule"] for r in fired] == ["login_outside_validity"] and T0.isoformat() in fired[0]["evidence"][0]
    assert evaluate(session([line("connection authorized: user=contractor_1")], user="contractor_1",
                            started=T0 + dt.timedelta(days=2)), catalog) == []
    assert evaluate(late, Catalog(valid_until=catalog.valid_until)) == []  # judged by today's validity: missed

    # privileges: revoked after the session, held in every reading around it: no alert
    update = session([line("statement: update oltp.Customer set Segment = 'x' where CustomerID = 1")],
                     started=T0 - dt.timedelta(hours=12))
    triple = ("analyst_1", "oltp.customer", "UPDATE")
    revoked_later = Catalog(privileges={triple: False}, read_at=T0 + dt.timedelta(days=1), privilege_history={
        triple: [(T0 - dt.timedelta(days=1), True), (T0, True)]})
    assert evaluate(update, revoked_later) == []
    assert [r["rule"] for r in evaluate(update, Catalog(privileges={triple: False}))] == ["outside_grants"]
    # a change between the readings around the session: the rule fires and names the window
    changed = Catalog(privileges={triple: False}, read_at=T0 + dt.timedelta(days=1), privilege_history={
        triple: [(T0 - dt.timedelta(days=1), True)]})
    fired = evaluate(update, changed)
    assert [r["rule"] for r in fired] == ["outside_grants"] and "changed between" in fired[0]["evidence"][0]
    # granted after the session: it was not held then
    granted_later = Catalog(privileges={triple: True}, read_at=T0 + dt.timedelta(days=1), privilege_history={
        triple: [(T0 - dt.timedelta(days=2), False), (T0 - dt.timedelta(days=1), False)]})
    assert [r["rule"] for r in evaluate(update, granted_later)] == ["outside_grants"]
    # older than every reading: the first one decides
    first = Catalog(privileges={triple: False}, read_at=T0 + dt.timedelta(days=1), privilege_history={
        triple: [(T0, True)]})
    assert evaluate(update, first) == []


def normal_ranks(per_session: list[list[int]]) -> LineRanks:
    """Sessions of known keys with the given ranks, each ending where the model expects it."""
    lengths = [len(r) + 1 for r in per_session]
    ranks = np.concatenate([np.r_[r, 0] for r in per_session])
    end = np.concatenate([np.r_[np.zeros(len(r), bool), True] for r in per_session])
    return LineRanks(lengths, np.where(end, 9, 5), ranks, np.full(len(ranks), 0.9), end,
                     np.zeros((len(ranks), 8), np.int64))


def test_without_labels_the_most_sensitive_setting_within_the_false_alert_budget_is_chosen():
    # 200 normal sessions, unlabelled: 1 in 100 steps to rank 2, 1 in 40 to rank 1, the rest to rank 0
    per_session = [[2] if i % 100 == 0 else [1] if i % 40 == 0 else [0] for i in range(200)]
    ranks = normal_ranks(per_session)
    truth = [False] * 200
    # a budget of 10 per 1,000 allows 2 of 200: g=2 (2 false alerts) is the most sensitive within it
    g, _, least, chosen = choose_under_budget(ranks, truth, max_g=5, budget=10, end_thresholds=(0.5,))
    assert (g, least) == (2, 1) and chosen["false_alerts_per_1000"] == 10.0
    # a budget of 4 per 1,000 allows none: g=3
    g, _, _, chosen = choose_under_budget(ranks, truth, max_g=5, budget=4, end_thresholds=(0.5,))
    assert g == 3 and chosen["fpr"] == 0.0
    # labelled: recall first, within the budget (g=2 catches the rank-2 anomaly only at g <= 2)
    truth = [i == 0 for i in range(200)]
    g, _, _, chosen = choose_under_budget(ranks, truth, max_g=5, budget=10, end_thresholds=(0.5,))
    assert g == 2 and chosen["recall"] == 1.0 and chosen["false_alerts_per_1000"] <= 10


def test_the_role_rule_flags_a_known_statement_its_role_never_ran_and_is_chosen_under_the_budget():
    report = "LOG|00|stmt select oltp.transaction [group,order,where]"
    lookup = "LOG|00|stmt select oltp.customer [where]"
    hello = "LOG|00|connection authorized: user=<name>"
    by_role = role_statements([("app_service", (hello, lookup)), ("analyst_1", (hello, report))])
    assert by_role["app_service"] == {lookup}  # statements only
    sessions = [(hello, report), (hello, lookup), (hello, report), ("LOG|00|stmt select oltp.new [where]",)]
    roles = ["app_service", "app_service", "analyst_9", "analyst_1"]
    odd = role_outliers(sessions, roles, by_role, lambda k: k != "LOG|00|stmt select oltp.new [where]")
    # the app running the analyst's report is flagged; an unknown role or an unknown key is not this rule's
    assert odd == [[1], [], [], []]
    # chosen when it catches an anomaly within the budget (a replayed report, invisible to the ranks)
    per_session = [[0]] * 200
    ranks = normal_ranks(per_session)
    truth = [i == 0 for i in range(200)]
    flags = [i == 0 for i in range(200)]
    *_, chosen = choose_under_budget(ranks, truth, max_g=3, budget=10, end_thresholds=(0.5,), role_flags=flags)
    assert chosen["role_rule"] == 1.0 and chosen["recall"] == 1.0
    noisy = [i < 20 for i in range(200)]  # the rule would flag 19 normal sessions: over the budget, left off
    *_, chosen = choose_under_budget(ranks, truth, max_g=3, budget=10, end_thresholds=(0.5,), role_flags=noisy)
    assert chosen["role_rule"] == 0.0


def test_precision_is_reported_at_the_production_mix_not_the_test_split_mix():
    flags = [True] * 45 + [True] * 2 + [False] * 53  # 45 anomalies caught, 2 of 55 normal flagged
    truth = [True] * 45 + [False] * 55
    metrics = budget_metrics(flags, truth, mix=0.001)
    assert metrics["precision"] > 0.95  # at the split's 45 % mix
    assert metrics["precision_at_mix"] == pytest.approx(precision_at_mix(1.0, 2 / 55, 0.001))
    assert metrics["precision_at_mix"] < 0.03 and metrics["precision_at_mix_low"] < metrics["precision_at_mix"]
    assert metrics["false_alerts"] == 2 and metrics["false_alerts_per_1000_high"] > metrics["false_alerts_per_1000"]


def test_a_log_model_is_promoted_for_fewer_false_alerts_not_for_a_tie():
    def m(fa, recall):
        return {"false_alerts_per_1000": fa, "recall": recall}

    assert promotion_decision(m(2.0, 0.9), m(5.0, 0.9), labelled=True).promote
    assert not promotion_decision(m(5.0, 0.9), m(5.0, 0.9), labelled=True).promote  # a tie
    assert not promotion_decision(m(2.0, 0.8), m(5.0, 0.9), labelled=True).promote  # catches less
    assert promotion_decision(m(5.0, 0.95), m(5.0, 0.9), labelled=True).promote
    assert promotion_decision(m(2.0, 0.0), m(5.0, 0.0), labelled=False).promote  # real logs: alerts alone
    decision = promotion_decision(m(6.0, 0.0), m(5.0, 0.0), labelled=False, champion="champion v3")
    assert not decision.promote and "champion v3" in decision.reason


def test_a_saved_scorer_loads_back_and_an_older_format_is_refused_clearly(tmp_path):
    import json

    import pytest

    from paylake.ml.logs.keys import Vocabulary
    from paylake.ml.logs.model import LogModelConfig, LogScorer, build_model
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
