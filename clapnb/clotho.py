"""Clotho v2.1 (Drossos et al. 2020): 15-30 s Freesound clips with 5 captions each.

:func:`load_clotho` downloads one split from Zenodo (record 4783391) into the
cache once: the captions CSV and the audio ``.7z`` (unpacked with ``py7zr``;
the evaluation split is about 1 GB), and returns a
:class:`~clapnb.datasets.SceneSet` whose audio (44.1 kHz wav) is read lazily.

License: the Clotho terms (non-commercial research) and each clip's Freesound
Creative Commons license (``clotho_metadata_<split>.csv`` on Zenodo).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from clapnb.cache import cache_dir
from clapnb.datasets import SceneSet, WavLoader, incomplete_copy
from clapnb.download import download_and_extract, download_file

#: Zenodo folder holding the Clotho v2.1 files
CLOTHO_URL = "https://zenodo.org/records/4783391/files"
#: environment variable that overrides ``CLOTHO_URL`` (a mirror, or a test server)
URL_ENV = "CLAPNB_CLOTHO_URL"
SAMPLE_RATE = 44_100
#: MD5 digests published on Zenodo: split -> (captions CSV, audio archive)
CHECKSUMS = {
    "development": ("d4090b39ce9f2491908eebf4d5b09bae", "c8b05bc7acdb13895bb3c6a29608667e"),
    "validation": ("5879e023032b22a2c930aaa0528bead4", "7dba730be08bada48bd15dc4e668df59"),
    "evaluation": ("1b16b9e57cf7bdb7f13a13802aeb57e2", "4569624ccadf96223f19cb59fe4f849f"),
}
N_CAPTIONS = 5


def load_clotho(split: str = "evaluation", root: str | os.PathLike | None = None,
                download: bool = True, url: str | None = None) -> SceneSet:
    """One Clotho v2.1 split as a :class:`~clapnb.datasets.SceneSet` (name ``"clotho-<split>"``).

    Args:
        split: ``"development"``, ``"validation"`` or ``"evaluation"``.
        root: folder for the files; default ``cache_dir("clotho")``. It holds
            ``clotho_captions_<split>.csv`` and the wavs in ``audio_<split>/<split>/``
            (or ``<split>/``, for a copy unpacked by hand).
        download: fetch what is missing (captions, audio archive).
        url: Zenodo folder to download from; default ``$CLAPNB_CLOTHO_URL`` or
            :data:`CLOTHO_URL`.

    ``clip_ids`` are the file names without ``.wav``; ``captions[i]`` the 5 captions.
    """
    if split not in CHECKSUMS:
        raise ValueError(f"unknown Clotho split {split!r}; choose one of {', '.join(CHECKSUMS)}")
    own_copy = root is not None
    root = Path(root) if own_copy else cache_dir("clotho")
    base = (url or os.environ.get(URL_ENV) or CLOTHO_URL).rstrip("/")
    captions_md5, audio_md5 = CHECKSUMS[split]
    captions = root / f"clotho_captions_{split}.csv"
    audio_dir = _audio_dir(root, split)
    if not download and (not captions.is_file() or audio_dir is None):
        raise FileNotFoundError(f"Clotho {split} is not in {root}; call load_clotho(download=True) "
                                "or pass root= a folder holding it")
    if not captions.is_file():
        download_file(f"{base}/{captions.name}?download=1", captions, md5=captions_md5)
    if audio_dir is None:
        download_and_extract(f"{base}/clotho_audio_{split}.7z?download=1",
                             root / f"clotho_audio_{split}.7z", root / f"audio_{split}",
                             md5=audio_md5, desc=f"Clotho {split} audio")
        audio_dir = _audio_dir(root, split)
        if audio_dir is None:
            raise FileNotFoundError(f"the Clotho archive unpacked into {root / f'audio_{split}'} "
                                    f"has no {split}/ folder; delete that folder and check the address")
    return _read(captions, audio_dir, split, own_copy)


def _audio_dir(root: Path, split: str) -> Path | None:
    for folder in (root / f"audio_{split}" / split, root / split):
        if folder.is_dir():
            return folder
    return None


def _read(captions_csv: Path, audio_dir: Path, split: str, own_copy: bool) -> SceneSet:
    with open(captions_csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    columns = ["file_name", *(f"caption_{k}" for k in range(1, N_CAPTIONS + 1))]
    if not rows or not set(columns) <= set(rows[0]):
        raise ValueError(f"{captions_csv} is not a Clotho captions file: expected columns {columns}")
    present = set(os.listdir(audio_dir))
    missing = [r["file_name"] for r in rows if r["file_name"] not in present]
    if missing:
        raise incomplete_copy(f"Clotho {split}", audio_dir, missing, len(rows), own_copy,
                              f"load_clotho({split!r})", delete=audio_dir.parent)
    loader = WavLoader(tuple(audio_dir / r["file_name"] for r in rows), SAMPLE_RATE)
    return SceneSet(
        name=f"clotho-{split}",
        clip_ids=[Path(r["file_name"]).stem for r in rows],
        captions=[[r[c] for c in columns[1:]] for r in rows],
        sample_rate=SAMPLE_RATE,
        loader=loader,
        extra={"split": split},
        source=loader.fingerprint(),
    )
