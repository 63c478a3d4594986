"""LARS (torchlars semantics, as CSI) and CSI's warm-up + cosine schedule."""

import math

import pytest
import torch

from csigen.optim import LARS, build_f_optimizer, warmup_cosine_factor


def test_lars_step_matches_formula():
    torch.manual_seed(0)
    w0 = torch.randn(5, 3)
    g = torch.randn(5, 3)
    p = torch.nn.Parameter(w0.clone())
    opt = LARS([p], lr=0.1, momentum=0.9, weight_decay=1e-2, trust_coef=0.001, eps=1e-8)
    p.grad = g.clone()
    opt.step()
    local = 0.001 * w0.norm() / (g.norm() + 1e-2 * w0.norm() + 1e-8)
    expected = w0 - 0.1 * (g + 1e-2 * w0) * local
    assert torch.allclose(p.detach(), expected, atol=1e-7)
    assert opt.param_groups[0]["weight_decay"] == 1e-2  # restored after the step
    # second step uses momentum on the scaled gradient
    p.grad = g.clone()
    w1 = p.detach().clone()
    buf = (g + 1e-2 * w0) * local
    local1 = 0.001 * w1.norm() / (g.norm() + 1e-2 * w1.norm() + 1e-8)
    buf = 0.9 * buf + (g + 1e-2 * w1) * local1
    opt.step()
    assert torch.allclose(p.detach(), w1 - 0.1 * buf, atol=1e-7)


def test_lars_zero_weight_uses_plain_rate():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = LARS([p], lr=0.5, momentum=0.0, weight_decay=0.0)
    p.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), -0.5))


def test_schedule_matches_csi_warmup_then_cosine():
    assert warmup_cosine_factor(0, 1000, 10, 10) == 1.0
    assert warmup_cosine_factor(5, 1000, 10, 10) == pytest.approx(5.5)
    assert warmup_cosine_factor(10, 1000, 10, 10) == pytest.approx(10.0)
    e = 510
    assert warmup_cosine_factor(e, 1000, 10, 10) == pytest.approx(10 * (1 + math.cos(math.pi * 500 / 1000)) / 2)
    assert warmup_cosine_factor(3, 100, 0, 10) == pytest.approx(10 * (1 + math.cos(math.pi * 3 / 100)) / 2)


def test_build_optimizer_choices():
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert isinstance(build_f_optimizer("lars", params, 0.1, 0.9, 1e-6), LARS)
    assert isinstance(build_f_optimizer("adam", params, 1e-3, 0.9, 0.0), torch.optim.Adam)
    with pytest.raises(ValueError, match="unknown optimiser"):
        build_f_optimizer("rmsprop", params, 0.1, 0.9, 0.0)
