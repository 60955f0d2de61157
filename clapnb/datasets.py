"""Datasets the notebooks use, in two shapes shared by the online and offline modes.

* :class:`ClipSet` — labelled single-event clips, ESC-50 style (classes, 5 folds).
* :class:`SceneSet` — clips with captions, for text<->audio retrieval; offline
  scenes also carry their ground-truth events.

Audio is loaded lazily through ``loader(i)`` so that a 2,000-clip set does not
sit in memory; :mod:`clapnb.cache` stores embeddings keyed on ``clip_ids``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass
class ClipSet:
    """Labelled clips.

    name: dataset name used in cache keys (``"esc50"``, ``"synthetic"``).
    clip_ids: unique, stable id per clip (file name or generator seed).
    labels: ``(N,)`` int class index into ``class_names``.
    folds: ``(N,)`` int fold number, 1..5.
    class_names: readable class names, index -> name (``"dog"``, ``"chainsaw"``).
    sample_rate: Hz of what ``audio(i)`` returns.
    loader: ``i -> float32 mono waveform (S,)`` for the i-th clip *of the original
        set*; ``index`` maps this (possibly subset) set's positions to it.
    """

    name: str
    clip_ids: list[str]
    labels: np.ndarray
    folds: np.ndarray
    class_names: list[str]
    sample_rate: int
    loader: Callable[[int], np.ndarray]
    index: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.clip_ids)

    def audio(self, i: int) -> np.ndarray:
        """The i-th clip as float32 mono ``(S,)`` at ``sample_rate``."""
        return self.loader(int(self.index[i]) if self.index is not None else int(i))

    def label_name(self, i: int) -> str:
        return self.class_names[int(self.labels[i])]

    def subset(self, idx: Sequence[int] | np.ndarray) -> "ClipSet":
        """The clips at positions ``idx`` (an index array or a boolean mask)."""
        idx = np.arange(len(self))[np.asarray(idx)]
        base = self.index if self.index is not None else np.arange(len(self))
        return replace(self, clip_ids=[self.clip_ids[i] for i in idx], labels=self.labels[idx],
                       folds=self.folds[idx], index=base[idx])

    def fold(self, *folds: int) -> "ClipSet":
        """The clips in the given folds."""
        return self.subset(np.isin(self.folds, folds))


@dataclass
class SceneSet:
    """Clips with one or more captions each.

    captions: per clip, a list of captions (Clotho has 5, synthetic scenes 1-2).
    events: per clip, ground-truth events (offline only; ``None`` online). Each
        event is whatever :mod:`clapnb.synth` defines (class, onset, offset, ...).
    """

    name: str
    clip_ids: list[str]
    captions: list[list[str]]
    sample_rate: int
    loader: Callable[[int], np.ndarray]
    events: list[list[Any]] | None = None
    index: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def audio(self, i: int) -> np.ndarray:
        """The i-th clip as float32 mono ``(S,)`` at ``sample_rate``."""
        return self.loader(int(self.index[i]) if self.index is not None else int(i))

    def subset(self, idx: Sequence[int] | np.ndarray) -> "SceneSet":
        idx = np.arange(len(self))[np.asarray(idx)]
        base = self.index if self.index is not None else np.arange(len(self))
        return replace(self, clip_ids=[self.clip_ids[i] for i in idx],
                       captions=[self.captions[i] for i in idx],
                       events=None if self.events is None else [self.events[i] for i in idx],
                       index=base[idx])


# ---------------------------------------------------------------------------------
# One call per kind of data, following the active model (no mode branches in notebooks)
# ---------------------------------------------------------------------------------
def _per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first ``k`` clips of every class, in dataset order."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:k]] = True
    return keep


def load_clips(model, max_per_class: int | None = None, seed: int = 0) -> ClipSet:
    """Labelled clips for zero-shot classification: ESC-50 for LAION-CLAP, the
    synthetic single-event clips for TinyCLAP (held-out seed, never seen in training).

    Args:
        model: the active :class:`~clapnb.model.ClapModel` (its ``kind`` decides).
        max_per_class: keep at most this many clips per class (fast settings).
        seed: seed of the synthetic set (offline only).
    """
    if model.kind == "tiny":
        from clapnb.synth import load_synthetic_clips
        return load_synthetic_clips(n_per_class=max_per_class or 40, seed=seed)
    from clapnb.esc50 import load_esc50
    clips = load_esc50()
    return clips if max_per_class is None else clips.subset(_per_class(clips.labels, max_per_class))


def load_scenes(model, max_items: int | None = None, seed: int = 0) -> SceneSet:
    """Captioned clips for retrieval: Clotho evaluation for LAION-CLAP, synthetic
    scenes (with ground-truth events) for TinyCLAP."""
    if model.kind == "tiny":
        from clapnb.synth import load_synthetic_scenes
        return load_synthetic_scenes(n=max_items or 200, seed=seed)
    from clapnb.clotho import load_clotho
    scenes = load_clotho("evaluation")
    return scenes if max_items is None else scenes.subset(np.arange(min(max_items, len(scenes))))
