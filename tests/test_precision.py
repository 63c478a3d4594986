"""The GPU code paths, run on the CPU: generators vs devices, fp16 loss scaling, bf16, losses in float32.

No GPU is needed (issue 9, items 1-4):

* random draws: every seeded draw is made on its generator's device and then
  moved; a trainer on a device other than the CPU generators' (torch's
  ``meta`` device, which computes shapes only) runs a GAN block;
* ``amp="fp16"``: autocast + one GradScaler per update site, each updated once
  per step; inf/NaN gradients skip the step, a non-finite loss still stops;
* ``amp="bf16"`` and ``"fp16"``: every variant trains, checkpoints and resumes
  exactly (loss scalers included);
* the losses keep their logits and reductions in float32 under autocast.

fp16 convolutions on a CPU run through a slow reference kernel (ResNet-18 on
smoke-sized batches: about 1 s per image, ~50x float32), so the trainer tests
build F as :class:`TinyF` (ResNet-18's interface on two small convolutions)
and G, D, E at 8 channels; the precision code under test is the trainer's own.
"""

import math

import pandas as pd
import pytest
import torch

from csigen import losses as L
from csigen import models, train
from csigen.config import ConfigError, make_config
from csigen.data import load_task
from csigen.train import NonFiniteLossError, Trainer, resolve_precision

AMPS = ("fp16", "bf16")
VARIANTS = ("csi", "csi+g", "full")
GAN_SITES = {"csi": [], "csi+g": ["d", "g_adv", "csi_s", "joint"],
             "full": ["d", "g_adv", "csi_s", "ld", "e_adv", "rec", "lrec", "joint"]}


def TinyF(num_shifts=4, simclr_dim=128):  # noqa: N802 - used as a class
    return models.SmallF(num_shifts=num_shifts, simclr_dim=simclr_dim)
class SmallTrainer(Trainer):
    """The trainer with :class:`TinyF` as F (G, D, E, D' as configured)."""

    def _build_networks(self):
        nets = super()._build_networks()
        nets.F = TinyF(num_shifts=self.config.num_shifts)
        return nets


def small(variant, amp, **kw):
    base = dict(dataset="shapes", inlier="circle", variant=variant, amp=amp, device="cpu", epochs=10,
                max_steps=4, batch_size=4, gan_every=2, max_train=16, max_test=32, eval_samples=1,
                g_channels=8, d_channels=8, e_channels=8, z_dim=16, checkpoint_every_steps=None)
    base.update(kw)
    return make_config("smoke", **base)


@pytest.fixture(scope="module")
def task():
    return load_task("shapes", "circle", max_train=16, max_test=32)


def weights(trainer):
    return {f"{n}.{k}": v.clone() for n, net in trainer.nets.items() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- #
# Item 1: CPU generators, other devices
# --------------------------------------------------------------------------- #
_TORCH_DRAWS = ("rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson")
_TENSOR_DRAWS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_", "cauchy_",
                 "log_normal_")


@pytest.fixture
def draws(monkeypatch):
    """Every torch random draw made with a generator must come out on the generator's device.

    PyTorch refuses a CPU generator for a CUDA tensor; on the CPU (and on
    ``meta``) it does not, so this check stands in for the GPU's refusal.
    Returns the list of ``(function, generator device, output device)`` seen.
    """
    seen = []

    def check(name, generator, out):
        seen.append((name, None if generator is None else generator.device, out.device))
        if generator is not None:
            assert out.device == generator.device, (
                f"{name} made a {out.device} tensor from a {generator.device} generator: a CUDA run "
                "fails there ('Expected a 'cuda' device type for generator')")

    for name in _TORCH_DRAWS:
        real = getattr(torch, name)

        def wrapped(*args, _real=real, _name=f"torch.{name}", **kwargs):
            out = _real(*args, **kwargs)
            check(_name, kwargs.get("generator"), out)
            return out

        monkeypatch.setattr(torch, name, wrapped)
    for name in _TENSOR_DRAWS:
        real = getattr(torch.Tensor, name)

        def wrapped_method(self, *args, _real=real, _name=f"Tensor.{name}", **kwargs):
            out = _real(self, *args, **kwargs)
            check(_name, kwargs.get("generator"), out)
            return out

        monkeypatch.setattr(torch.Tensor, name, wrapped_method)
    return seen


def test_sample_latent_draws_on_the_generators_device_then_moves(draws):
    G = models.Generator(z_dim=16, channels=8)
    h = G.sample_latent(5, generator=torch.Generator().manual_seed(3), device="meta")
    assert h.device.type == "meta" and h.shape == (5, 16)
    assert ("torch.randn", torch.device("cpu"), torch.device("cpu")) in draws
    # the same seed gives the same latents whatever the target device
    cpu = G.sample_latent(5, generator=torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(cpu, torch.randn(5, 16, generator=torch.Generator().manual_seed(3)))
    assert G.sample_latent(2).device == next(G.parameters()).device  # default: the model's device


def test_augmentations_draw_on_the_cpu_for_images_on_another_device(draws):
    from csigen.augment import SimCLRAugment, random_hflip

    x = torch.empty(6, 3, 8, 8, device="meta")
    g = torch.Generator().manual_seed(0)
    assert random_hflip(x, generator=g).device.type == "meta"
    assert SimCLRAugment()(x, generator=g).device.type == "meta"
    assert draws and all(gen == torch.device("cpu") for _, gen, _ in draws)


@pytest.fixture
def meta_floats(monkeypatch):
    """``float(t)`` of a meta tensor (shapes only, no values) reads 0.0, so a whole step runs on ``meta``."""
    real = torch.Tensor.__float__
    monkeypatch.setattr(torch.Tensor, "__float__", lambda t: 0.0 if t.is_meta else real(t))


@pytest.mark.parametrize("variant", ["csi+g", "full"])
def test_gan_block_on_another_device_than_the_seeded_generators(task, draws, meta_floats, variant):
    """A trainer whose networks live on a non-CPU device (meta) runs two steps with a GAN block
    while its seeded generators stay on the CPU (as on a GPU, where a CPU generator cannot draw
    CUDA tensors). The updates themselves (backward, step) and the step's read of its losses are
    skipped: meta has no values."""
    trainer = Trainer(small(variant, "off", device="meta"), None, task=task, progress=False)
    assert trainer.z_gen.device.type == "cpu" and trainer.aug_gen.device.type == "cpu"
    updates = []
    trainer._update = lambda name, loss, opt_names: updates.append((name, loss.device.type)) or 0.0
    trainer.readout.read = lambda record, step: record
    for _ in range(2):
        trainer.train_step()
    assert [name for name, _ in updates] == ["csi", "csi"] + GAN_SITES[variant]
    assert all(device == "meta" for _, device in updates)
    assert ("torch.randn", torch.device("cpu"), torch.device("cpu")) in draws  # h ~ N(0, I), drawn once
    assert sum(name == "torch.randn" for name, _, _ in draws) == 1


def test_a_seeded_draw_on_the_wrong_device_is_caught(draws):
    """The check above fails for the pre-fix call torch.randn(..., generator=<cpu>, device=<other>)."""
    with pytest.raises(AssertionError, match="from a cpu generator"):
        torch.randn(2, 3, generator=torch.Generator(), device="meta")


# --------------------------------------------------------------------------- #
# Items 2-3: precision choice, fp16 loss scaling, bf16
# --------------------------------------------------------------------------- #
def test_amp_choices_are_validated_and_resolved(monkeypatch):
    with pytest.raises(ConfigError, match=r"invalid amp='fp32'.*'auto'.*'bf16'.*'fp16'.*'off'"):
        make_config("smoke", amp="fp32")
    assert make_config("smoke", amp=True).amp == "auto" and make_config("smoke", amp=False).amp == "off"
    assert make_config("smoke").amp == "auto"
    cpu = torch.device("cpu")
    resolved = [resolve_precision(a, cpu) for a in ("auto", "bf16", "fp16", "off")]
    assert resolved == ["off", "bf16", "fp16", "off"]
    with pytest.raises(ConfigError, match="amp="):
        resolve_precision("half", cpu)
    # CUDA: bf16 from compute capability 8.0 (A100 and later), fp16 + loss scaling before (T4: 7.5)
    capability = {"value": (7, 5)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == "fp16"
    with pytest.raises(ConfigError, match=r"Tesla T4 .*no bf16 units: use amp='auto' or 'fp16'"):
        resolve_precision("bf16", cuda)
    capability["value"] = (8, 0)
    assert resolve_precision("auto", cuda) == "bf16" and resolve_precision("bf16", cuda) == "bf16"


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("off", None)])
def test_autocast_follows_the_trainers_device_and_precision(task, amp, dtype):
    trainer = SmallTrainer(small("csi", amp), None, task=task, progress=False)
    assert trainer.amp_dtype == dtype and trainer.precision.mode == amp
    x = torch.rand(4, 3, 32, 32)
    with trainer._autocast():
        assert torch.is_autocast_enabled("cpu") == (dtype is not None)
        out = trainer.nets.F(x, simclr=True)["simclr"]
    assert out.dtype == (dtype or torch.float32)


@pytest.fixture
def scaler_updates(monkeypatch):
    """Counts GradScaler.update() calls per scaler object."""
    counts: dict[int, int] = {}
    real = torch.amp.GradScaler.update

    def update(self, *args, **kwargs):
        counts[id(self)] = counts.get(id(self), 0) + 1
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.amp.GradScaler, "update", update)
    return counts


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp16_updates_each_scaler_once_per_step_after_its_steps(task, scaler_updates, variant):
    trainer = SmallTrainer(small(variant, "fp16"), None, task=task, progress=False)
    trainer.fit(resume=False)  # 4 steps, GAN blocks at steps 2 and 4
    assert trainer.step == 4
    sites = ["csi"] + GAN_SITES[variant]
    assert sorted(trainer.precision.scalers) == sorted(sites)
    runs = {name: 4 if name == "csi" else 2 for name in sites}
    assert {name: scaler_updates[id(s)] for name, s in trainer.precision.scalers.items()} == runs
    history = pd.DataFrame(trainer.history)
    assert history[sites].notna().sum().to_dict() == runs
    values = history[sites].to_numpy().ravel()
    assert all(math.isfinite(v) for v in values if not math.isnan(v))


def _arm_infinite_gradient(trainer, times=1):
    """Make the next ``times`` backward passes through F's shift head give it inf gradients."""
    left = {"n": times}

    def hook(grad):
        if left["n"] > 0:
            left["n"] -= 1
            return torch.full_like(grad, float("inf"))
        return grad

    trainer.nets.F.shift_cls_layer.weight.register_hook(hook)


def test_fp16_inf_gradients_skip_the_step_instead_of_stopping(task):
    trainer = SmallTrainer(small("csi", "fp16"), None, task=task, progress=False)
    trainer.fit(resume=False, stop_after_steps=1)
    scaler = trainer.precision.scalers["csi"]
    scale = scaler.get_scale()
    before = weights(trainer)
    _arm_infinite_gradient(trainer)
    trainer.fit(resume=False, stop_after_steps=1)  # no NonFiniteLossError: fp16 overflow, step skipped
    assert trainer.step == 2 and math.isfinite(trainer.history[-1]["csi"])
    after = weights(trainer)
    assert all(torch.equal(before[k], after[k]) for k in before if ".num_batches_tracked" not in k
               and ".running_" not in k)  # F's parameters did not move
    assert scaler.get_scale() == scale / 2 and trainer.precision.skipped == {"csi": 1}
    trainer.fit(resume=False, stop_after_steps=1)  # the next step is taken
    assert not torch.equal(after["F.shift_cls_layer.weight"], trainer.nets.F.shift_cls_layer.weight)


def test_fp16_gradients_that_stay_infinite_are_divergence(task, monkeypatch):
    monkeypatch.setattr(train, "MIN_LOSS_SCALE", 40000.0)  # the first halving (65536 -> 32768) falls below
    trainer = SmallTrainer(small("csi", "fp16"), None, task=task, progress=False)
    _arm_infinite_gradient(trainer)
    with pytest.raises(NonFiniteLossError, match=r"'csi' is inf/NaN at step 0 even at fp16 loss scale 32768"):
        trainer.train_step()


@pytest.mark.parametrize("amp", AMPS)
def test_nonfinite_loss_still_stops_under_autocast(tmp_path, task, amp):
    trainer = SmallTrainer(small("csi+g", amp), tmp_path, task=task, progress=False)
    trainer.fit(stop_after_steps=1)
    with torch.no_grad():
        for p in trainer.nets.G.parameters():
            p.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss '(d|g_adv|csi_s)' is nan at step 1"):
        trainer.fit(resume=False)


@pytest.mark.parametrize("amp", AMPS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_mixed_precision_run_checkpoints_and_resumes_exactly(tmp_path, task, variant, amp):
    cfg = small(variant, amp, max_steps=5)
    straight = SmallTrainer(cfg, tmp_path / "a", task=task, progress=False)
    if amp == "fp16":
        _arm_infinite_gradient(straight)  # one skipped step, so the scaler of "csi" has a state of its own
    straight.fit()
    first = SmallTrainer(cfg, tmp_path / "b", task=task, progress=False)
    if amp == "fp16":
        _arm_infinite_gradient(first)
    first.fit(stop_after_steps=3)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert saved["precision"]["mode"] == amp
    if amp == "fp16":
        assert sorted(saved["precision"]["scalers"]) == sorted(["csi"] + GAN_SITES[variant])
        assert saved["precision"]["scalers"]["csi"]["scale"] == 32768.0
    resumed = SmallTrainer(cfg, tmp_path / "b", task=task, progress=False).fit(resume=True)
    assert resumed.step == 5
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.precision.state_dict() == resumed.precision.state_dict()
    assert pd.DataFrame(straight.history).drop(columns="seconds").equals(
        pd.DataFrame(resumed.history).drop(columns="seconds"))


def test_a_checkpoint_resumes_in_another_precision(tmp_path, task):
    """An fp16 run (e.g. on a T4) continues in bf16 or float32 (an A100, a CPU) with fresh scalers."""
    SmallTrainer(small("csi+g", "fp16"), tmp_path, task=task, progress=False).fit(stop_after_steps=2)
    other = SmallTrainer(small("csi+g", "bf16"), tmp_path, task=task, progress=False)
    assert other.try_resume() and other.step == 2 and other.precision.scalers == {}
    other.fit(resume=False)
    assert other.step == 4


# --------------------------------------------------------------------------- #
# Item 4: losses in float32 under autocast
# --------------------------------------------------------------------------- #
def _pairs_at_a_rounding_midpoint(n: int = 64) -> torch.Tensor:
    """(2n, 2n) features whose positive logits (cosine / 0.5) sit half a bf16 step from the nearest
    bf16 number and whose negatives are orthogonal: a 16-bit similarity matrix moves the loss by ~4e-3."""
    c = 0.5 * (1 + 64.49 / 128)  # 2c = 1 + 64.49 / 128; bf16 steps by 1/128 in [1, 2)
    f = torch.zeros(2 * n, 2 * n)
    i = torch.arange(n)
    f[i, i] = 1.0
    f[n + i, i] = c
    f[n + i, n + i] = math.sqrt(1 - c * c)
    return f


def _loss_cases():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(32, 128, generator=g)
    logits, labels = torch.randn(64, 4, generator=g) * 3, torch.randint(0, 4, (64,), generator=g)
    d_real, d_fake, d_rec = (torch.randn(16, generator=g) * 4 for _ in range(3))
    h, h_rec = torch.randn(16, 32, generator=g), torch.randn(16, 32, generator=g)
    cases = {
        "nt_xent midpoint": lambda: L.nt_xent(_pairs_at_a_rounding_midpoint(), 0.5),
        "nt_xent random": lambda: L.nt_xent(feats, 0.2),
        "cls_si": lambda: L.cls_si(logits, labels),
        "latent_reconstruction sum": lambda: L.latent_reconstruction_loss(h_rec, h, reduction="sum"),
    }
    for form in L.GAN_FORMS:
        cases[f"discriminator {form}"] = lambda form=form: L.discriminator_loss(d_real, d_fake, d_rec, form)
        cases[f"generator {form}"] = lambda form=form: L.generator_adversarial_loss(d_fake, d_rec, form)
    return cases


@pytest.mark.parametrize("name", list(_loss_cases()))
def test_losses_are_float32_under_bf16_autocast(name):
    compute = _loss_cases()[name]
    reference = compute()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        under = compute()
    assert under.dtype == torch.float32
    assert under.item() == pytest.approx(reference.item(), abs=1e-3)


def test_reconstruction_loss_is_float32_under_autocast():
    from csigen.augment import SimCLRAugment

    torch.manual_seed(0)
    model, T = TinyF(), SimCLRAugment()
    x, x_hat = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = L.reconstruction_loss(model, x, x_hat, T, generator=torch.Generator().manual_seed(1))
    assert all(v.dtype == torch.float32 for v in out.values())


@pytest.mark.parametrize("path", ["amx", "avx512_bf16", "emulated"])
def test_bf16_on_a_cpu_that_emulates_it_warns_that_it_may_be_slow(monkeypatch, path):
    # AMX and AVX512-BF16 both run bf16 faster than float32 (measured, bench/RESULTS.md): no warning there
    import warnings

    from csigen import config as C
    from csigen.train import _Precision

    monkeypatch.setattr(C, "cpu_bf16_path", lambda: path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _Precision("bf16", torch.device("cpu")).mode == "bf16"
        _Precision("off", torch.device("cpu"))
    slow = [w for w in caught if "neither AMX nor AVX512-BF16" in str(w.message)]
    assert len(slow) == (1 if path == "emulated" else 0)
    if slow:
        assert "bench/throughput.py" in str(slow[0].message) and "'cpu-fp32'" in str(slow[0].message)
