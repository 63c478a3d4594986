"""Training throughput of each variant: images/s, achieved TFLOP/s and peak memory (GPU or CPU).

Every variant is built from the same config (``--preset``: ``paper`` on a GPU,
``cpu`` on the CPU, by default, which names ``cpu-amx``, ``cpu-avx512bf16`` or ``cpu-fp32`` by the
CPU; in the preset's own precision unless ``--amp`` says otherwise) by :class:`csigen.train.Trainer` with
``out_dir=None`` (no checkpoints, no evaluation) and trained side by side in
one process. The unit of time is a *cycle* of ``gan_every`` steps, which holds
exactly one GAN block for ``csi+g`` and ``full``. Each variant first runs one
warm-up cycle (``torch.compile``, cuDNN autotuning, allocator growth), then one
cycle under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts the
floating-point operations of the cycle once (convolutions and matrix products,
forward and backward: what the accelerator's peak is quoted for); then
``--cycles`` rounds in which every variant runs one timed cycle, the order
rotating from round to round. A variant's time is its fastest cycle (the
``timeit`` convention), with the median printed beside it.

Printed per variant: images/s (real images of F's batch per second),
achieved TFLOP/s (counted FLOPs / time), GFLOP per image, peak memory
(CUDA: ``torch.cuda.max_memory_allocated`` over the variant's cycles; ``n/a``
on the CPU). The last line::

    throughput device=<d> amp=<mode> <variant>_img_s=<x> <variant>_tflops=<y> <variant>_peak_gb=<z> ...
        full_over_csi_flops=<achieved FLOP/s of full / that of csi>

``full_over_csi_flops`` says whether Algorithm 1's extra passes run as efficiently
as CSI's own (issue 11's target: at least 0.9 on a GPU).

With several precisions (``--amp off bf16``) every variant is built once per
precision and all of them take turns in the same rounds; the variants are then
named ``<variant>@<precision>`` and the last line adds, per variant,
``<variant>_speedup=<images/s under the last precision / under the first>``
(on a CPU with AMX bf16 units, for instance, ``--amp off bf16`` measures
what bf16 autocast gains over float32 there).

    python bench/throughput.py [--device cuda] [--preset paper] [--amp auto [bf16 ...]] [--compile]
        [--batch-size N] [--cycles 3] [--variants csi csi+g full]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from csigen.config import AMP_MODES, PRESETS, VARIANTS, make_config, resolve_preset
from csigen.data import load_task_for
from csigen.train import Trainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default=None, choices=sorted(PRESETS),
                    help="default: paper on a GPU, cpu on the CPU")
    ap.add_argument("--amp", nargs="+", default=None, choices=AMP_MODES,
                    help="training precision (default: the preset's own, e.g. bf16 for cpu-amx, auto for paper); "
                         "several: each variant under each, side by side")
    ap.add_argument("--compile", action="store_true", help="torch.compile the networks (TrainConfig.compile)")
    ap.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    ap.add_argument("--cycles", type=int, default=3, help="timed cycles (of gan_every steps) per variant")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--dataset", default="shapes", help="data does not change a step's cost (default shapes)")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    preset = resolve_preset(args.preset or ("paper" if device.type == "cuda" else "cpu"))
    extra = {"batch_size": args.batch_size} if args.batch_size else {}
    amp_modes = args.amp or [None]  # None: the preset's precision

    def config(variant, amp):
        precision = {} if amp is None else {"amp": amp}
        return make_config(preset, dataset=args.dataset, data_root=args.data_root, inlier=0, variant=variant,
                           device=args.device, compile=args.compile, max_test=16, **precision, **extra)

    task = load_task_for(config("csi", amp_modes[0]))
    trainers = {}
    for amp in amp_modes:
        for v in args.variants:
            trainer = Trainer(config(v, amp), None, task=task, progress=False)
            trainers[v if len(amp_modes) == 1 else f"{v}@{trainer.precision.mode}"] = trainer
    labels = list(trainers)
    if len(labels) != len(args.variants) * len(amp_modes):
        ap.error(f"--amp {' '.join(args.amp)}: two of them resolve to the same precision on {args.device}")
    first = trainers[labels[0]]
    n, batch = first.config.gan_every, first.batch_size
    cuda = first.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(first.device)) if cuda else (lambda: None)  # that GPU, not the current one

    def cycle(trainer: Trainer) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            trainer.run_step()
        sync()
        return time.perf_counter() - t0

    flops, times, peaks = {}, {v: [] for v in labels}, {v: 0 for v in labels}
    for v, trainer in trainers.items():
        cycle(trainer)  # warm-up
        counter = FlopCounterMode(display=False)
        with counter:
            cycle(trainer)
        flops[v] = counter.get_total_flops()
    for r in range(args.cycles):
        order = labels[r % len(labels):] + labels[:r % len(labels)]
        for v in order:
            if cuda:
                torch.cuda.reset_peak_memory_stats(first.device)
            times[v].append(cycle(trainers[v]))
            if cuda:
                peaks[v] = max(peaks[v], torch.cuda.max_memory_allocated(first.device))

    name = torch.cuda.get_device_name(first.device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    amps = ",".join(dict.fromkeys(t.precision.mode for t in trainers.values()))
    print(f"throughput device={name} preset={preset} batch={batch} amp={amps} "
          f"compile={args.compile} cycles={args.cycles} gan_every={n}")
    line, achieved = [], {}
    for v in labels:
        best, median = min(times[v]), statistics.median(times[v])
        img_s = batch * n / best
        achieved[v] = flops[v] / best
        peak = f"{peaks[v] / 2**30:.2f}" if cuda else "n/a"
        print(f"{v}: {img_s:.1f} img/s (median {batch * n / median:.1f}), {achieved[v] / 1e12:.3f} TFLOP/s, "
              f"{flops[v] / (batch * n) / 1e9:.2f} GFLOP per image, peak memory {peak} GB")
        line += [f"{v}_img_s={img_s:.2f}", f"{v}_tflops={achieved[v] / 1e12:.4f}", f"{v}_peak_gb={peak}"]
    if "csi" in achieved and "full" in achieved:
        line.append(f"full_over_csi_flops={achieved['full'] / achieved['csi']:.3f}")
    if len(amp_modes) > 1:
        lo, hi = (t.precision.mode for t in (trainers[labels[0]], trainers[labels[-1]]))
        line += [f"{v}_speedup={min(times[f'{v}@{lo}']) / min(times[f'{v}@{hi}']):.3f}" for v in args.variants]
    print(f"throughput device={args.device} amp={amps} " + " ".join(line))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
