"""Ray job: the real-time fraud path (CDC micro-batches → bronze, online store, champion scores, Snowflake).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/stream.py [--seconds N]
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["stream", *sys.argv[1:]])
