"""One run on K processes (K GPUs, or K CPU processes): ``torchrun --nproc_per_node=K -m csigen train ...``.

Nothing here runs at import; a process without a process group (every run
not started by torchrun, and torchrun with one process) is "world size 1", for
which every helper is the identity and training is bit-identical to a plain run.

What a K-process run does (CSI's multi-GPU training, which wraps its model in
apex's SyncBatchNorm and DistributedDataParallel and gathers the features with
diffdist before the NT-Xent similarity matrix):

* **Process group.** :func:`init_from_env` reads torchrun's ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; backend
  ``nccl`` on CUDA (process ``LOCAL_RANK`` uses GPU ``cuda:LOCAL_RANK``),
  ``gloo`` on the CPU.
* **Batch.** ``TrainConfig.batch_size`` is the *global* batch: the images of
  one step of all processes together. Each process takes its contiguous
  ``batch_size / K`` rows of the step's rows (:func:`shard_rows`), so a step
  sees the same images for any K, and ``steps_per_epoch``, the learning-rate
  schedule and ``f_lr`` / ``gan_lr`` mean the same as in one process: the
  same config is the same run on 1 or K GPUs (no learning-rate rescaling;
  more GPUs = the same run sooner). ``gan_batch_size``, when set, is global too.
  ``batch_size`` must be a multiple of K.
* **Losses.** NT-Xent (Eq. 1, through Eq. 2 in L_CSI, L_CSI-S and L_JOINT) sees
  the global batch as negatives: :func:`gather_views` all-gathers the
  projection features of every process, with gradients, before the
  similarity matrix. Every other term is a mean over this process's rows; as
  DistributedDataParallel averages the gradients over processes, each update
  follows the gradient of the global batch's loss. The step's losses in
  ``history.csv`` are averaged over the processes (:func:`mean_record`).
* **BatchNorm.** On CUDA every BatchNorm layer of F, G, D (and E, D') becomes a
  ``torch.nn.SyncBatchNorm``: statistics over the global batch, as one
  process would compute them. On the CPU, where SyncBatchNorm does not run,
  each process normalises with the statistics of its own rows (running
  statistics: rank 0's are saved), so a CPU K-process run equals a one-process
  run whose BatchNorm is computed per block of ``batch_size / K`` images
  (``tests/test_distributed.py`` checks exactly that).
* **Frozen critics.** Algorithm 1 uses F (Eq. 6, Eq. 8), D and D' as frozen
  critics: :func:`csigen.train.frozen` turns off ``requires_grad`` of their
  parameters for one pass, whose backward pass then reaches none of them.
  DistributedDataParallel tolerates such a pass (its reducer only waits once
  some gradient of the network has arrived; ``tests/test_distributed.py``
  passes with or without what follows), but there is nothing to synchronise,
  so :class:`DistributedNet` runs a network whose parameters are all frozen
  (or any pass with gradients off) directly, outside DDP's hooks: DDP's
  bookkeeping sees only the passes that train the network. The gradients
  flowing *through* a critic to G and E are synchronised by G's and E's own
  wrappers, and SyncBatchNorm still synchronises the critic's statistics (it
  does so by itself, without DDP). ``find_unused_parameters`` stays off: every
  update's backward pass reaches every parameter of the networks it updates
  (a network partly frozen would need it).
* **Randomness.** Each process draws its own augmentations and latents: with
  K > 1 the trainer's generators are re-seeded at every step from
  (seed, stream, rank, step) (:func:`seed_step_generators`), so a run resumed
  from a checkpoint continues exactly as the uninterrupted run would, also
  when its processes' generator states were never saved.
* **Files.** Rank 0 alone writes ``config.json``, checkpoints, ``history.csv``,
  G snapshots, ``scores.npz`` and ``result.json``, and evaluates (the other
  processes return when training is done). Every process reads the
  checkpoint to resume. ``result.json`` records ``world_size``,
  ``global_batch`` and ``per_process_batch``.
* **Not with K > 1:** ``on_nonfinite="rollback"`` (processes would roll back
  to different checkpoints) and ``time_budget_min`` (each process would plan a
  different length): both are refused with a message saying what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["World", "world", "launched_by_torchrun", "init_from_env", "shutdown", "process_device",
           "gather_rows", "gather_views", "mean_record", "shard_rows", "step_seed", "seed_step_generators",
           "check_config", "process_batch_sizes", "wrap_networks", "unwrap", "DistributedNet", "barrier"]

#: Keys of a step's record that are the same in every process (not averaged by :func:`mean_record`).
SHARED_RECORD_KEYS = ("step", "epoch", "lr", "seconds")
#: Streams of :func:`step_seed` (the trainer's CPU generators).
SEED_STREAMS = {"aug": 1, "z": 2}


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes (``size`` 1: no process group)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def active(self) -> bool:
        """True in a run of more than one process."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and evaluates."""
        return self.rank == 0


def world() -> World:
    """The process group this process belongs to (``World()`` when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    size = dist.get_world_size()
    rank = dist.get_rank()
    return World(rank=rank, size=size, local_rank=int(os.environ.get("LOCAL_RANK", rank)),
                 backend=str(dist.get_backend()))


def launched_by_torchrun() -> bool:
    """Whether the environment describes a torchrun worker of a run of more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_from_env(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment; returns this process's :class:`World`.

    ``device`` is ``TrainConfig.device``: ``"auto"`` and ``"cuda"`` give the
    ``nccl`` backend and GPU ``cuda:LOCAL_RANK`` (set as the current device)
    when CUDA is available, ``"cpu"`` (or ``"auto"`` without a GPU) the ``gloo``
    backend. With ``WORLD_SIZE`` 1 (or no torchrun) nothing is initialised.
    """
    if not launched_by_torchrun():
        return World()
    if dist.is_initialized():
        return world()
    kind = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                        "cpu" if device == "auto" else device).type
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} was requested under torchrun but no GPU is available; "
                               "use --device cpu (gloo backend) or run on a GPU machine")
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"torchrun started process LOCAL_RANK={local_rank} but this machine has "
                f"{torch.cuda.device_count()} GPU(s): pass --nproc_per_node at most the number of GPUs")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    elif kind == "cpu":
        backend = "gloo"
    else:
        raise RuntimeError(f"a torchrun run needs CUDA GPUs (nccl) or the CPU (gloo), not device {device!r}")
    dist.init_process_group(backend=backend)
    return world()


def shutdown() -> None:
    """Leave the process group (if any); safe to call when there is none."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process (one process: ``obj``); e.g. rank 0's decision to train a run."""
    if not world().active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    if world().active:
        dist.barrier()


def process_device(device: torch.device) -> torch.device:
    """``device`` as this process of a K-process run uses it: ``cuda`` -> ``cuda:LOCAL_RANK``.

    An explicit other GPU index is refused (every process would otherwise
    pick the same GPU). One process: ``device`` unchanged.
    """
    w = world()
    if not w.active or device.type != "cuda":
        return device
    if device.index is not None and device.index != w.local_rank:
        raise RuntimeError(
            f"device {str(device)!r} was requested in process LOCAL_RANK={w.local_rank} of a torchrun run: "
            "each process uses the GPU of its LOCAL_RANK; pass --device auto or cuda (and "
            "CUDA_VISIBLE_DEVICES to choose the GPUs)")
    return torch.device("cuda", w.local_rank)


# --------------------------------------------------------------------------- #
# Losses over the global batch
# --------------------------------------------------------------------------- #
class _GatherRows(torch.autograd.Function):
    """All-gather of equal-sized row blocks with gradients.

    What ``torch.distributed.nn.functional.all_gather`` does; that one is deprecated (a
    FutureWarning on every call) in favour of a private module, so csigen keeps these few lines.

    Forward: ``(n, ...)`` per process -> ``(K * n, ...)``, rank-major. Backward:
    the gradients of the gathered rows are summed over the processes (each
    process's loss uses every row) and each process keeps those of its own rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Every process's rows, rank-major, ``(K * n, ...)``, differentiable; ``x`` itself for one process."""
    if not world().active:
        return x
    return _GatherRows.apply(x)


def gather_views(features: torch.Tensor, views: int = 2) -> torch.Tensor:
    """NT-Xent's input over the global batch: the features of every process, views kept apart.

    Args:
        features: ``(views * M, D)``, this process's ``[view1; view2]`` (rows i
            and i + M a positive pair; :func:`csigen.losses.nt_xent`).

    Returns:
        ``(views * K * M, D)`` float32 ``[view1 of rank 0; ...; view1 of rank K-1;
        view2 of rank 0; ...]``, so rows i and i + K * M are again a positive
        pair and every other row of every process is a negative; gradients
        reach every process's own rows (:class:`_GatherRows`). One process:
        ``features`` itself (not even a copy), so that path is unchanged.
    """
    w = world()
    if not w.active:
        return features
    rows, dim = features.shape
    if rows % views:
        raise ValueError(f"features of shape {tuple(features.shape)} do not split into {views} views")
    gathered = gather_rows(features.float())  # (K * views * M, D), rank-major
    return gathered.view(w.size, views, rows // views, dim).transpose(0, 1).reshape(w.size * rows, dim)


def mean_record(record: dict[str, Any]) -> dict[str, Any]:
    """A step's losses averaged over the processes (one all-reduce); bookkeeping keys as they are.

    One process: ``record`` unchanged. Values may be Python numbers or 0-dim
    tensors; numbers come back as floats (on CUDA one host synchronisation,
    which reading the losses needs anyway), tensors as 0-dim float32 tensors.
    """
    w = world()
    keys = sorted(k for k in record if k not in SHARED_RECORD_KEYS)
    if not w.active or not keys:
        return record
    device = torch.device("cuda", torch.cuda.current_device()) if w.backend == "nccl" else torch.device("cpu")
    values = torch.stack([torch.as_tensor(record[k], dtype=torch.float64).to(device).reshape(())
                          for k in keys])
    dist.all_reduce(values)
    values = values / w.size
    out = dict(record)
    as_floats = values.tolist() if any(not isinstance(record[k], torch.Tensor) for k in keys) else None
    for i, k in enumerate(keys):
        out[k] = values[i].to(torch.float32) if isinstance(record[k], torch.Tensor) else as_floats[i]
    return out


# --------------------------------------------------------------------------- #
# Data and randomness
# --------------------------------------------------------------------------- #
def shard_rows(rows: slice, w: World | None = None) -> slice:
    """This process's contiguous part of a step's rows ``rows`` (a slice of ``K * b`` rows): ``b`` rows."""
    w = w or world()
    if not w.active:
        return rows
    n = rows.stop - rows.start
    if n % w.size:
        raise ValueError(f"a step's {n} rows do not split into {w.size} processes")
    b = n // w.size
    return slice(rows.start + w.rank * b, rows.start + (w.rank + 1) * b)


def step_seed(seed: int, stream: str, rank: int, step: int) -> int:
    """Seed of generator ``stream`` (``"aug"`` or ``"z"``) of process ``rank`` at (0-based) step ``step``."""
    entropy = [int(seed) % 2**64, SEED_STREAMS[stream], int(rank), int(step)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0])


def seed_step_generators(trainer) -> None:
    """K > 1: re-seed ``trainer.aug_gen`` and ``trainer.z_gen`` for its next step from (seed, rank, step).

    Each process then draws its own augmentations and latents, and a resumed
    run (whose checkpoint holds only rank 0's generator states) draws what the
    uninterrupted run draws. One process: nothing happens (the generators run
    on from their seeds, as they always have).
    """
    w = trainer.world
    if not w.active:
        return
    seed = trainer.config.seed
    trainer.aug_gen.manual_seed(step_seed(seed, "aug", w.rank, trainer.step))
    trainer.z_gen.manual_seed(step_seed(seed, "z", w.rank, trainer.step))


# --------------------------------------------------------------------------- #
# Configuration and networks
# --------------------------------------------------------------------------- #
def check_config(config, w: World | None = None) -> None:
    """Refuse, with the fix, what a K-process run cannot do (see the module docstring)."""
    w = w or world()
    if not w.active:
        return
    if config.on_nonfinite == "rollback":
        raise ValueError(
            "on_nonfinite='rollback' works in a one-process run only (the processes of a torchrun run would "
            "roll back to different checkpoints): use on_nonfinite='stop' and resume from the last "
            "checkpoint, with lower learning rates if needed")
    if config.time_budget_min is not None:
        raise ValueError(
            "a time budget (--time-budget) is planned in a one-process run only: plan it once without "
            "torchrun and pass the --max-steps it records (result.json 'time_budget'), or give "
            "--max-steps/--epochs")


def process_batch_sizes(config, batch_size: int, w: World | None = None) -> tuple[int, int | None]:
    """This process's (real images, latents h) per step, from the global batch and ``gan_batch_size``.

    ``batch_size`` is the step's global batch (``min(config.batch_size, training images)``);
    latents None means "as many as the real images" (Algorithm 1's default).
    """
    w = w or world()
    gan = config.gan_batch_size
    for name, value in (("batch_size", batch_size), ("gan_batch_size", gan)):
        if value is not None and value % w.size:
            raise ValueError(
                f"{name}={value} does not split into the {w.size} processes of this torchrun run: it is the "
                f"global batch (all processes together); use a multiple of {w.size}")
    return batch_size // w.size, (None if gan is None else gan // w.size)


class DistributedNet(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel for one of Algorithm 1's networks.

    * A pass with gradients off, or with every parameter frozen
      (:func:`csigen.train.frozen`: a critic), runs the network itself,
      outside DDP's gradient hooks (see the module docstring).
    * ``state_dict`` / ``load_state_dict`` are the network's own (no
      ``module.`` prefix), so checkpoints and ``weights.pt`` are the same for 1
      or K processes; other attributes (``sample_latent``, ``z_dim``, ...)
      are looked up on the network.
    """

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled() or not any(p.requires_grad for p in self.module.parameters()):
            return self.module(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module" or "module" not in self.__dict__.get("_modules", {}):
                raise
            return getattr(self._modules["module"], name)

    def state_dict(self, *args, **kwargs):
        return self.module.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.module.load_state_dict(state_dict, strict=strict, assign=assign)


def wrap_networks(nets, device: torch.device, w: World | None = None):
    """``nets`` (a ``csigen.train._Nets``) for K processes: each network in a :class:`DistributedNet`.

    On CUDA each BatchNorm layer becomes a ``torch.nn.SyncBatchNorm`` first. The
    networks are replaced in ``nets``, which is returned. Called by :meth:`csigen.train.Trainer._build` after the networks are on
    ``device`` and before the optimisers are made (the parameters stay the same
    tensors). DDP's constructor broadcasts rank 0's weights and buffers.
    One process: ``nets`` unchanged.
    """
    w = w or world()
    if not w.active:
        return nets
    import inspect

    # no buffer broadcast before each forward pass (DDP's constructor still copies rank 0's): BatchNorm
    # running statistics stay per process on the CPU (rank 0's are saved); with SyncBatchNorm they are equal.
    # torch >= 2.14 spells it forward_sync_buffers (broadcast_buffers warns there)
    no_sync = ({"forward_sync_buffers": False}
               if "forward_sync_buffers" in inspect.signature(DistributedNet.__init__).parameters
               else {"broadcast_buffers": False})
    for name, net in nets.items():
        if device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
        ids = [device.index] if device.type == "cuda" else None
        setattr(nets, name, DistributedNet(net, device_ids=ids, output_device=device.index if ids else None,
                                           **no_sync))
    return nets


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The network inside a :class:`DistributedNet` (anything else: itself)."""
    return net.module if isinstance(net, torch.nn.parallel.DistributedDataParallel) else net
