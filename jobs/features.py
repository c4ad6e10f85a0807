"""Ray job: `paylake features` (fraud features of every transaction, online store published).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/features.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["features", *sys.argv[1:]])
