"""bench/gpu_check.py: the one-command GPU runtime check, run here on the CPU (as CI runs it)."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_cpu_check_passes_every_stage_and_ends_with_the_ok_line(amp):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--amp", amp], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    lines = proc.stdout.strip().splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert re.fullmatch(
        rf"gpu_check ok variants=3 amp={amp} device=cpu batch=4 ref_err=\S+ "
        r"img_s=csi:[0-9.]+,csi\+g:[0-9.]+,full:[0-9.]+ peak_gb=n/a batch224=csi:4,csi\+g:4,full:4 "
        r"peak_gb_224=n/a fp16_skipped=csi:\d+,csi\+g:\d+,full:\d+ seconds=\d+", lines[-1]), lines[-1]
    for variant, blocks in (("csi", 0), ("csi+g", 2), ("full", 2)):
        assert any(line.startswith(f"train {variant}: 4 steps ({blocks} GAN blocks), checkpoint, resume, "
                                   "evaluate (fp32) ok") for line in lines), variant
    assert any(line.startswith("reference fp32 step vs CSI: loss terms within") for line in lines)


def test_a_failing_stage_is_named_and_exits_non_zero(monkeypatch, capsys):
    gpu_check = load_gpu_check()
    monkeypatch.setattr(gpu_check, "LOSS_TOLERANCE", 0.0)  # CSI's numbers cannot be met exactly
    monkeypatch.setattr(gpu_check, "VARIANTS", ("csi",))
    assert gpu_check.main(["--device", "cpu", "--amp", "bf16"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"gpu_check FAILED reference: StageFailed: float32 CSI step differs from CSI's: "
                        r"loss terms by \S+ \(tolerance 0\).*", last), last


def test_a_gpu_check_without_a_gpu_says_so():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cuda"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": ""})
    assert proc.returncode == 1
    assert re.fullmatch(r"gpu_check FAILED setup: device 'cuda' was requested but no GPU is available.*",
                        proc.stdout.strip().splitlines()[-1])
