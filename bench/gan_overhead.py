"""Benchmark the cost of the generative part: training throughput of each variant relative to ``csi``.

Algorithm 1 adds, every ``gan_every`` (N = 5) steps of F, one GAN block: the
D, G, D', E updates (Eq. 5-10) and F's joint update on real + synthetic images
(Eq. 7), each of which runs F on ``num_shifts x 2`` views of a batch. This
script measures how much slower a training step of ``csi+g`` and ``full`` is
than one of ``csi``, with everything else equal.

All variants are built from the same config (``--preset``, default ``cpu``:
batch 16, G/E/D at 64 channels; the data set does not change the cost of a
step, so the built-in ``shapes`` set is used unless ``--dataset`` says
otherwise) by :class:`csigen.train.Trainer` with ``out_dir=None`` (no
checkpoints), and trained side by side in one process: one warm-up cycle each,
then ``--cycles`` rounds in which every variant runs one whole cycle of
``gan_every`` steps (so each cycle holds exactly one GAN block), the order of
the variants rotating from round to round so that none always runs first. A
variant's seconds per step is its fastest cycle divided by ``gan_every`` (the
``timeit`` convention: slower repeats measure interference from other
processes); the medians are printed as well.

The last line reads::

    gan_overhead csi_img_s=<a> csi+g_img_s=<b> full_img_s=<c> full_over_csi=<c/a>

where ``full_over_csi`` is the throughput of ``full`` relative to ``csi``
(0.5 = half as many training images per second).

    python bench/gan_overhead.py [--preset cpu] [--cycles 2] [--variants csi csi+g full]
        [--dataset shapes] [--data-root PATH] [--inlier 0] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from csigen.config import VARIANTS, make_config
from csigen.data import load_task_for
from csigen.train import Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--cycles", type=int, default=2, help="timed cycles of gan_every steps per variant")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--dataset", default="shapes")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--inlier", default="0")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    inlier = int(args.inlier) if args.inlier.isdigit() else args.inlier

    def config(variant):
        return make_config(args.preset, dataset=args.dataset, data_root=args.data_root, inlier=inlier,
                           variant=variant, device=args.device, max_test=16)

    task = load_task_for(config("csi"))
    trainers = {v: Trainer(config(v), None, task=task, progress=False) for v in args.variants}
    n = trainers[args.variants[0]].config.gan_every
    batch = trainers[args.variants[0]].batch_size

    def cycle(trainer: Trainer) -> float:
        sync = (lambda: torch.cuda.synchronize(trainer.device)) if trainer.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            trainer.run_step()
        sync()
        return time.perf_counter() - t0

    for t in trainers.values():  # warm-up: one whole cycle, GAN block included
        cycle(t)
    times: dict[str, list[float]] = {v: [] for v in args.variants}
    for r in range(args.cycles):
        order = args.variants[r % len(args.variants):] + args.variants[:r % len(args.variants)]
        for v in order:
            times[v].append(cycle(trainers[v]))

    print(f"preset={args.preset} batch={batch} gan_every={n} cycles={args.cycles} device={args.device} "
          f"threads={torch.get_num_threads()}")
    best = {v: min(ts) / n for v, ts in times.items()}
    for v, ts in times.items():
        print(f"{v:6s} s/step best={best[v]:.3f} median={statistics.median(ts) / n:.3f} "
              f"img/s={batch / best[v]:.2f}")
    line = " ".join(f"{v}_img_s={batch / best[v]:.3f}" for v in args.variants)
    if "csi" in best and "full" in best:
        line += f" full_over_csi={best['csi'] / best['full']:.3f}"
    print(f"gan_overhead {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
