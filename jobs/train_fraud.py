"""Ray job: `paylake train fraud` (LightGBM on Ray Train, MLflow registry).

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python jobs/train_fraud.py
"""

import sys

from paylake.cli import app

if __name__ == "__main__":
    app(["train", "fraud", *sys.argv[1:]])
