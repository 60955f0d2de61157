"""The cache folder and writes that are all or nothing.

Everything clapnb stores (checkpoints, datasets, embeddings, decoders) lives under
:func:`cache_dir`: ``$CLAPNB_CACHE`` when set, else the user cache folder
(``~/.cache/clapnb`` on Linux). Every file is written through :func:`atomic_write`,
so an interrupted write never leaves half a file in the cache. This module knows
nothing of models; the embedding caches built on it are in :mod:`clapnb.embeddings`.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from clapnb.settings import CACHE_ENV, cache_root

__all__ = ["CACHE_ENV", "atomic_write", "cache_dir", "load_float_state", "save_half_state",
           "save_npz"]


def cache_dir(*parts: str) -> Path:
    """``$CLAPNB_CACHE/<parts...>`` (default: the user cache folder), created if needed.

    >>> cache_dir("embeddings").name
    'embeddings'
    """
    for part in parts:
        if Path(part).is_absolute() or ".." in Path(part).parts:
            raise ValueError(f"cache_dir parts must be relative names inside the cache, got {part!r}")
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` all or nothing: into a temporary file beside it, renamed on success.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "note.txt"
    >>> with atomic_write(path, "w") as f:
    ...     _ = f.write("done")
    >>> path.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_half_state(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a state dict with ``torch.save``, float tensors as float16 (half the file),
    atomically. Saved through a buffer, so the same weights always give the same bytes."""
    half = {k: (v.half() if v.is_floating_point() else v).detach().cpu().clone()
            for k, v in state.items()}
    buffer = io.BytesIO()
    torch.save(half, buffer)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())


def load_float_state(path: str | os.PathLike) -> dict[str, Any]:
    """Read a state dict written by :func:`save_half_state` (``weights_only=True``, on the
    CPU), float tensors back as float32."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` written atomically."""
    with atomic_write(path) as f:
        np.savez(f, **arrays)
