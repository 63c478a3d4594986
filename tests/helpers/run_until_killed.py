"""Subprocess driver for tests/test_interrupt.py (not a test itself).

Runs one small training run with a checkpoint after every step. With
``--die-in-write N`` it SIGKILLs itself halfway through writing the Nth
checkpoint file (after half the bytes reached the temporary file), which is
the worst moment for a checkpoint; otherwise the parent kills it at random.
"""

import argparse
import os
import signal
import sys

from csigen import checkpoint
from csigen.config import make_config
from csigen.train import run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--die-in-write", type=int, default=0)
    args = parser.parse_args()

    if args.die_in_write:
        real_fdopen = os.fdopen
        state = {"writes": 0}

        def dying_fdopen(fd, mode="r", *a, **kw):
            fh = real_fdopen(fd, mode, *a, **kw)
            if "w" not in mode:
                return fh
            state["writes"] += 1
            if state["writes"] != args.die_in_write:
                return fh
            real_write = fh.write

            def write(data):
                real_write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                os.kill(os.getpid(), signal.SIGKILL)

            fh.write = write
            return fh

        checkpoint.os.fdopen = dying_fdopen

    config = make_config("smoke", **CONFIG)
    result = run(config, args.out, resume=True, progress=False)
    print("AUROC", result["auroc"])
    sys.stdout.flush()


CONFIG = dict(dataset="shapes", inlier="square", variant="full", epochs=10, max_steps=6, batch_size=4,
              gan_every=2, max_train=16, max_test=32, eval_samples=1, checkpoint_every_steps=1)

if __name__ == "__main__":
    main()
