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
on SIGTERM. Like every local server it listens on loopback only; it does not
check request signatures (nor did moto): production uses S3 with IAM.

    python -m paylake.stack.s3_server --host 127.0.0.1 --port 21000 --data .paylake/s3
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import xml.etree.ElementTree as ET
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path

import localbucket

from paylake.stack.process import server_arguments

_EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'  # md5 of nothing


class LakeS3Handler(localbucket.S3Handler):
    """localbucket's handler with DeleteObjects, and directory markers as no-ops."""

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
    server = LakeS3Server((args.host, args.port), LakeS3Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    logging.getLogger("paylake.s3").warning("localbucket %s serving %s on http://%s:%d", localbucket.__version__,
                                            data, args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
