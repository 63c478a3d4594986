"""The evaluation's fast inference path (csigen.inference): same features as the plain path, model untouched."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from csigen.augment import eval_augment
from csigen.inference import fold_batchnorm, is_row_wise, prepare_inference
from csigen.models import ResNet18, SmallF
from csigen.score import extract_features

CALL = {"simclr": True, "shift": True}


def _trained_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm running statistics and an affine map far from the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        net.train()
        for _ in range(3):
            net(torch.rand(8, 3, 32, 32, generator=g), **CALL)
    return net


def _snapshot(net: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in net.state_dict().items()},
            "modes": [m.training for m in net.modules()],
            "types": [type(m) for m in net.modules()],
            "grads": [p.requires_grad for p in net.parameters()],
            "layouts": [p.is_contiguous() for p in net.parameters()]}


def _assert_untouched(net: nn.Module, before: dict) -> None:
    after = _snapshot(net)
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())
    assert after["modes"] == before["modes"] and after["types"] == before["types"]
    assert after["grads"] == before["grads"] and after["layouts"] == before["layouts"]


def test_fold_batchnorm_folds_all_20_pairs_of_resnet18_and_keeps_its_outputs():
    net = _trained_bn(ResNet18(width=8))
    before = _snapshot(net)
    folded_net, folded = fold_batchnorm(net, CALL)
    # stem + 2 convs in each of the 8 blocks + 3 projection shortcuts
    assert len(folded) == 20 and "conv1" in folded and "layer2.0.shortcut.0" in folded
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded_net.modules())
    assert not folded_net.training
    _assert_untouched(net, before)  # the original is still in train mode with its BatchNorms
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    net.eval()
    with torch.no_grad():
        want, got = net(x, **CALL), folded_net(x, **CALL)
    for key in CALL:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)


class _Unfoldable(nn.Module):
    """Conv/BatchNorm pairs that must not be folded, and one that may."""

    def __init__(self):
        super().__init__()
        self.conv_shared_out, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_batch_stats = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False)
        self.conv_c, self.bn_twice = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_ok, self.bn_ok = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x, *, simclr=False, shift=False):
        h = self.conv_shared_out(x)
        h = torch.relu(self.bn_a(h)) + h  # the conv's output has a second user
        h = self.bn_batch_stats(self.conv_b(h))  # normalises with batch statistics even in eval mode
        h = self.bn_twice(self.bn_twice(self.conv_c(h)))  # called twice
        h = torch.relu(self.bn_ok(self.conv_ok(h)))
        z = self.head(h.mean(dim=(2, 3)))
        return {"simclr": z, "shift": z}


def test_fold_batchnorm_leaves_pairs_it_cannot_fold():
    net = _trained_bn(_Unfoldable())
    folded_net, folded = fold_batchnorm(net, CALL)
    assert folded == ["conv_ok"]
    net.eval()
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(folded_net(x, **CALL)["simclr"], net(x, **CALL)["simclr"], rtol=1e-5, atol=1e-5)


class _Untraceable(SmallF):
    def forward(self, x, **kw):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return super().forward(x, **kw)


def test_untraceable_network_is_copied_without_folding():
    net = _trained_bn(_Untraceable())
    folded_net, folded = fold_batchnorm(net, CALL)
    assert folded == [] and any(isinstance(m, nn.BatchNorm2d) for m in folded_net.modules())
    assert len(fold_batchnorm(_trained_bn(SmallF()), CALL)[1]) == 2  # the traceable parent folds


@pytest.mark.parametrize("make", [lambda: ResNet18(width=8), SmallF, _Untraceable], ids=["resnet18", "smallf",
                                                                                         "untraceable"])
def test_fast_path_gives_the_plain_features_and_leaves_the_model_untouched(make):
    net = _trained_bn(make())
    if isinstance(net, ResNet18):
        net.layer1[0].bn1.eval()  # a model in mixed modes keeps them
    calls = []  # per forward call: was it the model itself? (a deep copy keeps the hook, with its own module)
    net.register_forward_hook(lambda module, *_: calls.append(module is net))
    imgs = torch.randint(0, 256, (12, 3, 32, 32), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    kw = {"num_samples": 2, "batch_size": 9, "seed": 5}  # 36 rows: two sub-batches on the fast path
    before = _snapshot(net)
    fast = extract_features(net, imgs, eval_augment(), **kw)
    assert calls.count(True) == 0  # the inference copy ran, not the model
    _assert_untouched(net, before)
    plain = extract_features(net, imgs, eval_augment(), fast=False, **kw)
    assert calls.count(True) == 2 * 2  # 2 draws x 2 chunks
    torch.testing.assert_close(fast.simclr, plain.simclr, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fast.shift, plain.shift, rtol=1e-5, atol=1e-6)


def test_prepare_inference_uses_channels_last_and_keeps_plain_networks_as_they_are():
    net = _trained_bn(SmallF())
    inf = prepare_inference(net, "cpu", call_kwargs=CALL)
    assert inf.is_copy and inf.net is not net and inf.memory_format is torch.channels_last
    assert inf.net.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not net.trunk[0].weight.is_contiguous(memory_format=torch.channels_last)
    plain = prepare_inference(net, "cpu", fold_bn=False, channels_last=False)
    assert not plain.is_copy and plain.net is net
    linear = nn.Linear(4, 2)  # nothing to fold or convert: the network itself
    assert prepare_inference(linear, "cpu").net is linear
    with pytest.raises(ValueError, match="fast=True"):
        extract_features(net, torch.zeros(2, 3, 32, 32, dtype=torch.uint8), eval_augment(), fast=False, compile=True)


def test_cpu_sub_batches_give_the_whole_batch_outputs_and_only_for_row_wise_networks():
    net = _trained_bn(ResNet18(width=8))
    inf = prepare_inference(net, "cpu", cpu_rows=3, call_kwargs=CALL)
    assert inf.max_rows == 3 and prepare_inference(net, "cpu", call_kwargs=CALL).max_rows == 32
    assert prepare_inference(net, "cpu", cpu_rows=None, call_kwargs=CALL).max_rows is None
    assert prepare_inference(net, "cuda", call_kwargs=CALL).max_rows is None  # GPUs want large batches
    rows = []
    inf.net.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        got = inf(x, **CALL)
        inf.max_rows = None
        whole = inf(x, **CALL)
    assert rows == [3, 3, 3, 1, 10]
    for key in CALL:
        torch.testing.assert_close(got[key], whole[key], rtol=1e-5, atol=1e-6)
    # rows that might see each other in eval mode: a subclass (its own forward), batch-statistics BatchNorm
    assert is_row_wise(SmallF().eval()) and not is_row_wise(_Untraceable().eval())
    assert prepare_inference(_trained_bn(_Untraceable()), "cpu", call_kwargs=CALL).max_rows is None
    assert not is_row_wise(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)))
    with pytest.raises(ValueError, match="cpu_rows"):
        prepare_inference(net, "cpu", cpu_rows=0)


def test_copy_of_an_in_place_compiled_model_does_not_run_the_original():
    """nn.Module.compile() stores a compiled bound method of the original; the copy must never call it."""
    net = _trained_bn(SmallF())
    reference = copy.deepcopy(net)
    net.compile()  # compiles lazily, at the first call of net itself (which must never come here)
    net.train()
    before = _snapshot(net)
    imgs = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(4), dtype=torch.uint8)
    kw = {"num_samples": 1, "batch_size": 4, "seed": 1}
    fast = extract_features(net, imgs, eval_augment(), **kw)
    _assert_untouched(net, before)  # a train-mode call of the original would have moved its running stats
    assert net._compiled_call_impl is not None  # the original stays compiled
    plain = extract_features(reference, imgs, eval_augment(), fast=False, **kw)
    torch.testing.assert_close(fast.simclr, plain.simclr, rtol=1e-5, atol=1e-6)


def test_distributed_wrapper_is_looked_through(tmp_path):
    """Under torchrun F is a DistributedNet (DDP): the copy is of its network, the wrapper stays as it is."""
    import torch.distributed as dist

    from csigen.distributed import DistributedNet

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        net = _trained_bn(SmallF())
        wrapped = DistributedNet(net)
        before = _snapshot(net)
        imgs = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(8), dtype=torch.uint8)
        kw = {"num_samples": 1, "batch_size": 5, "seed": 3}
        fast = extract_features(wrapped, imgs, eval_augment(), **kw)
        _assert_untouched(net, before)
        plain = extract_features(net, imgs, eval_augment(), fast=False, **kw)
        torch.testing.assert_close(fast.simclr, plain.simclr, rtol=1e-5, atol=1e-6)
        assert len(prepare_inference(wrapped, "cpu", call_kwargs=CALL).folded) == 2
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_compiled_fast_path_gives_the_plain_features():
    pytest.importorskip("torch._inductor")
    net = _trained_bn(SmallF(width=8))
    imgs = torch.randint(0, 256, (4, 3, 32, 32), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    kw = {"num_samples": 1, "batch_size": 4, "seed": 2}
    compiled = extract_features(net, imgs, eval_augment(), compile=True, **kw)
    plain = extract_features(net, imgs, eval_augment(), fast=False, **kw)
    torch.testing.assert_close(compiled.simclr, plain.simclr, rtol=1e-5, atol=1e-6)
