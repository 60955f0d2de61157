"""Fine-tuning a CLAP audio space for a task: one linear map trained on precomputed embeddings.

The concept paper's fine-tuned variant (Zhang, Thomaz & Lu, IJCNN 2025, Table III)
learns a linear map ``H`` ``(D, D)`` so that the mapped audio embedding ``H z``
points at the text embedding ``t_y`` of its class prompt ("This is a sound of
dog.")::

    loss = mean_i (1 - cos(H z_i, t_{y_i}))

``H`` starts as the identity, so before training the map *is* zero-shot CLAP;
the frozen encoders are never touched. Classify by the most similar prompt to
``H z`` (fine-tuned dense), or decompose ``H z`` into concepts first and classify
the reconstruction (fine-tuned concept)::

    from clapnb.finetune import train_linear_map
    H = train_linear_map(train_emb, train_labels, prompt_emb, epochs=40)
    zero_shot(H(test_emb), prompt_emb).accuracy(test_labels)

:func:`cross_validate` runs the paper's four-way comparison (dense / concept x
zero-shot / fine-tuned) over a dataset's folds; :func:`linear_probe` scores the best
linear classifier on the same folds, the most a linear map can separate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from clapnb.decompose import ConceptDecomposer, embedding_mean
from clapnb.settings import default_device, progress_bar
from clapnb.zeroshot import bootstrap_ci, cosine_matrix

Array = np.ndarray | torch.Tensor


@dataclass
class LinearMap:
    """A learned map ``z -> normalize(H z)`` of audio embeddings.

    weight: ``(D, D)`` float32 ``H`` (on CPU).
    losses: mean training loss ``1 - cos(H z, t_y)`` per epoch; ``losses[0]`` is the
        loss before training (``H = I``), so ``len(losses) == epochs + 1``.
    val_losses: the same on the validation set, when one was given (else empty).
    """

    weight: torch.Tensor
    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)

    def __call__(self, audio_emb: Array) -> np.ndarray:
        """``(N, D)`` audio embeddings -> ``(N, D)`` unit-norm mapped embeddings (numpy)."""
        z = _matrix(audio_emb, "audio_emb", self.weight.device)
        if z.shape[1] != self.weight.shape[1]:
            raise ValueError(f"audio_emb is {z.shape[1]}-d but this map was trained on "
                             f"{self.weight.shape[1]}-d embeddings")
        return F.normalize(z @ self.weight.T, dim=1).numpy()


def _matrix(x: Array, what: str, device: torch.device) -> torch.Tensor:
    """numpy or torch ``(N, D)`` -> float32 tensor on ``device``, checked."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(x).detach().to(device=device, dtype=torch.float32)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"{what} must be a non-empty (N, D) matrix, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or inf; recompute those embeddings or drop them")
    return t


def _labels(labels, n: int, n_classes: int, what: str, device: torch.device) -> torch.Tensor:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"{what} must be one class index per embedding ({n}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"{what} must be integer class indices, got dtype {y.dtype}")
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"{what} must lie in 0..{n_classes - 1} (one prompt per class), got "
                         f"{y.min()}..{y.max()}")
    return torch.as_tensor(y, dtype=torch.long, device=device)


def cosine_loss(weight: torch.Tensor, audio: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``mean_i (1 - cos(H z_i, t_i))`` for audio ``(N, D)`` and targets ``(N, D)``."""
    return (1 - F.cosine_similarity(audio @ weight.T, targets, dim=1)).mean()


def train_linear_map(audio_emb: Array, labels, prompt_emb: Array, epochs: int = 40,
                     lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
                     seed: int = 0, val: tuple[Array, object] | None = None,
                     device: str | torch.device | None = None, progress: bool = True) -> LinearMap:
    """Train ``H`` (from the identity) to point each audio embedding at its class prompt.

    Args:
        audio_emb: ``(N, D)`` training audio embeddings.
        labels: ``(N,)`` class index of each, into the rows of ``prompt_emb``.
        prompt_emb: ``(C, D)`` text embedding of each class prompt.
        epochs: passes over the training set (mini-batches of ``batch_size``, Adam
            with learning rate ``lr`` and decoupled ``weight_decay``).
        seed: seeds the batch order; the same inputs and seed give the same map.
        val: optional ``(val_emb, val_labels)`` whose loss is recorded every epoch
            (never trained on), to watch for overfitting.
        device: ``None`` means CUDA when available, else CPU.

    Returns: the :class:`LinearMap` (weight on CPU) with its loss curves.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not (np.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    device = default_device(device)
    z = F.normalize(_matrix(audio_emb, "audio_emb", device), dim=1)
    prompts = F.normalize(_matrix(prompt_emb, "prompt_emb", device), dim=1)
    if prompts.shape[1] != z.shape[1]:
        raise ValueError(f"audio embeddings are {z.shape[1]}-d but prompt embeddings are "
                         f"{prompts.shape[1]}-d; embed both with the same model")
    targets = prompts[_labels(labels, len(z), len(prompts), "labels", device)]
    if val is not None:
        if not isinstance(val, (tuple, list)) or len(val) != 2:
            raise TypeError("val must be a pair (val_emb, val_labels)")
        val_z = F.normalize(_matrix(val[0], "val[0] (validation embeddings)", device), dim=1)
        if val_z.shape[1] != z.shape[1]:
            raise ValueError(f"validation embeddings are {val_z.shape[1]}-d, training ones "
                             f"{z.shape[1]}-d")
        val_targets = prompts[_labels(val[1], len(val_z), len(prompts), "val[1] (validation labels)",
                                      device)]

    weight = torch.eye(z.shape[1], device=device, requires_grad=True)
    optimizer = torch.optim.AdamW([weight], lr=lr, weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    result = LinearMap(weight=weight)

    def record() -> None:
        with torch.no_grad():
            result.losses.append(float(cosine_loss(weight, z, targets)))
            if val is not None:
                result.val_losses.append(float(cosine_loss(weight, val_z, val_targets)))

    record()
    bar = progress_bar(range(epochs), desc="training H", unit="epoch", disable=not progress)
    for _ in bar:
        for idx in torch.randperm(len(z), generator=generator).split(batch_size):
            idx = idx.to(device)
            loss = cosine_loss(weight, z[idx], targets[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        record()
        bar.set_postfix(loss=f"{result.losses[-1]:.4f}")
    result.weight = weight.detach().cpu()
    return result


#: the four representations of the paper's comparison, in table order
REPRESENTATIONS = ("dense zero-shot", "concept zero-shot", "dense fine-tuned", "concept fine-tuned")


@dataclass
class CrossValidation:
    """Held-out results of :func:`cross_validate`, one entry per representation.

    labels: ``(N,)`` true class of each clip.
    predicted: ``(N,)`` predicted class of each clip, from the fold that held it out.
    own / other: ``(N,)`` cosine of each clip's representation with its own class prompt
        and with the most similar other prompt (a clip is right when own > other).
    per_fold: accuracy of every representation on each held-out fold.
    """

    labels: np.ndarray
    predicted: dict[str, np.ndarray]
    own: dict[str, np.ndarray]
    other: dict[str, np.ndarray]
    per_fold: pd.DataFrame

    def table(self) -> pd.DataFrame:
        """One row per representation: pooled accuracy with its 95 % bootstrap interval
        (``low``, ``high``), mean cosine to the own prompt and to the best other, margin."""
        rows = []
        for name in REPRESENTATIONS:
            accuracy, low, high = bootstrap_ci(self.predicted[name] == self.labels)
            rows.append({"representation": name, "accuracy": accuracy, "low": low, "high": high,
                         "cosine to own prompt": self.own[name].mean(),
                         "to best other": self.other[name].mean(),
                         "margin": (self.own[name] - self.other[name]).mean()})
        return pd.DataFrame(rows)

    def gain(self, kind: str) -> float:
        """Fine-tuned minus zero-shot accuracy of ``kind`` ("dense" or "concept")."""
        if kind not in ("dense", "concept"):
            raise ValueError(f"kind must be 'dense' or 'concept', got {kind!r}")
        right = {n: float((self.predicted[n] == self.labels).mean()) for n in REPRESENTATIONS}
        return right[f"{kind} fine-tuned"] - right[f"{kind} zero-shot"]


def cross_validate(audio_emb: np.ndarray, labels, folds, prompt_emb: np.ndarray,
                   decomposer: ConceptDecomposer, lam: float, **train_options) -> CrossValidation:
    """The concept paper's four-way comparison, cross-validated over ``folds``.

    Each fold is held out in turn: ``H`` (:func:`train_linear_map` with
    ``train_options``, e.g. ``epochs``, ``lr``) and the audio mean that centres the
    decompositions come from the other folds. Every held-out clip is then classified
    by its most similar prompt four ways: ``z``, the concept reconstruction of ``z``
    (``decomposer`` at ``lam``), ``H z`` and the reconstruction of ``H z``.

    Args:
        audio_emb: ``(N, D)`` audio embeddings; labels, folds: ``(N,)``.
        prompt_emb: ``(C, D)`` one prompt embedding per class.
    """
    audio_emb, labels, folds = np.asarray(audio_emb), np.asarray(labels), np.asarray(folds)
    if not len(audio_emb) == len(labels) == len(folds):
        raise ValueError(f"audio_emb, labels and folds must be equally long, got "
                         f"{len(audio_emb)}, {len(labels)}, {len(folds)}")
    if len(np.unique(folds)) < 2:
        raise ValueError("cross-validation needs at least two folds")
    predicted = {n: np.zeros(len(labels), dtype=int) for n in REPRESENTATIONS}
    own = {n: np.zeros(len(labels)) for n in REPRESENTATIONS}
    other = {n: np.zeros(len(labels)) for n in REPRESENTATIONS}
    per_fold = []
    train_options = {"progress": False, **train_options}

    def reconstruct(x: np.ndarray, train: np.ndarray, test: np.ndarray) -> np.ndarray:
        return decomposer(x[test], lam=lam, audio_mean=embedding_mean(x[train]),
                          progress=False).reconstruction.cpu().numpy()

    for fold in np.unique(folds):
        train, test = folds != fold, folds == fold
        H = train_linear_map(audio_emb[train], labels[train], prompt_emb, **train_options)
        hz = H(audio_emb)
        held_out = {"dense zero-shot": audio_emb[test],
                    "concept zero-shot": reconstruct(audio_emb, train, test),
                    "dense fine-tuned": hz[test],
                    "concept fine-tuned": reconstruct(hz, train, test)}
        row = {"held-out fold": int(fold)}
        for name, rep in held_out.items():
            sims = cosine_matrix(rep, prompt_emb)      # (clips, C); zero-shot picks the largest
            predicted[name][test] = sims.argmax(1)
            idx = np.arange(len(sims))
            own[name][test] = sims[idx, labels[test]]
            sims[idx, labels[test]] = -np.inf
            other[name][test] = sims.max(1)
            row[name] = float((predicted[name][test] == labels[test]).mean())
        per_fold.append(row)
    return CrossValidation(labels, predicted, own, other, pd.DataFrame(per_fold))


def linear_probe(audio_emb: np.ndarray, labels, folds,
                 strengths: Sequence[float] = (0.1, 1.0, 10.0, 100.0)) -> dict[str, float]:
    """Held-out accuracy of the best linear classifier on these embeddings.

    Logistic regression on unit-norm ``(N, D)`` embeddings, cross-validated over
    ``folds`` like :func:`cross_validate`, for each inverse regularisation strength
    ``C`` in ``strengths``; the best is kept (an optimistic pick). ``H`` is a linear
    map too, so fine-tuning cannot gain much more over zero-shot than this classifier.

    Returns ``{"accuracy": ..., "C": ...}``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict

    audio_emb, labels = np.asarray(audio_emb), np.asarray(labels)
    unit = audio_emb / np.linalg.norm(audio_emb, axis=1, keepdims=True)
    scores = {}
    for c in strengths:
        predicted = cross_val_predict(LogisticRegression(C=c, max_iter=3000), unit, labels,
                                      groups=np.asarray(folds), cv=LeaveOneGroupOut())
        scores[c] = float((predicted == labels).mean())
    best = max(scores, key=scores.get)
    return {"accuracy": scores[best], "C": float(best)}
