"""Ray job: fill the source systems with the synthetic payments world.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/seed.py --scale demo
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["seed", *sys.argv[1:]])
