"""Evaluate a finished run again under other evaluation settings, and optionally keep the result.

A run's weights do not depend on how it is evaluated: the fields in
:data:`csigen.config.EVAL_FIELDS` (the primary score, R draws, the evaluation
crop, the evaluation batch and precision) are read only after training. So a
finished run can be scored again under other values of them without training
again: :func:`rescore_run` (``python -m csigen eval --run DIR [--eval-crop-scale S]
[--eval-samples R] [--score NAME] [--save]``).

With ``save=True`` the new evaluation becomes the run's record: ``scores.npz``,
``result.json`` and ``config.json`` are rewritten (each atomically; scores
first, so an interruption leaves the old record or a record whose scores
already match the new one). The training's part of the record (steps,
``train_seconds``, ``history.csv``, the weights, the training's git commit and
versions) is kept; ``result.json["rescored"]`` lists every re-scoring, each with
when, by which csigen commit, the settings it changed and the AUROCs it
replaced. A run re-scored to a preset's evaluation settings is then that
preset's run for ``train``, ``sweep`` and ``bench/cpu_budget.py``
(:func:`csigen.config.same_run_config`), which report it instead of training it
again.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["rescore_run"]


def rescore_run(run_dir: str | os.PathLike, *, save: bool = False, device: str | None = None,
                seed: int = 0, **changes: Any) -> dict[str, Any]:
    """Score the finished run in ``run_dir`` again, with ``changes`` to its evaluation settings.

    ``changes``: fields of :data:`csigen.config.EVAL_FIELDS` (``score``,
    ``eval_samples``, ``eval_crop_scale``, ``eval_batch_size``, ``eval_amp``);
    None values are ignored (the run's own value stays). ``seed``: the seed of
    the evaluation's random draws (training's evaluation uses 0). ``device``
    overrides the run's device (e.g. ``"cpu"``).

    Without ``save`` an interrupted run (``checkpoint.pt``, no ``result.json``)
    can be evaluated too; with it the run must have finished.

    Returns the evaluation as :func:`csigen.train.evaluate_model` does (without
    its arrays), plus ``config`` (the run's config with the changes),
    ``changed`` (``{field: [old, new]}``), ``eval_seconds``, ``eval_seed``,
    ``inlier``, ``steps`` and ``saved``. Raises :class:`FileNotFoundError` when
    ``save`` is asked of an unfinished run, and
    :class:`csigen.config.ConfigError` for a field that is not an evaluation
    setting or an invalid value; nothing is written then.
    """
    import numpy as np

    from csigen.checkpoint import atomic_write_bytes, atomic_write_json
    from csigen.config import EVAL_FIELDS, ConfigError, TrainConfig, check_schema_version
    from csigen.distributed import unwrap
    from csigen.train import Trainer, environment_info, evaluate_model, load_result

    out = Path(run_dir)
    unknown = sorted(set(changes) - set(EVAL_FIELDS))
    if unknown:
        raise ConfigError(f"{', '.join(unknown)}: not an evaluation setting; a finished run can be scored "
                          f"again only with other {', '.join(EVAL_FIELDS)} (anything else needs training again)")
    result = load_result(out)
    if result is not None:
        check_schema_version(result.get("schema_version", 0), str(out / "result.json"))
    elif save:
        raise FileNotFoundError(
            f"{str(out)!r} holds no finished run (no result.json): only a finished run's record can be "
            "replaced. Finish it first (re-run the same 'python -m csigen train ... --out' command: it "
            "resumes), or evaluate the checkpoint without --save")
    trainer = Trainer.from_run(out, device=device)  # an interrupted run (checkpoint.pt) too, unless save
    # the record's config, not the weights' (an earlier re-scoring may have changed its evaluation settings)
    saved = TrainConfig.from_dict(result["config"]) if result is not None else trainer.config
    given = {k: v for k, v in changes.items() if v is not None}
    config = dataclasses.replace(saved, **given)  # validates the new values (ConfigError names the field)
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
        "eval_seed": seed,
        "changed": changed,
        "replaced": {
            "auroc": result.get("auroc"),
            "score": result.get("score"),
            "scores": {name: s.get("auroc") for name, s in (result.get("scores") or {}).items()},
            "eval_samples": result.get("eval_samples"),
            "eval_seconds": result.get("eval_seconds"),
        },
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **ev["arrays"])
    atomic_write_bytes(out / "scores.npz", buffer.getvalue())
    train_seconds = result.get("train_seconds") or 0.0
    new = {
        **result,
        "auroc": ev["auroc"],
        "per_class_auroc": ev["per_class_auroc"],
        "score": ev["score"],
        "scores": ev["scores"],
        "eval_samples": ev["eval_samples"],
        "eval_precision": ev["eval_precision"],
        "eval_seconds": eval_seconds,
        "seconds": train_seconds + eval_seconds,
        "config": config.to_dict(),
        "rescored": [*result.get("rescored", []), entry],
    }
    atomic_write_json(out / "result.json", new)
    atomic_write_json(out / "config.json", config.to_dict())
    return report
