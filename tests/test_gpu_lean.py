"""The GPU-lean training step (issue 11), checked on the CPU.

* No host read inside a step's updates: on the ``meta`` device (tensors with shapes and no
  values; reading one back raises) a ``full`` step with every real update (backward, gradient
  clipping, LARS and Adam steps) runs to the end; only ``LossReadout.read`` would need values.
* One read per step, which still raises for a non-finite loss or gradient norm, naming it.
* Fused optimisers where the device has them; ``compile=True`` runs and matches eager.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.overrides import TorchFunctionMode

from csigen.config import make_config
from csigen.data import load_task
from csigen.train import LossReadout, NonFiniteLossError, Trainer


def small(variant, **kw):
    base = dict(dataset="shapes", inlier="circle", variant=variant, amp="off", device="cpu", epochs=10,
                max_steps=4, batch_size=4, gan_every=2, max_train=16, max_test=32, eval_samples=1,
                g_channels=8, d_channels=8, e_channels=8, z_dim=16, checkpoint_every_steps=None, f_width=8)
    base.update(kw)
    return make_config("smoke", **base)


class CountTransfers(TorchFunctionMode):
    """Counts torch calls whose result lives on another device than their first argument."""

    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if torch.is_tensor(out) and args and torch.is_tensor(args[0]) and out.device != args[0].device:
            self.n += 1
        return out


@pytest.fixture(scope="module")
def task():
    return load_task("shapes", "circle", max_train=16, max_test=32)


@pytest.mark.parametrize("variant", ["csi", "csi+g", "full"])
def test_a_step_reads_nothing_back_until_its_one_readout(task, variant):
    trainer = Trainer(small(variant, device="meta"), None, task=task, progress=False)
    reads = []

    def read(record, step):  # meta tensors have no values: the real read would raise here, and only here
        reads.append((step, [name for _, name, _ in trainer.readout.pending]))
        trainer.readout.pending.clear()
        return record

    trainer.readout.read = read
    for _ in range(2):
        trainer.train_step()
    sites = {"csi": [], "csi+g": ["d", "g_adv", "csi_s", "joint"],
             "full": ["d", "g_adv", "csi_s", "ld", "e_adv", "rec", "lrec", "joint"]}[variant]
    assert [step for step, _ in reads] == [0, 1]  # one read per step
    assert reads[0][1] == ["csi", "csi"]  # the loss and its gradient norm
    assert reads[1][1] == [n for site in ["csi"] + sites for n in (site, site)]


def test_readout_returns_floats_and_names_the_first_nonfinite_value():
    r = LossReadout()
    r.add("csi", torch.tensor(1.5), torch.tensor(2.0))
    out = r.read({"step": 1, "csi": torch.tensor(1.5), "con_si": torch.tensor(0.25)}, step=0)
    assert out == {"step": 1, "csi": 1.5, "con_si": 0.25} and all(type(v) in (int, float) for v in out.values())
    assert r.pending == []
    r.add("d", torch.tensor(0.7), torch.tensor(math.inf))  # finite loss, exploding gradient
    r.add("g_adv", torch.tensor(math.nan), torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match=r"gradient of loss 'd' is inf at step 7 \(exploding"):
        r.read({"d": torch.tensor(0.7)}, step=7)
    assert r.pending == []  # a failed read leaves nothing for the next step
    r.add("g_adv", torch.tensor(math.nan))
    with pytest.raises(NonFiniteLossError, match=r"loss 'g_adv' is nan at step 3: training diverged"):
        r.read({}, step=3)


def test_a_nonfinite_gradient_with_a_finite_loss_stops_the_step(task):
    trainer = Trainer(small("csi"), None, task=task, progress=False)
    weight = trainer.nets.F.shift_cls_layer.weight
    weight.register_hook(lambda g: torch.full_like(g, math.inf))
    with pytest.raises(NonFiniteLossError, match=r"gradient of loss 'csi' is (inf|nan) at step 0"):
        trainer.train_step()
    assert trainer.step == 0 and trainer.readout.pending == []


def test_fused_optimisers_on_cuda_only_and_the_fused_path_matches():
    from csigen.optim import LARS, build_f_optimizer, fused_options

    assert fused_options("cuda:0") == {"fused": True} and fused_options("cpu") == {}
    torch.manual_seed(0)
    w0 = torch.randn(6, 5)
    grads = [torch.randn(6, 5) for _ in range(3)]
    results = {}
    for fused in (False, True):  # torch has fused SGD/Adam kernels on the CPU too: the same arithmetic
        for name in ("lars", "adam"):
            w = torch.nn.Parameter(w0.clone())
            opt = build_f_optimizer(name, [w], lr=0.1, momentum=0.9, weight_decay=1e-4, fused=fused)
            assert isinstance(opt, LARS) == (name == "lars") and opt.defaults.get("fused") == (fused or None)
            for g in grads:
                w.grad = g.clone()
                opt.step()
            results[name, fused] = w.detach()
    for name in ("lars", "adam"):
        torch.testing.assert_close(results[name, True], results[name, False], rtol=1e-5, atol=1e-6)


def test_compile_option_trains_like_eager_and_resumes_from_an_eager_checkpoint(task, tmp_path):
    eager = Trainer(small("csi", max_steps=2), tmp_path / "eager", task=task, progress=False)
    eager.fit(resume=False)
    compiled = Trainer(small("csi", max_steps=2, compile=True), tmp_path / "compiled", task=task, progress=False)
    compiled.fit(resume=False)
    for a, b in zip(eager.history, compiled.history):
        assert a["csi"] == pytest.approx(b["csi"], rel=1e-4, abs=1e-5)
    # a speed setting: the eager run's checkpoint continues with compile on (same state_dict keys)
    more = Trainer(small("csi", max_steps=3, compile=True), tmp_path / "eager", task=task, progress=False)
    more.fit(resume=True)
    assert more.step == 3


def test_augmentation_parameters_move_to_the_device_in_one_transfer():
    from csigen.augment import SimCLRAugment

    params = SimCLRAugment().sample_params(6, torch.Generator().manual_seed(0), size=(32, 32))
    with CountTransfers() as count:
        moved = params.to("meta")
    assert count.n == 1
    for name in ("jitter", "gray", "contrast", "hue", "whbias"):
        assert getattr(moved, name).shape == getattr(params, name).shape
        assert getattr(moved, name).dtype == getattr(params, name).dtype
        assert getattr(moved, name).device.type == "meta"
    assert params.to("cpu") is params
