"""The stack's Ray head options (pure logic: the environment and the command it would start with)."""

from __future__ import annotations

import pytest

from paylake.errors import StackError
from paylake.stack import LocalStack
from paylake.stack.services import RayHead, StackContext

PORTS = {"ray_dashboard": 8265, "ray_gcs": 6380, "ray_agent": 52365, "serve": 8000, "haproxy_stats": 18404,
         "haproxy_metrics": 19101}


def context(tmp_path, ingress: str) -> StackContext:
    return StackContext(tmp_path, dict(PORTS), {}, serve_ingress=ingress)


def test_haproxy_ingress_gets_its_own_files_and_ports(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    head = RayHead()
    env = head.env(context(tmp_path, "haproxy"))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404" and env["RAY_SERVE_HAPROXY_METRICS_PORT"] == "19101"
    folder = str(head.haproxy_dir(context(tmp_path, "haproxy")))
    # Serve adds a 56-character node-id folder; HAProxy refuses a socket path over 97 characters
    socket = env["RAY_SERVE_HAPROXY_SOCKET_PATH"]
    assert socket.startswith(folder) and len(socket) + 57 <= 97
    assert all(env[k].startswith(folder) for k in ("RAY_SERVE_HAPROXY_CONFIG_FILE_LOC",
                                                    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE"))


def test_haproxy_is_the_default_and_the_callers_shell_does_not_decide(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    env = RayHead().env(context(tmp_path, "proxy"))
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in env
    assert LocalStack(tmp_path).context().serve_ingress == "haproxy"
    assert StackContext(tmp_path, dict(PORTS), {}).serve_ingress == "haproxy"


def test_an_unknown_ingress_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(StackError, match="unknown Serve ingress 'nginx'.*proxy, haproxy"):
        RayHead().check_prerequisites(context(tmp_path, "nginx"))
