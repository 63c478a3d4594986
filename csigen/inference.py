"""Fast inference copies of F for the evaluation's feature extraction.

:func:`csigen.score.extract_features` runs F forward ``R * K`` times on every
training and test image (R = 10 draws of T, K = 4 rotations: 2.4 million
forward passes for a CIFAR-10 evaluation), so F's inference speed decides what
an evaluation costs.  :func:`prepare_inference` turns F into a faster network
with the same outputs (to float32 rounding, about 3e-7 relative) without
touching F itself.  What each lever does:

* **BatchNorm folding** (:func:`fold_batchnorm`): in eval mode a BatchNorm
  that directly follows a convolution is an affine map per channel,
  ``y = gamma * (conv(x) - mean) / sqrt(var + eps) + beta``, so it can be
  folded into the convolution's weight and bias
  (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the BatchNorm becomes the
  identity.  ResNet-18 loses its 20 BatchNorm passes over the activations.
  Which convolution feeds which BatchNorm is read from the network's
  ``torch.fx`` graph, not from module names, and a pair is folded only when
  the convolution's output goes to that BatchNorm alone and each module is
  called once; a network ``torch.fx`` cannot trace is left unfolded.
* **channels_last**: the copy's convolution weights and every input batch in
  NHWC layout, the layout oneDNN (CPU) and cuDNN (CUDA) convolutions run
  fastest in, so no layout conversion happens inside the network.  Used on the
  CPU and on CUDA, for networks with 2-D convolutions.
* **CPU sub-batches** (``cpu_rows``, 32 by default): on the CPU a chunk's
  ``K * B`` rows (400 for CSI's test batch of 100) go through the network 32
  rows at a time, so that a layer's input and output stay in the last-level
  cache (a row of ResNet-18's first stage is 256 KiB; 400 rows are 100 MiB).
  Only for networks known to treat rows independently in eval mode (every
  module of a type listed, exactly, in :data:`ROW_WISE_TYPES`, e.g. csigen's
  ``ResNet18`` and ``SmallF``), so the outputs are those of one forward pass
  over the chunk, to float32 rounding.  Not on CUDA, which wants large batches.
* **torch.compile** (optional, ``compile=True``, off by default): Inductor
  with ``freezing`` (weights as constants: prepacked convolution weights on
  the CPU, fused element-wise epilogues).  Each call of
  :func:`prepare_inference` compiles afresh (about 10-15 s on the CPU), so it
  pays only for long evaluations.

Rough probes (CPU, 1 thread, on a machine under load from another job, so
only the ratios mean anything; ResNet-18 on 400 rows = one chunk of 100 images
x 4 rotations, eval mode, images/s of the fastest of 4-6 interleaved repeats):
width 64 (CSI's F): plain 72, BatchNorm folded 78, channels_last 86, both 96
(1.33x), then in sub-batches of 32 rows 105 (of 16-128 rows: 101-105);
width 32 (the ``cpu`` preset): plain 227, folded 253, channels_last
301, both 343 (1.51x); ``compile=True`` on top of both (width 64): 104
(1.08x more, after 9-15 s of compilation).  The augmentation T and the
rotation copies take under 1 % of a chunk's time (about 20-40 ms against
4.2 s for the network), so fewer copies there is not worth a second code path;
97 % of the network's time is in the convolutions once BatchNorm is folded.
The whole ``extract_features`` (``bench/scoring.py``, 100 images, R = 2,
chunks of 100, 2 repeats, same load): fast path 1.46x the plain path and 1.60x
CSI's own ``_get_features`` loop; measured figures belong in
``bench/RESULTS.md``.

The copy is made only when there is something to change (a BatchNorm to fold,
a convolution to convert, or ``compile``); a network with neither, such as the
small stand-ins of the tests, runs as it is.  The original network is never
modified: not its parameters, buffers, mode or hooks.
"""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from dataclasses import dataclass

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.utils.fusion import fuse_conv_bn_eval

from csigen.models import BasicBlock, ResNet18, SmallF

__all__ = ["ROW_WISE_TYPES", "InferenceNet", "fold_batchnorm", "is_row_wise", "prepare_inference"]

#: Devices whose convolutions run fastest in channels_last layout (oneDNN on the CPU, cuDNN on CUDA).
CHANNELS_LAST_DEVICES = ("cpu", "cuda")


#: Module types whose eval-mode forward treats the rows of a batch independently (BatchNorm only with
#: running statistics): a network made of these alone may run in sub-batches.  Exact types: a
#: subclass may override ``forward``.
ROW_WISE_TYPES: tuple[type, ...] = (
    ResNet18, BasicBlock, SmallF, nn.Sequential, nn.Identity, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear,
    nn.ReLU, nn.LeakyReLU, nn.Flatten, nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
)


def is_row_wise(net: nn.Module) -> bool:
    """Whether ``net`` in eval mode computes each row of a batch on its own (see :data:`ROW_WISE_TYPES`)."""
    for m in net.modules():
        if type(m) not in ROW_WISE_TYPES:
            return False
        if isinstance(m, _BatchNorm) and (not m.track_running_stats or m.running_mean is None):
            return False
    return True


def _cat_outputs(parts: list):
    """Concatenate per-sub-batch outputs along rows: tensors, dicts and tuples/lists of them."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, dict):
        return {k: _cat_outputs([p[k] for p in parts]) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_cat_outputs([p[i] for p in parts]) for i in range(len(first)))
    raise TypeError(f"cannot concatenate network outputs of type {type(first).__name__}")


def _trace_kwargs(model: nn.Module, call_kwargs: dict) -> dict | None:
    """Concrete values for every argument of ``model.forward`` after the input, or None if one has none."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.name in call_kwargs:
            concrete[p.name] = call_kwargs[p.name]
        elif p.default is not p.empty:
            concrete[p.name] = p.default
        else:
            return None
    return concrete


def _conv_bn_pairs(model: nn.Module, call_kwargs: dict) -> list[tuple[str, str]]:
    """``(conv name, batchnorm name)`` pairs of ``model`` (in eval mode) that can be folded.

    Read from the ``torch.fx`` graph of ``model(x, **call_kwargs)``: the
    BatchNorm's only input is the convolution's output, which has no other
    user, and neither module is called twice.  ``[]`` when the network cannot
    be traced (data-dependent control flow, unsupported calls).
    """
    concrete = _trace_kwargs(model, call_kwargs)
    if concrete is None:
        return []
    try:
        graph = torch.fx.Tracer().trace(model, concrete_args=concrete)
    except Exception:  # noqa: BLE001 (any tracing failure only means: nothing is folded)
        return []
    modules = dict(model.named_modules())
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), _BatchNorm):
            continue
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], torch.fx.Node):
            continue
        src = node.args[0]
        if src.op != "call_module" or len(src.users) != 1:
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if not isinstance(conv, _ConvNd) or conv.transposed:
            continue
        if calls[src.target] != 1 or calls[node.target] != 1:
            continue
        if not bn.track_running_stats or bn.running_mean is None or bn.running_var is None:
            continue  # such a BatchNorm normalises with batch statistics even in eval mode
        if bn.num_features != conv.out_channels:
            continue
        pairs.append((src.target, node.target))
    return pairs


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, module)


def fold_batchnorm(model: nn.Module, call_kwargs: dict | None = None) -> tuple[nn.Module, list[str]]:
    """An eval-mode copy of ``model`` with every BatchNorm that follows a convolution folded into it.

    ``y = bn(conv(x))`` becomes ``y = conv'(x)`` with
    ``conv'.weight = conv.weight * gamma / sqrt(var + eps)`` (per output
    channel) and ``conv'.bias = (conv.bias - mean) * gamma / sqrt(var + eps) + beta``
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the BatchNorm is replaced by
    ``nn.Identity``.  Valid in eval mode only (running statistics), which is
    why the copy is in eval mode.  The pairs come from the ``torch.fx`` graph
    of ``model(x, **call_kwargs)`` (see :func:`_conv_bn_pairs`).

    Args:
        model: the network; it is deep-copied, never modified.
        call_kwargs: keyword arguments of the calls the copy will serve (e.g.
            ``{"simclr": True, "shift": True}``), to trace the same graph.

    Returns:
        ``(copy, folded)``: the copy (eval mode) and the names of the
        convolutions a BatchNorm was folded into (``[]``: nothing to fold or
        the network could not be traced; the copy then computes exactly what
        ``model`` does).
    """
    net = _eval_copy(model)
    pairs = _conv_bn_pairs(net, dict(call_kwargs or {}))
    for conv_name, bn_name in pairs:
        fused = fuse_conv_bn_eval(net.get_submodule(conv_name), net.get_submodule(bn_name))
        _set_submodule(net, conv_name, fused)
        _set_submodule(net, bn_name, nn.Identity())
    return net, [conv for conv, _ in pairs]


def _eval_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode, parameters without gradients.

    A network compiled in place (``nn.Module.compile()``, ``TrainConfig.compile``) holds a compiled bound
    method of itself; ``nn.Module.__getstate__`` drops it, so the copy runs uncompiled and never calls the
    original (tests/test_eval_speed.py checks this); ``compile=True`` compiles the copy itself.
    """
    net = copy.deepcopy(model)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


@dataclass
class InferenceNet:
    """What :func:`prepare_inference` returns: call it as the network, ``net(x, **kwargs)``.

    Attributes:
        net: the module (or compiled module) that runs.
        memory_format: layout every input batch is put in (``torch.channels_last``
            or ``torch.contiguous_format``).
        folded: names of the convolutions a BatchNorm was folded into.
        is_copy: False when ``net`` is the caller's own network (nothing to change).
        compiled: whether ``net`` is ``torch.compile``'d.
        max_rows: rows per forward pass (None: the whole batch at once).
    """

    net: nn.Module
    memory_format: torch.memory_format = torch.contiguous_format
    folded: tuple[str, ...] = ()
    is_copy: bool = False
    compiled: bool = False
    max_rows: int | None = None

    def __call__(self, x: Tensor, **kwargs):
        if self.memory_format is not torch.contiguous_format and x.dim() == 4:
            x = x.contiguous(memory_format=self.memory_format)
        if self.max_rows is None or x.shape[0] <= self.max_rows:
            return self.net(x, **kwargs)
        return _cat_outputs([self.net(part, **kwargs) for part in x.split(self.max_rows)])


def prepare_inference(
    model: nn.Module,
    device,
    *,
    fold_bn: bool = True,
    channels_last: bool = True,
    compile: bool = False,
    cpu_rows: int | None = 32,
    call_kwargs: dict | None = None,
) -> InferenceNet:
    """A network that computes what ``model`` computes in eval mode, faster; ``model`` is untouched.

    Args:
        model: the network (e.g. F), in any mode; never modified.  A
            DistributedDataParallel wrapper (``csigen.distributed.DistributedNet``
            under torchrun) is looked through: its network is copied (each
            process runs its own copy, as ``DistributedNet`` runs its network
            itself when gradients are off).
        device: where it runs (decides whether channels_last is used).
        fold_bn: fold each BatchNorm into the convolution before it (:func:`fold_batchnorm`).
        channels_last: on the CPU and CUDA, convolution weights and inputs in
            channels_last layout (only for networks with 2-D convolutions).
        compile: ``torch.compile`` the copy (Inductor, ``freezing``: weights as
            constants).  Compiles afresh on every call of this function.
        cpu_rows: on the CPU, run row-wise networks (:func:`is_row_wise`) in
            sub-batches of at most this many rows; None: whole batches.
        call_kwargs: keyword arguments the network will be called with (for
            tracing the graph that :func:`fold_batchnorm` reads).

    Returns:
        :class:`InferenceNet`.  When nothing applies (no BatchNorm, no 2-D
        convolution, no ``compile``) it wraps ``model`` itself
        (``is_copy=False``); the caller then puts ``model`` in eval mode as for
        a plain forward pass.
    """
    device = torch.device(device)
    if cpu_rows is not None and cpu_rows < 1:
        raise ValueError(f"cpu_rows must be None or >= 1, got {cpu_rows!r}")
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    modules = list(inner.modules())
    has_bn = fold_bn and any(isinstance(m, _BatchNorm) for m in modules)
    use_cl = (channels_last and device.type in CHANNELS_LAST_DEVICES
              and any(isinstance(m, nn.Conv2d) for m in modules))
    if not (has_bn or use_cl or compile):
        return InferenceNet(model)
    if has_bn:
        net, folded = fold_batchnorm(inner, call_kwargs)
    else:
        net, folded = _eval_copy(inner), []
    fmt = torch.contiguous_format
    if use_cl:
        net = net.to(memory_format=torch.channels_last)  # 4-D weights only
        fmt = torch.channels_last
    rows = cpu_rows if device.type == "cpu" and cpu_rows is not None and is_row_wise(net) else None
    if compile:
        net = torch.compile(net, options={"freezing": True})
    return InferenceNet(net, memory_format=fmt, folded=tuple(folded), is_copy=True, compiled=compile,
                        max_rows=rows)
