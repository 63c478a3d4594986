"""Tests of csigen.augment: CSI's SimCLR transform T and the shift transformations."""

from pathlib import Path

import numpy as np
import pytest
import torch

from csigen.augment import (
    EVAL_CROP_SCALE,
    AugmentParams,
    SimCLRAugment,
    eval_augment,
    grayscale,
    hflip,
    hsv_to_rgb,
    random_hflip,
    resized_crop,
    rgb_to_hsv,
    rotate,
    shift_batch,
)

FIXTURE = Path(__file__).parent / "fixtures" / "csi_augment.npz"
PARAM_KEYS = ("jitter", "contrast_first", "contrast", "hue", "saturation", "brightness", "gray", "whbias")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int, device="cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def images(b=8, size=32, seed=0, device="cpu") -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=gen(seed)).to(device)


def special_images() -> torch.Tensor:
    """Black, white, grey, primaries, tied channels: the edge cases of RGB <-> HSV."""
    colours = torch.tensor(
        [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1],
         [0.8, 0.8, 0.1], [0.1, 0.4, 0.1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0.3, 0.3, 0]]
    )
    x = colours.view(-1, 3, 1, 1).expand(-1, 3, 8, 8).clone()
    x[:, :, :4, :4] = torch.rand(x.shape[0], 3, 4, 4, generator=gen(1))
    return x


# --------------------------------------------------------------------------- #
# Reproducibility and per-sample randomness
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_output(device):
    x = images(device=device)
    aug = SimCLRAugment()
    a = aug(x, generator=gen(3, device))
    b = aug(x, generator=gen(3, device))
    c = aug(x, generator=gen(4, device))
    assert a.shape == x.shape and a.device == x.device and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_global_rng_when_no_generator():
    x = images()
    aug = SimCLRAugment()
    torch.manual_seed(11)
    a = aug(x)
    torch.manual_seed(11)
    assert torch.equal(a, aug(x))


def test_apply_same_params_twice_and_forward_equals_sample_then_apply():
    x = images()
    aug = SimCLRAugment()
    params = aug.sample_params(x.shape[0], gen(5), size=x.shape[-2:])
    assert isinstance(params, AugmentParams) and params.batch_size == len(params) == 8
    assert torch.equal(aug.apply(x, params), aug.apply(x, params))
    assert torch.equal(aug(x, generator=gen(5)), aug.apply(x, params))


def test_each_sample_gets_its_own_params():
    aug = SimCLRAugment()
    params = aug.sample_params(16, gen(0), size=(32, 32))
    for key in ("contrast", "hue", "saturation", "brightness"):
        assert getattr(params, key).unique().numel() == 16, key
    assert params.whbias.unique(dim=0).shape[0] > 8
    # identical images come out different
    x = images(b=1).expand(8, -1, -1, -1).contiguous()
    y = aug(x, generator=gen(1)).flatten(1)
    assert torch.cdist(y, y).add(torch.eye(8)).min() > 1e-3


def test_gate_frequencies_and_factor_ranges():
    aug = SimCLRAugment()
    p = aug.sample_params(4000, gen(2))
    assert abs(p.jitter.float().mean() - 0.8) < 0.03
    assert abs(p.gray.float().mean() - 0.2) < 0.03
    assert abs(p.contrast_first.float().mean() - 0.5) < 0.03
    for key in ("contrast", "saturation", "brightness"):
        v = getattr(p, key)
        assert 0.6 <= v.min() < 0.62 and 1.38 < v.max() <= 1.4, key
    assert -0.1 <= p.hue.min() < -0.098 and 0.098 < p.hue.max() <= 0.1
    # explicit (min, max) ranges and zero strengths
    q = SimCLRAugment(jitter=((0.9, 1.1), 0.0, 2.0, (-0.2, 0.0))).sample_params(500, gen(0))
    assert 0.9 <= q.brightness.min() and q.brightness.max() <= 1.1
    assert torch.all(q.contrast == 1.0)
    assert q.saturation.min() >= 0.0 and q.saturation.max() <= 3.0
    assert -0.2 <= q.hue.min() and q.hue.max() <= 0.0


def test_invalid_settings_raise():
    with pytest.raises(ValueError):
        SimCLRAugment(jitter=(0.4, 0.4, 0.4, 0.6))
    with pytest.raises(ValueError):
        SimCLRAugment(p_gray=1.5)
    with pytest.raises(ValueError):
        SimCLRAugment(crop_scale=(0.5, 0.2))
    with pytest.raises(ValueError):
        SimCLRAugment(hsv_grad="nope")
    aug = SimCLRAugment()
    with pytest.raises(ValueError):
        aug.apply(images(b=4), aug.sample_params(3))


# --------------------------------------------------------------------------- #
# Range, gradients, identities
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("hsv_grad", ["straight_through", "autograd"])
def test_output_stays_in_unit_range(hsv_grad):
    x = torch.cat([special_images(), images(b=4, size=8)])
    for aug in (SimCLRAugment(p_jitter=1.0, jitter=(0.9, 0.9, 0.9, 0.5), hsv_grad=hsv_grad),
                SimCLRAugment(hsv_grad=hsv_grad), eval_augment(hsv_grad=hsv_grad)):
        for seed in range(3):
            y = aug(x, generator=gen(seed))
            assert torch.isfinite(y).all()
            assert y.min() >= 0.0 and y.max() <= 1.0


@pytest.mark.parametrize("hsv_grad", ["straight_through", "autograd"])
def test_gradient_flows_to_input(hsv_grad):
    x = torch.cat([special_images(), images(b=4, size=8)]).requires_grad_(True)
    aug = SimCLRAugment(p_jitter=1.0, p_gray=0.5, hsv_grad=hsv_grad)
    y = aug(x, generator=gen(0))
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()  # every image gets a gradient


def test_hsv_gradient_modes_differ_only_in_backward():
    x = images(b=4, size=16)
    params = SimCLRAugment(p_jitter=1.0).sample_params(4, gen(0), size=(16, 16))
    outs, grads = [], []
    for mode in ("straight_through", "autograd"):
        xi = x.clone().requires_grad_(True)
        y = SimCLRAugment(hsv_grad=mode).apply(xi, params)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(xi.grad)
    assert torch.equal(outs[0], outs[1])
    assert not torch.allclose(grads[0], grads[1])


def test_zero_probabilities_are_identity():
    x = images()
    aug = SimCLRAugment(p_jitter=0.0, p_gray=0.0)
    params = aug.sample_params(8, gen(0), size=(32, 32))
    assert not params.jitter.any() and not params.gray.any()
    assert torch.equal(aug.apply_color_jitter(x, params), x)
    assert torch.equal(aug.apply_grayscale(x, params), x)
    # with a full-image crop T is the identity (up to grid_sample rounding)
    ident = SimCLRAugment(crop_scale=(1.0, 1.0), ratio=(1.0, 1.0), p_jitter=0.0, p_gray=0.0)
    p = ident.sample_params(8, gen(0), size=(32, 32))
    assert torch.equal(p.whbias, torch.tensor([[1.0, 1.0, 0.0, 0.0]]).expand(8, 4))
    torch.testing.assert_close(ident(x, generator=gen(0)), x, atol=1e-6, rtol=0)


def test_full_gates_apply_everywhere():
    x = images()
    aug = SimCLRAugment(p_jitter=1.0, p_gray=1.0)
    params = aug.sample_params(8, gen(0), size=(32, 32))
    assert params.jitter.all() and params.gray.all()
    y = aug.apply_grayscale(aug.apply_color_jitter(x, params), params)
    assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 1], y[:, 2])


def test_grayscale_weights():
    x = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]).view(3, 3, 1, 1)
    torch.testing.assert_close(grayscale(x)[:, 0].flatten(), torch.tensor([0.299, 0.587, 0.114]))


def test_hsv_definition():
    rgb = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 0], [0.5, 0.5, 0.5]])
    hsv = rgb_to_hsv(rgb.view(-1, 3, 1, 1)).view(-1, 3)
    expected = torch.tensor([[0, 1, 1], [1 / 3, 1, 1], [2 / 3, 1, 1], [1 / 6, 1, 1], [0, 0, 0], [0, 0, 0.5]])
    torch.testing.assert_close(hsv, expected)
    # exact round trip where the atan2 hue equals the hexagonal hue (multiples of 30 degrees)
    torch.testing.assert_close(hsv_to_rgb(rgb_to_hsv(rgb.view(-1, 3, 1, 1))), rgb.view(-1, 3, 1, 1))


# --------------------------------------------------------------------------- #
# Crops and the evaluation variant
# --------------------------------------------------------------------------- #
def test_crop_windows_fit_and_follow_csi_lattice():
    aug = SimCLRAugment()
    p = aug.sample_params(2000, gen(0), size=(32, 32)).whbias
    w, h, bx, by = p.unbind(1)
    assert (w > 0).all() and (w <= 1).all() and (h > 0).all() and (h <= 1).all()
    assert (bx.abs() <= 1 - w + 1e-6).all() and (by.abs() <= 1 - h + 1e-6).all()
    for v in (w, h, bx, by):  # whole pixels, half-pixel offsets (multiples of 1/32)
        torch.testing.assert_close(v * 32, (v * 32).round(), atol=1e-4, rtol=0)
    area = w * h
    assert area.min() < 0.1 and area.max() > 0.95
    ratio = w / h
    assert ratio.min() >= 0.75 * 0.9 and ratio.max() <= 4 / 3 * 1.1


def test_eval_variant_fixes_crop_scale():
    aug = eval_augment()
    assert isinstance(aug, SimCLRAugment)
    assert aug.crop_scale == (EVAL_CROP_SCALE, EVAL_CROP_SCALE) == (0.54, 0.54)
    assert SimCLRAugment.eval_augment().crop_scale == (0.54, 0.54)
    assert (aug.p_jitter, aug.p_gray) == (0.8, 0.2)
    # continuous crops: area exactly 0.54, aspect ratio still random
    p = aug.sample_params(500, gen(0)).whbias
    torch.testing.assert_close(p[:, 0] * p[:, 1], torch.full((500,), 0.54), atol=1e-5, rtol=0)
    assert (p[:, 0] / p[:, 1]).std() > 0.05
    # pixel-rounded crops at 32 x 32 (as CSI): area 0.54 up to rounding
    q = aug.sample_params(500, gen(0), size=(32, 32)).whbias
    assert ((q[:, 0] * q[:, 1] - 0.54).abs() < 0.035).all()


def test_resized_crop_of_half_precision_images_samples_where_float32_does():
    # the grid was built in the input's dtype: in bf16, coordinates at 224x224 were off by up to 0.875 pixel
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 224, 224, generator=g)
    whbias = torch.tensor([[0.5, 0.7, 0.1, -0.2], [0.9, 0.3, -0.05, 0.4]])
    want = resized_crop(x, whbias)
    for dtype in (torch.bfloat16, torch.float16):
        got = resized_crop(x.to(dtype), whbias)
        assert got.dtype == dtype
        # the input's own rounding only (bf16: 2^-8 relative), not samples taken at other places
        torch.testing.assert_close(got.float(), want, atol=0.02, rtol=0)


def test_resized_crop_matches_affine_grid():
    x = images(b=4, size=16)
    whbias = torch.tensor([[0.5, 0.75, 0.25, -0.125], [1, 1, 0, 0], [0.3, 0.3, -0.6, 0.6], [0.8, 0.6, 0, 0.1]])
    theta = torch.zeros(4, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = whbias.unbind(1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    ref = torch.nn.functional.grid_sample(x, grid, padding_mode="reflection", align_corners=False)
    torch.testing.assert_close(resized_crop(x, whbias), ref, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- #
# Parity with CSI's own layers (fixture made by tests/fixtures/make_augment_fixture.py)
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def csi():
    return np.load(FIXTURE)


def _params(data, call) -> AugmentParams:
    return AugmentParams(**{k: torch.from_numpy(data[f"{call}/{k}"]) for k in PARAM_KEYS})


@pytest.mark.parametrize("call", ["train_cf", "train_hf", "eval"])
def test_parity_with_csi_layers(csi, call):
    x = torch.from_numpy(csi["input_u8"]).float() / 255
    params = _params(csi, call)
    assert params.contrast_first.all() == (call != "train_hf")
    aug = eval_augment() if call == "eval" else SimCLRAugment()
    after_jitter = aug.apply_color_jitter(x, params)
    after_gray = aug.apply_grayscale(after_jitter, params)
    out = aug.apply_crop(after_gray, params)
    if call != "eval":
        torch.testing.assert_close(after_jitter, torch.from_numpy(csi[f"{call}/after_jitter"]), atol=1e-5, rtol=0)
        torch.testing.assert_close(after_gray, torch.from_numpy(csi[f"{call}/after_gray"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, torch.from_numpy(csi[f"{call}/out"]), atol=1e-5, rtol=0)
    torch.testing.assert_close(aug.apply(x, params), out, atol=0, rtol=0)


def test_gradient_parity_with_csi(csi):
    """CSI back-propagates its HSV step as the identity; so does the default hsv_grad."""
    x = (torch.from_numpy(csi["input_u8"]).float() / 255).requires_grad_(True)
    out = SimCLRAugment().apply(x, _params(csi, "train_cf"))
    (out * torch.linspace(-1, 1, x.numel()).view_as(x)).sum().backward()
    torch.testing.assert_close(x.grad, torch.from_numpy(csi["train_cf/grad"]), atol=1e-5, rtol=0)


def test_fixture_is_small():
    assert FIXTURE.stat().st_size < 300 * 1024


# --------------------------------------------------------------------------- #
# Parameters container
# --------------------------------------------------------------------------- #
def test_params_container():
    aug = SimCLRAugment()
    p = aug.sample_params(6, gen(0), size=(16, 16))
    sub = p[torch.tensor([0, 2])]
    assert sub.batch_size == 2 and torch.equal(sub.whbias, p.whbias[[0, 2]])
    assert p[1].batch_size == 1 and torch.equal(p[1].contrast, p.contrast[1:2])
    both = AugmentParams.cat([p[:3], p[3:]])
    assert all(torch.equal(getattr(both, k), getattr(p, k)) for k in PARAM_KEYS)
    assert p.to("cpu") is p
    x = images(b=6, size=16)
    torch.testing.assert_close(aug.apply(x[:3], p[:3]), aug.apply(x, p)[:3])


# --------------------------------------------------------------------------- #
# Shifts
# --------------------------------------------------------------------------- #
def test_rotations_compose_to_identity():
    x = images(b=2, size=8)
    y = x
    for _ in range(4):
        y = rotate(y, 1)
    assert torch.equal(y, x)
    for k in range(5):
        assert torch.equal(rotate(rotate(x, k), 4 - k), x)
    assert torch.equal(rotate(x, 0), x) and torch.equal(rotate(x, 5), rotate(x, 1))
    assert torch.equal(rotate(x, 1), torch.rot90(x, 1, (2, 3)))
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    assert rotate(a, 1).flatten().tolist() == [2.0, 4.0, 1.0, 3.0]  # counter-clockwise


def test_shift_batch_layout_and_labels():
    x = images(b=3, size=8)
    shifted, labels = shift_batch(x)
    assert shifted.shape == (12, 3, 8, 8)
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for k in range(4):
        for i in range(3):
            assert torch.equal(shifted[k * 3 + i], rotate(x[i : i + 1], k)[0])
    two, lab2 = shift_batch(x, num_shifts=2)
    assert two.shape[0] == 6 and lab2.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError):
        shift_batch(x, num_shifts=5)


def test_flips():
    x = images(b=16, size=8)
    assert torch.equal(hflip(hflip(x)), x)
    assert torch.equal(hflip(x)[..., 0], x[..., -1])
    assert torch.equal(random_hflip(x, gen(0), p=0.0), x)
    assert torch.equal(random_hflip(x, gen(0), p=1.0), hflip(x))
    y = random_hflip(x, gen(0))
    assert torch.equal(y, random_hflip(x, gen(0)))
    flipped = torch.tensor([torch.equal(y[i], hflip(x)[i]) for i in range(16)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(16)])
    assert (flipped | kept).all() and flipped.any() and kept.any()


@pytest.mark.parametrize("device", DEVICES)
def test_device_agnostic(device):
    x = images(b=4, size=16, device=device).requires_grad_(True)
    aug = SimCLRAugment()
    y = aug(random_hflip(x, generator=gen(0, device)), generator=gen(0, device))
    assert y.device.type == device
    y.sum().backward()
    assert x.grad.device.type == device and torch.isfinite(x.grad).all()
    shifted, labels = shift_batch(x)
    assert shifted.device.type == labels.device.type == device
    # a CPU generator gives the same parameters whatever the images' device
    p_cpu = aug.sample_params(4, gen(1), device=device, size=(16, 16))
    assert p_cpu.whbias.device.type == device
    torch.testing.assert_close(p_cpu.whbias.cpu(), aug.sample_params(4, gen(1), size=(16, 16)).whbias)


# --------------------------------------------------------------------------- #
# Gaussian blur (the paper's text's T; off in CSI's code)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("size, kernel", [(32, 3), (64, 7), (224, 23)])
def test_gaussian_blur_matches_torchvision_per_image(size, kernel):
    """Each image blurred with its own sigma equals torchvision's gaussian_blur of that image alone."""
    from torchvision.transforms.v2.functional import gaussian_blur as tv_blur

    from csigen.augment import blur_kernel_size, gaussian_blur

    assert blur_kernel_size(size) == kernel  # SimCLR's 10% of the side, made odd
    x = images(b=4, size=size, seed=3)
    sigma = torch.tensor([0.1, 0.7, 1.3, 2.0])
    out = gaussian_blur(x, sigma)
    for i in range(4):
        ref = tv_blur(x[i], [kernel, kernel], [float(sigma[i])] * 2)
        torch.testing.assert_close(out[i], ref, atol=2e-6, rtol=0)
    assert not torch.allclose(out[2], x[2], atol=1e-2)  # a real blur, not the identity
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(x, sigma, kernel_size=4)


def test_blur_off_by_default_keeps_csis_stream_and_on_adds_its_draws_after():
    """p_blur=0 (CSI's T): no blur and the eight draws of before; p_blur>0 draws gate and sigma after them."""
    # the stream of T before the blur existed (csigen at commit fb31b47~1, same calls): draws, the generator
    # after them, and one output
    g = gen(0)
    p = SimCLRAugment().sample_params(4, g, size=(32, 32))
    np.testing.assert_allclose(p.contrast.numpy(), [0.964502, 1.105845, 0.879115, 0.921374], atol=1e-6)
    np.testing.assert_allclose(p.whbias[:, 0].numpy(), [0.78125, 0.5625, 0.625, 0.75])
    assert p.jitter.tolist() == [True] * 4 and p.gray.tolist() == [False, False, False, True]
    assert float(torch.rand(1, generator=g)) == pytest.approx(0.20966923236846924, abs=1e-12)
    y = SimCLRAugment()(torch.rand(2, 3, 32, 32, generator=gen(1)), gen(2))
    assert float(y.sum()) == pytest.approx(3478.1252, abs=2e-3)
    assert float(y[0, 0, 0, 0]) == pytest.approx(0.732207, abs=1e-6)
    off, on = SimCLRAugment(), SimCLRAugment(p_blur=0.5)
    a = off.sample_params(512, gen(7), size=(32, 32))
    b = on.sample_params(512, gen(7), size=(32, 32))
    for k in PARAM_KEYS:
        assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert torch.equal(a.blur_sigma, torch.zeros(512))
    blurred = b.blur_sigma > 0
    assert 0.4 < blurred.float().mean() < 0.6
    assert b.blur_sigma[blurred].min() >= 0.1 and b.blur_sigma.max() <= 2.0
    assert "p_blur" not in repr(off) and "p_blur=0.5" in repr(on)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="p_blur"):
            SimCLRAugment(p_blur=bad)
    with pytest.raises(ValueError, match="blur_sigma"):
        SimCLRAugment(p_blur=0.5, blur_sigma=(0.0, 1.0))


def test_blur_is_the_last_step_on_the_gated_samples_and_passes_gradients():
    from csigen.augment import gaussian_blur

    t = SimCLRAugment(p_blur=0.5)
    x = images(b=64, seed=4).requires_grad_(True)
    params = t.sample_params(64, gen(5), size=(32, 32))
    out = t.apply(x, params)
    unblurred = SimCLRAugment().apply(x, params)  # the same draw without step 4
    on = params.blur_sigma > 0
    torch.testing.assert_close(out[~on], unblurred[~on])
    torch.testing.assert_close(out[on], gaussian_blur(unblurred[on], params.blur_sigma[on]))
    # a T without blur ignores the blur of parameters drawn by one with it
    torch.testing.assert_close(SimCLRAugment().apply(x, params), unblurred)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_gaussian_blur_gradients_precision_and_size_limits():
    from csigen.augment import gaussian_blur

    x = torch.rand(2, 3, 12, 12, dtype=torch.float64, generator=gen(0), requires_grad=True)
    sigma = torch.tensor([0.5, 1.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, sigma, kernel_size=5), (x,))
    # half precision and autocast: computed in float32 (weights that sum to 1), returned in the input's dtype
    y = images(b=4, seed=6)
    s = torch.tensor([0.3, 0.9, 1.4, 2.0])
    ref = gaussian_blur(y, s)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(gaussian_blur(y, s), ref, atol=0, rtol=0)
    half = gaussian_blur(y.bfloat16(), s)
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), gaussian_blur(y.bfloat16().float(), s).bfloat16().float())
    torch.testing.assert_close(gaussian_blur(y.to(memory_format=torch.channels_last), s), ref)
    # below 20 pixels SimCLR's kernel is 1 pixel: no blur; a kernel too large for the image is refused
    small = torch.rand(2, 3, 16, 16, generator=gen(1))
    assert torch.equal(gaussian_blur(small, s[:2]), small)
    with pytest.raises(ValueError, match="too large for 16x16"):
        gaussian_blur(small, s[:2], kernel_size=33)


def test_augment_params_without_blur_sigma_get_zeros_and_keep_them_through_index_cat_and_to():
    p = SimCLRAugment().sample_params(6, gen(0))
    legacy = AugmentParams(**{k: getattr(p, k) for k in PARAM_KEYS})
    assert torch.equal(legacy.blur_sigma, torch.zeros(6))
    q = SimCLRAugment(p_blur=1.0).sample_params(6, gen(0))
    both = AugmentParams.cat([legacy, q])
    assert torch.equal(both.blur_sigma[6:], q.blur_sigma) and torch.equal(both[[7, 8]].blur_sigma, q.blur_sigma[1:3])
    assert torch.equal(q.to("cpu").blur_sigma, q.blur_sigma)
