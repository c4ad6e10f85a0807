"""Ray job: `paylake build-star`.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/build_star.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["build-star", *sys.argv[1:]])
