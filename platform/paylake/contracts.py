"""The lake's tables in one registry: each table's layer, path, keys, Delta app id and producer.

Producers and consumers alike take a table's address from here (``contracts.gold("FACT_Revenue").uri(settings)``,
``contracts.FRAUD_FEATURES.uri(settings)``): a consumer never imports its producer to learn a path. Tables that
come in families (one bronze table per source, one silver table per entity, one gold table per star table) are
made by ``bronze`` / ``quarantine`` / ``silver`` / ``gold``; the others are constants. ``paylake.stores.lake``
stays the storage layer below this module (paths become URIs under the settings' lake root).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from paylake.settings import Settings

LAYERS = ("bronze", "quarantine", "silver", "gold", "runs", "ops", "reports", "checkpoints")

# the writers' Delta app ids (a commit's transaction id is (app id, batch): exactly-once appends and merges)
EXTRACT_APP = "paylake.extract"
QUARANTINE_APP = "paylake.extract.quarantine"
SILVER_APP = "paylake.silver"
GOLD_APP = "paylake.gold"
FEATURES_APP = "paylake.features"
MONITOR_APP = "paylake-monitor-logs"


@dataclass(frozen=True)
class Table:
    path: str  # under the lake root, e.g. "gold/features/fraud"
    keys: tuple[str, ...] = ()
    app_id: str | None = None  # the writer's Delta app id (a pattern when each writer has its own)
    producer: str = ""  # the module that writes it
    description: str = ""

    @property
    def layer(self) -> str:
        return self.path.split("/", 1)[0]

    def uri(self, settings: Settings) -> str:
        from paylake.stores import lake

        return lake.table_uri(settings, *self.path.split("/"))


# ----------------------------------------------------------------------------- families
def bronze_table(kind: str, name: str) -> Table:
    """``bronze/<kind>/<name>``: one source table or collection, as extracted (and changed by CDC)."""
    return Table(f"bronze/{kind}/{name.lower()}", app_id=EXTRACT_APP, producer="paylake.extract.run",
                 description=f"{kind} {name} as extracted, with its load metadata")


def bronze(source) -> Table:
    """The bronze table of an extract source (``paylake.extract.source.Source``), with its keys."""
    _, kind, name = source.bronze_path()
    return replace(bronze_table(kind, name), keys=tuple(source.keys))


def quarantine(source) -> Table:
    """The records of a source that broke its contract, with the reason."""
    return Table(f"quarantine/{source.kind}/{source.name.lower()}", ("key",), QUARANTINE_APP,
                 "paylake.extract.run", f"records of {source.source_id} refused by their contract")


def silver(entity: str) -> Table:
    return Table(f"silver/{entity}", app_id=SILVER_APP, producer="paylake.transform.silver",
                 description=f"the {entity} entity, cleaned and conformed")


def gold(table: str) -> Table:
    return Table(f"gold/{table}", app_id=GOLD_APP, producer="paylake.transform.star",
                 description=f"star schema table {table}")


# ----------------------------------------------------------------------------- single tables
FRAUD_FEATURES = Table("gold/features/fraud", ("transactionid",), FEATURES_APP, "paylake.ml.fraud.feature_build",
                       "point-in-time fraud features of every payment")
SERVED_FRAUD_SCORES = Table("gold/serving/fraud_score", ("request_id", "transactionid"), "serving-<replica id>",
                            "paylake.serving.records", "every score the API served (no PII)")
SECURITY_ALERTS = Table("gold/security/alert", ("AlertID",), MONITOR_APP, "paylake.security.alerts",
                        "alerts on database sessions")
SCORED_SESSIONS = Table("gold/security/scored_session", ("session_id",), MONITOR_APP, "paylake.security.alerts",
                        "database sessions already scored")
KEY_REVIEW = Table("gold/security/key_review", (), MONITOR_APP, "paylake.security.key_review",
                   "new statements under review before the log model admits them")
PRIVILEGE_SNAPSHOTS = Table("gold/security/privilege_snapshot", (), MONITOR_APP, "paylake.security.alerts",
                            "each run's reading of the database roles' privileges")
LOG_SESSIONS = silver("log_session")
PIPELINE_RUNS = Table("runs/pipeline_step", ("run_id", "step"), "pipeline-run-<run id>", "paylake.pipeline",
                      "a record per step of each pipeline run")
SMOKE_CHECKS = Table("ops/smoke_check", (), "paylake.smoke", "paylake.smoke", "the smoke job's writes")

REGISTRY: dict[str, Table] = {t.path: t for t in (FRAUD_FEATURES, SERVED_FRAUD_SCORES, SECURITY_ALERTS,
                                                  SCORED_SESSIONS, KEY_REVIEW, PRIVILEGE_SNAPSHOTS, LOG_SESSIONS,
                                                  PIPELINE_RUNS, SMOKE_CHECKS)}
