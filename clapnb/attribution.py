"""Gradient baselines for LMAC-ZS, through captum, and one rule that turns them into masks.

Every baseline explains the same function, the zero-shot classifier seen from the
spectrogram: :func:`zero_shot_forward` maps a linear STFT magnitude ``(N, F, T)`` to one
logit per class prompt, ``logit_scale * cos(embed_from_spectrogram(X), prompt)``. captum
then explains it unchanged:

* ``"saliency"`` — ``|d logit / d log X|`` (captum ``Saliency``);
* ``"smoothgrad"`` — that saliency averaged over copies of ``log X`` with Gaussian noise (``NoiseTunnel``);
* ``"integrated_gradients"`` — ``(log X - log B) * mean gradient`` on the straight path from a
  near-silent baseline ``B`` (every bin :data:`FLOOR_DB` below the clip's loudest) to ``X``
  (``IntegratedGradients``);
* ``"gradcam"`` — Grad-CAM on an encoder feature map (``LayerGradCam`` on the layer the
  backend hands over, ``model.feature_tap``);
* ``"gradcam++"`` — Grad-CAM++ (Chattopadhay et al. 2018), not in captum: :func:`gradcam_plus_plus`
  computes it from captum's ``LayerActivation`` and ``LayerGradientXActivation`` outputs.

The three input-gradient methods explain the *log*-magnitude spectrogram (the dB picture
one looks at): a gradient with respect to the linear magnitude ``X`` is dominated by the
quietest bins, because every CLAP front end takes a logarithm (``d log X / d X = 1 / X``).
Grad-CAM maps live on the encoder's coarse mel x time grid; :func:`cam_to_stft` brings
them to the STFT grid (bilinear upsampling to ``(n_mels, T)``, then each STFT bin takes the
filter-weighted mean of the mel bands covering it, from ``model.mel_filters()``).

**The attribution -> mask rule** (:func:`to_mask`), the same for every baseline: keep the
positive part (evidence *for* the class), divide by its largest value in the clip, so the
mask is 1 on the most important bin and lies in [0, 1]. LMAC-ZS needs no rule: its decoder
outputs masks in [0, 1] directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from clapnb import lmaczs
from clapnb.model import ClapModel
from clapnb.settings import progress_bar

#: Integrated Gradients starts from every bin this far below the clip's loudest bin (dB);
#: SmoothGrad's noise is a fraction of this range
FLOOR_DB = 100.0
#: the baselines, by name
METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "gradcam++")


@runtime_checkable
class Explainer(Protocol):
    """What every method here is, LMAC-ZS and the gradient baselines alike (peers, one shape):
    ``explainer(model, magnitude (N, F, T), prompt_emb (C, D), target (N,)) -> masks (N, F, T)``
    in [0, 1] on the CPU, the mask of each clip for its ``target`` prompt.

    As in captum, a method never guesses a model's insides: the layer it needs comes from the
    model's own interface (``model.feature_tap``, ``model.encode_spectrogram``). The model is
    an argument of the call so that the randomisation check can hand every explainer the
    same broken copies.
    """

    name: str

    def __call__(self, model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor: ...


def zero_shot_forward(model: ClapModel, prompt_emb: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """The zero-shot classifier as captum sees it: ``(N, F, T)`` magnitude -> ``(N, C)`` logits,
    ``logit_scale * cos(audio embedding, prompt c)`` for the C rows of ``prompt_emb``."""
    if prompt_emb.ndim != 2 or prompt_emb.shape[1] != model.embed_dim:
        raise ValueError(f"prompt_emb must be (C, {model.embed_dim}) text embeddings "
                         f"(model.embed_text(prompts)), got shape {tuple(prompt_emb.shape)}")
    prompts = F.normalize(prompt_emb.detach().to(model.device).float(), dim=-1)
    scale = model.logit_scale

    def forward(magnitude: torch.Tensor) -> torch.Tensor:
        return scale * model.embed_from_spectrogram(magnitude) @ prompts.T

    return forward


# ---------------------------------------------------------------------------------
# Grad-CAM: the backend's feature tap, and the way back to the STFT grid
# ---------------------------------------------------------------------------------
def cam_to_stft(model: ClapModel, cam: torch.Tensor, n_frames: int) -> torch.Tensor:
    """A map on the encoder's mel x time grid ``(N, F', T')`` -> the STFT grid ``(N, F, n_frames)``.

    Bilinear upsampling to ``(n_mels, n_frames)``, then STFT bin f gets
    ``sum_m W[f, m] map[m] / sum_m W[f, m]`` with ``W = model.mel_filters()`` ``(F, n_mels)``;
    bins no mel filter covers get 0.
    """
    if cam.ndim != 3:
        raise ValueError(f"expected a (N, F', T') map, got shape {tuple(cam.shape)}")
    weights = model.mel_filters().to(cam.device, cam.dtype)                      # (F, M)
    mel = F.interpolate(cam[:, None], size=(weights.shape[1], n_frames), mode="bilinear",
                        align_corners=False)[:, 0]                               # (N, M, T)
    total = weights.sum(dim=1, keepdim=True)
    weights = torch.where(total > 0, weights / total.clamp_min(1e-12), torch.zeros_like(weights))
    return torch.einsum("fm,nmt->nft", weights, mel)


def gradcam_plus_plus(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ from a layer's activations ``A`` and the gradients ``g = d logit / d A``,
    both ``(N, C, H, W)`` -> ``(N, H, W)``.

    ``alpha = g^2 / (2 g^2 + sum_hw A g^3)`` (0 where the denominator is 0),
    ``w_c = sum_hw alpha relu(g)``, map ``= relu(sum_c w_c A_c)``: Chattopadhay et al. (2018),
    eq. 19, with the exponential-of-the-score higher derivatives written as powers of g.
    """
    if activations.shape != gradients.shape or activations.ndim != 4:
        raise ValueError(f"activations {tuple(activations.shape)} and gradients "
                         f"{tuple(gradients.shape)} must be the same (N, C, H, W)")
    g2 = gradients ** 2
    denominator = 2 * g2 + (activations * gradients ** 3).sum(dim=(2, 3), keepdim=True)
    alpha = torch.where(denominator != 0, g2 / torch.where(denominator != 0, denominator, 1.0), 0.0)
    weights = (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
    return F.relu((weights * activations).sum(dim=1))


# ---------------------------------------------------------------------------------
# Attributions and masks
# ---------------------------------------------------------------------------------
def attribute(model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
              target: torch.Tensor, method: str, *, feature_index: int = -1, ig_steps: int = 32,
              smooth_samples: int = 16, smooth_noise: float = 0.15,
              internal_batch_size: int = 32) -> torch.Tensor:
    """Raw attribution of each clip's logit for its ``target`` prompt: ``(N, F, T)``.

    Args:
        magnitude: ``(N, F, T)`` linear STFT magnitudes.
        prompt_emb: ``(C, D)`` prompt embeddings; ``target`` ``(N,)`` picks a row per clip.
        method: one of :data:`METHODS`.
        feature_index: Grad-CAM's feature map (see ``model.feature_tap``); -1 = the deepest.
        ig_steps: integration points of Integrated Gradients.
        smooth_samples, smooth_noise: SmoothGrad's noisy copies, and the standard deviation
            of the noise added to ``log X`` as a fraction of the :data:`FLOOR_DB` range
            (0.15: about 15 dB).
        internal_batch_size: forward passes per batch inside IG and SmoothGrad.
    """
    from captum.attr import (IntegratedGradients, LayerActivation, LayerGradCam,
                             LayerGradientXActivation, NoiseTunnel, Saliency)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if magnitude.ndim != 3 or magnitude.is_complex():
        raise ValueError(f"expected a real (N, F, T) magnitude, got {tuple(magnitude.shape)} "
                         f"{magnitude.dtype}; use model.spectrogram(audio).abs()")
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    if len(target) != len(magnitude):
        raise ValueError(f"{len(magnitude)} clips but {len(target)} targets: one prompt index per clip")
    if target.min() < 0 or target.max() >= len(prompt_emb):
        raise IndexError(f"targets must index the {len(prompt_emb)} prompts, got {target.tolist()}")
    forward = zero_shot_forward(model, prompt_emb)
    x = magnitude.detach().to(model.device).float()
    target = target.tolist()
    if method in ("saliency", "smoothgrad", "integrated_gradients"):
        log_x = torch.log(x.clamp_min(1e-20)).requires_grad_()

        def from_log(z: torch.Tensor) -> torch.Tensor:
            return forward(torch.exp(z))

        log_range = FLOOR_DB / 20 * math.log(10)               # the FLOOR_DB range in nats
        if method == "saliency":
            out = Saliency(from_log).attribute(log_x, target=target, abs=True)
        elif method == "smoothgrad":
            out = NoiseTunnel(Saliency(from_log)).attribute(
                log_x, nt_type="smoothgrad", nt_samples=smooth_samples,
                nt_samples_batch_size=internal_batch_size, stdevs=smooth_noise * log_range,
                target=target, abs=True)
        else:
            floor = log_x.detach().flatten(1).amax(dim=1)[:, None, None] - log_range
            out = IntegratedGradients(from_log).attribute(
                log_x, baselines=floor.expand_as(log_x).contiguous(), target=target,
                n_steps=ig_steps, internal_batch_size=internal_batch_size)
        return out.detach()
    x.requires_grad_()
    with model.feature_tap(feature_index) as tap:
        if method == "gradcam":
            cam = LayerGradCam(forward, tap).attribute(x, target=target, relu_attributions=True)[:, 0]
        else:
            acts = LayerActivation(forward, tap).attribute(x)
            grads = LayerGradientXActivation(forward, tap, multiply_by_inputs=False).attribute(
                x, target=target)
            cam = gradcam_plus_plus(acts, grads)
    return cam_to_stft(model, cam.detach(), x.shape[-1])


def to_mask(attribution: torch.Tensor) -> torch.Tensor:
    """The one attribution -> mask rule: ``relu(a) / max relu(a)`` per clip, ``(N, ...)`` in [0, 1].

    A clip with no positive attribution gets an all-zero mask.
    """
    positive = F.relu(attribution.float())
    top = positive.flatten(1).amax(dim=1).reshape(-1, *[1] * (positive.ndim - 1))
    return torch.where(top > 0, positive / top.clamp_min(1e-30), torch.zeros_like(positive))


def baseline_masks(model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
                   target: torch.Tensor, method: str, batch_size: int = 4, progress: bool = False,
                   **options) -> torch.Tensor:
    """Masks ``(N, F, T)`` in [0, 1] of a baseline: :func:`attribute` then :func:`to_mask`,
    ``batch_size`` clips at a time (``options`` go to :func:`attribute`). On the CPU."""
    target = torch.as_tensor(target, dtype=torch.long).reshape(-1)
    starts = range(0, len(magnitude), batch_size)
    out = [to_mask(attribute(model, magnitude[i:i + batch_size], prompt_emb, target[i:i + batch_size],
                             method, **options)).cpu()
           for i in progress_bar(starts, desc=method, disable=not progress)]
    return torch.cat(out)


@dataclass(frozen=True)
class GradientExplainer:
    """A captum gradient baseline as an :class:`Explainer`: :func:`baseline_masks` of ``method``
    (one of :data:`METHODS`) with ``options`` for :func:`attribute`."""

    method: str
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")

    @property
    def name(self) -> str:
        return self.method

    def __call__(self, model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        return baseline_masks(model, magnitude, prompt_emb, target, self.method, **self.options)


@dataclass(frozen=True)
class LmacZsExplainer:
    """LMAC-ZS as an :class:`Explainer`: the decoder's mask for each clip's target prompt.

    ``check_model=False`` skips the check that ``model`` is the one the decoder was trained
    for: only for the randomisation test, which feeds it a broken copy on purpose.
    """

    decoder: lmaczs.MaskDecoder
    check_model: bool = True
    name = "lmaczs"

    def __call__(self, model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
                 target: torch.Tensor) -> torch.Tensor:
        text = prompt_emb.to(model.device)[torch.as_tensor(target, device=model.device)]
        if self.check_model:
            return lmaczs.predict_masks(model, self.decoder, magnitude, text).cpu()
        with torch.no_grad():
            magnitude = magnitude.to(model.device)
            return self.decoder(model.encode_spectrogram(magnitude), text, magnitude).cpu()


def baseline_explainer(method: str, **options) -> GradientExplainer:
    """:func:`baseline_masks` of one ``method`` as an :class:`Explainer`."""
    return GradientExplainer(method, options)


#: how the tables and plots name each method
LABELS = {"lmaczs": "LMAC-ZS", "saliency": "Saliency", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
          "gradcam++": "Grad-CAM++"}


def lmaczs_explainer(decoder: lmaczs.MaskDecoder, check_model: bool = True) -> LmacZsExplainer:
    """LMAC-ZS as an :class:`Explainer` (see :class:`LmacZsExplainer`)."""
    return LmacZsExplainer(decoder, check_model)


def explainers(decoder=None, check_model: bool = True, **options) -> dict[str, Explainer]:
    """Every method as an :class:`Explainer`, keyed by its label (:data:`LABELS`): LMAC-ZS
    first when a ``decoder`` is given, then the baselines (``options`` go to :func:`attribute`)."""
    out = {LABELS["lmaczs"]: lmaczs_explainer(decoder, check_model)} if decoder is not None else {}
    out.update({LABELS[m]: baseline_explainer(m, **options) for m in METHODS})
    return out
