"""Command line: ``python -m csigen train|eval|presets``.

The argument parser is built by :func:`build_parser`; nothing runs at import.
``train`` prints the run's ``result.json`` as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from csigen.config import AMP_MODES, F_OPTIMIZERS, PRESETS, SCORES, VARIANTS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m csigen",
        description="Train and evaluate CSI, CSI+G and the full model (Yu & Chiu) on one-class tasks.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one variant on one inlier class, then evaluate it",
                       description="Train (or resume) a run and evaluate it. Writes config.json, history.csv, "
                                   "checkpoint.pt, scores.npz and result.json into --out; prints result.json last. "
                                   "When the run finishes, checkpoint.pt (weights + optimiser state) gives way to "
                                   "weights.pt (the networks only) unless --keep-checkpoint.")
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
    t.add_argument("--cifar100-superclasses", choices=("csi", "torchvision"), default=None,
                   help="cifar100: the 20 superclasses' grouping: csi (default, CSI's list, behind CSI's numbers and presumably the paper's) or torchvision (the dataset's official coarse labels; CSI's list differs, alinlab/CSI issue 21)")
    t.add_argument("--seed", type=int, default=0, help="random seed (weights, data order, augmentations)")
    t.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<inlier>-<variant>-<preset>-s<seed>)")
    t.add_argument("--resume", action="store_true",
                   help="the default, kept for old scripts: re-running the same command reports a finished run "
                        "(its result.json, not redone) and resumes an interrupted one from --out/checkpoint.pt")
    t.add_argument("--force", action="store_true",
                   help="start over from step 0 even if --out already holds a run, also one with another "
                        "configuration (its result, scores, FID records, weights, checkpoint, history and G "
                        "snapshots are deleted first)")
    t.add_argument("--keep-checkpoint", action="store_true",
                   help="keep checkpoint.pt (with the optimiser state, about twice the size) when the run finishes, "
                        "so it can be trained further (--continue); by default only the weights are kept (weights.pt)")
    t.add_argument("--continue", action="store_true", dest="continue_run",
                   help="train the run in --out further from its checkpoint.pt (a run finished with "
                        "--keep-checkpoint, or an interrupted one), e.g. with a larger --max-steps or --epochs, "
                        "then evaluate it again; its old result, scores, FID records and weights are deleted "
                        "first. The learning-rate schedule is the new length's, so the result differs from a run "
                        "trained that long from the start. A slim finished run (weights.pt only) cannot "
                        "continue: --force retrains it from step 0")
    t.add_argument("--device", default="auto", help="auto (GPU if available), cpu or cuda[:N]")
    t.add_argument("--amp", choices=AMP_MODES,
                   help="training precision (default: the preset's, 'auto': bf16 on GPUs that have bf16 units, "
                        "fp16 with loss scaling on older GPUs, float32 on the CPU). 'bf16' on a CPU with AMX units "
                        "(Intel Xeon 4th generation and later) trains 2.4-2.7x faster than float32 there, "
                        "on one with AVX512-BF16 (AMD Zen 4) 1.85-2.05x (bench/RESULTS.md); on other CPUs "
                        "measure first: python bench/throughput.py --amp off bf16")
    t.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    t.add_argument("--max-steps", type=int, help="override the preset's cap on training steps")
    t.add_argument("--time-budget", type=float, metavar="MINUTES", dest="time_budget_min",
                   help="opt-in: fit the run, training AND evaluation together, into about MINUTES of wall time "
                        "on this machine. The first steps are timed (on a throwaway copy), then the step count and "
                        "the learning-rate schedule are fixed and recorded (result.json and checkpoint.pt: "
                        "'time_budget', with the --max-steps/--epochs that replay it); they replace the preset's "
                        "epochs and max steps. A resumed run keeps its plan")
    t.add_argument("--batch-size", type=int,
                   help="images per step (each seen as 4 shifts x 2 views); under torchrun the global batch of all "
                        "processes together, each of the K processes taking batch-size/K (learning rates unchanged)")
    t.add_argument("--f-optimizer", choices=F_OPTIMIZERS, help="optimiser for F (default lars, as CSI)")
    t.add_argument("--score", choices=SCORES,
                   help="test score: shared (Eq. 11, one nearest neighbour for all shifts; default), literal "
                        "(Eq. 11 as printed), per_shift (CSI's simclr score) or csi (CSI's full score)")
    t.add_argument("--eval-samples", type=int, help="R, random T draws per test image for M_ens (CSI: 10)")
    t.add_argument("--max-train", type=int, help="use at most this many inlier training images")
    t.add_argument("--max-test", type=int, help="use at most this many test images (stratified)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")

    e = sub.add_parser("eval", help="re-score a finished run with every score (e.g. with another R)",
                       description="Load --run DIR's networks (checkpoint.pt, or weights.pt) and evaluate F "
                                   "again: one feature pass, then every score (shared, literal, per_shift, csi). Prints one line per score, "
                                   "then the result as JSON (top-level auroc = the primary score). Writes nothing, "
                                   "unless --save: then this evaluation replaces the run's record (scores.npz, "
                                   "result.json, config.json; the AUROCs it replaced stay in result.json's 'rescored'), "
                                   "so a run re-scored to a preset's evaluation settings counts as that preset's run.")
    e.add_argument("--run", required=True, help="a run folder written by 'train'")
    e.add_argument("--score", choices=SCORES, help="primary score, reported as the top-level auroc "
                                                   "(default: the run's)")
    e.add_argument("--eval-samples", type=int, help="R random T draws per image (default: the run's)")
    e.add_argument("--eval-crop-scale", type=float, help="area of the evaluation crop, in (0, 1]; 1 = the whole "
                                                            "image (default: the run's; CSI's 0.54)")
    e.add_argument("--save", action="store_true",
                   help="make this evaluation the run's record (atomic rewrites; the training's record is kept)")
    e.add_argument("--seed", type=int, default=0, help="seed of the evaluation's random draws")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    e.add_argument("--eval-amp", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate under autocast with the training precision (default: the run's eval_amp, "
                        "normally off = float32 as CSI)")

    w = sub.add_parser("sweep", help="train and evaluate many one-class tasks (resumable)",
                       description="Run every (inlier, variant, seed) into OUT/<dataset>-<inlier>-<variant>-"
                                   "<preset>-s<seed>; finished runs are read back, an interrupted one resumes. "
                                   "First estimates the disk space the runs still to do need and stops if --out's "
                                   "disk lacks it. Prints the table of measured vs paper AUROC last.")
    w.add_argument("--dataset", default="shapes", help="as for train")
    w.add_argument("--inliers", nargs="*", default=None, help="inlier classes (default: every class)")
    w.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="variants to run")
    w.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds to run")
    w.add_argument("--preset", default="smoke", choices=sorted(PRESETS), help="preset for every run")
    w.add_argument("--data-root", default=None, help="as for train")
    w.add_argument("--cifar100-superclasses", choices=("csi", "torchvision"), default=None, help="as for train")
    w.add_argument("--out", default="runs/sweep", help="root folder of the sweep")
    w.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    w.add_argument("--no-progress", action="store_true", help="no progress bars")
    w.add_argument("--keep-checkpoint", action="store_true",
                   help="keep every finished run's checkpoint.pt (optimiser state included); default: weights only")
    w.add_argument("--no-disk-check", action="store_true",
                   help="start even if the estimated disk use exceeds the free space of --out's disk")
    w.add_argument("--devices", nargs="+", default=None, metavar="DEVICE",
                   help="train one run per device at a time, concurrently, e.g. --devices cuda:0 cuda:1 cuda:2 "
                        "(a worker process per entry; repeat an entry, e.g. cpu cpu, for two workers on one "
                        "device). Workers take runs from the shared list; a lock per run folder (run.lock) keeps "
                        "any two from training the same run, also across sweeps and machines")
    w.add_argument("--launcher", default="local", choices=("local", "slurm", "submitit-local"),
                   help="local: on this machine (default); slurm: submit the runs still missing as a SLURM job "
                        "array through submitit (pip install 'csigen[slurm]'), one run and --slurm-gpus GPUs "
                        "per job; submitit-local: the same jobs run at once on this machine by submitit's "
                        "LocalExecutor, to try the cluster path on a few runs")
    w.add_argument("--lock-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="a run's lock whose worker sent no heartbeat for this long is taken over (default 600; "
                        "a dead worker on this machine is noticed at once)")
    w.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then print the table")
    w.add_argument("--slurm-partition", default=None, help="slurm: partition (sbatch --partition)")
    w.add_argument("--slurm-account", default=None, help="slurm: account (sbatch --account)")
    w.add_argument("--slurm-qos", default=None, help="slurm: quality of service (sbatch --qos)")
    w.add_argument("--slurm-constraint", default=None, help="slurm: node features, e.g. a100 (sbatch --constraint)")
    w.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES",
                   help="slurm: time limit per job (default 1440); a job that reaches it is requeued and resumes "
                        "from its checkpoint")
    w.add_argument("--slurm-gpus", type=int, default=1, help="slurm: GPUs per job (default 1); K > 1 starts K processes that train the job's run together (DDP)")
    w.add_argument("--slurm-cpus", type=int, default=8, help="slurm: CPU cores per job (default 8)")
    w.add_argument("--slurm-mem-gb", type=float, default=None, help="slurm: memory per job in GB")
    w.add_argument("--slurm-parallel", type=int, default=None, metavar="N",
                   help="slurm: at most N jobs of the array at once (sbatch --array=...%%N)")
    w.add_argument("--slurm-setup", action="append", default=[], metavar="LINE",
                   help="slurm: a shell line run before each job, e.g. 'source ~/venv/bin/activate' (repeatable)")
    w.add_argument("--slurm-logs", default=None, help="slurm: folder of submitit's logs (default OUT/slurm_logs)")

    r = sub.add_parser("table", help="measured AUROC of finished runs beside the paper's numbers",
                       description="Collect every result.json under --runs and print the mean AUROC per dataset "
                                   "and variant beside the paper's (labelled 'paper').")
    r.add_argument("--runs", default="runs", help="folder to search for result.json files")

    fg = sub.add_parser("figures", help="write the paper's tables and figures from finished runs",
                        description="Read every finished run under --runs and write, for whatever runs exist, "
                                    "table1.md/.csv/.png (with table1_per_class.csv), ablation.csv/.png, fid.csv/.png "
                                    "(real Inception weights only), figure2.png and a README.md with one caption "
                                    "and its provenance per file into --out. Smoke-preset runs are refused unless "
                                    "--allow-smoke. Prints the written files as JSON.")
    fg.add_argument("--runs", required=True, help="folder searched (recursively) for finished runs (result.json)")
    fg.add_argument("--out", default="figures", help="output folder (default figures/)")
    fg.add_argument("--figure2-run", default=None,
                    help="the 'full' run Figure 2 is drawn from: a run folder, or its name under --runs "
                         "(default: a full run on CIFAR-10 cat, the paper's)")
    fg.add_argument("--figure2-layout", choices=("pairs", "paper"), default="pairs",
                    help="pairs (default): each real image above its reconstruction, outlier columns labelled; "
                         "paper: the real images' grid beside their reconstructions', as the paper draws it")
    fg.add_argument("--seed", type=int, default=0,
                    help="seed of the bootstrap intervals and of Figure 2's choice of test images")
    fg.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples of each run's test images for the confidence intervals (default 1000)")
    fg.add_argument("--allow-smoke", action="store_true",
                    help="draw smoke-preset runs too, every caption and title marked 'meaningless, smoke'")
    fg.add_argument("--device", default="cpu", help="where Figure 2's networks run (default cpu)")
    fg.add_argument("--score", default=None, choices=SCORES,
                    help="one score for every variant (a like-for-like comparison, e.g. csi for cpu-preset runs, "
                         "which report CSI's score); default: each variant under the score behind the paper's number")

    fd = sub.add_parser("fid", help="FID of a csi+g or full run's generator (torch-fidelity), stored in the run",
                        description="Measure G of --run DIR under csigen.fid's protocol (csigen-fid-1: G in eval "
                                    "mode with BatchNorm statistics re-estimated on prior samples; reference = every "
                                    "training image of the inlier class; 5,000 samples; torch-fidelity's Inception). "
                                    "Writes DIR/fid.json (and every measurement to DIR/fid_records.json) with the "
                                    "weights' sha256; a value from weights other than the real Inception is stored "
                                    "with not_a_fid=true and printed as 'NOT a FID'. An identical measurement "
                                    "already stored is reported, not redone. Prints one line, then the record as JSON.")
    fd.add_argument("--run", required=True, help="a csi+g or full run folder written by 'train'")
    fd.add_argument("--samples", type=int, default=None,
                    help="generated samples (default: the protocol's 5,000; fewer are biased upwards)")
    fd.add_argument("--weights", default=None,
                    help="Inception weights file (default: $CSIGEN_FID_WEIGHTS, else torch-fidelity's, downloaded "
                         "once)")
    fd.add_argument("--reference", default="train", choices=("train", "test", "all-train"),
                    help="train: every training image of the inlier class (the protocol, default); test: its test "
                         "images; all-train: every class's training images")
    fd.add_argument("--max-reference", type=int, default=None,
                    help="use a seeded random subset of at most this many reference images (quick checks)")
    fd.add_argument("--step", type=int, default=None,
                    help="measure the G snapshot of this step (g_snapshots/step_<NNNNNN>.pt) instead of the "
                         "checkpoint's G; stored in fid_records.json only")
    fd.add_argument("--snapshots", action="store_true",
                    help="measure every G snapshot and the final G (FID over training); prints a table")
    fd.add_argument("--seed", type=int, default=0, help="seed of the latents (torch-fidelity's rng_seed)")
    fd.add_argument("--batch-size", type=int, default=100, help="images per Inception forward pass")
    fd.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    fd.add_argument("--force", action="store_true", help="measure again even if an identical record is stored")
    fd.add_argument("--feature-layer", default="2048", choices=("2048", "768", "192", "64"),
                    help="Inception layer; only 2048 gives a FID (others: tests with random weights only)")
    fd.add_argument("--bn-samples", type=int, default=None,
                    help="prior samples for G's BatchNorm statistics (default: the protocol's 4,096; another "
                         "value is recorded as a modified protocol)")

    sub.add_parser("presets", help="list the presets and what each costs")
    return parser


def _inlier(value: str) -> int | str:
    return int(value) if value.lstrip("-").isdigit() else value


def cmd_train(args: argparse.Namespace) -> dict | None:
    """Train one run; under ``torchrun --nproc_per_node=K``, on K processes (:mod:`csigen.distributed`).

    Returns the result (None in the processes of a torchrun run other than rank 0, which print nothing).
    """
    from csigen import distributed
    from csigen.config import make_config

    overrides = {
        "dataset": args.dataset, "inlier": _inlier(args.inlier), "variant": args.variant,
        "data_root": args.data_root, "download": not args.no_download, "seed": args.seed,
        "device": args.device,
    }
    for name in ("amp", "epochs", "max_steps", "batch_size", "f_optimizer", "score", "eval_samples",
                 "max_train", "max_test", "time_budget_min", "cifar100_superclasses"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    config = make_config(args.preset, **overrides)
    world = distributed.init_from_env(config.device)  # torchrun: join the run's K processes (else: 1)
    try:
        return _train(args, config, world)
    finally:
        if world.active:
            distributed.shutdown()


def _train(args: argparse.Namespace, config, world) -> dict | None:
    from csigen.parallel import locked_run
    from csigen.results import run_dir
    from csigen.train import run

    out = Path(args.out) if args.out else run_dir("runs", config)
    if args.continue_run:
        return _continue(args, config, world, out)
    # Re-running a command is safe (with or without --resume): run() reports a finished run with the
    # same configuration, resumes an interrupted one, and refuses (RunConfigMismatchError, exit 2,
    # nothing written) a folder holding a run with another configuration unless --force.
    finished = not args.force and (out / "result.json").exists()
    if world.is_main and not args.force and not finished and (out / "checkpoint.pt").exists():
        print(f"{out} holds an interrupted run (checkpoint.pt): it resumes from there if its configuration "
              "is this one", file=sys.stderr)
    # one process takes the run folder's lock, as a sweep's workers do, so two commands (or a command and a
    # sweep) never train the same folder at once; under torchrun the K processes of one run share the folder
    train = locked_run if not world.active else run
    result = train(config, out, resume=not args.force, progress=not args.no_progress, force=args.force,
                   keep_checkpoint=args.keep_checkpoint)
    if not world.is_main:  # torchrun: rank 0 alone reports
        return None
    if finished:
        slim = (out / "weights.pt").exists() and not (out / "checkpoint.pt").exists()
        kept = ("its networks are in weights.pt (the optimiser state was dropped when it finished, so there is "
                "nothing to resume); " if slim else "")
        print(f"{out} holds this run, already finished: reporting its result.json ({kept}--force retrains it)",
              file=sys.stderr)
    return result


def _continue(args: argparse.Namespace, config, world, out: Path) -> dict | None:
    """``train --continue``: the run in ``out`` trains on from its checkpoint.pt with a longer schedule.

    Everything is checked before anything is deleted: the folder's run must be this configuration
    but for its length (``max_steps``, ``epochs``), not a time-budget run (its length is its
    recorded plan), and the new length must exceed the step the checkpoint is at.
    """
    from csigen.checkpoint import CheckpointError, load_checkpoint
    from csigen.config import require_same_run_config
    from csigen.data import load_task_for
    from csigen.parallel import locked_run
    from csigen.train import run

    if args.force:
        raise ValueError("--continue and --force contradict each other: --continue trains on from checkpoint.pt, "
                         "--force starts over from step 0; pass one of them")
    checkpoint = out / "checkpoint.pt"
    if not checkpoint.is_file():
        held = ("a slim finished run (weights.pt: its optimiser state was dropped when it finished)"
                if (out / "weights.pt").is_file() else "no run")
        raise CheckpointError(
            f"nothing to continue in {str(out)!r}: it holds {held} and no checkpoint.pt. Only a run finished with "
            "--keep-checkpoint (or an interrupted one) can be trained further; --force retrains this one from step 0")
    state = load_checkpoint(checkpoint)
    saved, step = state["config"], int(state["step"])
    if saved.get("time_budget_min") is not None or config.time_budget_min is not None:
        raise ValueError(f"{str(out)!r}: --continue does not apply to time-budget runs (their length is the plan "
                         "recorded when they started); train a longer run into another --out")
    lengths = {"max_steps": config.max_steps, "epochs": config.epochs}
    require_same_run_config({**saved, **lengths}, config,
                            f"--continue: {str(out)!r} holds a run (checkpoint.pt at step {step})")
    task = load_task_for(config)
    total = config.planned_steps(task.train_images.shape[0])
    if total <= step:
        raise ValueError(f"nothing to continue: the run in {str(out)!r} is at step {step} and this configuration "
                         f"trains {total} steps (epochs x steps per epoch, at most max_steps); pass a larger "
                         "--max-steps (and --epochs, if that bounds it)")
    train = locked_run if not world.active else run
    # force: the folder's run has another length (checked above: nothing else differs); resume: from its checkpoint
    return train(config, out, resume=True, progress=not args.no_progress, force=True, task=task,
                 keep_checkpoint=args.keep_checkpoint)


def cmd_eval(args: argparse.Namespace) -> dict:
    from csigen.rescore import rescore_run

    run_dir = Path(args.run)
    ev = rescore_run(run_dir, save=args.save, device=args.device, seed=args.seed, score=args.score,
                     eval_samples=args.eval_samples, eval_crop_scale=args.eval_crop_scale, eval_amp=args.eval_amp)
    for name, s in ev["scores"].items():
        primary = "  (primary)" if name == ev["score"] else ""
        print(f"{name:10s} AUROC {100 * s['auroc']:6.2f}%{primary}")
    if args.save:
        print(f"saved: {run_dir}/result.json now holds this evaluation (changed: {ev['changed'] or 'nothing'})",
              file=sys.stderr)
    config = ev.pop("config")
    return ev | {"run": str(run_dir), "dataset": config["dataset"], "variant": config["variant"]}


def cmd_sweep(args: argparse.Namespace) -> dict:
    from csigen.config import make_config
    from csigen.data import class_names
    from csigen.results import collect, compare_with_paper, sweep

    grouping = {"cifar100_superclasses": args.cifar100_superclasses} if args.cifar100_superclasses else {}
    inliers = args.inliers or class_names(args.dataset, root=args.data_root, **grouping)
    configs = [make_config(args.preset, dataset=args.dataset, inlier=_inlier(c), variant=v, seed=s,
                           data_root=args.data_root, device=args.device, **grouping)
               for s in args.seeds for c in inliers for v in args.variants]
    if args.launcher == "local" and not args.devices:
        sweep(configs, args.out, progress=not args.no_progress, keep_checkpoint=args.keep_checkpoint,
              check_disk=not args.no_disk_check, verbose=True)  # prints the disk estimate first
    else:
        report = _sweep_parallel(args, configs)
        if report is not None:
            return report
    table = compare_with_paper(collect(args.out))
    print(table.to_string(index=False))
    return {"runs": len(configs), "out": args.out}


def _sweep_parallel(args: argparse.Namespace, configs: list) -> dict | None:
    """``sweep --devices`` / ``--launcher``: csigen.parallel. None when the table is due (every run is done)."""
    from csigen import parallel
    from csigen.disk import check_sweep_space, estimate_sweep_disk
    from csigen.results import collect, compare_with_paper

    estimate = (estimate_sweep_disk if args.no_disk_check else check_sweep_space)(
        configs, args.out, keep_checkpoint=args.keep_checkpoint)
    print(estimate.describe(), file=sys.stderr)
    if args.launcher == "local":
        report = parallel.run_on_devices(configs, args.out, args.devices, progress=not args.no_progress,
                                         stale_after=args.lock_timeout, keep_checkpoint=args.keep_checkpoint)
        failed = [r for r in report["runs"] if r["status"] == "failed"]
        if failed or report["missing"] or report["running"]:
            print(compare_with_paper(collect(args.out)).to_string(index=False))
            details = "; ".join(f"{r['run']}: {r['error']}" for r in failed)
            raise RuntimeError(
                f"{report['finished']} of {len(report['runs'])} runs finished, {len(failed)} failed, "
                f"{report['missing']} missing, {report['running']} running elsewhere"
                + (f" ({details}; each run's failed.json has the traceback)" if failed else "")
                + ". Launch the same command again to run only what is missing.")
        return None
    if args.devices:
        raise ValueError("--devices is for --launcher local; with --launcher slurm each job gets --slurm-gpus GPUs")
    submitted = parallel.submit_sweep(
        configs, args.out, cluster="slurm" if args.launcher == "slurm" else "local", device=args.device,
        folder=args.slurm_logs, stale_after=args.lock_timeout, keep_checkpoint=args.keep_checkpoint,
        timeout_min=args.slurm_time, gpus_per_job=args.slurm_gpus, cpus_per_job=args.slurm_cpus,
        mem_gb=args.slurm_mem_gb, partition=args.slurm_partition, account=args.slurm_account, qos=args.slurm_qos,
        constraint=args.slurm_constraint, array_parallelism=args.slurm_parallel, setup=args.slurm_setup)
    jobs = submitted.pop("jobs")
    report = {**submitted, "job_ids": [j.job_id for j in jobs], "runs": len(configs), "out": args.out}
    if not jobs or not args.wait:
        if jobs:
            print(f"submitted {len(jobs)} job(s); follow them with squeue (logs in {submitted['logs']}); when they "
                  f"are done: python -m csigen table --runs {args.out}. Launching this command again submits only "
                  "the runs still missing.", file=sys.stderr)
        return report if jobs else None
    outcomes = parallel.wait_for_jobs(jobs)
    failed = [o for o in outcomes if o.get("status") == "failed"]
    print(compare_with_paper(collect(args.out)).to_string(index=False))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} jobs failed: "
                           + "; ".join(f"job {o['job']}: {o['error']}" for o in failed)
                           + f" (logs in {submitted['logs']}). Launch the same command again to retry them.")
    return report


def cmd_table(args: argparse.Namespace) -> dict:
    from csigen.results import collect, compare_with_paper

    runs = collect(args.runs)
    if runs.empty:
        raise FileNotFoundError(f"no finished runs (result.json) under {args.runs!r}")
    table = compare_with_paper(runs)
    print(table.to_string(index=False))
    return {"runs": runs["run"].nunique()}  # collect() has one row per run per score


def cmd_figures(args: argparse.Namespace) -> dict:
    from csigen.figures import write_figures

    written = write_figures(args.runs, args.out, figure2_run=args.figure2_run, seed=args.seed,
                            n_bootstrap=args.bootstrap, allow_smoke=args.allow_smoke, device=args.device,
                            score=args.score, figure2_layout=args.figure2_layout)
    print(f"wrote {len(written)} files into {args.out}; captions and provenance in "
          f"{Path(args.out) / 'README.md'}", file=sys.stderr)
    return {"out": str(args.out), "written": {name: str(path) for name, path in written.items()}}


def cmd_fid(args: argparse.Namespace) -> dict:
    from csigen import fid

    kwargs = dict(reference=args.reference, max_reference=args.max_reference, weights_path=args.weights,
                  device=args.device, seed=args.seed, batch_size=args.batch_size, feature_layer=args.feature_layer,
                  force=args.force)
    for name, value in (("samples", args.samples), ("bn_samples", args.bn_samples)):
        if value is not None:
            kwargs[name] = value
    if args.snapshots:
        if args.step is not None:
            raise ValueError("pass either --step or --snapshots, not both")
        table = fid.fid_over_training(args.run, **kwargs)
        label = "value (NOT a FID)" if table["not_a_fid"].any() else "FID"
        print(table.rename(columns={"fid": label}).to_string(index=False))
        return {"run": str(args.run), "steps": table["step"].tolist(), "values": table["fid"].tolist(),
                "not_a_fid": bool(table["not_a_fid"].any()), "records": str(Path(args.run) / fid.FID_RECORDS_FILE)}
    record = fid.fid_of_run(args.run, step=args.step, **kwargs)
    print(fid.describe_fid(record))
    return record


COMMANDS = {"train": cmd_train, "eval": cmd_eval, "sweep": cmd_sweep, "table": cmd_table}
COMMANDS["figures"] = cmd_figures
COMMANDS["fid"] = cmd_fid


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "presets":
        for p in PRESETS.values():
            print(f"{p.name:8s} {p.doc}")
        return 0
    from csigen.distributed import launched_by_torchrun

    if args.command != "train" and launched_by_torchrun():
        print(f"error: only 'train' runs under torchrun (one run on several processes); start "
              f"'{args.command}' with python -m csigen (sweep --devices runs one run per GPU)", file=sys.stderr)
        return 2
    try:
        result = COMMANDS[args.command](args)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result is not None:  # None: a torchrun process other than rank 0, which reports nothing
        print(json.dumps(result, sort_keys=True))
    return 0
