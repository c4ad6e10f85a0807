"""Ray job: extract PostgreSQL and MongoDB into bronze Delta tables.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/extract.py [--full] [--verify]
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["extract", *sys.argv[1:]])
