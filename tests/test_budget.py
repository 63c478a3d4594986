"""The opt-in time budget (csigen.budget): planning, recording, ending within it, exact resume.

The runs here use a small F (two convolutions with BatchNorm, F's interface) in
place of the ResNet-18, so a step takes milliseconds on a loaded 2-core CPU
and the tests measure the budget's bookkeeping, not the network's speed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pandas as pd
import pytest
import torch

from csigen import budget, models
from csigen.checkpoint import load_checkpoint
from csigen.cli import build_parser, main
from csigen.config import ConfigError, make_config
from csigen.data import load_task
from csigen.train import Trainer, run

#: Stated slack of the wall-time test: a budget run ends within budget * (1 + SLACK) + SLACK_S seconds
#: (the plan keeps a reserve of budget.RESERVE; the rest absorbs step times that vary on a shared machine).
SLACK, SLACK_S = 0.25, 2.0


def SmallF(num_shifts=4):  # noqa: N802 - used as a class
    return models.SmallF(num_shifts=num_shifts, simclr_dim=32)
@pytest.fixture
def small_f(monkeypatch):
    """Every Trainer (also the one inside run()) builds SmallF as F; G, D, E, D' as configured."""
    monkeypatch.setattr(models, "ResNet18", lambda variant="cifar", num_shifts=4, width=64: SmallF(num_shifts))


@pytest.fixture(scope="module")
def task():
    return load_task("shapes", "stripes", max_train=16, max_test=32)


def cfg(variant="csi", **kw):
    base = {"dataset": "shapes", "inlier": "stripes", "variant": variant, "device": "cpu", "batch_size": 4,
            "gan_every": 2, "max_train": 16, "max_test": 32, "eval_samples": 1, "g_channels": 8, "d_channels": 8,
            "e_channels": 8, "z_dim": 16, "checkpoint_every_steps": None, "time_budget_min": 1.0}
    base.update(kw)
    return make_config("smoke", **base)


def weights(trainer):
    return {f"{n}.{k}": v.clone() for n, net in trainer.nets.items() for k, v in net.state_dict().items()}


def assert_same_run(a, b):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ha, hb = pd.DataFrame(a.history).drop(columns="seconds"), pd.DataFrame(b.history).drop(columns="seconds")
    assert len(ha) == a.total_steps and ha.equals(hb)


# --------------------------------------------------------------------------- planning
def test_plan_steps_is_the_largest_count_that_fits():
    assert budget.RESERVE == 0.10
    assert budget.plan_steps(2.0, 100.0, eval_estimate_s=10.0, elapsed_s=5.0) == 37  # (90 - 15) / 2
    kw = {"eval_estimate_s": 10.0, "elapsed_s": 5.0, "checkpoint_s": 1.0, "checkpoint_every_steps": 10,
          "checkpoint_every_s": 50.0, "final_writes": 2}
    n = budget.plan_steps(2.0, 100.0, **kw)
    cost = 2.0 * (1 + 1.0 / 50.0) + 1.0 / 10  # checkpoints every 10 steps and every 50 s of training

    def used(steps):  # setup, training with its checkpoints, the two final writes, evaluation
        return 5.0 + steps * cost + 2 * 1.0 + 10.0

    assert used(n) <= (1 - budget.RESERVE) * 100.0 < used(n + 1)


def test_a_budget_too_short_names_the_smallest_that_fits():
    with pytest.raises(budget.BudgetError, match=r"0\.10 min is too short.*Give at least 0\.4 min"):
        budget.plan_steps(2.0, 6.0, eval_estimate_s=10.0, elapsed_s=5.0)
    with pytest.raises(budget.BudgetError, match="one GAN block: gan_every=5"):
        budget.plan_steps(2.0, 60.0, eval_estimate_s=48.0, elapsed_s=5.0, min_steps=5)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, True, "10"])
def test_invalid_budgets_are_refused_with_the_fix(value):
    with pytest.raises(ConfigError, match=r"time_budget_min=.*positive number of minutes"):
        make_config("smoke", time_budget_min=value)


def test_cli_takes_minutes_and_refuses_a_bad_budget(capsys, tmp_path):
    args = build_parser().parse_args(["train", "--time-budget", "2.5"])
    assert args.time_budget_min == 2.5
    assert main(["train", "--time-budget", "-1", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "time_budget_min=-1.0" in capsys.readouterr().err and not (tmp_path / "r" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------- runs
def test_a_short_budget_ends_within_it_and_records_its_plan(tmp_path, task, small_f):
    # one-off imports of a fresh process (torch._dynamo at the first optimiser, scikit-learn at the first AUROC)
    # take seconds on a loaded CPU: a real run's budget counts them; this test measures the run itself
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    import sklearn.metrics  # noqa: F401

    config = cfg("csi", time_budget_min=0.2, checkpoint_every_steps=25)
    t0 = time.perf_counter()
    result = run(config, tmp_path, progress=False, task=task)
    wall = time.perf_counter() - t0
    plan = result["time_budget"]
    assert wall <= 0.2 * 60 * (1 + SLACK) + SLACK_S, (wall, plan)
    assert plan["planned_steps"] == result["steps"] >= 1 and plan["budget_s"] == 12.0
    assert plan["estimated_total_s"] <= (1 - budget.RESERVE) * 12.0
    assert load_checkpoint(tmp_path / "weights.pt")["time_budget"] == plan  # finished: the slim weights file
    assert json.loads((tmp_path / "result.json").read_text())["time_budget"] == plan
    assert run(config, tmp_path, progress=False, task=task) == result  # finished: read back, not re-planned


@pytest.mark.parametrize("variant", ["csi", "full"])
def test_resume_keeps_the_plan_and_equals_the_uninterrupted_run(tmp_path, task, small_f, monkeypatch, variant):
    planned = []
    plan_steps = budget.plan_steps

    def fixed_plan(*args, **kw):  # the real measurement runs; the count is fixed so the runs can be compared
        planned.append(plan_steps(*args, **kw))
        return 6

    monkeypatch.setattr(budget, "plan_steps", fixed_plan)
    gan_steps = []
    gan_block = Trainer._gan_block
    monkeypatch.setattr(Trainer, "_gan_block", lambda self, *a: gan_steps.append(self.step + 1) or gan_block(self, *a))
    config = cfg(variant)
    straight = Trainer(config, tmp_path / "a", task=task, progress=False).fit()
    assert straight.step == straight.total_steps == 6 and len(planned) == 1
    plan = straight.budget_plan
    if variant == "full":  # the timed steps (after the warm-up step) hold one GAN block per gan_every steps
        measured = []  # GAN blocks of the measurement: the step numbers until they start again at the run
        for s in gan_steps:
            if measured and s <= measured[-1]:
                break
            measured.append(s)
        first_timed, last_timed = budget.WARMUP_STEPS + 1, budget.WARMUP_STEPS + plan["timed_steps"]
        assert plan["timed_steps"] % config.gan_every == 0 and all(first_timed <= s <= last_timed for s in measured)
        assert len(measured) == plan["timed_steps"] // config.gan_every

    first = Trainer(config, tmp_path / "b", task=task, progress=False).fit(stop_after_steps=2)
    assert first.step == 2 and load_checkpoint(tmp_path / "b" / "checkpoint.pt")["time_budget"]["planned_steps"] == 6

    def no_replanning(trainer):
        raise AssertionError("a resumed run must use its recorded plan")

    monkeypatch.setattr(budget, "plan_budget", no_replanning)
    resumed = Trainer(config, tmp_path / "b", task=task, progress=False).fit()
    assert resumed.step == 6 and resumed.budget_plan == first.budget_plan
    # the plan's replay settings give the same run without a budget: the measured steps left no trace
    replay = Trainer(dataclasses.replace(config, **plan["replay"]), tmp_path / "c", task=task, progress=False).fit()
    assert replay.total_steps == 6 and replay.budget_plan is None
    assert_same_run(straight, replay)
    assert_same_run(resumed, replay)


def test_a_run_under_way_is_not_planned_again(tmp_path, task, small_f):
    config = cfg("csi", time_budget_min=None, max_steps=3)
    trainer = Trainer(config, tmp_path, task=task, progress=False).fit(stop_after_steps=1)
    trainer.config = dataclasses.replace(config, time_budget_min=1.0)
    with pytest.raises(budget.BudgetError, match="already at step 1.*start over"):
        budget.plan_budget(trainer)
