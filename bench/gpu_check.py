"""Check a GPU runtime in one command: does csigen train correctly here, and does CSI's batch fit?

    python bench/gpu_check.py [--device auto|cuda|cpu] [--amp auto|bf16|fp16|off] [--out DIR]

Stages, in order (each prints one line; a stage that fails is named and the
independent ones still run):

1. ``reference``: one CSI step (Eq. 4) in float32 with TF32 off, on the batch
   of ``tests/fixtures/csi_step.json``: the weights, input, flips and
   augmentation parameters with which alinlab/CSI's own training step made the
   fixture's numbers. The three loss terms must match CSI's to
   :data:`LOSS_TOLERANCE` (absolute) and the gradient norms of four layers to
   :data:`GRAD_NORM_TOLERANCE` (relative). ``tests/test_losses.py`` holds
   1e-4 and 0.1 % on the CPU; a GPU's float32 kernels sum in other orders.
2. ``train <variant>`` for csi, csi+g and full, in the chosen precision, on the
   built-in shapes data (no download) at CIFAR size (32 x 32). On a GPU: the
   `paper` preset's batch (CSI's 128 images) and widths (SNGAN's: G and E 256 channels, D 128), 10
   steps with a GAN block every 5 (Algorithm 1's N), so two GAN blocks. The
   run stops after half its steps with a checkpoint; a new trainer resumes it
   (weights, optimiser states, loss scalers, random states and step must be
   those saved), finishes and evaluates (every score from one feature pass;
   each AUROC must be a number in [0, 1]). Reported: training images per
   second over the steps after each trainer's first (so without cuDNN's
   autotuning), peak GPU memory allocated by tensors, and fp16 steps skipped
   by the loss scalers.
3. ``imagenet224 <variant>``: one step with a GAN block at 224 x 224
   (ImageNet-30's size) at the same batch; its peak GPU memory or, when it
   runs out of memory, the largest batch (halving, down to 8) that fits. Not
   fitting is a finding, not a failure: train ImageNet-30 with that
   ``--batch-size`` on this GPU.

The last line is::

    gpu_check ok variants=3 amp=<bf16|fp16|fp32> device=<name> batch=<B> ref_err=<e> img_s=<v:x,...>
        peak_gb=<v:x,...> batch224=<v:B,...> peak_gb_224=<v:x,...> fp16_skipped=<v:n,...> seconds=<s>

(one line), or ``gpu_check FAILED <stage>: <error> | ...`` with exit status 1.
Record what a GPU printed in ``bench/RESULTS.md`` (date, GPU, command, figures).

On the CPU (``--device cpu``; CI runs it with ``--amp fp16`` and with
``--amp bf16``) the same stages run at the smoke preset's sizes (batch 4, 4
steps with a GAN block every 2) with small stand-in networks: F is two
conv-BN-ReLU layers with ResNet-18's heads and interface, G, D and E have 8
channels. 16-bit convolutions on a CPU run through slow reference kernels
(ResNet-18 under fp16 autocast on a smoke batch: about 1 s per image, 30-50x
float32), and what a CPU run checks is the code path (autocast on the
device, one GradScaler per update site, checkpoint and resume of the scalers,
evaluation), not the networks. The reference stage always uses ResNet-18 in
float32. A CPU run's figures say nothing about a GPU; peak memory reads n/a.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import tempfile
import time
import traceback
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import csigen.augment as augment_module  # noqa: E402
from csigen.augment import AugmentParams, SimCLRAugment  # noqa: E402
from csigen.config import AMP_MODES, VARIANTS, make_config  # noqa: E402
from csigen.data import load_task  # noqa: E402
from csigen.losses import csi_loss  # noqa: E402
from csigen.models import ResNet18, SmallF  # noqa: E402  (SmallF: the CPU stand-in for F)
from csigen.train import Trainer, resolve_device, resolve_precision  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "csi_step.json"
#: Largest |ours - CSI| of each loss term (con_si, cls_si, their sum) of the float32 reference step.
LOSS_TOLERANCE = 1e-3
#: Largest |ours / CSI - 1| of each fixture gradient norm of the float32 reference step.
GRAD_NORM_TOLERANCE = 1e-2
#: Smallest batch tried at 224 x 224 before reporting that none fits.
MIN_BATCH_224 = 8
PRECISION_NAMES = {"bf16": "bf16", "fp16": "fp16", "off": "fp32"}

#: Sizes of a GPU check (the `paper` preset's: CSI's batch, SNGAN's widths) and of a CPU check (the smoke preset's).
GPU_SIZES = dict(preset="paper", batch_size=128, max_steps=10, gan_every=5, g_channels=256, d_channels=128,
                 e_channels=256, max_train=256, max_test=256)
CPU_SIZES = dict(preset="smoke", batch_size=4, max_steps=4, gan_every=2, g_channels=8, d_channels=8,
                 e_channels=8, max_train=16, max_test=32)


class SmallFTrainer(Trainer):
    """The trainer with :class:`SmallF` as F; G, D, E and D' are csigen's, at the config's widths."""

    def _build_networks(self):
        nets = super()._build_networks()
        nets.F = SmallF(num_shifts=self.config.num_shifts)
        return nets


class StageFailed(Exception):
    """A check of a stage did not hold; the message says which."""


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def joined(values: dict) -> str:
    """``{"csi": 1.5, "full": None}`` -> ``csi:1.50,full:n/a``; ``n/a`` when every value is None."""
    if all(v is None for v in values.values()):
        return "n/a"
    return ",".join(f"{k}:{fmt(v)}" for k, v in values.items())


def first_difference(a, b, where: str = "") -> str | None:
    """Where two nested state dicts (dicts, lists, tensors, numbers) differ, or None if they are equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return f"{where or 'state'}: keys {sorted(map(str, a))} vs {sorted(map(str, b))}"
        for k in a:
            found = first_difference(a[k], b[k], f"{where}.{k}" if where else str(k))
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
        return None if same else f"{where}: tensors differ"
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


# --------------------------------------------------------------------------- #
# stage 1: the float32 step against CSI's own numbers
# --------------------------------------------------------------------------- #
class _TF32Off:
    """Float32 matmuls and convolutions in full float32 (no TF32) inside; the previous settings after."""

    def __enter__(self):
        self.saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
        torch.set_float32_matmul_precision("highest")  # matmuls: no TF32
        torch.backends.cudnn.allow_tf32 = False  # convolutions: no TF32 (PyTorch's default allows it)

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self.saved[0])
        torch.backends.cudnn.allow_tf32 = self.saved[1]


def reference_step(device: torch.device) -> tuple[float, float]:
    """The fixture's CSI step on ``device``: (largest loss-term error, largest relative grad-norm error)."""
    fx = json.loads(FIXTURE.read_text())
    torch.manual_seed(fx["weights_seed"])
    model = ResNet18(num_shifts=fx["num_shifts"]).to(device).train()
    b, s = fx["batch_size"], fx["image_size"]
    x = torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(fx["input_seed"])).to(device)
    params = AugmentParams(**{
        k: torch.tensor(v, dtype=torch.bool if isinstance(v[0], bool) else torch.float32)
        for k, v in fx["augment_params"].items()
    })
    flip = torch.tensor(fx["flip"], dtype=torch.bool, device=device)
    T = SimCLRAugment()

    def fixed_flip(images, generator=None, p=0.5):  # CSI's flips of the fixture
        return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)

    def fixed_augment(views, generator=None):  # CSI's T parameters of the fixture
        return T.apply(views, params)

    with _TF32Off(), mock.patch.object(augment_module, "random_hflip", fixed_flip):
        out = csi_loss(model, x, fixed_augment, num_shifts=fx["num_shifts"], temperature=0.5)
        out["loss"].backward()
    loss_err = max(abs(out[k].item() - fx["expected"][k]) for k in ("loss", "con_si", "cls_si"))
    named = dict(model.named_parameters())
    grad_err = max(abs(named[k].grad.norm().item() / v - 1) for k, v in fx["grad_norms"].items())
    if not (loss_err <= LOSS_TOLERANCE and grad_err <= GRAD_NORM_TOLERANCE):
        raise StageFailed(f"float32 CSI step differs from CSI's: loss terms by {loss_err:.2e} (tolerance "
                          f"{LOSS_TOLERANCE:g}), gradient norms by {grad_err:.2%} (tolerance "
                          f"{GRAD_NORM_TOLERANCE:.0%})")
    return loss_err, grad_err


# --------------------------------------------------------------------------- #
# stages 2 and 3: training
# --------------------------------------------------------------------------- #
def make_config_for(variant: str, sizes: dict, device: torch.device, amp: str, **overrides):
    values = dict(sizes)
    preset = values.pop("preset")
    values.update(dataset="shapes", inlier=0, variant=variant, device=str(device), amp=amp, epochs=1000,
                  eval_samples=1, checkpoint_every_steps=None, checkpoint_every_s=1e9)
    values.update(overrides)
    return make_config(preset, **values)


def train_variant(variant: str, sizes: dict, device: torch.device, amp: str, out: Path, task,
                  trainer_class: type[Trainer]) -> dict:
    """Train half the steps, checkpoint, resume in a new trainer, finish, evaluate."""
    cfg = make_config_for(variant, sizes, device, amp)
    half = cfg.max_steps // 2
    reset_peak_memory(device)
    first = trainer_class(cfg, out / variant, task=task, progress=False)
    first.fit(resume=False, stop_after_steps=half)
    saved = first.state_dict()
    resumed = trainer_class(cfg, out / variant, task=task, progress=False)
    if not resumed.try_resume():
        raise StageFailed(f"no checkpoint in {out / variant} after {half} steps")
    differs = first_difference(saved, resumed.state_dict())
    if differs:
        raise StageFailed(f"the resumed state is not the saved one ({differs})")
    resumed.fit(resume=False)
    if resumed.step != cfg.max_steps:
        raise StageFailed(f"the resumed run stopped at step {resumed.step} of {cfg.max_steps}")
    evaluation = resumed.evaluate()
    synchronize(device)
    aurocs = [evaluation["auroc"]] + [s["auroc"] for s in evaluation.get("scores", {}).values()]
    if not all(isinstance(a, float) and 0.0 <= a <= 1.0 for a in aurocs):
        raise StageFailed(f"evaluation gave AUROCs {aurocs}")
    history = resumed.history
    timed = history[1:half] + history[half + 1:]  # each trainer's first step warms up (cuDNN autotuning)
    seconds = sum(r["seconds"] for r in timed)
    gan_steps = sum(1 for r in history if "joint" in r)
    if cfg.uses_generator and gan_steps != cfg.max_steps // cfg.gan_every:
        raise StageFailed(f"{gan_steps} GAN blocks in {cfg.max_steps} steps, expected "
                          f"{cfg.max_steps // cfg.gan_every}")
    return {
        "img_s": len(timed) * resumed.batch_size / seconds if seconds else None,
        "peak_gb": peak_memory_gb(device),
        "auroc": evaluation["auroc"],
        "eval_precision": evaluation.get("eval_precision", "?"),
        "skipped": sum(resumed.precision.skipped.values()),
        "gan_blocks": gan_steps,
    }


def step_at_224(variant: str, sizes: dict, device: torch.device, amp: str, task,
                trainer_class: type[Trainer]) -> tuple[int | None, float | None]:
    """One step with a GAN block at 224 x 224; (batch that fitted, peak GB), halving the batch on OOM."""
    batch = sizes["batch_size"]
    while True:
        cfg = make_config_for(variant, sizes, device, amp, batch_size=batch, gan_every=1, max_steps=1)
        trainer = None
        try:
            reset_peak_memory(device)
            trainer = trainer_class(cfg, None, task=task, progress=False)
            record = trainer.run_step()
            synchronize(device)
            if not all(math.isfinite(v) for v in record.values()):
                raise StageFailed(f"non-finite losses at 224 x 224: {record}")
            return batch, peak_memory_gb(device)
        except torch.cuda.OutOfMemoryError:
            del trainer
            if batch // 2 < MIN_BATCH_224:
                return None, None
            batch //= 2


# --------------------------------------------------------------------------- #
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (the GPU if any; default), cuda, cuda:1, cpu")
    ap.add_argument("--amp", default="auto", choices=AMP_MODES,
                    help="training precision (default auto: bf16 on GPUs of compute capability >= 8.0, "
                         "fp16 on older ones, fp32 on the CPU)")
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        device = resolve_device(args.device)
        precision = resolve_precision(args.amp, device)
    except (RuntimeError, ValueError) as exc:
        print(f"gpu_check FAILED setup: {exc}", flush=True)
        return 1
    on_gpu = device.type == "cuda"
    sizes = GPU_SIZES if on_gpu else CPU_SIZES
    trainer_class = Trainer if on_gpu else SmallFTrainer
    name = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    amp = PRECISION_NAMES[precision]
    print(f"gpu_check device={device} name={name!r} amp={amp} torch={torch.__version__} "
          f"cuda={torch.version.cuda} batch={sizes['batch_size']} steps={sizes['max_steps']} "
          f"gan_every={sizes['gan_every']} networks={'csigen' if on_gpu else 'small stand-ins (CPU)'}",
          flush=True)
    failures: list[str] = []

    def stage(label: str, fn, *a):
        try:
            return fn(*a)
        except Exception as exc:  # report every failing stage, then exit non-zero
            detail = f"{type(exc).__name__}: {exc}".strip().replace("\n", " ")
            failures.append(f"{label}: {detail}")
            print(f"{label} FAILED: {detail}", flush=True)
            traceback.print_exc(file=sys.stderr)
            return None

    ref = stage("reference", reference_step, device)
    if ref is not None:
        print(f"reference fp32 step vs CSI: loss terms within {ref[0]:.2e} (tolerance {LOSS_TOLERANCE:g}), "
              f"gradient norms within {ref[1]:.2e} (tolerance {GRAD_NORM_TOLERANCE:g})", flush=True)

    results: dict[str, dict | None] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        task = load_task("shapes", 0, max_train=sizes["max_train"], max_test=sizes["max_test"])
        for variant in VARIANTS:
            r = stage(f"train {variant}", train_variant, variant, sizes, device, args.amp, out, task,
                      trainer_class)
            results[variant] = r
            if r is not None:
                print(f"train {variant}: {sizes['max_steps']} steps ({r['gan_blocks']} GAN blocks), "
                      f"checkpoint, resume, evaluate ({r['eval_precision']}) ok; img_s={fmt(r['img_s'], 1)} "
                      f"peak_gb={fmt(r['peak_gb'])} fp16_skipped={r['skipped']} auroc={r['auroc']:.3f}",
                      flush=True)
    task224 = load_task("shapes", 0, max_train=sizes["batch_size"], max_test=8, image_size=224)
    at224: dict[str, tuple | None] = {}
    for variant in VARIANTS:
        r = stage(f"imagenet224 {variant}", step_at_224, variant, sizes, device, args.amp, task224,
                  trainer_class)
        at224[variant] = r
        if r is not None:
            fitted, peak = r
            verdict = (f"batch {sizes['batch_size']} fits" if fitted == sizes["batch_size"] else
                       f"batch {sizes['batch_size']} does not fit; " +
                       (f"batch {fitted} fits" if fitted else f"not even batch {MIN_BATCH_224}"))
            print(f"imagenet224 {variant}: one step with a GAN block at 224 x 224: {verdict}, "
                  f"peak_gb={fmt(peak)}", flush=True)
    seconds = time.perf_counter() - t0
    if failures:
        print("gpu_check FAILED " + " | ".join(failures), flush=True)
        return 1
    print(
        f"gpu_check ok variants={len(results)} amp={amp} device={name.replace(' ', '_')} "
        f"batch={sizes['batch_size']} ref_err={ref[0]:.1e} "
        f"img_s={joined({v: r['img_s'] for v, r in results.items()})} "
        f"peak_gb={joined({v: r['peak_gb'] for v, r in results.items()})} "
        f"batch224={joined({v: r[0] for v, r in at224.items()})} "
        f"peak_gb_224={joined({v: r[1] for v, r in at224.items()})} "
        f"fp16_skipped={joined({v: r['skipped'] for v, r in results.items()})} "
        f"seconds={seconds:.0f}",
        flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
