"""Ray job: apply PostgreSQL changes (logical decoding) to the bronze tables.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/cdc.py [--follow] [--slot S]
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["cdc", *sys.argv[1:]])
