"""Command line: ``python -m csigen train|eval|presets``.

The argument parser is built by :func:`build_parser`; nothing runs at import.
``train`` prints the run's ``result.json`` as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csigen.config import F_OPTIMIZERS, PRESETS, SCORES, VARIANTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m csigen",
        description="Train and evaluate CSI, CSI+G and the full model (Yu & Chiu) on one-class tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one variant on one inlier class, then evaluate it",
                       description="Train (or resume) a run and evaluate it. Writes config.json, history.csv, "
                                   "checkpoint.pt, scores.npz and result.json into --out; prints result.json last.")
    t.add_argument("--dataset", default="shapes",
                   help="cifar10, cifar100 (20 superclasses), imagenet30, imagefolder (train/<class>/, "
                        "test/<class>/ under --data-root) or shapes (built in, offline; default)")
    t.add_argument("--inlier", default="0", help="inlier class: index or name, e.g. 3 or cat (default 0)")
    t.add_argument("--variant", default="full", choices=VARIANTS,
                   help="csi: F with L_CSI only; csi+g: adds G and D; full: adds E and D' (default)")
    t.add_argument("--preset", default="smoke", choices=sorted(PRESETS) + ["custom"],
                   help="; ".join(f"{p.name}: {p.doc}" for p in PRESETS.values()))
    t.add_argument("--data-root", default=None,
                   help="dataset folder (default: $CSIGEN_DATA or ~/.cache/csigen/data); "
                        "CIFAR downloads there when missing")
    t.add_argument("--no-download", action="store_true", help="never download; fail with instructions instead")
    t.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, augmentations)")
    t.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<inlier>-<variant>-<preset>-s<seed>)")
    t.add_argument("--resume", action="store_true",
                   help="continue from --out/checkpoint.pt if present; a finished run is reported, not redone")
    t.add_argument("--force", action="store_true",
                   help="start over even if --out already holds a checkpoint or a result (they are overwritten)")
    t.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda[:N]")
    t.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    t.add_argument("--max-steps", type=int, help="override the preset's cap on training steps")
    t.add_argument("--batch-size", type=int, help="images per step (each seen as 4 shifts x 2 views)")
    t.add_argument("--f-optimizer", choices=F_OPTIMIZERS, help="optimiser for F (default lars, as CSI)")
    t.add_argument("--score", choices=SCORES,
                   help="test score: shared (Eq. 11, one nearest neighbour for all shifts; default), literal "
                        "(Eq. 11 as printed), per_shift (CSI's simclr score) or csi (CSI's full score)")
    t.add_argument("--eval-samples", type=int, help="R, random T draws per test image for M_ens (CSI: 10)")
    t.add_argument("--max-train", type=int, help="use at most this many inlier training images")
    t.add_argument("--max-test", type=int, help="use at most this many test images (stratified)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="re-score a finished run (e.g. with another score or R)",
                       description="Load --run DIR/checkpoint.pt and evaluate F again; prints the result as JSON.")
    e.add_argument("--run", required=True, help="a run folder written by 'train'")
    e.add_argument("--score", choices=SCORES, help="score to use (default: the run's)")
    e.add_argument("--eval-samples", type=int, help="R random T draws per image (default: the run's)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation's random draws")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")

    w = sub.add_parser("sweep", help="train and evaluate many one-class tasks (resumable)",
                       description="Run every (inlier, variant, seed) into OUT/<dataset>-<inlier>-<variant>-"
                                   "<preset>-s<seed>; finished runs are read back, an interrupted one resumes. "
                                   "Prints the table of measured vs paper AUROC last.")
    w.add_argument("--dataset", default="shapes", help="as for train")
    w.add_argument("--inliers", nargs="*", default=None, help="inlier classes (default: every class)")
    w.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run")
    w.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds to run")
    w.add_argument("--preset", default="smoke", choices=sorted(PRESETS), help="preset for every run")
    w.add_argument("--data-root", default=None, help="as for train")
    w.add_argument("--out", default="runs/sweep", help="root folder of the sweep")
    w.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    w.add_argument("--no-progress", action="store_true", help="no progress bars")

    r = sub.add_parser("table", help="measured AUROC of finished runs beside the paper's numbers",
                       description="Collect every result.json under --runs and print the mean AUROC per dataset "
                                   "and variant beside the paper's (labelled 'paper').")
    r.add_argument("--runs", default="runs", help="folder to search for result.json files")

    sub.add_parser("presets", help="list the presets and what each costs")
    return parser


def _inlier(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def cmd_train(args: argparse.Namespace) -> dict:
    from csigen.config import make_config
    from csigen.train import run

    overrides = {
        "dataset": args.dataset, "inlier": _inlier(args.inlier), "variant": args.variant,
        "data_root": args.data_root, "download": not args.no_download, "seed": args.seed,
        "device": args.device,
    }
    for name in ("epochs", "max_steps", "batch_size", "f_optimizer", "score", "eval_samples",
                 "max_train", "max_test"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    config = make_config(args.preset, **overrides)
    from csigen.results import run_dir

    out = Path(args.out) if args.out else run_dir("runs", config)
    existing = [name for name in ("checkpoint.pt", "result.json") if (out / name).exists()]
    if existing and not (args.resume or args.force):
        raise FileExistsError(
            f"{out} already holds {' and '.join(existing)}: pass --resume to continue (or report) that run, "
            "--force to start over, or another --out")
    return run(config, out, resume=not args.force, progress=not args.no_progress, force=args.force)


def cmd_eval(args: argparse.Namespace) -> dict:
    from csigen.train import Trainer

    run_dir = Path(args.run)
    trainer = Trainer.from_run(run_dir, device=args.device)
    config = trainer.config
    ev = trainer.evaluate(score=args.score, eval_samples=args.eval_samples, seed=args.seed)
    return {k: v for k, v in ev.items() if k not in ("scores", "labels", "is_inlier")} | {
        "run": str(run_dir), "dataset": config.dataset, "inlier": trainer.task.inlier,
        "variant": config.variant, "steps": trainer.step}


def cmd_sweep(args: argparse.Namespace) -> dict:
    from csigen.config import make_config
    from csigen.data import class_names
    from csigen.results import collect, compare_with_paper, sweep

    inliers = args.inliers or class_names(args.dataset, root=args.data_root)
    configs = [make_config(args.preset, dataset=args.dataset, inlier=_inlier(c), variant=v, seed=s,
                           data_root=args.data_root, device=args.device)
               for s in args.seeds for c in inliers for v in args.variants]
    sweep(configs, args.out, progress=not args.no_progress)
    table = compare_with_paper(collect(args.out))
    print(table.to_string(index=False))
    return {"runs": len(configs), "out": args.out}


def cmd_table(args: argparse.Namespace) -> dict:
    from csigen.results import collect, compare_with_paper

    runs = collect(args.runs)
    if runs.empty:
        raise FileNotFoundError(f"no finished runs (result.json) under {args.runs!r}")
    table = compare_with_paper(runs)
    print(table.to_string(index=False))
    return {"runs": len(runs)}


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "table": cmd_table}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "presets":
        for p in PRESETS.values():
            print(f"{p.name:6s} {p.doc}")
        return 0
    try:
        result = COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, sort_keys=True))
    return 0
