"""The named presets, and ``cpu``, which stands for ``cpu-amx`` or ``cpu-fp32`` by the machine's CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from csigen import config as C
from csigen.cli import main
from csigen.results import run_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["amx", "avx512_bf16", "emulated"])
def bf16_path(request, monkeypatch):
    monkeypatch.setattr(C, "cpu_bf16_path", lambda: request.param)
    return request.param


def test_cpu_names_the_preset_for_this_cpu_and_the_config_records_it(bf16_path, tmp_path):
    chosen, recipe = {"amx": ("cpu-amx", ("bf16", 1430, 25)), "avx512_bf16": ("cpu-avx512bf16", ("bf16", 1000, 17)),
                      "emulated": ("cpu-fp32", ("off", 420, 7))}[bf16_path]
    assert C.resolve_preset("cpu") == C.choose_cpu_preset() == chosen
    cfg = C.make_config("cpu", dataset="cifar10", inlier="cat", variant="csi")
    assert cfg == C.make_config(chosen, dataset="cifar10", inlier="cat", variant="csi") and cfg.preset == chosen
    assert (cfg.amp, cfg.max_steps, cfg.epochs) == recipe
    assert run_dir(tmp_path, cfg).name == f"cifar10-cat-csi-{chosen}-s0"


def test_cpu_amx_is_cpu_fp32_in_bf16_with_more_steps_and_gan_every_4():
    fp32, amx = C.make_config("cpu-fp32").to_dict(), C.make_config("cpu-amx").to_dict()
    differ = {k: (fp32[k], amx[k]) for k in fp32 if fp32[k] != amx[k]}
    assert differ == {"preset": ("cpu-fp32", "cpu-amx"), "amp": ("off", "bf16"), "epochs": (7, 25),
                      "max_steps": (420, 1430), "gan_every": (5, 4)}
    assert C.make_config("cpu-amx").planned_steps(2000) == 1430  # 25 epochs of 62 steps, capped at 1,430


def test_cpu_avx512bf16_is_cpu_amx_with_1000_steps():
    amx, avx = C.make_config("cpu-amx").to_dict(), C.make_config("cpu-avx512bf16").to_dict()
    differ = {k: (amx[k], avx[k]) for k in amx if amx[k] != avx[k]}
    assert differ == {"preset": ("cpu-amx", "cpu-avx512bf16"), "epochs": (25, 17), "max_steps": (1430, 1000)}
    assert C.make_config("cpu-avx512bf16").planned_steps(2000) == 1000  # 17 epochs of 62 steps, capped at 1,000
    assert set(C.CPU_PRESETS) == {"cpu-fp32", "cpu-amx", "cpu-avx512bf16"}


def test_cpu_fp32_is_the_recipe_of_the_committed_cpu_reproduction():
    """results/cifar10-cpu was recorded as preset 'cpu' before the split (amp 'auto', float32 on a CPU)."""
    recorded = json.loads((ROOT / "results/cifar10-cpu/imagefolder-cat-csi-cpu-s0/config.json").read_text())
    requested = C.make_config("cpu-fp32", dataset="imagefolder", inlier="cat", variant="csi", seed=0,
                              data_root=recorded["data_root"])
    assert sorted(C.same_run_config(recorded, requested)) == ["amp", "preset"]
    assert recorded["amp"] == "auto" and recorded["preset"] == "cpu"


def test_an_unknown_preset_names_the_choices():
    with pytest.raises(C.ConfigError, match=r"unknown preset 'gpu'.*'cpu-amx'.*python -m csigen presets"):
        C.make_config("gpu")


@pytest.mark.parametrize("answer, expected", [(True, True), (False, False), (RuntimeError("no"), False)])
def test_cpu_has_amx_asks_torch(monkeypatch, answer, expected):
    def probe():
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe, raising=False)
    assert C.cpu_has_amx() is expected


@pytest.mark.parametrize("flags, expected", [("fpu sse avx512_bf16 amx_bf16 amx_tile", True),
                                              ("fpu sse avx2", False), (None, False)])
def test_cpu_has_amx_reads_cpuinfo_where_torch_cannot_say(monkeypatch, tmp_path, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(C, "CPUINFO", str(cpuinfo))
    assert C.cpu_has_amx() is expected


@pytest.mark.parametrize("amx, avx512_bf16, expected", [
    (True, False, "amx"), (False, True, "avx512_bf16"), (False, False, "emulated"),
    (False, RuntimeError("no"), "emulated")])
def test_cpu_bf16_path_asks_torch(monkeypatch, amx, avx512_bf16, expected):
    def probe():
        if isinstance(avx512_bf16, Exception):
            raise avx512_bf16
        return avx512_bf16

    monkeypatch.setattr(C, "cpu_has_amx", lambda: amx)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe, raising=False)
    assert C.cpu_bf16_path() == expected


@pytest.mark.parametrize("flags, expected", [("fpu sse avx512f avx512_bf16", "avx512_bf16"),
                                              ("fpu sse avx2 avx512f", "emulated"), (None, "emulated")])
def test_cpu_bf16_path_reads_cpuinfo_where_torch_cannot_say(monkeypatch, tmp_path, flags, expected):
    monkeypatch.setattr(C, "cpu_has_amx", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\n")
    monkeypatch.setattr(C, "CPUINFO", str(cpuinfo))
    assert C.cpu_bf16_path() == expected


def test_presets_command_lists_cpu_and_the_two_it_stands_for(capsys):
    assert main(["presets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == list(C.PRESETS) and {"cpu", "cpu-fp32", "cpu-amx"} <= set(names)


def test_a_cpu_run_records_which_cpu_ran_it(monkeypatch, tmp_path):
    from csigen.train import environment_info

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n"
                       "flags\t\t: fpu avx2\n\n")
    monkeypatch.setattr(C, "CPUINFO", str(cpuinfo))
    monkeypatch.setattr(C, "cpu_bf16_path", lambda: "avx512_bf16")
    info = environment_info(torch.device("cpu"))
    assert info["device_name"] == "AMD EPYC 9654 96-Core Processor"
    assert info["cpu_bf16"] == "avx512_bf16" and info["threads"] == torch.get_num_threads()
    cpuinfo.write_text("processor\t: 0\n")  # no model name (not Linux-like): platform's answer, never empty
    assert environment_info(torch.device("cpu"))["device_name"]
