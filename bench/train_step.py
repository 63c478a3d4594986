"""Benchmark F's CSI training step (Eq. 4): csigen vs the official CSI code.

One step = random flip -> 4 rotations -> 2 views of T -> ResNet-18 (CIFAR,
train mode) on all ``batch * 4 * 2`` views -> NT-Xent + rotation
cross-entropy -> backward -> optimiser step.  Images per second count the
``batch * 4 * 2`` views F sees per step (256 at the default batch of 32).

* ours: ``csigen.losses.csi_loss(model, x, SimCLRAugment(), generator=g)``
  with model and images in channels_last layout, as csigen's Trainer runs
  them on the CPU and CUDA (``TrainConfig.channels_last``;
  ``--no-channels-last``: NCHW, as CSI)
  with ``csigen.models.ResNet18`` and ``csigen.optim.build_f_optimizer``
  (``--optimizer sgd``: SGD lr 0.1, momentum 0.9, weight decay 1e-6, as CSI's
  ``--optimizer sgd``; ``--optimizer lars``: csigen's LARS over the same SGD,
  CSI's default recipe), learning rate set every step by CSI's warm-up +
  cosine schedule (``csigen.optim.warmup_cosine_factor``).
* reference (``--reference PATH``, an extracted copy of github.com/alinlab/CSI,
  not part of this repository): CSI's own training step,
  ``training.unsup.simclr_CSI.train`` on a one-batch loader, with CSI's
  ResNet18 + ``get_shift_classifer(model, 4)``,
  ``get_simclr_augmentation(P, image_size=(32, 32))``, ``TL.Rotation``,
  ``nn.CrossEntropyLoss``, SGD lr 0.1 momentum 0.9 weight decay 1e-6 (its
  ``--optimizer sgd`` path: torchlars, its LARS, needs CUDA to build) and its
  ``GradualWarmupScheduler`` + ``CosineAnnealingLR``.  The step also runs CSI's
  linear-evaluation head (a 512 -> 10 linear layer on 2B penultimate
  features, Adam), which costs well under 1 % of the step.  Both models get
  the same weights.  ``diffdist`` and ``tensorboardX`` are stubbed.

With ``--reference`` the two steps alternate after one warm-up step each,
in the order ours, reference, reference, ours, ours, reference, ... (so
neither always runs first), so that both see the same machine load.  The
images/s of the last line come from the fastest timed step of each (the
convention of Python's ``timeit``: on a shared machine the slower repeats
measure interference from other processes, not the code); the line above it
gives the medians as well.  The comparison needs the same optimiser on both
sides, so ``--reference`` requires ``--optimizer sgd`` (the default).

The last line reads::

    csi_step ours_img_s=<x> reference_img_s=<y> ratio=<x/y>

or, without ``--reference``, ``csi_step ours_img_s=<x>``.

    python bench/train_step.py [--batch-size 32] [--steps 5] [--device cpu]
        [--threads N] [--optimizer sgd|lars] [--reference /tmp/csi] [--no-channels-last] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from csi_reference import prepare_csi_import

from csigen.augment import SimCLRAugment
from csigen.losses import csi_loss
from csigen.models import ResNet18
from csigen.optim import build_f_optimizer, fused_options, warmup_cosine_factor

NUM_SHIFTS = 4
LR, MOMENTUM, WEIGHT_DECAY = 0.1, 0.9, 1e-6
EPOCHS, WARMUP, MULTIPLIER = 100, 10, 10.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OursStep:
    """csigen's step: csi_loss + backward + optimiser step."""

    def __init__(self, images: torch.Tensor, optimizer: str, seed: int, channels_last: bool = False,
                 compile: bool = False):
        self.device = images.device
        torch.manual_seed(seed)
        self.model = ResNet18(num_shifts=NUM_SHIFTS).to(self.device).train()
        if channels_last:  # NHWC weights and inputs, as csigen's Trainer (TrainConfig.channels_last)
            self.model = self.model.to(memory_format=torch.channels_last)
            images = images.contiguous(memory_format=torch.channels_last)
        if compile:  # TrainConfig.compile: nn.Module.compile() in place
            self.model.compile()
        self.augment = SimCLRAugment()
        # as the Trainer: fused updates on CUDA, random draws from a CPU generator (moved in one transfer)
        self.optimizer = build_f_optimizer(optimizer, self.model.parameters(), lr=LR, momentum=MOMENTUM,
                                           weight_decay=WEIGHT_DECAY, **fused_options(self.device))
        self.generator = torch.Generator().manual_seed(seed)
        self.images = images
        self.iteration = 0

    def __call__(self) -> float:
        epoch = 1 + self.iteration / 100  # as if 100 iterations per epoch
        for group in self.optimizer.param_groups:
            group["lr"] = LR * warmup_cosine_factor(epoch - 1, EPOCHS, WARMUP, MULTIPLIER)
        self.model.train()
        out = csi_loss(self.model, self.images, self.augment, num_shifts=NUM_SHIFTS, generator=self.generator)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()
        self.iteration += 1
        return out["loss"].item()


def import_csi(csi_root: Path):
    """CSI's modules, with stand-ins for ``diffdist`` (multi-GPU) and ``tensorboardX`` (logging)."""
    prepare_csi_import(csi_root, "training/unsup/simclr_CSI.py")
    import models.classifier as C
    import models.transform_layers as TL
    import training.unsup.simclr_CSI as S
    from training.scheduler import GradualWarmupScheduler

    # CSI steps its scheduler with an epoch argument, which torch >= 1.x deprecates
    warnings.filterwarnings("ignore", message="The epoch parameter in `scheduler.step\\(\\)`")

    return types.SimpleNamespace(C=C, TL=TL, S=S, GradualWarmupScheduler=GradualWarmupScheduler)


class _QuietLogger:
    def log(self, *_):
        pass

    def scalar_summary(self, *_):
        pass


class ReferenceStep:
    """CSI's own step: ``training.unsup.simclr_CSI.train`` over a one-batch loader."""

    def __init__(self, csi, images: torch.Tensor, weights: dict, seed: int):
        self.csi, self.device = csi, images.device
        csi.S.device = self.device  # its module-level device: cuda if available, else cpu
        csi.S.hflip = csi.S.hflip.to(self.device)
        P = types.SimpleNamespace(sim_lambda=1.0, K_shift=NUM_SHIFTS, n_gpus=1, multi_gpu=False,
                                  dataset="cifar10", resize_factor=0.08, resize_fix=False,
                                  weight_decay=WEIGHT_DECAY)
        P.shift_trans = csi.TL.Rotation().to(self.device)
        self.P = P
        torch.manual_seed(seed)
        self.simclr_aug = csi.C.get_simclr_augmentation(P, image_size=tuple(images.shape[-2:])).to(self.device)
        model = csi.C.get_shift_classifer(csi.C.get_classifier("resnet18", n_classes=10), NUM_SHIFTS)
        model.load_state_dict(weights, strict=False)  # CSI's extra linear heads keep their own init
        self.model = model.to(self.device)
        self.criterion = nn.CrossEntropyLoss().to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM,
                                         weight_decay=WEIGHT_DECAY)
        after = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, EPOCHS)
        self.scheduler = csi.GradualWarmupScheduler(self.optimizer, multiplier=MULTIPLIER, total_epoch=WARMUP,
                                                    after_scheduler=after)
        self.linear = self.model.linear
        self.linear_optim = torch.optim.Adam(self.linear.parameters(), lr=1e-3, betas=(0.9, 0.999),
                                             weight_decay=WEIGHT_DECAY)
        self.loader = [(images, torch.zeros(images.shape[0], dtype=torch.long, device=self.device))]
        self.epoch = 1

    def __call__(self) -> None:
        self.csi.S.train(self.P, self.epoch, self.model, self.criterion, self.optimizer, self.scheduler,
                         self.loader, logger=_QuietLogger(), simclr_aug=self.simclr_aug,
                         linear=self.linear, linear_optim=self.linear_optim)
        self.epoch += 1


def timed(step, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=32, help="images per step before shifts/views (32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each, interleaved (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed warm-up steps of each")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--optimizer", choices=["sgd", "lars"], default="sgd",
                        help="ours: SGD (momentum 0.9) or LARS over it; --reference needs sgd")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                        help="ours: channels_last model and images, as csigen trains (TrainConfig.channels_last, "
                             "on the CPU and CUDA); --no-channels-last: contiguous NCHW, as CSI")
    parser.add_argument("--compile", action="store_true", help="ours: torch.compile the model (nn.Module.compile)")
    parser.add_argument("--reference", type=Path, default=None, metavar="CSI_ROOT",
                        help="also time the official CSI step (an extracted alinlab/CSI checkout)")
    args = parser.parse_args(argv)
    if args.reference is not None and args.optimizer != "sgd":
        parser.error("--reference compares SGD with SGD (CSI's LARS, torchlars, needs CUDA): use --optimizer sgd")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    images = torch.rand(args.batch_size, 3, args.image_size, args.image_size,
                        generator=torch.Generator().manual_seed(args.seed)).to(device)
    per_step = args.batch_size * NUM_SHIFTS * 2
    ours = OursStep(images, args.optimizer, args.seed, channels_last=args.channels_last, compile=args.compile)
    steps = {"ours": ours}
    if args.reference is not None:
        csi = import_csi(args.reference.resolve())
        steps["reference"] = ReferenceStep(csi, images, ours.model.state_dict(), args.seed)

    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"batch {args.batch_size} x {NUM_SHIFTS} rotations x 2 views = {per_step} images/step, "
          f"optimizer {args.optimizer} (lr {LR}, momentum {MOMENTUM}, weight decay {WEIGHT_DECAY})"
          + (", reference CSI step: SGD, same settings" if "reference" in steps else "")
          + f"; ours: channels_last={args.channels_last} compile={args.compile}", flush=True)
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for i in range(args.warmup + args.steps):
        for name in names if i % 2 == 0 else names[::-1]:  # ours, ref, ref, ours, ours, ref, ...
            t = timed(steps[name], device)
            tag = "warm-up" if i < args.warmup else "step"
            print(f"{tag} {i:2d} {name:9s} {t:7.3f} s  {per_step / t:8.1f} img/s", flush=True)
            if i >= args.warmup:
                times[name].append(t)
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.3f} s/step ({per_step / statistics.median(ts):.1f} img/s), "
              f"fastest {min(ts):.3f} s/step ({per_step / min(ts):.1f} img/s) over {len(ts)} steps")
    if "reference" in times:
        med = {name: statistics.median(ts) for name, ts in times.items()}
        pairs = sorted(r / o for o, r in zip(times["ours"], times["reference"]))  # repeat i of each
        print(f"ratio of medians (ours img/s / reference img/s) {med['reference'] / med['ours']:.3f}; "
              f"spread of the {len(pairs)} paired repeats: min {pairs[0]:.3f}, median "
              f"{statistics.median(pairs):.3f}, max {pairs[-1]:.3f}")
    rate = {name: per_step / min(ts) for name, ts in times.items()}
    if "reference" in rate:
        print(f"csi_step ours_img_s={rate['ours']:.1f} reference_img_s={rate['reference']:.1f} "
              f"ratio={rate['ours'] / rate['reference']:.3f}")
    else:
        print(f"csi_step ours_img_s={rate['ours']:.1f}")


if __name__ == "__main__":
    main()
