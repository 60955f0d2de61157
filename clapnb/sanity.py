"""Stress tests for explanations: out-of-domain inputs, randomised models, and SSIM.

* :func:`out_of_domain` (with :func:`mix`, :func:`white_noise`, :func:`partners`) builds
  the out-of-domain inputs of LMAC-ZS's evaluation: each clip mixed 0.8 / 0.2 with a clip
  of another class, or with white noise (both parts normalised to the same RMS first).
* :func:`cascading_randomization` is the model-randomisation test of Adebayo et al.
  (NeurIPS 2018): re-initialise the audio encoder's layers one by one from the top
  (output) down; an explanation that is faithful to the model must change as the
  model is destroyed, one that only reflects the input (an edge detector) does not.
* :func:`ssim` measures how much a map changed (1 = identical structure).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clapnb.model import ClapModel


# ---------------------------------------------------------------------------------
# Out-of-domain inputs
# ---------------------------------------------------------------------------------
def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def mix(clip: np.ndarray, other: np.ndarray, weight: float = 0.8) -> np.ndarray:
    """``weight * clip + (1 - weight) * other`` after scaling ``other`` to the RMS of ``clip``:
    float32 ``(S,)``, as loud as ``clip``'s part. ``other`` is cropped or repeated to S samples."""
    clip, other = np.asarray(clip, dtype=np.float32).ravel(), np.asarray(other, dtype=np.float32).ravel()
    if not 0 <= weight <= 1:
        raise ValueError(f"weight must be in [0, 1], got {weight}")
    if _rms(clip) == 0 or _rms(other) == 0:
        raise ValueError("cannot mix a silent clip: both clips need some energy (RMS > 0)")
    other = np.resize(other, clip.shape)  # repeats a shorter clip
    other = other * (_rms(clip) / _rms(other))
    return (weight * clip + (1 - weight) * other).astype(np.float32)


def white_noise(n_samples: int, seed: int = 0) -> np.ndarray:
    """Gaussian white noise, float32 ``(n_samples,)`` with unit variance (:func:`mix` rescales it)."""
    return np.random.default_rng(seed).standard_normal(n_samples).astype(np.float32)


def partners(labels: Sequence[int], seed: int = 0) -> np.ndarray:
    """For each clip, the index of a random clip of a *different* class: ``(N,)``."""
    labels = np.asarray(labels)
    if len(np.unique(labels)) < 2:
        raise ValueError("partners need clips of at least two classes")
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(labels != y)) for y in labels])


def out_of_domain(audio: Sequence[np.ndarray], labels: Sequence[int], weight: float = 0.8,
                  seed: int = 0) -> dict[str, list[np.ndarray]]:
    """The two out-of-domain versions of a set of clips: ``{"mix": ..., "noise": ...}``, each
    clip :func:`mix`-ed with a clip of another class (:func:`partners`) or with white noise."""
    if len(audio) != len(labels):
        raise ValueError(f"{len(audio)} clips but {len(labels)} labels")
    other = partners(labels, seed)
    return {"mix": [mix(a, audio[j], weight) for a, j in zip(audio, other)],
            "noise": [mix(a, white_noise(len(a), seed + i), weight) for i, a in enumerate(audio)]}


# ---------------------------------------------------------------------------------
# Cascading model randomisation
# ---------------------------------------------------------------------------------
@torch.no_grad()
def randomize_(module: nn.Module, generator: torch.Generator) -> None:
    """Re-initialise ``module`` in place: every sub-module with ``reset_parameters`` gets its
    PyTorch default initialisation (batch norms also forget their running statistics); any
    other parameter (e.g. attention position biases) is drawn from N(0, 0.02^2)."""
    covered = set()
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()
                covered.update(id(p) for p in sub.parameters(recurse=False))
        for p in module.parameters():
            if id(p) not in covered:
                p.normal_(0.0, 0.02)


def cascading_randomization(model: ClapModel, seed: int = 0) -> Iterator[tuple[str, ClapModel]]:
    """Yield ``(layer name, model)`` after re-initialising each encoder layer in turn, top down
    (``model.encoder_layers()``): step k has the top k layers random. One copy of ``model`` is
    made and changed step by step; ``model`` itself is left alone. The copy's ``cache_key``
    says it is randomised, so no embedding cache ever mixes it up with the trained model.
    """
    broken = copy.deepcopy(model).eval()
    generator = torch.Generator().manual_seed(seed)
    names = []
    for name, module in broken.encoder_layers():
        randomize_(module, generator)
        names.append(name)
        broken.cache_key = f"{model.cache_key}|randomized:{','.join(names)}|seed={seed}"
        yield name, broken


def randomization_ssim(model: ClapModel, explainers: dict, magnitude: torch.Tensor,
                       prompt_emb: torch.Tensor, target: torch.Tensor, seed: int = 0):
    """The cascading-randomisation test for several methods at once.

    Each explainer (``(model, magnitude, prompt_emb, target) -> masks (N, F, T)``) explains
    the same clips and targets on the trained model and after each step of
    :func:`cascading_randomization`. Returns a pandas DataFrame: one row per step (named
    by the layer randomised last), one column per method, the mean :func:`ssim` between
    the original and the new masks. Lower means the maps changed more: a faithful method
    should fall towards 0 as the model is destroyed.
    """
    import pandas as pd
    original = {name: explain(model, magnitude, prompt_emb, target) for name, explain in explainers.items()}
    rows = {}
    for layer, broken in cascading_randomization(model, seed):
        rows[layer] = {name: float(ssim(original[name], explain(broken, magnitude, prompt_emb, target)).mean())
                       for name, explain in explainers.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("randomised down to")


# ---------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------
def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``(size,)`` normalised 1-D Gaussian; SSIM's window is its outer product with itself."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, data_range: float = 1.0,
         size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """Mean structural similarity of image pairs ``(N, H, W)`` -> ``(N,)`` (Wang et al. 2004).

    Local means, variances and covariance under an ``size`` x ``size`` Gaussian window
    (std ``sigma``), over the positions where the window fits ('valid'); per position
    ``(2 mu_a mu_b + C1)(2 cov + C2) / ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2))`` with
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``, ``L = data_range`` (1 for masks in [0, 1]);
    the result is the mean over positions. 1 means identical.
    """
    a = torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a).detach().double().cpu()
    b = torch.as_tensor(np.asarray(b) if not isinstance(b, torch.Tensor) else b).detach().double().cpu()
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"ssim compares image pairs of the same (N, H, W) shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[1:]) < size:
        raise ValueError(f"images {tuple(a.shape[1:])} are smaller than the {size} x {size} window; "
                         "pass a smaller size")
    g = gaussian_window(size, sigma)

    def blur(x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x[:, None], g.view(1, 1, -1, 1))
        return F.conv2d(x, g.view(1, 1, 1, -1))[:, 0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean(dim=(1, 2)).numpy()
