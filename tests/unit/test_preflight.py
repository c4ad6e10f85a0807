"""Commands against a stopped or half-stopped stack: one line naming what is down, within seconds (real sockets:
ports nobody listens on, and one that a test server holds open)."""

import socket
import time

import pytest
from typer.testing import CliRunner

from paylake.cli import app

COMMANDS = [  # one per command group, and the ones that used to hang or print tracebacks
    (["extract"], {"postgres", "mongo", "s3", "ray"}),
    (["cdc"], {"postgres", "s3"}),
    (["build-star"], {"s3", "ray"}),
    (["load"], {"s3", "snowflake"}),
    (["query", "monthly_tax_retail_france"], {"snowflake"}),
    (["features"], {"s3", "ray"}),
    (["pipeline"], {"postgres", "mongo", "s3", "snowflake", "mlflow", "ray"}),
    (["runs"], {"s3"}),
    (["db", "migrate"], {"postgres"}),
    (["train", "fraud"], {"s3", "mlflow", "ray"}),
    (["train", "logs"], {"s3", "mlflow", "ray"}),
    (["drift"], {"s3", "mlflow", "ray"}),
    (["monitor", "logs"], {"postgres", "s3", "snowflake", "mlflow", "ray"}),
    (["serve", "up"], {"mlflow", "ray"}),
    (["serve", "status"], {"ray"}),
    (["serve", "down"], {"ray"}),
    (["smoke"], {"postgres", "mongo", "s3", "snowflake", "mlflow", "ray"}),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stopped_stack(tmp_path, monkeypatch):
    """A stack file whose servers are all stopped, except the online store (a socket held open): half-stopped."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stack = tmp_path / ".paylake" / "stack.env"
    stack.parent.mkdir()
    stack.write_text("\n".join([
        f"PAYLAKE_POSTGRES_DSN=postgresql://paylake_admin:pw-1234@127.0.0.1:{closed_port()}/paylake",
        f"PAYLAKE_MONGO_URI=mongodb://127.0.0.1:{closed_port()}/",
        f"PAYLAKE_ONLINE_STORE_URL=redis://:pw-5678@127.0.0.1:{listener.getsockname()[1]}/0",
        "PAYLAKE_LAKE_ROOT=s3://paylake-lake/lake",
        f"PAYLAKE_S3_ENDPOINT_URL=http://127.0.0.1:{closed_port()}",
        "PAYLAKE_SNOWFLAKE_HOST=127.0.0.1", f"PAYLAKE_SNOWFLAKE_PORT={closed_port()}",
        f"PAYLAKE_MLFLOW_TRACKING_URI=http://127.0.0.1:{closed_port()}",
        f"PAYLAKE_RAY_ADDRESS=127.0.0.1:{closed_port()}", ""]))
    for name in ("PAYLAKE_POSTGRES_DSN", "PAYLAKE_MONGO_URI", "PAYLAKE_LAKE_ROOT", "PAYLAKE_RAY_ADDRESS",
                 "PAYLAKE_ONLINE_STORE_URL", "PAYLAKE_ONLINE_STORE_PREFIX", "PAYLAKE_SNOWFLAKE_DATABASE",
                 "PAYLAKE_MONGO_DATABASE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYLAKE_STACK_FILE", str(stack))
    yield stack
    listener.close()


@pytest.mark.parametrize(("args", "down"), COMMANDS, ids=[" ".join(c[0]) for c in COMMANDS])
def test_a_command_names_the_services_down_and_what_to_run(stopped_stack, args, down):
    begin = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - begin
    assert result.exit_code == 1, result.output
    assert elapsed < 5, f"{args} took {elapsed:.1f} s"
    output = " ".join(result.output.split())
    assert output.startswith("error: ") and "Traceback" not in output
    assert output.endswith("not answering: run 'paylake stack up' (or 'paylake stack status')") or \
        output.endswith("not answering: run 'paylake stack up'"), output
    named = {s for s in ("postgres", "mongo", "online", "s3", "snowflake", "mlflow", "ray") if f"{s} (127" in output}
    assert named == down  # exactly the stopped ones it needs: the online store answers
    assert "pw-1234" not in output


def test_outside_a_local_stack_the_setting_to_check_is_named(tmp_path, monkeypatch):
    from paylake.preflight import ServiceDown, require
    from paylake.settings import Settings

    monkeypatch.delenv("PAYLAKE_STACK_FILE", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings(postgres_dsn=f"postgresql://u:p@127.0.0.1:{closed_port()}/db", ray_address="auto")
    with pytest.raises(ServiceDown, match=r"postgres \(127.0.0.1:\d+\) not answering: check PAYLAKE_POSTGRES_DSN"):
        require(settings, ("postgres", "ray"))  # Ray 'auto': nothing to probe
