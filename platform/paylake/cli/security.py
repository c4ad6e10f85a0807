"""``paylake monitor logs``: security monitoring of the sources."""

from __future__ import annotations

from typing import Annotated

import typer

from paylake import contracts
from paylake.cli.base import app, expected_failures, needs
from paylake.report import console

monitor_app = typer.Typer(help="Security monitoring of the sources.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")


@monitor_app.command("logs")
@expected_failures
@needs('postgres', 's3', 'snowflake', 'mlflow', 'ray')
def monitor_logs_command(
    export_rows: Annotated[int, typer.Option(help="Rule: a whole-table read or COPY of a table larger than this "
                                             "is a mass export.")] = 1_000,
    warehouse: Annotated[bool, typer.Option(help="Also load the alerts into Snowflake.")] = True,
    review_days: Annotated[float, typer.Option(help="A new log key stops alerting once seen for this many days "
                                               "...")] = 7.0,
    review_sessions: Annotated[int, typer.Option(help="... in at least this many sessions, none of which made a "
                                                 "rule fire.")] = 5,
) -> None:
    """Score the database sessions that arrived since the last run; alerts as JSON lines, to the lake and Snowflake."""
    import datetime as dt
    import json

    from paylake.security.alerts import MonitorOptions, monitor_logs
    from paylake.security.key_review import ReviewOptions
    from paylake.settings import load_settings

    settings = load_settings()
    with console.status("monitoring") as status:
        review = ReviewOptions(dt.timedelta(days=review_days), review_sessions)
        report = monitor_logs(settings, MonitorOptions(export_rows=export_rows, load_warehouse=warehouse,
                                                       review=review), progress=lambda m: status.update(m))
    for alert in report.alerts:
        print(json.dumps({**alert, "Evidence": json.loads(alert["Evidence"])}, default=str, sort_keys=True))
    skipped = ", ".join(f"{v} {k}" for k, v in report.skipped.items()) or "none"
    sources = ", ".join(f"{v} by {k}" for k, v in sorted(report.by_source.items())) or "none"
    console.print(f"{report.new_sessions} new session(s) scored with paylake-logseq v{report.model_version}: "
                  f"{len(report.alerts)} alert(s) ({sources}); skipped: {skipped}; alerts in {contracts.SECURITY_ALERTS.uri(settings)}"
                  + (f" and Snowflake SECURITY_Alert ({report.warehouse_rows} rows)"
                     if report.warehouse_rows is not None else "") + f"; new keys under review "
                  f"{report.keys_in_review}, admitted {len(report.keys_admitted)}; {report.seconds:.1f} s",
                  highlight=False)


# --------------------------------------------------------------------------- keys, operators, PII
keys_app = typer.Typer(help="Master keys (KMS), data keys, per-customer keys: status and rotation.",
                       no_args_is_help=True)
app.add_typer(keys_app, name="keys")
operators_app = typer.Typer(help="Operators of sensitive commands and their TOTP second factor.", no_args_is_help=True)
app.add_typer(operators_app, name="operators")
pii_app = typer.Typer(help="Read a customer's PII (second factor required).", no_args_is_help=True)
app.add_typer(pii_app, name="pii")

Operator = Annotated[str | None, typer.Option("--operator", envvar="PAYLAKE_OPERATOR",
                                              help="Enrolled operator approving this command.")]
Totp = Annotated[str | None, typer.Option("--totp", help="That operator's current TOTP code.")]


@keys_app.command("status")
@expected_failures
@needs("postgres")
def keys_status_command() -> None:
    """Every data key: version, state, the master key that wraps it, ages, what it protects."""
    import datetime as dt

    from rich.table import Table

    from paylake.security import keys
    from paylake.settings import load_settings

    settings = load_settings()
    now = dt.datetime.now(dt.UTC)
    table = Table(title="data keys (wrapped by the KMS master key of their store)")
    for column in ("key", "version", "state", "master key", "age", "last wrapped", "protects"):
        table.add_column(column, overflow="fold")
    for row in keys.status(settings):
        table.add_row(row.name, str(row.version), row.state, row.master[:8], f"{(now - row.created).days} d",
                      f"{(now - row.wrapped_at).days} d ago", row.protects)
    console.print(table)
    live, destroyed = keys.subject_counts(settings)
    console.print(f"per-customer keys: {live} live, {destroyed} destroyed (crypto-shredded)", highlight=False)


@keys_app.command("rotate")
@expected_failures
@needs("postgres", "kms")
def keys_rotate_command(
    operator: Operator = None, code: Totp = None,
    store: Annotated[list[str] | None, typer.Option("--store", help="Only these stores' master keys.")] = None,
    table: Annotated[list[str] | None, typer.Option("--table", help="With --reencrypt: only these data keys "
                                                    "(store/table, e.g. postgres/oltp.customer).")] = None,
    reencrypt: Annotated[bool, typer.Option(help="Also rotate the data keys and re-seal what they protect, in "
                                            "batches (resumable: re-run after a failure).")] = False,
) -> None:
    """Rotate the KMS master keys and re-wrap the data keys (no data rewritten); --reencrypt rotates data keys."""
    from paylake.security import keys, operators
    from paylake.settings import load_settings

    settings = load_settings()
    who = operators.require(settings, operator, code, action="key rotation")
    names = list(table or [])
    unknown = [n for n in names if n not in keys.DATA_KEYS]
    if unknown:
        raise keys.KeyringError(f"unknown data key(s) {', '.join(unknown)}: choose from {', '.join(keys.DATA_KEYS)}")
    stores = list(store or sorted({keys.DATA_KEYS[n].store for n in names}) or keys.STORES)
    bad = [s for s in stores if s not in keys.STORES]
    if bad:
        raise keys.KeyringError(f"unknown store(s) {', '.join(bad)}: choose from {', '.join(keys.STORES)}")
    with console.status("rotating") as status:
        for line in keys.rotate_master(settings, stores, actor=who, progress=status.update):
            console.print(line, highlight=False)
        if reencrypt:
            chosen = names or [n for n, s in keys.DATA_KEYS.items() if s.purpose == "encrypt" and s.store in stores]
            for line in keys.reencrypt(settings, chosen, actor=who, progress=status.update):
                console.print(line, highlight=False)


@keys_app.command("destroy-customer")
@expected_failures
@needs("postgres", "kms")
def keys_destroy_customer_command(
    customer: Annotated[int, typer.Argument(help="CustomerID whose key to destroy.")],
    reason: Annotated[str, typer.Option(help="Why (recorded): e.g. the erasure request's reference.")],
    operator: Operator = None, code: Totp = None,
) -> None:
    """Crypto-shred one customer: every copy of their PII (PostgreSQL, MongoDB, lake, backups) becomes unreadable."""
    from paylake.security import keys, operators
    from paylake.settings import load_settings

    settings = load_settings()
    who = operators.require(settings, operator, code, action="destroying a customer's key")
    with keys.Keyring(settings) as ring:
        done = ring.destroy_subject(customer, actor=who, reason=reason)
    console.print(f"customer {customer}: key destroyed" if done else f"customer {customer}: no live key (already "
                  "destroyed or unknown)", highlight=False)


@operators_app.command("enroll")
@expected_failures
@needs("postgres", "kms")
def operators_enroll_command(
    name: Annotated[str, typer.Argument(help="Operator name (lower case).")],
    replace: Annotated[bool, typer.Option(help="Issue a new secret to an enrolled operator.")] = False,
) -> None:
    """Enrol an operator: prints the TOTP secret once (add it to an authenticator app); stored sealed."""
    from paylake.security import operators
    from paylake.settings import load_settings

    enrolment = operators.enroll(load_settings(), name, replace=replace)
    console.print(f"operator {enrolment.name} enrolled; add this to an authenticator app now (shown once):",
                  highlight=False)
    print(enrolment.secret)
    print(enrolment.uri)


@operators_app.command("list")
@expected_failures
@needs("postgres")
def operators_list_command() -> None:
    """Enrolled operators (never their secrets)."""
    from paylake.security import operators
    from paylake.settings import load_settings

    for name, enrolled, disabled, _ in operators.listing(load_settings()):
        console.print(f"{name}\tenrolled {enrolled:%Y-%m-%d %H:%M}" + (" (disabled)" if disabled else ""),
                      highlight=False)


@pii_app.command("show")
@expected_failures
@needs("postgres", "kms")
def pii_show_command(
    customer: Annotated[list[int], typer.Argument(help="CustomerIDs.")],
    operator: Operator = None, code: Totp = None,
) -> None:
    """Decrypt customers' email, name and street (recorded in the key log; needs an operator's TOTP)."""
    import json

    from paylake.security import keys, operators
    from paylake.settings import load_settings

    settings = load_settings()
    who = operators.require(settings, operator, code, action="decrypting PII")
    revealed = keys.reveal_customers(settings, customer)
    with keys.Keyring(settings) as ring:
        ring.log(who, "pii.reveal", keys.CUSTOMER_KEY, {"customers": sorted(revealed)})
    for customer_id, values in revealed.items():
        print(json.dumps({"customer_id": customer_id, **values}))


# --------------------------------------------------------------------------- access
access_app = typer.Typer(help="Access control across the stores, from one policy file (security/policy.yaml).",
                         no_args_is_help=True)
app.add_typer(access_app, name="access")
PolicyFile = Annotated[str | None, typer.Option("--policy", help="The policy file (default: security/policy.yaml).")]
StoreNames = Annotated[list[str] | None, typer.Option("--store", help="Only these stores (postgres, mongo, online, "
                                                      "kms, lake, serve, mlflow).")]


def _stores(chosen: list[str] | None) -> tuple[str, ...]:
    from paylake.security import access

    unknown = sorted(set(chosen or []) - set(access.STORES))
    if unknown:
        from paylake.errors import ConfigError

        raise ConfigError(f"unknown store(s) {', '.join(unknown)}: choose from {', '.join(access.STORES)}")
    return tuple(chosen or access.STORES)


@access_app.command("audit")
@expected_failures
@needs("postgres", "mongo", "online", "kms", "mlflow")
def access_audit_command(policy: PolicyFile = None, store: StoreNames = None) -> None:
    """Compare the stores' grants with the policy: drift, expired grants still present, over-privileged roles.
    Exits 1 when anything but unmanaged principals is found."""
    from pathlib import Path

    from rich.table import Table

    from paylake.security import access
    from paylake.settings import load_settings

    declared = access.load_policy(Path(policy) if policy else None)
    findings = access.audit(load_settings(), declared, stores=_stores(store))
    table = Table(title="access audit")
    for column in ("store", "principal", "finding", "detail"):
        table.add_column(column, overflow="fold")
    for f in sorted(findings, key=lambda f: (not f.is_problem, f.store, f.principal)):
        table.add_row(f.store, f.principal, f.kind, f.detail)
    console.print(table)
    problems = [f for f in findings if f.is_problem]
    console.print(f"{len(problems)} problem(s), {len(findings) - len(problems)} unmanaged principal(s)"
                  + ("" if not problems else ": run 'paylake access apply'"), highlight=False)
    if problems:
        raise typer.Exit(1)


@access_app.command("apply")
@expected_failures
@needs("postgres", "mongo", "online", "kms", "mlflow")
def access_apply_command(policy: PolicyFile = None, store: StoreNames = None) -> None:
    """Make every store match the policy; expired contractor grants are revoked and reported."""
    from pathlib import Path

    from paylake.security import access
    from paylake.settings import load_settings

    declared = access.load_policy(Path(policy) if policy else None)
    changes, created = access.apply(load_settings(), declared, stores=_stores(store))
    for change in changes:
        console.print(f"{change.store}\t{change.principal}\t{change.action}", highlight=False)
    expired = [c for c in changes if "expired" in c.action]
    console.print(f"{len(changes)} change(s); {len(expired)} expired grant(s) revoked" if changes
                  else "the stores match the policy: nothing to change", highlight=False)
    for name, secret in created.items():  # shown once, for the operator's secret store
        console.print(f"new credentials of {name} (store them now, they are not kept): {secret}", highlight=False)


@operators_app.command("token")
@expected_failures
@needs("postgres", "kms")
def operators_token_command(operator: Operator = None, code: Totp = None) -> None:
    """An ID token for the scoring API's admin calls (header X-Paylake-Id-Token), valid five minutes: the local
    stack's issuer signs it once the operator's TOTP code checks (production: the identity provider's login)."""
    from paylake.security import operators, sso
    from paylake.settings import load_settings

    settings = load_settings()
    who = operators.require(settings, operator, code, action="an admin token")
    print(sso.mint_local(settings, who))


@access_app.command("snowflake-sql")
@expected_failures
def access_snowflake_sql_command(policy: PolicyFile = None) -> None:
    """The policy's Snowflake roles, grants and users as SQL, for the account administrator to run (the local
    warehouse server parses no GRANT)."""
    from pathlib import Path

    from paylake.security import access
    from paylake.settings import load_settings

    settings = load_settings()
    declared = access.load_policy(Path(policy) if policy else None)
    for statement in access.snowflake_statements(declared, settings.snowflake_database, settings.snowflake_schema):
        print(statement)


@access_app.command("aws-bucket")
@expected_failures
def access_aws_bucket_command(
    account: Annotated[str, typer.Option(help="The AWS account id of the roles paylake-<role>.")],
    kms_key_arn: Annotated[str, typer.Option(help="The lake's master key (alias/paylake/lake) ARN.")],
    bucket: Annotated[str, typer.Option(help="The lake bucket.")] = "paylake-lake",
    policy: PolicyFile = None,
) -> None:
    """The lake bucket's policy (the policy file's prefix rules per role, TLS only, the lake's KMS key only) and
    default encryption (SSE-KMS), as JSON for 'aws s3api put-bucket-policy' / 'put-bucket-encryption'."""
    import json
    from pathlib import Path

    from paylake.security import access

    declared = access.load_policy(Path(policy) if policy else None)
    print(json.dumps(access.aws_bucket_documents(declared, bucket, account, kms_key_arn), indent=2))
