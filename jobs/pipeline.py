"""Ray job: the whole pipeline (migrate, seed once, ... ).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/pipeline.py [--scale demo]
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["pipeline", *sys.argv[1:]])
