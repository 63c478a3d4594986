"""Benchmark the evaluation: feature extraction and scoring, csigen vs the official CSI code.

Two measurements, each side by side in one run.

**Feature extraction** (last line ``eval_features``): R draws of T x K = 4
rotations of every image through F (ResNet-18, CIFAR, eval mode, float32),
outputs averaged over the draws.  Images per second count the forward passes
of F: ``images x R x 4`` per repeat.

* ours: ``csigen.train.eval_features(F, task, config, "test", ...)``, i.e.
  ``csigen.score.extract_features`` with T = ``SimCLRAugment(crop_scale=(0.54,
  0.54))``, the 4 rotations each with its own random flip (as CSI), chunks of
  ``--batch-size`` images, and its default fast inference path
  (``csigen.inference``: BatchNorm folded into the convolutions, channels_last,
  on the CPU the network run 32 rows at a time; the copy of F it builds is
  made inside the timing).  The images are uint8,
  converted chunk by chunk inside the timing, as in a real evaluation.
  ``--plain`` adds a third side: the same call with ``fast=False``.
* reference (``--reference PATH``, an extracted copy of
  github.com/alinlab/CSI, not part of this repository): CSI's own loop,
  ``evals/ood_pre.py: _get_features(P, model, loader, simclr_aug=...,
  sample_num=R, layers=("simclr", "shift"))``, with CSI's
  ``get_shift_classifer(get_classifier("resnet18", 10), 4)``,
  ``get_simclr_augmentation(P, (32, 32))`` with ``resize_factor 0.54``,
  ``resize_fix`` (its evaluation transform), ``TL.Rotation`` as
  ``shift_trans`` and its module-level ``hflip``.  Its loader is a list of
  float batches of the same images and size (the ``ToTensor`` work of its
  DataLoader is not timed).  ``ood_pre`` runs on a module-level ``device``
  (CUDA when available): it is set to ``--device``, ``hflip`` moved there.
* Same weights: a seeded ``csigen.models.ResNet18`` whose state_dict is
  loaded into CSI's model (the names are shared; CSI's ``linear`` and
  ``joint_distribution_layer`` heads keep their own initialisation and are not
  used by ``_get_features``).  Same images (``--data random``: uniform uint8,
  ``--data shapes``: the built-in procedural test images), same R
  (``--samples``, 10 as CSI), same batch size (``--batch-size``, CSI's
  ``--test_batch_size`` default of 100).  The random streams differ, so the
  features are equal in law, not in value.

**Scoring** (last-but-one line ``scoring csi_score``): ``--n-test`` x
``--n-train`` images (10,000 x 5,000 by default), K = 4, D = 128, R =
``--samples`` draws per image, synthetic features (random draws; the score's
cost does not depend on the values).

* ours: on the features averaged over the draws (what ``extract_features``
  returns), ``csigen.score.csi_score`` (CSI's score, the ratio's side),
  ``nearest_neighbour_score(neighbour="shared")`` (Eq. 11, our reading) and
  ``all_scores`` (every score from one pass), each timed whole (weights and
  normalised training features included).
* reference: CSI's ``get_scores(P, feats_test, "CSI")`` on the per-draw
  features in its own layout ``(N, K * R, D)`` (what its ``_get_features``
  returns; it averages over the draws itself), after setting ``P.axis``,
  ``P.weight_sim`` and ``P.weight_shi`` from the training features as its
  ``eval_ood_detection`` does; that set-up is timed with it.
* A correctness line checks that our CSI score equals ``get_scores`` on these
  features (largest difference relative to the largest score, tolerance
  1e-4); a mismatch makes the exit status 1.

Timing: one untimed warm-up of each side (extraction: the first chunk with
one draw; scoring: the whole call), then ``--repeats`` timed repeats (5 by
default) of each side, interleaved ours, reference, reference, ours, ... so
that both see the same machine load.  The numbers of the last lines come from
the fastest repeat of each side (the convention of Python's ``timeit``: on a
shared machine the slower repeats measure interference from other processes,
not the code); the spread (fastest / median / slowest) and the ratio of the
medians are printed on the line above each.  The last two lines read::

    scoring csi_score ours_s=<x> reference_s=<y> ratio=<y/x>
    eval_features ours_img_s=<x> reference_img_s=<y> ratio=<x/y>

(ratio > 1: ours faster) or, without ``--reference``,
``scoring csi_score ours_s=<x>`` and ``eval_features ours_img_s=<x>``.

    python bench/scoring.py [--reference /tmp/csi] [--repeats 5] [--samples 10]
        [--images 100] [--batch-size 100] [--n-test 10000] [--n-train 5000]
        [--data random|shapes] [--device cpu] [--threads N] [--plain]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from csi_reference import prepare_csi_import

from csigen import score as S
from csigen.augment import SimCLRAugment
from csigen.config import TrainConfig
from csigen.models import ResNet18
from csigen.train import eval_features

NUM_SHIFTS = 4
SIMCLR_DIM = 128
EVAL_CROP = 0.54
TOLERANCE = 1e-4


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def import_csi(csi_root: Path):
    """CSI's evaluation modules, with stand-ins for ``diffdist`` (multi-GPU) and ``tensorboardX`` (logging)."""
    prepare_csi_import(csi_root, "evals/ood_pre.py")
    import evals.ood_pre as O
    import models.classifier as C
    import models.transform_layers as TL
    import utils.utils as U

    return types.SimpleNamespace(O=O, C=C, TL=TL, U=U)


# --------------------------------------------------------------------------- #
# Feature extraction
# --------------------------------------------------------------------------- #
class OursFeatures:
    """csigen's evaluation features: ``eval_features`` (fast inference path), or ``fast=False`` (plain)."""

    def __init__(self, model, images, samples: int, batch_size: int, device, plain: bool = False):
        self.model, self.images, self.device, self.plain = model, images, device, plain
        self.config = TrainConfig(eval_batch_size=batch_size, eval_samples=samples, num_shifts=NUM_SHIFTS,
                                  eval_crop_scale=EVAL_CROP)
        self.task = types.SimpleNamespace(train_images=images, test_images=images, has_full_images=False)

    def __call__(self, images=None, samples=None):
        if self.plain:  # what eval_features does, with fast=False
            c = self.config
            T = SimCLRAugment(crop_scale=(c.eval_crop_scale,) * 2).to(self.device)
            return S.extract_features(self.model, self.images if images is None else images, T,
                                      num_samples=samples or c.eval_samples, num_shifts=c.num_shifts,
                                      batch_size=c.eval_batch_size, device=self.device, seed=0, fast=False)
        task = self.task if images is None else types.SimpleNamespace(test_images=images, has_full_images=False)
        return eval_features(self.model, task, self.config, "test", device=self.device, seed=0,
                             num_samples=samples)


class ReferenceFeatures:
    """CSI's ``_get_features`` loop (evals/ood_pre.py) over a list of float batches."""

    def __init__(self, csi, weights: dict, images, samples: int, batch_size: int, device):
        self.csi, self.samples = csi, samples
        csi.O.device = device  # ood_pre's module-level device (cuda if available)
        csi.O.hflip = csi.O.hflip.to(device)
        P = types.SimpleNamespace(K_shift=NUM_SHIFTS, resize_factor=EVAL_CROP, resize_fix=True, dataset="cifar10")
        P.shift_trans = csi.TL.Rotation().to(device)
        self.P = P
        self.simclr_aug = csi.C.get_simclr_augmentation(P, image_size=tuple(images.shape[-2:])).to(device)
        model = csi.C.get_shift_classifer(csi.C.get_classifier("resnet18", n_classes=10), NUM_SHIFTS)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        stray = [k for k in missing if not k.startswith(("linear.", "joint_distribution_layer."))]
        if stray or unexpected:
            sys.exit(f"csigen's ResNet18 does not map onto CSI's: missing {stray}, unexpected {unexpected}")
        self.model = model.to(device)
        x = images.float().div(255.0)
        self.loader = [(x[i : i + batch_size], torch.zeros(len(x[i : i + batch_size]), dtype=torch.long))
                       for i in range(0, len(x), batch_size)]

    def __call__(self, loader=None, samples=None):
        return self.csi.O._get_features(self.P, self.model, self.loader if loader is None else loader,
                                        simclr_aug=self.simclr_aug, sample_num=samples or self.samples,
                                        layers=("simclr", "shift"))


# --------------------------------------------------------------------------- #
# Scoring
# --------------------------------------------------------------------------- #
def synthetic_draws(n: int, samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-draw features of ``n`` images: simclr ``(n, K, R, D)`` and shift logits ``(n, K, R, K)``.

    Each shift has its own mean direction (as trained features do) and each image its own scale;
    the correct shift's logit is large and positive, so CSI's weights ``1 / mean logit`` are sane.
    """
    g = torch.Generator().manual_seed(seed)
    centre = torch.randn(1, NUM_SHIFTS, 1, SIMCLR_DIM, generator=torch.Generator().manual_seed(1234))
    scale = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
    simclr = scale * (centre + torch.randn(n, NUM_SHIFTS, samples, SIMCLR_DIM, generator=g))
    shift = torch.randn(n, NUM_SHIFTS, samples, NUM_SHIFTS, generator=g)
    shift += 4.0 * torch.eye(NUM_SHIFTS).view(1, NUM_SHIFTS, 1, NUM_SHIFTS)
    return simclr, shift


def csi_layout(simclr: torch.Tensor, shift: torch.Tensor) -> dict[str, torch.Tensor]:
    """CSI's ``_get_features`` layout: ``(n, K * R, .)``, the R draws of shift 0, then of shift 1, ..."""
    n = simclr.shape[0]
    return {"simclr": simclr.reshape(n, -1, simclr.shape[-1]).contiguous(),
            "shift": shift.reshape(n, -1, shift.shape[-1]).contiguous()}


class ReferenceScore:
    """``eval_ood_detection``'s set-up of ``P`` from the training features, then CSI's ``get_scores``."""

    def __init__(self, csi, train: dict, test: dict, device):
        self.csi, self.train, self.test = csi, train, test
        csi.O.device = device
        self.P = types.SimpleNamespace(K_shift=NUM_SHIFTS)

    def __call__(self) -> torch.Tensor:
        P, normalize, device = self.P, self.csi.U.normalize, self.csi.O.device
        # as evals/ood_pre.py eval_ood_detection(..., ood_scores=["CSI"]) sets P before calling get_scores
        P.axis = [normalize(f.mean(dim=1), dim=1).to(device) for f in self.train["simclr"].chunk(P.K_shift, dim=1)]
        f_sim = [f.mean(dim=1) for f in self.train["simclr"].chunk(P.K_shift, dim=1)]
        f_shi = [f.mean(dim=1) for f in self.train["shift"].chunk(P.K_shift, dim=1)]
        P.weight_sim = [1 / f_sim[k].norm(dim=1).mean().item() for k in range(P.K_shift)]
        P.weight_shi = [1 / f_shi[k][:, k].mean().item() for k in range(P.K_shift)]
        return self.csi.O.get_scores(P, self.test, "CSI")


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
def run_interleaved(sides: dict[str, Callable], repeats: int, device, unit: Callable[[float], str],
                    label: str) -> tuple[dict[str, list[float]], dict[str, object]]:
    """``repeats`` timed calls of each side, in the order a, b, b, a, a, b, ...; first results kept."""
    times: dict[str, list[float]] = {name: [] for name in sides}
    first: dict[str, object] = {}
    names = list(sides)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            out = sides[name]()
            _sync(device)
            t = time.perf_counter() - t0
            times[name].append(t)
            first.setdefault(name, out)
            print(f"{label} repeat {i} {name:11s} {t:8.3f} s{unit(t)}", flush=True)
    return times, first


def spread(name: str, values: list[float], fmt: str) -> str:
    """``name: fastest/median/slowest`` of already-converted rates or seconds."""
    lo, med, hi = min(values), statistics.median(values), max(values)
    return f"{name} " + fmt.format(lo) + " / " + fmt.format(med) + " / " + fmt.format(hi)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reference", type=Path, default=None, metavar="CSI_ROOT",
                        help="also time the official CSI code (an extracted alinlab/CSI checkout)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each side (5)")
    parser.add_argument("--samples", type=int, default=10, help="R, draws of T per image (10, as CSI)")
    parser.add_argument("--images", type=int, default=100, help="images whose features are extracted (100)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="images per chunk, both sides (100: CSI's --test_batch_size)")
    parser.add_argument("--n-test", type=int, default=10_000, help="test images scored (10,000)")
    parser.add_argument("--n-train", type=int, default=5_000, help="training images scored against (5,000)")
    parser.add_argument("--data", choices=["random", "shapes"], default="random",
                        help="images: uniform random uint8, or the built-in shapes test set")
    parser.add_argument("--plain", action="store_true", help="also time ours without the fast inference path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("repeats", "samples", "images", "batch_size", "n_test", "n_train"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    csi = import_csi(args.reference.resolve()) if args.reference is not None else None

    # ---- inputs
    if args.data == "shapes":
        from csigen.data import load_task

        pool = load_task("shapes", 0, max_test=args.images, seed=args.seed).test_images
        if len(pool) < args.images:
            parser.error(f"--data shapes has {len(pool)} test images; ask for at most that many with --images")
        images = pool[: args.images].contiguous()
    else:
        images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(args.seed))
    torch.manual_seed(args.seed)
    F = ResNet18(num_shifts=NUM_SHIFTS).to(device)
    passes = args.images * args.samples * NUM_SHIFTS
    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; features: "
          f"{args.images} {args.data} images x R={args.samples} x {NUM_SHIFTS} rotations = {passes} forward passes "
          f"of ResNet-18 per repeat, chunks of {args.batch_size}; scoring: {args.n_test} test x {args.n_train} "
          f"train, K={NUM_SHIFTS}, D={SIMCLR_DIM}, R={args.samples}; {args.repeats} repeats of each side"
          + (f"; reference CSI code at {args.reference}" if csi else ""), flush=True)

    # ---- feature extraction
    feature_sides: dict[str, Callable] = {"ours": OursFeatures(F, images, args.samples, args.batch_size, device)}
    if args.plain:
        feature_sides["ours_plain"] = OursFeatures(F, images, args.samples, args.batch_size, device, plain=True)
    if csi is not None:
        feature_sides["reference"] = ReferenceFeatures(csi, F.state_dict(), images, args.samples,
                                                       args.batch_size, device)
    for name, side in feature_sides.items():  # warm-up: the first chunk, one draw
        if name == "reference":
            side(loader=side.loader[:1], samples=1)
        else:
            side(images=images[: args.batch_size], samples=1)
    feat_times, _ = run_interleaved(feature_sides, args.repeats, device, lambda t: f"  {passes / t:8.1f} img/s",
                                    "features")

    # ---- scoring
    test_draws = synthetic_draws(args.n_test, args.samples, seed=args.seed + 1)
    train_draws = synthetic_draws(args.n_train, args.samples, seed=args.seed + 2)
    test = S.Features(simclr=test_draws[0].mean(dim=2), shift=test_draws[1].mean(dim=2)).to(device)
    train = S.Features(simclr=train_draws[0].mean(dim=2), shift=train_draws[1].mean(dim=2)).to(device)
    score_sides: dict[str, Callable] = {
        "ours_csi": lambda: S.csi_score(test, train),
        "ours_shared": lambda: S.nearest_neighbour_score(test, train, neighbour="shared"),
        "ours_all": lambda: S.all_scores(test, train),
    }
    if csi is not None:
        score_sides["reference"] = ReferenceScore(csi, csi_layout(*train_draws), csi_layout(*test_draws), device)
    del test_draws, train_draws
    for side in score_sides.values():  # warm-up
        side()
    score_times, results = run_interleaved(score_sides, args.repeats, device, lambda t: "", "scoring")

    # ---- report
    ok = True
    rates = {name: [passes / t for t in ts] for name, ts in feat_times.items()}
    for name, r in rates.items():
        print(spread(f"eval_features {name} img/s fastest/median/slowest", r, "{:.1f}"))
    for name, ts in score_times.items():
        print(spread(f"scoring {name} s fastest/median/slowest", ts, "{:.4f}"))
    if "ours_plain" in rates:
        print(f"eval_features fast path / plain path: {max(rates['ours']) / max(rates['ours_plain']):.3f} (fastest), "
              f"{statistics.median(rates['ours']) / statistics.median(rates['ours_plain']):.3f} (medians)")
    if csi is not None:
        ours, ref = results["ours_csi"].float().cpu(), results["reference"].float().cpu()
        rel = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        ok = rel <= TOLERANCE and ours.shape == ref.shape
        print(f"check csi_score vs reference get_scores: max |difference| / max |score| = {rel:.2e} "
              f"(tolerance {TOLERANCE:.0e}, {len(ref)} test images): {'ok' if ok else 'MISMATCH'}")
        s_ours, s_ref = score_times["ours_csi"], score_times["reference"]
        print(f"scoring csi_score ratio (reference s / ours s): fastest {min(s_ref) / min(s_ours):.3f}, "
              f"medians {statistics.median(s_ref) / statistics.median(s_ours):.3f}, "
              f"slowest {max(s_ref) / max(s_ours):.3f}")
        print(f"eval_features ratio (ours img/s / reference img/s): fastest {max(rates['ours']) / max(rates['reference']):.3f}, "
              f"medians {statistics.median(rates['ours']) / statistics.median(rates['reference']):.3f}, "
              f"slowest {min(rates['ours']) / min(rates['reference']):.3f}")
        print(f"scoring csi_score ours_s={min(s_ours):.4f} reference_s={min(s_ref):.4f} "
              f"ratio={min(s_ref) / min(s_ours):.3f}")
        print(f"eval_features ours_img_s={max(rates['ours']):.1f} reference_img_s={max(rates['reference']):.1f} "
              f"ratio={max(rates['ours']) / max(rates['reference']):.3f}")
    else:
        print(f"scoring csi_score ours_s={min(score_times['ours_csi']):.4f}")
        print(f"eval_features ours_img_s={max(rates['ours']):.1f}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
