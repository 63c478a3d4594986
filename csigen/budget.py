"""Opt-in time budget: the length of a run from the measured speed of its first steps.

``TrainConfig.time_budget_min = M`` (``python -m csigen train --time-budget M``)
asks for a run that ends, training **and evaluation together**, within about
M minutes on the machine it runs on. Without it (the default) a run's length
is ``epochs`` / ``max_steps``, as always. With it, :meth:`csigen.train.Trainer.fit`
calls :func:`plan_budget` once, before the first step:

1. **Measure on a throwaway copy.** The trainer's whole state (weights,
   optimiser states, random generators, BatchNorm statistics, loss scalers) is
   copied; then :data:`WARMUP_STEPS` untimed step (first-call costs: memory
   allocation, cuDNN autotuning) and whole cycles of :func:`timed_steps`
   timed steps of Algorithm 1 run (for ``csi+g`` and ``full`` a cycle is
   ``gan_every`` steps, so it holds exactly one GAN block: the steps' average
   cost; more than one cycle only while they took under :data:`MIN_TIMED_S`);
   evaluation is timed on one batch of test images and scaled to the run's
   evaluation workload (:func:`estimate_eval_seconds`); one checkpoint is
   serialised and written beside the real one (and deleted) to time it. Then
   the copied state is put back: the measured steps leave no trace.
2. **Plan** (:func:`plan_steps`): the number of steps N that fits into the
   budget after the time already spent (loading data, building networks,
   measuring), the estimated evaluation, the checkpoints and a reserve of
   :data:`RESERVE` of the budget.
3. **Fix.** ``trainer.total_steps = N`` before step 1, so the learning-rate
   schedule (warm-up and cosine decay, :func:`csigen.optim.warmup_cosine_factor`)
   spans the planned N steps from the first step on. N replaces ``epochs`` and
   ``max_steps`` as the run's length (``warmup_epochs`` still sets the warm-up).
   The plan (a dict, :func:`plan_budget`) is kept in ``trainer.budget_plan``,
   in every ``checkpoint.pt`` (key ``"time_budget"``) and in ``result.json``
   (key ``"time_budget"``).

Why a throwaway copy: the schedule's shape after the warm-up depends on the
total, so steps taken before the total is known would follow another schedule
than the run; measuring on a copy makes the budget run *identical* to a run
without a budget whose ``max_steps`` is the planned N (``plan["replay"]``
holds those settings): it can be replayed exactly. The price is the measured
steps' time, which the plan counts.

Resuming: the plan is read back from the checkpoint and never made again, so
a resumed run takes the planned N steps and equals the uninterrupted run (on
a CPU, bit for bit); its wall time is the budget plus the time lost to the
interruption. The plan is a prediction from the first steps: if the machine
gets slower later (other jobs, thermal throttling), the run takes longer than
the budget; it never stops early, which would leave a schedule half-run.
Not counted: writing G snapshots (``g_snapshot_every_steps``, small), the
callbacks' own work (e.g. a notebook's live plot), and the time before the
:class:`~csigen.train.Trainer` was made (e.g. loading a task passed in).
"""

from __future__ import annotations

import copy
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "RESERVE",
    "WARMUP_STEPS",
    "BudgetError",
    "apply_plan",
    "describe_plan",
    "estimate_eval_seconds",
    "plan_budget",
    "plan_steps",
    "timed_steps",
]

#: Share of the budget kept free for variations of the step time the first steps did not show. 10 %:
#: on a 2-core AMD EPYC (Zen 4, bf16) a run's first ten or so steps ran about 7 % faster than the rest
#: (0.61-0.67 s against about 0.70 s), so two 15-minute runs planned with 5 % ended late, by 20 s (alone)
#: and 6 s (2 minutes of tests beside it): bench/RESULTS.md, "A second CPU".
RESERVE = 0.10
#: Untimed steps before the timed ones (first-call costs that later steps do not pay).
WARMUP_STEPS = 1
#: Timed steps of a ``csi`` run (variants with G: ``gan_every``, one GAN block).
CSI_TIMED_STEPS = 2
#: Fast steps (a GPU, small models) are timed over whole cycles of :func:`timed_steps` steps until this
#: many seconds have passed, at most :data:`MAX_CYCLES` cycles: a stable mean for a few seconds at most.
MIN_TIMED_S = 1.0
MAX_CYCLES = 20


class BudgetError(ValueError):
    """A time budget that cannot be planned; the message says the smallest budget that fits."""


def timed_steps(config) -> int:
    """The steps of one timed cycle: ``gan_every`` for ``csi+g``/``full``, else :data:`CSI_TIMED_STEPS`.

    After :data:`WARMUP_STEPS` untimed step, ``gan_every`` consecutive steps
    hold exactly one GAN block (steps ``2 .. gan_every + 1`` contain one
    multiple of ``gan_every``), so their mean is the mean cost of a step of the run.
    :func:`plan_budget` times one cycle, or more while they took less than
    :data:`MIN_TIMED_S` in all (at most :data:`MAX_CYCLES`).
    """
    return int(config.gan_every) if config.uses_generator else CSI_TIMED_STEPS


def plan_steps(seconds_per_step: float, budget_s: float, *, eval_estimate_s: float = 0.0, elapsed_s: float = 0.0,
               checkpoint_s: float = 0.0, checkpoint_every_steps: int | None = None,
               checkpoint_every_s: float | None = None, final_writes: int = 1, reserve: float = RESERVE,
               min_steps: int = 1) -> int:
    """The number of training steps N that fits into ``budget_s`` seconds.

    N is the largest integer with::

        elapsed_s + N * step_cost + final_writes * checkpoint_s + eval_estimate_s <= (1 - reserve) * budget_s
        step_cost = seconds_per_step * (1 + checkpoint_s / checkpoint_every_s)
                    + checkpoint_s / checkpoint_every_steps

    (a checkpoint every ``checkpoint_every_steps`` steps and every
    ``checkpoint_every_s`` seconds of training, each costing ``checkpoint_s``,
    plus ``final_writes`` at the end: the last checkpoint, and ``weights.pt``
    when :func:`csigen.train.run` finishes; a ``None`` cadence adds nothing).

    Raises :class:`BudgetError` when fewer than ``min_steps`` steps fit; the
    message gives the smallest budget that would.
    """
    for name, value in (("seconds_per_step", seconds_per_step), ("budget_s", budget_s)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise BudgetError(f"{name} must be a positive number of seconds, got {value!r}")
    if not 0 <= reserve < 1:
        raise BudgetError(f"reserve must be in [0, 1), got {reserve!r}")
    step_cost = seconds_per_step
    if checkpoint_s and checkpoint_every_s:
        step_cost *= 1.0 + checkpoint_s / checkpoint_every_s
    if checkpoint_s and checkpoint_every_steps:
        step_cost += checkpoint_s / checkpoint_every_steps
    fixed = elapsed_s + final_writes * checkpoint_s + eval_estimate_s
    usable = (1.0 - reserve) * budget_s
    steps = math.floor((usable - fixed) / step_cost) if usable > fixed else 0
    if steps < min_steps:
        needed = (fixed + min_steps * step_cost) / (1.0 - reserve)
        what = "one step" if min_steps == 1 else f"{min_steps} steps (one GAN block: gan_every={min_steps})"
        raise BudgetError(
            f"a time budget of {budget_s / 60:.2f} min is too short for this run: {elapsed_s:.1f} s went to loading, "
            f"building and timing it, evaluation is estimated at {eval_estimate_s:.1f} s, checkpoints at "
            f"{checkpoint_s:.1f} s each and {what} at {min_steps * step_cost:.1f} s. Give at least "
            f"{math.ceil(needed / 60 * 10) / 10:.1f} min (--time-budget / time_budget_min), or make the run "
            "smaller (preset, max_train, max_test, eval_samples, batch_size)")
    return int(steps)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_eval_seconds(trainer) -> float:
    """Seconds :meth:`csigen.train.Trainer.evaluate` will take, from one timed batch.

    The features of one evaluation batch of test images (``eval_batch_size``
    images, one draw) are extracted exactly as :func:`csigen.train.evaluate_model`
    does, and the time is scaled to its workload: R = ``eval_samples`` draws
    of every training and test image. The scoring (one ``(N_test, N_train)``
    product per score) is timed on that batch's features and scaled by
    ``N_test * N_train / n**2``; computing an AUROC is timed once (a fixed
    cost: importing scikit-learn). A first call pays one-off costs, so this
    estimate errs on the long side.
    """
    from csigen import score as S
    from csigen.train import eval_features

    c, task, device = trainer.config, trainer.task, trainer.device
    n_train, n_test = int(task.train_images.shape[0]), int(task.test_images.shape[0])
    n = max(1, min(c.eval_batch_size, n_test))
    amp_dtype = trainer.amp_dtype if c.eval_amp else None
    t0 = time.perf_counter()
    feats = eval_features(trainer.nets.F, task, c, "test", device=device, seed=0, num_samples=1,
                          amp_dtype=amp_dtype, count=n)
    _sync(device)
    t1 = time.perf_counter()
    values = S.all_scores(feats, feats)
    t2 = time.perf_counter()
    if n >= 2:  # the AUROCs: a fixed cost (the first one imports scikit-learn, a second on a loaded CPU)
        v = values[c.score]
        S.auroc(v[: n // 2], v[n // 2:])
    t3 = time.perf_counter()
    return (t1 - t0) * c.eval_samples * (n_train + n_test) / n + (t2 - t1) * n_test * n_train / n**2 + (t3 - t2)


def _checkpoint_seconds(trainer) -> float:
    """Seconds to serialise the trainer's state and write it beside ``checkpoint.pt`` (0 without ``out_dir``).

    The probe file's name matches the temporaries that
    :func:`csigen.checkpoint.remove_stale_temporaries` deletes, should the
    process die before it is removed.
    """
    from csigen.checkpoint import save_checkpoint

    if trainer.out_dir is None:
        return 0.0
    probe = Path(trainer.out_dir) / ".time-budget-probe.pt.tmp"
    t0 = time.perf_counter()
    try:
        save_checkpoint(probe, trainer.state_dict())
        return time.perf_counter() - t0
    finally:
        probe.unlink(missing_ok=True)


def plan_budget(trainer) -> dict[str, Any]:
    """Measure ``trainer``'s first steps on a throwaway copy, then fix its step count; returns the plan.

    Sets ``trainer.total_steps`` to the planned N and ``trainer.budget_plan``
    to the plan (see the module docstring). Called by
    :meth:`~csigen.train.Trainer.fit` before the first step of a run with
    ``config.time_budget_min``; the trainer must be at step 0 (a run already
    under way keeps the schedule it started with).

    The plan (JSON- and checkpoint-ready): ``budget_min``, ``budget_s``,
    ``includes`` (what the budget covers), ``setup_s`` (time spent before
    step 1: loading, building, measuring), ``warmup_steps``, ``timed_steps``,
    ``seconds_per_step`` (mean of the timed steps), ``eval_estimate_s``,
    ``checkpoint_s``, ``reserve``, ``planned_steps``, ``steps_per_epoch``,
    ``planned_epochs``, ``estimated_total_s``, ``device``, ``threads`` and
    ``replay`` (the config overrides of the same run without a budget:
    ``{"time_budget_min": None, "max_steps": N, "epochs": E}``).
    """
    c = trainer.config
    if c.time_budget_min is None:
        raise BudgetError("plan_budget needs a config with time_budget_min set")
    if trainer.step != 0:
        raise BudgetError(
            f"cannot plan a time budget for a run already at step {trainer.step}: its schedule was fixed when it "
            "started. Resume it from a checkpoint that holds its plan, or start over (resume=False / --force)")
    budget_s = 60.0 * float(c.time_budget_min)
    t_start = time.perf_counter()
    saved = copy.deepcopy(trainer.state_dict())
    cycle = timed_steps(c)
    try:
        for _ in range(WARMUP_STEPS):
            trainer.run_step()
        _sync(trainer.device)
        t0 = time.perf_counter()
        cycles = 0
        while cycles < MAX_CYCLES and (cycles == 0 or time.perf_counter() - t0 < MIN_TIMED_S):
            for _ in range(cycle):
                trainer.run_step()
            _sync(trainer.device)
            cycles += 1
        n_timed = cycles * cycle
        seconds_per_step = (time.perf_counter() - t0) / n_timed
        eval_estimate_s = estimate_eval_seconds(trainer)
        checkpoint_s = _checkpoint_seconds(trainer)
    finally:
        trainer.load_state_dict(saved)  # the measured steps leave no trace
    elapsed_s = float(getattr(trainer, "setup_seconds", 0.0)) + time.perf_counter() - t_start
    every_steps = c.checkpoint_every_steps if trainer.out_dir is not None else None
    every_s = c.checkpoint_every_s if trainer.out_dir is not None else None
    steps = plan_steps(seconds_per_step, budget_s, eval_estimate_s=eval_estimate_s, elapsed_s=elapsed_s,
                       checkpoint_s=checkpoint_s, checkpoint_every_steps=every_steps, checkpoint_every_s=every_s,
                       final_writes=2,  # the last checkpoint, and weights.pt when run() finishes (csigen.disk)
                       min_steps=int(c.gan_every) if c.uses_generator else 1)
    spe = trainer.steps_per_epoch
    train_s = steps * seconds_per_step
    n_checkpoints = 2 + (steps // every_steps if every_steps else 0) + (int(train_s // every_s) if every_s else 0)
    plan = {
        "budget_min": float(c.time_budget_min),
        "budget_s": budget_s,
        "includes": "setup, measurement, training, checkpoints and evaluation",
        "setup_s": elapsed_s,
        "warmup_steps": WARMUP_STEPS,
        "timed_steps": n_timed,
        "seconds_per_step": seconds_per_step,
        "eval_estimate_s": eval_estimate_s,
        "checkpoint_s": checkpoint_s,
        "reserve": RESERVE,
        "planned_steps": steps,
        "steps_per_epoch": spe,
        "planned_epochs": steps / spe,
        "estimated_total_s": elapsed_s + train_s + n_checkpoints * checkpoint_s + eval_estimate_s,
        "device": str(trainer.device),
        "threads": torch.get_num_threads(),
        "replay": {"time_budget_min": None, "max_steps": steps, "epochs": math.ceil(steps / spe)},
    }
    apply_plan(trainer, plan)
    if trainer.progress:
        print(describe_plan(plan), file=sys.stderr)
    return plan


def describe_plan(plan: dict[str, Any]) -> str:
    """One line for a plan: the budget, the measured seconds per step, the estimates, and the planned steps."""
    return (f"time budget {plan['budget_min']:.1f} min (training and evaluation): {plan['seconds_per_step']:.2f} s/step "
            f"measured over {plan['timed_steps']} steps, evaluation ~{plan['eval_estimate_s']:.0f} s, setup "
            f"{plan['setup_s']:.0f} s -> {plan['planned_steps']} steps ({plan['planned_epochs']:.2f} epochs), "
            f"about {plan['estimated_total_s'] / 60:.1f} min in all")


def apply_plan(trainer, plan: dict[str, Any]) -> None:
    """Fix ``trainer``'s length to ``plan["planned_steps"]`` (a new plan, or one read from a checkpoint)."""
    trainer.total_steps = int(plan["planned_steps"])
    trainer.budget_plan = dict(plan)
