"""Discovery and planning of the PostgreSQL migrations (pure: no server)."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paylake.errors import PaylakeError
from paylake.sources.migrate import SQL_DIR, Migration, discover, pending


def _write(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text(f"-- {name}\nselect 1;\n")


def test_discover_orders_migrations_by_version_not_by_creation(tmp_path):
    _write(tmp_path, "0010_later.sql", "0002_second.sql", "0001_first.sql")

    found = discover(tmp_path)

    assert [(m.version, m.name) for m in found] == [("0001", "first"), ("0002", "second"), ("0010", "later")]
    assert [m.path for m in found] == [tmp_path / "0001_first.sql", tmp_path / "0002_second.sql",
                                       tmp_path / "0010_later.sql"]


@given(st.sets(st.integers(min_value=0, max_value=9999), min_size=1, max_size=15), st.randoms())
def test_discover_returns_any_set_of_versions_in_numeric_order(versions, rng):
    names = [f"{v:04d}_m{v}.sql" for v in versions]
    rng.shuffle(names)
    with tempfile.TemporaryDirectory() as folder:
        _write(Path(folder), *names)
        found = discover(Path(folder))
    assert [int(m.version) for m in found] == sorted(versions)


def test_discover_checksums_are_sha256_of_the_file_bytes(tmp_path):
    (tmp_path / "0001_core.sql").write_bytes(b"create table t (id int);\n")

    (migration,) = discover(tmp_path)

    assert migration.checksum == hashlib.sha256(b"create table t (id int);\n").hexdigest()


def test_discover_ignores_files_that_are_not_sql(tmp_path):
    _write(tmp_path, "0001_core.sql")
    (tmp_path / "README.md").write_text("notes")
    (tmp_path / ".gitkeep").write_text("")

    assert [m.path.name for m in discover(tmp_path)] == ["0001_core.sql"]


def test_discover_of_an_empty_folder_finds_nothing(tmp_path):
    assert discover(tmp_path) == []


@pytest.mark.parametrize("bad_name", ["1_core.sql", "0001-core.sql", "0001_Core.sql", "core.sql",
                                      "00001_core.sql", "0001_.sql", "0001_core schema.sql"])
def test_discover_rejects_a_badly_named_migration(tmp_path, bad_name):
    _write(tmp_path, "0001_core.sql", bad_name)

    with pytest.raises(PaylakeError, match="NNNN_name.sql"):
        discover(tmp_path)


def test_discover_rejects_two_migrations_with_the_same_version(tmp_path):
    _write(tmp_path, "0001_core.sql", "0002_partitions.sql", "0002_roles.sql")

    with pytest.raises(PaylakeError, match="share a version"):
        discover(tmp_path)


def test_the_shipped_migrations_are_well_named_and_numbered_without_gaps():
    found = discover(SQL_DIR)

    assert found, f"no migrations in {SQL_DIR}"
    assert [int(m.version) for m in found] == list(range(1, len(found) + 1))


def _migrations(tmp_path: Path) -> list[Migration]:
    _write(tmp_path, "0001_core.sql", "0002_partitions.sql", "0003_roles.sql")
    return discover(tmp_path)


def test_pending_on_a_fresh_database_is_every_migration(tmp_path):
    migrations = _migrations(tmp_path)

    assert pending(migrations, {}) == migrations


def test_pending_returns_only_the_unapplied_migrations(tmp_path):
    migrations = _migrations(tmp_path)
    applied = {m.version: m.checksum for m in migrations[:2]}

    assert [m.version for m in pending(migrations, applied)] == ["0003"]


def test_pending_is_empty_when_everything_is_applied(tmp_path):
    migrations = _migrations(tmp_path)

    assert pending(migrations, {m.version: m.checksum for m in migrations}) == []


def test_pending_refuses_an_applied_migration_edited_afterwards(tmp_path):
    migrations = _migrations(tmp_path)
    applied = {m.version: m.checksum for m in migrations}
    (tmp_path / "0002_partitions.sql").write_text("-- edited after it was applied\nselect 2;\n")

    with pytest.raises(PaylakeError, match="0002_partitions.sql"):
        pending(discover(tmp_path), applied)


def test_pending_refuses_an_edited_migration_even_when_others_are_pending(tmp_path):
    migrations = _migrations(tmp_path)
    applied = {"0001": "0" * 64}

    with pytest.raises(PaylakeError, match="0001_core.sql"):
        pending(migrations, applied)
