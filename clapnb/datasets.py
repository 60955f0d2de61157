"""Datasets the notebooks use, in two shapes shared by the online and offline modes.

* :class:`ClipSet` — labelled single-event clips, ESC-50 style (classes, 5 folds).
* :class:`SceneSet` — clips with captions, for text<->audio retrieval; offline
  scenes also carry their ground-truth events.

Audio is loaded lazily through ``loader(i)`` (for files: a :class:`WavLoader`) so
that a 2,000-clip set does not sit in memory; :mod:`clapnb.embeddings` stores
embeddings keyed on ``clip_ids``. Which sets go with which model is the
registry's business (:func:`clapnb.registry.load_clips`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


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
    source: what identifies the audio behind the ids (for files: a digest of their
        paths, sizes and modification times, :meth:`WavLoader.fingerprint`); part of
        every embedding-cache key, so two copies with the same file names never share
        cached embeddings.
    """

    name: str
    clip_ids: list[str]
    labels: np.ndarray
    folds: np.ndarray
    class_names: list[str]
    sample_rate: int
    loader: Callable[[int], np.ndarray]
    index: np.ndarray | None = None
    source: str = ""

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
    source: what identifies the audio behind the ids (see :class:`ClipSet`).
    """

    name: str
    clip_ids: list[str]
    captions: list[list[str]]
    sample_rate: int
    loader: Callable[[int], np.ndarray]
    events: list[list[Any]] | None = None
    index: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    source: str = ""

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


@dataclass(frozen=True)
class WavLoader:
    """``i -> float32 mono (S,)``: reads ``paths[i]`` with soundfile (picklable).

    Multi-channel files are averaged to mono; a file at another rate is an error.
    """

    paths: tuple[Path, ...]
    sample_rate: int

    def __call__(self, i: int) -> np.ndarray:
        x, sr = sf.read(self.paths[i], dtype="float32", always_2d=True)
        if sr != self.sample_rate:
            raise ValueError(f"{self.paths[i]} is sampled at {sr} Hz, expected {self.sample_rate} Hz")
        return x.mean(axis=1)

    def fingerprint(self) -> str:
        """A digest of every file's absolute path, size and modification time: changes when
        the audio may have (another copy, an edited file), without reading the audio."""
        h = hashlib.sha256()
        for path in self.paths:
            st = Path(path).stat()
            h.update(f"{Path(path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


def incomplete_copy(dataset: str, folder: Path, missing: Sequence[str], total: int,
                    own_copy: bool, fresh: str, delete: Path) -> FileNotFoundError:
    """The error for a copy of ``dataset`` whose ``folder`` lacks ``missing`` of its ``total``
    audio files: how many, the first few, and advice that fits where the copy came from: a
    folder the user passed (``own_copy``), or clapnb's cache, where deleting ``delete`` and
    calling ``fresh`` again downloads a fresh copy."""
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5:,} more" if len(missing) > 5 else "")
    what = (f"{dataset} is incomplete: {len(missing):,} of {total:,} audio files are missing from "
            f"{folder} ({shown})")
    if own_copy:
        fix = (f"This is your own copy (root=): restore those files there, or call {fresh} "
               "without root= to use a fresh copy in clapnb's cache")
    else:
        fix = f"Delete {delete} and call {fresh} again to download a fresh copy"
    return FileNotFoundError(f"{what}. {fix}.")
