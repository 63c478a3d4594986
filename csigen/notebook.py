"""The shared setup of the notebooks: one call, :func:`setup`, at the top of each.

Every notebook under ``notebooks/`` starts with the same cells: a title with
the Colab badge, an install cell (Colab only, before csigen can be imported),
a ``parameters`` cell of plain values (papermill can override it), and a setup
cell that passes those values to :func:`setup`. ``setup`` decides what the
parameters leave open and returns a :class:`NotebookSettings`:

* smoke mode: ``CSIGEN_SMOKE=1`` (set by the test suite) replaces the task by
  the ``smoke`` preset on the built-in, offline ``shapes`` data (:data:`SMOKE_TASK`);
* the preset: ``quick`` on a GPU, ``cpu`` without one (:func:`default_preset`),
  which names the CPU preset for this machine (``cpu-amx`` or ``cpu-fp32``,
  :func:`csigen.config.resolve_preset`);
* the class, when ``INLIER`` is None: on CIFAR-10 :data:`GPU_INLIER` (cat, the
  paper's Figure 2) on a GPU and :data:`CPU_INLIER` (automobile, where a short
  CPU run visibly works) without one (:func:`default_inlier`); what to expect
  is printed before anything runs (:func:`no_gpu_note`);
* the output folder: ``$CSIGEN_OUT``, else ``runs``, or a Google Drive folder in
  Colab with ``use_drive=True`` (:func:`output_folder`), which also keeps the
  CIFAR download and the Inception weights on Drive (:func:`drive_caches`);
* the device, reported once (:func:`device_info`).

The settings then name a notebook's runs: ``settings.config("csi")`` is the
run's :class:`~csigen.config.TrainConfig`, ``settings.run_dir("csi")`` its
folder (the same in every notebook, so one notebook reuses another's runs),
``settings.load_result("csi")`` its ``result.json`` if it finished and
``settings.load_trained(config)`` its trained networks.

Importing this module does nothing; Drive is mounted and folders are created
only when :func:`setup` (or :func:`output_folder`) is called.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from csigen import __version__
from csigen.config import CPU_PRESETS, PRESETS, make_config, resolve_preset

__all__ = [
    "CPU_INLIER", "DEFAULT_OUT", "DRIVE_CACHE", "DRIVE_MOUNT", "DRIVE_RUNS", "ENV_OUT", "ENV_SMOKE",
    "GPU_INLIER", "G_SNAPSHOT_EVERY_STEPS", "SMOKE_TASK", "NotebookSettings", "NotebookSetupError",
    "default_inlier", "default_preset", "describe_device", "device_info", "drive_caches", "in_colab",
    "no_gpu_note", "output_folder", "setup", "smoke_mode",
]

#: Environment variable that switches every notebook to its tiny offline run ("1") or not ("0", unset).
ENV_SMOKE = "CSIGEN_SMOKE"
#: Environment variable naming the folder of the runs (the test suite points it at a fresh folder).
ENV_OUT = "CSIGEN_OUT"
#: Output folder when neither ``out`` nor ``$CSIGEN_OUT`` is given (relative to the notebook's folder).
DEFAULT_OUT = "runs"
#: Where Colab mounts Google Drive, and the runs folder on it (``use_drive=True``).
DRIVE_MOUNT = "/content/drive"
DRIVE_RUNS = f"{DRIVE_MOUNT}/MyDrive/csigen-runs"
#: The downloads' folder on Drive (``use_drive=True`` in Colab): ``data/`` ($CSIGEN_DATA), ``torch/`` ($TORCH_HOME).
DRIVE_CACHE = f"{DRIVE_MOUNT}/MyDrive/csigen-cache"
#: The task of smoke mode: seconds on a CPU, no download, numbers that mean nothing. The class must be one that
#: rotations change (CSI's shifted instances, Eq. 2-3): ``stripes`` turn by 90 degrees; the built-in ``circle``
#: (and ``ring``) look the same under every rotation, so smoke runs on them scored below chance.
SMOKE_TASK = {"dataset": "shapes", "inlier": "stripes", "preset": "smoke"}
#: CIFAR-10 class of a notebook on a GPU when ``INLIER`` is None: cat, the task of the paper's Figure 2.
GPU_INLIER = "cat"
#: CIFAR-10 class of a notebook without a GPU when ``INLIER`` is None (preset ``cpu``): the class where a short
#: CPU run visibly works. Automobile is one: with the ``cpu`` preset's first recipe (CSI's L_CSI and crops, 420
#: steps; ``csi``, CIFAR-10 JPEG copy) AUROC 0.882 with CSI's score (mean of 3 seeds), against 0.712 and 0.558 on
#: cat (seeds 0 and 1); the present recipe's numbers are in the preset's documentation and bench/RESULTS.md.
CPU_INLIER = "automobile"
#: ``g_snapshot_every_steps`` of the notebooks' ``csi+g`` and ``full`` runs, per preset (:meth:`NotebookSettings.config`;
#: an override wins): G's weights every k training steps, so notebook 03 shows its samples across training at a
#: fixed step interval (not per time-based checkpoint, which would tie the number of snapshots to the hardware).
#: About 2-10 snapshots per run: smoke 4 steps, cpu-fp32 420, cpu-amx 1,430, cpu-avx512bf16 1,000, quick and
#: paper ~8k and ~40k steps on CIFAR-10 (one class).
#: A preset missing here gets no snapshots. An environment field (``csigen.config.ENVIRONMENT_FIELDS``): it does
#: not change which run a folder holds, so runs made before it existed are still loaded.
G_SNAPSHOT_EVERY_STEPS = {"smoke": 2, "cpu-fp32": 60, "cpu-amx": 200, "cpu-avx512bf16": 150, "quick": 1000,
                          "paper": 4000}


#: Why :func:`no_gpu_note` names each CPU preset (``csigen.config.choose_cpu_preset``'s reasons).
CPU_PRESET_WHY = {
    "cpu-amx": "this CPU has AMX units, where bf16 runs 2.4-2.7x faster than float32",
    "cpu-avx512bf16": "this CPU has AVX512-BF16 instructions but no AMX units: bf16 runs 1.85-2.05x float32",
    "cpu-fp32": "this CPU has neither AMX units nor AVX512-BF16 instructions, so it trains in float32",
}


class NotebookSetupError(ValueError):
    """A notebook parameter or environment variable that :func:`setup` cannot use."""


def in_colab() -> bool:
    """True inside a Google Colab runtime (its ``google.colab`` module is loaded there)."""
    return "google.colab" in sys.modules


def smoke_mode(smoke: bool | None = None) -> bool:
    """Whether to run the tiny offline smoke task.

    ``smoke`` True or False decides; None reads ``$CSIGEN_SMOKE``: "1" is on,
    "0" or unset is off, anything else is an error (so a typo cannot start an
    hour-long run in CI).
    """
    if smoke is not None:
        if not isinstance(smoke, bool):
            raise NotebookSetupError(f"SMOKE must be True, False or None (read ${ENV_SMOKE}); got {smoke!r}")
        return smoke
    value = os.environ.get(ENV_SMOKE, "").strip()
    if value not in ("", "0", "1"):
        raise NotebookSetupError(f"${ENV_SMOKE}={value!r}: set it to 1 (smoke run) or 0 / unset it (real run)")
    return value == "1"


def default_preset(gpu: bool) -> str:
    """The preset a notebook uses when ``PRESET`` is None: ``quick`` on a GPU, ``cpu`` without one.

    :func:`setup` resolves ``cpu`` for this machine (``cpu-amx`` or ``cpu-fp32``).
    """
    return "quick" if gpu else "cpu"


def default_inlier(dataset: str, gpu: bool) -> str | int:
    """The class a notebook uses when ``INLIER`` is None.

    CIFAR-10: :data:`GPU_INLIER` (cat, Figure 2's task) on a GPU and
    :data:`CPU_INLIER` (automobile, where a short CPU run visibly works) without
    one. Any other dataset: its first class (index 0).
    """
    if dataset == "cifar10":
        return GPU_INLIER if gpu else CPU_INLIER
    return 0


def output_folder(out: str | os.PathLike | None = None, *, use_drive: bool = False, colab: bool | None = None,
                  mount: Callable[[str], Any] | None = None) -> Path:
    """The folder the notebook's runs go to, created if missing.

    ``out`` None means ``$CSIGEN_OUT``, else :data:`DEFAULT_OUT`. With
    ``use_drive`` in Colab (``colab`` None: :func:`in_colab`), Google Drive is
    mounted at :data:`DRIVE_MOUNT` (``mount``: the function that mounts it,
    default ``google.colab.drive.mount``) and the runs go to :data:`DRIVE_RUNS`,
    or to ``out`` under ``MyDrive`` when ``out`` is a relative path, so they
    survive a disconnect. Outside Colab ``use_drive`` is ignored (a note is
    printed): the local disk already persists.
    """
    colab = in_colab() if colab is None else colab
    if use_drive and colab:
        if mount is None:
            from google.colab import drive  # only importable in Colab

            mount = drive.mount
        mount(DRIVE_MOUNT)
        if out is None:
            folder = Path(DRIVE_RUNS)
        else:
            folder = Path(out).expanduser()
            if not folder.is_absolute():
                folder = Path(DRIVE_MOUNT) / "MyDrive" / folder
    else:
        if use_drive:
            print("USE_DRIVE = True applies in Colab only; the runs stay on this machine's disk.")
        folder = Path(out if out is not None else os.environ.get(ENV_OUT) or DEFAULT_OUT).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NotebookSetupError(f"cannot create the output folder {str(folder)!r} ({err}): set OUT in the "
                                 f"parameters cell (or ${ENV_OUT}) to a writable folder") from err
    return folder


def drive_caches(root: str | os.PathLike | None = None) -> dict[str, str]:
    """Keep the downloads on Google Drive, so that a new Colab runtime does not fetch them again.

    Called by :func:`setup` with ``use_drive=True`` in Colab (after Drive is
    mounted). Sets two environment variables of this process, each only when
    it is not set already (a choice made before is kept):

    * ``$CSIGEN_DATA`` = ``root/data``: the datasets' folder
      (:func:`csigen.data.default_data_root`; CIFAR-10/100 download there).
      A notebook's ``DATA_ROOT`` (``config.data_root``) still wins.
    * ``$TORCH_HOME`` = ``root/torch``: torch.hub's folder, where
      :mod:`csigen.fid` keeps torch-fidelity's Inception weights (about 100 MB)
      and its cache of reference features.

    ``root`` None is :data:`DRIVE_CACHE` (``MyDrive/csigen-cache``). Returns
    ``{variable: folder}`` as now in effect. Both folders are created.
    """
    root = Path(root if root is not None else DRIVE_CACHE)
    wanted = {"CSIGEN_DATA": root / "data", "TORCH_HOME": root / "torch"}
    in_effect = {}
    for variable, folder in wanted.items():
        if not os.environ.get(variable):
            os.environ[variable] = str(folder)
        in_effect[variable] = os.environ[variable]
        try:
            Path(in_effect[variable]).expanduser().mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise NotebookSetupError(f"cannot create {in_effect[variable]!r} for ${variable} ({err}): check that "
                                     "Google Drive is mounted and has space, or set USE_DRIVE = False") from err
    return in_effect


def _cifar10_name(inlier: str | int) -> str:
    """A CIFAR-10 class given by name or index, as its name (anything else as given, as a string)."""
    from csigen.data import CIFAR10_CLASSES

    if isinstance(inlier, int) and not isinstance(inlier, bool) and 0 <= inlier < len(CIFAR10_CLASSES):
        return CIFAR10_CLASSES[inlier]
    return str(inlier)


def no_gpu_note(dataset: str = "cifar10", inlier: str | int = CPU_INLIER, preset: str = "cpu") -> str:
    """What a notebook prints without a GPU, before anything runs: how to get one, and what to expect of this run.

    The expectation is the preset's own documentation (:data:`csigen.config.PRESETS`,
    with its measured time and AUROC). ``cpu`` is first resolved for this
    machine (``cpu-amx``, ``cpu-avx512bf16`` or ``cpu-fp32``, which the note
    names with the reason). A CPU preset's run on another CIFAR-10 class than
    :data:`CPU_INLIER` adds that the short run may stay near chance there.
    """
    lines = ["No GPU: this runs on the CPU. In Colab: Runtime > Change runtime type > T4 GPU, then run all."]
    preset = resolve_preset(preset)
    if preset in CPU_PRESETS:
        cpu = make_config(preset)
        steps = f"{cpu.max_steps:,} steps" if cpu.max_steps else f"{cpu.epochs} epochs"
        images = f"{cpu.max_train:,} images" if cpu.max_train else "the whole class"
        why = CPU_PRESET_WHY[preset]
        lines.append(f"What to expect: preset {preset!r} ({why}) trains {steps} on {images} of {dataset} / "
                     f"{inlier}, enough to see every part of the method work, with an AUROC below the paper's.")
        if dataset == "cifar10" and _cifar10_name(inlier) != CPU_INLIER:
            lines.append(f"On a CPU the short run may stay near chance (AUROC 0.5) on {inlier!s}; the class where it "
                         f"visibly works is {CPU_INLIER!r} (INLIER = None picks it when there is no GPU).")
    else:
        lines.append(f"What to expect: preset {preset!r} on {dataset} / {inlier}.")
    lines.append(f"Preset {preset!r}: {PRESETS[preset].doc}")
    return "\n".join(lines)


def device_info() -> dict[str, Any]:
    """What the notebook computes on: torch's version, the device and its size.

    Keys: ``gpu`` (bool), ``device`` ("cuda" or "cpu"), ``torch``,
    ``cpu_threads`` (torch's intra-op threads); on a GPU also ``name``,
    ``capability`` (e.g. "7.5" for a T4) and ``memory_gib``; on the CPU
    ``cpu_name`` and ``cpu_bf16`` (:func:`csigen.config.cpu_bf16_path`, which
    decides what preset ``cpu`` names).
    """
    import torch

    gpu = torch.cuda.is_available()
    info: dict[str, Any] = {"gpu": gpu, "device": "cuda" if gpu else "cpu", "torch": torch.__version__,
                            "cpu_threads": torch.get_num_threads()}
    if gpu:
        major, minor = torch.cuda.get_device_capability(0)
        info["name"] = torch.cuda.get_device_name(0)
        info["capability"] = f"{major}.{minor}"
        info["memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    else:
        from csigen.config import cpu_bf16_path, cpu_model_name

        info["cpu_name"] = cpu_model_name()
        info["cpu_bf16"] = cpu_bf16_path()
    return info


def describe_device(info: dict[str, Any]) -> str:
    """One line for :func:`device_info`'s dict, e.g. ``"cuda: Tesla T4 (compute 7.5, 14.7 GiB), torch 2.11"``."""
    if info["gpu"]:
        where = f"cuda: {info['name']} (compute {info['capability']}, {info['memory_gib']} GiB)"
    else:
        where = f"cpu ({info['cpu_threads']} threads)"
        if info.get("cpu_name"):
            bf16 = {"amx": "AMX units", "avx512_bf16": "AVX512-BF16", "emulated": "emulated"}
            where = (f"cpu: {info['cpu_name']} ({info['cpu_threads']} threads; bf16: "
                     f"{bf16.get(info.get('cpu_bf16'), info.get('cpu_bf16'))})")
    return f"{where}, torch {info['torch']}"


@dataclass(frozen=True)
class NotebookSettings:
    """What :func:`setup` decided; names the notebook's runs.

    ``dataset``, ``inlier``, ``preset``, ``seed`` and ``data_root`` define every
    run of the notebook (:meth:`config`); ``out`` is the folder of the run
    folders; ``smoke``, ``colab`` and ``device`` (:func:`device_info`) say where
    the notebook runs.
    """

    smoke: bool
    dataset: str
    inlier: str | int
    preset: str
    seed: int
    data_root: str | None
    out: Path
    colab: bool
    device: dict[str, Any] = field(default_factory=dict)

    @property
    def gpu(self) -> bool:
        """True when a CUDA GPU is available."""
        return bool(self.device.get("gpu"))

    def config(self, variant: str, **overrides: Any):
        """The :class:`~csigen.config.TrainConfig` of this notebook's ``variant`` run ("csi", "csi+g", "full").

        ``overrides`` change single fields (e.g. ``num_shifts=1`` for an
        exercise); they then need their own folder: pass the config to
        :func:`csigen.results.run_dir`.
        """
        values = {"dataset": self.dataset, "inlier": self.inlier, "variant": variant, "seed": self.seed,
                  "data_root": self.data_root}
        if variant in ("csi+g", "full"):  # G's samples across training (notebook 03); an environment field
            values["g_snapshot_every_steps"] = G_SNAPSHOT_EVERY_STEPS.get(self.preset)
        values.update(overrides)
        return make_config(self.preset, **values)

    def run_dir(self, variant: str) -> Path:
        """``out/<dataset>-<inlier>-<variant>-<preset>-s<seed>``: the same folder in every notebook."""
        from csigen import results

        return results.run_dir(self.out, self.config(variant))

    def load_result(self, variant: str) -> dict[str, Any] | None:
        """The ``result.json`` of the ``variant`` run if it finished, else None (nothing is trained)."""
        path = self.run_dir(variant) / "result.json"
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def load_trained(self, config, task=None):
        """The trained networks of ``config``'s run (a :class:`~csigen.train.Trainer`), from its last checkpoint.

        The folder is ``results.run_dir(out, config)``; the checkpoint's model
        must match ``config`` (a clear error names the differing fields).
        """
        from csigen import results
        from csigen.train import Trainer

        return Trainer.from_run(results.run_dir(self.out, config), config=config, task=task)

    def describe(self) -> str:
        """A few lines for the top of a notebook: mode, task, preset, folder, device."""
        lines = [f"csigen {__version__}: {self.dataset} / {self.inlier}, preset {self.preset!r}, seed {self.seed}"]
        if self.smoke:
            lines.append(f"smoke mode (${ENV_SMOKE}=1): tiny offline run, its numbers mean nothing")
        lines.append(f"runs in {self.out}")
        lines.append(f"device: {describe_device(self.device)}" + (" (Colab)" if self.colab else ""))
        return "\n".join(lines)


def setup(*, dataset: str = "cifar10", inlier: str | int | None = None, preset: str | None = None, seed: int = 0,
          data_root: str | None = None, out: str | os.PathLike | None = None, use_drive: bool = False,
          smoke: bool | None = None, verbose: bool = True) -> NotebookSettings:
    """Resolve a notebook's ``parameters`` cell into :class:`NotebookSettings`.

    ``smoke`` None reads ``$CSIGEN_SMOKE`` (:func:`smoke_mode`); in smoke mode
    ``dataset``, ``inlier`` and ``preset`` are replaced by :data:`SMOKE_TASK`.
    ``preset`` None picks :func:`default_preset` for the device, ``inlier``
    None :func:`default_inlier` (CIFAR-10: cat on a GPU, automobile without one). ``out``,
    ``use_drive``: see :func:`output_folder` (the folder is created, and Drive
    mounted in Colab). With ``verbose`` it prints :meth:`NotebookSettings.describe`
    and, without a GPU, what to expect of the run (:func:`no_gpu_note`). A bad preset or seed raises
    an error naming the fix before anything runs.
    """
    smoke = smoke_mode(smoke)
    info = device_info()
    if smoke:
        dataset, inlier, preset = SMOKE_TASK["dataset"], SMOKE_TASK["inlier"], SMOKE_TASK["preset"]
    else:
        if preset is None:
            preset = default_preset(info["gpu"])
        if inlier is None:
            inlier = default_inlier(dataset, info["gpu"])
    if preset not in PRESETS:
        raise NotebookSetupError(f"PRESET={preset!r} is not a preset: use None (automatic) or one of "
                                 f"{sorted(PRESETS)} (python -m csigen presets lists what each costs)")
    preset = resolve_preset(preset)  # "cpu" -> the CPU preset for this machine, the name its runs record
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NotebookSetupError(f"SEED={seed!r}: use a non-negative integer")
    colab = in_colab()
    settings = NotebookSettings(smoke=smoke, dataset=dataset, inlier=inlier, preset=preset, seed=seed,
                                data_root=None if data_root is None else str(data_root),
                                out=output_folder(out, use_drive=use_drive, colab=colab), colab=colab,
                                device=info)
    settings.config("csi")  # checks the other fields now, before any cell trains
    caches = drive_caches() if use_drive and colab else {}  # CIFAR and Inception weights on Drive too
    if verbose:
        print(settings.describe())
        if caches:
            print(f"downloads kept on Drive: data in {caches['CSIGEN_DATA']}, Inception weights in "
                  f"{caches['TORCH_HOME']}")
        if not settings.gpu:
            print(no_gpu_note(settings.dataset, settings.inlier, settings.preset))
    return settings
