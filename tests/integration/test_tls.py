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
