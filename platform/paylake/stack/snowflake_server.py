"""The local Snowflake server: fakesnow's HTTP server with its databases in files.

``python -m fakesnow -s`` keeps every database in memory (its ``-d`` flag is
ignored in server mode; only a per-session ``FAKESNOW_DB_PATH`` parameter at
login gives that one session database files, each session its own DuckDB). This
entrypoint runs the same fakesnow server application with its *shared* instance
created with ``db_path``: every session sees the same databases, and each
database is a DuckDB file ``<data>/<DATABASE>.db`` that survives a restart.
Databases found in the folder are attached at start, so ``show databases`` and
queries find them before anyone creates them again.

    python -m paylake.stack.snowflake_server --host 127.0.0.1 --port 27010 --data .paylake/snowflake
"""

from __future__ import annotations

import re
import signal
import sys

from paylake.stack.process import server_arguments


def main(argv: list[str] | None = None) -> int:
    args = server_arguments(__doc__.splitlines()[0], "folder of the database files", argv)

    import fakesnow.server
    import uvicorn
    from fakesnow.instance import FakeSnow

    args.data.mkdir(parents=True, exist_ok=True)
    shared = FakeSnow(db_path=args.data)
    for file in sorted(args.data.glob("*.db")):
        if re.fullmatch(r"[A-Z_][A-Z0-9_$]*", file.stem):  # fakesnow names the file after the database
            shared.connect(file.stem).close()  # attaches <DATABASE>.db
    fakesnow.server.shared_fs = shared

    tls = {"ssl_certfile": str(args.certfile), "ssl_keyfile": str(args.keyfile)} if args.certfile else {}
    server = uvicorn.Server(uvicorn.Config(fakesnow.server.app, host=args.host, port=args.port, log_level="info",
                                           **tls))

    def stop(*_) -> None:  # SIGTERM from 'paylake stack down': finish requests, then close the files cleanly
        server.should_exit = True

    signal.signal(signal.SIGTERM, stop)
    server.run()
    shared.duck_conn.execute("checkpoint")
    shared.duck_conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
