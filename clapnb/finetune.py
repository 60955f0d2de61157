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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clapnb.settings import default_device, progress_bar

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
