"""Algorithm 1: train F (and G, D, E, D') on one inlier class, then score.

Entry points:

* :class:`Trainer` - ``Trainer(config, out_dir).fit(resume=True)`` then
  ``.evaluate()``; callbacks (:class:`Callback`) see every step, epoch and
  checkpoint, so a notebook can draw a live loss plot.
* :func:`run` - train (or resume) and evaluate, writing ``config.json``,
  ``history.csv``, ``checkpoint.pt``, ``scores.npz`` and ``result.json``
  into ``out_dir``; a finished run is loaded instead of retrained. When it
  finishes, ``checkpoint.pt`` gives way to ``weights.pt`` (the networks only,
  :mod:`csigen.disk`) unless ``keep_checkpoint=True``.

One training step (``variant="full"``), following Algorithm 1 line by line:

1. F: minimise L_CSI(X) (Eq. 4) with LARS (CSI's optimiser; ``f_optimizer="adam"`` is the other reading
   of the paper's "We use Adam ... for model training").
2. Every ``gan_every`` steps (the paper's N = 5 by default), with h ~ N(0, I), X~ = G(h), X^ = G(E(X)):

   a. D: minimise -L_D(X, X~, X^) (Eq. 7); then G, E: maximise it. Algorithm 1 prints the opposite
      directions (argmin over D, max over G, E), which hold if D outputs P(fake); csigen's D outputs
      P(real) (D(x) = sigmoid(logit), real -> 1), the standard GAN game, so the directions flip. The same
      holds for D' and E in c.
   b. G: minimise L_CSI-S(G(h)) (Eq. 6) through a frozen F.
   c. D': minimise -L_LD(h, X) (Eq. 9); then E: maximise it.
   d. G, E: minimise L_REC(X, G(E(X)), T1, T2) (Eq. 8) through a frozen F.
   e. E: minimise L_LREC(h) (Eq. 10).
   f. F: minimise L_JOINT(X union X~) (Eq. 5), X~ as drawn at the top of the block.

``csi+g`` drops E, D' and the terms that need them (X^ in Eq. 7, Eq. 8-10);
``csi`` is step 1 only. Each update recomputes its forward pass, because the
previous update changed the weights (Algorithm 1 is sequential).
When F is a frozen critic (b, d) its BatchNorm running statistics are kept as they
were (the batch statistics still normalise those passes); F's statistics at
evaluation come from its own updates (1, f).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import platform
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from csigen import __version__
from csigen.checkpoint import (
    CheckpointError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_compatible,
    check_writable,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from csigen.config import (
    EVAL_FIELDS,
    SCHEMA_VERSION,
    TrainConfig,
    check_schema_version,
    require_same_run_config,
)
from csigen.distributed import barrier, mean_record, seed_step_generators, shard_rows, unwrap
from csigen.draws import StepDraws

__all__ = ["Callback", "NonFiniteLossError", "Trainer", "run", "load_result", "resolve_device",
           "resolve_precision"]

#: Seconds per csi training step of 32 images on an idle 2-core CPU, and the time of a step of each
#: variant relative to csi (preset cpu on CIFAR-10, 2026-11-29: 5.1 s per step of 16 images for csi,
#: 8.2 for csi+g, 8.4 for full; bench/gan_overhead.py); used only for the GPU-preset-on-CPU warning.
CPU_SECONDS_PER_32_IMAGES = 10.0
#: Devices where ``TrainConfig.channels_last`` puts the networks and batches in NHWC layout: cuDNN on CUDA and
#: oneDNN on the CPU run convolutions fastest in it (bench/train_step.py on an idle 2-core CPU, 2026-11-29:
#: csigen's CSI step 1.31x the official step with it, 1.00-1.04x without; bench/RESULTS.md).
CHANNELS_LAST_DEVICES = ("cuda", "cpu")
GAN_OVERHEAD = {"csi": 1.0, "csi+g": 1.6, "full": 1.65}


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names which and at which step."""


class LossReadout:
    """The losses and gradient norms of one training step, read to the host in one transfer.

    :meth:`Trainer._update` calls :meth:`add` for every update (no host synchronisation);
    :meth:`read` then copies every tensor of the step's record and every pending check to the
    host at once (``torch.stack(...).tolist()``: one synchronisation per step on a GPU instead of
    one or two per update), raises :class:`NonFiniteLossError` naming the first non-finite loss or
    gradient norm in update order, and returns the record with plain floats.

    A non-finite value is thus reported after the step's remaining updates ran, not before its own
    update: the run stops (or rolls back to its last checkpoint) either way, and a checkpoint of
    non-finite weights is refused (:meth:`Trainer.state_dict`), so nothing written is affected.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[str, str, torch.Tensor]] = []

    def add(self, name: str, loss: torch.Tensor, grad_norm: torch.Tensor | None = None) -> None:
        """Queue the check of update ``name``: its loss (0-dim) and, if given, its gradient norm."""
        self.pending.append(("loss", name, loss))
        if grad_norm is not None:
            self.pending.append(("grad", name, grad_norm))

    def read(self, record: dict[str, Any], step: int) -> dict[str, float]:
        """``record`` with its tensors as floats, after checking every queued value of step ``step``."""
        pending, self.pending = self.pending, []
        keys = [k for k, v in record.items() if torch.is_tensor(v)]
        tensors = [record[k] for k in keys] + [t for _, _, t in pending]
        values = torch.stack([t.detach().float().reshape(()) for t in tensors]).tolist() if tensors else []
        checked = values[len(keys):]
        for (kind, name, _), value in zip(pending, checked):
            if math.isfinite(value):
                continue
            if kind == "loss":
                raise NonFiniteLossError(
                    f"loss {name!r} is {value} at step {step}: training diverged. Lower the learning "
                    "rates (f_lr, gan_lr), or set on_nonfinite='rollback' to restart from the last "
                    "checkpoint with halved rates.")
            raise NonFiniteLossError(
                f"gradient of loss {name!r} is {value} at step {step} (exploding gradients). "
                "Lower the learning rates or set on_nonfinite='rollback'.")
        return {**record, **dict(zip(keys, values[:len(keys)]))}


class Callback:
    """Hooks called by :class:`Trainer`; override any of them."""

    def on_step(self, trainer: "Trainer", record: dict[str, float]) -> None:  # noqa: D401
        """After every step, with that step's losses."""

    def on_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After every full pass over the training images."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        """After a checkpoint was written."""


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: the GPU if there is one, else the CPU; any other name as ``torch.device(name)``.

    Asking for ``"cuda"`` without a GPU is an error that says how to get one.
    In a process of a torchrun run, a GPU is that of its ``LOCAL_RANK``
    (:func:`csigen.distributed.process_device`).
    """
    from csigen.distributed import process_device

    if name == "auto":
        return process_device(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but no GPU is available; use device='auto' or 'cpu' "
            "(in Colab: Runtime > Change runtime type > GPU)"
        )
    return process_device(device)


#: Autocast dtype of each resolved precision (None: float32, no autocast).
AMP_DTYPES: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}
#: fp16: an update whose gradients are still inf/NaN once its loss scale has fallen below this
#: (more than 16 halvings from GradScaler's 65536) is divergence, not fp16 overflow: the run stops.
MIN_LOSS_SCALE = 1.0


def resolve_precision(amp: str, device: torch.device | str) -> str:
    """The precision, ``"bf16"``, ``"fp16"`` or ``"off"`` (float32), of ``TrainConfig.amp`` on ``device``.

    ``"auto"``: bf16 on a CUDA GPU of compute capability >= 8.0 (A100, H100,
    RTX 30xx and later); fp16 with loss scaling on older CUDA GPUs (T4, V100),
    which have no bf16 units; float32 on the CPU and other devices (CPU
    autocast changes the numbers, and fp16 convolutions on a CPU are tens of
    times slower than float32; bf16 is 2.4-2.7x faster than float32 on a CPU
    with AMX units, Intel Xeon 4th generation and later (bench/RESULTS.md),
    and may be slower on CPUs without them, so ``"auto"`` does not choose it:
    ask for ``amp="bf16"``, after ``python bench/throughput.py --amp off bf16``
    has measured both on that CPU). ``"bf16"`` and ``"fp16"`` are honoured on
    every device, the CPU included (that is how the tests run both code
    paths); bf16 on a CUDA GPU without bf16 units is refused.
    """
    from csigen.config import AMP_MODES, ConfigError

    device = torch.device(device)
    if amp not in AMP_MODES:
        raise ConfigError(f"invalid amp={amp!r}: choose one of {AMP_MODES}")
    if amp == "auto":
        if device.type != "cuda":
            return "off"
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    if amp == "bf16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        raise ConfigError(
            f"amp='bf16' was requested but {torch.cuda.get_device_name(device)} (compute capability "
            f"{torch.cuda.get_device_capability(device)}) has no bf16 units: use amp='auto' or 'fp16' "
            "(fp16 with loss scaling), or 'off'")
    return amp


class _Precision:
    """Mixed precision of one :class:`Trainer`, kept out of Algorithm 1's code.

    ``autocast()`` wraps the forward passes: ``torch.autocast`` on the
    trainer's device type with the resolved dtype (a no-op in float32); the
    losses compute their logits and reductions in float32 themselves
    (:mod:`csigen.losses`). With fp16, every update site of Algorithm 1 (a loss
    name: ``"csi"``, ``"d"``, ``"g_adv"``, ..., ``"joint"``) has its own
    ``torch.amp.GradScaler``: the sites' losses differ by orders of magnitude
    (Eq. 8 carries lambda = 100) and each is a separate backward pass and
    step, so each scaler sees one ``step()`` per optimiser of its site and then
    its one ``update()`` per training step. An update whose scaled gradients
    hold inf/NaN is skipped by its scaler, which halves its scale: fp16
    overflow, not divergence (counted in ``skipped``), unless the scale falls
    below :data:`MIN_LOSS_SCALE`. The scalers' states go into the checkpoint.
    """

    def __init__(self, amp: str, device: torch.device):
        from csigen.config import cpu_bf16_path

        self.device = torch.device(device)
        self.mode = resolve_precision(amp, self.device)
        self.dtype = AMP_DTYPES[self.mode]
        if self.device.type == "cpu" and self.mode == "bf16" and cpu_bf16_path() == "emulated":
            warnings.warn(
                "amp='bf16' on a CPU with neither AMX nor AVX512-BF16 units: bf16 is emulated here and may "
                "train slower than float32 (measure both with python bench/throughput.py --device cpu --preset "
                "cpu-fp32 --amp off bf16). Continuing; preset 'cpu' names 'cpu-fp32' (float32) on this CPU.",
                RuntimeWarning, stacklevel=3)
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.skipped: dict[str, int] = {}

    def autocast(self):
        """The context of every forward pass of training."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self, name: str) -> torch.amp.GradScaler | None:
        """The GradScaler of update site ``name`` (made on first use); None unless fp16."""
        if self.mode != "fp16":
            return None
        if name not in self.scalers:
            self.scalers[name] = torch.amp.GradScaler(self.device.type)
        return self.scalers[name]

    def step(self, name: str, optimizers: Sequence[torch.optim.Optimizer]) -> bool:
        """``scaler.step`` of each optimiser of site ``name``, then the scaler's one ``update()``.

        Returns False when the scaler skipped the step (inf/NaN gradients).
        """
        scaler = self.scalers[name]
        scale = scaler.get_scale()
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
        if scaler.get_scale() >= scale:  # update() lowers the scale only after inf/NaN gradients
            return True
        self.skipped[name] = self.skipped.get(name, 0) + 1
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "scalers": {k: s.state_dict() for k, s in self.scalers.items()},
                "skipped": dict(self.skipped)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scalers; a checkpoint of another precision (resumed on another GPU): fresh ones."""
        self.skipped = {k: int(v) for k, v in state.get("skipped", {}).items()}
        self.scalers = {}
        if state.get("mode") == self.mode:
            for name, scaler_state in state.get("scalers", {}).items():
                self.scaler(name).load_state_dict(scaler_state)


def git_commit() -> str | None:
    """The commit of the csigen checkout, if it is one (None for an installed wheel)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment_info(device: torch.device) -> dict[str, Any]:
    info = {
        "csigen_version": __version__,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    elif device.type == "cpu":
        from csigen.config import cpu_bf16_path, cpu_model_name

        # which CPU: runs of one recipe on different CPUs differ in speed and, in bf16, in rounding
        info["device_name"] = cpu_model_name()
        info["cpu_bf16"] = cpu_bf16_path()
        info["threads"] = torch.get_num_threads()
    return info


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module, keep_running_stats: bool = False):
    """Temporarily stop gradients to the parameters of ``modules`` (not to their inputs).

    With ``keep_running_stats=True`` the BatchNorm running statistics of
    ``modules`` are also left as they were: the forward passes inside still
    normalise with the batch's statistics (training mode, as in Algorithm 1),
    but they do not move the running averages used at evaluation. Algorithm 1
    uses F as a frozen critic (L_CSI-S on G(h), Eq. 6; L_REC on
    [T1(x); T2(x^)], Eq. 8); F's statistics at test time should come from F's
    own updates (Eq. 4 and Eq. 5), not from those critic passes.

    In a torchrun run the networks are :class:`csigen.distributed.DistributedNet`
    wrappers, which run a network frozen here outside DistributedDataParallel's
    gradient hooks (it has no gradients to synchronise).
    """
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        with running_stats_kept(*modules, keep=keep_running_stats):
            yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


@contextlib.contextmanager
def running_stats_kept(*modules: torch.nn.Module, keep: bool = True):
    """Leave the BatchNorm running statistics of ``modules`` as they were (``keep=False``: do nothing).

    The passes inside still normalise with their batch's statistics (training mode) and still train
    the parameters; only the running averages used at evaluation are put back afterwards. Used for
    the frozen-critic passes (:func:`frozen`) and, with ``joint_bn_stats="keep"``, for Eq. 5's update.
    """
    kept = []
    if keep:
        # the passes inside get copies to update; the originals are put back afterwards. (Restoring
        # values in place instead would break autograd: the backward pass, which runs after this
        # context closes, checks that the tensors its forward saw were not modified.)
        for bn in _batch_norms(modules):
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                original = getattr(bn, name)
                if original is not None:
                    kept.append((bn, name, original))
                    setattr(bn, name, original.clone())
    try:
        yield
    finally:
        for bn, name, original in kept:
            setattr(bn, name, original)


def _batch_norms(modules: Iterable[torch.nn.Module]) -> list[torch.nn.Module]:
    """Every BatchNorm layer with running statistics in ``modules``."""
    return [m for module in modules for m in module.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _is_main_process() -> bool:
    """False in the processes of a torchrun run other than rank 0, which write nothing."""
    from csigen.distributed import world

    return world().is_main


@dataclass
class _Nets:
    F: torch.nn.Module
    G: torch.nn.Module | None = None
    D: torch.nn.Module | None = None
    E: torch.nn.Module | None = None
    Dp: torch.nn.Module | None = None

    def items(self) -> list[tuple[str, torch.nn.Module]]:
        return [(k, v) for k, v in vars(self).items() if v is not None]


class Trainer:
    """Trains one variant of the model on one one-class task (Algorithm 1).

    Args:
        config: the run's :class:`~csigen.config.TrainConfig`.
        out_dir: where checkpoints and history go (``None``: keep nothing on disk).
        task: an already loaded :class:`~csigen.data.OneClassTask` (loaded from
            ``config`` when omitted).
        callbacks: :class:`Callback` instances.
        progress: show a tqdm progress bar with the current losses.
    """

    def __init__(self, config: TrainConfig, out_dir: str | os.PathLike | None = None, *, task=None,
                 callbacks: Sequence[Callback] = (), progress: bool = True):
        from csigen import augment as aug
        from csigen import data as data_mod

        t_init = time.perf_counter()  # a time budget counts this setup too (csigen.budget)
        self.config = config
        self.out_dir = check_writable(out_dir) if out_dir is not None else None
        if self.out_dir is not None and _is_main_process():  # torchrun: rank 0 alone writes
            remove_stale_temporaries(self.out_dir)
        self.device = resolve_device(config.device)
        self.callbacks = list(callbacks)
        self.progress = progress
        self.task = task if task is not None else data_mod.load_task_for(config)
        n_train = self.task.train_images.shape[0]
        if n_train < 2:
            raise ValueError(f"the inlier class has {n_train} training images; at least 2 are needed")
        self.batch_size = min(config.batch_size, n_train)
        self.steps_per_epoch = max(1, n_train // self.batch_size)
        self.total_steps = config.planned_steps(n_train)
        # config.time_budget_min: fit() replaces total_steps by the planned count before step 1 (csigen.budget)
        self.budget_plan: dict[str, Any] | None = None
        if config.time_budget_min is None:  # a budget bounds the run's time: no estimate of an unbounded one
            self._warn_if_slow()

        self.train_images = self.task.train_images.to(self.device)
        # T: CSI's SimCLR augmentation. Full-image tasks (ImageNet-30) crop each view on the data side
        # (task.train_view), so T has no crop there, as CSI's T for ImageNet; G(h) has no data side, so its
        # views get that crop and flip on the device (augment.crop_flip_views; None: the 32x32 path)
        full_images = bool(getattr(self.task, "has_full_images", False))
        self.train_crop = (float(config.train_crop_min), 1.0)  # CSI: (0.08, 1)
        blur = dict(p_blur=float(config.train_blur_p))  # 0: CSI's T (no blur); the paper's text: SimCLR's 0.5
        self.augment = (aug.no_crop_augment(**blur) if full_images
                        else aug.SimCLRAugment(crop_scale=self.train_crop, **blur)).to(self.device)
        self.synthetic_views = functools.partial(aug.crop_flip_views, scale=self.train_crop) if full_images else None
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.train_seconds = 0.0
        self._build()
        self.setup_seconds = time.perf_counter() - t_init

    # ------------------------------------------------------------------ setup
    def _warn_if_slow(self) -> None:
        if self.device.type != "cpu" or self.config.preset not in ("quick", "paper"):
            return
        seconds = (self.total_steps * self.batch_size / 32 * CPU_SECONDS_PER_32_IMAGES
                   * GAN_OVERHEAD[self.config.variant])
        warnings.warn(
            f"preset {self.config.preset!r} is meant for a GPU, and this runtime has none: "
            f"{self.total_steps} steps will take about {seconds / 3600:.1f} h on this CPU. "
            "Continuing; use --preset cpu for a run that fits a CPU, or switch to a GPU runtime.",
            RuntimeWarning, stacklevel=3,
        )

    def _build(self) -> None:
        from csigen.optim import build_f_optimizer, fused_options

        c = self.config
        self.precision = _Precision(c.amp, self.device)
        self.amp_dtype = self.precision.dtype  # training's autocast dtype (None: float32)
        if self.device.type == "cuda":
            # speed by default; deterministic=True (with amp="off") removes what varies from run to run
            # except the few CUDA kernels without a deterministic version (average pooling's and grid
            # sampling's backward: warn_only, PyTorch warns), so GPU runs can still differ slightly
            torch.backends.cudnn.benchmark = not c.deterministic
            torch.backends.cudnn.deterministic = c.deterministic
        if c.deterministic:  # cuBLAS reads this when the process makes its first handle (CLI: here)
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(c.seed)
        nets = self._build_networks()
        channels_last = c.channels_last and self.device.type in CHANNELS_LAST_DEVICES
        for _, net in nets.items():
            net.to(self.device)
            if channels_last:
                net.to(memory_format=torch.channels_last)
        self.nets = self._distribute(nets)  # torchrun: DDP wrappers (one process: nets as they are)
        fused = fused_options(self.device)  # one kernel per update on CUDA (csigen.optim)
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "F": build_f_optimizer(c.f_optimizer, nets.F.parameters(), c.f_lr, c.f_momentum,
                                   c.f_weight_decay, c.lars_trust_coef, **fused)
        }
        for name, net in nets.items():
            if name != "F":
                self.optimizers[name] = torch.optim.Adam(net.parameters(), lr=c.gan_lr, betas=c.gan_betas, **fused)
        if c.compile:
            for _, net in nets.items():
                net.compile()  # in place: the forward is compiled, parameters and state_dict keys unchanged
        # seeded CPU generators: drawn on the CPU and moved (augment._rand, Generator.sample_latent), so
        # a checkpoint's generator states resume on any device
        self.aug_gen = torch.Generator().manual_seed(c.seed + 1)
        self.z_gen = torch.Generator().manual_seed(c.seed + 2)
        self.readout = LossReadout()  # the step's losses stay on the device until one read per step
        self.draws = StepDraws()  # the step's random draws reach the device in one transfer

    def _distribute(self, nets: _Nets) -> _Nets:
        """Set this process's share of a torchrun run and wrap ``nets`` for it (:mod:`csigen.distributed`).

        ``self.world``: rank and number of processes K (K = 1 without torchrun).
        ``self.batch_size`` stays the global batch (all processes together);
        ``self.process_batch_size`` is this process's rows of it and
        ``self.gan_batch_size`` its latents h per GAN block (None: as many as
        its real images). With K > 1 the networks become
        :class:`~csigen.distributed.DistributedNet` (SyncBatchNorm on CUDA);
        with K = 1 everything is as without this method.
        """
        from csigen import distributed

        self.world = distributed.world()
        distributed.check_config(self.config, self.world)
        self.process_batch_size, self.gan_batch_size = distributed.process_batch_sizes(
            self.config, self.batch_size, self.world)
        return distributed.wrap_networks(nets, self.device, self.world)

    def _build_networks(self) -> _Nets:
        """The variant's networks, freshly initialised on the CPU: F (ResNet-18), and G, D, E, D' if used.

        A subclass may build other networks with the same interfaces (bench/gpu_check.py does, for
        fp16 on a CPU, where 16-bit convolutions are tens of times slower than float32).
        """
        from csigen import models

        c, size = self.config, self.task.image_size
        F = models.ResNet18(variant="imagenet" if size >= 128 else "cifar", num_shifts=c.num_shifts,
                             width=c.f_width)
        nets = _Nets(F=F)
        if c.uses_generator:
            nets.G = models.Generator(z_dim=c.z_dim, channels=c.g_channels, image_size=size)
            nets.D = models.Discriminator(channels=c.d_channels, image_size=size)
        if c.uses_encoder:
            nets.E = models.Encoder(z_dim=c.z_dim, channels=c.e_channels, image_size=size)
            nets.Dp = models.LatentDiscriminator(z_dim=c.z_dim)
        return nets

    def _autocast(self):
        """Forward-pass context of the run's precision (see :class:`_Precision`)."""
        return self.precision.autocast()

    # --------------------------------------------------------------- updates
    def _update(self, name: str, loss: torch.Tensor, opt_names: Iterable[str]) -> torch.Tensor:
        """One optimiser update of the networks ``opt_names`` on ``loss``; returns the detached loss.

        Nothing here reads a value back to the host (on a GPU that would wait for every queued
        kernel, some twenty times per ``full`` step): the loss and the gradient norm are handed to
        ``self.readout``, which :meth:`train_step` reads once per step and which raises
        :class:`NonFiniteLossError` there, naming the first non-finite loss or gradient of the step.
        The fp16 loss scaler reads its overflow flag itself (``GradScaler.step``).
        """
        opts = [self.optimizers[n] for n in opt_names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        scaler = self.precision.scaler(name)
        if scaler is None:
            loss.backward()
            self.readout.add(name, loss.detach(), self._clip_gradients(opts))
            for opt in opts:
                opt.step()
            return loss.detach()
        # fp16: inf/NaN gradients are overflow of the scaled loss; the scaler skips the step and
        # lowers its scale (the clipping below then sees NaN, which the skipped step ignores)
        self.readout.add(name, loss.detach())
        scaler.scale(loss).backward()
        for opt in opts:
            scaler.unscale_(opt)
        self._clip_gradients(opts)
        if not self.precision.step(name, opts) and scaler.get_scale() < MIN_LOSS_SCALE:
            raise NonFiniteLossError(
                f"gradient of loss {name!r} is inf/NaN at step {self.step} even at fp16 loss scale "
                f"{scaler.get_scale():g} (exploding gradients, not fp16 overflow). Lower the learning rates, "
                "use amp='bf16' or 'off', or set on_nonfinite='rollback'."
            )
        return loss.detach()

    def _clip_gradients(self, opts: Sequence[torch.optim.Optimizer]) -> torch.Tensor:
        """Clip the gradients of ``opts``' parameters to ``max_grad_norm`` (L2); returns their norm."""
        params = [p for opt in opts for g in opt.param_groups for p in g["params"] if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)

    def _set_lr(self) -> float:
        from csigen.optim import warmup_cosine_factor

        c = self.config
        epoch = self.step / self.steps_per_epoch
        total_epochs = self.total_steps / self.steps_per_epoch
        warmup = min(c.warmup_epochs, total_epochs)
        lr = c.f_lr * warmup_cosine_factor(epoch, total_epochs, warmup, c.warmup_multiplier) * self.lr_scale
        for group in self.optimizers["F"].param_groups:
            group["lr"] = lr
        for name, opt in self.optimizers.items():
            if name != "F":
                for group in opt.param_groups:
                    group["lr"] = c.gan_lr * self.lr_scale
        return lr

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This step's real images ``(X, X2)``, float ``(B, 3, S, S)`` on the device.

        The order is a function of (seed, epoch). ImageNet-30 (``task.has_full_images``):
        X and X2 are two independent data-side views of the same images, CSI's
        ``RandomResizedCrop`` + flip of each full image
        (:meth:`~csigen.data.OneClassTask.train_view` with ``views=2``), drawn from
        ``aug_gen``, whose state the checkpoint holds, so a resumed run draws the
        same crops. Other datasets: X is the stored images and X2 is None (the
        losses make both views from X).
        """
        from csigen.data import to_float

        epoch, index = divmod(self.step, self.steps_per_epoch)
        if getattr(self, "_perm_epoch", None) != epoch:  # the order is a function of (seed, epoch): resumable
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm_cpu = torch.randperm(self.train_images.shape[0], generator=g)
            self._perm = self._perm_cpu.to(self.device)
            self._perm_epoch = epoch
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        rows = shard_rows(rows, self.world)  # torchrun: this process's contiguous part of the global batch
        x2 = None
        if getattr(self.task, "has_full_images", False):
            x, x2 = self.task.train_view(self._perm_cpu[rows], generator=self.aug_gen, device=self.device,
                                         views=2, scale=self.train_crop).chunk(2)
        else:
            x = to_float(self.train_images[self._perm[rows]], device=self.device)
        if self.config.channels_last and self.device.type in CHANNELS_LAST_DEVICES:
            x = x.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last) if x2 is not None else None
        return x, x2

    def run_step(self) -> dict[str, float]:
        """:meth:`train_step`, its random draws moved to the device in one transfer (:mod:`csigen.draws`).

        Steps are told apart by their place in the GAN cycle (whether and which updates they run),
        so each recorded plan fits every later step of its kind. The numbers are those of
        :meth:`train_step` called alone.
        """
        c = self.config
        with self.draws.step((self.step + 1) % c.gan_every if c.uses_generator else 0):
            return self.train_step()

    def train_step(self) -> dict[str, float]:
        """One iteration of Algorithm 1's loop; returns the losses of this step."""
        from csigen import losses as L

        c, n = self.config, self.nets
        kw = dict(num_shifts=c.num_shifts, temperature=c.temperature, cls_weight=c.cls_weight, generator=self.aug_gen)
        lr = self._set_lr()
        record: dict[str, float] = {"step": self.step + 1, "epoch": self.step / self.steps_per_epoch, "lr": lr}
        for _, net in n.items():
            net.train()
        X, X2 = self._batch()  # X2: a second data-side view of X's images (ImageNet-30), else None
        with self._autocast():
            out = L.csi_loss(n.F, X, self.augment, second_view=X2, **kw)
        record["csi"] = self._update("csi", out["loss"], ["F"])
        record["con_si"], record["cls_si"] = out["con_si"].detach(), out["cls_si"].detach()

        if c.uses_generator and (self.step + 1) % c.gan_every == 0:
            record.update(self._gan_block(X, kw, X2))
        record = self.readout.read(record, self.step)  # the step's one host read; raises on NaN/inf
        self.step += 1
        return record

    def _gan_block(self, X: torch.Tensor, kw: dict, X2: torch.Tensor | None = None) -> dict[str, float]:
        from csigen import losses as L

        c, n, rec = self.config, self.nets, {}
        full = c.uses_encoder
        h = n.G.sample_latent(self.gan_batch_size or X.shape[0], generator=self.z_gen, device=self.device)
        ge = ["G", "E"] if full else ["G"]
        with self._autocast():
            x_tilde = n.G(h)
            x_hat = n.G(n.E(X)) if full else None
            d_loss = L.discriminator_loss(
                n.D(X), n.D(x_tilde.detach()), n.D(x_hat.detach()) if full else None, c.gan_loss)
        rec["d"] = self._update("d", d_loss, ["D"])
        with self._autocast(), frozen(n.D):
            adv = L.generator_adversarial_loss(n.D(x_tilde), n.D(x_hat) if full else None, c.gan_loss)
        rec["g_adv"] = self._update("g_adv", adv, ge)
        with self._autocast(), frozen(n.F, keep_running_stats=c.critic_bn_stats == "keep"):
            csi_s = L.csi_s_loss(n.F, n.G(h), self.augment, synthetic_views=self.synthetic_views, **kw)
        rec["csi_s"] = self._update("csi_s", csi_s["loss"], ["G"])
        if full:
            with self._autocast():
                e_x = n.E(X)
                ld = L.latent_discriminator_loss(n.Dp(h), n.Dp(e_x.detach()), c.gan_loss)
            rec["ld"] = self._update("ld", ld, ["Dp"])
            with self._autocast(), frozen(n.Dp):
                e_adv = L.encoder_latent_adversarial_loss(n.Dp(e_x), c.gan_loss)
            rec["e_adv"] = self._update("e_adv", e_adv, ["E"])
            with self._autocast(), frozen(n.F, keep_running_stats=c.critic_bn_stats == "keep"):
                r = L.reconstruction_loss(n.F, X, n.G(n.E(X)), self.augment, lam=c.rec_lambda,
                                          reduction=c.rec_reduction, generator=self.aug_gen)
            rec["rec"] = self._update("rec", r["loss"], ["G", "E"])
            rec["rec_pixel"], rec["rec_sim"] = r["pixel"].detach(), r["feature_sim"].detach()
            with self._autocast():
                with torch.no_grad():
                    g_h = n.G(h)
                lrec = L.latent_reconstruction_loss(n.E(g_h), h, reduction=c.rec_reduction)
            rec["lrec"] = self._update("lrec", lrec, ["E"])
        with self._autocast(), running_stats_kept(n.F, keep=c.joint_bn_stats == "keep"):
            joint = L.joint_loss(n.F, X, x_tilde.detach(), self.augment, second_view=X2,
                                 synthetic_views=self.synthetic_views, **kw)
        rec["joint"] = self._update("joint", joint["loss"], ["F"])
        return rec

    # ---------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "checkpoint.pt" if self.out_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        for name, net in self.nets.items():
            for p in net.parameters():
                if not torch.isfinite(p).all():
                    raise NonFiniteLossError(
                        f"refusing to checkpoint: weights of {name} contain NaN/inf at step {self.step}")
        rng = {"torch": torch.get_rng_state(), "aug": self.aug_gen.get_state(), "z": self.z_gen.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {
            "config": self.config.to_dict(),
            "signature": self.config.model_signature(),
            "step": self.step,
            "total_steps": self.total_steps,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "train_seconds": self.train_seconds,
            "nets": {k: v.state_dict() for k, v in self.nets.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "precision": self.precision.state_dict(),  # fp16 loss scalers, per update site
            "rng": rng,
            "history": self.history,
            "time_budget": self.budget_plan,  # csigen.budget's plan of a time-budget run, else None
        }

    def load_state_dict(self, state: dict[str, Any], path: str | os.PathLike = "<memory>") -> None:
        check_compatible(state.get("signature", {}), self.config.model_signature(), path)
        for name, net in self.nets.items():
            try:
                net.load_state_dict(state["nets"][name])
            except (KeyError, RuntimeError) as exc:
                raise CheckpointError(
                    f"checkpoint {str(path)!r} does not fit network {name} of this setup ({exc}); "
                    "it was made with other model sizes: use another output folder or matching settings"
                ) from exc
        for name, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        # csigen 0.1.0 wrote "scaler" (one CUDA scaler that could not take a second step): nothing to restore
        self.precision.load_state_dict(state.get("precision", {}))
        rng = {name: value.cpu() for name, value in state["rng"].items()}  # set_state takes CPU byte tensors only
        torch.set_rng_state(rng["torch"])
        self.aug_gen.set_state(rng["aug"])
        self.z_gen.set_state(rng["z"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.step = int(state["step"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = list(state.get("history", []))
        self.readout.pending.clear()  # checks queued by a step that raised belong to the state left behind
        if state.get("time_budget") is not None:  # a time-budget run keeps its recorded plan (csigen.budget)
            from csigen.budget import apply_plan

            apply_plan(self, state["time_budget"])

    def save_checkpoint(self) -> Path | None:
        path = self.checkpoint_path
        if path is None or not self.world.is_main:  # torchrun: rank 0 alone writes
            return None
        save_checkpoint(path, self.state_dict())
        self.write_history()
        for cb in self.callbacks:
            cb.on_checkpoint(self, path)
        return path

    def write_history(self) -> None:
        if self.out_dir is not None:
            atomic_write_text(self.out_dir / "history.csv", self.history_frame().to_csv(index=False))

    def history_frame(self):
        """Every loss of every step as a pandas DataFrame (NaN where a loss was not computed)."""
        import pandas as pd

        return pd.DataFrame(self.history)

    def try_resume(self) -> bool:
        """Load ``out_dir/checkpoint.pt`` if present; returns whether it did.

        A slim finished run (``weights.pt``, no checkpoint) cannot be resumed:
        :class:`csigen.disk.FinishedRunError` says so (and what to do instead).
        """
        path = self.checkpoint_path
        if path is None or not path.exists():
            from csigen.disk import refuse_to_resume_finished

            refuse_to_resume_finished(self.out_dir)
            return False
        # loaded to the CPU: the random-number states must stay CPU byte tensors (torch.set_rng_state,
        # Generator.set_state), and load_state_dict copies the weights and optimiser state to self.device
        self.load_state_dict(load_checkpoint(path, map_location="cpu"), path)
        return True

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, config: TrainConfig | None = None, task=None,
                 device: str | None = None) -> "Trainer":
        """The networks of a run, for inspection or scoring.

        They are loaded from ``run_dir/checkpoint.pt``, or from ``weights.pt``
        when the run finished slim (:func:`csigen.disk.run_weights_file`; the
        optimisers then keep their fresh state and ``history`` is read from
        ``history.csv``). The run's config comes from that file; ``config``, when given (a
        notebook's current settings), must describe the same model, otherwise a
        :class:`~csigen.checkpoint.CheckpointError` names each differing field.
        ``device`` overrides the device the run was trained on (e.g. ``"cpu"``). The
        evaluation settings (:data:`csigen.config.EVAL_FIELDS`) are those of the run's
        ``result.json`` when it has one, which ``eval --save`` may have changed
        (:mod:`csigen.rescore`).
        The returned trainer writes nothing: its ``out_dir`` is None.
        """
        from csigen.disk import run_weights_file

        path = run_weights_file(run_dir)  # checkpoint.pt, else weights.pt; FileNotFoundError saying what to do
        state = load_checkpoint(path, map_location="cpu")
        saved = TrainConfig.from_dict({**state["config"], **({"device": device} if device else {})})
        record = load_result(run_dir)
        if record is not None and "config" in record:  # evaluation settings: the record's (csigen.rescore)
            evaluated = TrainConfig.from_dict(record["config"])
            saved = dataclasses.replace(saved, **{k: getattr(evaluated, k) for k in EVAL_FIELDS})
        if config is not None:
            check_compatible(saved.model_signature(), config.model_signature(), path)
        with warnings.catch_warnings():  # loading trains nothing: no "meant for a GPU" time estimate
            warnings.filterwarnings("ignore", message=r"preset .* is meant for a GPU", category=RuntimeWarning)
            trainer = cls(saved, None, task=task, progress=False)
        if "optimizers" not in state:  # weights.pt of a slim finished run: the rest as freshly built
            import pandas as pd

            history = Path(run_dir) / "history.csv"
            rows = pd.read_csv(history).to_dict("records") if history.is_file() else []
            state = {**trainer.state_dict(), "history": rows, **state}
        trainer.load_state_dict(state, path)
        return trainer

    # ------------------------------------------------------------- training
    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def fit(self, resume: bool = True, stop_after_steps: int | None = None) -> "Trainer":
        """Run Algorithm 1 until ``total_steps`` (or ``stop_after_steps`` more steps).

        With ``resume=True`` a checkpoint in ``out_dir`` is continued; the
        result is the same as an uninterrupted run on the CPU. With
        ``config.time_budget_min``, a run at step 0 first plans its length
        (:func:`csigen.budget.plan_budget`); a resumed one keeps its recorded plan.
        """
        if resume:
            self.try_resume()
        if self.config.time_budget_min is not None and self.budget_plan is None:
            from csigen.budget import plan_budget

            plan_budget(self)  # times the first steps on a throwaway copy, then fixes total_steps
        from tqdm.auto import tqdm

        from csigen.fid import maybe_save_g_snapshot
        stop_at = self.total_steps if stop_after_steps is None else min(
            self.total_steps, self.step + stop_after_steps)
        bar = tqdm(total=self.total_steps, initial=self.step,
                   # torchrun: rank 0's bar only; a shown bar leaves `disable` unset so TQDM_DISABLE=1 still hides it
                   **({} if self.progress and self.world.is_main else {"disable": True}),
                   desc=f"{self.config.variant} {self.task.inlier_name}", dynamic_ncols=True)
        last_save = time.monotonic()
        try:
            while self.step < stop_at:
                t0 = time.perf_counter()
                seed_step_generators(self)  # torchrun: each process's draws from (seed, rank, step)
                try:
                    record = self.run_step()
                except NonFiniteLossError:
                    if self.config.on_nonfinite != "rollback" or not self._rollback():
                        raise
                    bar.n = self.step
                    continue
                except torch.cuda.OutOfMemoryError as exc:
                    raise torch.cuda.OutOfMemoryError(
                        f"out of GPU memory at batch size {self.batch_size}: pass a smaller batch_size "
                        "(--batch-size), a smaller gan_batch_size or eval_batch_size, or free the GPU "
                        "(restart the runtime)") from exc
                record = mean_record(record)  # torchrun: the losses averaged over the processes
                dt = time.perf_counter() - t0
                self.train_seconds += dt
                record["seconds"] = dt
                self.history.append(record)
                bar.update(1)
                bar.set_postfix({k: f"{record[k]:.3f}" for k in ("csi", "joint", "rec") if k in record},
                                refresh=False)
                for cb in self.callbacks:
                    cb.on_step(self, record)
                if self.step % self.steps_per_epoch == 0:
                    for cb in self.callbacks:
                        cb.on_epoch(self, self.step // self.steps_per_epoch)
                if self.world.is_main:  # torchrun: rank 0 alone writes
                    maybe_save_g_snapshot(self)  # G's weights every g_snapshot_every_steps steps
                every = self.config.checkpoint_every_steps
                if (every and self.step % every == 0) or time.monotonic() - last_save >= self.config.checkpoint_every_s:
                    self.save_checkpoint()
                    last_save = time.monotonic()
        finally:
            bar.close()
        self.save_checkpoint()
        barrier()  # torchrun: no process returns before rank 0's last checkpoint is written
        return self

    def _rollback(self) -> bool:
        path = self.checkpoint_path
        if path is None or not path.exists() or self.rollbacks >= 3:
            return False
        scale = self.lr_scale
        self.load_state_dict(load_checkpoint(path, map_location="cpu"), path)  # see try_resume
        self.lr_scale = scale * 0.5
        self.rollbacks += 1
        warnings.warn(f"non-finite loss: rolled back to step {self.step} with learning rates x{self.lr_scale}",
                      RuntimeWarning, stacklevel=2)
        return True

    # ----------------------------------------------------------- evaluation
    def evaluate(self, score: str | None = None, eval_samples: int | None = None, seed: int = 0,
                 amp: bool | None = None) -> dict[str, Any]:
        """Score the test set with every score from one feature pass; see :func:`evaluate_model`.

        ``score`` picks the primary score (default ``config.score``); ``amp``
        overrides ``config.eval_amp``: evaluate under autocast with the training
        precision dtype (``self.amp_dtype``; float32 when training runs in
        float32) instead of in float32.
        """
        amp = self.config.eval_amp if amp is None else amp
        return evaluate_model(unwrap(self.nets.F), self.task, self.config, device=self.device, score=score,
                              eval_samples=eval_samples, seed=seed,
                              amp_dtype=self.amp_dtype if amp else None)


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """``"fp32"`` for None, else the autocast dtype's name (``"bfloat16"``, ``"float16"``)."""
    return "fp32" if amp_dtype is None else str(amp_dtype).removeprefix("torch.")


def eval_features(F: torch.nn.Module, task, config: TrainConfig, split: str, *, device: torch.device,
                  seed: int = 0, num_samples: int | None = None, amp_dtype: torch.dtype | None = None,
                  count: int | None = None):
    """Features of the task's ``split`` (``"train"`` or ``"test"``) images as the evaluation extracts them.

    CSI's ``ood_pre`` transform, R = ``num_samples`` (default ``config.eval_samples``)
    draws of :func:`csigen.score.extract_features`:

    * 32x32 data: the stored images; T's crop has area ``config.eval_crop_scale``
      (0.54, :func:`csigen.augment.eval_augment`);
    * full-image tasks (ImageNet-30, ``task.has_full_images``): each draw of each
      chunk is a fresh ``RandomResizedCrop(224, scale=(s, s))`` + flip of the full
      ``Resize(256)`` image (:meth:`~csigen.data.OneClassTask.eval_view`, from the
      draw's generator, ``s = config.eval_crop_scale``), for training and test
      images alike, and T has no crop (:func:`csigen.augment.no_crop_augment`).

    ``count``: only the first ``count`` images (an estimate's sample).
    Returns :class:`csigen.score.Features`.
    """
    from csigen import augment as aug
    from csigen import score as S

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    images = task.train_images if split == "train" else task.test_images
    images = images if count is None else images[:count]
    s = config.eval_crop_scale
    views = None
    if getattr(task, "has_full_images", False):
        T = aug.no_crop_augment().to(device)

        def views(rows, g):
            return task.eval_view(rows, g, device, split=split, scale=s)
    else:
        T = aug.SimCLRAugment(crop_scale=(s, s)).to(device)
    return S.extract_features(F, images, T, num_samples=num_samples or config.eval_samples,
                              num_shifts=config.num_shifts, batch_size=config.eval_batch_size, device=device,
                              seed=seed, amp_dtype=amp_dtype, views=views)


def eval_feature_pair(F: torch.nn.Module, task, config: TrainConfig, *, device: torch.device, seed: int = 0,
                      num_samples: int | None = None, amp_dtype: torch.dtype | None = None):
    """``(train, test)`` :class:`csigen.score.Features`, each from :func:`eval_features` with these settings.

    What every score is computed from (:func:`evaluate_model`, Figure 2's panels, ``bench/score_terms.py``).
    """
    kw = {"device": device, "seed": seed, "num_samples": num_samples, "amp_dtype": amp_dtype}
    return eval_features(F, task, config, "train", **kw), eval_features(F, task, config, "test", **kw)


def evaluate_model(F: torch.nn.Module, task, config: TrainConfig, *, device: torch.device,
                   score: str | None = None, eval_samples: int | None = None, seed: int = 0,
                   amp_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """One feature pass over the training and test images, then every score and its AUROC.

    Features (:func:`eval_features`, R = ``eval_samples`` draws of CSI's
    evaluation transform, from the full images on ImageNet-30) are extracted once; every score of
    :data:`csigen.score.SCORE_NAMES` is computed from them (scoring costs about
    a second). ``amp_dtype`` None (default) runs the network in float32, as
    CSI evaluates; a dtype runs its forward pass under autocast.

    Returns a dict:

    * ``auroc``, ``per_class_auroc`` (``{"class": auroc}``), ``score``: the
      primary score (``score`` or ``config.score``);
    * ``scores``: ``{name: {"auroc": a, "per_class_auroc": {...}}}`` for every score;
    * ``eval_samples`` (R), ``eval_precision`` (``"fp32"`` or the autocast dtype name);
    * ``arrays``: what ``scores.npz`` stores: ``scores`` (primary, ``(M,)``),
      ``score_<name>`` for every score, ``labels``, ``is_inlier``.
    """
    from csigen import score as S

    score = score or config.score
    if score not in S.SCORE_NAMES:
        raise ValueError(f"score must be one of {S.SCORE_NAMES}, got {score!r}")
    R = eval_samples or config.eval_samples
    train_feats, test_feats = eval_feature_pair(F, task, config, device=device, seed=seed, num_samples=R,
                                                amp_dtype=amp_dtype)
    values = {name: v.float().cpu() for name, v in S.all_scores(test_feats, train_feats).items()}
    inlier = task.test_is_inlier.cpu()
    labels = task.test_labels.cpu()
    scores = {}
    for name, v in values.items():
        scores[name] = {
            "auroc": S.auroc(v[inlier], v[~inlier]),
            "per_class_auroc": {str(k): a for k, a in S.per_class_auroc(v, labels, task.inlier).items()},
        }
    arrays = {"scores": values[score].numpy(),
              **{f"score_{name}": v.numpy() for name, v in values.items()},
              "labels": labels.numpy(), "is_inlier": inlier.numpy()}
    return {**scores[score], "score": score, "scores": scores, "eval_samples": R,
            "eval_precision": precision_name(amp_dtype), "arrays": arrays}


def evaluation_record(ev: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``result.json`` that :func:`evaluate_model`'s result ``ev`` fills."""
    keys = ("auroc", "per_class_auroc", "score", "scores", "eval_samples", "eval_precision")
    return {k: ev[k] for k in keys}


def write_scores(out_dir: str | os.PathLike, ev: dict[str, Any]) -> None:
    """``out_dir/scores.npz`` (atomic) from ``ev["arrays"]``: scores (primary), score_<name>, labels, is_inlier."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **ev["arrays"])
    atomic_write_bytes(Path(out_dir) / "scores.npz", buffer.getvalue())


def load_result(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``out_dir/result.json`` as a dict, or None if the run has not finished."""
    import json

    path = Path(out_dir) / "result.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def run(config: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = True, callbacks: Sequence[Callback] = (),
        progress: bool = True, task=None, force: bool = False,
        keep_checkpoint: bool = False) -> dict[str, Any] | None:
    """Train (or resume) and evaluate one run; write every artefact into ``out_dir``.

    Re-running is safe (a notebook, a sweep, the same command again): a
    finished run (``result.json``) with the same config is returned as is; an
    interrupted one (``checkpoint.pt``, no ``result.json``) with the same config
    resumes when ``resume=True``. "The same config" is
    :func:`csigen.config.same_run_config` (records of older csigen versions
    included). A folder holding a run with another config raises
    :class:`csigen.config.RunConfigMismatchError` naming each differing field,
    and nothing is written. ``force=True`` skips these checks and redoes the
    run (with ``resume=True`` a compatible checkpoint is still continued, then
    evaluated again); ``resume=False`` starts the training over. Either way the
    folder's old records (``result.json``, ``scores.npz``, FID records,
    ``weights.pt``) are deleted before training, so the run is never reported
    as the old finished one (:func:`csigen.disk.discard_records_for_retraining`).

    A finished run is slim (:func:`csigen.disk.finish_run_files`): its networks'
    weights go into ``weights.pt`` and ``checkpoint.pt`` (with the optimiser
    state) is deleted, unless ``keep_checkpoint=True``. Such a run is reported
    like any finished one; it cannot be trained further (asking to resume it
    without its ``result.json`` raises :class:`csigen.disk.FinishedRunError`), and
    ``force=True`` trains it again from step 0.

    One run on K processes (``torchrun --nproc_per_node=K -m csigen train``,
    :mod:`csigen.distributed`): every process trains its share of each step;
    rank 0 alone writes files, evaluates and returns the result (which records
    ``world_size``, ``global_batch`` and ``per_process_batch``); the other
    processes return None once training is done.
    """
    import json

    from csigen.disk import (
        CHECKPOINT_FILE,
        WEIGHTS_FILE,
        discard_records_for_retraining,
        finish_run_files,
        refuse_to_resume_finished,
    )

    out = check_writable(out_dir)
    config_path = out / "config.json"
    if not force:
        existing = load_result(out)
        if existing is not None:
            check_schema_version(existing.get("schema_version", 0), str(out / "result.json"))
            require_same_run_config(existing.get("config", {}), config,
                                    f"{str(out)!r} holds a finished run (result.json)")
            return existing
        if resume and (out / CHECKPOINT_FILE).exists():
            saved = (json.loads(config_path.read_text()) if config_path.exists()
                     else load_checkpoint(out / CHECKPOINT_FILE)["config"])
            require_same_run_config(saved, config, f"{str(out)!r} holds an interrupted run (checkpoint.pt)")
        elif resume:
            refuse_to_resume_finished(out)  # weights.pt without result.json: finished, not resumable
    elif resume and not (out / CHECKPOINT_FILE).exists() and (out / WEIGHTS_FILE).exists():
        resume = False  # force on a slim finished run: nothing to continue, it is trained again
    if _is_main_process():  # torchrun: rank 0 alone writes
        if force:  # the old run's records would outlive its networks (csigen.disk)
            discard_records_for_retraining(out, restart=not resume)
        atomic_write_json(config_path, config.to_dict())
    t0 = time.perf_counter()
    trainer = Trainer(config, out, task=task, callbacks=callbacks, progress=progress)
    trainer.fit(resume=resume)
    if not trainer.world.is_main:  # torchrun: rank 0 evaluates and writes the result
        return None
    t_eval = time.perf_counter()
    ev = trainer.evaluate()
    eval_seconds = time.perf_counter() - t_eval
    write_scores(out, ev)
    result = {
        "schema_version": SCHEMA_VERSION,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "dataset": config.dataset,
        "inlier": trainer.task.inlier,
        "inlier_name": trainer.task.inlier_name,
        "class_names": list(trainer.task.class_names),  # names a local copy's data set (csigen.results.table_dataset)
        "variant": config.variant,
        "preset": config.preset,
        "seed": config.seed,
        **evaluation_record(ev),
        "steps": trainer.step,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": trainer.train_seconds + eval_seconds,
        "wall_seconds_this_session": time.perf_counter() - t0,
        "images_per_second": (trainer.step * trainer.batch_size / trainer.train_seconds
                              if trainer.train_seconds else None),
        "time_budget": trainer.budget_plan,  # csigen.budget's plan (planned steps, s/step, ...); None: no budget
        "world_size": trainer.world.size,  # processes that trained the run (torchrun), 1 without
        "global_batch": trainer.batch_size,  # images per step, all processes together
        "per_process_batch": trainer.process_batch_size,
        **environment_info(trainer.device),
        "config": config.to_dict(),
    }
    atomic_write_json(out / "result.json", result)
    finish_run_files(trainer, out, keep_checkpoint=keep_checkpoint)  # weights.pt; drops the optimiser state
    return result
