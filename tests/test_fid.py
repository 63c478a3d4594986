"""Tests for csigen.fid: the real torch-fidelity code path with offline (random) Inception weights.

The weights come from :func:`make_offline_inception_weights`, so nothing is
downloaded and the numbers are not FIDs. For speed on a 2-core CPU the FID
calls use 8 images per set and the Inception layer "64" (torch-fidelity stops
the forward pass there and the covariance is 64x64, not 2048x2048); every image
is still resized to 299x299 and goes through torch-fidelity's own pipeline.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import urllib.error

import pytest
import torch

from csigen import fid
from csigen.models import Generator

N = 8  # images per set (see the module docstring)
LAYER = "64"
pytestmark = pytest.mark.filterwarnings("ignore:FID from")  # tiny sets: the bias warning is expected


def _images(seed: int, high: int = 256, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, high, (n, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_offline_weights_are_a_random_inception_state_dict(weights):
    # torch-fidelity loads the file strictly (load_state_dict), which the FID tests below exercise
    state = torch.load(weights, weights_only=False)
    assert "Mixed_7c.branch_pool.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    w = state["Conv2d_2b_3x3.conv.weight"]  # Kaiming normal: std sqrt(2 / fan_in)
    assert abs(w.std().item() - math.sqrt(2.0 / w[0].numel())) < 0.1 * math.sqrt(2.0 / w[0].numel())


def test_fid_same_set_is_zero_and_different_sets_positive(weights):
    a, b = _images(0), _images(1, high=128)
    same = fid.fid_between(a, a, weights_path=weights, feature_layer=LAYER)
    different = fid.fid_between(a, b, weights_path=weights, feature_layer=LAYER)
    assert abs(same) < 1e-2
    assert different > 1e-2


def test_fid_of_untrained_generator_is_finite_positive(weights):
    G = Generator(channels=32).train()
    value = fid.fid_of_generator(G, _images(2), num_samples=N, batch_size=N, seed=0, weights_path=weights,
                                 feature_layer=LAYER, bn_samples=32, bn_batch_size=8)
    assert math.isfinite(value) and value > 0
    assert G.training  # mode restored
    assert next(G.parameters()).device.type == "cpu"


def test_env_var_supplies_weights(weights, monkeypatch):
    monkeypatch.setenv(fid.ENV_WEIGHTS, str(weights))
    assert fid._resolve_weights(None) == weights


def test_uint8_adapter_dtype_and_range():
    G = Generator(channels=32).eval()
    out = fid.UInt8Generator(G)(torch.randn(4, G.z_dim))
    assert out.dtype == torch.uint8 and out.shape == (4, 3, 32, 32)
    ref = (G(torch.zeros(1, G.z_dim)).clamp(0, 1) * 255).round().to(torch.uint8)
    assert torch.equal(fid.UInt8Generator(G)(torch.zeros(1, G.z_dim)), ref)
    x = torch.tensor([-0.5, 0.0, 0.6 / 255, 0.5, 1.0, 1.7]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert fid.to_uint8(x)[0, 0, 0].tolist() == [0, 0, 1, 128, 255, 255]
    ds = fid.UInt8ImageDataset(_images(3, n=5))
    assert len(ds) == 5 and ds[0].dtype == torch.uint8 and ds[0].shape == (3, 32, 32)


def test_missing_weights_file_raises_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="pt_inception-2015-12-05.*weights_path"):
        fid.fid_between(_images(0), _images(1), weights_path=tmp_path / "missing.pth")


def test_offline_download_failure_raises_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no cached official weights here

    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_internet)
    with pytest.raises(fid.InceptionWeightsUnavailable, match="download them once with internet"):
        fid.fid_between(_images(0), _images(1))


def test_small_sets_warn_about_bias():
    with pytest.warns(UserWarning, match="biased upwards"):
        fid._check_count("x", 100, "2048")
    with pytest.raises(ValueError, match="at least 2"):
        fid._check_count("x", 1, "2048")


def test_reference_images_choice():
    class Task:
        train_images = _images(0, n=6)
        test_images = _images(1, n=4)
        test_is_inlier = torch.tensor([True, False, True, False])

    assert fid.reference_images(Task) is Task.train_images
    assert torch.equal(fid.reference_images(Task, "test"), Task.test_images[[0, 2]])
    assert fid.reference_images(Task, "cifar10-train") == "cifar10-train"
    with pytest.raises(ValueError):
        fid.reference_images(Task, "val")


# ----------------------------------------------------------------------------
# The protocol (issue 9 item 10): G's mode, stated once, applied to every variant
# ----------------------------------------------------------------------------
def _g(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(z_dim=16, channels=16)


def _perturb_running_stats(G: Generator) -> None:
    """Training-mode passes on latents far from N(0, I), as full's G also sees G(E(x)) in training."""
    with torch.no_grad():
        G.train()
        for _ in range(3):
            G(3.0 * torch.randn(8, G.z_dim) + 2.0)


def test_protocol_is_stated_once_and_used_as_the_defaults():
    p = fid.FID_PROTOCOL
    assert p["name"] in fid.__doc__ and p["bn_mode"] == "prior" and p["reference"] == "train"
    assert fid.DEFAULT_NUM_SAMPLES == p["samples"] == 5000 and p["feature_layer"] == fid.DEFAULT_FEATURE_LAYER
    for func in (fid.generator_for_evaluation, fid.fid_of_generator, fid.fid_of_run, fid.reconstruct):
        defaults = {k: v.default for k, v in inspect.signature(func).parameters.items()}
        for key in ("bn_mode", "bn_samples", "bn_batch_size", "bn_seed"):
            assert defaults[key] == p[key], (func.__name__, key)
    assert inspect.signature(fid.fid_of_run).parameters["samples"].default == p["samples"]
    json.dumps(p)  # recorded in fid.json as is


def test_generator_for_evaluation_depends_on_the_weights_only():
    G1 = _g()
    G2 = copy.deepcopy(G1)
    _perturb_running_stats(G2)  # same weights, other running statistics (the csi+g vs full situation)
    before = copy.deepcopy(G2.state_dict())
    z = torch.randn(6, G1.z_dim)
    a = fid.generator_for_evaluation(G1, bn_samples=64, bn_batch_size=16)
    b = fid.generator_for_evaluation(G2, bn_samples=64, bn_batch_size=16)
    assert not a.training and not any(p.requires_grad for p in a.parameters())
    with torch.no_grad():
        assert torch.allclose(a(z), b(z), atol=1e-6)  # the protocol: identical for both
        ra = fid.generator_for_evaluation(G1, bn_mode="running")(z)
        rb = fid.generator_for_evaluation(G2, bn_mode="running")(z)
    assert (ra - rb).abs().max() > 1e-3  # eval mode with the training averages would differ
    assert G2.training and all(torch.equal(before[k], v) for k, v in G2.state_dict().items())  # G untouched
    # the re-estimated statistics are those of prior samples: the mean of the last BN's input over them
    gen = torch.Generator().manual_seed(fid.FID_PROTOCOL["bn_seed"])
    h = torch.cat([torch.randn(16, G1.z_dim, generator=gen) for _ in range(4)])
    G1.train()
    feats = {}
    hook = G1.bn.register_forward_hook(lambda m, inp, out: feats.setdefault("x", []).append(inp[0]))
    with torch.no_grad():
        for chunk in h.split(16):
            G1(chunk)
    hook.remove()
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in feats["x"]]).mean(0)
    assert torch.allclose(a.bn.running_mean, means, atol=1e-5)


@pytest.mark.parametrize("bn_mode", ["prior", "batch"])
def test_generator_eval_mode_puts_g_itself_in_the_protocol_mode_and_restores_it(bn_mode):
    G = _g(3)
    _perturb_running_stats(G)
    before = copy.deepcopy(G.state_dict())
    z = torch.randn(6, G.z_dim)
    with torch.no_grad():
        expected = fid.generator_for_evaluation(G, bn_mode=bn_mode, bn_samples=64, bn_batch_size=16)(z)
        with fid.generator_eval_mode(G, bn_mode=bn_mode, bn_samples=64, bn_batch_size=16) as inside:
            assert inside is G and not G.training
            got = G(z)
    assert torch.allclose(got, expected, atol=1e-6)
    assert G.training and G.state_dict().keys() == before.keys()
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    G(z)  # training continues with its own statistics
    assert not torch.equal(before["bn.running_mean"], G.bn.running_mean)


def test_batch_mode_uses_each_batchs_statistics():
    G = _g(1)
    _perturb_running_stats(G)
    z = torch.randn(8, G.z_dim)
    with torch.no_grad():
        expected = G.train()(z)
        got = fid.generator_for_evaluation(G, bn_mode="batch")(z)
    assert torch.allclose(got, expected, atol=1e-6)
    with pytest.raises(ValueError, match="bn_mode"):
        fid.generator_for_evaluation(G, bn_mode="train")


def test_reconstructions_use_the_protocol_mode():
    from csigen.models import Encoder

    G, E = _g(2), Encoder(z_dim=16, channels=16)
    _perturb_running_stats(G)
    x = _images(4, n=5)
    got = fid.reconstruct(G, E, x, batch_size=2, bn_samples=64, bn_batch_size=16)
    G_eval = fid.generator_for_evaluation(G, bn_samples=64, bn_batch_size=16)
    with torch.no_grad():
        expected = G_eval(E.eval()(x.float() / 255))
    assert got.shape == (5, 3, 32, 32) and torch.allclose(got, expected, atol=1e-6)
    assert fid._in_mode(G_eval, G_eval.fid_mode) is G_eval  # a prepared copy is used as is
    assert torch.equal(fid.reconstruct(G_eval, E, x, batch_size=2, bn_samples=64, bn_batch_size=16), got)


def test_real_inception_is_recognised_by_torch_fidelitys_hash_tag(weights):
    assert fid.real_inception_hash_prefix() == "6726825d"  # from torch-fidelity's download URL
    assert fid.is_real_inception("6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2")
    sha = fid.sha256_of_file(weights)
    assert sha == hashlib.sha256(weights.read_bytes()).hexdigest() and not fid.is_real_inception(sha)


def test_describe_fid_calls_only_real_inception_values_a_fid():
    record = {"fid": 54.123, "real_inception": True, "not_a_fid": False, "variant": "full", "step": 10,
              "source": "checkpoint.pt", "samples": 5000, "reference_description": "5000 train images",
              "protocol": "csigen-fid-1", "weights_sha256": "6726825d0af5"}
    assert fid.describe_fid(record).startswith("FID 54.12")
    fake = record | {"real_inception": False, "not_a_fid": True, "weights_sha256": "ab" * 32}
    assert fid.describe_fid(fake).startswith("NOT a FID")


# ----------------------------------------------------------------------------
# G snapshots and `csigen fid --run DIR` on smoke runs
# ----------------------------------------------------------------------------
def _snap_config(**kw):
    from csigen.config import make_config

    base = {"dataset": "shapes", "inlier": "circle", "variant": "csi+g", "max_steps": 4, "batch_size": 2,
            "gan_every": 2, "max_train": 8, "max_test": 16, "eval_samples": 1, "checkpoint_every_steps": 2,
            "g_snapshot_every_steps": 2}
    return make_config("smoke", **(base | kw))


@pytest.fixture(scope="module")
def shapes_task():
    from csigen.data import load_task

    return load_task("shapes", "circle", max_train=8, max_test=16)


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory, shapes_task):
    """A csi+g run with G snapshots every 2 steps, stopped after step 2 (checkpoint) and resumed to step 4.

    Before resuming, files of an abandoned timeline are planted (as if killed after step 4 with the last
    checkpoint at step 2). Returns the folder and the bytes of snapshot 2 before the resume.
    """
    from csigen.train import Trainer

    run = tmp_path_factory.mktemp("runs") / "csi+g"
    cfg = _snap_config()
    assert Trainer(cfg, run, task=shapes_task, progress=False).fit(stop_after_steps=2).step == 2
    assert list(fid.list_g_snapshots(run)) == [2]
    before = fid.g_snapshot_path(run, 2).read_bytes()
    for step in (4, 8):
        torch.save({"bn.weight": torch.zeros(1)}, fid.g_snapshot_path(run, step))
    assert Trainer(cfg, run, task=shapes_task, progress=False).fit(resume=True).step == 4
    return run, before


def test_g_snapshots_at_the_right_steps_hold_g_only_and_survive_resume(snapshot_run):
    run, snapshot2_before_resume = snapshot_run
    assert list(fid.list_g_snapshots(run)) == [2, 4]  # stale step 8 removed, step 4 rewritten
    assert fid.g_snapshot_path(run, 2).read_bytes() == snapshot2_before_resume  # kept across the resume
    final_g = torch.load(run / "checkpoint.pt", weights_only=True)["nets"]["G"]
    snap2, snap4 = (fid.load_g_snapshot(fid.g_snapshot_path(run, s)) for s in (2, 4))
    assert snap2.keys() == final_g.keys() == snap4.keys()  # G's state_dict and nothing else
    assert all(torch.equal(snap4[k], final_g[k]) for k in final_g)  # written after the resume, at step 4
    assert any(not torch.equal(snap2[k], final_g[k]) for k in final_g)


def test_no_snapshots_by_default_nor_for_csi(tmp_path, shapes_task):
    from csigen.config import ConfigError
    from csigen.train import Trainer

    Trainer(_snap_config(g_snapshot_every_steps=None), tmp_path / "g", task=shapes_task, progress=False).fit(
        stop_after_steps=1)
    Trainer(_snap_config(variant="csi", g_snapshot_every_steps=1), tmp_path / "c", task=shapes_task,
            progress=False).fit(stop_after_steps=1)
    assert not (tmp_path / "g" / fid.G_SNAPSHOT_DIR).exists() and not (tmp_path / "c" / fid.G_SNAPSHOT_DIR).exists()
    with pytest.raises(ConfigError, match="g_snapshot_every_steps"):
        _snap_config(g_snapshot_every_steps=0)


FID_ARGS = ["--samples", "16", "--max-reference", "16", "--feature-layer", LAYER, "--bn-samples", "32",
            "--batch-size", "16", "--device", "cpu"]


def test_fid_command_on_a_smoke_run_stores_a_value_marked_not_a_fid(snapshot_run, weights, capsys, monkeypatch):
    from csigen import cli
    from csigen.config import TrainConfig

    run = snapshot_run[0]
    assert cli.main(["fid", "--run", str(run), "--weights", str(weights), *FID_ARGS]) == 0
    out = capsys.readouterr().out
    assert "NOT a FID" in out.splitlines()[0]
    record = json.loads((run / fid.FID_FILE).read_text())
    assert json.loads(out.splitlines()[-1]) == record
    assert record["not_a_fid"] is True and record["real_inception"] is False
    assert record["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["samples"] == 16 and record["reference"] == "train" and record["reference_size"] == 16
    assert record["step"] == 4 and record["source"] == "checkpoint.pt" and record["variant"] == "csi+g"
    assert record["protocol"].startswith(fid.FID_PROTOCOL["name"] + " (modified:")  # bn_samples, layer changed
    assert record["protocol_details"]["bn_samples"] == 32 and record["protocol_details"]["feature_layer"] == LAYER
    assert record["schema_version"] == fid.FID_SCHEMA_VERSION
    assert math.isfinite(record["fid"]) and record["fid"] > 0
    assert [r for r in fid.load_fid_records(run) if r["source"] == "checkpoint.pt"] == [record]

    # the stored value is the FID (so to speak) of the checkpoint's G in the protocol's mode
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    config = TrainConfig.from_dict(state["config"])
    G = Generator(z_dim=config.z_dim, channels=config.g_channels)
    G.load_state_dict(state["nets"]["G"])
    ref = fid._reference_for_run(config, "train", 16, 0)["images"]
    direct = fid.fid_of_generator(G, ref, num_samples=16, batch_size=16, device="cpu", weights_path=weights,
                                  feature_layer=LAYER, bn_samples=32)
    assert direct == pytest.approx(record["fid"], rel=1e-6, abs=1e-6)

    # asked again: answered from the records, nothing recomputed
    monkeypatch.setattr(fid, "_calculate_fid", lambda *a, **k: pytest.fail("recomputed a stored FID"))
    assert cli.main(["fid", "--run", str(run), "--weights", str(weights), *FID_ARGS]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == record


def test_fid_over_training_measures_every_snapshot_once(snapshot_run, weights, monkeypatch):
    run = snapshot_run[0]
    kwargs = {"samples": 16, "max_reference": 16, "weights_path": weights, "feature_layer": LAYER,
              "bn_samples": 32, "batch_size": 16, "device": "cpu"}
    table = fid.fid_over_training(run, **kwargs)
    assert table["step"].tolist() == [2, 4] and table["not_a_fid"].all()  # final G (step 4) is snapshot 4
    assert table["source"].tolist() == ["g_snapshots/step_000002.pt", "g_snapshots/step_000004.pt"]
    assert table["fid"].map(math.isfinite).all()
    assert sorted(r["step"] for r in fid.load_fid_records(run) if r["source"].startswith("g_snapshots/")) == [2, 4]
    monkeypatch.setattr(fid, "_calculate_fid", lambda *a, **k: pytest.fail("recomputed a stored FID"))
    monkeypatch.setattr(fid, "_reference_for_run", lambda *a, **k: pytest.fail("loaded the reference for nothing"))
    assert fid.fid_over_training(run, **kwargs).equals(table)


def test_fid_refuses_a_csi_run_and_real_weights_with_a_test_layer(tmp_path, weights, capsys, monkeypatch):
    from csigen import cli
    from csigen.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "csi" / "checkpoint.pt",
                    {"config": _snap_config(variant="csi").to_dict(), "step": 4, "total_steps": 4, "nets": {}})
    assert cli.main(["fid", "--run", str(tmp_path / "csi"), "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert "variant 'csi'" in err and "'csi+g' or 'full'" in err
    assert not (tmp_path / "csi" / fid.FID_FILE).exists()
    assert cli.main(["fid", "--run", str(tmp_path / "missing"), "--weights", str(weights)]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    # were these the real Inception weights, a test layer's value would pass for a FID: refused
    monkeypatch.setattr(fid, "real_inception_hash_prefix", lambda: fid.sha256_of_file(weights)[:8])
    save_checkpoint(tmp_path / "g" / "checkpoint.pt",
                    {"config": _snap_config().to_dict(), "step": 0, "total_steps": 4,
                     "nets": {"G": Generator(z_dim=128, channels=32).state_dict()}})
    with pytest.raises(ValueError, match="not a FID"):
        fid.fid_of_run(tmp_path / "g", weights_path=weights, feature_layer=LAYER)


def test_torch_fidelity_runs_on_the_requested_gpu_index(monkeypatch, tmp_path):
    """torch-fidelity moves its models with a bare ``.cuda()`` (the current device): the computation is
    wrapped in ``torch.cuda.device(device)`` so ``--device cuda:1`` is not computed on cuda:0.
    Checked without a GPU: the context manager and torch-fidelity are replaced by recorders."""
    import contextlib

    import torch_fidelity

    entered, seen = [], []

    @contextlib.contextmanager
    def fake_device(device):
        entered.append(torch.device(device))
        yield
        entered.append("left")

    def fake_metrics(**kwargs):
        seen.append((list(entered), kwargs["cuda"]))
        return {"frechet_inception_distance": 1.5}

    monkeypatch.setattr(torch.cuda, "device", fake_device)
    monkeypatch.setattr(torch_fidelity, "calculate_metrics", fake_metrics)
    monkeypatch.setattr(fid, "_resolve_weights", lambda path, verbose=False: tmp_path / "weights.pth")
    common = dict(batch_size=4, seed=0, weights_path=None, cache=False, verbose=False, feature_layer="64")
    assert fid._calculate_fid("a", "b", device="cuda:1", **common) == 1.5
    assert seen == [([torch.device("cuda:1")], True)] and entered[-1] == "left"
    entered.clear()
    seen.clear()
    assert fid._calculate_fid("a", "b", device="cpu", **common) == 1.5
    assert seen == [([], False)]

    import torch_fidelity.utils as fidelity_utils  # inception_features builds the extractor itself

    entered.clear()
    monkeypatch.setattr(fidelity_utils, "create_feature_extractor",
                        lambda *args, **kwargs: seen.append(("extractor", list(entered))))
    monkeypatch.setattr(fidelity_utils, "get_featuresdict_from_dataset",
                        lambda *args: (seen.append(("features", list(entered))) or {"64": torch.zeros(2, 64)}))
    seen.clear()
    got = fid.inception_features(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), feature_layer="64", device="cuda:1")
    assert got.shape == (2, 64)
    assert seen == [("extractor", [torch.device("cuda:1")]), ("features", [torch.device("cuda:1")])]
    assert entered[-1] == "left"
