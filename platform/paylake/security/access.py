"""Access control across the stores, from one declarative policy file (``security/policy.yaml``).

``audit`` compares what the policy declares with what each store grants and
returns findings: a declared grant that is missing, a grant nobody declared
(drift), an expired contractor still holding access, a role holding more than
its role allows (over-privileged). ``apply`` makes the stores match: it creates
and grants what is declared, revokes what is not (for the principals it
manages), revokes expired contractor grants, and returns what it changed.
Both are idempotent: a second ``apply`` changes nothing and ``audit`` after it
finds nothing.

Stores and what a role means in each (the policy's ``stores`` section):

- **postgres**: group roles (NOLOGIN) hold the grants (``sql/postgres/``);
  people and contractors are login roles that are members of exactly one
  group; a contractor's ``VALID UNTIL`` is its expiry;
- **mongo**: users of the server's RBAC with built-in roles on the sources
  database (people and contractors; services connect with their own users);
- **online**: Redis ACL users per service role (``ACL SETUSER``);
- **kms**: the principals allowed to use the master keys (their key policies);
- **lake**: S3 prefix rules per role, enforced by the lake's S3 server
  (``<state>/s3/.access.json``; a bucket policy on AWS);
- **serve**: the scoring API's clients and their scopes;
- **mlflow**: accounts of MLflow's basic-auth app (people read every experiment and model, the pipeline is its
  administrator; no account for an expired contractor).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator

from paylake.errors import ConfigError, PaylakeError
from paylake.settings import Settings

POLICY_FILE = Path(__file__).resolve().parents[3] / "security" / "policy.yaml"
MAX_CONTRACT = dt.timedelta(days=90)
NAME = r"^[a-z][a-z0-9_]{1,62}$"
PERSON_ROLES = ("administrator", "developer", "readonly")


class Person(BaseModel):
    name: str = Field(pattern=NAME)
    role: Literal["administrator", "developer", "readonly"]


class Contractor(BaseModel):
    name: str = Field(pattern=NAME)
    role: Literal["developer", "readonly"]
    expires: dt.datetime

    @field_validator("expires", mode="before")
    @classmethod
    def _midnight(cls, value):
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):  # a date: the start of that day, UTC
            value = dt.datetime.combine(value, dt.time(), dt.UTC)
        return value

    @field_validator("expires")
    @classmethod
    def _utc(cls, value: dt.datetime) -> dt.datetime:
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class PostgresRoles(BaseModel):
    administrator: str
    developer: str
    readonly: str
    unmanaged: list[str] = []


class LakeRule(BaseModel):
    read: list[str] = []
    write: list[str] = []


class Stores(BaseModel):
    postgres: PostgresRoles
    mlflow: dict[Literal["users"], list[Literal["administrator", "developer", "readonly"]]]
    mongo: dict[Literal["administrator", "developer", "readonly"], list[str]]
    online: dict[str, str]
    kms: dict[Literal["users"], list[str]]
    lake: dict[str, LakeRule]
    serve: dict[str, list[str]]


class Policy(BaseModel):
    version: Literal[1]
    roles: dict[str, str]
    people: list[Person] = []
    contractors: list[Contractor] = []
    stores: Stores

    def members(self, now: dt.datetime) -> dict[str, str]:
        """name -> role of everyone whose access is current."""
        active = {p.name: p.role for p in self.people}
        active.update({c.name: c.role for c in self.contractors if c.expires > now})
        return active

    def expired(self, now: dt.datetime) -> list[Contractor]:
        return [c for c in self.contractors if c.expires <= now]


def load_policy(path: Path | None = None) -> Policy:
    path = path or POLICY_FILE
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no access policy at {path}: write one (see security/policy.yaml)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{path}: {problems}") from None
    names = [p.name for p in policy.people] + [c.name for c in policy.contractors]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{path}: {', '.join(twice)} declared more than once")
    unknown = {r for r in policy.stores.online} | set(policy.stores.lake) | set(policy.stores.kms["users"])
    unknown -= set(policy.roles)
    if unknown:
        raise ConfigError(f"{path}: store entries name undeclared role(s) {', '.join(sorted(unknown))}")
    return policy


@dataclass(frozen=True)
class Finding:
    store: str
    principal: str
    kind: str  # missing | undeclared | expired | over-privileged | drift | unmanaged
    detail: str

    @property
    def is_problem(self) -> bool:
        return self.kind != "unmanaged"


@dataclass(frozen=True)
class Change:
    store: str
    principal: str
    action: str


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# ----------------------------------------------------------------------------- PostgreSQL
def _pg_state(conn, groups: dict[str, str]) -> dict[str, dict]:
    """login/member roles of the paylake groups: name -> {groups, valid_until, login, super}"""
    rows = conn.execute(
        "select m.rolname, g.rolname, m.rolvaliduntil, m.rolcanlogin, m.rolsuper or m.rolcreaterole or"
        " m.rolbypassrls from pg_auth_members a join pg_roles g on g.oid = a.roleid join pg_roles m on"
        " m.oid = a.member where g.rolname = any(%s)", (list(groups.values()),)).fetchall()
    state: dict[str, dict] = {}
    for member, group, valid, login, powerful in rows:
        entry = state.setdefault(member, {"groups": set(), "valid_until": valid, "login": login, "super": powerful})
        entry["groups"].add(group)
    return state


def _pg_audit(conn, policy: Policy, now: dt.datetime) -> list[Finding]:
    groups = policy.stores.postgres.model_dump(exclude={"unmanaged"})
    unmanaged = policy.stores.postgres.unmanaged
    state = _pg_state(conn, groups)
    declared = policy.members(now)
    contractors = {c.name: c for c in policy.contractors}
    found = []
    for name, role in declared.items():
        entry = state.get(name)
        if entry is None or groups[role] not in entry["groups"]:
            found.append(Finding("postgres", name, "missing", f"not a member of {groups[role]}"))
            continue
        extra = entry["groups"] - {groups[role]}
        if extra:
            found.append(Finding("postgres", name, "over-privileged", f"also a member of {', '.join(sorted(extra))}"))
        if name in contractors and (entry["valid_until"] is None or entry["valid_until"] > contractors[name].expires):
            found.append(Finding("postgres", name, "drift", f"VALID UNTIL {entry['valid_until']} is later than the "
                                 f"contract's end {contractors[name].expires:%Y-%m-%d}"))
    for name, entry in state.items():
        expired = entry["valid_until"] is not None and entry["valid_until"] <= now
        if expired:
            found.append(Finding("postgres", name, "expired", f"VALID UNTIL {entry['valid_until']:%Y-%m-%d %H:%M} "
                                 f"passed, still a member of {', '.join(sorted(entry['groups']))}"))
        elif name not in declared:
            kind = "unmanaged" if any(fnmatch.fnmatchcase(name, p) for p in unmanaged) else "undeclared"
            found.append(Finding("postgres", name, kind, f"member of {', '.join(sorted(entry['groups']))}"))
        if entry["super"]:
            found.append(Finding("postgres", name, "over-privileged", "superuser, CREATEROLE or BYPASSRLS"))
    return found


def _pg_apply(conn, policy: Policy, now: dt.datetime) -> list[Change]:
    from psycopg import sql

    groups = policy.stores.postgres.model_dump(exclude={"unmanaged"})
    unmanaged = policy.stores.postgres.unmanaged
    changes = []
    existing = {r[0] for r in conn.execute("select rolname from pg_roles")}
    if groups["administrator"] not in existing:  # the administrators' group: developer's rights + monitoring
        conn.execute(sql.SQL("create role {} nologin").format(sql.Identifier(groups["administrator"])))
        conn.execute(sql.SQL("grant {}, pg_monitor to {}").format(sql.Identifier(groups["developer"]),
                                                                   sql.Identifier(groups["administrator"])))
        changes.append(Change("postgres", groups["administrator"], "created the administrators' group"))
    state = _pg_state(conn, groups)
    declared = policy.members(now)
    contractors = {c.name: c for c in policy.contractors}
    for name, role in declared.items():
        ident = sql.Identifier(name)
        if name not in existing:
            conn.execute(sql.SQL("create role {} login").format(ident))
            conn.execute("comment on role {} is 'paylake:person'".replace("{}", ident.as_string(conn)))
            changes.append(Change("postgres", name, "created the login role"))
        current = state.get(name, {"groups": set()})["groups"]
        for extra in sorted(current - {groups[role]}):
            conn.execute(sql.SQL("revoke {} from {}").format(sql.Identifier(extra), ident))
            changes.append(Change("postgres", name, f"revoked {extra}"))
        if groups[role] not in current:
            conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(groups[role]), ident))
            changes.append(Change("postgres", name, f"granted {groups[role]}"))
        if name in contractors:
            until = contractors[name].expires
            valid = state.get(name, {}).get("valid_until")
            if valid != until:
                conn.execute(sql.SQL("alter role {} login valid until {}").format(ident, sql.Literal(until.isoformat())))
                conn.execute("insert into oltp.AuditLog (Action, Object, Details) values ('role.contractor', %s, %s)",
                             (name, json.dumps({"valid_until": until.isoformat(), "group": groups[role]})))
                changes.append(Change("postgres", name, f"valid until {until:%Y-%m-%d}"))
    for name, entry in state.items():
        expired = entry["valid_until"] is not None and entry["valid_until"] <= now
        managed = not any(fnmatch.fnmatchcase(name, p) for p in unmanaged)
        if expired or (name not in declared and managed):
            ident = sql.Identifier(name)
            for group in sorted(entry["groups"]):
                conn.execute(sql.SQL("revoke {} from {}").format(sql.Identifier(group), ident))
            conn.execute(sql.SQL("alter role {} nologin").format(ident))
            conn.execute("insert into oltp.AuditLog (Action, Object, Details) values ('role.revoke', %s, %s)",
                         (name, json.dumps({"groups": sorted(entry["groups"]),
                                            "reason": "expired" if expired else "not in the policy"})))
            changes.append(Change("postgres", name, f"revoked {', '.join(sorted(entry['groups']))} "
                                  f"({'expired' if expired else 'not in the policy'}), login disabled"))
    return changes


# ----------------------------------------------------------------------------- the online store (Redis ACL)
def _acl_users(client) -> dict[str, str]:
    users = {}
    for line in client.acl_list():
        parts = line.split()
        users[parts[1]] = " ".join(parts[2:])
    return users


def _online_audit(client, policy: Policy) -> list[Finding]:
    users = _acl_users(client)
    found = []
    for role, rules in policy.stores.online.items():
        name = f"paylake_{role}"
        if name not in users:
            found.append(Finding("online", name, "missing", "no ACL user"))
            continue
        actual = client.acl_getuser(name)
        expected = _normalise_acl(client, rules)
        if _acl_view(actual) != expected:
            found.append(Finding("online", name, "drift", f"ACL differs from the policy's {rules!r}"))
    for name in users:
        if name != "default" and name.removeprefix("paylake_") not in policy.stores.online:
            found.append(Finding("online", name, "undeclared", "an ACL user the policy does not declare"))
    return found


def _acl_view(user: dict) -> tuple:
    return (str(user.get("commands")), tuple(sorted(user.get("keys", []) if isinstance(user.get("keys"), list)
                                                     else str(user.get("keys")).split())))


def _normalise_acl(client, rules: str) -> tuple:
    """What the server makes of ``rules`` (it reorders and expands categories): set them on a scratch user."""
    scratch = "paylake_acl_probe"
    client.acl_setuser(scratch, enabled=False, reset=True)
    client.execute_command("ACL", "SETUSER", scratch, *rules.split())
    view = _acl_view(client.acl_getuser(scratch))
    client.acl_deluser(scratch)
    return view


def _online_apply(client, policy: Policy, passwords: dict[str, str]) -> list[Change]:
    changes = []
    users = _acl_users(client)
    for finding in _online_audit(client, policy):
        name = finding.principal
        if finding.kind == "undeclared":
            client.acl_deluser(name)
            changes.append(Change("online", name, "deleted the undeclared ACL user"))
            continue
        role = name.removeprefix("paylake_")
        secret = passwords.setdefault(name, _new_secret())
        client.execute_command("ACL", "SETUSER", name, "reset", "on", f">{secret}", *policy.stores.online[role].split())
        changes.append(Change("online", name, ("created" if name not in users else "reset") + " the ACL user"))
    if changes:
        client.execute_command("ACL", "SAVE")  # into the server's ACL file: the users survive a restart
    return changes


def _new_secret() -> str:
    import secrets

    return secrets.token_urlsafe(24)


# ----------------------------------------------------------------------------- the KMS
def _kms_audit(settings: Settings, policy: Policy) -> list[Finding]:
    from paylake.security import keys
    from paylake.stack.kms_server import principal_arn

    kms = keys.Kms(settings, admin=True)
    expected = sorted(principal_arn(f"paylake-{u}") for u in policy.stores.kms["users"])
    found = []
    for store in keys.STORES:
        document = json.loads(kms.call("reading a key policy", "get_key_policy", KeyId=_key_id(kms, kms.alias(store)),
                                       PolicyName="default")["Policy"])
        users = next((s["Principal"]["AWS"] for s in document["Statement"] if s.get("Sid") == "KeyUse"), [])
        users = sorted([users] if isinstance(users, str) else users)
        if users != expected:
            extra = sorted(set(users) - set(expected))
            found.append(Finding("kms", kms.alias(store), "over-privileged" if extra else "drift",
                                 f"key users {', '.join(u.rsplit('/', 1)[-1] for u in users) or 'none'}; the policy "
                                 f"declares {', '.join(policy.stores.kms['users'])}"))
    return found


def _key_id(kms, alias: str) -> str:
    """Key policies are read and written by key id (AWS refuses an alias there)."""
    return kms.call(f"resolving {alias}", "describe_key", KeyId=alias)["KeyMetadata"]["KeyId"]


def _kms_apply(settings: Settings, policy: Policy) -> list[Change]:
    from paylake.security import keys
    from paylake.stack.kms_server import principal_arn

    kms = keys.Kms(settings, admin=True)
    changes = []
    for finding in _kms_audit(settings, policy):
        document = keys.key_policy(principal_arn("paylake-keyadmin"),
                                   [principal_arn(f"paylake-{u}") for u in policy.stores.kms["users"]])
        kms.call("writing a key policy", "put_key_policy", KeyId=_key_id(kms, finding.principal), PolicyName="default",
                 Policy=document)
        changes.append(Change("kms", finding.principal, "key policy rewritten"))
    return changes


# ----------------------------------------------------------------------------- the lake (S3 prefixes)
def lake_rules_file(settings: Settings) -> Path | None:
    """Where the local S3 server reads its prefix rules (None: AWS, where they are a bucket policy)."""
    from paylake.settings import find_stack_file

    stack_file = find_stack_file()
    if not settings.s3_endpoint_url or stack_file is None:
        return None
    return stack_file.parent / "s3" / ".access.json"


def lake_document(policy: Policy) -> dict:
    return {role: rule.model_dump() for role, rule in policy.stores.lake.items()}


def _lake_audit(settings: Settings, policy: Policy) -> list[Finding]:
    path = lake_rules_file(settings)
    if path is None:
        return []
    actual = json.loads(path.read_text()).get("rules", {}) if path.is_file() else {}
    expected = lake_document(policy)
    found = [Finding("lake", role, "missing" if role not in actual else "drift", f"prefix rules {rule}")
             for role, rule in expected.items() if actual.get(role) != rule]
    found += [Finding("lake", role, "undeclared", "prefix rules of an undeclared role") for role in actual
              if role not in expected]
    return found


def _lake_apply(settings: Settings, policy: Policy) -> list[Change]:
    path = lake_rules_file(settings)
    if path is None or not _lake_audit(settings, policy):
        return []
    current = json.loads(path.read_text()) if path.is_file() else {}
    current["rules"] = lake_document(policy)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1))
    tmp.chmod(0o600)
    tmp.replace(path)
    return [Change("lake", role, "prefix rules written") for role in policy.stores.lake]


# ----------------------------------------------------------------------------- the scoring API
def _serve_audit(settings: Settings, policy: Policy) -> list[Finding]:
    from paylake.serving import auth

    found = []
    entries = {e.name: set(e.scopes) for e in auth.load_entries(auth.keys_file(settings))}
    for name, scopes in entries.items():
        declared = set(policy.stores.serve.get(name, []))
        if name not in policy.stores.serve:
            found.append(Finding("serve", name, "undeclared", f"an API key with {', '.join(sorted(scopes))}"))
        elif scopes - declared:
            found.append(Finding("serve", name, "over-privileged", f"scopes {', '.join(sorted(scopes - declared))} "
                                 "beyond the policy's"))
    return found


def _serve_apply(settings: Settings, policy: Policy) -> list[Change]:
    from paylake.serving import auth

    path = auth.keys_file(settings)
    findings = _serve_audit(settings, policy)
    if path is None or not findings:
        return []
    kept = []
    for entry in auth.load_entries(path):
        if entry.name not in policy.stores.serve:
            continue
        allowed = sorted(set(entry.scopes) & set(policy.stores.serve[entry.name]))
        if allowed:
            kept.append(entry.model_copy(update={"scopes": allowed}))
    path.write_text(json.dumps([e.model_dump() for e in kept], indent=1))
    path.chmod(0o600)
    return [Change("serve", f.principal, "key revoked" if f.kind == "undeclared" else "scopes trimmed")
            for f in findings]


# ----------------------------------------------------------------------------- MLflow (basic-auth users)
def _mlflow_client(settings: Settings):
    from mlflow.server.auth.client import AuthServiceClient

    from paylake.security import tls

    tls.trust(settings.tls_ca_file)
    return AuthServiceClient(settings.mlflow_tracking_uri)


def _mlflow_user(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_user(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _mlflow_audit(settings: Settings, policy: Policy, now: dt.datetime) -> list[Finding]:
    """Declared people have a (non-administrator) account; expired contractors have none. MLflow's API lists no
    users, so accounts nobody declared are found by the server's own audit, not here."""
    client = _mlflow_client(settings)
    found = []
    for name, role in policy.members(now).items():
        if role not in policy.stores.mlflow["users"]:
            continue
        user = _mlflow_user(client, name)
        if user is None:
            found.append(Finding("mlflow", name, "missing", "no account"))
        elif user.is_admin:
            found.append(Finding("mlflow", name, "over-privileged", "an MLflow administrator"))
    for contractor in policy.expired(now):
        if _mlflow_user(client, contractor.name) is not None:
            found.append(Finding("mlflow", contractor.name, "expired", "the account still exists"))
    return found


def _mlflow_apply(settings: Settings, policy: Policy, now: dt.datetime) -> list[Change]:
    client = _mlflow_client(settings)
    changes = []
    for finding in _mlflow_audit(settings, policy, now):
        name = finding.principal
        if finding.kind == "expired":
            client.delete_user(name)
            changes.append(Change("mlflow", name, "account deleted (expired)"))
        elif finding.kind == "missing":  # people set their own password ('update-password' API)
            client.create_user(name, _new_secret())
            changes.append(Change("mlflow", name, "account created (reads every experiment and model)"))
        else:
            client.update_user_admin(name, False)
            changes.append(Change("mlflow", name, "administrator flag removed"))
    return changes


# ----------------------------------------------------------------------------- MongoDB
def _mongo_audit(db, policy: Policy, now: dt.datetime) -> list[Finding]:
    users = {u["user"]: {r["role"] for r in u["roles"] if r["db"] == db.name}
             for u in db.command("usersInfo")["users"]}
    declared = policy.members(now)
    found = []
    for name, role in declared.items():
        expected = set(policy.stores.mongo[role])
        if name not in users:
            found.append(Finding("mongo", name, "missing", f"no user with {', '.join(sorted(expected))}"))
        elif users[name] != expected:
            kind = "over-privileged" if users[name] - expected else "drift"
            found.append(Finding("mongo", name, kind, f"roles {', '.join(sorted(users[name]))}"))
    for name in users:
        if name not in declared:
            expired = any(c.name == name for c in policy.expired(now))
            found.append(Finding("mongo", name, "expired" if expired else "undeclared", "a user on the database"))
    return found


def _mongo_apply(db, policy: Policy, now: dt.datetime) -> list[Change]:
    changes = []
    declared = policy.members(now)
    for finding in _mongo_audit(db, policy, now):
        name = finding.principal
        if name not in declared:
            db.command("dropUser", name)
            changes.append(Change("mongo", name, "user dropped" + (" (expired)" if finding.kind == "expired" else "")))
            continue
        roles = [{"role": r, "db": db.name} for r in policy.stores.mongo[declared[name]]]
        if finding.kind == "missing":  # people authenticate with their own password, set by 'access password'
            db.command("createUser", name, pwd=_new_secret(), roles=roles)
            changes.append(Change("mongo", name, f"user created with {', '.join(r['role'] for r in roles)}"))
        else:
            db.command("updateUser", name, roles=roles)
            changes.append(Change("mongo", name, f"roles set to {', '.join(r['role'] for r in roles)}"))
    return changes


def aws_bucket_documents(policy: Policy, bucket: str, account: str, kms_key_arn: str) -> dict:
    """The lake bucket's production counterpart of the local prefix rules: a bucket policy (deny, by role, every
    object action outside its prefixes; deny plain HTTP and uploads not encrypted with the lake's KMS key) and the
    bucket's default encryption (SSE-KMS, bucket keys). Role ARNs are ``arn:aws:iam::<account>:role/paylake-<role>``."""
    statements: list[dict] = [
        {"Sid": "TlsOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
        {"Sid": "LakeKeyOnly", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": kms_key_arn}}},
    ]
    for role, rule in policy.stores.lake.items():
        arn = f"arn:aws:iam::{account}:role/paylake-{role}"
        for verb, actions in (("read", ["s3:GetObject"]), ("write", ["s3:PutObject", "s3:DeleteObject"])):
            allowed = [f"arn:aws:s3:::{bucket}/{p}" for p in getattr(rule, verb)]
            statement = {"Sid": f"{role}-{verb}", "Effect": "Deny", "Principal": {"AWS": arn}, "Action": actions,
                         "NotResource": allowed} if allowed else {
                "Sid": f"{role}-no-{verb}", "Effect": "Deny", "Principal": {"AWS": arn}, "Action": actions,
                "Resource": f"arn:aws:s3:::{bucket}/*"}
            statements.append(statement)
    return {"bucket_policy": {"Version": "2012-10-17", "Statement": statements},
            "encryption": {"Rules": [{"ApplyServerSideEncryptionByDefault": {
                "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key_arn}, "BucketKeyEnabled": True}]}}


# ----------------------------------------------------------------------------- Snowflake (statements only)
SNOWFLAKE_PRIVILEGES = {  # on the warehouse's star schema, per role: least privilege
    "administrator": ["USAGE", "SELECT", "MONITOR"],
    "developer": ["USAGE", "SELECT"],
    "readonly": ["USAGE", "SELECT"],
    "pipeline": ["USAGE", "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE TABLE", "CREATE STAGE"],
}


def snowflake_statements(policy: Policy, database: str, schema: str, now: dt.datetime | None = None) -> list[str]:
    """The roles, grants and users of the policy as Snowflake SQL, for an account administrator to run (the local
    warehouse, fakesnow, parses no GRANT). Contractors' users are disabled at their expiry by the same run."""
    now = now or _now()
    target = f"{database}.{schema}"
    out = []
    for role, privileges in SNOWFLAKE_PRIVILEGES.items():
        name = f"PAYLAKE_{role.upper()}"
        out.append(f"CREATE ROLE IF NOT EXISTS {name};")
        out.append(f"GRANT USAGE ON DATABASE {database} TO ROLE {name};")
        schema_privileges = [p for p in privileges if p in ("USAGE", "MONITOR", "CREATE TABLE", "CREATE STAGE")]
        out.append(f"GRANT {', '.join(schema_privileges)} ON SCHEMA {target} TO ROLE {name};")
        table_privileges = [p for p in privileges if p in ("SELECT", "INSERT", "UPDATE", "DELETE")]
        for scope in ("ALL", "FUTURE"):
            out.append(f"GRANT {', '.join(table_privileges)} ON {scope} TABLES IN SCHEMA {target} TO ROLE {name};")
    for person in policy.people:
        out.append(f"CREATE USER IF NOT EXISTS {person.name.upper()} DEFAULT_ROLE = PAYLAKE_{person.role.upper()};")
        out.append(f"GRANT ROLE PAYLAKE_{person.role.upper()} TO USER {person.name.upper()};")
    for contractor in policy.contractors:
        user = contractor.name.upper()
        if contractor.expires <= now:
            out.append(f"ALTER USER IF EXISTS {user} SET DISABLED = TRUE;")
            out.append(f"REVOKE ROLE PAYLAKE_{contractor.role.upper()} FROM USER {user};")
            continue
        days = max(1, (contractor.expires - now).days)
        out.append(f"CREATE USER IF NOT EXISTS {user} DEFAULT_ROLE = PAYLAKE_{contractor.role.upper()} "
                   f"DAYS_TO_EXPIRY = {days};")
        out.append(f"GRANT ROLE PAYLAKE_{contractor.role.upper()} TO USER {user};")
    return out


# ----------------------------------------------------------------------------- entry points
STORES = ("postgres", "mongo", "online", "kms", "lake", "serve", "mlflow")


@contextmanager
def _handle(settings: Settings, store: str):
    """What a store's audit and apply work on: a connection (committed at the end), a database, or settings."""
    from paylake.stores import mongo, online, postgres

    if store == "postgres":
        with postgres.connect(settings) as conn:
            yield conn
            conn.commit()
    elif store == "mongo":
        with mongo.client(settings) as client:
            yield mongo.database(client, settings)
    elif store == "online":
        client = online.client(settings)
        try:
            yield client
        finally:
            client.close()
    else:
        yield settings


def _each_store(settings: Settings, stores: tuple[str, ...], work: dict[str, Callable]) -> list:
    out: list = []
    for store in STORES:
        if store in stores:
            with _handle(settings, store) as handle:
                out += work[store](handle)
    return out


def audit(settings: Settings, policy: Policy, *, now: dt.datetime | None = None,
          stores: tuple[str, ...] = STORES) -> list[Finding]:
    now = now or _now()
    return _each_store(settings, stores, {
        "postgres": lambda conn: _pg_audit(conn, policy, now), "mongo": lambda db: _mongo_audit(db, policy, now),
        "online": lambda client: _online_audit(client, policy), "kms": lambda s: _kms_audit(s, policy),
        "lake": lambda s: _lake_audit(s, policy), "serve": lambda s: _serve_audit(s, policy),
        "mlflow": lambda s: _mlflow_audit(s, policy, now)})


def apply(settings: Settings, policy: Policy, *, now: dt.datetime | None = None,
          stores: tuple[str, ...] = STORES) -> tuple[list[Change], dict[str, str]]:
    """Make the stores match the policy, store by store (each consistent on its own: a re-run after a failure
    finishes the job); the changes, and the credentials of service users created now (shown once by the CLI,
    for the operator's secret store)."""
    now = now or _now()
    for contractor in policy.contractors:
        if contractor.expires > now + MAX_CONTRACT:
            raise PaylakeError(f"contractor {contractor.name}'s access ends {contractor.expires:%Y-%m-%d}: contractor "
                               f"access is limited to {MAX_CONTRACT.days} days")
    created: dict[str, str] = {}
    changes = _each_store(settings, stores, {
        "postgres": lambda conn: _pg_apply(conn, policy, now), "mongo": lambda db: _mongo_apply(db, policy, now),
        "online": lambda client: _online_apply(client, policy, created), "kms": lambda s: _kms_apply(s, policy),
        "lake": lambda s: _lake_apply(s, policy), "serve": lambda s: _serve_apply(s, policy),
        "mlflow": lambda s: _mlflow_apply(s, policy, now)})
    return changes, created
