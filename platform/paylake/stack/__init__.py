"""The embedded local stack: real servers on loopback, state under ``.paylake/``.

``up`` is idempotent (running servers are reused), ``status`` reports each
service's URL and health, ``down`` stops what ``up`` started and nothing else.
"""

from __future__ import annotations

import json
import secrets as secrets_module
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from paylake.errors import StackError
from paylake.settings import STACK_DIR_NAME, STACK_FILE_NAME
from paylake.stack import process
from paylake.stack.services import (
    ALL_SERVICES,
    DEFAULT_SERVE_INGRESS,
    HOST,
    LAKE_BUCKET,
    S3,
    SERVICES,
    Kms,
    Mlflow,
    Mongo,
    OnlineStore,
    Postgres,
    RayHead,
    Service,
    StackContext,
)

__all__ = ["LocalStack", "ServiceState", "default_state_dir", "SERVICES"]


@dataclass(frozen=True)
class ServiceState:
    name: str
    url: str
    pid: int | None
    state: str  # "started" | "reused" | "healthy" | "unhealthy" | "stopped"


def default_state_dir() -> Path:
    return Path.cwd() / STACK_DIR_NAME


class LocalStack:
    """The local stack rooted at ``state_dir``."""

    def __init__(self, state_dir: Path | None = None, *, ray_cpus: int = 2) -> None:
        self.state_dir = (state_dir or default_state_dir()).resolve()
        self.ray_cpus = ray_cpus

    # ------------------------------------------------------------------ state files
    @property
    def _state_file(self) -> Path:
        return self.state_dir / "stack.json"

    @property
    def stack_file(self) -> Path:
        return self.state_dir / STACK_FILE_NAME

    def _load_state(self) -> dict:
        if self._state_file.is_file():
            return json.loads(self._state_file.read_text())
        return {"ports": {}, "secrets": {}}

    def _save_state(self, state: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        _write_private(self._state_file, json.dumps(state, indent=2))

    def context(self, state: dict | None = None) -> StackContext:
        state = state or self._load_state()
        return StackContext(self.state_dir, dict(state["ports"]), dict(state["secrets"]), ray_cpus=self.ray_cpus,
                            serve_ingress=state.get("serve_ingress", DEFAULT_SERVE_INGRESS))

    # ------------------------------------------------------------------ up
    def up(self, services: list[str] | None = None, port_overrides: dict[str, int] | None = None,
           progress=None, serve_ingress: str | None = None) -> list[ServiceState]:
        """Start what is not running. ``serve_ingress`` ("proxy" or "haproxy"): Ray Serve's HTTP ingress on
        the Ray head; remembered by the stack (None: keep the last choice, at first "haproxy")."""
        chosen = _select(services)
        state = self._load_state()
        _ensure_secrets(state["secrets"])
        ctx = self.context(state)

        running = {s.name for s in chosen if self._running(s, ctx)}
        if serve_ingress is not None and serve_ingress != ctx.serve_ingress:
            if "ray" in running:
                raise StackError(f"ray: the head runs with Serve ingress {ctx.serve_ingress!r}: stop it first "
                                 f"('paylake stack down -s ray'), then 'paylake stack up --serve-ingress "
                                 f"{serve_ingress}'")
            ctx.serve_ingress = state["serve_ingress"] = serve_ingress
        to_start = [s for s in chosen if s.name not in running]

        # Ports: overrides, then what this stack used before, then defaults, then free ones.
        for service in to_start:
            for port_name in service.port_names:
                if port_overrides and port_name in port_overrides:
                    ctx.ports[port_name] = port_overrides[port_name]
                elif port_name not in ctx.ports:
                    ctx.ports[port_name] = service.default_ports.get(port_name) or process.free_port(
                        avoid=set(ctx.ports.values()))
        for service in to_start:  # check everything before starting anything
            for port_name in service.port_names:
                port = ctx.ports[port_name]
                if not process.port_is_free(port):
                    raise StackError(
                        f"{service.name}: port {HOST}:{port} ({port_name}) is already in use by another process: "
                        f"stop that process or choose another port with 'paylake stack up --port {port_name}=N'"
                    )
            service.check_prerequisites(ctx)

        from paylake.security import tls

        tls.ensure(ctx.tls.folder)
        state["ports"] = ctx.ports
        self._save_state(state)
        self._write_stack_file(ctx)

        for service in to_start:
            if progress:
                progress(f"preparing {service.name}")
            service.prepare(ctx)
        started = {}
        for service in to_start:
            if progress:
                progress(f"starting {service.name}")
            started[service.name] = process.spawn(
                service.command(ctx), log_file=ctx.log_file(service.name), pidfile=ctx.pidfile(service.name),
                env=service.env(ctx), cwd=self.state_dir, user=service.run_as,
            )

        def await_ready(service: Service) -> None:
            proc = started[service.name]
            ok = process.wait_until(lambda: service.ready(ctx), deadline_s=service.start_deadline_s,
                                    alive=lambda: proc.poll() is None)
            if not ok:
                code = proc.poll()
                cause = f"exited with code {code}" if code is not None else \
                    f"did not answer within {service.start_deadline_s:.0f} s"
                raise StackError(f"{service.name}: server {cause} at start: read {ctx.log_file(service.name)}")

        errors = []
        with ThreadPoolExecutor(max_workers=max(1, len(to_start))) as pool:
            for future in [pool.submit(await_ready, s) for s in to_start]:
                try:
                    future.result()
                except StackError as exc:
                    errors.append(exc)
        if errors:  # leave nothing behind: stop what this call started
            for service in reversed(to_start):
                proc = started[service.name]
                if proc.poll() is None:
                    process.terminate(proc.pid, sig=signal.SIGINT if service.name == "postgres" else signal.SIGTERM)
                process.kill_all(service.extra_pids(ctx))
                ctx.pidfile(service.name).unlink(missing_ok=True)
            raise errors[0]
        for service in chosen:  # idempotent set-up, also for reused servers
            try:
                service.after_start(ctx)
            except Exception as exc:  # noqa: BLE001 - reported with the log to read
                raise StackError(f"{service.name}: set-up after start failed ({exc}): "
                                 f"read {ctx.log_file(service.name)}") from exc
        return [ServiceState(s.name, s.url(ctx), process.read_pid(ctx.pidfile(s.name)),
                             "reused" if s.name in running else "started") for s in chosen]

    def _running(self, service: Service, ctx: StackContext) -> bool:
        pid = process.read_pid(ctx.pidfile(service.name))
        if pid is None or not process.pid_alive(pid):
            return False
        if not all(p in ctx.ports for p in service.port_names if p not in service.optional_ports):
            return False
        try:
            return bool(service.ready(ctx))
        except Exception:  # noqa: BLE001
            return False

    # ------------------------------------------------------------------ status / down
    def status(self) -> list[ServiceState]:
        ctx = self.context()
        result = []
        for service in ALL_SERVICES:
            pid = process.read_pid(ctx.pidfile(service.name))
            if pid is None or not process.pid_alive(pid) or not all(p in ctx.ports for p in service.port_names):
                result.append(ServiceState(service.name, service.url(ctx) if all(
                    p in ctx.ports for p in service.port_names) else "-", None, "stopped"))
                continue
            healthy = self._running(service, ctx)
            result.append(ServiceState(service.name, service.url(ctx), pid, "healthy" if healthy else "unhealthy"))
        return result

    def down(self, services: list[str] | None = None) -> list[ServiceState]:
        """Stop this stack's servers (or only ``services``); their data stays on disk. The servers are
        independent once nothing calls them: they are stopped side by side (each within its own grace
        period) rather than one after the other."""
        from concurrent.futures import ThreadPoolExecutor

        ctx = self.context()

        def stop(service: Service) -> ServiceState | None:
            pidfile = ctx.pidfile(service.name)
            pid = process.read_pid(pidfile)
            state = None
            if pid is not None and process.pid_alive(pid):
                sig = signal.SIGINT if service.name == "postgres" else signal.SIGTERM  # fast shutdown
                process.terminate(pid, sig=sig)
                process.kill_all(service.extra_pids(ctx) if all(p in ctx.ports for p in service.port_names)
                                 else [])
                state = ServiceState(service.name, "-", pid, "stopped")
            elif service.name == "ray" and "ray_gcs" in ctx.ports:
                process.kill_all(service.extra_pids(ctx))
            pidfile.unlink(missing_ok=True)
            return state

        chosen = list(reversed(_select(services)))
        with ThreadPoolExecutor(max_workers=len(chosen) or 1) as pool:
            states = list(pool.map(stop, chosen))
        return [s for s in states if s is not None]

    def pids(self) -> list[int]:
        """Every live process of this stack (for tests and diagnostics)."""
        ctx = self.context()
        found = []
        for service in ALL_SERVICES:
            pid = process.read_pid(ctx.pidfile(service.name))
            if pid is not None and process.pid_alive(pid):
                found.append(pid)
            if all(p in ctx.ports for p in service.port_names):
                found.extend(service.extra_pids(ctx))
        found.extend(process.processes_matching(str(self.state_dir)))
        return sorted(set(found))

    # ------------------------------------------------------------------ settings file
    def _write_stack_file(self, ctx: StackContext) -> None:
        sec = ctx.secrets
        values = {}  # PII keys are not here: data keys are wrapped by the KMS (paylake.security.keys)
        if "postgres" in ctx.ports:
            values["PAYLAKE_POSTGRES_DSN"] = Postgres().app_dsn(ctx)
        if "mongo" in ctx.ports:
            values["PAYLAKE_MONGO_URI"] = Mongo().uri(ctx)
        if "online" in ctx.ports:
            values["PAYLAKE_ONLINE_STORE_URL"] = OnlineStore().uri(ctx)
        if "s3" in ctx.ports:
            values.update({
                "PAYLAKE_LAKE_ROOT": f"s3://{LAKE_BUCKET}/lake",
                "PAYLAKE_S3_ENDPOINT_URL": S3().url(ctx),
                "PAYLAKE_S3_ACCESS_KEY_ID": sec["s3_access_key_id"],
                "PAYLAKE_S3_SECRET_ACCESS_KEY": sec["s3_secret_access_key"],
            })
        if "snowflake" in ctx.ports:
            values.update({
                "PAYLAKE_SNOWFLAKE_HOST": HOST,
                "PAYLAKE_SNOWFLAKE_PORT": str(ctx.ports["snowflake"]),
                "PAYLAKE_SNOWFLAKE_PROTOCOL": "https",
                "PAYLAKE_SNOWFLAKE_PASSWORD": sec["snowflake_password"],
            })
        if "mlflow" in ctx.ports:
            values.update({"PAYLAKE_MLFLOW_TRACKING_URI": Mlflow().url(ctx), "PAYLAKE_MLFLOW_USERNAME": Mlflow.USER,
                           "PAYLAKE_MLFLOW_PASSWORD": sec["mlflow_pipeline_password"]})
        if "kms" in ctx.ports:
            values.update({
                "PAYLAKE_KMS_ENDPOINT_URL": Kms().url(ctx),
                "PAYLAKE_KMS_ACCESS_KEY_ID": sec["kms_pipeline_access_key_id"],
                "PAYLAKE_KMS_SECRET_ACCESS_KEY": sec["kms_pipeline_secret"],
            })
        values["PAYLAKE_TLS_CA_FILE"] = str(ctx.tls.ca_cert)
        from paylake.security import sso

        values.update({"PAYLAKE_SERVING__OIDC_ISSUER": sso.LOCAL_ISSUER,  # the admin scope's SSO (its own issuer)
                       "PAYLAKE_SERVING__OIDC_JWKS_FILE": str(sso.ensure_local_issuer(ctx.tls.folder))})
        if "ray_gcs" in ctx.ports:
            values["PAYLAKE_RAY_ADDRESS"] = RayHead().address(ctx)
            values["PAYLAKE_RAY_DASHBOARD_URL"] = RayHead().url(ctx)
        if "serve" in ctx.ports:
            if ctx.serve_ingress == "proxy":  # Serve's Python proxy speaks HTTPS with the stack's certificate
                values.update({"PAYLAKE_SERVING__URL": f"https://{HOST}:{ctx.ports['serve']}",
                               "PAYLAKE_SERVING__TLS_CERTFILE": str(ctx.tls.server_cert),
                               "PAYLAKE_SERVING__TLS_KEYFILE": str(ctx.tls.server_key)})
            else:  # Serve's generated HAProxy configuration has no TLS bind: plain HTTP on loopback (README)
                values["PAYLAKE_SERVING__URL"] = f"http://{HOST}:{ctx.ports['serve']}"
        body = "# Written by 'paylake stack up'; loaded by paylake.settings. Local secrets: keep private.\n"
        body += "".join(f"{key}={value}\n" for key, value in values.items())
        _write_private(self.stack_file, body)

    def superuser_dsn(self) -> str:
        return Postgres().superuser_dsn(self.context(), "paylake")


def _select(names: list[str] | None) -> list[Service]:
    if not names:
        return list(ALL_SERVICES)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise StackError(f"unknown service(s) {', '.join(unknown)}: choose from {', '.join(SERVICES)}")
    return [s for s in ALL_SERVICES if s.name in names]


def _ensure_secrets(secrets: dict) -> None:
    for key in ("postgres_superuser_password", "postgres_app_password", "s3_secret_access_key",
                "snowflake_password", "online_password", "mongo_pipeline_password",
                "mlflow_pipeline_password", "mlflow_flask_secret"):
        secrets.setdefault(key, secrets_module.token_urlsafe(24))
    secrets.setdefault("s3_access_key_id", "PAYLAKE" + secrets_module.token_hex(6).upper())
    from paylake.stack.services import KMS_PRINCIPALS

    for role in ("developer", "readonly"):  # the lake's other principals (paylake access: prefix rules)
        secrets.setdefault(f"s3_{role}_access_key_id", "PAYLAKE" + secrets_module.token_hex(6).upper())
        secrets.setdefault(f"s3_{role}_secret", secrets_module.token_urlsafe(24))
    for who in KMS_PRINCIPALS:  # the local KMS's principals (AWS: IAM roles; the pipeline's through IRSA)
        secrets.setdefault(f"kms_{who}_access_key_id", "AKIAPL" + secrets_module.token_hex(7).upper())
        secrets.setdefault(f"kms_{who}_secret", secrets_module.token_urlsafe(30))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)

