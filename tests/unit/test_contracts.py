"""One table registry: every lake address comes from paylake.contracts; consumers no longer import producers to
learn a path (the package graph's back-arrows are gone)."""

import re
from pathlib import Path

from paylake import contracts
from paylake.settings import Settings

PACKAGE = Path(contracts.__file__).parent


def test_the_registry_names_each_table_once_with_its_layer_and_writer():
    paths = [t.path for t in contracts.REGISTRY.values()]
    assert len(paths) == len(set(paths))
    for table in contracts.REGISTRY.values():
        assert table.layer in contracts.LAYERS and table.producer.startswith("paylake.") and table.app_id
    settings = Settings(lake_root="s3://bucket/lake")
    assert contracts.gold("FACT_Revenue").uri(settings) == "s3://bucket/lake/gold/FACT_Revenue"
    assert contracts.FRAUD_FEATURES.uri(settings) == "s3://bucket/lake/gold/features/fraud"
    assert contracts.bronze_table("mongo", "UserInteractionData").path == "bronze/mongo/userinteractiondata"


def test_the_writers_commit_with_the_registrys_app_ids():
    from paylake.extract import run
    from paylake.ml.fraud import feature_build
    from paylake.security import alerts
    from paylake.transform import silver, star

    assert (run.APP_ID, run.QUARANTINE_APP_ID) == (contracts.EXTRACT_APP, contracts.QUARANTINE_APP)
    assert (silver.APP_ID, star.APP_ID) == (contracts.SILVER_APP, contracts.GOLD_APP)
    assert feature_build.APP_ID == contracts.FEATURES_APP and alerts.APP_ID == contracts.MONITOR_APP


def test_no_module_keeps_a_uri_helper_or_imports_a_producer_for_a_path():
    helpers = [f"{p.relative_to(PACKAGE)}: {m}" for p in PACKAGE.rglob("*.py") if p.name != "lake.py"
               for m in re.findall(r"^def (\w+_uri)\(", p.read_text(), flags=re.M)]
    assert helpers == []
    back_arrows = {"extract": "paylake.cdc", "sources": "paylake.cdc", "ml": "paylake.serving",
                   "warehouse": "paylake.transform"}
    found = [f"{p.relative_to(PACKAGE)} imports {target}" for folder, target in back_arrows.items()
             for p in (PACKAGE / folder).rglob("*.py") if re.search(rf"from {re.escape(target)}\b", p.read_text())]
    assert found == []
