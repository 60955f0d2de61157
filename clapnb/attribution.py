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
* ``"gradcam"`` — Grad-CAM on an encoder feature map (``LayerGradCam``);
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from clapnb.model import ClapModel

#: Integrated Gradients starts from every bin this far below the clip's loudest bin (dB);
#: SmoothGrad's noise is a fraction of this range
FLOOR_DB = 100.0
#: the baselines, by name
METHODS = ("saliency", "smoothgrad", "integrated_gradients", "gradcam", "gradcam++")
#: ``(model, magnitude (N, F, T), prompt_emb (C, D), target (N,)) -> masks (N, F, T)``
Explainer = Callable[[ClapModel, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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
# Grad-CAM: a tap on an encoder feature map, and the way back to the STFT grid
# ---------------------------------------------------------------------------------
def _unfold_laion(x: torch.Tensor, r: int) -> torch.Tensor:
    """Inverse of ``LaionClap._fold``: ``(N, C, H/r, r*W)`` map -> ``(N, H*W, C)`` tokens."""
    n, c, h_r, rw = x.shape
    return x.reshape(n, c, h_r, r, rw // r).permute(0, 1, 3, 2, 4).reshape(n, c, -1).transpose(1, 2)


@contextmanager
def feature_tap(model: ClapModel, index: int = -1) -> Iterator[nn.Module]:
    """An ``nn.Identity`` through which the encoder feature map
    ``model.encode_spectrogram(X).features[index]`` ``(N, C, F', T')`` flows while the
    context is open: the layer to give captum's layer methods.

    TinyCLAP: the output of conv block ``index``. LAION-CLAP: the output of Swin stage
    ``index`` (features 1-4; the patch embedding, feature 0, is not supported), folded
    from HTSAT's token layout to frequency x time and back, so gradients flow through it.
    """
    tap = nn.Identity()
    if hasattr(model, "audio_encoder") and hasattr(model.audio_encoder, "blocks"):   # TinyCLAP
        blocks = model.audio_encoder.blocks
        _check_index(index, len(blocks), "conv block")
        handle = blocks[index].register_forward_hook(lambda module, inputs, out: tap(out))
    elif hasattr(model, "clap"):                                                       # LAION-CLAP
        layers = model.clap.audio_branch.layers
        n = len(layers) + 1
        _check_index(index, n, "feature map")
        if index % n == 0:
            raise ValueError("Grad-CAM on LAION-CLAP taps a Swin stage (features 1-4 or -1..-4), "
                             "not the patch embedding (feature 0)")
        layer = layers[index % n - 1]
        r = model.clap.audio_branch.freq_ratio

        def hook(module, inputs, out):
            tokens, attn = out
            return _unfold_laion(tap(model._fold(tokens, layer.input_resolution)), r), attn

        handle = layer.blocks[-1].register_forward_hook(hook)
    else:
        raise TypeError(f"no Grad-CAM layer known for {type(model).__name__}; supported: "
                        "TinyCLAP and LAION-CLAP")
    try:
        yield tap
    finally:
        handle.remove()


def _check_index(index: int, n: int, what: str) -> None:
    if not -n <= index < n:
        raise IndexError(f"{what} index {index} out of range: this model has {n} ({-n}..{n - 1})")


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
        feature_index: Grad-CAM's feature map (see :func:`feature_tap`); -1 = the deepest.
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
    with feature_tap(model, feature_index) as tap:
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
           for i in tqdm(starts, desc=method, disable=not progress)]
    return torch.cat(out)


def baseline_explainer(method: str, **options) -> Explainer:
    """:func:`baseline_masks` of one ``method`` as an :data:`Explainer`."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")

    def explain(model, magnitude, prompt_emb, target):
        return baseline_masks(model, magnitude, prompt_emb, target, method, **options)

    explain.__name__ = method
    return explain


#: how the tables and plots name each method
LABELS = {"lmaczs": "LMAC-ZS", "saliency": "Saliency", "smoothgrad": "SmoothGrad",
          "integrated_gradients": "Integrated Gradients", "gradcam": "Grad-CAM",
          "gradcam++": "Grad-CAM++"}


def lmaczs_explainer(decoder, check_model: bool = True) -> Explainer:
    """LMAC-ZS as an :data:`Explainer`: the decoder's mask for each clip's target prompt.

    ``check_model=False`` skips the check that ``model`` is the one the decoder was
    trained for: only for the randomisation test, which feeds it a broken copy on purpose.
    """
    from clapnb import lmaczs

    def explain(model, magnitude, prompt_emb, target):
        text = prompt_emb.to(model.device)[torch.as_tensor(target, device=model.device)]
        if check_model:
            return lmaczs.predict_masks(model, decoder, magnitude, text).cpu()
        with torch.no_grad():
            magnitude = magnitude.to(model.device)
            return decoder(model.encode_spectrogram(magnitude), text, magnitude).cpu()

    explain.__name__ = "lmaczs"
    return explain


def explainers(decoder=None, check_model: bool = True, **options) -> dict[str, Explainer]:
    """Every method as an :data:`Explainer`, keyed by its label (:data:`LABELS`): LMAC-ZS
    first when a ``decoder`` is given, then the baselines (``options`` go to :func:`attribute`)."""
    out = {LABELS["lmaczs"]: lmaczs_explainer(decoder, check_model)} if decoder is not None else {}
    out.update({LABELS[m]: baseline_explainer(m, **options) for m in METHODS})
    return out
