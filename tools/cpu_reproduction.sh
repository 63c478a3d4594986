#!/usr/bin/env bash
# The CPU-scale CIFAR-10 reproduction (issues 10 and 12), resumable: re-run it after an interruption
# and only what is missing trains (bench/cpu_budget.py resumes each run folder).
#   bash tools/cpu_reproduction.sh [DATA_ROOT] [OUT]
# DATA_ROOT: CIFAR-10 as ImageFolder (train/, test/), default ../shared/data/cifar10-jpg;
# OUT: default results/cifar10-cpu. Each stage prints bench/cpu_budget.py's lines to OUT/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data/cifar10-jpg}
out=${2:-results/cifar10-cpu}
py=${PYTHON:-python}
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
  "$py" bench/cpu_budget.py --data-root "$data" --out "$out" --no-progress "$@" 2>&1 | append_new "$out/logs/$name.log"
}
# issue 12's acceptance runs first: automobile and cat, csi (three seeds), then full (seed 0 of both
# classes first, for an early paired look at full against csi, then seeds 1 and 2)
stage csi-s0 --classes automobile cat --variants csi --seeds 0
stage csi-s12 --classes automobile cat --variants csi --seeds 1 2
stage full-s0 --classes automobile cat --variants full --seeds 0
stage full-s12 --classes automobile cat --variants full --seeds 1 2
# then every class (bench/RESULTS.md's ten-class csi record)
stage csi-all --variants csi --seeds 0
# Figure 2's run: full on cat, 1,600 steps instead of 420 (about an hour on an idle 2-core CPU), kept
# out of OUT so the tables hold one recipe; figures: --figure2-run OUT-figure2/imagefolder-cat-full-1600
"$py" -m csigen train --dataset imagefolder --data-root "$data" --inlier cat --variant full --preset cpu \
  --epochs 26 --max-steps 1600 --no-progress --out "$out-figure2/imagefolder-cat-full-1600" \
  2>&1 | append_new "$out/logs/figure2.log"
# then the rest of the ablation
stage ablation --variants csi+g full --seeds 0
stage csig-seeds --classes automobile cat --variants csi+g --seeds 1 2
