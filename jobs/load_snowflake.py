"""Ray job: `paylake load`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/load_snowflake.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["load", *sys.argv[1:]])
