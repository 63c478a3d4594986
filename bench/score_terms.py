"""Which term carries CSI's score: the AUROC of each of its two terms, for finished runs.

CSI's score (:func:`csigen.score.csi_score`) is the sum of a similarity term
(the contrastive features' nearest-neighbour similarity, weighted per shift)
and a shift term (the rotation head's logit of the right rotation, weighted per
shift); :func:`csigen.score.csi_score_terms` returns the two. For each run
folder given, this evaluates F again exactly as the run's evaluation did (its
features, R draws, crop and seed 0, from ``checkpoint.pt`` or ``weights.pt``)
and prints one line::

    <run folder name> csi=<auroc> similarity=<auroc> shift=<auroc> steps=<n>

``csi`` is the sum's AUROC (the run's recorded ``scores["csi"]`` when its
evaluation settings are unchanged); last line::

    score_terms runs=<n> csi=<mean> similarity=<mean> shift=<mean>

with the means over the runs. Writes nothing.

    python bench/score_terms.py results/cifar10-cpu-amx/imagefolder-bird-{csi,full}-cpu-amx-s0 [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from csigen import score as S
from csigen.distributed import unwrap
from csigen.train import Trainer, eval_feature_pair


def term_aurocs(run_dir: str | Path, device: str | None = None) -> dict[str, float]:
    """``{"csi", "similarity", "shift"}`` AUROCs of the run in ``run_dir``, plus ``steps``."""
    trainer = Trainer.from_run(run_dir, device=device)
    config, task = trainer.config, trainer.task
    F = unwrap(trainer.nets.F)
    train, test = eval_feature_pair(F, task, config, device=trainer.device, seed=0,
                                    amp_dtype=trainer.amp_dtype if config.eval_amp else None)
    terms = {name: v.float().cpu() for name, v in S.csi_score_terms(test, train).items()}
    terms = {"csi": terms["similarity"] + terms["shift"], **terms}
    inlier = task.test_is_inlier.cpu()
    return {name: S.auroc(v[inlier], v[~inlier]) for name, v in terms.items()} | {"steps": trainer.step}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="finished (or interrupted) run folders")
    ap.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    args = ap.parse_args(argv)
    rows = []
    for run_dir in args.runs:
        r = term_aurocs(run_dir, device=args.device)
        rows.append(r)
        print(f"{Path(run_dir).name} csi={r['csi']:.4f} similarity={r['similarity']:.4f} "
              f"shift={r['shift']:.4f} steps={r['steps']}", flush=True)
    means = " ".join(f"{k}={statistics.mean(r[k] for r in rows):.4f}" for k in ("csi", "similarity", "shift"))
    print(f"score_terms runs={len(rows)} {means}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
