"""Source of truth for notebooks/*.ipynb: rebuild them with ``python tools/build_notebooks.py``.

Edit the cells here, never the .ipynb files by hand; the script writes
stripped notebooks (no outputs, no execution counts) and fills the Colab
badge and the install cell from ``csigen.REPO_URL`` / ``REPO_BRANCH`` through
``tools/sync_notebook_links.py``. ``--check`` exits 1 when a notebook differs
from what this script would write.

Every notebook follows one layout: title, what you learn, run times and the
badge; install cell (Colab only); a ``parameters`` cell (papermill-style;
``CSIGEN_SMOKE=1`` switches to the tiny offline smoke run); setup; the story
with the paper's equations (numbered as in the paper, Eq. 1-11); summary and
exercises.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sync_notebook_links as links

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


# --------------------------------------------------------------------------- cells
def md(text: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": text.strip("\n")}


def code(text: str, tags: list[str] | None = None) -> dict:
    meta = {"tags": tags} if tags else {}
    return {"cell_type": "code", "execution_count": None, "metadata": meta, "outputs": [],
            "source": text.strip("\n")}


def notebook(name: str, cells: list[dict]) -> dict:
    for i, cell in enumerate(cells):
        cell["id"] = str(i)  # nbstripout's numbering, so a stripped notebook stays byte-identical
        cell["source"] = cell["source"].splitlines(keepends=True)
    nb = {
        "cells": cells,
        "metadata": {
            "accelerator": "GPU",  # Colab opens the notebook asking for a GPU runtime
            "colab": {"gpuType": "T4"},
            "kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    url, branch = links.repo_constants()
    problems = links.sync_notebook(nb, name, url, branch)  # fills the placeholders below
    if any("out of date" not in p for p in problems):
        raise RuntimeError(f"{name}: {problems}")
    return nb


BADGE_PLACEHOLDER = "[![Open In Colab](badge)](https://colab.research.google.com/)"


def header(title: str, intro: str, learn: str, runtime: str) -> dict:
    return md(f"# {title}\n\n{BADGE_PLACEHOLDER}\n\n{intro.strip()}\n\n**You will learn**\n\n{learn.strip()}\n\n"
              f"**Run time** (one run = training + evaluation; a finished run is loaded, not retrained):\n\n"
              f"{runtime.strip()}")


SETUP_MD = md(r"""
## Setup

In **Colab** the next cell installs csigen from GitHub (it keeps Colab's torch and Colab's
**ipywidgets 7.7.1**: we do not upgrade it, since ipywidgets 8 breaks Colab's own widgets).
For a GPU choose *Runtime > Change runtime type > T4 GPU* before running anything.
**Locally** nothing is installed: run the notebook from a checkout where `pip install -e .` was done.
""")

INSTALL = code(r"""
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:  # pip through subprocess: an IPython magic cannot sit inside an if block
    import subprocess

    target = "git+"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", target], check=True)
""", tags=["install"])

PARAMS_MD = md(r"""
### Parameters

The cell below (tagged `parameters`, so papermill can override it) is the only one to edit.
The defaults are Figure 2's task, CIFAR-10 with inlier class *cat*: preset `quick` on a GPU,
`cpu` on a CPU (see `csigen.config.PRESETS`). With the environment variable `CSIGEN_SMOKE=1`
(set by the test suite) it switches to the `smoke` preset on the built-in, offline `shapes` data:
a run of seconds whose numbers mean nothing.
""")

PARAMS = code(r"""
import os

import torch

SMOKE = os.environ.get("CSIGEN_SMOKE") == "1"  # tiny offline run (tests, CI)
DATASET = "shapes" if SMOKE else "cifar10"  # cifar10, cifar100, imagenet30, imagefolder or shapes
INLIER = "circle" if SMOKE else "cat"  # the one class seen in training
PRESET = "smoke" if SMOKE else ("quick" if torch.cuda.is_available() else "cpu")
SEED = 0
DATA_ROOT = None  # None: $CSIGEN_DATA or ~/.cache/csigen/data (CIFAR downloads there)
OUT = os.environ.get("CSIGEN_OUT", "runs")  # one sub-folder per run
USE_DRIVE = False  # Colab: keep the runs on Google Drive (survives a disconnect)
""", tags=["parameters"])

RESUME_MD = md(r"""
### Output folder, GPU check, and continuing after a disconnect

Every run writes into its own folder `OUT/<dataset>-<inlier>-<variant>-<preset>-s<seed>`; the three
notebooks share these names, so notebook 03 reuses the runs of 01 and 02. `csigen.train.run` is
"load a finished run if present, else train": a folder with a `result.json` of the same config is
loaded in a second, and an interrupted run resumes from its last `checkpoint.pt`
(`run(..., resume=True)`, written every few minutes). So after a Colab disconnect, reconnect and
*Run all*. Set `USE_DRIVE = True` to keep the folders on Google Drive
(`/content/drive/MyDrive/csigen-runs`), since a new Colab runtime starts with an empty disk.

**Reproducibility.** Each `result.json` records the seed, the config, the package versions, the
device and the git commit. On a CPU two runs with the same seed and config give identical numbers
(a test checks this). On a GPU they can differ in the last digits, and after many steps by more:
cuDNN picks convolution algorithms by speed (`cudnn.benchmark`), some CUDA kernels add in a
non-deterministic order, and mixed precision rounds differently. For bit-identical GPU runs pass
`deterministic=True` to `make_config` (it turns on `torch.use_deterministic_algorithms`, disables
the cuDNN autotuner and sets `CUBLAS_WORKSPACE_CONFIG`), at some cost in speed, and `amp=False`.
""")

SETUP = r"""
%matplotlib inline
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

@IMPORTS@

if IN_COLAB and USE_DRIVE:
    from google.colab import drive

    drive.mount("/content/drive")
    OUT = "/content/drive/MyDrive/csigen-runs"
GPU = torch.cuda.is_available()
if not GPU:
    print("No GPU: this runs on the CPU. In Colab: Runtime > Change runtime type > T4 GPU, then run all.\n"
          "What a CPU run can show: preset 'cpu' trains 80 steps on 1,000 images, enough to see "
          "every part of the method work, with an AUROC well below the paper's.")


def config_for(variant):  # one place that defines a run; the same in notebooks 01-03
    return make_config(PRESET, dataset=DATASET, inlier=INLIER, variant=variant, seed=SEED,
                       data_root=DATA_ROOT)


def run_dir(variant):  # OUT/<dataset>-<inlier>-<variant>-<preset>-s<seed>
    return results.run_dir(OUT, config_for(variant))


def load_trained(config, task):  # the trained networks, from the run's last checkpoint
    return Trainer.from_run(run_dir(config.variant), config=config, task=task)
"""


def common(title: str, intro: str, learn: str, runtime: str, imports: str) -> list[dict]:
    """The cells every notebook starts with; ``imports``: the notebook's csigen imports."""
    return [header(title, intro, learn, runtime), SETUP_MD, INSTALL, PARAMS_MD, PARAMS, RESUME_MD,
            code(SETUP.replace("@IMPORTS@", imports.strip()))]


# =========================================================================== 01
NB01 = common(
    "01 · CSI: contrastive learning on shifted instances",
    r"""
Yu & Chiu's *Boosting Semi-Supervised Anomaly Detection via Contrasting Synthetic Images* extends
**CSI** (Tack et al., NeurIPS 2020). This notebook builds the CSI baseline: the feature extractor
$\mathcal{F}$ (a ResNet-18) trained with $\mathcal{L}_{\text{CSI}}$, and the score that turns its
features into an anomaly detector. Notebooks 02 and 03 add the generator and the encoder.
""",
    r"""
- the semi-supervised (one-class) protocol: train on one class, test on all of them;
- SimCLR's NT-Xent loss (Eq. 1) and what a batch's similarity matrix looks like;
- *shifted instances*: why rotated images are negatives rather than augmentations (Eq. 2-4);
- the nearest-neighbour score $\mathcal{M}_{\text{ens}}$ (Eq. 11), score histograms, ROC and AUROC.
""",
    r"""
| where | preset | data | time |
|---|---|---|---|
| CPU, smoke mode (`CSIGEN_SMOKE=1`) | `smoke`: 4 steps of 4 images | built-in `shapes` | 1-3 min (2-core CPU; the upper end when shared with other jobs) |
| CPU | `cpu`: 80 steps of 16 images, 1,000 training images | one CIFAR-10 class | about 9 min (measured, idle 2-core CPU) |
| Colab T4 GPU | `quick`: 100 epochs of 64 images | one CIFAR-10 class | about 30 min: an **estimate**, not yet measured |
""",
    imports="""
from csigen import losses, models, plotting, results, widgets
from csigen.augment import SimCLRAugment
from csigen.config import make_config
from csigen.data import load_task_for, to_float
from csigen.train import Trainer, run
""",
) + [
    md(r"""
## 1 The task: one class in, every other class out

Let $\mathcal{U} = \mathcal{X} \cup \mathcal{X}^c$ be the population of inliers and outliers. We
train on a set of inliers $X \subseteq \mathcal{X}$ only, the images of **one class**, and learn a
detector $\mathcal{M} \circ \mathcal{F}$: a feature extractor $\mathcal{F}: \mathcal{U} \to \mathcal{Z}$
and a score $\mathcal{M}: \mathcal{Z} \to \mathbb{R}$ (higher = more inlier-like). At test time the
whole test split is scored: the class's own test images are inliers (positives), all other
classes are outliers. The metric is the AUROC, averaged over the tasks (one per class) in the paper.
"""),
    code(r"""
config = config_for("csi")
task = load_task_for(config)
print(task.describe())
fig, axes = plt.subplots(1, 2, figsize=(12, 3))
plotting.image_grid(task.train_images[:16], ax=axes[0], title=f"training set: only {task.inlier_name!r}")
plotting.image_grid(task.test_images[~task.test_is_inlier][:16], ax=axes[1], title="test outliers")
plt.show()
"""),
    md(r"""
## 2 SimCLR and the NT-Xent loss (Eq. 1)

Each image $x_i$ is turned into two views $x_i^{(1)} = T_1(x_i)$, $x_i^{(2)} = T_2(x_i)$ with
$T_1, T_2 \sim \mathcal{T}$ (random resized crop, colour jitter, grayscale). The two views of one
image should have similar features, unlike the views of all other images:

$$\mathcal{L}_{\text{SimCLR}}(X) = \sum_i \mathcal{L}_{\text{NT-Xent}}(x_i^{(1)}, x_i^{(2)}, X \setminus x_i) + \sum_i \mathcal{L}_{\text{NT-Xent}}(x_i^{(2)}, x_i^{(1)}, X \setminus x_i) \tag{1}$$

$$\mathcal{L}_{\text{NT-Xent}}(x, x_+, \{x_-\}) = -\log \frac{\exp(\text{sim}(\mathcal{F}(x), \mathcal{F}(x_+))/\tau)}{\sum_{x' \in x_+ \cup \{x_-\}} \exp(\text{sim}(\mathcal{F}(x), \mathcal{F}(x'))/\tau)}$$

with cosine similarity $\text{sim}$ and temperature $\tau = 0.5$ (CSI's value). `csigen.losses.nt_xent`
takes the $2N$ features stacked as [view 1; view 2] and returns Eq. 1 divided by $2N$.
Here is $\mathcal{T}$ on real training images (the sliders below change its settings):
"""),
    code(r"""
augment = SimCLRAugment()  # CSI's T: jitter (p 0.8) -> grayscale (p 0.2) -> resized crop (0.08-1)
plotting.show_augmentations(task.train_images[:4], augment, generator=torch.Generator().manual_seed(0))
plt.show()
explorer = widgets.augmentation_explorer(task.train_images[:3])
explorer.update()  # render once directly (errors inside widget callbacks are otherwise swallowed)
explorer
"""),
    md(r"""
The similarity matrix of a batch of $N = 16$ images, two views each: entry $(i, j)$ is
$\text{sim}(\mathcal{F}(x_i), \mathcal{F}(x_j))$; the red squares mark the positive pairs $(i, i+N)$.
Eq. 1 wants those bright and everything else dark. An **untrained** $\mathcal{F}$ maps every image to
nearly the same direction:
"""),
    code(r"""
def two_view_features(F, images, seed=0):
    # simclr features of two T-views per image, stacked [view 1; view 2]: rows i and i + N are a positive pair
    g = torch.Generator().manual_seed(seed)
    x = to_float(images)
    views = torch.cat([augment(x, generator=g), augment(x, generator=g)])
    F.eval()
    with torch.no_grad():
        return F(views.to(next(F.parameters()).device), simclr=True)["simclr"].cpu()


torch.manual_seed(SEED)
batch = task.train_images[:16]
z_untrained = two_view_features(models.ResNet18(), batch)
plotting.similarity_matrix(z_untrained, title="untrained F")
plt.show()
print(f"NT-Xent of this batch, untrained F: {losses.nt_xent(z_untrained):.3f} "
      f"(all features equal would give log(2N - 1) = {math.log(2 * len(batch) - 1):.3f})")
"""),
    md(r"""
## 3 Shifted instances (Eq. 2-4)

Some transformations hurt SimCLR when used as augmentations: a rotated cat is no longer an image from
the training distribution. CSI turns this around and treats every rotation $S \in \mathcal{S}$
($0°, 90°, 180°, 270°$, so $K = 4$) as a **shifted instance**: a new sample that is a *negative* for
the original image. Outliers do not share the inliers' canonical orientation, which is what the
learned features end up encoding.

$$\mathcal{L}_{\text{con-SI}}(X) = \mathcal{L}_{\text{SimCLR}}\Big(\{X, X^{\mathcal{S}}\}\Big), \qquad X^{\mathcal{S}} = \bigcup_i \bigcup_{S \in \mathcal{S}} \{S(x_i)\} \tag{2}$$

A second head of $\mathcal{F}$ predicts which rotation was applied:

$$\mathcal{L}_{\text{cls-SI}}(X) = -\sum_i \log p(y = S \mid S(x_i)) \tag{3}$$

$$\mathcal{L}_{\text{CSI}}(X) = \mathcal{L}_{\text{con-SI}}(X) + \mathcal{L}_{\text{cls-SI}}(X) \tag{4}$$

In `csigen.losses.csi_loss` a batch of $B$ images becomes $2 \times K \times B$ views (flip, rotate,
then two draws of $T$) that go through $\mathcal{F}$ in one pass. At initialisation the rotation head
guesses, so $\mathcal{L}_{\text{cls-SI}} \approx \log 4 = 1.386$:
"""),
    code(r"""
plotting.show_rotations(task.train_images[:4])
plt.show()
with torch.no_grad():
    l_csi = losses.csi_loss(models.ResNet18(), to_float(task.train_images[:8]), augment)
print({k: round(float(v), 3) for k, v in l_csi.items()})
"""),
    md(r"""
## 4 Train $\mathcal{F}$ with $\mathcal{L}_{\text{CSI}}$

`run` trains (or loads, or resumes, see *Setup*) and evaluates. CSI's optimiser: LARS, learning rate
0.1 with warm-up and cosine decay. The live plot redraws the losses during training; the static one
below it reads `history.csv`, so it shows even when the run was loaded.
"""),
    code(r"""
result = run(config, run_dir("csi"), task=task, callbacks=[plotting.LiveLossPlot(every=1 if SMOKE else 25)])
print(f"{result['steps']} steps, {result['train_seconds'] / 60:.1f} min of training on {result['device']}")
plotting.loss_curves(pd.read_csv(run_dir("csi") / "history.csv"), window=1 if SMOKE else 20)
plt.show()
"""),
    md(r"""
The same 16 images through the **trained** $\mathcal{F}$ (loaded from the run's checkpoint): the
positive pairs should now stand out from the rest of their rows.
"""),
    code(r"""
trainer = load_trained(config, task)
z_trained = two_view_features(trainer.nets.F, batch)
plotting.similarity_matrix(z_trained, title=f"trained F ({trainer.step} steps)")
plt.show()
print(f"NT-Xent of this batch: untrained {losses.nt_xent(z_untrained):.3f}, "
      f"trained {losses.nt_xent(z_trained):.3f}")
"""),
    md(r"""
## 5 The score (Eq. 11) and the AUROC

A test image is compared with its nearest neighbour among the training images, in feature space and
under all $K$ rotations:

$$\mathcal{M}(x_{\text{test}}, \tilde{x}) = \sum_{S \in \mathcal{S}} m(S(x_{\text{test}}), S(\tilde{x})), \quad m(x, x') = \text{sim}(\mathcal{F}(x), \mathcal{F}(x')) \cdot \|\mathcal{F}(x)\|, \quad \tilde{x} = \arg\max_{x' \in X} \sum_{S \in \mathcal{S}} m(x_{\text{test}}, x') \tag{11}$$

$\mathcal{M}_{\text{ens}}$ averages each feature over $R$ random draws $T_r \sim \mathcal{T}$ first
(CSI: $R = 10$, crop scale fixed at 0.54; the `smoke` preset uses $R = 1$). The norm factor
$\|\mathcal{F}(x)\|$ matters: inliers, seen in training, tend to get longer features. We read the
arg max as one neighbour shared by all rotations (`score="shared"`; see
`csigen.score.nearest_neighbour_score` for the other readings). `run` stored every test score in
`scores.npz`:
"""),
    code(r"""
scores = np.load(run_dir("csi") / "scores.npz")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plotting.score_histogram(scores["scores"], scores["is_inlier"], ax=axes[0], title="Eq. 11 scores, test set")
plotting.roc_curve(scores["scores"], scores["is_inlier"], ax=axes[1], label="CSI")
plt.show()
per_class = {task.class_names[int(k)]: round(100 * v, 1) for k, v in result["per_class_auroc"].items()}
pd.Series(per_class, name=f"AUROC (%) of {task.inlier_name!r} vs each class").sort_values().to_frame()
"""),
    md(r"""
## 6 Measured vs the paper

The paper's CSI baseline for one CIFAR-10 class is CSI's per-class number (ResNet-18, 1,000 epochs,
batch 128, $R = 10$). Our number comes from the preset above, usually far shorter, so expect it lower.
"""),
    code(r"""
paper = results.CSI_PAPER_PER_CLASS.get(task.inlier_name) if DATASET == "cifar10" else None  # quoted
if paper is None:
    print(f"No paper number for dataset {DATASET!r}, class {task.inlier_name!r}: the paper reports CIFAR-10, "
          "CIFAR-100 and ImageNet-30 only (shapes is csigen's own test data).")
pd.DataFrame([{"task": f"{DATASET} / {task.inlier_name}", "preset": PRESET, "steps": result["steps"],
               "measured AUROC (%)": round(100 * result["auroc"], 1),
               "paper AUROC (%)": paper, "paper source": "CSI (Tack et al. 2020), per class"}])
"""),
    md(r"""
## Summary

- Semi-supervised anomaly detection trains on inliers only (one class) and scores the whole test set.
- SimCLR's NT-Xent (Eq. 1) pulls two views of an image together and pushes the other images away.
- CSI adds *shifted instances* (rotations) as extra negatives (Eq. 2) and a rotation classifier
  (Eq. 3); together $\mathcal{L}_{\text{CSI}}$ (Eq. 4).
- The score (Eq. 11) is the feature-norm-weighted cosine similarity to the nearest training image,
  summed over rotations, averaged over $R$ augmentations ($\mathcal{M}_{\text{ens}}$).

## Exercises

1. **NT-Xent at collapse.** If $\mathcal{F}$ maps all $2N$ views to the *same* vector, what is the
   NT-Xent loss (Eq. 1, any $\tau$)? Derive it, then check your formula with `check_answer` below.
2. **Without shifts.** Retrain with `config_for("csi")` replaced by
   `make_config(PRESET, ..., num_shifts=1)` (plain SimCLR, no rotations; use another `run_dir`).
   Predict first: how much AUROC do the shifted instances buy?
3. **Other scores.** `trainer.evaluate(score="csi")` uses CSI's own score (it adds the rotation
   head's confidence); `score="per_shift"` lets every rotation pick its own neighbour. Which is best
   on your run, and why is `literal <= shared <= per_shift` always true?
"""),
    code(r"""
def check_answer(value, n=16, dim=128):
    # Exercise 1: `value` is your NT-Xent for 2n identical feature vectors
    expected = float(losses.nt_xent(torch.ones(2 * n, dim)))
    assert abs(value - expected) < 1e-4, f"{value:.4f} is not it; try again"
    print(f"correct: NT-Xent = {expected:.4f} for n = {n}")
"""),
    md(r"""Solution of exercise 1 (try it yourself first: replace the expression with yours):"""),
    code(r"""
check_answer(math.log(2 * 16 - 1))  # all similarities are 1: -log(e^{1/tau} / ((2N - 1) e^{1/tau}))
"""),
]

# =========================================================================== 02
NB02 = common(
    "02 · CSI + G: contrasting synthetic images",
    r"""
The first half of Yu & Chiu's idea: train a generator $\mathcal{G}$ on the inliers *together with*
$\mathcal{F}$, and let $\mathcal{F}$ contrast real and synthetic images. In the paper's ablation this
moves the CIFAR-10 mean AUROC from 94.3 (CSI) to 94.8. Notebook 01 trained the CSI baseline this
compares against (its run is reused if present, else trained here).
""",
    r"""
- $\mathcal{L}_{\text{JOINT}}$ (Eq. 5), $\mathcal{L}_{\text{CSI-S}}$ (Eq. 6) and the adversarial loss (Eq. 7);
- Algorithm 1 without the encoder, and the SNGAN generator and discriminator;
- how $\mathcal{G}$'s samples evolve during training (a trainer callback);
- the AUROC change against CSI, and the FID of $\mathcal{G}$ (with its caveats).
""",
    r"""
| where | preset | data | time |
|---|---|---|---|
| CPU, smoke mode (`CSIGEN_SMOKE=1`) | `smoke`: 4 steps, GAN block every 2 | built-in `shapes` | 1-4 min with notebook 01's run present (2-core CPU) |
| CPU | `cpu`: 80 steps, G/D of 64 channels | one CIFAR-10 class | about 13 min (measured), plus 9 min if notebook 01's run is missing; FID on 1,000 samples adds several minutes |
| Colab T4 GPU | `quick`: 100 epochs of 64 images | one CIFAR-10 class | about 45 min, plus 30 min without notebook 01's run: **estimates**, not yet measured |
""",
    imports="""
from csigen import fid, losses, models, plotting, results
from csigen.config import make_config
from csigen.data import load_task_for
from csigen.train import Callback, Trainer, run
""",
) + [
    md(r"""
## 1 The idea: synthetic inliers as extra instances

If $\mathcal{G}$ models the inliers, its samples $\tilde{x} = \mathcal{G}(h)$, $h \sim \mathcal{N}(0, I)$,
enrich the training set of the contrastive learner:

$$\mathcal{L}_{\text{JOINT}} = \mathcal{L}_{\text{CSI}}(X \cup \tilde{X}) \tag{5}$$

Each synthetic image and its rotations are extra negatives for every real one. In turn the contrastive
features train $\mathcal{G}$: its samples should be good CSI instances themselves (through a frozen
$\mathcal{F}$):

$$\mathcal{L}_{\text{CSI-S}} = \mathcal{L}_{\text{CSI}}(\tilde{X}) \tag{6}$$

and a discriminator $\mathcal{D}$ keeps the samples realistic. Without an encoder Eq. 7 loses its
reconstruction term $\log(1 - \mathcal{D}(\hat{x}))$:

$$\mathcal{L}_{\text{D}} = \log \mathcal{D}(x) + \log(1 - \mathcal{D}(\tilde{x})) \tag{7}$$

$\mathcal{D}$ maximises it (minimises the binary cross-entropy); $\mathcal{G}$ uses the usual
non-saturating form $-\log \mathcal{D}(\tilde{x})$ (see `csigen.losses`). **Algorithm 1 without E**:

```
for each batch X:
    update F by minimising L_CSI(X)                   # Eq. 4
    every N = 5 batches:
        sample h ~ N(0, I);  X~ = G(h)
        update D, then G, on L_D(X, X~)               # Eq. 7
        update G by minimising L_CSI-S(G(h))          # Eq. 6, F frozen
        update F by minimising L_JOINT(X u X~)        # Eq. 5
```

$\mathcal{G}$ and $\mathcal{D}$ are SNGAN's ResNets for 32x32 images (Miyato et al. 2018; spectral
norm in $\mathcal{D}$), trained with Adam (lr 2e-4, betas 0.9, 0.999) as the paper states. The
`smoke` and `cpu` presets shrink their widths:
"""),
    code(r"""
config = config_for("csi+g")
nets = {"F: ResNet-18": (models.ResNet18(), models.ResNet18()),  # (this preset, the paper's size)
        "G: SNGAN generator": (models.Generator(config.z_dim, config.g_channels), models.Generator(128, 256)),
        "D: SNGAN discriminator": (models.Discriminator(config.d_channels), models.Discriminator(128))}
count = models.count_parameters
pd.DataFrame({f"parameters, preset {PRESET!r}": {k: count(ours) for k, (ours, _) in nets.items()},
              "parameters, paper sizes": {k: count(paper) for k, (_, paper) in nets.items()}})
"""),
    md(r"""
## 2 Train CSI + G

A `Callback` sees the trainer at every step, epoch and checkpoint. This one renders
$\mathcal{G}$ on a fixed batch of latents $h$ at every checkpoint and keeps the images in the run
folder, so they survive a restart and show for a loaded run too.
"""),
    code(r"""
class SampleSnapshots(Callback):
    def __init__(self, path, z_dim, n=16):
        self.path = path
        self.h = torch.randn(n, z_dim, generator=torch.Generator().manual_seed(0))  # fixed latents
        self.samples = torch.load(self.path) if self.path.exists() else {}  # {step: uint8 images}

    def on_checkpoint(self, trainer, path):
        G = trainer.nets.G
        G.eval()
        with torch.no_grad():
            self.samples[trainer.step] = fid.to_uint8(G(self.h.to(trainer.device))).cpu()
        G.train()
        torch.save(self.samples, self.path)


task = load_task_for(config)
out_g = run_dir("csi+g")
snapshots = SampleSnapshots(out_g / "g_samples.pt", config.z_dim)
live = plotting.LiveLossPlot(every=1 if SMOKE else 25)
result_g = run(config, out_g, task=task, callbacks=[live, snapshots])
print(f"{result_g['steps']} steps, {result_g['train_seconds'] / 60:.1f} min of training on {result_g['device']}")
plotting.loss_curves(pd.read_csv(out_g / "history.csv"), window=1 if SMOKE else 20)
plt.show()
"""),
    md(r"""
## 3 What $\mathcal{G}$ learned

The same latents $h$ at successive checkpoints (up to six), next to real training images:
"""),
    code(r"""
samples = torch.load(out_g / "g_samples.pt") if (out_g / "g_samples.pt").exists() else {}
steps = sorted(samples)
if len(steps) > 6:  # six checkpoints, evenly spread
    steps = [steps[i] for i in np.linspace(0, len(steps) - 1, 6).round().astype(int)]
fig, axes = plt.subplots(1, len(steps) + 1, figsize=(3 * (len(steps) + 1), 3.4), squeeze=False)
for ax, step in zip(axes[0], steps):
    plotting.image_grid(samples[step], nrow=4, ax=ax, title=f"G(h), step {step}")
plotting.image_grid(task.train_images[:16], nrow=4, ax=axes[0, -1], title="real inliers")
plt.show()
"""),
    md(r"""
## 4 Does $\mathcal{G}$ help $\mathcal{F}$? AUROC against CSI

The CSI run of notebook 01 (same class, preset and seed) is loaded if present and trained now if not:
`run` decides. The paper's numbers are the **mean over the 10 CIFAR-10 classes** at the full recipe;
a single class at a short preset is not directly comparable, only the direction of the change is.
"""),
    code(r"""
runs = {"csi": run(config_for("csi"), run_dir("csi"), task=task), "csi+g": result_g}
ax = None
for variant in runs:
    s = np.load(run_dir(variant) / "scores.npz")
    ax = plotting.roc_curve(s["scores"], s["is_inlier"], ax=ax, label=variant)
plt.show()
pd.DataFrame({"measured AUROC (%)": {v: round(100 * r["auroc"], 1) for v, r in runs.items()},
              "paper AUROC (%), CIFAR-10 mean": {v: results.PAPER_ABLATION[v] for v in runs}}).rename_axis(
    f"{DATASET} / {task.inlier_name}, preset {PRESET}")
"""),
    md(r"""
## 5 FID of $\mathcal{G}$

The Fréchet Inception Distance compares Gaussian fits of Inception-v3 features of generated and real
images, $\text{FID} = \|\mu_g - \mu_r\|^2 + \text{Tr}\big(\Sigma_g + \Sigma_r - 2(\Sigma_g \Sigma_r)^{1/2}\big)$
(lower is better). The paper reports 69.5 for CSI + G without saying against what; `csigen.fid`
uses the inlier class's training images as reference and 10,000 samples. FID is biased upwards for
few samples, so compare only at equal sample counts and references.

In smoke mode (offline) the Inception weights are **random** (`make_offline_inception_weights`) and
an early layer is used: the code path is the real one, **the number is not a FID**. Set
`CSIGEN_FID_WEIGHTS` to a weights file to use it instead.
"""),
    code(r"""
G = load_trained(config, task).nets.G
weights = os.environ.get(fid.ENV_WEIGHTS) or None
random_weights = SMOKE and weights is None
if random_weights:
    weights = fid.make_offline_inception_weights(os.path.join(OUT, "offline-inception.pt"))
n_samples = 32 if SMOKE else (fid.DEFAULT_NUM_SAMPLES if GPU else 1000)
try:
    fid_g = fid.fid_of_generator(G, fid.reference_images(task, "train"), num_samples=n_samples,
                                 weights_path=weights, feature_layer="64" if random_weights else "2048")
except fid.InceptionWeightsUnavailable as err:
    fid_g = float("nan")
    print(f"FID skipped: {err}")
what = (f"NOT a FID (random Inception weights), {n_samples} samples" if random_weights
        else f"FID, {n_samples} samples vs the {len(task.train_images)} training inliers")
pd.DataFrame([{"variant": "csi+g", "measured": round(fid_g, 1), "what was measured": what,
               "paper FID": results.PAPER_FID["csi+g"],
               "paper source": "Yu & Chiu, CIFAR-10 (reference and sample count unstated)"}])
"""),
    md(r"""
## Summary

- CSI + G trains an SNGAN generator on the inliers alongside $\mathcal{F}$; every $N = 5$ batches
  $\mathcal{F}$ is updated on real and synthetic images together ($\mathcal{L}_{\text{JOINT}}$, Eq. 5).
- $\mathcal{G}$ is trained both adversarially (Eq. 7) and to produce good contrastive instances
  through $\mathcal{F}$ ($\mathcal{L}_{\text{CSI-S}}$, Eq. 6).
- The paper reports +0.5 AUROC (CIFAR-10 mean) over CSI, and FID 69.5 for this variant.

## Exercises

1. **Negatives in Eq. 5.** With $B$ real and $B'$ synthetic images and $K$ rotations, how many
   negatives does each anchor view have in $\mathcal{L}_{\text{JOINT}}$? Check with `check_answer`.
   (Hint: with identical features NT-Xent is $\log(1 + \#\text{negatives})$.)
2. **The cadence $N$.** Retrain with `gan_every=1` and `gan_every=20` (via `make_config`, in new
   folders). How do the samples and the AUROC change? What does $N$ trade off?
3. **FID's reference.** Recompute the FID against `fid.reference_images(task, "test")` and with
   half the samples. How much does the number move, and what does that say about comparing FIDs
   across papers?
"""),
    code(r"""
def check_answer(negatives, B=8, B_syn=8, K=4):
    # Exercise 1: measured on NT-Xent over all 2 K (B + B') views of X u X~ (Eq. 5) with identical features
    loss = losses.nt_xent(torch.ones(2 * K * (B + B_syn), 16))
    expected = round(math.exp(float(loss)) - 1)
    assert negatives == expected, f"{negatives} is not it; try again"
    print(f"correct: {expected} negatives per anchor for B = {B}, B' = {B_syn}, K = {K}")
"""),
    md(r"""Solution of exercise 1 (try it yourself first):"""),
    code(r"""
check_answer(2 * 4 * (8 + 8) - 2)  # all views but the anchor itself and its positive
"""),
]

# =========================================================================== 03
NB03 = common(
    "03 · The full model: CSI + G + E (adversarial autoencoder)",
    r"""
The complete method of Yu & Chiu: the generator of notebook 02 becomes the decoder of an
**adversarial autoencoder** with an encoder $\mathcal{E}$ and a latent discriminator $\mathcal{D}'$.
This notebook walks Algorithm 1 line by line against the code, trains the full model, looks at its
reconstructions (the paper's Figure 2) and puts the three variants side by side (the ablation).
""",
    r"""
- the adversarial-autoencoder losses: reconstruction (Eq. 8), latent prior (Eq. 9), latent
  reconstruction (Eq. 10), and Eq. 7 with reconstructions;
- every line of Algorithm 1 and the code that implements it;
- reconstructions $\mathcal{G}(\mathcal{E}(x))$ of inliers and outliers;
- the ablation CSI -> CSI + G -> full on one class, next to the paper's numbers.
""",
    r"""
| where | preset | data | time |
|---|---|---|---|
| CPU, smoke mode (`CSIGEN_SMOKE=1`) | `smoke`: 4 steps, GAN block every 2 | built-in `shapes` | 1-4 min with the runs of 01 and 02 present (2-core CPU) |
| CPU | `cpu`: 80 steps, G/E/D of 64 channels | one CIFAR-10 class | about 14 min (measured), plus about 22 min if the runs of notebooks 01 and 02 are missing |
| Colab T4 GPU | `quick`: 100 epochs of 64 images | one CIFAR-10 class | about 1 h, plus about 75 min without the runs of 01 and 02: **estimates**, not yet measured |
""",
    imports="""
from csigen import losses, models, plotting, results, widgets
from csigen.config import make_config
from csigen.data import load_task_for, to_float
from csigen.score import auroc
from csigen.train import Trainer, run
""",
) + [
    md(r"""
## 1 The adversarial autoencoder

$\mathcal{E}$ maps an image to a latent code, and $\mathcal{G}$ decodes it: $\hat{x} = \mathcal{G}(\mathcal{E}(x))$.
Four objectives train $\mathcal{E}$, $\mathcal{G}$, $\mathcal{D}$ and $\mathcal{D}'$. First the
discriminator sees real, synthetic **and reconstructed** images (as in VAE-GAN):

$$\mathcal{L}_{\text{D}} = \log \mathcal{D}(x) + \log(1 - \mathcal{D}(\tilde{x})) + \log(1 - \mathcal{D}(\hat{x})) \tag{7}$$

Reconstructions must match in pixels and, contrastively, in $\mathcal{F}$'s feature space under two
independent augmentations ($\lambda = 100$; `csigen` averages the squared error over pixels, the scale
at which $\lambda = 100$ balances a cosine in $[-1, 1]$):

$$\mathcal{L}_{\text{REC}} = \lambda \|x - \hat{x}\|_2^2 - \text{sim}\big(\mathcal{F}(T_1(x)), \mathcal{F}(T_2(\hat{x}))\big) \tag{8}$$

A latent discriminator $\mathcal{D}'$ pushes the codes $\mathcal{E}(x)$ towards the prior
$h \sim \mathcal{N}(0, I)$, so that $\mathcal{G}$ decodes prior samples and codes alike:

$$\mathcal{L}_{\text{LD}} = \log \mathcal{D}'(h) + \log(1 - \mathcal{D}'(\mathcal{E}(x))) \tag{9}$$

and $\mathcal{E}$ must invert $\mathcal{G}$ on prior samples:

$$\mathcal{L}_{\text{LREC}} = \|\mathcal{E}(\mathcal{G}(h)) - h\|_2^2 \tag{10}$$

$\mathcal{E}$ mirrors $\mathcal{G}$ (down-sampling residual blocks 32 -> 4, then a linear layer to
$h \in \mathbb{R}^{128}$); $\mathcal{D}'$ is a small MLP on $h$:
"""),
    code(r"""
config = config_for("full")
nets = {"E: encoder": (models.Encoder(config.z_dim, config.e_channels), models.Encoder(128, 256)),
        "D': latent discriminator": (models.LatentDiscriminator(config.z_dim), models.LatentDiscriminator(128))}
count = models.count_parameters
pd.DataFrame({f"parameters, preset {PRESET!r}": {k: count(ours) for k, (ours, _) in nets.items()},
              "parameters, paper sizes": {k: count(paper) for k, (_, paper) in nets.items()}})
"""),
    md(r"""
## 2 Algorithm 1, line by line

| Algorithm 1 | loss in `csigen.losses` | where in `Trainer` (history column) | updates |
|---|---|---|---|
| Update $\theta_\mathcal{F}$ by minimising $\mathcal{L}_{\text{CSI}}(X)$ | `csi_loss` (Eq. 4) | `train_step`, every step (`csi`) | F |
| **if** every $N$ batches | | `(step + 1) % gan_every == 0` calls `_gan_block` | |
| Sample plenty $h \sim \mathcal{N}(0, I)$ | | `G.sample_latent` | |
| $\tilde{X}, \hat{X} \leftarrow \mathcal{G}(h), \mathcal{G}(\mathcal{E}(X))$ | | `x_tilde`, `x_hat` | |
| $\arg\min_{\theta_\mathcal{D}} \max_{\theta_\mathcal{G}, \theta_\mathcal{E}} \mathcal{L}_{\text{D}}(X, \tilde{X}, \hat{X})$ | `discriminator_loss`, `generator_adversarial_loss` (Eq. 7) | `_gan_block` (`d`, then `g_adv`) | D, then G and E |
| $\theta_\mathcal{G} \leftarrow \arg\min \mathcal{L}_{\text{CSI-S}}(\tilde{X})$ | `csi_s_loss` (Eq. 6), F frozen | `_gan_block` (`csi_s`) | G |
| $\arg\min_{\theta_{\mathcal{D}'}} \max_{\theta_\mathcal{E}} \mathcal{L}_{\text{LD}}(h, X)$ | `latent_discriminator_loss`, `encoder_latent_adversarial_loss` (Eq. 9) | `_gan_block` (`ld`, then `e_adv`) | D', then E |
| Sample $T_1, T_2 \sim \mathcal{T}$ | inside `reconstruction_loss` | | |
| $\theta_\mathcal{G}, \theta_\mathcal{E} \leftarrow \arg\min \mathcal{L}_{\text{REC}}(X, \hat{X}, T_1, T_2)$ | `reconstruction_loss` (Eq. 8), F frozen | `_gan_block` (`rec`, `rec_pixel`, `rec_sim`) | G and E |
| $\theta_\mathcal{E} \leftarrow \arg\min \mathcal{L}_{\text{LREC}}(h)$ | `latent_reconstruction_loss` (Eq. 10) | `_gan_block` (`lrec`) | E |
| $\theta_\mathcal{F} \leftarrow \arg\min \mathcal{L}_{\text{JOINT}}(X \cup \tilde{X})$ | `joint_loss` (Eq. 5) | `_gan_block` (`joint`) | F |

The updates are sequential, as in the algorithm: each recomputes its forward pass with the weights
the previous one left. Here is the code:
"""),
    code(r"""
import inspect

print(inspect.getsource(Trainer._gan_block))
"""),
    md(r"""
## 3 Train the full model
"""),
    code(r"""
task = load_task_for(config)
result = run(config, run_dir("full"), task=task, callbacks=[plotting.LiveLossPlot(every=1 if SMOKE else 25)])
print(f"{result['steps']} steps, {result['train_seconds'] / 60:.1f} min of training on {result['device']}")
history = pd.read_csv(run_dir("full") / "history.csv")
fig, axes = plt.subplots(1, 2, figsize=(13, 3.5))
window = 1 if SMOKE else 20
plotting.loss_curves(history, ["csi", "joint", "csi_s"], ax=axes[0], window=window, title="contrastive (F, G)")
plotting.loss_curves(history, ["d", "g_adv", "ld", "e_adv", "rec", "lrec"], ax=axes[1], window=window,
                     title="adversarial autoencoder")
plt.show()
"""),
    md(r"""
## 4 Reconstructions of inliers and outliers (Figure 2)

The paper's Figure 2 (inlier class *cat*): inliers are reconstructed as themselves, while **outliers
are reconstructed as inliers**: $\mathcal{G}$ only knows how to draw the inlier class. A first look,
one outlier per other class:
"""),
    code(r"""
trainer = load_trained(config, task)
G, E = trainer.nets.G.eval(), trainer.nets.E.eval()


def reconstruct(images):
    x = to_float(images, device=trainer.device)
    with torch.no_grad():
        return x.cpu(), G(E(x)).cpu()


inliers = task.test_images[task.test_is_inlier][:8]
others = [c for c in range(task.num_classes) if c != task.inlier]
outliers = torch.cat([task.test_images[task.test_labels == c][:1] for c in others])[:8]  # one per class
fig, axes = plt.subplots(2, 1, figsize=(9, 5.5))
plotting.reconstructions(*reconstruct(inliers), ax=axes[0], title=f"(a) inliers ({task.inlier_name}), G(E(x))")
plotting.reconstructions(*reconstruct(outliers), ax=axes[1], title="(b) outliers and G(E(x))")
plt.show()
"""),
    md(r"""
If outliers become inliers, the reconstruction error $\|x - \mathcal{G}(\mathcal{E}(x))\|^2$ is itself an
anomaly score, the classic reconstruction-based detector. How does it do on (up to 500 of each of)
the test images, compared with the contrastive score of Eq. 11?
"""),
    code(r"""
def reconstruction_error(images):
    x, x_hat = reconstruct(images)
    return ((x - x_hat) ** 2).mean(dim=(1, 2, 3))


err_in = reconstruction_error(task.test_images[task.test_is_inlier][:500])
err_out = reconstruction_error(task.test_images[~task.test_is_inlier][:500])
print(f"mean squared error: inliers {err_in.mean():.4f}, outliers {err_out.mean():.4f}")
print(f"AUROC: -error as the score {100 * auroc(-err_in, -err_out):.1f}%, Eq. 11 {100 * result['auroc']:.1f}%")
"""),
    md(r"""
## 5 The ablation: CSI -> CSI + G -> full

All three variants on the same class, preset and seed; the runs of notebooks 01 and 02 are loaded if
present, else trained now. The paper's ablation numbers are the **mean over the 10 CIFAR-10 classes**
at the full recipe (1,000 epochs): a single class at a short preset is **not directly comparable**;
for CIFAR-10 the CSI paper's number for this class is given as well. The paper's differences (0.5 and
0.3 points) are smaller than the spread between seeds of a short run: compare several seeds before
reading anything into one.
"""),
    code(r"""
runs = {v: run(config_for(v), run_dir(v), task=task) for v in ("csi", "csi+g", "full")}
table = pd.DataFrame({"ours (measured)": {v: 100 * r["auroc"] for v, r in runs.items()},
                      "paper": results.PAPER_ABLATION})
table.index = ["CSI", "CSI + G", "full (CSI + G + E)"]
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
title = f"measured: {DATASET}/{task.inlier_name}, preset {PRESET}; paper: CIFAR-10 mean"
plotting.compare_with_paper(table, ax=axes[0], title=title)
for v in runs:
    s = np.load(run_dir(v) / "scores.npz")
    plotting.roc_curve(s["scores"], s["is_inlier"], ax=axes[1], label=v)
plt.show()
if DATASET == "cifar10":
    table["paper, CSI for this class"] = results.CSI_PAPER_PER_CLASS[task.inlier_name]
table.round(1).rename(columns={"paper": "paper (CIFAR-10 mean of 10 classes)"})
"""),
    md(r"""
Every finished run under `OUT`, with its full `result.json` (config, timings, environment):
"""),
    code(r"""
picker = widgets.run_picker(OUT)
picker.update()  # render once directly (errors inside widget callbacks are otherwise swallowed)
picker
"""),
    md(r"""
## Summary

- The full model makes $\mathcal{G}$ the decoder of an adversarial autoencoder: $\mathcal{E}$,
  $\mathcal{D}'$ and the losses of Eq. 7-10 join $\mathcal{L}_{\text{CSI}}$, $\mathcal{L}_{\text{CSI-S}}$
  and $\mathcal{L}_{\text{JOINT}}$ (Eq. 4-6) in Algorithm 1, one sequential update per line.
- Reconstructions $\mathcal{G}(\mathcal{E}(x))$ of outliers look like inliers (Figure 2); the
  detector itself stays the contrastive score of Eq. 11 on $\mathcal{F}$.
- The paper's ablation on CIFAR-10: 94.3 (CSI) -> 94.8 (+ G) -> 95.1 (+ E), and FID 69.5 -> 54.1.

## Exercises

1. **Equilibrium.** If $\mathcal{D}$ cannot tell real from synthetic and reconstructed images and
   outputs $\mathcal{D}(\cdot) = 1/2$ everywhere, what is $-\mathcal{L}_{\text{D}}$ (Eq. 7), the loss
   $\mathcal{D}$ minimises? Check with `check_answer`.
2. **The weight $\lambda$.** Retrain with `rec_lambda=0` and `rec_lambda=1000` (new folders). What
   happens to the reconstructions, to the FID and to the AUROC?
3. **FID of the ablation.** With `csigen.fid` as in notebook 02, compute the FID of $\mathcal{G}$ for
   CSI + G and for the full model at the same sample count and reference. Do you see the paper's
   improvement (69.5 -> 54.1)?
"""),
    code(r"""
def check_answer(value):
    # Exercise 1: `value` is -L_D of Eq. 7 when D outputs 1/2 (logit 0) for x, x~ and x^
    zeros = torch.zeros(8)
    expected = float(losses.discriminator_loss(zeros, zeros, zeros))
    assert abs(value - expected) < 1e-5, f"{value:.4f} is not it; try again"
    print(f"correct: -L_D = {expected:.4f} at D = 1/2")
"""),
    md(r"""Solution of exercise 1 (try it yourself first):"""),
    code(r"""
check_answer(3 * math.log(2))  # three terms, each -log(1/2)
"""),
]

NOTEBOOK_CELLS = {"01_csi.ipynb": NB01, "02_adding_generator.ipynb": NB02, "03_adding_encoder.ipynb": NB03}


def render(name: str) -> str:
    import copy

    nb = notebook(name, copy.deepcopy(NOTEBOOK_CELLS[name]))
    return json.dumps(nb, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build notebooks/*.ipynb from this file.")
    parser.add_argument("--check", action="store_true", help="exit 1 if a notebook differs from its source here")
    args = parser.parse_args(argv)
    stale = []
    for name in NOTEBOOK_CELLS:
        path = NOTEBOOKS / name
        text = render(name)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            NOTEBOOKS.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    if args.check and stale:
        print(f"out of date (run python tools/build_notebooks.py): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
