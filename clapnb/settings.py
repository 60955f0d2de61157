"""The bottom layer: environment switches, the cache root, the default device and the
progress bar every long loop shows.

Every other module reads these here, so each switch has one name and one meaning:

* ``CLAPNB_MODEL``: a model name that overrides the one given to ``load_model``;
* ``CLAPNB_OFFLINE=1``: forbid every network access (``"auto"`` then means TinyCLAP);
* ``CLAPNB_CACHE``: the folder that holds checkpoints, datasets and embeddings
  (default: the user cache folder, ``~/.cache/clapnb`` on Linux);
* ``CLAPNB_MIRROR``: the address of a local mirror that stands in for every download
  host (the rehearsal of the online course, ``make rehearse``): the files it serves are
  checked against its own manifest, and models built from them are rehearsal models
  with random weights whose numbers mean nothing.

Nothing here imports another ``clapnb`` module.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs
import torch
from tqdm import tqdm  # plain text bars: widget bars can stall headless notebook runs (nbclient#312)

#: environment variable that overrides the model name given to ``load_model``
MODEL_ENV = "CLAPNB_MODEL"
#: set to 1 to forbid every network access (CI sets it): ``"auto"`` then means ``"tiny"``
OFFLINE_ENV = "CLAPNB_OFFLINE"
#: environment variable naming the cache folder
CACHE_ENV = "CLAPNB_CACHE"
#: environment variable naming a local mirror of every download host (the rehearsal)
MIRROR_ENV = "CLAPNB_MIRROR"
#: seconds before a progress bar appears: work that ends sooner leaves no bar behind (no
#: empty bars in JupyterLab, no frozen "0%" in a static copy of an executed notebook)
PROGRESS_DELAY_S = 2.0


def progress_bar(iterable=None, **options) -> tqdm:
    """``tqdm(iterable, **options)``, shown only once it has run for :data:`PROGRESS_DELAY_S`."""
    options.setdefault("delay", PROGRESS_DELAY_S)
    return tqdm(iterable, **options)


def offline() -> bool:
    """True when ``CLAPNB_OFFLINE`` is set to 1/true/yes."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def model_override() -> str | None:
    """The model name ``CLAPNB_MODEL`` asks for, or ``None`` when it is unset or blank."""
    return os.environ.get(MODEL_ENV, "").strip() or None


def mirror() -> str | None:
    """The mirror's base address (``http://127.0.0.1:PORT``) when ``CLAPNB_MIRROR`` is set."""
    return os.environ.get(MIRROR_ENV, "").strip().rstrip("/") or None


def cache_root() -> Path:
    """``$CLAPNB_CACHE`` when set, else the user cache folder (not created here); under a
    mirror (``CLAPNB_MIRROR``) its ``rehearsal`` subfolder, so that the rehearsal's stand-in
    files never replace (or are mistaken for) the real checkpoints and datasets."""
    root = os.environ.get(CACHE_ENV, "").strip()
    base = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("clapnb"))
    return base / "rehearsal" if mirror() else base


def default_device(device: str | torch.device | None = None) -> torch.device:
    """``None`` means CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
