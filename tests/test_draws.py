"""A step's random draws in one host-to-device transfer (csigen.draws, issue 11).

* The packed copy is exact for every dtype (pack/unpack round trip).
* Planned steps give the numbers of drawing one by one, bit for bit, also when a step asks for
  other draws than recorded, or fewer; a draw from a planned generator behind the planner's back
  is refused.
* On the ``meta`` device (a stand-in for a GPU: every host-to-device copy is visible), a planned
  training step of every variant makes exactly one copy.
"""

from __future__ import annotations

import pytest
import torch
from test_gpu_lean import CountTransfers, small

from csigen.data import load_task
from csigen.draws import StepDraws, draw, pack, unpack
from csigen.train import Trainer


@pytest.fixture(scope="module")
def task():
    return load_task("shapes", "circle", max_train=16, max_test=32)


def test_pack_and_unpack_are_exact_for_every_dtype_and_shape():
    g = torch.Generator().manual_seed(0)
    tensors = [
        torch.rand(5, generator=g),
        torch.rand(3, 4, generator=g, dtype=torch.float64),
        torch.rand(7, generator=g).half(),
        torch.rand(6, generator=g) < 0.5,
        torch.randint(-9, 9, (2, 3), generator=g),
        torch.rand(4, 4, generator=g).t(),  # not contiguous
        torch.rand((), generator=g),  # 0-d
        torch.zeros(0, 4),  # empty
    ]
    buffer, spans = pack(tensors)
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1
    back = unpack(buffer.clone(), tensors, spans)
    for t, b in zip(tensors, back):
        assert b.dtype == t.dtype and b.shape == t.shape and torch.equal(b, t)


def _draws(g, sizes):
    return [draw(("u", n), g, lambda gen, n=n: torch.rand(n, generator=gen), "cpu") for n in sizes]


def _lazy(seed, steps):
    g = torch.Generator().manual_seed(seed)
    return [[torch.rand(n, generator=g) for n in sizes] for sizes in steps], g.get_state()


@pytest.mark.parametrize("steps", [
    [[4, 3], [4, 3], [4, 3]],  # recorded, then served from the plan
    [[4, 3], [4, 5], [4, 5]],  # a step asks for another size: rewound and drawn one by one
    [[4, 3], [4], [4, 3]],  # a step draws less than recorded: the extra draws are undone
    [[4, 3], [4, 3, 2], [4, 3, 2]],  # and more
    [[4, 3], [], [4, 3]],  # and nothing at all
])
def test_planned_steps_draw_the_numbers_of_drawing_one_by_one(steps):
    g = torch.Generator().manual_seed(7)
    draws = StepDraws()
    got = []
    for sizes in steps:
        with draws.step("kind"):
            got.append(_draws(g, sizes))
    want, state = _lazy(7, steps)
    assert [[t.tolist() for t in s] for s in got] == [[t.tolist() for t in s] for s in want]
    assert torch.equal(g.get_state(), state)
    assert draws.plans["kind"] and [e.key for e in draws.plans["kind"]] == [("u", n) for n in steps[-1]] or not steps[-1]


def test_a_failed_step_leaves_its_generators_where_its_draws_left_them():
    g = torch.Generator().manual_seed(3)
    draws = StepDraws()
    with draws.step(0):
        _draws(g, [4, 3])
    with pytest.raises(ValueError, match="boom"), draws.step(0):
        _draws(g, [4])
        raise ValueError("boom")
    _, state = _lazy(3, [[4, 3], [4]])
    assert torch.equal(g.get_state(), state)
    assert [e.key for e in draws.plans[0]] == [("u", 4), ("u", 3)]  # a failed step does not replace the plan


def test_drawing_from_a_planned_generator_behind_the_planner_is_refused():
    g = torch.Generator().manual_seed(0)
    draws = StepDraws()
    with draws.step(0):
        _draws(g, [4])
    with pytest.raises(RuntimeError, match="drawn from outside"), draws.step(0):
        _draws(g, [4])
        torch.rand(2, generator=g)
    with draws.step(0), pytest.raises(RuntimeError, match="do not nest"), draws.step(1):
        pass


def test_draws_without_a_generator_or_outside_a_step_are_plain_draws():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(11)
    a = draw(("u", 3), None, lambda gen: torch.rand(3, generator=gen), "cpu")
    torch.manual_seed(11)
    assert torch.equal(a, torch.rand(3))
    draws = StepDraws()
    with draws.step(0):
        draw(("u", 3), None, lambda gen: torch.rand(3, generator=gen), "cpu")
    assert draws.plans[0] == []  # the global RNG is shared with other code: never planned
    assert torch.equal(draw(("u", 2), g, lambda gen: torch.rand(2, generator=gen), "cpu"),
                       torch.rand(2, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("variant", ["csi", "full"])
def test_run_step_trains_exactly_as_train_step(task, variant):
    plain = Trainer(small(variant, max_steps=6, channels_last=False), None, task=task, progress=False)
    planned = Trainer(small(variant, max_steps=6, channels_last=False), None, task=task, progress=False)
    for _ in range(6):  # three GAN cycles: each kind recorded, then served twice
        a, b = plain.train_step(), planned.run_step()
        assert a == b
    assert sorted(planned.draws.plans) == ([0, 1] if variant == "full" else [0])
    for name, net in plain.nets.items():
        for (k, p), q in zip(net.state_dict().items(), getattr(planned.nets, name).state_dict().values()):
            assert torch.equal(p, q), (name, k)
    assert torch.equal(plain.aug_gen.get_state(), planned.aug_gen.get_state())
    assert torch.equal(plain.z_gen.get_state(), planned.z_gen.get_state())


@pytest.mark.parametrize("variant", ["csi", "csi+g", "full"])
def test_a_planned_step_moves_its_randomness_to_the_device_in_one_transfer(task, variant):
    trainer = Trainer(small(variant, max_steps=6, device="meta"), None, task=task, progress=False)
    trainer.readout.read = lambda record, step: (trainer.readout.pending.clear(), record)[1]  # meta: no values
    counts = []
    for _ in range(4):  # an epoch of 4 steps: steps 0 and 1 record their kind (csi: one kind), the rest are served
        with CountTransfers() as count:
            trainer.run_step()
        counts.append(count.n)
    assert counts[0] > 1 + 1  # the epoch's order, then each draw on its own
    if variant == "csi":
        assert counts[1:] == [1, 1, 1] and trainer.draws.transfers == 3
    else:
        assert counts[1] > 2  # a GAN block draws several times
        assert counts[2:] == [1, 1] and trainer.draws.transfers == 2
