"""Issue 9 item 6: F as a frozen critic leaves its BatchNorm running statistics alone."""

import pytest
import torch

from csigen.config import ConfigError, make_config
from csigen.data import load_task
from csigen.models import ResNet18
from csigen.train import Trainer, frozen


def _bn_buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_frozen_keeps_running_stats_but_uses_batch_statistics():
    torch.manual_seed(0)
    F = ResNet18(num_shifts=4).train()
    x = torch.rand(4, 3, 32, 32)
    before = _bn_buffers(F)
    with frozen(F, keep_running_stats=True):
        out = F(x, simclr=True)["simclr"]
        assert not any(p.requires_grad for p in F.parameters())
    after = _bn_buffers(F)
    assert before.keys() == after.keys() and len(before) > 0
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in F.parameters())
    # the forward inside used batch statistics (training mode), as an unfrozen training-mode pass does
    with torch.no_grad():
        reference = F(x, simclr=True)["simclr"]
    torch.testing.assert_close(out, reference)
    # without the flag the running averages move, as before
    with frozen(F):
        F(x, simclr=True)
    moved = _bn_buffers(F)
    assert not torch.equal(moved["bn1.running_mean"], after["bn1.running_mean"])


@pytest.mark.parametrize("variant,critic_bn_stats,expected", [
    ("csi+g", "keep", 2), ("full", "keep", 2),      # per GAN step: L_CSI (Eq. 4) and L_JOINT (Eq. 5)
    ("csi+g", "update", 3), ("full", "update", 4),  # plus L_CSI-S (Eq. 6) and, for full, L_REC (Eq. 8)
])
def test_gan_step_moves_f_statistics_only_in_f_updates(variant, critic_bn_stats, expected):
    task = load_task("shapes", "stripes", max_train=8, max_test=16)
    config = make_config("smoke", dataset="shapes", inlier="stripes", variant=variant, gan_every=1,
                         max_steps=1, batch_size=4, max_train=8, max_test=16,
                         critic_bn_stats=critic_bn_stats, device="cpu")
    trainer = Trainer(config, None, task=task, progress=False)
    F = trainer.nets.F
    counter = dict(F.named_buffers())["bn1.num_batches_tracked"]
    start = int(counter)
    record = trainer.train_step()
    assert "joint" in record
    assert int(counter) - start == expected


@pytest.mark.parametrize("variant", ["csi+g", "full"])
def test_joint_bn_stats_keep_leaves_eq5_out_of_f_statistics(variant, monkeypatch):
    import csigen.losses as L

    task = load_task("shapes", "stripes", max_train=8, max_test=16)
    config = make_config("smoke", dataset="shapes", inlier="stripes", variant=variant, gan_every=1,
                         max_steps=1, batch_size=4, max_train=8, max_test=16, joint_bn_stats="keep",
                         device="cpu")
    trainer = Trainer(config, None, task=task, progress=False)
    F = trainer.nets.F
    seen = {}
    joint_loss = L.joint_loss

    def spy(*args, **kwargs):
        seen["before"] = _bn_buffers(F)
        return joint_loss(*args, **kwargs)

    monkeypatch.setattr(L, "joint_loss", spy)
    weights = {k: v.clone() for k, v in F.state_dict().items()}
    record = trainer.train_step()
    assert "joint" in record and record["joint"] > 0
    after = _bn_buffers(F)
    assert all(torch.equal(seen["before"][k], after[k]) for k in after)  # Eq. 5 left the statistics
    assert int(after["bn1.num_batches_tracked"]) == 1                    # Eq. 4 alone moved them
    moved = [k for k, v in F.state_dict().items() if not torch.equal(v, weights[k])]
    assert any(k.endswith("weight") for k in moved)                       # F still trained


@pytest.mark.parametrize("field", ["critic_bn_stats", "joint_bn_stats"])
def test_bn_stats_fields_are_validated(field):
    with pytest.raises(ConfigError, match=field):
        make_config("smoke", **{field: "sometimes"})
