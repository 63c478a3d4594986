"""A training step's random draws, moved to the device in one transfer (issue 11).

The trainer draws its randomness (T's parameters, CSI's flips, G's latents h) on seeded CPU
generators, so that a checkpoint's generator states resume a run on any device, and uses it on
the device.  Drawn where it is used, every draw is its own host-to-device copy, and on a GPU each
copy waits behind the kernels already queued: a ``csi`` step makes two (flips, then T), a ``full``
step's GAN block about ten more.

:class:`StepDraws` keeps the numbers and removes the waits.  The first step of each kind (with
or without a GAN block) draws one by one and records what it drew (which generator, what
shape).  On later steps of that kind, the step's first draw makes all of them, in the recorded
order and from the same generators, packs them into one byte buffer, copies it once
(:func:`move_together`), and every draw then takes its slice.  If a step asks for something the
record does not hold (another batch size, another shape), the generators are rewound to the
step's start, the draws already served are replayed, and the step goes on drawing one by one:
the numbers are always those of drawing one by one, bit for bit.

Code that draws goes through :func:`draw`: outside a step, or with ``generator=None`` (torch's
global RNG, which other code shares), it is the plain draw-then-move.  Nothing else may draw
from a planned generator during a planned step; the step checks it on exit.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Callable, Hashable, Iterator, Sequence
from typing import Any

import torch

__all__ = ["StepDraws", "draw", "move_together", "pack", "unpack"]

_ACTIVE: contextvars.ContextVar[StepDraws | None] = contextvars.ContextVar("csigen_step_draws", default=None)
_ALIGN = 16  # bytes: every tensor's slice of the buffer starts aligned, so `.view(dtype)` is valid


def move_together(tensors: Sequence[torch.Tensor], device) -> list[torch.Tensor]:
    """``[t.to(device) for t in tensors]`` in one host-to-device copy; exact for every dtype.

    The tensors' bytes are packed (each padded to 16 bytes) into one ``uint8`` buffer
    (:func:`pack`), copied once and viewed back as each tensor's dtype and shape on ``device``
    (:func:`unpack`).  Tensors already on ``device`` are returned as they are.
    """
    device = torch.device(device)
    moving = [i for i, t in enumerate(tensors) if t.device != device]
    out = list(tensors)
    if not moving:
        return out
    buffer, spans = pack([tensors[i] for i in moving])
    buffer = buffer.to(device, non_blocking=device.type == "cuda")  # non_blocking: host to GPU only
    for i, t in zip(moving, unpack(buffer, [tensors[i] for i in moving], spans)):
        out[i] = t
    return out


def pack(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The tensors' bytes in one ``uint8`` buffer (on their device) and each one's ``(offset, bytes)``."""
    chunks, spans, offset = [], [], 0
    for t in tensors:
        raw = t.detach().contiguous().reshape(-1).view(torch.uint8)
        pad = -raw.numel() % _ALIGN
        chunks.append(raw if pad == 0 else torch.cat([raw, raw.new_zeros(pad)]))
        spans.append((offset, raw.numel()))
        offset += raw.numel() + pad
    return torch.cat(chunks), spans


def unpack(buffer: torch.Tensor, like: Sequence[torch.Tensor], spans: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Inverse of :func:`pack`: views of ``buffer`` with the dtypes and shapes of ``like``."""
    return [buffer[start:start + size].view(t.dtype).reshape(t.shape) for t, (start, size) in zip(like, spans)]


def _tensors(value) -> list[torch.Tensor]:
    if torch.is_tensor(value):
        return [value]
    return [getattr(value, f.name) for f in dataclasses.fields(value)]


def _rebuild(like, tensors: list[torch.Tensor]):
    if torch.is_tensor(like):
        return tensors[0]
    return type(like)(**{f.name: t for f, t in zip(dataclasses.fields(like), tensors)})


def _to(value, device):
    """A draw (a tensor or a dataclass of tensors, e.g. AugmentParams) on ``device``, in one copy."""
    return _rebuild(value, move_together(_tensors(value), device))


def draw(key: Hashable, generator: torch.Generator | None, make: Callable[[torch.Generator | None], Any], device):
    """``make(generator)`` (a tensor or a dataclass of tensors) on ``device``.

    ``key`` describes the draw (its kind and shapes): two draws with equal keys from the same
    generator must consume the same random numbers.  Inside :meth:`StepDraws.step` the value comes
    from the step's one transfer; elsewhere it is drawn and moved here.
    """
    active = _ACTIVE.get()
    if active is None or generator is None:
        return _to(make(generator), device)
    return active._take(key, generator, make, torch.device(device))


@dataclasses.dataclass
class _Entry:
    key: Hashable
    generator: torch.Generator
    make: Callable
    device: torch.device

    def matches(self, key, generator, device) -> bool:
        return self.generator is generator and self.key == key and self.device == device


class StepDraws:
    """Records each kind of step's draws and serves later steps' draws from one transfer.

    Use one per trainer, around each step: ``with draws.step(kind): trainer.train_step()``.
    ``kind`` names what decides the step's draws (the trainer's: whether the step has a GAN block).
    ``transfers`` counts the packed copies made (for tests and benchmarks).
    """

    def __init__(self) -> None:
        self.plans: dict[Hashable, list[_Entry]] = {}
        self.transfers = 0
        self._reset()

    def _reset(self) -> None:
        self._kind: Hashable = None
        self._plan: list[_Entry] | None = None  # the record being served, or None (drawing one by one)
        self._served: list[_Entry] = []  # what this step has drawn so far, in order
        self._values: list[Any] = []  # the plan's values on their devices
        self._start: dict[torch.Generator, torch.Tensor] = {}  # generator states before the pre-draw
        self._end: dict[torch.Generator, torch.Tensor] = {}  # and after it

    @contextlib.contextmanager
    def step(self, kind: Hashable) -> Iterator[StepDraws]:
        """Serve the draws of one step of ``kind``; on exit, keep its record for the next such step."""
        if _ACTIVE.get() is not None:
            raise RuntimeError("StepDraws.step is already active: steps do not nest")
        self._reset()
        self._kind = kind
        self._plan = self.plans.get(kind)
        token = _ACTIVE.set(self)
        ok = False
        try:
            yield self
            ok = True
        finally:
            _ACTIVE.reset(token)
            self._finish(ok)

    def _take(self, key, generator, make, device):
        if self._plan is not None and not self._values:
            self._predraw()
        if self._plan is not None:
            i = len(self._served)
            if i < len(self._plan) and self._plan[i].matches(key, generator, device):
                self._served.append(self._plan[i])
                return self._values[i]
            self._unplan()  # not what was recorded: from here on, one by one
        self._served.append(_Entry(key, generator, make, device))
        return _to(make(generator), device)

    def _predraw(self) -> None:
        gens = {id(e.generator): e.generator for e in self._plan}.values()
        self._start = {g: g.get_state() for g in gens}
        values = [e.make(e.generator) for e in self._plan]
        self._end = {g: g.get_state() for g in gens}
        by_device: dict[torch.device, list[int]] = {}
        for i, e in enumerate(self._plan):
            by_device.setdefault(e.device, []).append(i)
        self._values = list(values)
        for device, rows in by_device.items():
            flat = [t for i in rows for t in _tensors(values[i])]
            if any(t.device != device for t in flat):
                self.transfers += 1
            moved, start = move_together(flat, device), 0
            for i in rows:
                n = len(_tensors(values[i]))
                self._values[i] = _rebuild(values[i], moved[start:start + n])
                start += n

    def _rewind(self) -> None:
        """Put the generators where drawing this step's served draws one by one would have left them."""
        for g, state in self._start.items():
            g.set_state(state)
        for e in self._served:
            e.make(e.generator)

    def _unplan(self) -> None:
        self._rewind()
        self._plan, self._values = None, []

    def _finish(self, ok: bool) -> None:
        if self._plan is not None and self._values:
            for g, state in self._end.items():
                if not torch.equal(g.get_state(), state):
                    raise RuntimeError(
                        "a generator that StepDraws planned for this step was drawn from outside "
                        "csigen.draws.draw during the step: route that draw through draw() or draw it "
                        "before the step")
            if len(self._served) < len(self._plan):  # fewer draws than recorded: undo the extra ones
                self._rewind()
        if ok and (self._plan is None or len(self._served) != len(self._plan)):
            self.plans[self._kind] = list(self._served)
        self._reset()
