"""Ray job: `paylake drift` (exit status 3 when retraining is advised).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/drift.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["drift", *sys.argv[1:]])
