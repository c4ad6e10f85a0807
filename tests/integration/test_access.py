"""Access control from one policy file, applied to and audited on the real stores: each role gets exactly its
grants (positive and negative per store), drift is found and undone, expired contractors are revoked."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import boto3
import psycopg
import pymongo
import pytest
import redis
from botocore.config import Config
from botocore.exceptions import ClientError

from paylake.security import access
from paylake.stores import mongo, online, postgres
from tests.conftest import run_cli

pytestmark = pytest.mark.stack
NOW = dt.datetime.now(dt.UTC)


def _names(prefix: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {role: f"acc_{prefix}_{role[:3]}_{tag}" for role in ("administrator", "developer", "readonly")}


@pytest.fixture(scope="module")
def policy(migrated) -> access.Policy:
    base = access.load_policy()
    names = _names("p")
    return base.model_copy(update={"people": [access.Person(name=n, role=r) for r, n in names.items()],
                                   "contractors": []})


@pytest.fixture(scope="module")
def applied(migrated, policy):
    changes, created = access.apply(migrated, policy)
    return changes, created


def test_apply_then_audit_finds_nothing_and_a_second_apply_changes_nothing(migrated, policy, applied):
    problems = [f for f in access.audit(migrated, policy) if f.is_problem]
    assert problems == []
    again, _ = access.apply(migrated, policy)
    assert again == []


def test_postgres_people_are_members_of_exactly_their_group(migrated, policy, applied):
    with postgres.connect(migrated) as conn:
        for person in policy.people:
            groups = {r[0] for r in conn.execute(
                "select g.rolname from pg_auth_members a join pg_roles g on g.oid = a.roleid join pg_roles m on"
                " m.oid = a.member where m.rolname = %s", (person.name,))}
            assert groups == {getattr(policy.stores.postgres, person.role)}, person


def test_postgres_drift_is_found_and_undone(migrated, policy, applied):
    developer = next(p.name for p in policy.people if p.role == "developer")
    with postgres.connect(migrated, autocommit=True) as conn:
        conn.execute(f"grant paylake_administrator to {developer}")  # noqa: S608 - a generated test name
    found = [f for f in access.audit(migrated, policy, stores=("postgres",)) if f.principal == developer]
    assert [f.kind for f in found] == ["over-privileged"]
    changes, _ = access.apply(migrated, policy, stores=("postgres",))
    assert any(c.principal == developer and "revoked paylake_administrator" in c.action for c in changes)
    assert not [f for f in access.audit(migrated, policy, stores=("postgres",)) if f.is_problem]


def test_an_expired_contractor_is_revoked_everywhere_and_reported(migrated, policy):
    name = f"acc_ctr_{uuid.uuid4().hex[:8]}"
    hired = policy.model_copy(update={"contractors": [access.Contractor(name=name, role="readonly",
                                                                       expires=NOW + dt.timedelta(days=1))]})
    access.apply(migrated, hired, stores=("postgres", "mongo"))
    password = uuid.uuid4().hex
    with postgres.connect(migrated, autocommit=True) as conn:
        verifier = conn.pgconn.encrypt_password(password.encode(), name.encode(), b"scram-sha-256").decode()
        conn.execute(f"alter role {name} password '{verifier}'")  # noqa: S608 - generated name, SCRAM verifier
    with psycopg.connect(migrated.postgres_dsn.get_secret_value(), user=name, password=password) as conn:
        assert conn.execute("select count(*) >= 0 from oltp.Customer").fetchone() == (True,)

    later = NOW + dt.timedelta(days=2)  # the contract ended: the declared grant is now an expired one
    found = access.audit(migrated, hired, now=later, stores=("postgres", "mongo"))
    assert {(f.store, f.kind) for f in found if f.principal == name} >= {("mongo", "expired")}
    changes, _ = access.apply(migrated, hired, now=later, stores=("postgres", "mongo"))
    revoked = [c for c in changes if c.principal == name]
    assert any(c.store == "postgres" and "expired" in c.action for c in revoked), changes
    assert any(c.store == "mongo" and "expired" in c.action for c in revoked), changes
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(migrated.postgres_dsn.get_secret_value(), user=name, password=password, connect_timeout=5)
    with postgres.connect(migrated) as conn:
        (recorded,) = conn.execute("select count(*) from oltp.AuditLog where Action = 'role.revoke' and Object = %s",
                                   (name,)).fetchone()
    assert recorded == 1


def test_contract_longer_than_90_days_is_refused(migrated, policy):
    too_long = policy.model_copy(update={"contractors": [access.Contractor(
        name="acc_long", role="readonly", expires=NOW + dt.timedelta(days=91))]})
    with pytest.raises(access.PaylakeError, match="90 days"):
        access.apply(migrated, too_long, stores=("postgres",))


def _mongo_as(settings, user: str, password: str) -> pymongo.MongoClient:
    host = settings.mongo_uri.get_secret_value().split("@", 1)[1].replace("authSource=admin",
                                                                          f"authSource={settings.mongo_database}")
    return pymongo.MongoClient(f"mongodb://{user}:{password}@{host}", serverSelectionTimeoutMS=3000)


def test_mongo_roles_read_write_and_nothing_else(migrated, policy, applied):
    with mongo.client(migrated) as client:
        db = mongo.database(client, migrated)
        for person in policy.people:
            db.command("updateUser", person.name, pwd=f"pw-{person.name}")
    by_role = {p.role: p.name for p in policy.people}
    with _mongo_as(migrated, by_role["readonly"], f"pw-{by_role['readonly']}") as client:
        db = client[migrated.mongo_database]
        assert db.Customer.count_documents({}) >= 0
        with pytest.raises(pymongo.errors.OperationFailure, match="not authorized|Unauthorized"):
            db.AccessProbe.insert_one({"x": 1})
    with _mongo_as(migrated, by_role["developer"], f"pw-{by_role['developer']}") as client:
        client[migrated.mongo_database].AccessProbe.insert_one({"x": 1})
        with pytest.raises(pymongo.errors.OperationFailure, match="not authorized|Unauthorized"):
            client["admin"].command("usersInfo")
        with pytest.raises(pymongo.errors.OperationFailure, match="not authorized|Unauthorized"):
            client[migrated.mongo_database].command("createUser", "acc_sneaky", pwd="x", roles=["dbOwner"])
    with pytest.raises(pymongo.errors.OperationFailure, match="Authentication failed|auth"):
        with _mongo_as(migrated, by_role["developer"], "a wrong password") as client:
            client[migrated.mongo_database].Customer.count_documents({})
    plain = migrated.mongo_uri.get_secret_value().split("@", 1)[1]
    with pymongo.MongoClient(f"mongodb://{plain}", serverSelectionTimeoutMS=3000) as anonymous:
        with pytest.raises(pymongo.errors.OperationFailure, match="auth|Unauthorized|requires"):
            anonymous[migrated.mongo_database].Customer.count_documents({})


def test_online_store_users_get_exactly_their_commands(migrated, policy):
    client = online.client(migrated)
    for name in ("paylake_serving", "paylake_developer"):
        client.acl_deluser(name)  # fresh users: apply creates them and returns their passwords once
    changes, created = access.apply(migrated, policy, stores=("online",))
    assert {"paylake_serving", "paylake_developer"} <= set(created)
    client.set("pl:access:probe", "1")
    where = migrated.online_store_url.get_secret_value().split("@")[-1]
    serving = redis.Redis.from_url(f"redis://paylake_serving:{created['paylake_serving']}@{where}")
    developer = redis.Redis.from_url(f"redis://paylake_developer:{created['paylake_developer']}@{where}")
    assert serving.get("pl:access:probe") == b"1"
    assert serving.eval("return redis.call('GET', KEYS[1])", 1, "pl:access:probe") == b"1"
    for who in (serving, developer):
        with pytest.raises(redis.exceptions.NoPermissionError):
            who.set("pl:access:probe", "2")
        with pytest.raises(redis.exceptions.NoPermissionError):
            who.execute_command("ACL", "LIST")
    with pytest.raises(redis.exceptions.NoPermissionError):
        developer.eval("return 1", 0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://paylake_serving:wrong@{where}").ping()
    client.execute_command("ACL", "SETUSER", "paylake_developer", "+set")  # drift
    assert [f.kind for f in access.audit(migrated, policy, stores=("online",))] == ["drift"]
    access.apply(migrated, policy, stores=("online",))
    assert access.audit(migrated, policy, stores=("online",)) == []
    client.close()


def test_kms_key_users_are_exactly_the_declared_ones(migrated, policy, applied):
    wider = policy.model_copy(update={"stores": policy.stores.model_copy(update={"kms": {"users": [
        "pipeline", "developer"]}})})
    access.apply(migrated, wider, stores=("kms",))
    found = access.audit(migrated, policy, stores=("kms",))
    assert found and {f.kind for f in found} == {"over-privileged"}
    access.apply(migrated, policy, stores=("kms",))
    assert access.audit(migrated, policy, stores=("kms",)) == []


def _s3_as(settings, role: str):
    path = access.lake_rules_file(settings)
    akid, entry = next((k, v) for k, v in json.loads(path.read_text())["principals"].items() if v["role"] == role)
    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url, verify=settings.tls_ca_file,
                        aws_access_key_id=akid, aws_secret_access_key=entry["secret"], region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


@pytest.mark.parametrize("role, key, verb, allowed", [
    ("pipeline", "lake/bronze/postgres/access-probe", "put", True),
    ("pipeline", "lake/bronze/postgres/access-probe", "get", True),
    ("developer", "lake/bronze/postgres/access-probe", "get", False),
    ("developer", "lake/gold/access-probe", "get", True),
    ("developer", "lake/gold/access-probe", "put", False),
    ("developer", "sandbox/access-probe", "put", True),
    ("readonly", "lake/gold/access-probe", "get", True),
    ("readonly", "lake/silver/access-probe", "get", False),
    ("readonly", "lake/quarantine/access-probe", "get", False),
    ("readonly", "sandbox/access-probe", "put", False),
])
def test_lake_prefixes_per_role(migrated, policy, applied, role, key, verb, allowed):
    pipeline = _s3_as(migrated, "pipeline")
    for probe in ("lake/bronze/postgres/access-probe", "lake/gold/access-probe", "lake/silver/access-probe",
                  "lake/quarantine/access-probe"):
        pipeline.put_object(Bucket="paylake-lake", Key=probe, Body=b"probe")
    client = _s3_as(migrated, role)

    def call():
        if verb == "put":
            client.put_object(Bucket="paylake-lake", Key=key, Body=b"x")
        else:
            assert client.get_object(Bucket="paylake-lake", Key=key)["Body"].read() == b"probe"

    if allowed:
        call()
    else:
        with pytest.raises(ClientError, match="AccessDenied"):
            call()


def test_unsigned_or_wrongly_signed_lake_requests_are_refused(migrated, applied):
    bad = boto3.client("s3", endpoint_url=migrated.s3_endpoint_url, verify=migrated.tls_ca_file,
                       aws_access_key_id=migrated.s3_access_key_id.get_secret_value(), aws_secret_access_key="wrong",
                       region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        bad.list_objects_v2(Bucket="paylake-lake", Prefix="lake/")
    import urllib.request

    with pytest.raises(urllib.error.HTTPError, match="403"):
        urllib.request.urlopen(f"{migrated.s3_endpoint_url}/paylake-lake/lake/gold/access-probe",  # noqa: S310
                               context=__import__("ssl").create_default_context(cafile=migrated.tls_ca_file))


def test_serve_clients_beyond_the_policy_are_revoked(migrated, policy, applied, monkeypatch, tmp_path):
    from paylake.serving import auth

    keys_file = tmp_path / "api_keys.json"
    auth.add_key(keys_file, "paylake-operator", ["admin", "fraud:score"])
    auth.add_key(keys_file, "forgotten-client", ["fraud:score"])
    scoped = migrated.model_copy(update={"serving": migrated.serving.model_copy(update={
        "api_keys_file": str(keys_file)})})
    kinds = {(f.principal, f.kind) for f in access.audit(scoped, policy, stores=("serve",))}
    assert kinds == {("paylake-operator", "over-privileged"), ("forgotten-client", "undeclared")}
    access.apply(scoped, policy, stores=("serve",))
    assert {e.name: e.scopes for e in auth.load_entries(keys_file)} == {"paylake-operator": ["admin"]}


def test_access_audit_command_exits_1_on_drift(migrated, policy, applied, monkeypatch, tmp_path):
    drifted = tmp_path / "policy.yaml"
    document = json.loads(policy.model_dump_json())
    document["people"].append({"name": f"acc_new_{uuid.uuid4().hex[:6]}", "role": "readonly"})
    drifted.write_text(json.dumps(document))
    result = run_cli(migrated, monkeypatch, "access", "audit", "--policy", str(drifted), "--store", "postgres")
    assert result.exit_code == 1 and "missing" in result.output, result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nroles: {}\npeople: [{name: X, role: boss}]\n")
    result = run_cli(migrated, monkeypatch, "access", "audit", "--policy", str(bad))
    assert result.exit_code == 1 and "people" in result.output, result.output


def test_mlflow_needs_an_account_and_people_only_read(migrated, policy, applied):
    import httpx

    from paylake.stores.mlflow import tracking

    experiment = tracking(migrated).create_experiment(f"access-probe-{uuid.uuid4().hex[:8]}")  # the pipeline's
    url = f"{migrated.mlflow_tracking_uri}/api/2.0/mlflow/experiments/get"
    anonymous = httpx.get(url, params={"experiment_id": experiment}, verify=migrated.tls_ca_file)
    assert anonymous.status_code == 401
    client = access._mlflow_client(migrated)
    reader = next(p.name for p in policy.people if p.role == "readonly")
    client.update_user_password(reader, "reader-password-1")
    auth = (reader, "reader-password-1")
    read = httpx.get(url, params={"experiment_id": experiment}, auth=auth, verify=migrated.tls_ca_file)
    assert read.status_code == 200
    write = httpx.post(f"{migrated.mlflow_tracking_uri}/api/2.0/mlflow/experiments/update", auth=auth,
                       json={"experiment_id": experiment, "new_name": "renamed"}, verify=migrated.tls_ca_file)
    assert write.status_code == 403
    client.update_user_admin(reader, True)  # drift: an administrator nobody declared
    assert [(f.principal, f.kind) for f in access.audit(migrated, policy, stores=("mlflow",))] == [
        (reader, "over-privileged")]
    access.apply(migrated, policy, stores=("mlflow",))
    assert access.audit(migrated, policy, stores=("mlflow",)) == []


def test_an_expired_contractor_loses_the_mlflow_account(migrated, policy, applied):
    name = f"acc_ml_{uuid.uuid4().hex[:8]}"
    hired = policy.model_copy(update={"contractors": [access.Contractor(name=name, role="developer",
                                                                       expires=NOW + dt.timedelta(days=1))]})
    changes, _ = access.apply(migrated, hired, stores=("mlflow",))
    assert [(c.principal, c.action.split()[0]) for c in changes] == [(name, "account")]
    later = NOW + dt.timedelta(days=2)
    assert [(f.principal, f.kind) for f in access.audit(migrated, hired, now=later, stores=("mlflow",))] == [
        (name, "expired")]
    changes, _ = access.apply(migrated, hired, now=later, stores=("mlflow",))
    assert [c.action for c in changes] == ["account deleted (expired)"]
    assert access._mlflow_user(access._mlflow_client(migrated), name) is None
