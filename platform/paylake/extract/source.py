"""What an extract source is (``Source``), and the connections its planning shares (``Handles``).

PostgreSQL tables (``extract.postgres.PostgresTableSource``) and MongoDB collections
(``extract.mongo.MongoCollectionSource``) both satisfy ``Source``; the extraction and its verification call
these methods and never ask which kind a source is. A source that ``needs_slot`` gets its deletes through the
database's logical replication slot (``paylake.stores.replication``): the slot is made before such a source is
read, and its bronze table is reloaded whole when it was reconciled with another slot.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from paylake.settings import Settings
from paylake.stores import mongo, postgres


@runtime_checkable
class Source(Protocol):
    kind: str  # "postgres" or "mongo": a label (names, bronze paths), never a branch
    name: str
    keys: list[str]
    cursor_column: str | None
    needs_slot: bool  # deletes arrive through a replication slot

    @property
    def source_id(self) -> str: ...

    def bronze_path(self) -> tuple[str, ...]: ...

    def data_schema(self) -> pa.Schema: ...

    def changed_predicate(self) -> str | None:
        """The MERGE condition under which a matched bronze row is replaced."""

    def plan(self, handles: Handles, since: dt.datetime | None, *, rows_per_task: int,
             max_tasks: int) -> list[Any]:
        """Read tasks: a full load (``since`` None) or what changed since ``since``."""

    def read(self, settings: Settings, task: Any) -> tuple[pa.Table, pa.Table]:
        """(rows in the bronze data schema, quarantined rows with their reasons) of one task."""

    def verify(self, settings: Settings, bronze: pa.Table):
        """Row counts and per-column checksums of the source against ``bronze`` (``extract.verify``)."""


class Handles:
    """The source systems' connections, opened on first use and shared by every source's planning."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._postgres = None
        self._mongo = None

    @property
    def postgres(self):
        if self._postgres is None:
            self._postgres = postgres.connect(self.settings)
        return self._postgres

    @property
    def mongo(self):
        """The settings' MongoDB database."""
        if self._mongo is None:
            self._mongo = mongo.client(self.settings)
        return mongo.database(self._mongo, self.settings)

    def __enter__(self) -> Handles:
        return self

    def __exit__(self, *exc) -> None:
        if self._postgres is not None:
            self._postgres.close()
        if self._mongo is not None:
            self._mongo.close()
