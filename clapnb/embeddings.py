"""Embeddings computed once and reused: audio of a clip set, text of a list of prompts.

Embedding caches are ``.npz`` files under ``cache_dir("embeddings", <model>)``:

* audio: one file per (model, dataset, preprocessing) holding ``clip_ids`` and
  ``embeddings``; only clips not in it yet are computed, so a subset, a larger
  set or an interrupted run reuses all finished work;
* text: one file per (model, name, hash of the texts).

Each file also stores the key it was computed for; a file that is unreadable,
has the wrong key or shape, or holds NaN is recomputed (with a warning).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from clapnb.cache import cache_dir, save_npz
from clapnb.datasets import ClipSet, SceneSet
from clapnb.model import ClapModel, check_texts
from clapnb.settings import progress_bar


def cached_audio_embeddings(model: ClapModel, clips: ClipSet | SceneSet, batch_size: int = 32,
                            save_every: int = 16) -> np.ndarray:
    """Audio embeddings of every clip, ``(len(clips), model.embed_dim)`` float32.

    Computed once per (``model.cache_key``, ``clips.name``, ``clips.source`` (what
    identifies the audio: for files their paths, sizes and modification times), clip id,
    preprocessing: model and clip sample rates, model window) and stored; later calls
    only compute clips missing from the cache. Progress is saved every ``save_every``
    batches, so an interrupted run resumes.
    """
    key = {"model": model.cache_key, "dataset": clips.name, "source": clips.source,
           "clips_sample_rate": clips.sample_rate, "model_sample_rate": model.sample_rate,
           "clip_samples": model.clip_samples}
    path = _cache_file(model, "audio", clips.name, key)
    rows: dict[str, np.ndarray] = {}  # clip id -> (D,) embedding
    if (stored := _load(path, key, model.embed_dim)) is not None:
        rows = dict(zip(stored["clip_ids"].tolist(), stored["embeddings"], strict=True))
    missing = [i for i, clip_id in enumerate(clips.clip_ids) if clip_id not in rows]
    batches = [missing[s:s + batch_size] for s in range(0, len(missing), batch_size)]
    with progress_bar(total=len(missing), desc=f"{clips.name} audio embeddings", unit="clip",
              disable=not missing) as bar:
        for b, batch in enumerate(batches, 1):
            waveforms = [clips.audio(i) for i in batch]
            emb = model.embed_audio(waveforms, sample_rate=clips.sample_rate, batch_size=batch_size)
            rows.update(zip([clips.clip_ids[i] for i in batch], emb.cpu().numpy(), strict=True))
            bar.update(len(batch))
            if b % save_every == 0 or b == len(batches):
                ids = sorted(rows)
                _save(path, key, clip_ids=np.array(ids), embeddings=np.stack([rows[i] for i in ids]))
    if not len(clips):
        return np.zeros((0, model.embed_dim), np.float32)
    return np.stack([rows[clip_id] for clip_id in clips.clip_ids]).astype(np.float32)


def cached_text_embeddings(model: ClapModel, texts: Sequence[str], name: str,
                           batch_size: int = 256) -> np.ndarray:
    """Text embeddings ``(len(texts), model.embed_dim)`` float32, computed once.

    Keyed on ``model.cache_key``, ``name`` (e.g. a vocabulary or prompt set) and a
    hash of the texts, so editing the list computes a new entry.
    """
    texts = check_texts(texts)
    key = {"model": model.cache_key, "name": name,
           "texts": hashlib.sha256(json.dumps(texts).encode()).hexdigest()}
    path = _cache_file(model, "text", name, key)
    if (stored := _load(path, key, model.embed_dim, n=len(texts))) is not None:
        return stored["embeddings"]
    starts = range(0, len(texts), batch_size)
    parts = [model.embed_text(texts[s:s + batch_size]).cpu().numpy()
             for s in progress_bar(starts, desc=f"{name} text embeddings", unit="batch",
                           disable=len(starts) < 2)]
    emb = np.concatenate(parts).astype(np.float32)
    _save(path, key, embeddings=emb)
    return emb


def _slug(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:60] or "x"


def _cache_file(model: ClapModel, kind: str, name: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("embeddings", _slug(model.name)) / f"{kind}-{_slug(name)}-{digest}.npz"


def _save(path: Path, key: dict, **arrays: np.ndarray) -> None:
    """Store arrays (embeddings as float32) together with the key they were computed for."""
    arrays["embeddings"] = arrays["embeddings"].astype(np.float32)
    save_npz(path, key=np.array(json.dumps(key, sort_keys=True)), **arrays)


def _load(path: Path, key: dict, dim: int, n: int | None = None) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or ``None`` when it is absent or damaged (with a warning).

    ``dim``: expected embedding size; ``n``: expected number of rows, when known.
    """
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {name: f[name] for name in f.files}
        problem = _problem(data, key, dim, n)
    except Exception as e:  # noqa: BLE001 - whatever the damage, the answer is "recompute"
        problem = f"unreadable: {type(e).__name__}: {e}"
    if problem is not None:
        warnings.warn(f"embedding cache {path} is damaged ({problem}); recomputing it", stacklevel=3)
        return None
    return data


def _problem(data: dict[str, np.ndarray], key: dict, dim: int, n: int | None) -> str | None:
    emb = data["embeddings"]
    if json.loads(str(data["key"])) != key:
        return "it was computed for another key"
    if emb.ndim != 2 or emb.shape[1] != dim or (n is not None and len(emb) != n):
        return f"embeddings of shape {emb.shape}, expected ({n or 'N'}, {dim})"
    if "clip_ids" in data and len(data["clip_ids"]) != len(emb):
        return f"{len(data['clip_ids'])} clip ids for {len(emb)} embeddings"
    if not np.isfinite(emb).all():
        return "embeddings contain NaN or inf"
    return None
