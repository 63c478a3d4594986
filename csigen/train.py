"""Algorithm 1: train F (and G, D, E, D') on one inlier class, then score.

Entry points:

* :class:`Trainer` - ``Trainer(config, out_dir).fit(resume=True)`` then
  ``.evaluate()``; callbacks (:class:`Callback`) see every step, epoch and
  checkpoint, so a notebook can draw a live loss plot.
* :func:`run` - train (or resume) and evaluate, writing ``config.json``,
  ``history.csv``, ``checkpoint.pt``, ``scores.npz`` and ``result.json``
  into ``out_dir``; a finished run is loaded instead of retrained.

One training step (``variant="full"``), following Algorithm 1 line by line:

1. F: minimise L_CSI(X) (Eq. 4) with LARS.
2. Every ``gan_every`` steps (N = 5), with h ~ N(0, I), X~ = G(h), X^ = G(E(X)):

   a. D: minimise -L_D(X, X~, X^) (Eq. 7); then G, E: maximise it.
   b. G: minimise L_CSI-S(G(h)) (Eq. 6) through a frozen F.
   c. D': minimise -L_LD(h, X) (Eq. 9); then E: maximise it.
   d. G, E: minimise L_REC(X, G(E(X)), T1, T2) (Eq. 8) through a frozen F.
   e. E: minimise L_LREC(h) (Eq. 10).
   f. F: minimise L_JOINT(X union X~) (Eq. 5), X~ as drawn at the top of the block.

``csi+g`` drops E, D' and the terms that need them (X^ in Eq. 7, Eq. 8-10);
``csi`` is step 1 only. Each update recomputes its forward pass, because the
previous update changed the weights (Algorithm 1 is sequential).
F's BatchNorm statistics also see synthetic images when F is used frozen.
"""

from __future__ import annotations

import contextlib
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
    atomic_write_json,
    atomic_write_bytes,
    atomic_write_text,
    check_compatible,
    check_writable,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from csigen.config import TrainConfig

__all__ = ["Callback", "NonFiniteLossError", "Trainer", "run", "load_result", "resolve_device"]

#: Seconds per csi training step of 32 images on an idle 2-core CPU, and the time of a step of each
#: variant relative to csi (preset cpu on CIFAR-10, 2026-11-29: 5.1 s per step of 16 images for csi,
#: 8.2 for csi+g, 8.4 for full; bench/gan_overhead.py); used only for the GPU-preset-on-CPU warning.
CPU_SECONDS_PER_32_IMAGES = 10.0
GAN_OVERHEAD = {"csi": 1.0, "csi+g": 1.6, "full": 1.65}


class NonFiniteLossError(FloatingPointError):
    """A loss or gradient became NaN/inf; the message names which and at which step."""


class Callback:
    """Hooks called by :class:`Trainer`; override any of them."""

    def on_step(self, trainer: "Trainer", record: dict[str, float]) -> None:  # noqa: D401
        """After every step, with that step's losses."""

    def on_epoch(self, trainer: "Trainer", epoch: int) -> None:
        """After every full pass over the training images."""

    def on_checkpoint(self, trainer: "Trainer", path: Path) -> None:
        """After a checkpoint was written."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but no GPU is available; use device='auto' or 'cpu' "
            "(in Colab: Runtime > Change runtime type > GPU)"
        )
    return device


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
    return info


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module):
    """Temporarily stop gradients to the parameters of ``modules`` (not to their inputs)."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


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

        self.config = config
        self.out_dir = check_writable(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
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
        total = config.epochs * self.steps_per_epoch
        self.total_steps = min(total, config.max_steps) if config.max_steps else total
        self._warn_if_slow()

        self.train_images = self.task.train_images.to(self.device)
        self.augment = aug.SimCLRAugment().to(self.device)
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.lr_scale = 1.0
        self.rollbacks = 0
        self.train_seconds = 0.0
        self._build()

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
        from csigen import models
        from csigen.optim import build_f_optimizer

        c = self.config
        if self.device.type == "cuda":
            # speed by default; bit-reproducible GPU runs with deterministic=True (and amp=False)
            torch.backends.cudnn.benchmark = not c.deterministic
            torch.backends.cudnn.deterministic = c.deterministic
        if c.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.manual_seed(c.seed)
        size = self.task.image_size
        F = models.ResNet18(variant="imagenet" if size >= 128 else "cifar", num_shifts=c.num_shifts)
        nets = _Nets(F=F)
        if c.uses_generator:
            nets.G = models.Generator(z_dim=c.z_dim, channels=c.g_channels, image_size=size)
            nets.D = models.Discriminator(channels=c.d_channels, image_size=size)
        if c.uses_encoder:
            nets.E = models.Encoder(z_dim=c.z_dim, channels=c.e_channels, image_size=size)
            nets.Dp = models.LatentDiscriminator(z_dim=c.z_dim)
        channels_last = c.channels_last and self.device.type == "cuda"
        for _, net in nets.items():
            net.to(self.device)
            if channels_last:
                net.to(memory_format=torch.channels_last)
        self.nets = nets
        self.optimizers: dict[str, torch.optim.Optimizer] = {
            "F": build_f_optimizer(c.f_optimizer, F.parameters(), c.f_lr, c.f_momentum,
                                   c.f_weight_decay, c.lars_trust_coef)
        }
        for name, net in nets.items():
            if name != "F":
                self.optimizers[name] = torch.optim.Adam(net.parameters(), lr=c.gan_lr, betas=c.gan_betas)
        self.aug_gen = torch.Generator().manual_seed(c.seed + 1)
        self.z_gen = torch.Generator().manual_seed(c.seed + 2)

        amp = c.amp and self.device.type == "cuda"
        bf16 = amp and torch.cuda.get_device_capability(self.device) >= (8, 0)
        self.amp_dtype = (torch.bfloat16 if bf16 else torch.float16) if amp else None
        self.scaler = torch.amp.GradScaler("cuda") if amp and not bf16 else None

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    # --------------------------------------------------------------- updates
    def _update(self, name: str, loss: torch.Tensor, opt_names: Iterable[str]) -> float:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"loss {name!r} is {value} at step {self.step}: training diverged. Lower the learning "
                "rates (f_lr, gan_lr), or set on_nonfinite='rollback' to restart from the last "
                "checkpoint with halved rates."
            )
        opts = [self.optimizers[n] for n in opt_names]
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()
        params = [p for opt in opts for g in opt.param_groups for p in g["params"] if p.grad is not None]
        for opt in opts:
            if self.scaler is not None:
                self.scaler.unscale_(opt)
        norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm))
        if not math.isfinite(norm) and self.scaler is None:
            raise NonFiniteLossError(
                f"gradient of loss {name!r} is {norm} at step {self.step} (exploding gradients). "
                "Lower the learning rates or set on_nonfinite='rollback'."
            )
        for opt in opts:
            if self.scaler is not None:
                self.scaler.step(opt)
            else:
                opt.step()
        return value

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

    def _batch(self) -> torch.Tensor:
        from csigen.data import to_float

        epoch, index = divmod(self.step, self.steps_per_epoch)
        if getattr(self, "_perm_epoch", None) != epoch:  # the order is a function of (seed, epoch): resumable
            g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(self.train_images.shape[0], generator=g).to(self.device)
            self._perm_epoch = epoch
        idx = self._perm[index * self.batch_size:(index + 1) * self.batch_size]
        x = to_float(self.train_images[idx], device=self.device)
        if self.config.channels_last and self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self) -> dict[str, float]:
        """One iteration of Algorithm 1's loop; returns the losses of this step."""
        from csigen import losses as L

        c, n = self.config, self.nets
        kw = dict(num_shifts=c.num_shifts, temperature=c.temperature, generator=self.aug_gen)
        lr = self._set_lr()
        record: dict[str, float] = {"step": self.step + 1, "epoch": self.step / self.steps_per_epoch, "lr": lr}
        for _, net in n.items():
            net.train()
        X = self._batch()
        with self._autocast():
            out = L.csi_loss(n.F, X, self.augment, **kw)
        record["csi"] = self._update("csi", out["loss"], ["F"])
        record["con_si"], record["cls_si"] = float(out["con_si"].detach()), float(out["cls_si"].detach())

        if c.uses_generator and (self.step + 1) % c.gan_every == 0:
            record.update(self._gan_block(X, kw))
        self.step += 1
        return record

    def _gan_block(self, X: torch.Tensor, kw: dict) -> dict[str, float]:
        from csigen import losses as L

        c, n, rec = self.config, self.nets, {}
        full = c.uses_encoder
        h = n.G.sample_latent(c.gan_batch_size or X.shape[0], generator=self.z_gen, device=self.device)
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
        with self._autocast(), frozen(n.F):
            csi_s = L.csi_s_loss(n.F, n.G(h), self.augment, **kw)
        rec["csi_s"] = self._update("csi_s", csi_s["loss"], ["G"])
        if full:
            with self._autocast():
                e_x = n.E(X)
                ld = L.latent_discriminator_loss(n.Dp(h), n.Dp(e_x.detach()), c.gan_loss)
            rec["ld"] = self._update("ld", ld, ["Dp"])
            with self._autocast(), frozen(n.Dp):
                e_adv = L.encoder_latent_adversarial_loss(n.Dp(e_x), c.gan_loss)
            rec["e_adv"] = self._update("e_adv", e_adv, ["E"])
            with self._autocast(), frozen(n.F):
                r = L.reconstruction_loss(n.F, X, n.G(n.E(X)), self.augment, lam=c.rec_lambda,
                                          reduction=c.rec_reduction, generator=self.aug_gen)
            rec["rec"] = self._update("rec", r["loss"], ["G", "E"])
            rec["rec_pixel"], rec["rec_sim"] = float(r["pixel"].detach()), float(r["feature_sim"].detach())
            with self._autocast():
                with torch.no_grad():
                    g_h = n.G(h)
                lrec = L.latent_reconstruction_loss(n.E(g_h), h, reduction=c.rec_reduction)
            rec["lrec"] = self._update("lrec", lrec, ["E"])
        with self._autocast():
            joint = L.joint_loss(n.F, X, x_tilde.detach(), self.augment, **kw)
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
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "rng": rng,
            "history": self.history,
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
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        self.aug_gen.set_state(state["rng"]["aug"])
        self.z_gen.set_state(state["rng"]["z"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        self.step = int(state["step"])
        self.lr_scale = float(state.get("lr_scale", 1.0))
        self.rollbacks = int(state.get("rollbacks", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.history = list(state.get("history", []))

    def save_checkpoint(self) -> Path | None:
        path = self.checkpoint_path
        if path is None:
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
        """Load ``out_dir/checkpoint.pt`` if present; returns whether it did."""
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        self.load_state_dict(load_checkpoint(path, map_location=self.device), path)
        return True

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, config: TrainConfig | None = None, task=None,
                 device: str | None = None) -> "Trainer":
        """The networks of a run, loaded from ``run_dir/checkpoint.pt``, for inspection or scoring.

        The run's config comes from the checkpoint; ``config``, when given (a
        notebook's current settings), must describe the same model, otherwise a
        :class:`~csigen.checkpoint.CheckpointError` names each differing field.
        ``device`` overrides the device the run was trained on (e.g. ``"cpu"``).
        The returned trainer writes nothing: its ``out_dir`` is None.
        """
        path = Path(run_dir) / "checkpoint.pt"
        if not path.exists():
            raise FileNotFoundError(
                f"no checkpoint in {str(run_dir)!r}: train the run first (csigen.train.run(config, run_dir) or "
                "`python -m csigen train ... --out DIR`), or check the folder")
        state = load_checkpoint(path, map_location="cpu")
        saved = TrainConfig.from_dict({**state["config"], **({"device": device} if device else {})})
        if config is not None:
            check_compatible(saved.model_signature(), config.model_signature(), path)
        trainer = cls(saved, None, task=task, progress=False)
        trainer.load_state_dict(state, path)
        return trainer

    # ------------------------------------------------------------- training
    @property
    def finished(self) -> bool:
        return self.step >= self.total_steps

    def fit(self, resume: bool = True, stop_after_steps: int | None = None) -> "Trainer":
        """Run Algorithm 1 until ``total_steps`` (or ``stop_after_steps`` more steps).

        With ``resume=True`` a checkpoint in ``out_dir`` is continued; the
        result is the same as an uninterrupted run on the CPU.
        """
        if resume:
            self.try_resume()
        from tqdm.auto import tqdm

        stop_at = self.total_steps if stop_after_steps is None else min(
            self.total_steps, self.step + stop_after_steps)
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress,
                   desc=f"{self.config.variant} {self.task.inlier_name}", dynamic_ncols=True)
        last_save = time.monotonic()
        try:
            while self.step < stop_at:
                t0 = time.perf_counter()
                try:
                    record = self.train_step()
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
                every = self.config.checkpoint_every_steps
                if (every and self.step % every == 0) or time.monotonic() - last_save >= self.config.checkpoint_every_s:
                    self.save_checkpoint()
                    last_save = time.monotonic()
        finally:
            bar.close()
        self.save_checkpoint()
        return self

    def _rollback(self) -> bool:
        path = self.checkpoint_path
        if path is None or not path.exists() or self.rollbacks >= 3:
            return False
        scale = self.lr_scale
        self.load_state_dict(load_checkpoint(path, map_location=self.device), path)
        self.lr_scale = scale * 0.5
        self.rollbacks += 1
        warnings.warn(f"non-finite loss: rolled back to step {self.step} with learning rates x{self.lr_scale}",
                      RuntimeWarning, stacklevel=2)
        return True

    # ----------------------------------------------------------- evaluation
    def evaluate(self, score: str | None = None, eval_samples: int | None = None, seed: int = 0) -> dict[str, Any]:
        """Score the test set (Eq. 11 / M_ens, or CSI's score) and compute AUROC."""
        return evaluate_model(self.nets.F, self.task, self.config, device=self.device, score=score,
                              eval_samples=eval_samples, seed=seed, amp_dtype=self.amp_dtype)


def evaluate_model(F: torch.nn.Module, task, config: TrainConfig, *, device: torch.device,
                   score: str | None = None, eval_samples: int | None = None, seed: int = 0,
                   amp_dtype=None) -> dict[str, Any]:
    """Features of training and test images, the chosen score, pooled and per-class AUROC."""
    from csigen import score as S
    from csigen.augment import SimCLRAugment

    score = score or config.score
    R = eval_samples or config.eval_samples
    s = config.eval_crop_scale
    aug = SimCLRAugment(crop_scale=(s, s)).to(device)
    kw = dict(num_samples=R, num_shifts=config.num_shifts, batch_size=config.eval_batch_size,
              device=device, seed=seed)
    ctx = torch.autocast("cuda", dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    with ctx:
        train_feats = S.extract_features(F, task.train_images, aug, **kw)
        test_feats = S.extract_features(F, task.test_images, aug, **kw)
    if score == "csi":
        scores = S.csi_score(test_feats, train_feats)
    else:
        scores = S.nearest_neighbour_score(test_feats, train_feats, neighbour=score)
    scores = scores.float().cpu()
    inlier = task.test_is_inlier.cpu()
    result = {
        "auroc": S.auroc(scores[inlier], scores[~inlier]),
        "per_class_auroc": {str(k): v for k, v in
                            S.per_class_auroc(scores, task.test_labels.cpu(), task.inlier).items()},
        "score": score,
        "eval_samples": R,
    }
    return {**result, "scores": scores.numpy(), "labels": task.test_labels.cpu().numpy(),
            "is_inlier": inlier.numpy()}


def load_result(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``out_dir/result.json`` as a dict, or None if the run has not finished."""
    import json

    path = Path(out_dir) / "result.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def run(config: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = True, callbacks: Sequence[Callback] = (),
        progress: bool = True, task=None, force: bool = False) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; write every artefact into ``out_dir``.

    A finished run (``result.json`` with the same config) is returned as is
    unless ``force=True``: re-running a notebook or a sweep redoes only
    unfinished work.
    """
    import io
    import json

    out = check_writable(out_dir)
    existing = load_result(out)
    if existing is not None and not force and existing.get("config") == config.to_dict():
        return existing
    config_path = out / "config.json"
    if config_path.exists() and resume and (out / "checkpoint.pt").exists():
        saved = json.loads(config_path.read_text())
        check_compatible(TrainConfig.from_dict(saved).model_signature(), config.model_signature(),
                         out / "checkpoint.pt")
    atomic_write_json(config_path, config.to_dict())
    t0 = time.perf_counter()
    trainer = Trainer(config, out, task=task, callbacks=callbacks, progress=progress)
    trainer.fit(resume=resume)
    t_eval = time.perf_counter()
    ev = trainer.evaluate()
    eval_seconds = time.perf_counter() - t_eval
    buffer = io.BytesIO()
    np.savez_compressed(buffer, scores=ev["scores"], labels=ev["labels"], is_inlier=ev["is_inlier"])
    atomic_write_bytes(out / "scores.npz", buffer.getvalue())
    result = {
        "dataset": config.dataset,
        "inlier": trainer.task.inlier,
        "inlier_name": trainer.task.inlier_name,
        "variant": config.variant,
        "preset": config.preset,
        "seed": config.seed,
        "auroc": ev["auroc"],
        "per_class_auroc": ev["per_class_auroc"],
        "score": ev["score"],
        "eval_samples": ev["eval_samples"],
        "steps": trainer.step,
        "train_seconds": trainer.train_seconds,
        "eval_seconds": eval_seconds,
        "seconds": trainer.train_seconds + eval_seconds,
        "wall_seconds_this_session": time.perf_counter() - t0,
        "images_per_second": (trainer.step * trainer.batch_size / trainer.train_seconds
                              if trainer.train_seconds else None),
        **environment_info(trainer.device),
        "config": config.to_dict(),
    }
    atomic_write_json(out / "result.json", result)
    return result
