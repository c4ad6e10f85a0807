"""Both extract sources satisfy the ``Source`` protocol; the extraction asks them, never their kind."""

import inspect
from pathlib import Path

from paylake.extract import run
from paylake.extract.mongo import MongoCollectionSource
from paylake.extract.postgres import PostgresTableSource
from paylake.extract.source import Source

MEMBERS = ("source_id", "bronze_path", "data_schema", "changed_predicate", "plan", "read", "verify", "needs_slot",
           "kind")


def test_both_sources_implement_the_protocol():
    assert isinstance(MongoCollectionSource("UserInteractionData"), Source)
    for cls in (PostgresTableSource, MongoCollectionSource):
        assert all(hasattr(cls, m) for m in MEMBERS), cls
        assert list(inspect.signature(cls.plan).parameters)[:3] == ["self", "handles", "since"]
    assert PostgresTableSource.needs_slot is True and MongoCollectionSource.needs_slot is False


def test_the_extraction_and_its_verification_never_branch_on_a_sources_kind():
    folder = Path(run.__file__).parent
    for module in ("run.py", "verify.py"):
        text = (folder / module).read_text()
        assert 'kind == "postgres"' not in text and 'kind == "mongo"' not in text, module
        assert "isinstance(source" not in text, module
