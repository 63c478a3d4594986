"""One configuration dataclass for a training run, and the named presets.

A :class:`TrainConfig` is frozen: a run never mutates it. Presets are named
configs (:data:`PRESETS`), each documented with its measured run time; any
field can be overridden with :func:`make_config`.

Schema versions. Every record a run writes (``config.json``, ``result.json``,
``checkpoint.pt``) carries ``"schema_version"`` (:data:`SCHEMA_VERSION`);
records of csigen 0.1.0 carry none and are version 0. :meth:`TrainConfig.from_dict`
upgrades an older config step by step (:data:`SCHEMA_CHANGES`): fields that
changed meaning are converted, fields that did not exist get their default
(or, where the old code behaved differently from today's default, the value
that describes what the old code did). A record from a *newer* csigen is
refused with :class:`SchemaVersionError` (upgrade csigen).
:func:`same_run_config` decides whether a run folder holds "the same run" as
a requested config.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

VARIANTS = ("csi", "csi+g", "full")
F_OPTIMIZERS = ("lars", "sgd", "adam")
SCORES = ("shared", "literal", "per_shift", "csi")
#: Training precision choices (``TrainConfig.amp``); see :func:`csigen.train.resolve_precision`.
AMP_MODES = ("auto", "bf16", "fp16", "off")


#: Version of the meaning of configs and run records (config.json, result.json, checkpoint.pt).
#: Bump it whenever a field changes meaning or a default changes what an absent field meant, and
#: add the conversion to :data:`_MIGRATIONS` (adding a field with a neutral default needs no bump).
SCHEMA_VERSION = 1
#: What each schema version changed, for messages and readers of old records.
SCHEMA_CHANGES: dict[int, str] = {
    0: "csigen 0.1.0: records carry no schema_version; amp is a bool",
    1: "schema_version in config.json, result.json and checkpoint.pt; amp is 'auto'|'bf16'|'fp16'|'off' "
       "(True -> 'auto', False -> 'off'); new fields critic_bn_stats (version 0 behaved as 'update'), "
       "eval_amp (default False: evaluation in float32), g_snapshot_every_steps, time_budget_min",
}
#: Fields that say where a run reads or writes and how often it saves, not what it computes:
#: :func:`same_run_config` ignores them (a run may resume on another device or data folder).
ENVIRONMENT_FIELDS = ("device", "data_root", "download", "checkpoint_every_s", "checkpoint_every_steps",
                      "g_snapshot_every_steps", "compile")
#: Fields only the generative part reads (G, D, E, D' and their updates, Algorithm 1's GAN block): a ``csi``
#: run has no G, so it computes the same whatever their values, and :func:`same_run_config` ignores them
#: between two ``csi`` configs (a preset may change its GAN without making its ``csi`` runs other runs).
GENERATIVE_FIELDS = ("gan_every", "gan_batch_size", "z_dim", "g_channels", "d_channels", "e_channels",
                     "gan_lr", "gan_betas", "gan_loss", "rec_lambda", "rec_reduction", "critic_bn_stats",
                     "joint_bn_stats")
#: Fields only the evaluation reads (after training), except a time-budget run's plan (csigen.budget subtracts
#: an estimate of the evaluation): a finished run without a time budget can be scored again under other values
#: of them without training again (:func:`csigen.rescore.rescore_run`, ``python -m csigen eval --save``).
EVAL_FIELDS = ("score", "eval_samples", "eval_crop_scale", "eval_batch_size", "eval_amp")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


class SchemaVersionError(ConfigError):
    """A record was written by a newer csigen than this one (its schema_version is unknown here)."""


class RunConfigMismatchError(ConfigError):
    """A run folder already holds a run with another configuration."""


def _is_real(value: Any) -> bool:
    """A finite int or float, not a bool (``True`` is an int to Python, never a weight or a duration here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run (Algorithm 1 plus the evaluation).

    Data:
        dataset, inlier, data_root, download, max_train, max_test,
        cifar100_superclasses: see :func:`csigen.data.load_task`.
    Variant:
        ``"csi"`` trains F with L_CSI only (Eq. 4); ``"csi+g"`` adds G and D
        (Eq. 5-7 without the reconstruction term); ``"full"`` adds E and D'
        (all of Eq. 5-10 in the order of Algorithm 1).
    Schedule:
        ``epochs`` passes over the inlier training images with ``batch_size``
        images per step (each seen as ``num_shifts`` x 2 views); ``max_steps``
        caps the total number of steps (the schedule still spans ``epochs``
        unless ``max_steps`` is smaller, in which case it spans ``max_steps``).
        ``time_budget_min`` (opt-in) replaces both by a step count planned
        from the measured speed of the first steps (:mod:`csigen.budget`).
        One run on K processes (``torchrun --nproc_per_node=K``,
        :mod:`csigen.distributed`): ``batch_size`` (and ``gan_batch_size``) is
        the global batch, all processes together, each taking ``batch_size / K``
        (a multiple of K is required); the learning rates and the schedule are
        those of the global batch, unchanged by K. The same config is the same
        run on 1 or K GPUs.
    F optimiser (CSI's code): LARS over SGD, lr 0.1, momentum 0.9, weight
        decay 1e-6, ``warmup_epochs`` of linear warm-up to
        ``warmup_multiplier`` x lr, then cosine decay, stepped per iteration.
    GAN (the paper): Adam lr 2e-4, betas (0.9, 0.999) for G, E, D and D'. The
        paper says "We use Adam ... for model training" without naming the
        networks, and that most settings follow CSI: csigen reads Adam as the
        GAN networks' optimiser and keeps CSI's LARS for F; the other reading
        is ``f_optimizer="adam", f_lr=2e-4``.
        GAN updates every ``gan_every`` F steps (the paper's N = 5 by default; the cpu-amx preset uses 4).
    """

    # data
    dataset: str = "shapes"
    inlier: int | str = 0
    data_root: str | None = None
    download: bool = True
    max_train: int | None = None
    max_test: int | None = None
    cifar100_superclasses: str = "csi"
    # run
    variant: str = "full"
    preset: str = "custom"
    seed: int = 0
    device: str = "auto"
    #: training precision: "auto" (bf16 on CUDA GPUs of compute capability >= 8.0, fp16 with loss
    #: scaling on older GPUs, fp32 on the CPU), "bf16", "fp16" (autocast + GradScaler) or "off" (fp32).
    amp: str = "auto"
    channels_last: bool = True
    deterministic: bool = False
    #: torch.compile every network's forward (nn.Module.compile: same state_dict keys, so checkpoints
    #: load either way). Off by default: the first steps pay the compilation (about a minute); worth it
    #: for long GPU runs. A speed setting like ``device``: a run may resume with it on or off.
    compile: bool = False
    # F and L_CSI
    epochs: int = 100
    max_steps: int | None = None
    #: channels of F's first ResNet-18 stage (64 = CSI and the paper; features are 8x this wide). Smaller
    #: widths are a CPU-scale departure (the ``cpu`` preset), recorded in every result.
    f_width: int = 64
    #: opt-in time budget in minutes for training AND evaluation together (csigen.budget): the first steps are
    #: timed on a throwaway copy, then the step count and the schedule are fixed to fit and recorded in the
    #: checkpoint and result.json ("time_budget"); replaces epochs/max_steps as the length. None: no budget.
    time_budget_min: float | None = None
    batch_size: int = 32
    num_shifts: int = 4
    temperature: float = 0.5
    #: weight of L_cls-SI in L_CSI (Eq. 4 and CSI's code: 1). A short-schedule departure when not 1:
    #: L_CSI = L_con-SI + cls_weight * L_cls-SI, for F's step and for the same loss in Eq. 6 and Eq. 8.
    cls_weight: float = 1.0
    #: smallest area fraction of the training crop (CSI: 0.08, i.e. RandomResizedCrop's (0.08, 1)). A
    #: short-schedule departure when larger: milder crops keep each view's orientation visible, so the
    #: rotation head (L_cls-SI) learns in fewer steps. Applies to T's crop (32x32 images), the data-side
    #: crop of full-size images (ImageNet-30) and the crop of G(h)'s views there.
    train_crop_min: float = 0.08
    #: probability of SimCLR's Gaussian blur in the training T (csigen.augment, step 4: sigma ~ U(0.1, 2) per
    #: image, a kernel of 10% of the image side, none below 20 pixels). 0, the default, is CSI's code, which has no blur (CIFAR and
    #: ImageNet-30 alike); the paper's text lists "random Gaussian blur, as following the setting in SimCLR"
    #: in T, and 0.5 (SimCLR's) is that reading. The training T only (Eq. 4-6, 8): the score's T_r stay CSI's
    #: evaluation transform.
    train_blur_p: float = 0.0
    f_optimizer: str = "lars"
    f_lr: float = 0.1
    f_momentum: float = 0.9
    f_weight_decay: float = 1e-6
    lars_trust_coef: float = 0.001
    warmup_epochs: float = 10.0
    warmup_multiplier: float = 10.0
    # generative part
    #: N of Algorithm 1 ("if every N batches"): a GAN block, ending in F's L_JOINT update (Eq. 5), follows
    #: every N-th F step. 5 is the paper's N (Section 3, "Setup": "we set N ... to 5"); the cpu-amx preset
    #: departs to 4, chosen on a CPU between N = 3, 4, 5 and 10 (bench/RESULTS.md, issue 12's sixth round).
    gan_every: int = 5
    #: B', the latents h per GAN block, i.e. the synthetic images in L_D, L_CSI-S and L_JOINT (Algorithm 1:
    #: "Sample plenty h"; the paper gives no number). None (csigen's reading): as many as the real batch
    #: (B' = B); a larger number is the other reading of "plenty".
    gan_batch_size: int | None = None
    z_dim: int = 128
    g_channels: int = 256
    d_channels: int = 128
    e_channels: int = 256
    gan_lr: float = 2e-4
    gan_betas: tuple[float, float] = (0.9, 0.999)
    gan_loss: str = "log"
    rec_lambda: float = 100.0
    rec_reduction: str = "mean"
    max_grad_norm: float = 1e4
    #: "keep": F's BatchNorm running statistics are untouched by the passes where F is a frozen
    #: critic (Eq. 6 on G(h), Eq. 8 on [T1(x); T2(x^)]); "update": those passes move them too
    #: (the other reading of "frozen"; csigen <= 0.1 behaved so).
    critic_bn_stats: str = "keep"
    #: "update": Eq. 5's F update (L_JOINT on X and G(h), one batch) moves F's BatchNorm running
    #: statistics like any training step, so the statistics F is evaluated with mix real and synthetic
    #: images (the literal reading: the paper says nothing of them); "keep": that update normalises with
    #: its batch's statistics but leaves the running averages, which then come from Eq. 4's real batches
    #: alone, as in CSI (tried under cpu-amx on bird: no gain, bench/RESULTS.md).
    joint_bn_stats: str = "update"
    on_nonfinite: str = "stop"
    # evaluation
    eval_samples: int = 10
    eval_crop_scale: float = 0.54
    score: str = "shared"
    eval_batch_size: int = 256
    eval_amp: bool = False  # evaluate under autocast with the training precision dtype (default fp32, as CSI)
    # checkpoints
    checkpoint_every_s: float = 300.0
    checkpoint_every_steps: int | None = None
    #: csi+g / full: write G's state_dict to out_dir/g_snapshots/step_<NNNNNN>.pt every k steps, for FID and
    #: samples over training (csigen.fid.maybe_save_g_snapshot); None = no snapshots; ignored for csi.
    g_snapshot_every_steps: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, fix: str) -> ConfigError:
            return ConfigError(f"invalid {name}={getattr(self, name)!r}: {fix}")

        if isinstance(self.amp, bool):  # csigen 0.1.0 spelling: True meant "auto", False "off"
            object.__setattr__(self, "amp", "auto" if self.amp else "off")
        if self.amp not in AMP_MODES:
            raise bad("amp", "choose 'auto' (bf16 on GPUs that support it, fp16 with loss scaling on older "
                             "GPUs, fp32 on the CPU), 'bf16', 'fp16' or 'off' (fp32)")
        if self.variant not in VARIANTS:
            raise bad("variant", f"choose one of {VARIANTS}")
        if self.f_optimizer not in F_OPTIMIZERS:
            raise bad("f_optimizer", f"choose one of {F_OPTIMIZERS}")
        if self.score not in SCORES:
            raise bad("score", f"choose one of {SCORES}")
        if self.gan_loss not in ("log", "minimax", "hinge"):
            raise bad("gan_loss", "choose 'log', 'minimax' or 'hinge'")
        if self.critic_bn_stats not in ("keep", "update"):
            raise bad("critic_bn_stats", "choose 'keep' (frozen critic leaves F's statistics) or 'update'")
        if self.joint_bn_stats not in ("keep", "update"):
            raise bad("joint_bn_stats", "choose 'update' (Eq. 5's update moves F's statistics) or 'keep' "
                                        "(they come from real batches alone)")
        if self.on_nonfinite not in ("stop", "rollback"):
            raise bad("on_nonfinite", "choose 'stop' or 'rollback'")
        for name in ("epochs", "batch_size", "gan_every", "eval_samples", "eval_batch_size", "f_width"):
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be a positive integer")
        if self.batch_size < 2:
            raise bad("batch_size", "NT-Xent needs at least 2 images per step")
        if not _is_real(self.cls_weight) or self.cls_weight < 0:
            raise bad("cls_weight", "use a finite number >= 0 (1 is CSI's and the paper's L_CSI)")
        if self.num_shifts < 1:
            raise bad("num_shifts", "use 4 (rotations) or 1 (plain SimCLR)")
        if self.max_steps is not None and self.max_steps < 1:
            raise bad("max_steps", "use None or a positive integer")
        if self.time_budget_min is not None and (not _is_real(self.time_budget_min) or self.time_budget_min <= 0):
            raise bad("time_budget_min", "use None (no budget) or a positive number of minutes for training and "
                                         "evaluation together, e.g. 15")
        if self.g_snapshot_every_steps is not None and int(self.g_snapshot_every_steps) < 1:
            raise bad("g_snapshot_every_steps", "use None (no G snapshots) or a positive number of steps")
        if not _is_real(self.train_crop_min) or not 0 < self.train_crop_min <= 1:
            raise bad("train_crop_min", "use an area fraction in (0, 1] (0.08 is CSI's RandomResizedCrop)")
        if not _is_real(self.train_blur_p) or not 0 <= self.train_blur_p <= 1:
            raise bad("train_blur_p", "use a probability in [0, 1] (0: CSI's T, no blur; 0.5: SimCLR's blur, "
                                      "the paper's text)")
        if not 0 < self.eval_crop_scale <= 1:
            raise bad("eval_crop_scale", "must be in (0, 1]")

    def planned_steps(self, n_train: int) -> int:
        """Training steps on ``n_train`` inlier images: ``epochs`` x steps per epoch, at most ``max_steps``.

        A step takes ``min(batch_size, n_train)`` images; an epoch is
        ``max(1, n_train // that)`` steps (:class:`csigen.train.Trainer`; a time
        budget replaces this count by its plan).
        """
        per_epoch = max(1, n_train // min(self.batch_size, n_train))
        total = self.epochs * per_epoch
        return min(total, self.max_steps) if self.max_steps else total

    @property
    def uses_generator(self) -> bool:
        return self.variant in ("csi+g", "full")

    @property
    def uses_encoder(self) -> bool:
        return self.variant == "full"

    def to_dict(self) -> dict[str, Any]:
        """Every field (JSON-ready) plus ``"schema_version"``: :data:`SCHEMA_VERSION`."""
        d = dataclasses.asdict(self)
        d["gan_betas"] = list(self.gan_betas)
        d["schema_version"] = SCHEMA_VERSION
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A config from :meth:`to_dict`'s output, of this or any older schema version.

        An older dict (``schema_version`` below :data:`SCHEMA_VERSION`, or absent:
        version 0) is upgraded by :func:`upgrade_config_dict`; fields it lacks take
        their defaults. Raises :class:`SchemaVersionError` for a dict from a newer
        csigen and :class:`ConfigError` for unknown fields or invalid values.
        """
        d = upgrade_config_dict(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        if "gan_betas" in d:
            d["gan_betas"] = tuple(d["gan_betas"])
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def model_signature(self) -> dict[str, Any]:
        """The fields a checkpoint's weights depend on (checked when resuming or loading)."""
        keys = ("dataset", "variant", "num_shifts", "z_dim", "g_channels", "d_channels", "e_channels")
        sig = {k: getattr(self, k) for k in keys}
        sig["inlier"] = str(self.inlier)
        return sig


def check_schema_version(version: Any, what: str = "record") -> int:
    """``version`` as an int, or a clear error if it is invalid or newer than :data:`SCHEMA_VERSION`.

    ``what`` names the record in the message, e.g. ``"runs/demo/result.json"``.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ConfigError(f"{what} has an invalid schema_version {version!r} (expected an integer >= 0); "
                          "it was not written by csigen or was edited by hand")
    if version > SCHEMA_VERSION:
        from csigen import __version__

        raise SchemaVersionError(
            f"{what} was written by a newer csigen (schema version {version}); csigen {__version__} reads "
            f"schema versions 0 to {SCHEMA_VERSION}. Upgrade csigen to use it (pip install -U csigen, or "
            "git pull and pip install -e . in a clone)")
    return version


def _upgrade_0_to_1(d: dict[str, Any]) -> dict[str, Any]:
    """Schema 0 (csigen 0.1.0) -> 1: ``amp`` bool -> str; the 0.1.0 meaning of ``critic_bn_stats``."""
    if isinstance(d.get("amp"), bool):
        # 0.1.0: amp=True meant "mixed precision on CUDA (bf16 where supported, else fp16), off on the CPU"
        d["amp"] = "auto" if d["amp"] else "off"
    # 0.1.0 let F's frozen-critic passes move its BatchNorm running statistics ("update"); today's
    # default ("keep") would misdescribe how such a run was trained.
    d.setdefault("critic_bn_stats", "update")
    return d


#: ``_MIGRATIONS[v]`` turns a config dict of schema version v into version v + 1.
_MIGRATIONS = {0: _upgrade_0_to_1}


def upgrade_config_dict(d: dict[str, Any], what: str = "config") -> dict[str, Any]:
    """A copy of config dict ``d`` upgraded to :data:`SCHEMA_VERSION`, without the ``schema_version`` key.

    Fields that ``d`` lacks and no migration fills are left out (the dataclass
    default applies). Raises :class:`SchemaVersionError` for a newer version.
    """
    if not isinstance(d, dict):
        raise ConfigError(f"{what} is not a config (a JSON object of fields), got {type(d).__name__}")
    d = dict(d)
    version = check_schema_version(d.pop("schema_version", 0), what)
    while version < SCHEMA_VERSION:
        d = _MIGRATIONS[version](d)
        version += 1
    return d


def fields_ignored_between(csi_runs: bool) -> tuple[str, ...]:
    """Config fields two runs may differ in and still compute the same: :data:`ENVIRONMENT_FIELDS`, and
    :data:`GENERATIVE_FIELDS` too when both are ``csi`` runs (no G). Shared by :func:`same_run_config` and
    :func:`csigen.results.recipe_fields`."""
    return ENVIRONMENT_FIELDS + (GENERATIVE_FIELDS if csi_runs else ())


def same_run_config(saved: dict[str, Any], config: TrainConfig, what: str = "the saved run") -> list[str]:
    """The names of the fields in which the run recorded as ``saved`` differs from ``config``.

    An empty list means "the same run": a finished run is reported instead of
    redone and an interrupted one may resume. ``saved`` is a config dict as
    written into ``config.json``, ``result.json["config"]`` or a checkpoint,
    of any schema version up to :data:`SCHEMA_VERSION`; it is upgraded
    (:func:`upgrade_config_dict`) before comparing. Ignored:

    * :data:`ENVIRONMENT_FIELDS` (device, data folder, checkpoint and G-snapshot cadence);
    * :data:`GENERATIVE_FIELDS` when both are ``csi`` runs (which have no G);
    * fields the record does not have (new since its schema version) that
      ``config`` leaves at their default: a run written before a field existed
      is the same run as one asking for that field's default.

    Raises :class:`SchemaVersionError` if ``saved`` comes from a newer csigen.
    """
    present = set(saved) if isinstance(saved, dict) else set()
    try:
        recorded = TrainConfig.from_dict(saved).to_dict()
    except SchemaVersionError:
        raise
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{what}: its config cannot be read by this csigen ({exc})") from exc
    requested = config.to_dict()
    defaults = TrainConfig().to_dict()
    both_csi = recorded["variant"] == requested["variant"] == "csi"
    ignored = fields_ignored_between(both_csi)
    diffs = []
    for f in dataclasses.fields(TrainConfig):
        name = f.name
        if name in ignored:
            continue
        if name not in present and requested[name] == defaults[name]:
            continue
        if recorded[name] != requested[name]:
            diffs.append(name)
    return diffs


def require_same_run_config(saved: dict[str, Any], config: TrainConfig, where: str) -> None:
    """Raise :class:`RunConfigMismatchError` naming each differing field unless :func:`same_run_config` is empty.

    ``where`` describes the existing run, e.g. ``"runs/demo holds a finished run"``.
    """
    diffs = same_run_config(saved, config, what=where)
    if not diffs:
        return
    recorded = TrainConfig.from_dict(saved)
    details = "; ".join(f"{name}: the run has {getattr(recorded, name)!r}, requested {getattr(config, name)!r}"
                        for name in diffs)
    raise RunConfigMismatchError(
        f"{where} with another configuration ({details}). Nothing was changed. Pass --force "
        "(force=True in Python) to start over and overwrite it, or write to another folder (--out, or "
        "another out_dir).")


@dataclass(frozen=True)
class Preset:
    """A named set of overrides with its documented cost.

    ``choose``, for a preset that depends on the machine (``cpu``): returns the
    name of the preset it stands for here; :func:`make_config` builds that one,
    and the run records its name.
    """

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    doc: str = ""
    choose: Callable[[], str] | None = None


#: Where the CPU probes below read the CPU's name and flags when torch cannot say (Linux).
CPUINFO = "/proc/cpuinfo"


def cpuinfo_field(name: str) -> str | None:
    """The value of the first ``name : value`` line of :data:`CPUINFO` (e.g. ``"model name"``, ``"flags"``),
    or None where there is no such line or file (other systems)."""
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_supports(torch_probe: str, flag: str) -> bool:
    """Asks torch's private ``torch.cpu.<torch_probe>()`` (any failure: False); where torch has no such
    function, looks for ``flag`` among the flags of :data:`CPUINFO`."""
    import torch

    probe = getattr(torch.cpu, torch_probe, None)
    if probe is not None:
        try:
            return bool(probe())
        except Exception:  # noqa: BLE001 - a private torch function: any failure means "not known to have it"
            return False
    return flag in (cpuinfo_field("flags") or "").split()


def cpu_model_name() -> str:
    """The CPU's model name (:data:`CPUINFO`'s "model name"; elsewhere ``platform.processor()``)."""
    import platform

    return cpuinfo_field("model name") or platform.processor() or "unknown"


def cpu_has_amx() -> bool:
    """Whether this machine's CPU has AMX tile units (Intel Xeon 4th generation, "Sapphire Rapids", and later).

    There bf16 autocast runs the convolutions on the AMX units, 2.4x (``csi``)
    and 2.7x (``full``) the float32 speed of the ``cpu`` preset on a 2-core
    share of such a CPU (bench/RESULTS.md, ``python bench/throughput.py
    --device cpu --preset cpu-fp32 --amp off bf16``). Without them bf16 gains
    less (AVX512-BF16 instructions, e.g. AMD Zen 4: 1.85-2.05x float32,
    measured) or is emulated in software: :func:`cpu_bf16_path`. Asks torch
    (``torch.cpu._is_amx_tile_supported``, which also checks that the kernel
    lets a process use the tiles); where torch has no such function, reads
    the ``amx_bf16`` flag of Linux's /proc/cpuinfo.
    """
    return _cpu_supports("_is_amx_tile_supported", "amx_bf16")


def cpu_bf16_path() -> str:
    """How this CPU runs bf16 matrix products: ``"amx"``, ``"avx512_bf16"`` or ``"emulated"``.

    ``"amx"``: AMX tile units (:func:`cpu_has_amx`), the fastest path (bf16
    2.4x / 2.7x float32 for ``csi`` / ``full``, measured on an Intel Xeon).
    ``"avx512_bf16"``: no AMX, but AVX512-BF16 instructions (AMD Zen 4 and
    later, Intel Cooper Lake): bf16 measured 1.85x (``csi``) and 2.05x
    (``full``) float32 on a 2-core AMD EPYC share (bench/RESULTS.md, the same
    ``bench/throughput.py --amp off bf16`` command). ``"emulated"``: neither;
    oneDNN converts bf16 in software, which may be slower than float32 (not
    measured here). Asks torch (``torch.cpu._is_avx512_bf16_supported``), else
    reads the ``avx512_bf16`` flag of Linux's /proc/cpuinfo.
    """
    if cpu_has_amx():
        return "amx"
    return "avx512_bf16" if _cpu_supports("_is_avx512_bf16_supported", "avx512_bf16") else "emulated"


def choose_cpu_preset() -> str:
    """The preset ``cpu`` stands for on this machine, by how its CPU runs bf16 (:func:`cpu_bf16_path`).

    ``cpu-amx`` on AMX units, ``cpu-avx512bf16`` on AVX512-BF16 instructions,
    else ``cpu-fp32`` (float32: emulated bf16 may be slower).
    """
    return {"amx": "cpu-amx", "avx512_bf16": "cpu-avx512bf16"}.get(cpu_bf16_path(), "cpu-fp32")


#: The CPU-scale presets, one per kind of CPU (:func:`choose_cpu_preset` picks the one ``cpu`` stands for).
CPU_PRESETS = ("cpu-fp32", "cpu-amx", "cpu-avx512bf16")

#: The cpu-fp32 preset's overrides, which cpu-amx extends.
CPU_FP32: dict[str, Any] = dict(
    epochs=7, max_steps=420, batch_size=32, f_width=32, gan_every=5, eval_samples=4, max_train=2000, max_test=2000,
    g_channels=64, d_channels=64, e_channels=64, warmup_epochs=0.5, score="csi", cls_weight=3.0, train_crop_min=0.3,
    amp="off",
)

CPU_AMX_DOC = (
    "The cpu preset on a CPU with AMX units (Intel Xeon 4th generation and later; this project's 2-core "
    "machines): cpu-fp32's recipe in bf16 autocast (amp='bf16'), 1,430 steps of 32 images (25 epochs of "
    "2,000 training images, warm-up 0.5; 2,000 stratified test images, R = 4 draws), the GAN block every 4 "
    "steps (gan_every=4: Algorithm 1's N, a departure from the paper's N = 5; chosen on bird and deer, "
    "seed 0, between N = 3, 4, 5 and 10: full - csi +0.008 and +0.021 at N = 4 against +0.003 and +0.017 "
    "at N = 5, "
    "bench/RESULTS.md 'Sixth round'). Every other departure "
    "from the paper is cpu-fp32's (see its documentation): F is a ResNet-18 of half width (f_width=32), "
    "G/E/D have 64 channels, L_CSI = L_con-SI + 3 L_cls-SI (cls_weight=3), training crops of 30-100% "
    "(train_crop_min=0.3), and the reported score is CSI's (score='csi'; Eq. 11's 'shared' is stored beside "
    "it). Why 1,430 steps: bf16 runs a step 2.4x (csi) and 2.7x (full) faster than float32 on AMX "
    "(bench/throughput.py --amp off bf16, measured side by side), so 1,430 bf16 steps take the time of "
    "cpu-fp32's 420: csi 10-11 minutes with evaluation (measured idle, six runs: 516-606 s of training + "
    "63-72 s of evaluation); full 18-29 minutes at N = 4 (measured idle: automobile 1,011 s + 64 s, "
    "cat, three seeds, 1,395-1,635 s + 69-113 s while this machine ran plain steps 1.3x slower; at "
    "N = 5, on another day, 984-1,101 s + 63-79 s). The step "
    "count was fixed from that speed before any run, and kept after bird and deer (the two weakest classes, "
    "chosen on; seed 0: "
    "0.605 -> 0.742 and 0.606 -> 0.743 against cpu-fp32), not on the reported automobile and cat. Measured "
    "(CIFAR-10 JPEG copy, csi, CSI's score, mean of seeds 0-2): automobile 0.947 (0.943, 0.941, 0.957), cat "
    "0.725 (0.708, 0.741, 0.725), against cpu-fp32's 0.888 and 0.695; full at N = 5 (same seeds): automobile "
    "0.952 (0.948, 0.948, 0.961), cat 0.721 (0.704, 0.736, 0.722), 0.004 below csi on cat, which is why N was "
    "recalibrated; full at N = 4: cat 0.719 (0.703, 0.734, 0.721), still 0.006 below csi; automobile 0.954 "
    "(0.949, 0.950, 0.962), 0.007 above csi. All ten classes (seed 0, csi): "
    "airplane 0.711, automobile 0.943, bird 0.742, cat 0.708, deer 0.743, dog 0.824, frog 0.781, horse 0.917, "
    "ship 0.918, truck 0.886, mean 0.817 (cpu-fp32: 0.760). Every run is in bench/RESULTS.md and "
    "results/cifar10-cpu-amx. A CPU-scale result, not the paper's setting."
)

CPU_AVX512BF16_DOC = (
    "The cpu-amx recipe for a CPU with AVX512-BF16 instructions but no AMX units (AMD Zen 4 and later, "
    "Intel Cooper Lake): bf16 autocast, the GAN block every 4 steps, everything else cpu-fp32's (see its "
    "documentation for each departure from the paper), and 1,000 steps of 32 images (17 epochs of 2,000 "
    "training images, warm-up 0.5; 2,000 stratified test images, R = 4 draws) instead of cpu-amx's 1,430. "
    "Why 1,000 steps: such a CPU runs a bf16 step 1.85x (csi) / 2.05x (full) faster than float32, less than "
    "AMX's 2.4x / 2.7x (bench/throughput.py --amp off bf16, measured side by side on a 2-core AMD EPYC), so "
    "cpu-amx's 1,430 steps take 18 minutes there (995 s + 93 s); at the 0.65-0.73 s per csi step measured there, "
    "1,000 steps and the evaluation take about 13-14 minutes. The step count was fixed from that speed before "
    "any run of this preset, not chosen on any class. Measured on that AMD EPYC (idle, CIFAR-10 JPEG copy, csi, "
    "CSI's score, seeds 0-2): automobile 0.931 (0.927, 0.921, 0.945), cat 0.709 (0.681, 0.738, 0.709), against "
    "cpu-fp32's 0.888 and 0.695 on the same seeds, in 12.9-14.6 minutes each (677-764 s of training + 90-101 s "
    "of evaluation; the machine slowed within the hour, and the slowest run ended 25 s inside 15 minutes). "
    "full, the same seeds and steps: automobile 0.940 (0.934, 0.933, 0.952; +0.009 over csi), cat 0.713 "
    "(0.699, 0.725, 0.714; +0.004), so full is no worse than csi on both, in 25.8-28.8 minutes each "
    "(1,412-1,569 s of training + 90-119 s of evaluation). All ten classes (seed 0, csi): airplane 0.718, automobile "
    "0.927, bird 0.718, cat 0.681, deer 0.708, dog 0.824, frog 0.773, horse 0.908, ship 0.911, truck 0.874, "
    "mean 0.804 (cpu-fp32: 0.760; cpu-amx on an AMX CPU: 0.817), 13.3-14.7 minutes each. Cat seed 0 again "
    "on a slower afternoon: the same scores to every bit, in 14.75 minutes (771 s + 96 s). "
    "Every run is in bench/RESULTS.md ('Seventh round') and results/cifar10-cpu-avx512bf16. A CPU-scale "
    "result, not the paper's setting."
)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "smoke",
            dict(
                epochs=1, max_steps=4, batch_size=4, gan_every=2, eval_samples=1, max_train=32,
                max_test=64, g_channels=32, d_channels=32, e_channels=32, warmup_epochs=0.0,
                eval_batch_size=128, checkpoint_every_steps=2,
            ),
            "About 10-30 s per run on a 2-core CPU (4 steps of 4 images); for tests, CI and the notebooks' "
            "smoke mode. Its numbers mean nothing.",
        ),
        Preset(
            "cpu",
            {},
            "One CIFAR-10 class on a 2-core CPU in about 15 minutes, chosen for this machine's CPU "
            "(csigen.config.choose_cpu_preset): 'cpu-amx' where the CPU has AMX units (bf16 at 2.4-2.7x the "
            "float32 speed: 1,430 steps), 'cpu-avx512bf16' where it has AVX512-BF16 instructions but no AMX "
            "(bf16 at 1.85-2.05x: 1,000 steps), else 'cpu-fp32' (420 float32 steps). Each run records the one "
            "chosen.",
            choose=choose_cpu_preset,
        ),
        Preset(
            "cpu-fp32",
            dict(CPU_FP32),
            "The cpu preset on a CPU with neither AMX units nor AVX512-BF16 instructions (most laptops, likely "
            "Colab's CPU runtime), in float32 "
            "(amp='off'): 420 steps of 32 images (7 epochs of 2,000 training images; 2,000 stratified test "
            "images, R = 4 draws). Departs from the paper on purpose, to learn in 15 minutes: F is a "
            "ResNet-18 of half width (f_width=32: a quarter of the FLOPs), the schedule "
            "is 7 epochs (warm-up 0.5) instead of 1,000, G/E/D have 64 channels, the rotation head is pushed "
            "to learn early (L_CSI = L_con-SI + 3 L_cls-SI, cls_weight=3; training crops of 30-100% of the "
            "image, train_crop_min=0.3, instead of CSI's 8-100%), and the reported score is CSI's "
            "(score='csi'; Eq. 11's 'shared' is stored beside it in every result). Why: in a short run the "
            "rotation term of the score carries it on the animal classes, and with CSI's recipe the rotation "
            "head had barely learned after 420 steps (cat: 0.71 with seed 0, 0.56 with seed 1). Chosen on "
            "dog and bird, not on the reported automobile and cat (calibration runs, seed 0, one thread, 1,000 "
            "test images; CSI's L_CSI and crops -> both levers: dog 0.773 -> 0.822, bird 0.576 -> 0.680; each "
            "lever alone on dog 0.803 and 0.800; the ten-class record's own runs of dog and bird, on 2,000 "
            "test images: 0.804 and 0.605; "
            "bench/RESULTS.md, which also has the levers tried after: cls_weight=5, crops of 50-100%, 500 "
            "steps, R = 10, the whole test image instead of CSI's 54% crop; none was kept). Neither changes a "
            "step's cost: 1.1-1.4 s per csi step, 2.3-2.6 s per full step on an idle 2-core CPU "
            "(bench/throughput.py), so csi takes about 12 min with evaluation (measured idle, seed 0: "
            "automobile 591 s of training + 102 s of evaluation, cat 602 + 114 s) and full 19-20 min "
            "(measured idle: 1,047-1,093 s of training + about 90 s of evaluation). "
            "Measured (CIFAR-10 JPEG copy, csi, CSI's score, mean of seeds 0-2): automobile 0.888 (0.882, "
            "0.876, 0.907), cat 0.695 (0.671, 0.718, 0.695; on cat the similarity term alone scores about 0.5 "
            "after 420 steps and the rotation term carries the score); full, same seeds: automobile 0.891, "
            "cat 0.704. All ten classes (seed 0, csi): airplane 0.725, automobile 0.882, bird 0.605, cat 0.671, "
            "deer 0.606, dog 0.804, frog 0.695, horse 0.867, ship 0.902, truck 0.839, mean 0.760: the animal "
            "classes learn least in 420 steps (bench/RESULTS.md). These runs, the whole CPU-scale "
            "reproduction in results/cifar10-cpu and figures/, were recorded as preset 'cpu' before it was "
            "split by CPU (same recipe; float32 was 'auto' on a CPU). On a second machine, a 2-core AMD "
            "EPYC (Zen 4: AVX512-BF16, no AMX), the same run (automobile, csi, seed 0) gave the same AUROC "
            "to every digit (0.8818) in 607 s of training + 96 s of evaluation; there bf16 runs 1.85x (csi) "
            "to 2.05x (full) float32, so cpu names cpu-avx512bf16 on such CPUs (bench/RESULTS.md, 'A second "
            "CPU'). A CPU-scale result, not the paper's setting.",
        ),
        Preset(
            "cpu-amx",
            dict(CPU_FP32, amp="bf16", epochs=25, max_steps=1430, gan_every=4),
            CPU_AMX_DOC,
        ),
        Preset(
            "cpu-avx512bf16",
            dict(CPU_FP32, amp="bf16", epochs=17, max_steps=1000, gan_every=4),
            CPU_AVX512BF16_DOC,
        ),
        Preset(
            "quick",
            dict(epochs=100, batch_size=64, eval_samples=10, warmup_epochs=5.0),
            "A GPU run of 30 min to 1 h per class on a Colab T4 (100 epochs of one CIFAR-10 class, batch 64): "
            "csi about 30 min, csi+g about 45 min, full about 1 h (estimates, not yet measured; the notebooks' "
            "run-time tables). Expected a few AUROC points below the paper.",
        ),
        Preset(
            "paper",
            dict(epochs=1000, batch_size=128, eval_samples=10, warmup_epochs=10.0),
            "CSI's recipe: 128 images x 4 shifts x 2 views per step, 1,000 epochs (GPU, hours per class).",
        ),
    ]
}


def resolve_preset(preset: str) -> str:
    """The preset ``preset`` names on this machine: itself, or for ``cpu`` the one it stands for (``Preset.choose``).

    >>> resolve_preset("smoke")
    'smoke'

    Raises :class:`ConfigError` for a name that is no preset (nor ``custom``).
    """
    if preset not in PRESETS and preset != "custom":
        raise ConfigError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)} or 'custom' "
                          "(python -m csigen presets lists what each costs)")
    if preset in PRESETS and PRESETS[preset].choose is not None:
        return PRESETS[preset].choose()
    return preset


def make_config(preset: str = "smoke", **overrides: Any) -> TrainConfig:
    """Build a :class:`TrainConfig` from a named preset plus overrides.

    >>> make_config("smoke", dataset="shapes", inlier="circle").preset
    'smoke'

    ``cpu`` builds the preset it stands for on this machine (:func:`resolve_preset`:
    ``cpu-amx`` or ``cpu-fp32``), and the config records that name.
    """
    preset = resolve_preset(preset)
    values: dict[str, Any] = {}
    if preset in PRESETS:
        values.update(PRESETS[preset].overrides)
    values.update(overrides)
    values["preset"] = preset
    return TrainConfig(**values)
