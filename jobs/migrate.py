"""Ray job: apply the source systems' migrations (PostgreSQL + MongoDB)."""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["db", "migrate", *sys.argv[1:]])
