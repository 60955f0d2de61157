"""ESC-50 (Piczak 2015): 2,000 five-second clips, 50 classes, 5 folds.

:func:`load_esc50` downloads the dataset's GitHub archive at a fixed commit (about
600 MB) into the cache once, unpacks it, and returns a :class:`~clapnb.datasets.ClipSet`
whose audio (44.1 kHz mono wav) is read lazily, clip by clip.

License: CC BY-NC 3.0 (the clips come from freesound.org; see the dataset's README).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from clapnb.cache import cache_dir
from clapnb.datasets import ClipSet, WavLoader, incomplete_copy
from clapnb.download import download_and_extract

#: the commit of the dataset's repository (its owner's current name, karolpiczak) whose
#: archive is downloaded: a fixed commit, not the moving master branch
ESC50_COMMIT = "5983fb0c35e751b452e7c562d9207f27b76ddf0d"
#: the dataset's GitHub archive at that commit (no digest is published for GitHub's
#: archives, so it is accepted on its contents, with a warning that says so)
ESC50_URL = f"https://github.com/karolpiczak/ESC-50/archive/{ESC50_COMMIT}.zip"
#: environment variable that overrides ``ESC50_URL`` (a mirror, or a test server)
URL_ENV = "CLAPNB_ESC50_URL"
SAMPLE_RATE = 44_100
_EXTRACTED = "extracted"  # folder under root that the archive is unpacked into
_COLUMNS = {"filename", "fold", "target", "category"}


def readable(category: str) -> str:
    """``"chirping_birds"`` -> ``"chirping birds"``."""
    return category.replace("_", " ")


def load_esc50(root: str | os.PathLike | None = None, download: bool = True,
               url: str | None = None) -> ClipSet:
    """ESC-50 as a :class:`~clapnb.datasets.ClipSet` (name ``"esc50"``).

    Args:
        root: folder holding the dataset (``meta/esc50.csv`` and ``audio/``, or an
            ``ESC-50-master`` folder inside it, as GitHub's branch archive unpacks);
            default ``cache_dir("esc50")``.
        download: fetch and unpack the archive when it is not in ``root`` yet.
        url: archive address; default ``$CLAPNB_ESC50_URL`` or :data:`ESC50_URL`.

    ``clip_ids`` are file names without ``.wav``; ``labels`` are ESC-50's
    ``target`` numbers, ``class_names[target]`` the readable category.
    """
    own_copy = root is not None
    root = Path(root) if own_copy else cache_dir("esc50")
    folder = _locate(root, own_copy)
    if folder is None:
        if not download:
            raise FileNotFoundError(f"ESC-50 is not in {root} (no meta/esc50.csv); call "
                                    "load_esc50(download=True), or pass root= a folder holding it")
        download_and_extract(url or os.environ.get(URL_ENV) or ESC50_URL,
                             root / "ESC-50.zip", root / _EXTRACTED,
                             desc="ESC-50 (about 600 MB)")
        folder = _locate(root, own_copy)  # raises if the archive held no meta/esc50.csv
        assert folder is not None
    return _read(folder, own_copy)


def _locate(root: Path, own_copy: bool) -> Path | None:
    """The folder holding ``meta/esc50.csv``, or None; raises on a half-present copy."""
    candidates = [root, root / "ESC-50-master", *sorted((root / _EXTRACTED).glob("*"))]
    for folder in candidates:
        if (folder / "meta" / "esc50.csv").is_file():
            return folder
    for folder in (root / "ESC-50-master", root / _EXTRACTED, root / "audio"):
        if folder.exists():
            fix = ("restore meta/esc50.csv there, or call load_esc50() without root= to use a "
                   "fresh copy in clapnb's cache" if own_copy else
                   f"delete {_unpacked(folder)} and call load_esc50() again to download a fresh copy")
            raise FileNotFoundError(f"ESC-50 is incomplete: {folder} exists but meta/esc50.csv "
                                    f"is missing; {fix}.")
    return None


def _unpacked(folder: Path) -> Path:
    """The folder a fresh download re-creates, for a folder inside a copy."""
    return folder.parent if folder.name == "audio" or folder.parent.name == _EXTRACTED else folder


def _read(folder: Path, own_copy: bool) -> ClipSet:
    meta = folder / "meta" / "esc50.csv"
    with open(meta, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or not _COLUMNS <= set(rows[0]):
        raise ValueError(f"{meta} is not ESC-50 metadata: expected columns {sorted(_COLUMNS)}")
    categories: dict[int, str] = {}
    for r in rows:
        if categories.setdefault(int(r["target"]), r["category"]) != r["category"]:
            raise ValueError(f"{meta}: target {r['target']} names two categories")
    if sorted(categories) != list(range(len(categories))):
        raise ValueError(f"{meta}: class targets are not numbered 0..{len(categories) - 1}")

    audio_dir = folder / "audio"
    present = set(os.listdir(audio_dir)) if audio_dir.is_dir() else set()
    missing = [r["filename"] for r in rows if r["filename"] not in present]
    if missing:
        raise incomplete_copy("ESC-50", audio_dir, missing, len(rows), own_copy, "load_esc50()",
                              delete=_unpacked(folder))
    loader = WavLoader(tuple(audio_dir / r["filename"] for r in rows), SAMPLE_RATE)
    return ClipSet(
        name="esc50",
        clip_ids=[Path(r["filename"]).stem for r in rows],
        labels=np.array([int(r["target"]) for r in rows]),
        folds=np.array([int(r["fold"]) for r in rows]),
        class_names=[readable(categories[k]) for k in range(len(categories))],
        sample_rate=SAMPLE_RATE,
        loader=loader,
        source=loader.fingerprint(),
    )
