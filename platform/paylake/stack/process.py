"""Supervision of the local stack's server processes: start detached, record
the pid, wait for readiness with a deadline, stop exactly what was started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# Service ports come from below the kernel's ephemeral range (32768+ on Linux),
# which outgoing connections use, and above Ray's worker ports (10002-19999):
# a port found free there stays free until the server binds it.
SERVICE_PORTS = range(21000, 30000)


def free_port(host: str = "127.0.0.1", avoid: set[int] | None = None) -> int:
    """A free service port (not in ``avoid``), probing from a random start."""
    import random

    start = random.randrange(len(SERVICE_PORTS))
    for i in range(len(SERVICE_PORTS)):
        port = SERVICE_PORTS[(start + i) % len(SERVICE_PORTS)]
        if port not in (avoid or set()) and port_is_free(port, host):
            return port
    raise OSError(f"no free port in {SERVICE_PORTS.start}-{SERVICE_PORTS.stop - 1} on {host}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def spawn(
    command: list[str],
    *,
    log_file: Path,
    pidfile: Path,
    env: dict[str, str],
    cwd: Path,
    user: str | None = None,
) -> subprocess.Popen:
    """Start ``command`` detached in its own session, output to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - commands are built by paylake, not from input
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(cwd),
            start_new_session=True,
            user=user,
            group=user,
            extra_groups=[] if user else None,
        )
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(proc.pid))
    return proc


def wait_until(
    check: Callable[[], bool],
    *,
    deadline_s: float,
    alive: Callable[[], bool] = lambda: True,
    interval_s: float = 0.2,
) -> bool:
    """Poll ``check`` until it returns True, the process dies, or the deadline
    passes. Returns whether ``check`` succeeded."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if check():
                return True
        except Exception:  # noqa: BLE001 - not ready yet is any failure
            pass
        if not alive():
            return False
        time.sleep(interval_s)
    return False


def processes_matching(fragment: str) -> list[int]:
    """Pids whose command line contains ``fragment`` (Linux /proc scan)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if fragment in cmdline and int(entry.name) != os.getpid() and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def terminate(pid: int, *, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> None:
    """Stop the process group led by ``pid`` (falling back to the process),
    escalating to SIGKILL after ``grace_s``."""
    _signal_group(pid, sig)
    if wait_until(lambda: not pid_alive(pid), deadline_s=grace_s, interval_s=0.1):
        _signal_group(pid, signal.SIGKILL)  # stragglers of the group
        return
    _signal_group(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), deadline_s=5, interval_s=0.1)


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        wait_until(lambda p=pid: not pid_alive(p), deadline_s=5, interval_s=0.1)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def server_arguments(description: str, data_help: str, argv: list[str] | None = None):
    """``--host``, ``--port``, ``--data`` of the stack's own server entrypoints."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help=data_help)
    parser.add_argument("--certfile", type=Path, help="TLS: the server's certificate (PEM); plain HTTP without")
    parser.add_argument("--keyfile", type=Path, help="TLS: its private key")
    return parser.parse_args(argv)


def server_tls_context(args):
    """The TLS context of a stack server started with --certfile/--keyfile (None without)."""
    if not args.certfile:
        return None
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.certfile, args.keyfile)
    return context
