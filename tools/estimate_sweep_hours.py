"""Estimate the GPU hours of the Table 1 sweep from counted FLOPs (an estimate, not a measurement).

    python tools/estimate_sweep_hours.py [--utilisation 0.2] [--batch 2]

1. FLOPs are counted, not assumed: torch.utils.flop_counter.FlopCounterMode (matrix products and
   convolutions, forward and backward) over real Algorithm 1 steps of csigen's Trainer on the CPU, with the
   `paper` preset's networks at each dataset's image size (32 px: CIFAR-10/100; 224 px: ImageNet-30), at a
   small batch (--batch), scaled linearly to the `paper` preset's 128 images per step (CSI's batch;
   NT-Xent's similarity matrix, the only super-linear term, is under 0.1% of a step at 128). The GAN block's FLOPs are a step of the
   variant with gan_every=1 minus a csi step; it runs every 5th step (gan_every=5).
2. A run = 1,000 epochs x (training images // 128) steps, plus its evaluation: R=10 draws x 4 shifts of
   every training and test image through F (forward only).
3. Hours = FLOPs / (published dense peak of the GPU at the precision `amp="auto"` picks x --utilisation).
   The utilisation of a ResNet-18 on 32 px images is the large unknown: 10-30% of peak is typical of such
   small convolutions; the README quotes 20% and says how the hours scale.

Prints one line per dataset and variant (TFLOP per step, PFLOP per run), then the sweep's hours per GPU.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from csigen.config import make_config
from csigen.data import load_task
from csigen.train import Trainer

#: (image size, training images per one-class task, test images, tasks) of each dataset of Table 1.
DATASETS = {"cifar10": (32, 5000, 10000, 10), "cifar100": (32, 2500, 10000, 20), "imagenet30": (224, 1300, 3000, 30)}
#: Published dense (no sparsity) tensor-core peak TFLOP/s at the precision amp="auto" uses on each GPU
#: (bf16 from compute capability 8.0, else fp16), from the vendors' data sheets.
GPU_PEAK_TFLOPS = {
    "H100 SXM (bf16)": 989.0,
    "A100 (bf16)": 312.0,
    "L4 (bf16)": 121.0,
    "RTX 4090 (bf16)": 165.0,
    "V100 SXM2 (fp16)": 125.0,
    "T4 (fp16)": 65.0,
}
PAPER_BATCH, EPOCHS, GAN_EVERY, EVAL_DRAWS, SHIFTS = 128, 1000, 5, 10, 4


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops(variant: str, size: int, batch: int) -> int:
    """FLOPs of one training step (gan_every=1: the GAN block included) at ``batch`` images."""
    config = make_config("paper", dataset="shapes", variant=variant, batch_size=batch, gan_every=1, device="cpu")
    task = load_task("shapes", 0, image_size=size, max_train=2 * batch, max_test=4)
    trainer = Trainer(config, None, task=task, progress=False)
    return count(trainer.train_step)


def eval_flops_per_image(size: int) -> int:
    from csigen import models

    F = models.ResNet18(variant="imagenet" if size >= 128 else "cifar").eval()
    with torch.no_grad():
        return count(lambda: F(torch.rand(1, 3, size, size), penultimate=True, simclr=True, shift=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utilisation", type=float, default=0.2, help="fraction of the GPU's peak achieved")
    parser.add_argument("--batch", type=int, default=2, help="batch at which FLOPs are counted (scaled to 128)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    run_flops: dict[tuple[str, str], float] = {}
    for dataset, (size, n_train, n_test, _) in DATASETS.items():
        scale = PAPER_BATCH / args.batch
        csi = step_flops("csi", size, args.batch) * scale
        steps = EPOCHS * (n_train // PAPER_BATCH)
        evaluation = eval_flops_per_image(size) * EVAL_DRAWS * SHIFTS * (n_train + n_test)
        for variant in ("csi", "csi+g", "full"):
            gan = 0.0 if variant == "csi" else step_flops(variant, size, args.batch) * scale - csi
            per_step = csi + gan / GAN_EVERY
            run_flops[dataset, variant] = steps * per_step + evaluation
            print(f"{dataset:10s} {variant:5s} step={per_step / 1e12:.2f} TFLOP (csi part {csi / 1e12:.2f}, "
                  f"GAN block {gan / 1e12:.2f} every {GAN_EVERY}) steps={steps} eval={evaluation / 1e15:.2f} PFLOP "
                  f"run={run_flops[dataset, variant] / 1e15:.1f} PFLOP", flush=True)
    sweeps = {
        "Table 1 (csi + full, 60 tasks)": [(d, v) for d in DATASETS for v in ("csi", "full")],
        "ablation (csi+g, CIFAR-10)": [("cifar10", "csi+g")],
        "all three variants, 60 tasks": [(d, v) for d in DATASETS for v in ("csi", "csi+g", "full")],
    }
    totals = {name: sum(run_flops[k] * DATASETS[k[0]][3] for k in keys) for name, keys in sweeps.items()}
    for name, flops in totals.items():
        print(f"{name}: {flops / 1e18:.2f} EFLOP")
    print(f"GPU hours at {args.utilisation:.0%} of the dense peak (estimate, not measured):")
    for gpu, peak in GPU_PEAK_TFLOPS.items():
        hours = {name: flops / (peak * 1e12 * args.utilisation) / 3600 for name, flops in totals.items()}
        per_run = run_flops["cifar10", "full"] / (peak * 1e12 * args.utilisation) / 3600
        print(f"{gpu:18s} " + "  ".join(f"{name.split(' (')[0]}={h:.0f} h" for name, h in hours.items())
              + f"  one CIFAR-10 full run={per_run:.1f} h")


if __name__ == "__main__":
    main()
