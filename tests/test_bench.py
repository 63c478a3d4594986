"""The benchmarks under bench/ run and print the line they document (no timing is asserted here)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from csigen.config import resolve_preset

ROOT = Path(__file__).resolve().parents[1]


def test_gan_overhead_benchmark_runs_and_reports_each_variant():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gan_overhead.py"), "--preset", "smoke", "--cycles", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()
    assert re.fullmatch(r"preset=smoke batch=4 gan_every=2 cycles=1 device=cpu threads=\d+", out[0])
    last = out[-1]
    assert re.fullmatch(r"gan_overhead csi_img_s=[0-9.]+ csi\+g_img_s=[0-9.]+ full_img_s=[0-9.]+ "
                        r"full_over_csi=[0-9.]+", last), last


def test_cpu_budget_benchmark_reports_each_class_and_resumes(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_budget.py"), "--preset", "smoke", "--dataset", "shapes",
           "--classes", "stripes", "--out", str(tmp_path), "--no-progress"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    lines = out.strip().splitlines()
    assert re.fullmatch(r"cpu_budget preset=smoke dataset=shapes classes=1 variants=csi seeds=0 device=cpu "
                        r"threads=\d+ out=.*", lines[0]), lines[0]
    assert re.fullmatch(r"stripes csi seed=0 auroc=[0-9.]+ score=shared train_s=[0-9.]+ eval_s=[0-9.]+ steps=4 "
                        r"\[(\w+=[0-9.]+ ?){4}\]", lines[1]), lines[1]
    assert re.fullmatch(r"cpu_budget stripes=[0-9.]+ seconds=[0-9.]+", lines[-1]), lines[-1]
    assert (tmp_path / "shapes-stripes-csi-smoke-s0" / "result.json").is_file()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    assert "(finished earlier)" in again and again.strip().splitlines()[-1] == lines[-1]  # read back, not redone


def test_cpu_reproduction_appends_only_new_lines_to_its_logs(tmp_path):
    # tools/cpu_reproduction.sh re-run reports the finished runs again: their lines are not repeated in the logs
    script = (ROOT / "tools" / "cpu_reproduction.sh").read_text()
    function = re.search(r"^append_new\(\) \{.*?^\}", script, re.S | re.M).group(0)
    log = tmp_path / "stage.log"
    for text in ("a\nb\n", "a\nc\nb\nc\nd\n"):
        subprocess.run(["bash", "-c", f'{function}\nappend_new "$1"', "_", str(log)], input=text, text=True,
                       check=True, timeout=60)
    assert log.read_text() == "a\nb\nc\nd\n"
    # a finished run re-reported (its scores perhaps in another order) is not a new line; a new run is
    runs = tmp_path / "runs.log"
    first = "cat csi seed=0 auroc=0.671 [shared=0.499 csi=0.671]\n"
    again = ("cat csi seed=0 auroc=0.671 [csi=0.671 shared=0.499] (finished earlier)\n"
             "cat full seed=0 auroc=0.685 [csi=0.685] (finished earlier)\n")
    for text in (first, again, again):
        subprocess.run(["bash", "-c", f'{function}\nappend_new "$1"', "_", str(runs)], input=text, text=True,
                       check=True, timeout=60)
    assert runs.read_text() == first + "cat full seed=0 auroc=0.685 [csi=0.685] (finished earlier)\n"


def test_cpu_reproduction_logs_each_line_as_it_comes(tmp_path):
    # a stage runs for hours: each run's line must reach its log when the run finishes, not when the stage
    # ends (mawk, Debian's awk and CI's, reads a pipe in blocks unless told -W interactive; gawk reads lines
    # anyway, so on a gawk machine this passes either way)
    script = (ROOT / "tools" / "cpu_reproduction.sh").read_text()
    function = re.search(r"^append_new\(\) \{.*?^\}", script, re.S | re.M).group(0)
    log = tmp_path / "stage.log"
    proc = subprocess.Popen(["bash", "-c", f'{function}\nappend_new "$1"', "_", str(log)], stdin=subprocess.PIPE,
                            text=True)
    try:
        proc.stdin.write("cat csi seed=0 auroc=0.671\n")
        proc.stdin.flush()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (log.exists() and log.read_text()):
            time.sleep(0.1)
        assert log.read_text() == "cat csi seed=0 auroc=0.671\n"  # while the stage (stdin) is still open
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)


def test_cpu_budget_overrides_fields_and_rejects_unknown_ones(tmp_path):
    cmd = [sys.executable, str(ROOT / "bench" / "cpu_budget.py"), "--preset", "smoke", "--dataset", "shapes",
           "--classes", "stripes", "--out", str(tmp_path), "--no-progress", "--set", "f_width=8",
           "--set", "score=csi", "--set", "max_steps=2"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0].startswith("cpu_budget preset=smoke f_width=8 score='csi' max_steps=2 dataset=shapes"), lines[0]
    assert " score=csi " in lines[1] and " steps=2 " in lines[1], lines[1]
    bad = subprocess.run(cmd[:-6] + ["--set", "f_widht=8"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "f_widht" in bad.stderr and "f_width" in bad.stderr


def test_throughput_benchmark_counts_flops_and_reports_each_variant():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--device", "cpu", "--preset", "smoke",
         "--cycles", "1", "--variants", "csi", "full"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()
    assert re.fullmatch(r"throughput device=cpu \(\d+ threads\) preset=smoke batch=4 amp=off compile=False cycles=1 "
                        r"gan_every=2", out[0]), out[0]
    # F's FLOPs per real image: ResNet-18 on 4 shifts x 2 views, forward and backward (about 26.7 GFLOP)
    gflop = float(re.search(r"csi: .* ([0-9.]+) GFLOP per image", out[1]).group(1))
    assert 20 < gflop < 35, out[1]
    assert re.fullmatch(r"throughput device=cpu amp=off csi_img_s=[0-9.]+ csi_tflops=[0-9.]+ csi_peak_gb=n/a "
                        r"full_img_s=[0-9.]+ full_tflops=[0-9.]+ full_peak_gb=n/a full_over_csi_flops=[0-9.]+",
                        out[-1]), out[-1]


def test_throughput_benchmark_compares_precisions_side_by_side():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--device", "cpu", "--preset", "smoke",
         "--cycles", "2", "--variants", "csi", "--amp", "off", "bf16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    ).stdout.strip().splitlines()
    assert "amp=off,bf16 " in out[0], out[0]
    assert out[1].startswith("csi@off: ") and out[2].startswith("csi@bf16: "), out
    last = re.fullmatch(r"throughput device=cpu amp=off,bf16 csi@off_img_s=([0-9.]+) .* csi@bf16_img_s=([0-9.]+) "
                        r".* csi_speedup=([0-9.]+)", out[-1])
    assert last, out[-1]
    off, bf16, speedup = map(float, last.groups())
    assert abs(speedup - bf16 / off) < 0.01 * speedup  # img/s under the last precision over the first
    # "auto" is float32 on the CPU: asking for both is asking for one precision twice
    bad = subprocess.run([sys.executable, str(ROOT / "bench" / "throughput.py"), "--device", "cpu", "--preset",
                          "smoke", "--cycles", "1", "--variants", "csi", "--amp", "auto", "off"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "resolve to the same precision" in bad.stderr, bad.stderr


SCORING_TINY = ["--repeats", "1", "--samples", "1", "--images", "3", "--batch-size", "2", "--n-test", "20",
                "--n-train", "10", "--threads", "1"]


def test_scoring_benchmark_reports_ours_alone():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scoring.py"), *SCORING_TINY],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()
    assert out[0].startswith("device cpu (1 threads)") and "3 random images x R=1 x 4 rotations = 12" in out[0]
    assert any(re.fullmatch(r"eval_features ours img/s fastest/median/slowest [0-9.]+ / [0-9.]+ / [0-9.]+", line)
               for line in out), out
    assert re.fullmatch(r"scoring csi_score ours_s=[0-9.]+", out[-2]), out[-2]
    assert re.fullmatch(r"eval_features ours_img_s=[0-9.]+", out[-1]), out[-1]


def test_scoring_benchmark_against_the_official_code():
    csi_root = Path("/tmp/csi")
    if not (csi_root / "evals" / "ood_pre.py").is_file():
        pytest.skip("the official CSI code (github.com/alinlab/CSI) is not extracted at /tmp/csi")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "scoring.py"), *SCORING_TINY,
                          "--reference", str(csi_root), "--data", "shapes"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()
    check = next(line for line in out if line.startswith("check csi_score"))
    assert re.fullmatch(r"check csi_score vs reference get_scores: max \|difference\| / max \|score\| = \S+ "
                        r"\(tolerance 1e-04, 20 test images\): ok", check), check
    assert float(check.split("= ")[1].split()[0]) < 1e-4
    assert re.fullmatch(r"eval_features ratio \(ours img/s / reference img/s\): fastest [0-9.]+, medians [0-9.]+, "
                        r"slowest [0-9.]+", out[-3]), out[-3]
    assert re.fullmatch(r"scoring csi_score ours_s=[0-9.]+ reference_s=[0-9.]+ ratio=[0-9.]+", out[-2]), out[-2]
    assert re.fullmatch(r"eval_features ours_img_s=[0-9.]+ reference_img_s=[0-9.]+ ratio=[0-9.]+", out[-1]), out[-1]


@pytest.mark.parametrize("levers", [[], ["--no-channels-last"]])
def test_train_step_benchmark_reports_its_line(levers):
    cmd = [sys.executable, str(ROOT / "bench" / "train_step.py"), "--batch-size", "2", "--steps", "1", "--warmup",
           "0", "--device", "cpu", *levers]
    reference = Path("/tmp/csi")
    if reference.is_dir():  # the official code, when a copy is at hand (never part of this repository)
        cmd += ["--reference", str(reference)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout
    lines = out.strip().splitlines()
    assert f"channels_last={not levers} compile=False" in lines[0], lines[0]  # csigen's default: channels_last
    pattern = (r"csi_step ours_img_s=[0-9.]+ reference_img_s=[0-9.]+ ratio=[0-9.]+" if reference.is_dir()
               else r"csi_step ours_img_s=[0-9.]+")
    assert re.fullmatch(pattern, lines[-1]), lines[-1]
    if reference.is_dir():
        assert "spread of the 1 paired repeats: min" in lines[-2], lines[-2]


@pytest.mark.parametrize("preset, args", [(None, []), ("cpu-fp32", []), ("cpu-amx", ["data", "elsewhere"])])
def test_cpu_reproduction_runs_the_cpu_preset_for_this_machine_into_its_own_folder(preset, args):
    # PRESET unset: what 'cpu' names here (cpu-amx or cpu-fp32), so one folder never mixes the two recipes
    script = (ROOT / "tools" / "cpu_reproduction.sh").read_text()
    lines = [line for line in script.splitlines() if re.match(r"(py|preset|out)=", line)]
    env = {k: v for k, v in os.environ.items() if k != "PRESET"} | {"PYTHON": sys.executable}
    if preset:
        env["PRESET"] = preset
    done = subprocess.run(["bash", "-c", "\n".join(lines) + '\necho "$preset $out"', "_", *args], env=env,
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    chosen = preset or resolve_preset("cpu")
    assert done.stdout == f"{chosen} {args[1] if args else 'results/cifar10-' + chosen}\n"
    assert len(lines) == 3 and '--preset "$preset"' in script


@pytest.mark.parametrize("preset, cpu, allow, refused", [
    ("cpu-amx", "avx512_bf16", "", True), ("cpu-amx", "emulated", "", True), ("cpu-amx", "avx512_bf16", "1", False),
    ("cpu-amx", "amx", "", False), ("cpu-avx512bf16", "amx", "", True), ("cpu-avx512bf16", "avx512_bf16", "", False),
    ("cpu-fp32", "emulated", "", False)])
def test_cpu_reproduction_refuses_to_resume_bf16_runs_on_another_kind_of_cpu(tmp_path, preset, cpu, allow, refused):
    # a stand-in interpreter answers cpu_bf16_path's question; anything else it is asked stops the script
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\ncase \"$2\" in *cpu_bf16_path*) echo {cpu};; *) echo ran; exit 7;; esac\n")
    fake.chmod(0o755)
    out = tmp_path / "out"
    (out / f"imagefolder-cat-csi-{preset}-s0").mkdir(parents=True)
    (out / f"imagefolder-cat-csi-{preset}-s0" / "result.json").write_text("{}")
    env = os.environ | {"PYTHON": str(fake), "PRESET": preset, "ALLOW_OTHER_CPU": allow}
    done = subprocess.run(["bash", str(ROOT / "tools" / "cpu_reproduction.sh"), "data", str(out)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    if refused:
        assert done.returncode == 2 and f"runs bf16 as '{cpu}'" in done.stderr and "ALLOW_OTHER_CPU=1" in done.stderr
        assert f"holds {preset} runs" in done.stderr
        assert not (out / "logs").exists()
    else:  # past the check: the first stage calls the interpreter (the stand-in exits 7, which stops the script)
        assert done.returncode != 2 and "error:" not in done.stderr


def test_score_terms_reports_each_term_and_the_run_s_csi_auroc(tmp_path):
    # a smoke run of cpu_budget, then its CSI score split into its two terms; the sum's AUROC is the record's
    subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_budget.py"), "--preset", "smoke", "--dataset", "shapes",
                    "--classes", "stripes", "--out", str(tmp_path), "--no-progress"],
                   cwd=ROOT, capture_output=True, text=True, timeout=600, check=True)
    run = tmp_path / "shapes-stripes-csi-smoke-s0"
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "score_terms.py"), str(run)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=True).stdout.strip().splitlines()
    m = re.fullmatch(r"shapes-stripes-csi-smoke-s0 csi=([0-9.]+) similarity=([0-9.]+) shift=([0-9.]+) steps=4", out[0])
    assert m, out[0]
    record = json.loads((run / "result.json").read_text())
    assert abs(float(m.group(1)) - record["scores"]["csi"]["auroc"]) < 1e-4
    assert re.fullmatch(r"score_terms runs=1 csi=[0-9.]+ similarity=[0-9.]+ shift=[0-9.]+", out[-1]), out[-1]
