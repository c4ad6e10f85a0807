"""The local S3 server of the lake: localbucket, objects as files on disk.

localbucket (PyPI, standard library only) serves path-style S3 over a folder:
``<data>/<bucket>/<key>`` is the object, so the lake survives a restart and is
bounded by the disk, not by RAM as with moto's in-memory server. It gives
delta-rs what commits need: a PUT with ``If-None-Match: *`` fails with 412 when
the object exists (created with a hard link, so two writers cannot both win),
plus ranged GETs, ListObjectsV2 with prefix, delimiter and paging, and
multipart uploads.

This entrypoint adds the one call the lake needs that localbucket lacks,
DeleteObjects (``POST /<bucket>?delete``, used by Delta VACUUM and bulk
clean-ups), accepts directory markers (``key/``, written by pyarrow's
``create_dir``: Ray Train checkpoints) as no-ops, logs only warnings (one INFO line per request would fill the log),
accepts a longer connection backlog for parallel Ray readers, and stops cleanly
on SIGTERM. Like every local server it listens on loopback only, with TLS when
given a certificate (``--certfile/--keyfile``). Every request must be signed
(SigV4) by a principal of ``<data>/.access.json``, whose role's prefix rules
(``paylake access apply``, from security/policy.yaml) decide reads and writes:
the local counterpart of IAM and the bucket policy in production.

    python -m paylake.stack.s3_server --host 127.0.0.1 --port 21000 --data .paylake/s3
"""

from __future__ import annotations

import fnmatch
import json
import logging
import signal
import sys
import threading
import xml.etree.ElementTree as ET
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path

import localbucket

from paylake.stack.process import server_arguments, server_tls_context

_EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'  # md5 of nothing


class AccessRules:
    """Who may call (SigV4 principals) and which prefixes each role reads and writes: ``<data>/.access.json``,
    re-read when it changes (principals written by 'paylake stack up', rules by 'paylake access apply')."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: float | None = None
        self.principals: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        stamp = self.path.stat().st_mtime if self.path.is_file() else None
        if stamp != self._stamp:
            with self._lock:
                loaded = json.loads(self.path.read_text()) if stamp is not None else {}
                self.principals, self.rules, self._stamp = loaded.get("principals", {}), loaded.get("rules", {}), stamp

    def allows(self, role: str, verb: str, target: str, *, listing: bool = False) -> bool:
        patterns = self.rules.get(role, {}).get(verb, [])
        if listing:  # a listing of a prefix reads every key under it: allowed when one pattern covers it whole
            return any(p == "*" or (p.endswith("*") and target.startswith(p[:-1])) for p in patterns)
        return any(fnmatch.fnmatchcase(target, p) for p in patterns)


class LakeS3Handler(localbucket.S3Handler):
    """localbucket's handler with signatures and prefix rules, DeleteObjects, and directory markers as no-ops."""

    access: AccessRules | None = None

    def _dispatch(self, action):
        if self.access is not None:
            denied = self._authorize()
            if denied:
                if int(self.headers.get("Content-Length") or 0) <= 64 * 1024**2:
                    self._read_body()  # drained: the client reads a clean 403, the connection stays usable
                else:
                    self.close_connection = True
                self._send_error(localbucket.S3Error(HTTPStatus.FORBIDDEN, *denied))
                return
        super()._dispatch(action)

    def _authorize(self) -> tuple[str, str] | None:
        """None when the signed caller's role may do this request, else (code, message)."""
        import datetime as dt
        from urllib.parse import parse_qs, unquote, urlsplit

        from paylake.stack.kms_server import verify_signature

        self.access.refresh()
        host = self.headers.get("Host", "")
        role, error = verify_signature(self.command, f"https://{host}{self.path}", dict(self.headers.items()), b"",
                                       self.access.principals, dt.datetime.now(dt.UTC), service="s3")
        if error:
            return "AccessDenied" if error == "MissingAuthenticationToken" else "SignatureDoesNotMatch", \
                "the request is not signed by a known principal"
        url = urlsplit(self.path)
        bucket, _, key = unquote(url.path).lstrip("/").partition("/")
        query = parse_qs(url.query, keep_blank_values=True)
        if not bucket:
            return None  # ListBuckets
        if self.command in ("GET", "HEAD") and not key:
            prefix = query.get("prefix", [""])[0]
            ok = self.access.allows(role, "read", prefix, listing=True) or self.command == "HEAD"
        elif self.command in ("GET", "HEAD"):
            ok = self.access.allows(role, "read", key)
        elif self.command == "POST" and not key:  # DeleteObjects: any key of the bucket
            ok = self.access.allows(role, "write", "", listing=True)
        else:
            ok = self.access.allows(role, "write", key)
        return None if ok else ("AccessDenied", f"role {role} may not {self.command} {bucket}/{key or '(listing)'}")

    # Directory markers (empty objects whose key ends with "/", which pyarrow's S3FileSystem.create_dir
    # writes, e.g. for Ray Train's checkpoints): on a store of files a prefix exists while it holds objects,
    # so a marker's PUT and DELETE succeed without storing anything and a HEAD/GET says it is not an object
    # (clients then list the prefix, as S3 semantics allow).
    def _put(self, bucket: str, key: str):
        if key.endswith("/") and key.strip("/") and not self.query:
            self._read_body()
            self._bucket_dir(bucket)
            self._send(HTTPStatus.OK, headers={"ETag": _EMPTY_ETAG})
            return
        super()._put(bucket, key)

    def _marker_not_found(self, bucket: str, key: str) -> bool:
        if key.endswith("/") and key.strip("/"):
            self._bucket_dir(bucket)
            raise localbucket.S3Error(HTTPStatus.NOT_FOUND, "NoSuchKey", "The specified key does not "
                                      "exist.")
        return False

    def _head_request(self, bucket: str, key: str):
        self._marker_not_found(bucket, key)
        super()._head_request(bucket, key)

    def _get_request(self, bucket: str, key: str):
        self._marker_not_found(bucket, key)
        super()._get_request(bucket, key)

    def _delete_request(self, bucket: str, key: str):
        if key.endswith("/") and key.strip("/") and not self.query:
            self._bucket_dir(bucket)
            self._send(HTTPStatus.NO_CONTENT)
            return
        super()._delete_request(bucket, key)

    def _post_request(self, bucket: str, key: str):
        if bucket and not key and "delete" in self.query:
            self._check_query("DeleteObjects", {"delete"})
            self._delete_objects(bucket, self._read_body())
            return
        super()._post_request(bucket, key)

    def _delete_objects(self, bucket: str, body: bytes) -> None:
        try:
            request = ET.fromstring(body)
        except ET.ParseError:
            raise self._malformed_xml_error() from None
        quiet = (request.findtext("{*}Quiet") or "").strip().lower() == "true"
        bucket_dir = self._bucket_dir(bucket).resolve()
        result = ET.Element("DeleteResult", xmlns=localbucket.S3_NAMESPACE)
        for item in request.findall("{*}Object"):
            key = item.findtext("{*}Key") or ""
            try:
                _remove(self._object_path(bucket, key), bucket_dir)
                if not quiet:
                    localbucket.sub_element(ET.SubElement(result, "Deleted"), "Key", key)
            except localbucket.S3Error as error:
                failed = ET.SubElement(result, "Error")
                for tag, text in (("Key", key), ("Code", error.code), ("Message", error.message)):
                    localbucket.sub_element(failed, tag, text)
        self._send_xml(result)


def _remove(target: Path, bucket_dir: Path) -> None:
    """Delete an object file and the folders it leaves empty (as DeleteObject does)."""
    if not target.is_file():
        return
    target.unlink(missing_ok=True)
    parent = target.parent
    while parent != bucket_dir:
        try:
            parent.rmdir()
        except OSError:
            return
        parent = parent.parent


class LakeS3Server(ThreadingHTTPServer):
    request_queue_size = 128  # parallel readers open many connections at once
    daemon_threads = True


def main(argv: list[str] | None = None) -> int:
    args = server_arguments(__doc__.splitlines()[0], "folder of the buckets", argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")

    data = args.data.resolve()
    data.mkdir(parents=True, exist_ok=True)
    LakeS3Handler.data_root = data
    LakeS3Handler.access = AccessRules(data / ".access.json")
    server = LakeS3Server((args.host, args.port), LakeS3Handler)
    context = server_tls_context(args)
    if context is not None:  # the handshake runs in each request's thread, not in the accepting one
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    logging.getLogger("paylake.s3").warning("localbucket %s serving %s on %s://%s:%d", localbucket.__version__,
                                            data, "https" if context else "http", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
