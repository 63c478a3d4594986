"""Evaluate a finished run again under other evaluation settings, and optionally keep the result.

A run's weights do not depend on how it is evaluated: the fields in
:data:`csigen.config.EVAL_FIELDS` (the primary score, R draws, the evaluation
crop, the evaluation batch and precision) are read only after training, except
by a time-budget run, whose plan subtracts an estimate of the evaluation from
the budget (:mod:`csigen.budget`). So a finished run without a time budget can
be scored again under other values of them without training again:
:func:`rescore_run` (``python -m csigen eval --run DIR [--eval-crop-scale S]
[--eval-samples R] [--score NAME] [--save]``).

With ``save=True`` the new evaluation becomes the run's record, under the run
folder's :class:`csigen.parallel.RunLock`: ``scores.npz``, ``config.json`` and
last ``result.json`` are rewritten, each atomically (``result.json`` is what
every reader takes as the record; if the command is interrupted before it,
``scores.npz`` may already hold the new scores: run the same command again).
The training's part of the record is kept (steps, ``train_seconds``,
``eval_seconds`` and the other timings, ``history.csv``, the weights, the
training's git commit and versions); ``result.json["rescored"]`` lists every
re-scoring, each with when, by which csigen commit, on which device, how long
it took, the settings it changed and the AUROCs it replaced. A run re-scored to
a preset's evaluation settings is then that preset's run for ``train``,
``sweep`` and ``bench/cpu_budget.py`` (:func:`csigen.config.same_run_config`),
which report it instead of training it again, and
:meth:`csigen.train.Trainer.from_run` (notebooks, Figure 2) evaluates it with
the record's settings.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["rescore_run"]


def rescore_run(run_dir: str | os.PathLike, *, save: bool = False, device: str | None = None,
                seed: int = 0, **changes: Any) -> dict[str, Any]:
    """Score the run in ``run_dir`` again, with ``changes`` to its evaluation settings.

    ``changes``: fields of :data:`csigen.config.EVAL_FIELDS` (``score``,
    ``eval_samples``, ``eval_crop_scale``, ``eval_batch_size``, ``eval_amp``);
    None values are ignored (the run's own value stays). ``seed``: the seed of
    the evaluation's random draws (a run's own evaluation uses 0, so ``save``
    requires 0). ``device`` overrides the run's device (e.g. ``"cpu"``).
    Without ``save`` an interrupted run (``checkpoint.pt``, no ``result.json``)
    can be evaluated too.

    Returns the evaluation as :func:`csigen.train.evaluate_model` does (without
    its arrays), plus ``config`` (the run's config with the changes),
    ``changed`` (``{field: [old, new]}``), ``eval_seconds`` (this evaluation's),
    ``eval_seed``, ``inlier``, ``steps`` and ``saved``.

    Raises, before writing anything: :class:`csigen.config.ConfigError` for a
    field that is not an evaluation setting or an invalid value;
    :class:`ValueError` when ``save`` is asked with another seed than 0, of a
    time-budget run whose settings would change (its step count was planned
    from them), or of a run whose weights are not the record's (another step
    count or training config: e.g. ``train --force`` interrupted beside an old
    ``result.json``); :class:`FileNotFoundError` when ``save`` is asked of an
    unfinished run; :class:`csigen.parallel.RunLockedError` when another worker
    holds the run.
    """
    from csigen.config import EVAL_FIELDS, ConfigError

    unknown = sorted(set(changes) - set(EVAL_FIELDS))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not an evaluation setting; a finished run can be scored "
                          f"again only with other {', '.join(EVAL_FIELDS)} (anything else needs training again)")
    given = {k: v for k, v in changes.items() if v is not None}
    if not save:
        return _rescore(Path(run_dir), given, device=device, seed=seed, save=False)
    from csigen.parallel import RunLock

    if seed != 0:
        raise ValueError(f"seed={seed}: a run's record is evaluated with seed 0; --save keeps only that "
                         "(evaluate with another seed without --save)")
    with RunLock(run_dir):
        return _rescore(Path(run_dir), given, device=device, seed=seed, save=True)


def _rescore(out: Path, given: dict[str, Any], *, device: str | None, seed: int, save: bool) -> dict[str, Any]:
    from csigen.checkpoint import atomic_write_json
    from csigen.config import EVAL_FIELDS, TrainConfig, check_schema_version, same_run_config
    from csigen.distributed import unwrap
    from csigen.train import (
        Trainer,
        environment_info,
        evaluate_model,
        evaluation_record,
        load_result,
        write_scores,
    )

    result = load_result(out)
    if result is not None:
        check_schema_version(result.get("schema_version", 0), str(out / "result.json"))
    elif save:
        raise FileNotFoundError(
            f"{str(out)!r} holds no finished run (no result.json): only a finished run's record can be "
            "replaced. Finish it first (re-run the same 'python -m csigen train ... --out' command: it "
            "resumes), or evaluate the checkpoint without --save")
    # Trainer.from_run takes the record's evaluation settings (an earlier re-scoring may have changed them)
    saved = TrainConfig.from_dict(result["config"]) if result is not None else None
    config = dataclasses.replace(saved, **given) if saved is not None else None  # validates the values
    if save and saved.time_budget_min is not None and config != saved:
        raise ValueError(
            f"{str(out)!r} is a time-budget run: its step count was planned from an estimate of its evaluation "
            "(csigen.budget), so other evaluation settings would have given another run. Evaluate it without "
            "--save, or train the run again with the new settings")
    trainer = Trainer.from_run(out, device=device)
    if config is None:
        config = dataclasses.replace(trainer.config, **given)
    saved = saved or trainer.config
    if save:
        differ = [f for f in same_run_config(trainer.config.to_dict(), saved) if f not in EVAL_FIELDS]
        if trainer.step != result.get("steps") or differ:
            raise ValueError(
                f"{str(out)!r}: its weights ({trainer.step} steps) are not its result.json's run "
                f"({result.get('steps')} steps{'; config differs in ' + ', '.join(differ) if differ else ''}), "
                "e.g. a 'train --force' interrupted beside an old record. Finish training it (re-run the "
                "train command) before --save")
    changed = {k: [getattr(saved, k), getattr(config, k)] for k in EVAL_FIELDS
               if getattr(saved, k) != getattr(config, k)}
    amp_dtype = trainer.amp_dtype if config.eval_amp else None
    t0 = time.perf_counter()
    ev = evaluate_model(unwrap(trainer.nets.F), trainer.task, config, device=trainer.device, seed=seed,
                        amp_dtype=amp_dtype)
    eval_seconds = time.perf_counter() - t0
    report = {k: v for k, v in ev.items() if k != "arrays"} | {
        "config": config.to_dict(), "changed": changed, "eval_seconds": eval_seconds, "eval_seed": seed,
        "inlier": trainer.task.inlier, "steps": trainer.step, "saved": save}
    if not save:
        return report

    env = environment_info(trainer.device)
    entry = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": env["git_commit"],
        "csigen_version": env["csigen_version"],
        "device": env["device"],
        "eval_seconds": eval_seconds,
        "changed": changed,
        "replaced": {
            "auroc": result.get("auroc"),
            "score": result.get("score"),
            "scores": {name: s.get("auroc") for name, s in (result.get("scores") or {}).items()},
            "eval_samples": result.get("eval_samples"),
        },
    }
    write_scores(out, ev)
    atomic_write_json(out / "config.json", config.to_dict())
    new = {
        **result,
        **evaluation_record(ev),
        "config": config.to_dict(),
        "rescored": [*result.get("rescored", []), entry],
    }
    atomic_write_json(out / "result.json", new)  # last: the record
    return report
