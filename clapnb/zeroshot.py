"""Zero-shot classification and retrieval on precomputed embeddings.

Everything here takes unit-norm embeddings (numpy or torch) and returns numpy, so
the same functions score dense CLAP embeddings and concept reconstructions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: the prompt of the concept paper and of LAION-CLAP's ESC-50 evaluation
PROMPT = "This is a sound of {}."


def _np(x: np.ndarray | torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def class_prompts(class_names: Sequence[str], template: str = PROMPT) -> list[str]:
    """One prompt per class: ``template.format(name)``."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} needs a '{{}}' where the class name goes")
    return [template.format(name) for name in class_names]


def cosine_matrix(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(N, D) x (M, D) -> (N, M)`` cosine similarities (rows are renormalised)."""
    a, b = _np(a).astype(np.float32), _np(b).astype(np.float32)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: {a.shape[1]} vs {b.shape[1]}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def modality_gap(audio_emb: np.ndarray | torch.Tensor, text_emb: np.ndarray | torch.Tensor
                 ) -> float:
    """The modality gap as Liang et al. (2022) define it: the distance between the mean
    audio embedding and the mean text embedding, ``||mean(audio) - mean(text)||``.

    Pass paired embeddings (``(N, D)`` each, row i of text describing row i of audio),
    unit-norm; 0 means the two clouds share a centre, 2 is the largest possible.
    """
    audio, text = _np(audio_emb).astype(np.float64), _np(text_emb).astype(np.float64)
    if audio.ndim != 2 or audio.shape != text.shape:
        raise ValueError(f"need paired (N, D) embeddings, got {audio.shape} and {text.shape}")
    return float(np.linalg.norm(audio.mean(0) - text.mean(0)))


def nearest_neighbour_accuracy(emb: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray
                               ) -> float:
    """Share of the ``(N, D)`` embeddings whose most similar *other* embedding (cosine,
    leave-one-out 1-NN) has the same label: how well the embeddings alone separate the
    classes, the ceiling a linear map of them works against."""
    labels = np.asarray(labels)
    sim = cosine_matrix(emb, emb)
    if len(labels) != len(sim) or len(sim) < 2:
        raise ValueError(f"need one label per embedding and at least 2 embeddings, got "
                         f"{len(labels)} labels for {len(sim)} embeddings")
    np.fill_diagonal(sim, -np.inf)
    return float((labels[sim.argmax(1)] == labels).mean())


@dataclass
class ZeroShotResult:
    """predictions: ``(N,)`` class index; probs: ``(N, C)`` softmax over the class prompts."""

    predictions: np.ndarray
    probs: np.ndarray

    def accuracy(self, labels: np.ndarray) -> float:
        return float((self.predictions == np.asarray(labels)).mean())


def zero_shot(audio_emb: np.ndarray | torch.Tensor, prompt_emb: np.ndarray | torch.Tensor,
              logit_scale: float = 100.0) -> ZeroShotResult:
    """Classify each audio embedding by its most similar prompt embedding."""
    logits = logit_scale * cosine_matrix(audio_emb, prompt_emb)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return ZeroShotResult(predictions=probs.argmax(axis=1), probs=probs)


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (e.g. 0/1 correctness per clip) and its bootstrap interval.

    Returns ``(mean, low, high)``.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(values.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def retrieval_metrics(similarity: np.ndarray, relevant: Sequence[Sequence[int]],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k and mAP@10 of a query -> item similarity matrix.

    Args:
        similarity: ``(Q, M)`` scores, higher is better.
        relevant: for each query, the indices of the items that are correct.

    Returns:
        ``{"R@1": ..., "R@5": ..., "R@10": ..., "mAP@10": ...}`` in [0, 1]. R@k is the
        share of queries with at least one relevant item in the top k.
    """
    similarity = np.asarray(similarity)
    if len(relevant) != similarity.shape[0]:
        raise ValueError(f"{similarity.shape[0]} queries but {len(relevant)} relevance lists")
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :max(max(ks), 10)]
    hits = np.stack([np.isin(order[q], list(rel)) for q, rel in enumerate(relevant)])
    out = {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    top10 = hits[:, :10]
    precision = np.cumsum(top10, axis=1) / np.arange(1, top10.shape[1] + 1)
    n_rel = np.array([min(len(r), 10) for r in relevant])
    out["mAP@10"] = float(((precision * top10).sum(axis=1) / np.maximum(n_rel, 1)).mean())
    return out
