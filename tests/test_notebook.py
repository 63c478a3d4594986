"""csigen.notebook: the setup every notebook calls (smoke switch, preset, output folder, Drive, device)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from csigen import config as config_module
from csigen import notebook, results
from csigen.config import make_config


@pytest.fixture
def no_smoke(monkeypatch):
    monkeypatch.delenv(notebook.ENV_SMOKE, raising=False)


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def fake_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda device=None: types.SimpleNamespace(total_memory=15 * 2**30))


def test_import_does_nothing(tmp_path):
    out = tmp_path / "never-created"
    code = "import sys, csigen.notebook; print('google.colab' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                          env={"CSIGEN_OUT": str(out), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "False" and done.stderr == ""
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("0", False), ("", False), (None, False)])
def test_smoke_mode_reads_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(notebook.ENV_SMOKE, raising=False)
    else:
        monkeypatch.setenv(notebook.ENV_SMOKE, value)
    assert notebook.smoke_mode() is expected
    assert notebook.smoke_mode(not expected) is (not expected)  # an explicit SMOKE wins


def test_smoke_mode_rejects_unclear_values(monkeypatch):
    monkeypatch.setenv(notebook.ENV_SMOKE, "yes")
    with pytest.raises(notebook.NotebookSetupError, match="CSIGEN_SMOKE='yes'.*set it to 1"):
        notebook.smoke_mode()
    with pytest.raises(notebook.NotebookSetupError, match="SMOKE must be True, False or None"):
        notebook.smoke_mode(1)


def test_smoke_setup_replaces_the_task_and_uses_csigen_out(monkeypatch, tmp_path, cpu_only, capsys):
    monkeypatch.setenv(notebook.ENV_SMOKE, "1")
    monkeypatch.setenv(notebook.ENV_OUT, str(tmp_path / "runs"))
    settings = notebook.setup(dataset="cifar10", inlier="cat", preset="quick", seed=3)
    assert (settings.smoke, settings.dataset, settings.inlier, settings.preset) == (True, "shapes", "stripes", "smoke")
    assert settings.out == tmp_path / "runs" and settings.out.is_dir()
    assert settings.seed == 3 and not settings.gpu and not settings.colab
    printed = capsys.readouterr().out
    assert "smoke mode" in printed and str(tmp_path / "runs") in printed and "No GPU" in printed


def test_preset_and_class_none_follow_the_device(no_smoke, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = notebook.setup(out=tmp_path, verbose=False)
    assert (settings.dataset, settings.inlier, settings.preset) == ("cifar10", notebook.CPU_INLIER,
                                                                   config_module.choose_cpu_preset())
    assert capsys.readouterr().out == ""  # verbose=False prints nothing


def test_preset_and_class_none_on_a_gpu_are_quick_and_cat(no_smoke, tmp_path, capsys, fake_gpu):
    settings = notebook.setup(out=tmp_path)
    assert settings.preset == "quick" and settings.gpu and settings.inlier == notebook.GPU_INLIER == "cat"
    printed = capsys.readouterr().out
    assert "Tesla T4 (compute 7.5, 15.0 GiB)" in printed and "No GPU" not in printed


@pytest.mark.parametrize("bf16_path, chosen", [("amx", "cpu-amx"), ("avx512_bf16", "cpu-avx512bf16"),
                                               ("emulated", "cpu-fp32")])
def test_without_a_gpu_the_class_is_the_cpu_class_and_the_expectation_is_printed(
        no_smoke, tmp_path, capsys, cpu_only, monkeypatch, bf16_path, chosen):
    monkeypatch.setattr(config_module, "cpu_bf16_path", lambda: bf16_path)
    settings = notebook.setup(out=tmp_path)
    assert settings.inlier == notebook.CPU_INLIER == "automobile" and settings.preset == chosen
    assert settings.run_dir("csi").name == f"cifar10-automobile-csi-{chosen}-s0"
    assert settings.config("full").g_snapshot_every_steps == notebook.G_SNAPSHOT_EVERY_STEPS[chosen]
    printed = capsys.readouterr().out
    assert "cifar10 / automobile" in printed and "What to expect" in printed
    assert notebook.PRESETS[chosen].doc in printed  # the preset's documentation, with its measured time and AUROC
    assert f"preset {chosen!r} ({notebook.CPU_PRESET_WHY[chosen]})" in printed
    assert "near chance" not in printed
    assert notebook.setup(out=tmp_path, inlier=3, verbose=False).inlier == 3  # an explicit class is kept
    assert notebook.setup(out=tmp_path, preset="cpu-fp32", verbose=False).preset == "cpu-fp32"  # named: kept


def test_an_explicit_class_other_than_the_cpu_class_is_kept_with_a_warning(no_smoke, tmp_path, capsys, cpu_only):
    settings = notebook.setup(out=tmp_path, inlier="cat")
    assert settings.inlier == "cat" and settings.preset == config_module.choose_cpu_preset()
    assert "near chance (AUROC 0.5) on cat" in capsys.readouterr().out
    assert "near chance" not in notebook.no_gpu_note("cifar10", 1, "cpu")  # index 1 is automobile


def test_default_inlier():
    assert notebook.default_inlier("cifar10", gpu=True) == "cat"
    assert notebook.default_inlier("cifar10", gpu=False) == "automobile"
    assert notebook.default_inlier("cifar100", gpu=False) == notebook.default_inlier("shapes", gpu=True) == 0


def test_smoke_class_is_changed_by_rotations():
    """Smoke mode's class looks different after a 90-degree rotation (a real shift, Eq. 2-3); a circle does not.

    The statistic: log of the ratio of horizontal to vertical edge energy over
    the class's images, before and after the rotation (which swaps the two).
    """
    from csigen.augment import rotate
    from csigen.data import make_shapes

    def orientation(x):
        return math.log((x[..., :, 1:] - x[..., :, :-1]).abs().mean() / (x[..., 1:, :] - x[..., :-1, :]).abs().mean())

    def rotation_shift(name):
        x = make_shapes(name, 64, seed=0).float() / 255
        return abs(orientation(rotate(x, 1)) - orientation(x))

    assert notebook.SMOKE_TASK["inlier"] != "circle"
    assert rotation_shift(notebook.SMOKE_TASK["inlier"]) > 1.0 and rotation_shift("circle") < 0.05


def test_explicit_values_are_kept_outside_smoke_mode(no_smoke, tmp_path, cpu_only):
    settings = notebook.setup(dataset="cifar100", inlier=4, preset="paper", seed=2, data_root=tmp_path / "data",
                              out=tmp_path / "o", verbose=False)
    assert (settings.dataset, settings.inlier, settings.preset, settings.seed) == ("cifar100", 4, "paper", 2)
    assert settings.data_root == str(tmp_path / "data")  # a str, so the config stays JSON-serialisable
    config = settings.config("full")
    assert (config.dataset, config.inlier, config.variant, config.preset, config.seed) == (
        "cifar100", 4, "full", "paper", 2)
    json.dumps(config.to_dict())


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"preset": "fast"}, "PRESET='fast' is not a preset.*smoke"),
    ({"seed": -1}, "SEED=-1"),
    ({"seed": "0"}, "SEED='0'"),
    ({"seed": True}, "SEED=True"),
])
def test_bad_parameters_are_named(no_smoke, tmp_path, cpu_only, kwargs, message):
    with pytest.raises(notebook.NotebookSetupError, match=message):
        notebook.setup(out=tmp_path, verbose=False, **kwargs)


def test_output_folder_defaults(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(notebook.ENV_OUT, raising=False)
    assert notebook.output_folder(colab=False) == notebook.Path(notebook.DEFAULT_OUT)
    assert (tmp_path / notebook.DEFAULT_OUT).is_dir()
    monkeypatch.setenv(notebook.ENV_OUT, str(tmp_path / "env"))
    assert notebook.output_folder(colab=False) == tmp_path / "env"
    assert notebook.output_folder(tmp_path / "explicit", colab=False) == tmp_path / "explicit"  # OUT wins


def test_output_folder_on_drive_in_colab(monkeypatch, tmp_path):
    mount_point = tmp_path / "content" / "drive"
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", str(mount_point))
    monkeypatch.setattr(notebook, "DRIVE_RUNS", str(mount_point / "MyDrive" / "csigen-runs"))
    mounted = []
    folder = notebook.output_folder(None, use_drive=True, colab=True, mount=mounted.append)
    assert mounted == [str(mount_point)] and folder == mount_point / "MyDrive" / "csigen-runs"
    assert notebook.output_folder("course/week1", use_drive=True, colab=True, mount=mounted.append) == (
        mount_point / "MyDrive" / "course" / "week1")
    absolute = tmp_path / "elsewhere"
    assert notebook.output_folder(absolute, use_drive=True, colab=True, mount=mounted.append) == absolute


def test_use_drive_in_colab_keeps_the_downloads_on_drive(monkeypatch, tmp_path, capsys):
    """Issue 13: with USE_DRIVE the CIFAR download and the Inception weights live on Drive too."""
    from csigen import data, fid

    mount_point = tmp_path / "content" / "drive"
    cache = mount_point / "MyDrive" / "csigen-cache"
    monkeypatch.setattr(notebook, "DRIVE_MOUNT", str(mount_point))
    monkeypatch.setattr(notebook, "DRIVE_RUNS", str(mount_point / "MyDrive" / "csigen-runs"))
    monkeypatch.setattr(notebook, "DRIVE_CACHE", str(cache))
    for variable in ("CSIGEN_DATA", "TORCH_HOME"):
        monkeypatch.delenv(variable, raising=False)  # restored after the test
    mounted = []
    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mounted.append)
    monkeypatch.setitem(sys.modules, "google.colab", colab)

    settings = notebook.setup(smoke=True, use_drive=True)
    assert settings.colab and mounted == [str(mount_point)] and settings.out == mount_point / "MyDrive" / "csigen-runs"
    assert data.default_data_root() == cache / "data" and (cache / "data").is_dir()
    assert Path(torch.hub.get_dir()) == cache / "torch" / "hub"
    assert fid._default_weights_file().is_relative_to(cache / "torch")  # where the Inception weights download
    assert f"downloads kept on Drive: data in {cache / 'data'}" in capsys.readouterr().out

    monkeypatch.setenv("CSIGEN_DATA", str(tmp_path / "mine"))  # a folder chosen before is kept
    assert notebook.drive_caches(tmp_path / "other") == {"CSIGEN_DATA": str(tmp_path / "mine"),
                                                          "TORCH_HOME": str(cache / "torch")}


def test_use_drive_outside_colab_keeps_the_local_folder(tmp_path, capsys):
    def mount(_):
        raise AssertionError("Drive must not be mounted outside Colab")

    assert notebook.output_folder(tmp_path / "runs", use_drive=True, colab=False, mount=mount) == tmp_path / "runs"
    assert "Colab only" in capsys.readouterr().out


def test_unwritable_output_folder_names_the_fix(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(notebook.NotebookSetupError, match="cannot create the output folder.*set OUT"):
        notebook.output_folder(blocker / "runs", colab=False)


def test_in_colab_follows_the_colab_module(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert not notebook.in_colab()
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert notebook.in_colab()


def test_device_info_cpu_and_gpu(monkeypatch, cpu_only):
    info = notebook.device_info()
    assert info["gpu"] is False and info["device"] == "cpu" and info["torch"] == torch.__version__
    assert "name" not in info and info["cpu_name"] and info["cpu_bf16"] in ("amx", "avx512_bf16", "emulated")
    monkeypatch.setattr(config_module, "cpu_bf16_path", lambda: "avx512_bf16")
    info = notebook.device_info()
    assert notebook.describe_device(info) == (f"cpu: {info['cpu_name']} ({torch.get_num_threads()} threads; "
                                              f"bf16: AVX512-BF16), torch {torch.__version__}")
    old = {k: v for k, v in info.items() if k not in ("cpu_name", "cpu_bf16")}  # a dict made by older code
    assert notebook.describe_device(old) == f"cpu ({torch.get_num_threads()} threads), torch {torch.__version__}"


def test_device_info_gpu(fake_gpu):
    info = notebook.device_info()
    assert (info["gpu"], info["device"], info["name"], info["capability"], info["memory_gib"]) == (
        True, "cuda", "Tesla T4", "7.5", 15.0)
    assert notebook.describe_device(info).startswith("cuda: Tesla T4 (compute 7.5, 15.0 GiB), torch ")


def test_no_gpu_note_describes_the_cpu_preset():
    cpu = make_config("cpu")
    note = notebook.no_gpu_note()
    assert f"{cpu.max_steps:,} steps on {cpu.max_train:,} images of cifar10 / {notebook.CPU_INLIER}" in note
    assert f"preset {cpu.preset!r}" in note and notebook.PRESETS[cpu.preset].doc in note
    smoke = notebook.no_gpu_note("shapes", "stripes", "smoke")
    assert "preset 'smoke' on shapes / stripes" in smoke and notebook.PRESETS["smoke"].doc in smoke


def test_runs_are_named_as_everywhere_else(no_smoke, tmp_path, cpu_only):
    settings = notebook.setup(preset="smoke", dataset="shapes", inlier="square", out=tmp_path, verbose=False)
    for variant in ("csi", "csi+g", "full"):
        assert settings.run_dir(variant) == results.run_dir(tmp_path, make_config(
            "smoke", dataset="shapes", inlier="square", variant=variant, seed=0))
    assert settings.config("csi", num_shifts=1).num_shifts == 1  # an exercise's one-field change
    with pytest.raises(ValueError, match="variant"):
        settings.config("gan")


def test_load_result_only_reads(no_smoke, tmp_path, cpu_only):
    settings = notebook.setup(preset="smoke", dataset="shapes", inlier="circle", out=tmp_path, verbose=False)
    assert settings.load_result("csi") is None
    assert not settings.run_dir("csi").exists()  # nothing was trained or created
    settings.run_dir("csi").mkdir()
    (settings.run_dir("csi") / "result.json").write_text(json.dumps({"auroc": 0.75}))
    assert settings.load_result("csi") == {"auroc": 0.75}


def test_load_trained_looks_in_the_configs_run_folder(no_smoke, tmp_path, cpu_only):
    settings = notebook.setup(preset="smoke", dataset="shapes", inlier="circle", out=tmp_path, verbose=False)
    config = settings.config("full", seed=5)
    with pytest.raises(FileNotFoundError, match=r"full-smoke-s5.*train the run first"):
        settings.load_trained(config)


def test_g_runs_snapshot_g_at_the_presets_step_interval(no_smoke, tmp_path, cpu_only):
    for preset, every in notebook.G_SNAPSHOT_EVERY_STEPS.items():
        settings = notebook.setup(preset=preset, dataset="shapes", inlier="square", out=tmp_path, verbose=False)
        assert settings.config("csi+g").g_snapshot_every_steps == every
        assert settings.config("full").g_snapshot_every_steps == every
        assert settings.config("csi").g_snapshot_every_steps is None  # no G, no snapshots
    assert notebook.G_SNAPSHOT_EVERY_STEPS["smoke"] < make_config("smoke").max_steps  # smoke mode shows several
    settings = notebook.setup(preset="smoke", dataset="shapes", inlier="square", out=tmp_path, verbose=False)
    assert settings.config("full", g_snapshot_every_steps=None).g_snapshot_every_steps is None  # an override wins
    # an environment field: the folder and the run it holds do not depend on it
    assert settings.run_dir("full") == results.run_dir(tmp_path, make_config(
        "smoke", dataset="shapes", inlier="square", variant="full", seed=0))
