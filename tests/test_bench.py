"""The benchmarks under bench/ run and print the line they document (no timing is asserted here)."""

import re
import subprocess
import sys
from pathlib import Path

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
