"""The log-sequence model (``paylake.ml.logseq``) on the public HDFS log-key sessions (DeepLog's benchmark).

    .venv/bin/python bench/logseq_hdfs.py [--train F] [--normal F] [--abnormal F] [--workers 2]

Files (one session per line, space-separated 1-based key ids; defaults from
``../shared/data/hdfs/``): the model trains on normal sessions only. With the
default files, the 4,000 normal sessions are split by a fixed shuffle into
train (60 %), validation (20 %) and test (20 %); the abnormal sessions into
validation (half) and test (half). h is DeepLog's 10; g is chosen on the
validation sessions only (the best F1 at the paper's class mix), then the test
sessions are scored once.

Reported: the false-positive rate on held-out normal sessions and on held-out
*sequences* never seen in training (the 4,000 sessions hold few distinct
sequences), each with a 95 % Wilson interval; recall on abnormal sessions, apart
for those holding a key never seen in normal training and the rest; precision,
recall and F1 at the paper's class mix (553,366 normal : 16,838 abnormal,
estimated from the two rates), next to DeepLog's P 0.95 / R 0.96 / F1 0.96, a
re-implementation's 0.945 and Le & Zhang's 0.908. The last line prints P R F1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from paylake.ml.logbench import evaluate_hdfs, print_hdfs
from paylake.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, help="normal sessions to train on (default: 60 % of train_normal)")
    parser.add_argument("--normal", type=Path, help="held-out normal sessions (default: 20 % of train_normal)")
    parser.add_argument("--abnormal", type=Path, help="abnormal sessions (default: abnormal.txt)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--window", type=int, default=10, help="h (DeepLog's 10)")
    args = parser.parse_args()
    result = evaluate_hdfs(load_settings(), workers=args.workers, epochs=args.epochs, window=args.window,
                           train_file=args.train, normal_file=args.normal, abnormal_file=args.abnormal)
    print_hdfs(result)


if __name__ == "__main__":
    main()
