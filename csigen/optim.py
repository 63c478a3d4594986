"""F's optimiser and learning-rate schedule, as CSI's code runs them.

CSI wraps SGD in ``torchlars.LARS`` (eps 1e-8, trust coefficient 0.001).
torchlars needs CUDA to build, so csigen carries a short re-implementation
of the same update (written from its documented algorithm, You et al. 2017):
for every parameter ``w`` with gradient ``g`` and weight decay ``wd``::

    local_lr = trust_coef * ||w|| / (||g|| + wd * ||w|| + eps)   (1 if ||w|| or ||g|| is 0)
    g <- (g + wd * w) * local_lr

then the plain SGD step (momentum, no further weight decay). The schedule is
CSI's ``GradualWarmupScheduler`` + ``CosineAnnealingLR(T_max=epochs)`` as a
function of the fractional epoch ``e``::

    e <= W:  lr = base * ((m - 1) * e / W + 1)
    e >  W:  lr = base * m * (1 + cos(pi * (e - W) / E)) / 2
"""

from __future__ import annotations

import math

import torch


class LARS(torch.optim.SGD):
    """SGD with layer-wise adaptive rate scaling (torchlars semantics, as in CSI)."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 1e-6,
                 trust_coef: float = 0.001, eps: float = 1e-8, fused: bool | None = None):
        if trust_coef <= 0:
            raise ValueError(f"trust_coef must be > 0, got {trust_coef}")
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=fused)
        for group in self.param_groups:
            group.setdefault("trust_coef", trust_coef)
            group.setdefault("eps", eps)

    @torch.no_grad()
    def step(self, closure=None):
        saved_wd = []
        for group in self.param_groups:
            wd = group["weight_decay"]
            saved_wd.append(wd)
            for p in group["params"]:
                if p.grad is None:
                    continue
                w_norm = torch.linalg.vector_norm(p)
                g_norm = torch.linalg.vector_norm(p.grad)
                local = group["trust_coef"] * w_norm / (g_norm + wd * w_norm + group["eps"])
                local = torch.where((w_norm > 0) & (g_norm > 0), local, torch.ones_like(local))
                p.grad.add_(p, alpha=wd).mul_(local)
            group["weight_decay"] = 0.0
        try:
            return super().step(closure)
        finally:
            for group, wd in zip(self.param_groups, saved_wd):
                group["weight_decay"] = wd


def warmup_cosine_factor(epoch: float, total_epochs: float, warmup_epochs: float, multiplier: float) -> float:
    """CSI's learning-rate factor at fractional epoch ``epoch`` (see module docstring)."""
    if warmup_epochs > 0 and epoch <= warmup_epochs:
        return (multiplier - 1.0) * epoch / warmup_epochs + 1.0
    return multiplier * (1.0 + math.cos(math.pi * (epoch - warmup_epochs) / total_epochs)) / 2.0


def fused_options(device: torch.device | str) -> dict:
    """Keyword arguments for SGD/LARS/Adam: ``{"fused": True}`` on CUDA, ``{}`` elsewhere.

    Fused optimisers update every parameter in one kernel (instead of several per
    parameter tensor) on the GPU. On the CPU the default (``foreach``) path is kept:
    the CPU reference numbers (``tests/fixtures/csi_step.json``) were made with it.
    """
    return {"fused": True} if torch.device(device).type == "cuda" else {}


def build_f_optimizer(name: str, params, lr: float, momentum: float, weight_decay: float,
                      trust_coef: float = 0.001, fused: bool = False) -> torch.optim.Optimizer:
    """F's optimiser: ``"lars"`` (CSI), ``"sgd"`` or ``"adam"``; ``fused``: see :func:`fused_options`."""
    extra = {"fused": True} if fused else {}
    if name == "lars":
        return LARS(params, lr=lr, momentum=momentum, weight_decay=weight_decay, trust_coef=trust_coef, **extra)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **extra)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, **extra)
    raise ValueError(f"unknown optimiser {name!r}; choose 'lars', 'sgd' or 'adam'")
