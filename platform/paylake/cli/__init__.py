"""The ``paylake`` command line, one module per command group (stack, data, ml, security, serve). Commands parse
arguments and call the library."""

from __future__ import annotations

import sys

from paylake.cli import cluster, data, ml, security, serve, stack  # noqa: F401 - importing a group registers its commands
from paylake.cli.base import _parse_ports, app

__all__ = ["app", "main", "_parse_ports"]


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
