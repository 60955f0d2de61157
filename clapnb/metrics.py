"""How faithful is a mask to a zero-shot classifier's decision? The metrics of LMAC-ZS.

A zero-shot classifier scores a clip against C class prompts: ``softmax(logit_scale *
cos(audio, prompts))``. An explanation is a mask in [0, 1] on the clip's linear STFT
magnitude ``X`` for the predicted class c. Write ``p`` for the probability of c on
``X``, ``p_in`` on the masked-in input ``M * X`` and ``p_out`` on the masked-out
input ``(1 - M) * X``. Per clip (the tables report means over clips):

* AI (average increase, %, higher is better) = 100 * 1[p_in > p]
* AD (average drop, %, lower is better) = 100 * max(p - p_in, 0) / p
* AG (average gain, %, higher is better) = 100 * max(p_in - p, 0) / (1 - p)
* FF (faithfulness on spectra, higher is better) = p - p_out
* Fid-In (input fidelity, higher is better) = 1[argmax of the masked-in scores is still c]
* SPS (sparseness, higher = fewer bins carry the mask) — Gini index, as Quantus' ``Sparseness``
* COMP (complexity, lower = simpler) — entropy of the normalised mask, as Quantus' ``Complexity``
* MM (mask mean): the share of the spectrogram the mask keeps.

The pure functions take numpy arrays of per-clip values; :func:`evaluate_masks` runs the
model on the masked inputs and returns them all as a :class:`FaithfulnessScores`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from clapnb.model import ClapModel
from clapnb.synth import event_masks

#: table column names, in the order of the LMAC-ZS paper
METRICS = ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "MM")
#: +1 where a larger value is better, -1 where a smaller one is (MM has no direction)
DIRECTION = {"AI": 1, "AD": -1, "AG": 1, "FF": 1, "Fid-In": 1, "SPS": 1, "COMP": -1, "MM": 0}


def _prob(x, name: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if np.any((x < 0) | (x > 1)) or np.any(np.isnan(x)):
        raise ValueError(f"{name} must hold probabilities in [0, 1]; got values from "
                         f"{np.nanmin(x):.3g} to {np.nanmax(x):.3g} (pass softmax outputs, not logits)")
    return x


# ---------------------------------------------------------------------------------
# Faithfulness of the decision (per clip, numpy in, numpy out)
# ---------------------------------------------------------------------------------
def average_increase(p, p_in) -> np.ndarray:
    """AI: 100 where masking in *raised* the class probability, else 0."""
    return 100.0 * (_prob(p_in, "p_in") > _prob(p, "p"))


def average_drop(p, p_in) -> np.ndarray:
    """AD: how much of the class probability is lost on the masked-in input, in % of ``p``."""
    p, p_in = _prob(p, "p"), _prob(p_in, "p_in")
    return 100.0 * np.maximum(p - p_in, 0.0) / np.maximum(p, 1e-12)


def average_gain(p, p_in) -> np.ndarray:
    """AG: how much the masked-in input gains, in % of the room left above ``p``."""
    p, p_in = _prob(p, "p"), _prob(p_in, "p_in")
    return 100.0 * np.maximum(p_in - p, 0.0) / np.maximum(1.0 - p, 1e-12)


def faithfulness_on_spectra(p, p_out) -> np.ndarray:
    """FF: the class probability removed by masking the explanation *out*, ``p - p_out``."""
    return _prob(p, "p") - _prob(p_out, "p_out")


def input_fidelity(predicted, predicted_in) -> np.ndarray:
    """Fid-In: 1 where the masked-in input keeps the original prediction, else 0."""
    predicted, predicted_in = np.asarray(predicted), np.asarray(predicted_in)
    if predicted.shape != predicted_in.shape:
        raise ValueError(f"predictions differ in shape: {predicted.shape} vs {predicted_in.shape}")
    return (predicted == predicted_in).astype(np.float64)


# ---------------------------------------------------------------------------------
# Shape of the mask
# ---------------------------------------------------------------------------------
def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _flat_masks(masks) -> np.ndarray:
    m = _np(masks)
    if m.ndim < 2:
        raise ValueError(f"masks must be (N, ...) with one mask per clip, got shape {m.shape}")
    return np.abs(m.reshape(len(m), -1).astype(np.float64))


def sparseness(masks) -> np.ndarray:
    """SPS: Gini index of each mask's absolute values, ``(N, ...) -> (N,)`` in [0, 1).

    Quantus ``Sparseness`` (Chalasani et al., ICML 2020): ``a = |mask| / max|mask| + 1e-7``
    sorted ascending, ``G = sum_i (2 i - n - 1) a_i / (n sum_i a_i)``, i = 1..n.
    0 for a flat mask; close to 1 when one bin holds everything.
    """
    a = _flat_masks(masks)
    peak = a.max(axis=1, keepdims=True)      # scale-free, however small; all-zero: flat
    a = np.divide(a, peak, out=np.zeros_like(a), where=peak > 0) + 1e-7
    a = np.sort(a, axis=1)
    n = a.shape[1]
    i = np.arange(1, n + 1)
    return ((2 * i - n - 1) * a).sum(axis=1) / (n * a.sum(axis=1))


def complexity(masks) -> np.ndarray:
    """COMP: entropy (nats) of each mask as a distribution over bins, ``(N, ...) -> (N,)``.

    Quantus ``Complexity`` (Bhatt et al., IJCAI 2020): ``p_i = |a_i| / sum_j |a_j|``,
    ``H = -sum_i p_i ln p_i`` (``scipy.stats.entropy``). At most ln(number of bins),
    reached by a flat mask. An all-zero mask has no distribution: NaN.
    """
    a = _flat_masks(masks)
    total = a.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = a / total
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return np.where(total[:, 0] > 0, terms.sum(axis=1), np.nan)


def mask_mean(masks) -> np.ndarray:
    """MM: the mean of each mask, ``(N, ...) -> (N,)``."""
    m = _np(masks)
    return m.reshape(len(m), -1).astype(np.float64).mean(axis=1)


def roc_auc(mask, truth) -> float:
    """How well a soft mask ``(F, T)`` ranks the bins of a ground-truth bool mask ``(F, T)``:
    the ROC-AUC (0.5 = chance, 1 = every true bin scores above every other bin)."""
    from sklearn.metrics import roc_auc_score
    m = _np(mask)
    t = np.asarray(truth, dtype=bool)
    if m.shape != t.shape:
        raise ValueError(f"mask {m.shape} and ground truth {t.shape} differ in shape; both must be "
                         "on the model's STFT grid (synth.event_masks(..., model.stft_config))")
    if t.all() or not t.any():
        raise ValueError("the ground-truth mask is all True or all False: ROC-AUC is undefined")
    return float(roc_auc_score(t.ravel(), m.ravel().astype(np.float64)))


def prompt_auc(mask, truths, k: int) -> float:
    """Does a map pick the *prompted* event's bins over the other events' bins?

    ``mask (F, T)`` is the map for event ``k``'s prompt; ``truths (E, F, T)`` bool, where
    each event dominates (``synth.event_masks``; they never overlap). The ROC-AUC of the
    mask over the bins some event dominates, with event ``k``'s as positives: 0.5 means
    the map cannot tell the events apart, as a prompt-blind map (loudness) mostly cannot.
    Plain :func:`roc_auc` also rewards separating events from background, which needs
    no prompt. Needs bins of event ``k`` and of at least one other event.
    """
    t = np.asarray(truths, dtype=bool)
    m = _np(mask)
    if t.ndim != 3 or not 0 <= k < len(t):
        raise ValueError(f"truths must be (E, F, T) with event {k} among them, got shape {t.shape}")
    dominated = t.any(axis=0)
    return roc_auc(m[dominated], t[k][dominated])


def level_db(magnitude, floor_db: float = -80.0) -> np.ndarray:
    """Linear magnitude ``(F, T)`` -> decibels relative to its maximum, floored at ``floor_db``."""
    m = _np(magnitude)
    db = 20 * np.log10(np.maximum(m, 1e-10) / max(float(m.max()), 1e-10))
    return np.maximum(db, floor_db)


def loudness_map(magnitude, floor_db: float = -80.0) -> np.ndarray:
    """A prompt-blind baseline map: the clip's level in dB relative to its loudest bin
    (:func:`level_db`), scaled from ``floor_db`` (0) to 0 dB (1). ``(F, T) -> (F, T)``."""
    return (level_db(magnitude, floor_db) - floor_db) / -floor_db


# ---------------------------------------------------------------------------------
# Everything at once, with the model
# ---------------------------------------------------------------------------------
@dataclass
class FaithfulnessScores:
    """Per-clip scores, each ``(N,)``; ``predicted`` is the explained class (argmax on
    the original input) and ``p``, ``p_in``, ``p_out`` its probabilities."""

    predicted: np.ndarray
    p: np.ndarray
    p_in: np.ndarray
    p_out: np.ndarray
    ai: np.ndarray
    ad: np.ndarray
    ag: np.ndarray
    ff: np.ndarray
    fid_in: np.ndarray
    sps: np.ndarray
    comp: np.ndarray
    mm: np.ndarray

    def per_clip(self, name: str) -> np.ndarray:
        """The ``(N,)`` values of one metric by its table name (``"AI"``, ``"Fid-In"``, ...)."""
        if name not in METRICS:
            raise KeyError(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}")
        return getattr(self, name.lower().replace("-", "_"))

    def summary(self) -> dict[str, float]:
        """Mean of every metric over the clips, keyed by :data:`METRICS` names."""
        return {name: float(np.nanmean(self.per_clip(name))) for name in METRICS}


@torch.no_grad()
def zero_shot_probs(model: ClapModel, magnitude: torch.Tensor, prompt_emb: torch.Tensor,
                    batch_size: int = 16) -> torch.Tensor:
    """``(N, F, T)`` linear magnitude, ``(C, D)`` prompt embeddings -> ``(N, C)`` softmax
    over the prompts of ``logit_scale * cosine`` (the zero-shot classifier)."""
    prompts = torch.nn.functional.normalize(prompt_emb.to(model.device).float(), dim=-1)
    out = [model.logit_scale * model.embed_from_spectrogram(magnitude[i:i + batch_size].to(model.device))
           @ prompts.T for i in range(0, len(magnitude), batch_size)]
    return torch.cat(out).softmax(dim=-1).cpu()


def evaluate_masks(model: ClapModel, magnitude: torch.Tensor, masks: torch.Tensor,
                   prompt_emb: torch.Tensor, batch_size: int = 16) -> FaithfulnessScores:
    """Score masks of the *predicted* classes with every metric.

    Args:
        magnitude: ``(N, F, T)`` linear STFT magnitudes (``model.spectrogram(x).abs()``).
        masks: ``(N, F, T)`` in [0, 1]; mask i explains clip i's predicted class.
        prompt_emb: ``(C, D)`` the class prompts of the zero-shot classifier.
    """
    if masks.shape != magnitude.shape:
        raise ValueError(f"masks {tuple(masks.shape)} must match the spectrograms "
                         f"{tuple(magnitude.shape)}: one mask per clip on the same STFT grid")
    if masks.isnan().any() or masks.min() < 0 or masks.max() > 1:
        raise ValueError(f"masks must lie in [0, 1], got {float(masks.min()):.3g}..{float(masks.max()):.3g}; "
                         "turn attributions into masks with clapnb.attribution.to_mask")
    masks = masks.to(magnitude.device, magnitude.dtype)
    probs = zero_shot_probs(model, magnitude, prompt_emb, batch_size)
    probs_in = zero_shot_probs(model, masks * magnitude, prompt_emb, batch_size)
    probs_out = zero_shot_probs(model, (1 - masks) * magnitude, prompt_emb, batch_size)
    predicted = probs.argmax(dim=1)
    rows = torch.arange(len(predicted))
    p, p_in, p_out = (q[rows, predicted].double().numpy() for q in (probs, probs_in, probs_out))
    return FaithfulnessScores(
        predicted=predicted.numpy(), p=p, p_in=p_in, p_out=p_out,
        ai=average_increase(p, p_in), ad=average_drop(p, p_in), ag=average_gain(p, p_in),
        ff=faithfulness_on_spectra(p, p_out),
        fid_in=input_fidelity(predicted.numpy(), probs_in.argmax(dim=1).numpy()),
        sps=sparseness(masks), comp=complexity(masks), mm=mask_mean(masks))


def score_explainer(model: ClapModel, explainer, magnitude: torch.Tensor,
                    prompt_emb: torch.Tensor, batch_size: int = 16) -> FaithfulnessScores:
    """Explain each clip's predicted class with ``explainer`` and score the masks.

    ``explainer(model, magnitude, prompt_emb, target) -> masks (N, F, T)`` (a
    :class:`clapnb.attribution.Explainer`); ``target`` is the argmax of :func:`zero_shot_probs`.
    """
    target = zero_shot_probs(model, magnitude, prompt_emb, batch_size).argmax(dim=1)
    masks = explainer(model, magnitude, prompt_emb, target)
    return evaluate_masks(model, magnitude, masks.detach().float().cpu(), prompt_emb, batch_size)


def ground_truth_auc(model: ClapModel, explainer, scenes, prompt_emb: torch.Tensor,
                     class_names: list[str], prompt: bool = False) -> np.ndarray:
    """Offline only (synthetic scenes know where each event is): for every event of every
    scene, the ROC-AUC of the mask for that event's class prompt against the event's
    ground-truth time-frequency mask (``synth.event_masks``). Returns ``(n_events,)``;
    events that dominate no bin (or every bin) are skipped.

    ``prompt=True`` scores :func:`prompt_auc` instead (only the bins some event
    dominates: does the map pick the prompted event over the others?); events need
    bins of their own and another event's.
    """
    if scenes.events is None:
        raise ValueError(f"{scenes.name!r} has no ground-truth events; this check needs "
                         "synthetic scenes (clapnb.synth.load_synthetic_scenes)")
    aucs = []
    for i in range(len(scenes)):
        labels = [e.label for e in scenes.events[i]]
        truth = event_masks(scenes, i, model.stft_config)
        others = [truth[:k].any() or truth[k + 1:].any() for k in range(len(truth))]
        keep = [k for k, gt in enumerate(truth) if gt.any() and not gt.all()
                and (others[k] or not prompt)]
        if not keep:
            continue
        magnitude = model.spectrogram([scenes.audio(i)], sample_rate=scenes.sample_rate).abs().cpu()
        target = torch.tensor([class_names.index(labels[k]) for k in keep])
        masks = explainer(model, magnitude.expand(len(keep), -1, -1), prompt_emb, target)
        aucs.extend(prompt_auc(masks[j], truth, k) if prompt else roc_auc(masks[j], truth[k])
                    for j, k in enumerate(keep))
    return np.array(aucs)
