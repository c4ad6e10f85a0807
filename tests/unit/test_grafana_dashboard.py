"""cluster/grafana/paylake.json charts exactly the metrics the platform defines (no panel on a name that does not
exist, no metric without a panel)."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def base(name: str) -> str:
    return re.sub(r"(_bucket|_count|_sum)$", "", name).removesuffix("_total")


def test_the_dashboard_charts_every_platform_metric_and_only_those():
    dashboard = json.loads((ROOT / "cluster" / "grafana" / "paylake.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    charted = {base(m) for e in exprs for m in re.findall(r"\bray_(paylake_\w+)", e)}
    defined = set()
    for source in (ROOT / "platform" / "paylake").rglob("*.py"):
        defined |= {base(m) for m in re.findall(r"metrics\.(?:Counter|Gauge|Histogram)\(\s*\"(paylake_\w+)\"",
                                                   source.read_text())}
    assert defined, "no metric found in the platform's code"
    assert charted == defined, {"charted, not defined": charted - defined, "defined, not charted": defined - charted}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
