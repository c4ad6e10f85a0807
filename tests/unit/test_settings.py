from pathlib import Path

import pytest

from paylake.cli import _parse_ports
from paylake.errors import PaylakeError
from paylake.settings import find_stack_file, load_settings, redact_url
from paylake.stores.lake import storage_options, table_uri


def test_redact_url_hides_password_only():
    assert redact_url("postgresql://app:s3cret@127.0.0.1:5432/db") == "postgresql://app:***@127.0.0.1:5432/db"
    assert redact_url("mongodb://127.0.0.1:27017/") == "mongodb://127.0.0.1:27017/"


def test_stack_file_is_found_from_a_subdirectory(tmp_path, monkeypatch):
    monkeypatch.delenv("PAYLAKE_STACK_FILE", raising=False)
    (tmp_path / ".paylake").mkdir()
    stack_file = tmp_path / ".paylake" / "stack.env"
    stack_file.write_text("PAYLAKE_MONGO_DATABASE=fromfile\nPAYLAKE_LAKE_ROOT=s3://b/lake\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_stack_file(deep) == stack_file
    monkeypatch.chdir(deep)
    settings = load_settings()
    assert settings.mongo_database == "fromfile"
    assert settings.lake_is_s3


def test_environment_overrides_the_stack_file(tmp_path, monkeypatch):
    stack_file = tmp_path / "stack.env"
    stack_file.write_text("PAYLAKE_MONGO_DATABASE=fromfile\n")
    monkeypatch.setenv("PAYLAKE_STACK_FILE", str(stack_file))
    monkeypatch.setenv("PAYLAKE_MONGO_DATABASE", "fromenv")
    assert load_settings().mongo_database == "fromenv"


def test_secrets_do_not_show_in_repr(monkeypatch):
    monkeypatch.setenv("PAYLAKE_POSTGRES_DSN", "postgresql://a:topsecret@h/db")
    monkeypatch.setenv("PAYLAKE_PII_KEY", "k3y-value")
    settings = load_settings(Path("/nonexistent"))
    assert "topsecret" not in repr(settings) and "k3y-value" not in repr(settings)


def test_lake_uris_and_storage_options(monkeypatch, tmp_path):
    monkeypatch.setenv("PAYLAKE_LAKE_ROOT", "s3://bucket/lake/")
    monkeypatch.setenv("PAYLAKE_S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    settings = load_settings(Path("/nonexistent"))
    assert table_uri(settings, "bronze", "postgres", "customer") == "s3://bucket/lake/bronze/postgres/customer"
    assert storage_options(settings)["AWS_ALLOW_HTTP"] == "true"
    monkeypatch.setenv("PAYLAKE_LAKE_ROOT", str(tmp_path))
    local = load_settings(Path("/nonexistent"))
    assert table_uri(local, "silver", "customer") == str(tmp_path / "silver" / "customer")
    assert storage_options(local) == {}


def test_port_options_parse_and_reject_garbage():
    assert _parse_ports(["postgres=5433", "ray_dashboard=8266"]) == {"postgres": 5433, "ray_dashboard": 8266}
    with pytest.raises(PaylakeError, match="NAME=NUMBER"):
        _parse_ports(["postgres"])


def test_the_demo_submits_its_job_from_the_repository_root():
    from paylake.cli.stack import PROJECT

    assert (PROJECT / "jobs" / "pipeline.py").is_file() and (PROJECT / "Makefile").is_file()
