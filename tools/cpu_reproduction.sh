#!/usr/bin/env bash
# The CPU-scale CIFAR-10 reproduction (issues 10 and 12), resumable: re-run it after an interruption
# and only what is missing trains (bench/cpu_budget.py resumes each run folder).
#   [PRESET=cpu-fp32|cpu-amx|cpu-avx512bf16] bash tools/cpu_reproduction.sh [DATA_ROOT] [OUT]
# DATA_ROOT: CIFAR-10 as ImageFolder (train/, test/), default ../shared/data/cifar10-jpg;
# OUT: default results/cifar10-<preset>, with <preset> $PRESET if set, else what the cpu preset names on this
# machine: cpu-amx on a CPU with AMX units, cpu-avx512bf16 on one with AVX512-BF16, else cpu-fp32
# (results/cifar10-cpu holds the float32 recipe's
# reproduction, recorded as preset 'cpu' before the split). Each stage prints bench/cpu_budget.py's lines to
# OUT/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar10-jpg}
py=${PYTHON:-python}
preset=${PRESET:-$("$py" -c 'from csigen.config import resolve_preset; print(resolve_preset("cpu"))')}
out=${2:-results/cifar10-$preset}
# bf16 rounds differently on AMX tiles and on AVX512-BF16 instructions (bench/RESULTS.md, "A second CPU"), so a
# bf16 preset's runs pair across variants and seeds only when one kind of CPU made them all: resuming a folder
# that holds runs of cpu-amx (made with AMX) or cpu-avx512bf16 (with AVX512-BF16) on another kind is refused
case "$preset" in cpu-amx) made_on=amx ;; cpu-avx512bf16) made_on=avx512_bf16 ;; *) made_on= ;; esac
if [ -n "$made_on" ] && [ "${ALLOW_OTHER_CPU:-}" != 1 ] && compgen -G "$out/*/result.json" >/dev/null; then
  bf16_path=$("$py" -c 'from csigen.config import cpu_bf16_path; print(cpu_bf16_path())')
  if [ "$bf16_path" != "$made_on" ]; then
    echo "error: $out holds $preset runs made on a CPU whose bf16 path is '$made_on'; this CPU runs bf16 as" \
      "'$bf16_path', which rounds differently, so new runs would not pair with them. Resume on a CPU of that" \
      "kind, or run the whole reproduction here into another folder (second argument), or set" \
      "ALLOW_OTHER_CPU=1." >&2
    exit 2
  fi
fi
mkdir -p "$out/logs"
append_new() {  # append_new FILE: append the lines of stdin that FILE does not hold yet, as they come
  # (a re-run reports the runs it finds finished again; their lines are in the log already: a line ending
  # "(finished earlier)" is a repeat when the log has any line of that run, "<class> <variant> seed=<n>",
  # since the line written when the run finished has no such ending). mawk (Debian's awk) reads a pipe in
  # blocks, so a run's line would reach the log only when its stage ends: -W interactive reads line by line
  # (the ${a[@]+...} form: bash before 4.4 calls an empty array unbound under set -u)
  local line_by_line=()
  if awk -W version 2>/dev/null | grep -q mawk; then line_by_line=(-W interactive); fi
  awk ${line_by_line[@]+"${line_by_line[@]}"} -v f="$1" '
    function run_of(line,  a) { split(line, a, " "); return a[3] ~ /^seed=/ ? a[1] " " a[2] " " a[3] : "" }
    BEGIN { while ((getline l < f) > 0) { seen[l] = 1; if (run_of(l) != "") done[run_of(l)] = 1 } }
    / \(finished earlier\)$/ && (run_of($0) in done) { next }
    !seen[$0]++ { if (run_of($0) != "") done[run_of($0)] = 1; print; fflush() }' >> "$1"
}
stage() {  # stage NAME ARGS...: one bench/cpu_budget.py call, its new output lines appended to OUT/logs/NAME.log
  local name=$1; shift
  "$py" bench/cpu_budget.py --data-root "$data" --out "$out" --preset "$preset" --no-progress "$@" 2>&1 | append_new "$out/logs/$name.log"
}
# issue 12's acceptance runs first: automobile and cat, csi (three seeds), every class with csi (bench/RESULTS.md's
# ten-class record), then full on automobile and cat (seed 0 of both first, for an early paired look at full
# against csi, then seeds 1 and 2)
stage csi-s0 --classes automobile cat --variants csi --seeds 0
stage csi-s12 --classes automobile cat --variants csi --seeds 1 2
stage csi-all --variants csi --seeds 0
stage full-s0 --classes automobile cat --variants full --seeds 0
stage full-s12 --classes automobile cat --variants full --seeds 1 2
# Figure 2's run: full on cat, about 3.8x the preset's steps (cpu-fp32: 1,600 instead of 420, about an hour
# on an idle 2-core CPU; cpu-amx: 5,400 instead of 1,430, 1-1.5 h; cpu-avx512bf16: 3,800 instead of 1,000),
# kept out of OUT so the tables hold one recipe; figures: --figure2-run OUT-figure2/imagefolder-cat-full-<steps>
case "$preset" in
  cpu-amx) steps=5400 epochs=88 ;;
  cpu-avx512bf16) steps=3800 epochs=62 ;;
  *) steps=1600 epochs=26 ;;
esac
"$py" -m csigen train --dataset imagefolder --data-root "$data" --inlier cat --variant full --preset "$preset" \
  --epochs $epochs --max-steps $steps --no-progress --out "$out-figure2/imagefolder-cat-full-$steps" \
  2>&1 | append_new "$out/logs/figure2.log"
# then the rest of the ablation
stage ablation --variants csi+g full --seeds 0
stage csig-seeds --classes automobile cat --variants csi+g --seeds 1 2
