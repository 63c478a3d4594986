"""Benchmark the ``cpu`` preset: AUROC, training and evaluation seconds per class (resumable).

Runs the preset (``--preset``, default ``cpu``) on every requested class,
variant and seed, each with :func:`csigen.train.run` into its own folder
``OUT/<dataset>-<class>-<variant>-<preset>-s<seed>`` (:func:`csigen.results.run_dir`,
the folders of ``python -m csigen sweep``). Re-running the same command after an
interruption reads finished runs back (their recorded AUROC and seconds),
resumes the interrupted one and trains the rest; nothing computed is lost.

Data: ``--dataset`` (default: ``imagefolder`` when ``--data-root`` holds
``train/`` and ``test/`` folders, such as the CIFAR-10 JPEG copy
``../shared/data/cifar10-jpg``, else ``cifar10``). Without ``--classes``
every class of the dataset runs.

Printed: a header line, one line per run as it finishes (AUROC of the score
reported: ``--score``, default each run's configured score; also the AUROC of
every score that run recorded; training and evaluation seconds, as measured
when the run was trained), one summary line per class (means over the seeds),
per variant the mean over classes and the lowest class, and last::

    cpu_budget <class>=<auroc> ... seconds=<total>

with the class's AUROC (fraction, mean over seeds; the key is
``<class>/<variant>`` when more than one variant runs) and the total recorded
training plus evaluation seconds of all runs.

    python bench/cpu_budget.py --data-root ../shared/data/cifar10-jpg --classes automobile cat \\
        [--variants csi full] [--seeds 0 1 2] [--out runs/cpu_budget] [--preset cpu] [--score csi]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from csigen.config import PRESETS, SCORES, VARIANTS, make_config, resolve_preset
from csigen.data import class_names
from csigen.results import run_dir
from csigen.train import run


def default_dataset(data_root: str | None) -> str:
    """``imagefolder`` when ``data_root`` has ``train/`` and ``test/`` folders (e.g. cifar10-jpg), else ``cifar10``."""
    if data_root is not None and all((Path(data_root).expanduser() / s).is_dir() for s in ("train", "test")):
        return "imagefolder"
    return "cifar10"


def parse_overrides(items: list[str]) -> dict:
    """``["f_width=32", "score=csi"]`` -> ``{"f_width": 32, "score": "csi"}`` (checked against TrainConfig)."""
    import ast
    import dataclasses

    from csigen.config import TrainConfig

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or name not in known:
            raise SystemExit(f"error: --set {item!r}: expected FIELD=VALUE with FIELD a TrainConfig field "
                             f"(e.g. f_width=32); known fields: {', '.join(sorted(known))}")
        try:
            out[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[name] = text
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=None, help="dataset folder (e.g. ../shared/data/cifar10-jpg)")
    ap.add_argument("--dataset", default=None,
                    help="default: imagefolder if --data-root has train/ and test/, else cifar10")
    ap.add_argument("--classes", nargs="+", default=None, help="inlier classes, names or indices (default: all)")
    ap.add_argument("--variants", nargs="+", default=["csi"], choices=VARIANTS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--out", default="runs/cpu_budget", help="root folder of the run folders")
    ap.add_argument("--score", default=None, choices=SCORES,
                    help="score whose AUROC is reported (default: each run's configured score)")
    ap.add_argument("--device", default="cpu", help="cpu (default), auto or cuda[:N]")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                    help="override a TrainConfig field of the preset, e.g. --set f_width=32 (repeatable; values "
                         "parsed as Python literals, else kept as strings); use another --out per recipe")
    args = ap.parse_args(argv)
    overrides = parse_overrides(args.overrides)

    dataset = args.dataset or default_dataset(args.data_root)
    classes = args.classes or class_names(dataset, root=args.data_root)
    classes = [int(c) if str(c).isdigit() else c for c in classes]
    extra = "".join(f" {k}={v!r}" for k, v in overrides.items())
    chosen = resolve_preset(args.preset)  # "cpu": cpu-amx, cpu-avx512bf16 or cpu-fp32, by this CPU
    print(f"cpu_budget preset={chosen}{extra} dataset={dataset} classes={len(classes)} variants={','.join(args.variants)} "
          f"seeds={','.join(map(str, args.seeds))} device={args.device} threads={torch.get_num_threads()} "
          f"out={args.out}", flush=True)

    rows = []
    for inlier in classes:
        for variant in args.variants:
            for seed in args.seeds:
                config = make_config(args.preset, dataset=dataset, inlier=inlier, variant=variant, seed=seed,
                                     data_root=args.data_root, device=args.device, **overrides)
                folder = run_dir(args.out, config)
                existed = (folder / "result.json").exists()
                r = run(config, folder, resume=True, progress=not args.no_progress)
                score = args.score or r["score"]
                scores = r.get("scores") or {r["score"]: {"auroc": r["auroc"]}}
                if score not in scores:
                    raise SystemExit(f"error: {folder} has no AUROC for score {score!r} (it has {sorted(scores)}): "
                                     "re-score it with python -m csigen eval, or choose another --score")
                row = {"class": r.get("inlier_name") or str(inlier), "variant": variant, "seed": seed,
                       "score": score, "auroc": scores[score]["auroc"], "train_s": r["train_seconds"],
                       "eval_s": r["eval_seconds"]}
                rows.append(row)
                others = " ".join(f"{name}={s['auroc']:.3f}" for name, s in scores.items())
                print(f"{row['class']} {variant} seed={seed} auroc={row['auroc']:.3f} score={score} "
                      f"train_s={row['train_s']:.1f} eval_s={row['eval_s']:.1f} steps={r['steps']} "
                      f"[{others}]" + (" (finished earlier)" if existed else ""), flush=True)

    several = len(args.variants) > 1
    summary = {}
    for row in rows:
        key = f"{row['class']}/{row['variant']}" if several else row["class"]
        summary.setdefault(key, []).append(row)
    for key, group in summary.items():
        aurocs = [g["auroc"] for g in group]
        spread = f" std={statistics.stdev(aurocs):.3f}" if len(aurocs) > 1 else ""
        print(f"{key}: auroc mean={statistics.mean(aurocs):.3f}{spread} ({len(aurocs)} seeds) "
              f"train_s={statistics.mean(g['train_s'] for g in group):.1f} "
              f"eval_s={statistics.mean(g['eval_s'] for g in group):.1f}")
    means = {key: statistics.mean(g["auroc"] for g in group) for key, group in summary.items()}
    for variant in args.variants:
        per_class = [m for key, m in means.items() if summary[key][0]["variant"] == variant]
        print(f"{variant}: mean over {len(per_class)} classes {statistics.mean(per_class):.3f}, "
              f"lowest {min(per_class):.3f}")
    total = sum(row["train_s"] + row["eval_s"] for row in rows)
    print("cpu_budget " + " ".join(f"{key}={value:.3f}" for key, value in means.items()) + f" seconds={total:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
