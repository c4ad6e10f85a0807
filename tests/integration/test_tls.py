"""TLS on the real stack: servers present the stack CA's certificate, clients verify it, plain TCP is refused
where TLS is required."""

from __future__ import annotations

import socket
import ssl

import boto3
import psycopg
import pytest
from botocore.exceptions import SSLError

pytestmark = pytest.mark.stack


def _dsn(settings, **params) -> str:
    from urllib.parse import urlencode, urlsplit, urlunsplit

    return urlunsplit(urlsplit(settings.postgres_dsn.get_secret_value())._replace(query=urlencode(params)))


def test_postgres_verifies_the_server_and_refuses_plain_tcp(settings, tmp_path):
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        assert conn.execute("select ssl, version from pg_stat_ssl where pid = pg_backend_pid()").fetchone()[0]
        assert "sslmode=verify-full" in settings.postgres_dsn.get_secret_value()
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(_dsn(settings, sslmode="disable"), connect_timeout=5)
    other = tmp_path / "other-ca.pem"  # a CA that did not sign the server's certificate
    from paylake.security import tls

    files, _ = tls.ensure(tmp_path / "other")
    other.write_bytes(files.ca_cert.read_bytes())
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(_dsn(settings, sslmode="verify-full", sslrootcert=str(other)), connect_timeout=5)


def test_the_kms_speaks_only_tls_with_the_stack_certificate(settings):
    from urllib.parse import urlsplit

    where = urlsplit(settings.kms_endpoint_url)
    context = ssl.create_default_context(cafile=settings.tls_ca_file)
    with socket.create_connection((where.hostname, where.port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=where.hostname) as wrapped:
        assert wrapped.version() in ("TLSv1.2", "TLSv1.3")
    with socket.create_connection((where.hostname, where.port), timeout=5) as raw:  # plain HTTP gets no answer
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            answer = raw.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/")
    client = boto3.client("kms", endpoint_url=settings.kms_endpoint_url, region_name="us-east-1",
                          verify=True, aws_access_key_id="x", aws_secret_access_key="y")
    with pytest.raises(SSLError):  # the system's CAs do not know the stack's
        client.list_keys()


def _plain(url: str) -> str:
    return url.replace("https://", "http://", 1)


@pytest.mark.parametrize("service", ["s3", "mlflow", "snowflake", "kms", "mongo"])
def test_plain_tcp_is_refused(settings, service):
    import urllib.request

    import pymongo

    if service == "mongo":
        plain = settings.mongo_uri.get_secret_value().split("?")[0]
        with pytest.raises(pymongo.errors.PyMongoError), pymongo.MongoClient(plain, serverSelectionTimeoutMS=2000) \
                as client:
            client.admin.command("ping")
        return
    url = {"s3": settings.s3_endpoint_url, "mlflow": settings.mlflow_tracking_uri, "kms": settings.kms_endpoint_url,
           "snowflake": f"https://{settings.snowflake_host}:{settings.snowflake_port}"}[service]
    assert url.startswith("https://")
    with pytest.raises(OSError):  # the TLS server closes a plain HTTP request without an answer
        urllib.request.urlopen(_plain(url) + "/", timeout=5)  # noqa: S310 - loopback


def test_clients_refuse_a_server_their_ca_did_not_sign(settings, tmp_path):
    import pymongo

    from paylake.security import tls
    from paylake.stores import lake

    files, _ = tls.ensure(tmp_path / "other")
    wrong = settings.model_copy(update={"tls_ca_file": str(files.ca_cert)})
    with pytest.raises(SSLError):
        lake.s3_client(wrong).list_buckets()
    with pytest.raises(OSError, match="certificate|SSL|ssl"):
        lake.filesystem(wrong).get_file_info("paylake-lake/lake")
    uri = settings.mongo_uri.get_secret_value().split("?")[0] + f"?tls=true&tlsCAFile={files.ca_cert}"
    with pytest.raises(pymongo.errors.ServerSelectionTimeoutError, match="certificate verify failed"), \
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        client.admin.command("ping")
    with pymongo.MongoClient(settings.mongo_uri.get_secret_value(), serverSelectionTimeoutMS=5000) as client:
        assert client.admin.command("ping")["ok"] == 1


def test_serve_speaks_https_with_the_stack_certificate(settings):
    """What 'paylake serve up' does for an https URL (the stack's choice with --serve-ingress proxy), on a Ray of
    its own: the proxy answers over TLS verified by the stack's CA; plain HTTP gets no answer."""
    import json
    import os
    import subprocess
    import sys
    import urllib.request
    from pathlib import Path

    import httpx

    from paylake.serving.deploy import http_options

    job = Path(__file__).resolve().parents[1] / "helpers" / "serve_https_job.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PAYLAKE_SERVING__TLS_CERTFILE"] = str(Path(settings.tls_ca_file).with_name("server.pem"))
    env["PAYLAKE_SERVING__TLS_KEYFILE"] = str(Path(settings.tls_ca_file).with_name("server.key"))
    proc = subprocess.Popen([sys.executable, str(job)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line, "the Serve process did not start"
        port = json.loads(line)["port"]
        answer = httpx.get(f"https://127.0.0.1:{port}/", verify=ssl.create_default_context(cafile=settings.tls_ca_file),
                           timeout=30)
        assert answer.status_code == 200 and answer.text == "hello over TLS"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)  # noqa: S310 - loopback
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    plain = settings.model_copy(update={"serving": settings.serving.model_copy(update={
        "url": "https://127.0.0.1:1", "tls_certfile": None, "tls_keyfile": None})})
    with pytest.raises(Exception, match="TLS_CERTFILE"):
        http_options(plain)
