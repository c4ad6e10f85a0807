"""Ray job: `paylake train logs`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/train_logs.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["train", "logs", *sys.argv[1:]])
