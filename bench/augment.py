"""Benchmark CSI's augmentation T: csigen vs kornia vs torchvision.transforms.v2 (vs CSI).

Side by side in one run, on one batch (default 256 x 3 x 32 x 32 on the CPU):
images per second of each implementation of "colour jitter (0.4, 0.4, 0.4,
0.1) p=0.8 -> grayscale p=0.2 -> random resized crop (0.08, 1) to the input
size", forward only and forward + backward to the input, and the ratio of
csigen's speed to each.  It also checks the properties the issue asks of a
library (per-sample parameters, a ``generator`` argument):

* per-sample parameters: a batch of identical images must come out as
  different images; torchvision v2 applied to a batch uses one parameter set
  for all of them (all outputs identical), so it is also timed with a Python
  loop over samples, which gives per-sample parameters;
* ``generator``: whether ``forward`` accepts a ``torch.Generator``.

CSI's own layers (alinlab/CSI ``models/transform_layers.py``) are timed too
when an extracted copy of its code is found (``--csi-root``, default
/tmp/csi); they are not part of this repository.

    python bench/augment.py [--batch 256] [--size 32] [--repeats 15] [--device cpu] [--threads 1]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from csigen.augment import SimCLRAugment


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call_once(fn, x: torch.Tensor, backward: bool) -> float:
    """Seconds of one call (forward, or forward + backward to the input)."""
    xi = x.detach().clone().requires_grad_(backward)
    _sync(x.device)
    t0 = time.perf_counter()
    y = fn(xi)
    if backward:
        (y * y).mean().backward()
    _sync(x.device)
    return time.perf_counter() - t0


def time_all(impls: dict, x: torch.Tensor, repeats: dict, backward: bool) -> dict:
    """Median seconds per call of each implementation, timed round-robin.

    Round-robin (one call of each in turn, 2 warm-up rounds) so that all see
    the same machine load; returns ``nan`` for one that raises.
    """
    times = {name: [] for name in impls}
    failed = {}
    for r in range(max(repeats.values()) + 2):
        for name, (fn, *_rest) in impls.items():
            if name in failed or r >= repeats[name] + 2:
                continue
            try:
                t = call_once(fn, x, backward)
            except RuntimeError as err:  # e.g. an in-place kernel that autograd rejects
                failed[name] = str(err).splitlines()[0]
                continue
            if r >= 2:
                times[name].append(t)
    return {n: (statistics.median(t) if n not in failed else float("nan")) for n, t in times.items()}, failed


def distinct_outputs(fn, x1: torch.Tensor, n: int = 8) -> int:
    """How many distinct images ``fn`` makes of a batch of n copies of one image."""
    with torch.no_grad():
        y = fn(x1.expand(n, -1, -1, -1).contiguous())
    flat = y.reshape(n, -1)
    return len({tuple(torch.round(r * 1e4).tolist()) for r in flat})


def build(args, device):
    """name -> (callable on a batch, accepts a generator?, note)."""
    impls = {}
    ours = SimCLRAugment().to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    impls["csigen (vectorised)"] = (lambda x: ours(x, generator=gen), True, "per-sample params, CSI semantics")
    exact = SimCLRAugment(hsv_grad="autograd").to(device)
    impls["csigen, hsv_grad='autograd'"] = (
        lambda x: exact(x, generator=gen), True, "same, true HSV derivative",
    )

    try:
        import kornia
        import kornia.augmentation as K

        kaug = nn.Sequential(
            K.ColorJiggle(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.RandomResizedCrop((args.size, args.size), scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)),
        ).to(device)
        k_gen = any("generator" in inspect.signature(m.forward).parameters for m in kaug)
        impls[f"kornia {kornia.__version__}"] = (kaug, k_gen, "per-sample params, global RNG")
    except ImportError:
        print("kornia not installed: skipped")

    try:
        import torchvision
        from torchvision.transforms import v2

        tv = v2.Compose([
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.RandomResizedCrop(args.size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        ])
        tv_gen = "generator" in inspect.signature(tv.forward).parameters
        name = f"torchvision {torchvision.__version__} v2"
        impls[f"{name}, batch call"] = (tv, tv_gen, "ONE param set per call")
        impls[f"{name}, loop per sample"] = (
            lambda x: torch.stack([tv(xi) for xi in x]), tv_gen, "per-sample params via Python loop",
        )
    except ImportError:
        print("torchvision not installed: skipped")

    csi_root = Path(args.csi_root)
    if (csi_root / "models" / "transform_layers.py").exists():
        sys.path.insert(0, str(csi_root))
        import models.transform_layers as TL  # CSI's code, outside this repository

        csi = nn.Sequential(
            TL.ColorJitterLayer(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8),
            TL.RandomColorGrayLayer(p=0.2),
            TL.RandomResizedCropLayer(scale=(0.08, 1.0)),
        ).to(device)
        impls["CSI layers (reference)"] = (csi, False, "per-sample params (order per batch), global RNG")
    else:
        print(f"no CSI code at {csi_root}: CSI's layers not timed")
    return impls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--csi-root", default="/tmp/csi")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: stable numbers on a shared machine; 0 = torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, device=device)

    impls = build(args, device)
    print(f"batch {args.batch} x 3 x {args.size} x {args.size} on {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeats}\n")
    repeats = {n: (max(3, args.repeats // 5) if "loop per sample" in n else args.repeats) for n in impls}
    fwd, _ = time_all(impls, x, repeats, backward=False)
    bwd, failed = time_all(impls, x, repeats, backward=True)
    rows = []
    for name, (fn, has_gen, note) in impls.items():
        if name in failed:
            note += f"; NOT differentiable ({failed[name][:50]}...)"
        rows.append((name, args.batch / fwd[name], args.batch / bwd[name], distinct_outputs(fn, x[:1]),
                     has_gen, note))
    ours_f, ours_b = rows[0][1], rows[0][2]
    head = f"{'implementation':42s} {'fwd img/s':>10s} {'ours/it':>8s} {'f+b img/s':>10s} {'ours/it':>8s}"
    print(head + f" {'distinct/8':>10s} {'generator':>9s}  note")
    print("-" * (len(head) + 60))
    for name, f, b, nd, has_gen, note in rows:
        print(f"{name:42s} {f:10.0f} {ours_f / f:8.2f} {b:10.0f} {ours_b / b:8.2f} {nd:10d} "
              f"{has_gen!s:>9s}  {note}")
    print("\nours/it > 1: csigen is faster.  distinct/8: distinct outputs for 8 copies of one image "
          "(8 = per-sample parameters, 1 = one parameter set for the whole batch).")


if __name__ == "__main__":
    main()
