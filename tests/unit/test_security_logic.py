"""Pure logic of the security package: the policy file, key policies, the envelope, the local CA."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from paylake.errors import ConfigError
from paylake.security import access, keys, tls
from paylake.stack.kms_server import policy_allows, principal_arn

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)


def _policy(**changes) -> access.Policy:
    return access.load_policy().model_copy(update=changes)


def test_the_repository_policy_loads_and_names_the_three_roles():
    policy = access.load_policy()
    assert set(access.PERSON_ROLES) <= set(policy.roles)
    assert set(policy.stores.mongo) == set(access.PERSON_ROLES)
    assert "lake/bronze/*" not in json.dumps(policy.stores.lake["developer"].model_dump())
    assert policy.stores.kms["users"] == ["pipeline"], "no person may use the master keys"


@pytest.mark.parametrize("text, message", [
    ("version: 1\nroles: {}\npeople: [{name: X, role: boss}]\n", "people"),
    ("version: 2\n", "version"),
    ("{not yaml", "not valid YAML"),
])
def test_a_bad_policy_file_is_refused_with_the_field(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        access.load_policy(path)


def test_a_name_declared_twice_is_refused(tmp_path):
    document = json.loads(access.load_policy().model_dump_json())
    document["people"] = [{"name": "dup_one", "role": "developer"}, {"name": "dup_one", "role": "readonly"}]
    path = tmp_path / "policy.yaml"
    path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match="dup_one declared more than once"):
        access.load_policy(path)


def test_contractors_count_until_they_expire():
    policy = _policy(contractors=[access.Contractor(name="ext_a", role="readonly", expires="2026-12-06"),
                                  access.Contractor(name="ext_b", role="developer", expires="2026-12-01")])
    assert policy.members(NOW)["ext_a"] == "readonly" and "ext_b" not in policy.members(NOW)
    assert [c.name for c in policy.expired(NOW)] == ["ext_b"]


def test_snowflake_statements_grant_least_privilege_and_disable_expired_contractors():
    policy = _policy(contractors=[access.Contractor(name="ext_b", role="readonly", expires="2026-12-01")])
    sql = access.snowflake_statements(policy, "ANALYTICS", "STAR", NOW)
    readonly = [s for s in sql if "TO ROLE PAYLAKE_READONLY" in s]
    assert not any(word in s for s in readonly for word in ("INSERT", "UPDATE", "DELETE", "CREATE"))
    assert "ALTER USER IF EXISTS EXT_B SET DISABLED = TRUE;" in sql


def test_key_policy_deny_wins_and_unknown_principals_get_nothing():
    document = json.loads(keys.key_policy(principal_arn("paylake-keyadmin"), [principal_arn("paylake-pipeline")]))
    assert policy_allows(document, principal_arn("paylake-pipeline"), "Decrypt")
    assert policy_allows(document, principal_arn("paylake-pipeline"), "GenerateDataKey")
    assert not policy_allows(document, principal_arn("paylake-pipeline"), "ScheduleKeyDeletion")
    assert policy_allows(document, principal_arn("paylake-keyadmin"), "ReEncrypt")
    assert not policy_allows(document, principal_arn("paylake-keyadmin"), "Decrypt"), "explicit deny"
    assert not policy_allows(document, principal_arn("paylake-developer"), "Decrypt")


def test_the_envelope_opens_only_with_its_key_and_associated_data():
    key, other = b"k" * 32, b"o" * 32
    blob = keys.seal(key, b"alice@example.com", b"oltp.customer.email:1", version=7)
    assert keys.version_of(blob) == 7 and b"alice" not in blob
    assert keys.unseal(key, blob, b"oltp.customer.email:1", "x") == b"alice@example.com"
    for bad_key, aad in ((other, b"oltp.customer.email:1"), (key, b"oltp.customer.email:2")):
        with pytest.raises(keys.KeyringError, match="does not authenticate"):
            keys.unseal(bad_key, blob, aad, "x")
    assert keys.seal(key, b"same", b"a") != keys.seal(key, b"same", b"a"), "a fresh nonce each time"


def test_the_local_ca_is_made_once_and_its_certificate_names_loopback(tmp_path):
    from cryptography import x509

    files, actions = tls.ensure(tmp_path)
    assert actions == ["created the local CA", "issued the server certificate"]
    assert tls.ensure(tmp_path)[1] == []
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert (files.server_key.stat().st_mode & 0o777) == 0o600 and (files.ca_key.stat().st_mode & 0o777) == 0o600
    files.ca_cert.unlink()  # a new CA re-issues the server certificate
    assert tls.ensure(tmp_path)[1] == ["created the local CA", "issued the server certificate"]


def test_the_aws_bucket_policy_keeps_bronze_for_the_pipeline_and_requires_tls_and_the_lake_key():
    docs = access.aws_bucket_documents(access.load_policy(), "paylake-lake", "123456789012",
                                       "arn:aws:kms:us-east-1:123456789012:key/lake")
    statements = {s["Sid"]: s for s in docs["bucket_policy"]["Statement"]}
    assert statements["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    developer_read = statements["developer-read"]
    assert developer_read["Effect"] == "Deny" and "arn:aws:s3:::paylake-lake/lake/bronze/*" not in \
        developer_read["NotResource"] and "arn:aws:s3:::paylake-lake/lake/gold/*" in developer_read["NotResource"]
    assert statements["readonly-no-write"]["Resource"] == "arn:aws:s3:::paylake-lake/*"
    rule = docs["encryption"]["Rules"][0]["ApplyServerSideEncryptionByDefault"]
    assert rule == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "arn:aws:kms:us-east-1:123456789012:key/lake"}
