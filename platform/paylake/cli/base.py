"""What every command group shares: the app, the groups it holds, expected failures in one line."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from paylake.errors import PaylakeError
from paylake.report import console

app = typer.Typer(help="paylake: the payments data platform on Ray.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The embedded local stack: real servers on loopback.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
db_app = typer.Typer(help="The source systems' schemas (PostgreSQL OLTP, MongoDB documents).", no_args_is_help=True)
app.add_typer(db_app, name="db")

StateDir = Annotated[Path | None, typer.Option("--state-dir", help="Where the stack keeps its state "
                                                  "(default: ./.paylake).")]


def expected_failures(command):
    """Print a PaylakeError as one line and exit 1; keep tracebacks for bugs."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except PaylakeError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def needs(*services: str):
    """The services a command needs (``paylake.preflight.SERVICES``), checked before it connects to any:
    one line naming what is down and what to run, within a few seconds."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            from paylake.preflight import require
            from paylake.settings import load_settings

            require(load_settings(), services)
            return command(*args, **kwargs)

        return wrapper

    return decorate


def _parse_ports(values: list[str] | None) -> dict[str, int]:
    ports = {}
    for value in values or []:
        name, _, number = value.partition("=")
        if not number.isdigit():
            raise PaylakeError(f"--port {value!r} is not NAME=NUMBER (e.g. --port postgres=5433)")
        ports[name] = int(number)
    return ports
