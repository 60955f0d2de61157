"""LMAC-ZS: listenable maps for zero-shot audio classifiers (Paissan et al., NeurIPS 2024).

A decoder ``M_theta(t, h)`` reads the audio encoder's intermediate features ``h``
of a clip and the text embedding ``t`` of a prompt, and outputs a mask in [0, 1]
over the clip's linear-frequency STFT magnitude ``X`` (F, T). The masked
magnitude ``M * X`` goes through the frozen CLAP audio encoder ``f`` again
(``model.embed_from_spectrogram``, which converts it to the encoder's own input
domain, e.g. log-mel). With the original phase and an inverse STFT, ``M * X``
becomes a sound you can listen to: the explanation.

**The loss implemented here.** For a batch of B clips ``X_i`` with features
``h_i`` and P prompts ``t_j`` (one per clip in training), every pair (i, j) is
used, matched and mismatched. With ``tau = model.logit_scale``::

    M_ij   = M_theta(t_j, h_i)                           mask, (F, T) in [0, 1]
    s_ij   = tau * cos(t_j, f(X_i))                      original similarity (no grad)
    s'_ij  = tau * cos(t_j, f(M_ij * X_i))               masked-in similarity
    r_ij   = softmax_j(s_ij) / max_j softmax_j(s_ij)     relevance of prompt j to clip i, in (0, 1]
    w_ij   = r_ij + u * (1 - r_ij)                       pair weight; u = ``sim_unrelated``
    e_ij   = relu(s_ij - s'_ij)^2 + a * relu(s'_ij - s_ij)^2     a = ``sim_above``

    L_sim  = sum_ij w_ij e_ij / sum_ij w_ij              masked-in audio keeps the similarities
    c_ijk  = tau * cos(t_k, f(M_ij * X_i))               masked-in audio of pair (i, j) against prompt k
    L_cls  = sum_ij r_ij CE_ij / sum_ij r_ij,  CE_ij = -log softmax_k(c_ijk)[j]
                                                         zero-shot, the masked-in audio is prompt j's
                                                         (prompts within cosine TWIN_COSINE of t_j sit out)
    u_i    = sum_j (1 - r_ij) s_ij / sum_j (1 - r_ij)    how similar clip i is to unrelated prompts
    L_out  = mean_i relu(tau * cos(t_i, f((1 - M_ii) * X_i)) - u_i)^2
                                                         masked-out audio matches its own prompt
                                                         no better than unrelated ones
    L_l1   = mean_ij mean_ft M_ij                        masks stay small
    L_tv   = mean_ij mean_ft (|d_f M_ij| + |d_t M_ij|)   masks are smooth (total variation)
    L_div  = mean_ij (1 - r_ij) * mean_ft M_ij           unrelated prompts get (nearly) empty masks

    L = w_sim L_sim + w_cls L_cls + w_out L_out + w_l1 L_l1 + w_tv L_tv + w_div L_div

``L_sim`` with ``u = a = 1`` is the paper's objective as its abstract and
figure describe it (the paper's exact equations were not available to us). The
defaults ``u = a = 0`` are this course's, for two measurable reasons:

* ``u = 0``: an unrelated prompt's pair counts only through ``L_div``. An empty
  mask leaves (near) silence, and TinyCLAP finds silence very similar to some
  prompts (cosine about 0.85 with "This is a sound of phone."), so asking an empty
  mask to reproduce an unrelated prompt's *low* similarity forces masks to keep
  the whole clip.
* ``a = 0``: only a *loss* of similarity is penalised. An event cut out of a
  scene matches its own prompt better than the scene did; a two-sided match
  penalises exactly that, and again favours masks that keep everything.

``L_cls`` asks of the masked-in audio what L-MAC (the same authors' method for
ordinary classifiers) asks: that the classifier still decides for the explained
class, here among the batch's prompts. ``L_sim`` alone does not mind a mask that
also keeps the scene's *other* events; with each scene twice per batch, prompted
with two of its events (:class:`SceneBatches` ``same_scene_pairs``), ``L_cls``
does, because the other event's prompt is one of the choices. Measured on
validation scenes (``prompt_auc`` of :func:`ground_truth_scores`, TinyCLAP): 0.730
without it; at weight 1 0.734, at 5 (the default) 0.752 and, with another seed,
0.753 (0.729 without); at 10 0.744 and at 20 0.745, where masks grow and ``gt_auc``
falls to 0.79. With one prompt there is nothing to choose: ``L_cls`` is 0.

``L_cls``, ``L_out``, ``L_l1``, ``L_tv`` and ``L_div`` are this course's choices. Every
term is switchable through :class:`LossWeights` (weight 0 turns it off), which
notebook 06 uses for an ablation. With an all-ones mask ``L_sim`` is exactly
zero, which is why the regularisers are needed.

**The decoder** (:class:`MaskDecoder`) works for any backend whose
``encode_spectrogram`` returns feature maps ``(N, C, F', T')`` on the encoder's
mel x time grid (TinyCLAP's conv blocks, LAION-CLAP's patch embedding and four
HTSAT stages). Each level goes through a small conv stack (once per clip); the
prompt's text embedding gives one query vector per level, and the dot product
of query and audio map at every position is that level's logit map. The levels
are upsampled and summed to one logit per mel band and frame, spread onto STFT
bins with the model's own mel filterbank, and refined per bin with the clip's
loudness there (so a mask can follow a harmonic that a mel band blurs).

Usage::

    decoder = load_decoder(model)                     # the committed TinyCLAP decoder
    ex = explain(model, decoder, waveform, ["This is a sound of siren."])
    ex.mask, ex.masked_in, ex.masked_out              # (P, F, T), (P, S), (P, S)
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clapnb.audio import AudioInput
from clapnb.cache import atomic_write, cache_dir, load_float_state, save_half_state
from clapnb.metrics import loudness_map, prompt_auc, roc_auc
from clapnb.model import AudioEncoding, ClapModel, check_texts
from clapnb.registry import decoder_scenes, shipped_decoder
from clapnb.synth import event_masks
from clapnb.settings import progress_bar


# ---------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------
@dataclass
class DecoderConfig:
    """What a decoder was built for; saved beside its weights and checked on use.

    feature_channels: C of each encoder feature map, shallow to deep.
    text_dim: size of the prompt embeddings.
    n_freq / n_mels: STFT bins and mel bands of the model's front end.
    stft: (n_fft, hop_length, win_length) of the model the decoder explains.
    model_name / model_key: the model's ``name`` and ``cache_key`` (its weights).
    width: channels inside the decoder.
    """

    feature_channels: list[int]
    text_dim: int
    n_freq: int
    n_mels: int
    stft: list[int]
    model_name: str
    model_key: str
    width: int = 32
    init_logit: float = -3.0   # masks start near sigmoid(-3) = 0.05: small, as training wants them
    similarity_gain: float = 5.0  # initial weight of the clip-prompt cosine in every logit
    training: dict = field(default_factory=dict)


def decoder_config(model: ClapModel, width: int = 32) -> DecoderConfig:
    """The :class:`DecoderConfig` of a new decoder for ``model`` (probes the feature shapes)."""
    s = model.stft_config
    with torch.no_grad():
        probe = torch.zeros(1, s.n_freq, s.n_frames(model.clip_samples), device=model.device)
        features = model.encode_spectrogram(probe + 1e-3).features
    return DecoderConfig(feature_channels=[int(f.shape[1]) for f in features],
                         text_dim=model.embed_dim, n_freq=s.n_freq,
                         n_mels=int(model.mel_filters().shape[1]),
                         stft=[s.n_fft, s.hop_length, s.win_length], model_name=model.name,
                         model_key=model.cache_key, width=width)


class MaskDecoder(nn.Module):
    """``(encoding, text (N, D), magnitude (N, F, T)) -> mask (N, F, T)`` in [0, 1].

    ``encoding`` is ``model.encode_spectrogram(magnitude)``: the embedding and the
    feature maps (one per level, each ``(N, C, F', T')``). Build with :func:`new_decoder`.

    The work is split so that a batch of B clips x P prompts stays cheap: the
    convolutions see only the audio (:meth:`audio_maps`, once per clip); the
    prompt enters as one query vector per level (a linear map of the text
    embedding), whose dot product with the audio map at every position says how
    strongly that position answers the prompt (:meth:`masks`, per pair). The
    levels' answers are upsampled and summed, together with the clip's CLAP
    similarity to the prompt (times a learned gain), to one logit per mel band and frame.
    """

    def __init__(self, config: DecoderConfig, mel_filters: torch.Tensor):
        super().__init__()
        self.config = config
        w = config.width
        # no per-clip normalisation here: it would hide *whether* a sound is present
        self.audio = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, w, 1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1))
            for c in config.feature_channels)
        # the clip's CLAP similarity to the prompt, scaled: one number saying "is it there at all"
        self.similarity_gain = nn.Parameter(torch.tensor(config.similarity_gain))
        self.query = nn.ModuleList(nn.Linear(config.text_dim, w) for _ in config.feature_channels)
        self.register_buffer("mel_to_stft", _mel_to_stft(mel_filters), persistent=False)
        # per STFT bin: (mel-level logit, loudness in dB) -> correction of the logit
        self.refine = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1))
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.constant_(self.refine[-1].bias, config.init_logit)

    def audio_maps(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per clip: each feature level -> ``(N, width, F', T')``."""
        return [net(f) for net, f in zip(self.audio, features, strict=True)]

    def masks(self, maps: Sequence[torch.Tensor], embedding: torch.Tensor, text: torch.Tensor,
              magnitude: torch.Tensor, clip_index: torch.Tensor | None = None) -> torch.Tensor:
        """Masks ``(K, F, T)`` of K (clip, prompt) pairs: ``text[k]`` with clip
        ``clip_index[k]`` of ``maps`` / ``embedding`` / ``magnitude`` (default: clip k)."""
        frames = magnitude.shape[-1]
        db = 20 * torch.log10(magnitude + 1e-8)
        db = (db - db.amax(dim=(1, 2), keepdim=True)).clamp(min=-100) / 50 + 1  # 1 = loudest bin
        if clip_index is not None:
            maps = [m[clip_index] for m in maps]
            db, embedding = db[clip_index], embedding[clip_index]
        size = maps[0].shape[-2:]
        x = self.similarity_gain * (embedding * text).sum(-1)[:, None, None, None]
        for m, query in zip(maps, self.query):
            # how strongly each position of this level answers the prompt: a dot product
            # of the audio map's channels with a query vector made from the text
            z = torch.einsum("kcft,kc->kft", m, query(text))[:, None] / m.shape[1] ** 0.5
            x = x + (z if z.shape[-2:] == size else
                     F.interpolate(z, size=size, mode="bilinear", align_corners=False))
        mel_logits = F.interpolate(x, size=(self.config.n_mels, frames), mode="bilinear",
                                   align_corners=False)[:, 0]                   # (K, M, T)
        logits = torch.einsum("fm,kmt->kft", self.mel_to_stft, mel_logits)     # (K, F, T)
        logits = logits + self.refine(torch.stack([logits, db], dim=-1))[..., 0]
        return torch.sigmoid(logits)

    def forward(self, encoding: AudioEncoding, text: torch.Tensor,
                magnitude: torch.Tensor) -> torch.Tensor:
        """Mask of clip i (``model.encode_spectrogram(magnitude)``) for prompt ``text[i]``:
        ``(N, F, T)``."""
        return self.masks(self.audio_maps(encoding.features), encoding.embedding, text, magnitude)


def _mel_to_stft(mel_filters: torch.Tensor) -> torch.Tensor:
    """``(F, M)`` weights: each STFT bin as a convex mix of the mel bands covering it
    (the nearest band for bins outside, or at the very edge of, the filterbank's range)."""
    fb = mel_filters.detach().float().cpu()
    total = fb.sum(dim=1, keepdim=True)
    out = fb / total.clamp(min=1e-12)
    empty = total[:, 0] <= 1e-6 * total.max()  # e.g. the Nyquist bin, where filters end
    if empty.any():
        centres = (fb * torch.arange(fb.shape[0])[:, None]).sum(0) / fb.sum(0).clamp(min=1e-12)
        for f in torch.nonzero(empty).flatten().tolist():
            out[f] = 0
            out[f, int((centres - f).abs().argmin())] = 1
    return out


def new_decoder(model: ClapModel, width: int = 32, seed: int = 0) -> MaskDecoder:
    """A freshly initialised decoder for ``model`` (deterministic for a given seed)."""
    torch.manual_seed(seed)
    return MaskDecoder(decoder_config(model, width), model.mel_filters()).to(model.device)


def check_decoder(model: ClapModel, decoder: MaskDecoder) -> None:
    """Refuse a decoder trained for another model or STFT, saying which and what to do."""
    if not isinstance(decoder, MaskDecoder):
        raise TypeError(f"expected a MaskDecoder (clapnb.lmaczs.load_decoder), got "
                        f"{type(decoder).__name__}")
    cfg, s = decoder.config, model.stft_config
    if list(cfg.stft) != [s.n_fft, s.hop_length, s.win_length]:
        raise ValueError(f"this decoder was trained for an STFT (n_fft, hop, win) = {tuple(cfg.stft)}, "
                         f"but {model.name} uses {(s.n_fft, s.hop_length, s.win_length)}; "
                         f"train a decoder for this model (clapnb.lmaczs.train_decoder)")
    if cfg.model_key != model.cache_key:
        raise ValueError(f"this decoder was trained for model {cfg.model_name!r} ({cfg.model_key}), "
                         f"not {model.name!r} ({model.cache_key}); load or train the decoder of "
                         "the model you are explaining")


# ---------------------------------------------------------------------------------
# Masks and explanations
# ---------------------------------------------------------------------------------
def predict_masks(model: ClapModel, decoder: MaskDecoder, magnitude: torch.Tensor,
                  text_emb: torch.Tensor, encoding: AudioEncoding | None = None) -> torch.Tensor:
    """Masks ``(N, F, T)`` in [0, 1] for clip i and prompt embedding ``text_emb[i]``.

    Args:
        magnitude: ``(N, F, T)`` linear STFT magnitudes on the model's grid.
        text_emb: ``(N, D)`` prompt embeddings (``model.embed_text``).
        encoding: ``model.encode_spectrogram(magnitude)``, if already computed.
    """
    check_decoder(model, decoder)
    if magnitude.shape[0] != text_emb.shape[0]:
        raise ValueError(f"{magnitude.shape[0]} spectrograms but {text_emb.shape[0]} prompt "
                         "embeddings: pass one prompt embedding per clip")
    with torch.no_grad():
        magnitude = magnitude.to(model.device)
        if encoding is None:
            encoding = model.encode_spectrogram(magnitude)
        return decoder(encoding, text_emb.to(model.device), magnitude)


@dataclass
class Explanation:
    """LMAC-ZS explanations of one clip for P prompts.

    mask: ``(P, F, T)`` in [0, 1] on the model's STFT grid.
    magnitude: ``(F, T)`` the clip's STFT magnitude.
    original: ``(S,)`` the clip as the model saw it (resampled, cropped or padded).
    masked_in / masked_out: ``(P, S)`` waveforms of ``mask * X`` and ``(1 - mask) * X``
        with the original phase (inverse STFT), at ``sample_rate``.
    similarity / similarity_in / similarity_out: ``(P,)`` cosine of each prompt with
        the original, masked-in and masked-out audio.
    """

    prompts: list[str]
    mask: torch.Tensor
    magnitude: torch.Tensor
    original: torch.Tensor
    masked_in: torch.Tensor
    masked_out: torch.Tensor
    similarity: torch.Tensor
    similarity_in: torch.Tensor
    similarity_out: torch.Tensor
    sample_rate: int

    def table(self):
        """One row per prompt: mask mean and the three similarities (a pandas DataFrame)."""
        import pandas as pd
        return pd.DataFrame({"prompt": self.prompts,
                             "mask mean": self.mask.mean(dim=(1, 2)).cpu().numpy().round(3),
                             "cos original": self.similarity.cpu().numpy().round(3),
                             "cos masked-in": self.similarity_in.cpu().numpy().round(3),
                             "cos masked-out": self.similarity_out.cpu().numpy().round(3)})


def explain(model: ClapModel, decoder: MaskDecoder, audio: AudioInput, prompts: Sequence[str],
            sample_rate: int | None = None) -> Explanation:
    """Explain one clip for each of ``prompts``: masks, listenable audio, similarities.

    Args:
        audio: one mono clip ``(S,)`` (numpy or torch; a list holding one clip, the form
            ``embed_audio`` takes, works too), at ``sample_rate`` (default: the model's
            rate). Stereo, integer PCM etc. are handled as in ``model.prepare``.
        prompts: non-empty list of non-empty strings.
    """
    prompts = check_texts(prompts)
    check_decoder(model, decoder)
    if isinstance(audio, (list, tuple)):
        if len(audio) != 1:
            raise ValueError(f"explain takes one clip at a time, got a list of {len(audio)}; "
                             "loop over the clips and call explain for each")
        audio = audio[0]
    s = model.stft_config
    _check_length(audio, sample_rate or model.sample_rate, s.win_length / model.sample_rate)
    x = model.prepare(audio, sample_rate)
    if x.shape[0] != 1:
        raise ValueError(f"explain takes one clip at a time, got {x.shape[0]}; loop over clips")
    spec = s.stft(x)                                           # (1, F, T) complex
    magnitude = spec.abs()
    text = model.embed_text(prompts)                           # (P, D)
    with torch.no_grad():
        encoding = model.encode_spectrogram(magnitude)
        p = len(prompts)
        mask = pair_masks(decoder, encoding, text, magnitude)[0]   # (P, F, T)
        emb_in = model.embed_from_spectrogram(mask * magnitude)
        emb_out = model.embed_from_spectrogram((1 - mask) * magnitude)
        waves = s.istft(torch.cat([mask * spec, (1 - mask) * spec]), length=x.shape[1])
    return Explanation(prompts=prompts, mask=mask, magnitude=magnitude[0], original=x[0],
                       masked_in=waves[:p], masked_out=waves[p:],
                       similarity=(encoding.embedding @ text.T)[0],
                       similarity_in=(emb_in * text).sum(-1), similarity_out=(emb_out * text).sum(-1),
                       sample_rate=model.sample_rate)


def _check_length(audio: AudioInput, sample_rate: int, min_seconds: float) -> None:
    """Refuse a clip shorter than one STFT frame: it has no spectrogram to mask."""
    n = np.shape(audio)[-1] if hasattr(audio, "shape") else len(audio)
    if n < min_seconds * sample_rate:
        raise ValueError(f"the clip has {n} samples ({n / sample_rate * 1000:.1f} ms), shorter than "
                         f"one STFT frame of the model ({min_seconds * 1000:.1f} ms); "
                         "explain clips of at least that length")


# ---------------------------------------------------------------------------------
# The loss
# ---------------------------------------------------------------------------------
@dataclass
class LossWeights:
    """Weight of each loss term (0 switches it off); see the module docstring."""

    sim: float = 1.0
    sim_unrelated: float = 0.0  # u: weight of unrelated pairs inside L_sim (1: all pairs alike)
    sim_above: float = 0.0      # a: weight of masked-in similarities above the original
    out: float = 0.05           # L_out is in squared logits: it is large until masks cover the sound
    l1: float = 1.0
    tv: float = 0.0
    div: float = 2.0
    cls: float = 5.0            # L_cls is in nats: a few, until masks drop the scene's other events


#: the loss terms, in the order tables show them
TERMS = ("sim", "cls", "out", "l1", "tv", "div")
#: in ``L_cls``, other prompts this close (cosine) to a pair's prompt say the same thing
#: (one class in two templates) and are left out of the choice
TWIN_COSINE = 0.95


def pair_masks(decoder: MaskDecoder, encoding: AudioEncoding, text: torch.Tensor,
               magnitude: torch.Tensor) -> torch.Tensor:
    """Masks of every (clip, prompt) pair: ``(B, P, F, T)`` for B clips and P prompts."""
    b, p = magnitude.shape[0], text.shape[0]
    clip_index = torch.arange(b, device=magnitude.device).repeat_interleave(p)
    masks = decoder.masks(decoder.audio_maps(encoding.features), encoding.embedding,
                          text.repeat(b, 1), magnitude, clip_index)
    return masks.view(b, p, *magnitude.shape[1:])


def lmaczs_loss(model: ClapModel, masks: torch.Tensor, magnitude: torch.Tensor,
                text: torch.Tensor, audio_emb: torch.Tensor, weights: LossWeights = LossWeights(),
                bf16: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
    """The LMAC-ZS loss of a batch (module docstring), differentiable in ``masks``.

    Args:
        masks: ``(B, P, F, T)`` mask of clip i for prompt j (:func:`pair_masks`).
        magnitude: ``(B, F, T)`` the clips' STFT magnitudes.
        text: ``(P, D)`` unit-norm prompt embeddings; prompt i belongs to clip i
            for ``L_out`` (needs P >= B when ``weights.out > 0``).
        audio_emb: ``(B, D)`` the clips' original embeddings.
        bf16: re-encode the masked audio under bfloat16 autocast (about 2.5x faster
            on a CPU; the loss stays float32).

    Returns:
        (total loss, {term: value, "total": weighted sum, "mask_related" / "mask_unrelated":
        relevance-weighted mean mask of related / unrelated prompts}).
    """
    b, p = masks.shape[:2]
    tau = model.logit_scale
    terms: dict[str, torch.Tensor] = {}

    def encode(magnitudes: torch.Tensor) -> torch.Tensor:
        with torch.autocast(magnitudes.device.type, dtype=torch.bfloat16, enabled=bf16):
            return F.normalize(model.embed_from_spectrogram(magnitudes).float(), dim=-1)

    with torch.no_grad():
        s = tau * audio_emb @ text.T                                         # (B, P)
        prob = s.softmax(dim=1)
        relevance = prob / prob.amax(dim=1, keepdim=True)
    if weights.sim or weights.cls:
        emb_in = encode((masks * magnitude[:, None]).flatten(0, 1)).view(b, p, -1)   # (B, P, D)
    if weights.sim:
        s_in = tau * (emb_in * text[None]).sum(-1)
        pair_weight = relevance + weights.sim_unrelated * (1 - relevance)
        error = F.relu(s - s_in) ** 2 + weights.sim_above * F.relu(s_in - s) ** 2
        terms["sim"] = (pair_weight * error).sum() / pair_weight.sum()
    if weights.cls:
        # pair (i, j)'s masked-in audio, classified zero-shot among the batch's prompts,
        # should come out as prompt j; prompts that say the same (cosine > TWIN_COSINE) sit out
        logits = tau * emb_in @ text.T                                       # (B, P, P)
        twins = (text @ text.T > TWIN_COSINE) & ~torch.eye(p, dtype=torch.bool, device=text.device)
        ce = -logits.masked_fill(twins, -torch.inf).log_softmax(-1).diagonal(dim1=1, dim2=2)
        terms["cls"] = (relevance * ce).sum() / relevance.sum()
    if weights.out:
        if p < b:
            raise ValueError(f"L_out needs each clip's own prompt: {b} clips but {p} prompts")
        own = masks[torch.arange(b), torch.arange(b)]                       # (B, F, T)
        s_out = tau * (encode((1 - own) * magnitude) * text[:b]).sum(-1)    # (B,)
        unrelated = 1 - relevance
        floor = (unrelated * s).sum(1) / unrelated.sum(1).clamp(min=1e-6)   # (B,)
        terms["out"] = (F.relu(s_out - floor) ** 2).mean()
    size = masks.mean(dim=(2, 3))                                            # (B, P)
    if weights.l1:
        terms["l1"] = size.mean()
    if weights.tv:
        terms["tv"] = ((masks.diff(dim=2).abs().mean(dim=(2, 3))
                        + masks.diff(dim=3).abs().mean(dim=(2, 3)))).mean()
    if weights.div:
        terms["div"] = ((1 - relevance) * size).mean()
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    values = {k: float(v.detach()) for k, v in terms.items()}
    values["total"] = float(total.detach())
    with torch.no_grad():  # diagnostics: mean mask of related and of unrelated prompts
        values["mask_related"] = float((relevance * size).sum() / relevance.sum())
        values["mask_unrelated"] = float(((1 - relevance) * size).sum()
                                         / (1 - relevance).sum().clamp(min=1e-6))
    return total, values


# ---------------------------------------------------------------------------------
# Training data: (clips, one prompt per clip) batches
# ---------------------------------------------------------------------------------
#: prompt templates for a single sound class during training (the first is the zero-shot prompt)
CLASS_TEMPLATES = ("This is a sound of {}.", "{}", "the sound of {}", "{} can be heard")


def event_prompt(scenes, i: int, rng: np.random.Generator) -> str:
    """A prompt naming one random event of scene ``i`` (synthetic scenes: ground truth known)."""
    return event_prompts(scenes, i, rng, 1)[0]


def event_prompts(scenes, i: int, rng: np.random.Generator, k: int) -> list[str]:
    """``k`` prompts naming different random events of scene ``i`` (cycling through
    them when the scene has fewer than ``k``), each in a random template."""
    if scenes.events is None:
        raise ValueError(f"{scenes.name!r} has no event labels; use caption_prompt")
    events = scenes.events[i]
    order = rng.permutation(len(events))
    return [CLASS_TEMPLATES[rng.integers(len(CLASS_TEMPLATES))].format(events[order[j % len(events)]].label)
            for j in range(k)]


def caption_prompt(scenes, i: int, rng: np.random.Generator) -> str:
    """One random caption of scene ``i`` (Clotho: the paper's "CT" training setting)."""
    return scenes.captions[i][rng.integers(len(scenes.captions[i]))]


class SceneBatches:
    """``batches(step) -> (waveforms (B, S), prompts [B])``: deterministic in (seed, step),
    so training can stop and resume anywhere. ``prompt`` (default: :func:`event_prompt`
    for scenes with ground-truth events, else :func:`caption_prompt`) picks each clip's text.

    With ``same_scene_pairs`` (scenes with ground-truth events only) a batch holds B/2
    scenes, each twice, prompted with two different events of it (:func:`event_prompts`):
    the decoder must then give one audio two masks that differ by the prompt.

    With ``preload`` (the default, right for the small synthetic sets) every clip is
    loaded once and kept in memory; without it (large sets such as Clotho: 10 s at
    48 kHz is 1.9 MB a clip) each batch loads its clips when it is drawn.
    """

    def __init__(self, model: ClapModel, scenes, batch_size: int = 8, seed: int = 0,
                 prompt: Callable | None = None, preload: bool = True, progress: bool = True,
                 same_scene_pairs: bool = False):
        if batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (mismatched pairs need 2 clips), "
                             f"got {batch_size}")
        if same_scene_pairs and (batch_size % 2 or scenes.events is None or prompt is not None):
            raise ValueError("same_scene_pairs needs an even batch_size, scenes with ground-truth "
                             "events and the default prompt")
        self.same_scene_pairs = same_scene_pairs
        if batch_size > len(scenes):
            raise ValueError(f"batch_size {batch_size} is larger than the {len(scenes)} clips given")
        self.model, self.scenes, self.batch_size = model, scenes, batch_size
        if prompt is None:   # name an event where the scenes know them, else use a caption
            prompt = event_prompt if scenes.events is not None else caption_prompt
        self.seed, self.prompt = seed, prompt
        self.audio = None
        if preload:
            clips = [scenes.audio(i) for i in progress_bar(range(len(scenes)), desc="loading clips",
                                                   disable=not progress)]
            self.audio = model.prepare(clips, scenes.sample_rate).cpu()

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str]]:
        rng = np.random.default_rng([self.seed, step])
        if self.same_scene_pairs:
            idx = np.repeat(rng.choice(len(self.scenes), size=self.batch_size // 2, replace=False), 2)
            prompts = [p for i in idx[::2] for p in event_prompts(self.scenes, int(i), rng, 2)]
        else:
            idx = rng.choice(len(self.scenes), size=self.batch_size, replace=False)
            prompts = [self.prompt(self.scenes, int(i), rng) for i in idx]
        if self.audio is not None:
            return self.audio[idx], prompts
        clips = [self.scenes.audio(int(i)) for i in idx]
        return self.model.prepare(clips, self.scenes.sample_rate), prompts


# ---------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------
@dataclass
class History:
    """Loss terms per training step, and validation losses every ``val_every`` steps."""

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def batch_loss(model: ClapModel, decoder: MaskDecoder, waveforms: torch.Tensor,
               prompts: list[str], weights: LossWeights, bf16: bool = False
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch of clips with one prompt each, over all clip x prompt pairs."""
    x = waveforms.to(model.device)
    magnitude = model.stft_config.stft(x).abs()
    text = model.embed_text(prompts)
    with torch.no_grad():
        encoding = model.encode_spectrogram(magnitude)
    masks = pair_masks(decoder, encoding, text, magnitude)
    return lmaczs_loss(model, masks, magnitude, text, encoding.embedding, weights, bf16)


def train_decoder(model: ClapModel, decoder: MaskDecoder,
                  batches: Callable[[int], tuple[torch.Tensor, list[str]]], steps: int,
                  weights: LossWeights = LossWeights(), lr: float = 2e-3,
                  checkpoint: str | Path | None = None, save_every: int = 50,
                  val_batches: Sequence[tuple[torch.Tensor, list[str]]] = (), val_every: int = 50,
                  bf16: bool = True, progress: bool = True,
                  callback: Callable[[int, History], None] | None = None) -> History:
    """Train ``decoder`` for ``steps`` steps of Adam (cosine learning-rate decay).

    The CLAP model stays frozen. With ``checkpoint``, the decoder, optimiser and
    history are saved there every ``save_every`` steps (atomically), and a run
    that finds the file resumes where it stopped: a resumed run ends with the
    same weights as an uninterrupted one.

    Args:
        batches: ``step -> (waveforms (B, S), B prompts)``, e.g. :class:`SceneBatches`.
        val_batches: fixed batches scored every ``val_every`` steps (no gradient).
        bf16: re-encode masked audio under bfloat16 autocast (see :func:`lmaczs_loss`).
        callback: called as ``callback(step, history)`` after every step (live plots).
    """
    check_decoder(model, decoder)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
    history, start = History(), 0
    if checkpoint is not None and Path(checkpoint).is_file():
        start, history = _load_checkpoint(checkpoint, decoder, optimiser, schedule)
    started = time.perf_counter() - history.seconds
    bar = progress_bar(range(start, steps), desc="training LMAC-ZS decoder", initial=start, total=steps,
               disable=not progress)
    for step in bar:
        decoder.train()
        waveforms, prompts = batches(step)
        loss, values = batch_loss(model, decoder, waveforms, prompts, weights, bf16)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        history.train.append(values)
        bar.set_postfix(loss=f"{values['total']:.3f}")
        done = step + 1
        if val_batches and (done % val_every == 0 or done == steps):
            history.val.append({"step": done, **validate(model, decoder, val_batches, weights)})
        history.seconds = time.perf_counter() - started
        if checkpoint is not None and (done % save_every == 0 or done == steps):
            _save_checkpoint(checkpoint, done, decoder, optimiser, schedule, history)
        if callback is not None:
            callback(done, history)
    decoder.eval()
    return history


def validate(model: ClapModel, decoder: MaskDecoder,
             val_batches: Sequence[tuple[torch.Tensor, list[str]]],
             weights: LossWeights = LossWeights()) -> dict[str, float]:
    """Mean loss terms over fixed batches, without gradients."""
    decoder.eval()
    with torch.no_grad():
        rows = [batch_loss(model, decoder, w, p, weights)[1] for w, p in val_batches]
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def _save_checkpoint(path: str | Path, step: int, decoder: MaskDecoder, optimiser, schedule,
                     history: History) -> None:
    buffer = io.BytesIO()
    torch.save({"step": step, "decoder": decoder.state_dict(), "optimiser": optimiser.state_dict(),
                "schedule": schedule.state_dict(), "config": json.dumps(asdict(decoder.config)),
                "history": json.dumps(asdict(history))}, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def _load_checkpoint(path: str | Path, decoder: MaskDecoder, optimiser, schedule
                     ) -> tuple[int, History]:
    state = torch.load(path, map_location=decoder.mel_to_stft.device, weights_only=True)
    saved = DecoderConfig(**json.loads(state["config"]))
    mine = asdict(decoder.config)
    if {k: v for k, v in asdict(saved).items() if k != "training"} != \
            {k: v for k, v in mine.items() if k != "training"}:
        raise ValueError(f"checkpoint {path} belongs to another decoder ({saved.model_name}, "
                         f"width {saved.width}); delete it or pass another checkpoint path")
    decoder.load_state_dict(state["decoder"])
    optimiser.load_state_dict(state["optimiser"])
    schedule.load_state_dict(state["schedule"])
    h = json.loads(state["history"])
    return int(state["step"]), History(train=h["train"], val=h["val"], seconds=h["seconds"])


# ---------------------------------------------------------------------------------
# Saving and loading trained decoders
# ---------------------------------------------------------------------------------
def save_decoder(decoder: MaskDecoder, path: str | Path) -> None:
    """Write the weights (float16 state dict) to ``path`` and the config to ``path.json``."""
    path = Path(path)
    save_half_state(decoder.state_dict(), path)
    with atomic_write(path.with_suffix(".json"), "w") as f:
        f.write(json.dumps(asdict(decoder.config), indent=1))


def trained_decoder_path(model: ClapModel) -> Path:
    """Where notebook 06 saves a decoder it trains for ``model`` (in the clapnb cache)."""
    return cache_dir("lmaczs") / (model.name.replace("/", "_") + f"-{model.cache_key[-12:]}.pt")


def load_decoder(model: ClapModel, path: str | Path | None = None) -> MaskDecoder:
    """A trained decoder for ``model`` in eval mode.

    Default ``path``: the decoder the registry ships for ``model`` (TinyCLAP's is
    committed); for other models the one notebook 06 trained and saved
    (:func:`trained_decoder_path`). Raises a clear error when the file is missing or
    was trained for another model.
    """
    if path is None:
        path = shipped_decoder(model) or trained_decoder_path(model)
        if not path.is_file():
            raise FileNotFoundError(f"no trained decoder for {model.name} yet: run notebook 06 "
                                    "(06_lmaczs_training.ipynb), which trains one and saves it "
                                    f"to {path}")
    path = Path(path)
    for p in (path, path.with_suffix(".json")):
        if not p.is_file():
            raise FileNotFoundError(f"decoder file {p} is missing (re-create the TinyCLAP one with: "
                                    "python scripts/train_lmaczs.py)")
    config = DecoderConfig(**json.loads(path.with_suffix(".json").read_text()))
    decoder = MaskDecoder(config, model.mel_filters())
    check_decoder(model, decoder)
    decoder.load_state_dict(load_float_state(path))
    return decoder.eval().to(model.device)


def decoder_for(model: ClapModel, steps: int = 300, max_items: int | None = 400,
                batch_size: int = 4, seed: int = 0, progress: bool = True) -> MaskDecoder:
    """A trained decoder for ``model``, whatever ran before: the one the package ships
    (TinyCLAP's), else the one saved in the cache (by notebook 06 or an earlier call),
    else one trained now for ``steps`` steps on ``max_items`` of the scenes the registry
    names for the model (:func:`clapnb.registry.decoder_scenes`: Clotho evaluation
    captions for LAION-CLAP) and saved where the next call, or notebook, finds it.

    Every notebook opened from its Colab badge runs in a fresh runtime, so notebooks
    07-09 call this rather than rely on notebook 06 having run. The default (300 steps of
    4 x 4 clip-prompt pairs) takes a few minutes on a Colab GPU; keep the cache on Google
    Drive (the notebooks' optional cell) to train once for all notebooks.
    """
    path = shipped_decoder(model) or trained_decoder_path(model)
    if path.is_file():
        return load_decoder(model, path)
    scenes = decoder_scenes(model, max_items)
    print(f"No trained LMAC-ZS decoder for {model.name} in the cache yet: training one now, "
          f"{steps} steps on {len(scenes)} clips of {scenes.name!r} (a few minutes on a GPU; "
          f"notebook 06 explains the training). It is saved to {path} for the next notebook.")
    batches = SceneBatches(model, scenes, batch_size=min(batch_size, len(scenes)), seed=seed,
                           preload=False, progress=progress)
    decoder = new_decoder(model, seed=seed)
    train_decoder(model, decoder, batches, steps, checkpoint=path.with_suffix(".checkpoint"),
                  progress=progress)
    save_decoder(decoder, path)
    path.with_suffix(".checkpoint").unlink(missing_ok=True)
    return load_decoder(model, path)   # as every later call will see it (float16 weights)


# ---------------------------------------------------------------------------------
# Checking maps against ground truth (offline: synthetic scenes)
# ---------------------------------------------------------------------------------
def ground_truth_scores(model: ClapModel, decoder: MaskDecoder, scenes, class_names: Sequence[str],
                        template: str = CLASS_TEMPLATES[0], progress: bool = True,
                        per_event: bool = False) -> dict[str, float]:
    """How well the maps of synthetic scenes match what is really there.

    For each scene, the mask of every class prompt is computed. Returns:
        gt_auc: mean ROC-AUC of a present event's mask against its ground-truth
            time-frequency mask (``synth.event_masks``), over all present events;
        prompt_auc: the same over the bins some event dominates only
            (:func:`clapnb.metrics.prompt_auc`): does the map pick the prompted event's
            bins over the other events'? (scenes of two or more events);
        loudness_gt_auc, loudness_prompt_auc: both for a prompt-blind loudness map
            (:func:`clapnb.metrics.loudness_map`), the baseline a map must beat;
        absent_to_present_mask_ratio: mean mask of absent classes' prompts over
            that of present classes' prompts;
        fid_in: share of scenes whose zero-shot prediction (over ``class_names``) is
            unchanged when only the predicted class's masked-in audio is kept;
        present_mask_mean, absent_mask_mean, n_scenes, n_events, n_prompt_events;
        with ``per_event``, also prompt_events: ``(scene, event, prompt AUC)`` of every
        event that ``prompt_auc`` averages over.
    """
    check_decoder(model, decoder)
    if scenes.events is None:
        raise ValueError(f"{scenes.name!r} has no ground-truth events; use synthetic scenes "
                         "(clapnb.ground_truth(model).scenes(...))")
    class_names = list(class_names)
    occurring = sorted({e.label for events in scenes.events for e in events})
    if missing := [c for c in occurring if c not in class_names]:
        raise ValueError(f"the scenes contain classes that are not in class_names: "
                         f"{', '.join(missing)}; pass every class that can occur "
                         "(e.g. clapnb.synth.CLASSES)")
    text = model.embed_text([template.format(c) for c in class_names])
    aucs, present, absent, same = [], [], [], []
    loud_aucs, loud_prompt_aucs, prompt_events = [], [], []   # prompt_events: (scene, event, AUC)
    for i in progress_bar(range(len(scenes)), desc="scoring maps", disable=not progress):
        magnitude = model.spectrogram([scenes.audio(i)], scenes.sample_rate).abs()
        with torch.no_grad():
            encoding = model.encode_spectrogram(magnitude)
            masks = pair_masks(decoder, encoding, text, magnitude)[0]   # (C, F, T)
            predicted = int((encoding.embedding @ text.T).argmax())
            emb_in = model.embed_from_spectrogram(masks[predicted:predicted + 1] * magnitude)
        same.append(int((emb_in @ text.T).argmax()) == predicted)
        labels = [e.label for e in scenes.events[i]]
        truth = event_masks(scenes, i, model.stft_config)
        means = masks.mean(dim=(1, 2)).cpu().numpy()
        loudness = loudness_map(magnitude[0])
        dominated = truth.any(axis=0)            # bins some event dominates
        for k, (label, gt) in enumerate(zip(labels, truth)):
            c = class_names.index(label)
            if gt.any() and not gt.all():
                aucs.append(roc_auc(masks[c], gt))
                loud_aucs.append(roc_auc(loudness, gt))
            if gt.any() and (dominated & ~gt).any():   # another event has bins too
                prompt_events.append((i, k, prompt_auc(masks[c], truth, k)))
                loud_prompt_aucs.append(prompt_auc(loudness, truth, k))
            present.append(means[c])
        absent.extend(means[c] for c, name in enumerate(class_names) if name not in labels)
    prompt_aucs = [auc for _, _, auc in prompt_events]
    nan = float("nan")   # no scene with two events that both dominate some bins
    scores = {"gt_auc": float(np.mean(aucs)),
              "prompt_auc": float(np.mean(prompt_aucs)) if prompt_aucs else nan,
              "loudness_gt_auc": float(np.mean(loud_aucs)),
              "loudness_prompt_auc": float(np.mean(loud_prompt_aucs)) if loud_prompt_aucs else nan,
              "absent_to_present_mask_ratio": float(np.mean(absent) / max(np.mean(present), 1e-12)),
              "present_mask_mean": float(np.mean(present)), "absent_mask_mean": float(np.mean(absent)),
              "fid_in": float(np.mean(same)), "n_scenes": len(scenes), "n_events": len(present),
              "n_prompt_events": len(prompt_aucs)}
    if per_event:
        scores["prompt_events"] = prompt_events
    return scores
