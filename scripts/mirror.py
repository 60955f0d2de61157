#!/usr/bin/env python
"""A local mirror of every download host of the online course, for rehearsals with no network.

The online course downloads LAION-CLAP and msclap checkpoints and the roberta-base, gpt2 and
bert-base-uncased tokenizers from Hugging Face, ESC-50 from GitHub, Clotho and the FSD50K metadata from Zenodo. With
``CLAPNB_MIRROR=http://127.0.0.1:PORT`` every one of those addresses goes to this mirror
instead (``clapnb.download.source``): ``https://HOST/PATH?QUERY`` ->
``$CLAPNB_MIRROR/HOST/PATH?QUERY``, checked against ``$CLAPNB_MIRROR/manifest.json``
(``{"HOST/PATH": {"size": N, "sha256": HEX}}``).

Two commands::

    python scripts/mirror.py build OUT_DIR [--data ../shared/data] [--clips-per-class 2]
                                           [--clotho-clips 20] [--checkpoints ...]
    python scripts/mirror.py serve OUT_DIR [--port 0] [--print-url]

``build`` writes ``OUT_DIR/HOST/PATH`` for every file in the real formats and layouts,
and ``OUT_DIR/manifest.json``. What is real and what is not:

* LAION-CLAP checkpoints (``huggingface.co/lukewys/laion_clap/resolve/main/*.pt``): a
  training checkpoint as LAION publishes it (``epoch``, ``state_dict`` with ``module.``
  prefixes and ``text_branch.embeddings.position_ids``, a small ``optimizer`` dict, a few
  numpy scalars), float32; the real HTSAT audio architecture with RANDOM weights, and a
  one-layer RoBERTa text tower (:data:`TEXT_TOWER`) whose embedding has one row per token
  of the tokenizer below. No optimiser moments: 152 MB instead of 1.9 GB.
* the roberta-base tokenizer (``vocab.json``, ``merges.txt``): roberta's byte-level BPE
  format (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3, ``<mask>`` last) with a SMALL
  vocabulary (1,000 tokens) learned from the course's words and the Clotho captions.
* msclap checkpoints (``huggingface.co/microsoft/msclap/resolve/main/CLAP_weights_<version>.pth``,
  names ``msclap/2023`` and ``msclap/2022`` in ``--checkpoints``): ``{"model": state_dict}``
  as Microsoft publishes them, float32; the real audio architecture (2023: HTS-AT, 2022:
  CNN14) with RANDOM weights and a one-layer text tower (``clapnb.msclap.GPT2_TINY`` /
  ``BERT_TINY``: 768 wide, 128 positions) whose embedding has one row per token of the
  tokenizer below. 2023: ~155 MB (built by default); 2022: ~363 MB (CNN14 alone is 80 M
  weights; only on request, e.g. ``--checkpoints all``).
* the gpt2 tokenizer (``openai-community/gpt2``: ``vocab.json``, ``merges.txt``) with the
  2023 checkpoint: GPT-2's byte-level BPE layout (the 256 byte symbols first in GPT-2's
  order, so ``!``=0, msclap's padding id; ``<|endoftext|>`` last), 1,000 tokens learned from
  the same words; the bert-base-uncased ``vocab.txt`` (``google-bert/bert-base-uncased``)
  with the 2022 one: WordPiece, lower case, ``[PAD]``=0, 1,000 tokens.
* ESC-50 (a GitHub archive zip at the path of ``clapnb.esc50.ESC50_URL``): the top folder
  GitHub names (``ESC-50-<ref>/``), ``meta/esc50.csv`` with the REAL rows of the first
  ``clips_per_class`` clips of each class (the k-th from fold k % 5 + 1, up to 5), and SYNTHETIC 44.1 kHz 5-s 16-bit mono wavs.
* Clotho v2.1 (``zenodo.org/records/4783391/files/``): ``clotho_captions_<split>.csv``
  with the REAL captions of the first ``clotho_clips`` clips and
  ``clotho_audio_<split>.7z`` holding ``<split>/<file_name>``, SYNTHETIC 44.1 kHz wavs
  of ``clotho_seconds`` (15 s; real clips last 15-30 s).
* FSD50K metadata (``zenodo.org/records/4060432/files/FSD50K.metadata.zip``):
  ``FSD50K.metadata/{dev,eval}_clips_info_FSD50K.json`` in the real layout
  (clip id -> title, description, tags, license, uploader), filled from the Clotho
  metadata (real Freesound tags of other clips).

Everything is deterministic (fixed seeds, fixed archive dates): two builds with the same
settings give the same bytes. A build that finds a stamp of the same settings (and inputs,
and version of this script) does nothing; otherwise it writes a fresh tree next to
``OUT_DIR`` and swaps it in once complete.

``serve`` answers GET and HEAD for the files under ``OUT_DIR`` on 127.0.0.1, honours
``Range: bytes=N-`` (206), ignores query strings and never serves anything outside
``OUT_DIR``. Python callers use :func:`build` and :func:`serving`.
"""

from __future__ import annotations

import argparse
import calendar
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import wave
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout that is not installed
    sys.path.insert(0, str(REPO))

#: the shared reference metadata (real ESC-50 rows, Clotho captions and tags)
DEFAULT_DATA = REPO.parent / "shared" / "data"
#: bump when the bytes a build writes change for the same settings
BUILD_VERSION = 1
#: written last into a finished tree: the settings it was built with
STAMP = ".mirror-stamp.json"
#: the manifest every mirror serves at its root (clapnb.download.MIRROR_MANIFEST)
MANIFEST = "manifest.json"
#: where the roberta-base tokenizer comes from, unless clapnb.laion.TOKENIZER_URLS says
DEFAULT_TOKENIZER_URLS = (
    "https://huggingface.co/FacebookAI/roberta-base/resolve/main/vocab.json",
    "https://huggingface.co/FacebookAI/roberta-base/resolve/main/merges.txt",
)
#: the checkpoints the course loads (``--checkpoints all``: every one in clapnb.laion's and
#: clapnb.msclap's CHECKPOINTS)
DEFAULT_CHECKPOINTS = ("laion/630k-audioset", "laion/630k-audioset-fusion", "msclap/2023")
CLOTHO_SPLITS = {"evaluation": "wavcaps_clotho_v2_test.csv",
                 "validation": "wavcaps_clotho_v2_val.csv",
                 "development": "wavcaps_clotho_v2_train.csv"}
SAMPLE_RATE = 44_100
ESC50_SECONDS = 5
SEED = 2024
#: date of every archive member (zip and 7z), so that the bytes never depend on the clock
ARCHIVE_DATE = (2021, 5, 20, 12, 0, 0)
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0-3, as in roberta-base; <mask> is last
_CHUNK = 1 << 20


def text_tower() -> dict[str, Any]:
    """The RoBERTa configuration of the mirror's checkpoints: ``clapnb.laion.ROBERTA_TINY``
    (one layer, 768 wide, 12 heads, 80 positions), whose ``vocab_size`` (1,000) is also the
    size of the served tokenizer. Build models that fit them with
    ``clapnb.laion.build_clap(amodel, fusion, roberta=text_tower())``; also importable as
    ``TEXT_TOWER`` (computed on first use: ``serve`` imports neither torch nor clapnb)."""
    from clapnb.laion import ROBERTA_TINY
    return dict(ROBERTA_TINY)


def __getattr__(name: str) -> Any:
    if name == "TEXT_TOWER":
        return text_tower()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------
# Where each file lives
# ---------------------------------------------------------------------------------
def mirror_key(url: str) -> str:
    """``https://HOST/PATH?QUERY`` -> ``HOST/PATH``: the manifest key and the file's place."""
    parts = urlsplit(url)
    return parts.netloc + parts.path


def tokenizer_urls() -> dict[str, str]:
    """File name (``vocab.json``, ``merges.txt``) -> address of the roberta-base tokenizer."""
    from clapnb import laion
    urls = getattr(laion, "TOKENIZER_URLS", DEFAULT_TOKENIZER_URLS)
    urls = list(urls.values()) if isinstance(urls, dict) else list(urls)
    found = {Path(urlsplit(u).path).name: u for u in urls}
    missing = {"vocab.json", "merges.txt"} - found.keys()
    if missing:
        raise ValueError(f"clapnb.laion.TOKENIZER_URLS names no {', '.join(sorted(missing))}: {urls}")
    return found


def all_checkpoints() -> dict[str, Any]:
    """Name -> checkpoint of every checkpoint the mirror can build (LAION-CLAP's, msclap's)."""
    from clapnb import laion, msclap
    return {**laion.CHECKPOINTS, **msclap.CHECKPOINTS}


def is_msclap(name: str) -> bool:
    return name.startswith("msclap/")


def msclap_text_models(names: Iterable[str]) -> list[str]:
    """The msclap text towers (``"gpt2"``, ``"bert"``) whose tokenizers the checkpoints
    ``names`` need, in a fixed order."""
    from clapnb.msclap import CHECKPOINTS
    needed = {CHECKPOINTS[n].text_model for n in names if is_msclap(n)}
    return [t for t in ("gpt2", "bert") if t in needed]


def checkpoint_names(wanted: Iterable[str] | str | None) -> list[str]:
    """The checkpoint names to build (``"all"``: every one of :func:`all_checkpoints`)."""
    CHECKPOINTS = all_checkpoints()
    if wanted is None:
        wanted = DEFAULT_CHECKPOINTS
    if isinstance(wanted, str):
        wanted = list(CHECKPOINTS) if wanted == "all" else [w for w in wanted.split(",") if w]
    names = list(dict.fromkeys(wanted))
    unknown = [n for n in names if n not in CHECKPOINTS]
    if unknown:
        raise ValueError(f"unknown checkpoint(s) {unknown}; valid: {', '.join(CHECKPOINTS)}")
    return names


# ---------------------------------------------------------------------------------
# Deterministic files
# ---------------------------------------------------------------------------------
def _rng(*keys: int | str) -> np.random.Generator:
    return np.random.default_rng([SEED, *(zlib.crc32(k.encode()) if isinstance(k, str) else k
                                          for k in keys)])


def synth_clip(rng: np.random.Generator, seconds: float, f0: float, n_events: int,
               event_s: tuple[float, float], noise: float) -> np.ndarray:
    """A mono float clip: ``n_events`` harmonic bursts (pitch about ``f0``, a share
    ``noise`` of band noise) with decaying envelopes, digital silence in between."""
    n = int(round(seconds * SAMPLE_RATE))
    x = np.zeros(n)
    for _ in range(n_events):
        length = int(rng.uniform(*event_s) * SAMPLE_RATE)
        start = int(rng.integers(0, max(1, n - length)))
        t = np.arange(length) / SAMPLE_RATE
        f = f0 * rng.uniform(0.9, 1.1)
        glide = 1 + rng.uniform(-0.2, 0.2) * t / max(t[-1], 1e-9)
        tone = sum(np.sin(2 * np.pi * k * f * glide * t + rng.uniform(0, 2 * np.pi)) / k
                   for k in range(1, 4))
        hiss = np.convolve(rng.standard_normal(length), np.ones(8) / 8, mode="same")
        envelope = np.minimum(1.0, t / 0.01) * np.exp(-t / (rng.uniform(0.1, 0.6) * t[-1] + 1e-3))
        x[start:start + length] += envelope * ((1 - noise) * tone / 1.8 + noise * 2.5 * hiss)
    peak = np.abs(x).max()
    return x * (rng.uniform(0.3, 0.8) / peak) if peak > 0 else x


def wav_bytes(x: np.ndarray) -> bytes:
    """16-bit PCM mono wav at 44.1 kHz (the formats of ESC-50 and Clotho)."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


class _ZipWriter:
    """A zip with fixed dates and modes (deflated, like GitHub's and Zenodo's)."""

    def __init__(self, path: Path, comment: str = ""):
        self.zf = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6)
        self.zf.comment = comment.encode()
        self.folders: set[str] = set()

    def add(self, name: str, data: bytes | str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):  # folder entries first, as real archives have
            folder = "/".join(parts[:i]) + "/"
            if folder not in self.folders:
                self.folders.add(folder)
                info = zipfile.ZipInfo(folder, ARCHIVE_DATE)
                info.external_attr = (0o40755 << 16) | 0x10
                self.zf.writestr(info, b"")
        info = zipfile.ZipInfo(name, ARCHIVE_DATE)
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        self.zf.writestr(info, data.encode() if isinstance(data, str) else data)

    def close(self) -> None:
        self.zf.close()


def _csv_text(header: list[str], rows: list[dict[str, str]], lineterminator: str = "\n") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, header, lineterminator=lineterminator)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


# ---------------------------------------------------------------------------------
# The five sources
# ---------------------------------------------------------------------------------
def write_tokenizer(out: Path, corpus: list[str], vocab_size: int) -> dict[str, int]:
    """roberta-style byte-level BPE ``vocab.json`` and ``merges.txt`` at the tokenizer's
    addresses, with ``vocab_size`` tokens in all; returns the vocabulary."""
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(corpus, vocab_size=vocab_size - 1, min_frequency=2,
                            special_tokens=list(_SPECIALS), show_progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file, merges_file = bpe.save_model(tmp)
        vocab = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
        merges = Path(merges_file).read_text(encoding="utf-8").splitlines()
    if [vocab.get(s) for s in _SPECIALS] != [0, 1, 2, 3] or len(vocab) != vocab_size - 1:
        raise RuntimeError(f"the tokenizer learned {len(vocab)} tokens with specials "
                           f"{[vocab.get(s) for s in _SPECIALS]}; expected {vocab_size - 1} "
                           "and 0-3 (a corpus too small?)")
    vocab["<mask>"] = len(vocab)  # last, as in roberta-base (50264)
    vocab = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    if merges and not merges[0].startswith("#version"):
        merges.insert(0, "#version: 0.2")
    urls = tokenizer_urls()
    for name, text in (("vocab.json", json.dumps(vocab, ensure_ascii=False, separators=(",", ":"))),
                       ("merges.txt", "\n".join(merges) + "\n")):
        path = out / mirror_key(urls[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return vocab


def tokenizer_corpus(data: Path) -> list[str]:
    """The course's vocabulary words, the ESC-50 categories and every Clotho caption."""
    corpus: list[str] = []
    for tsv in sorted((REPO / "clapnb" / "vocabularies").glob("*.tsv")):
        lines = tsv.read_text(encoding="utf-8").splitlines()[1:]
        corpus.extend(line.split("\t")[0] for line in lines if line.strip())
    _, rows = _read_csv(data / "esc50" / "esc50.csv")
    corpus.extend(sorted({r["category"].replace("_", " ") for r in rows}))
    for name in CLOTHO_SPLITS.values():
        _, rows = _read_csv(data / "clotho" / name)
        corpus.extend(r[f"caption_{k}"] for r in rows for k in range(1, 6))
    return corpus


def write_checkpoint(out: Path, name: str, roberta: dict[str, Any]) -> Path:
    """LAION-CLAP checkpoint ``name`` with random weights, in LAION's training format."""
    import torch
    from clapnb.laion import CHECKPOINTS, build_clap
    spec = CHECKPOINTS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        module = build_clap(spec.amodel, spec.fusion, roberta=roberta)
    state = module.state_dict()
    if "text_branch.embeddings.position_ids" not in state:  # older transformers saved it
        state["text_branch.embeddings.position_ids"] = \
            torch.arange(roberta["max_position_embeddings"]).expand((1, -1)).clone()
    state_dict = {"module." + k: v.detach().clone().contiguous() for k, v in state.items()}
    n_params = sum(1 for p in module.parameters() if p.requires_grad)
    checkpoint = {
        "epoch": 45,
        "name": f"clapnb-mirror-{Path(spec.file).stem}",
        "state_dict": state_dict,
        "optimizer": {"state": {}, "param_groups": [
            {"lr": np.float64(1e-4), "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "amsgrad": False, "initial_lr": np.float64(1e-4), "params": list(range(n_params))}]},
        "val_metrics": {"audio_to_text_R@1": np.float32(0.0), "text_to_audio_R@1": np.float32(0.0)},
    }
    path = out / mirror_key(spec.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def _gpt2_byte_symbols() -> list[str]:
    """GPT-2's byte symbols (``bytes_to_unicode``) in its vocabulary's order: the printable
    bytes first (``!`` is id 0), then the others mapped to U+0100 onwards."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def write_msclap_tokenizer(out: Path, text_model: str, corpus: list[str]) -> dict[str, int]:
    """The tokenizer files of msclap's ``text_model`` at their real addresses, with
    ``vocab_size`` of ``clapnb.msclap.TEXT_MODELS[text_model].tiny`` tokens; returns the
    vocabulary. gpt2: byte-level BPE in GPT-2's layout (see the module docstring);
    bert: a lower-case WordPiece ``vocab.txt`` with ``[PAD]`` = 0."""
    from clapnb.msclap import END_TOKEN, TEXT_MODELS
    tower = TEXT_MODELS[text_model]
    size = tower.tiny["vocab_size"]
    with tempfile.TemporaryDirectory() as tmp:
        if text_model == "gpt2":
            from tokenizers import ByteLevelBPETokenizer
            bpe = ByteLevelBPETokenizer(add_prefix_space=False)
            bpe.train_from_iterator(corpus, vocab_size=size - 1, min_frequency=2, special_tokens=[],
                                    show_progress=False)
            vocab_file, merges_file = bpe.save_model(tmp)
            learned = json.loads(Path(vocab_file).read_text(encoding="utf-8"))
            merges = Path(merges_file).read_text(encoding="utf-8").splitlines()
            symbols = _gpt2_byte_symbols()
            known = set(symbols)
            rest = [t for t, _ in sorted(learned.items(), key=lambda kv: kv[1]) if t not in known]
            vocab = {t: i for i, t in enumerate([*symbols, *rest])}
            vocab[END_TOKEN] = len(vocab)
            if not known <= learned.keys() or len(vocab) != size:
                raise RuntimeError(f"the gpt2-style tokenizer has {len(vocab)} tokens; expected "
                                   f"{size}, every byte symbol among them (a corpus too small?)")
            if merges and not merges[0].startswith("#version"):
                merges.insert(0, "#version: 0.2")
            texts = {"vocab.json": json.dumps(vocab, ensure_ascii=False, separators=(",", ":")),
                     "merges.txt": "\n".join(merges) + "\n"}
        else:
            from tokenizers import BertWordPieceTokenizer
            specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            wordpiece = BertWordPieceTokenizer(lowercase=True)
            wordpiece.train_from_iterator(corpus, vocab_size=size, min_frequency=2,
                                          special_tokens=specials, show_progress=False)
            vocab = dict(sorted(wordpiece.get_vocab().items(), key=lambda kv: kv[1]))
            if list(vocab)[:len(specials)] != specials or list(vocab.values()) != list(range(len(vocab))) \
                    or len(vocab) > size:
                raise RuntimeError(f"the bert-style vocabulary has {len(vocab)} tokens starting "
                                   f"{list(vocab)[:5]}; expected at most {size}, [PAD] first")
            texts = {"vocab.txt": "\n".join(vocab) + "\n"}
    for name, text in texts.items():
        path = out / mirror_key(tower.urls[name])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return vocab


def write_msclap_checkpoint(out: Path, name: str) -> Path:
    """msclap checkpoint ``name`` with random weights, as Microsoft publishes it
    (``{"model": state_dict}``), with the one-layer text tower of
    ``clapnb.msclap.TEXT_MODELS[...].tiny``."""
    from collections import OrderedDict

    import torch
    from clapnb.msclap import CHECKPOINTS, TEXT_MODELS, build_clap
    spec = CHECKPOINTS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(zlib.crc32(name.encode()))
        module = build_clap(spec.version, text=TEXT_MODELS[spec.text_model].tiny)
    state = OrderedDict((k, v.detach().clone().contiguous()) for k, v in module.state_dict().items())
    path = out / mirror_key(spec.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state}, path)
    return path


def write_esc50(out: Path, data: Path, clips_per_class: int) -> Path:
    """The ESC-50 GitHub archive: real metadata rows, synthetic audio."""
    from clapnb.esc50 import ESC50_URL
    header, rows = _read_csv(data / "esc50" / "esc50.csv")
    # per class, the first clip of fold 1, then of fold 2, ...: the k-th clip comes from
    # fold k % 5 + 1, so that two or more clips per class give cross-validation folds
    first: dict[tuple[int, int], dict] = {}
    for r in rows:
        first.setdefault((int(r["target"]), int(r["fold"])), r)
    picked = {id(first[t, k % 5 + 1]) for t in {int(r["target"]) for r in rows}
              for k in range(clips_per_class) if (t, k % 5 + 1) in first}
    chosen = [r for r in rows if id(r) in picked]   # in file order, as the real csv
    # https://github.com/OWNER/REPO/archive/REF.zip unpacks to REPO-REF/ (GitHub's naming)
    m = re.fullmatch(r"/[^/]+/([^/]+)/archive/(?:refs/(?:heads|tags)/)?(.+)\.zip", urlsplit(ESC50_URL).path)
    if m is None:
        raise ValueError(f"clapnb.esc50.ESC50_URL = {ESC50_URL} is not a GitHub archive address")
    top = f"{m[1]}-{m[2]}"
    path = out / mirror_key(ESC50_URL)
    path.parent.mkdir(parents=True, exist_ok=True)
    zw = _ZipWriter(path, comment=m[2] if re.fullmatch(r"[0-9a-f]{40}", m[2]) else "")
    zw.add(f"{top}/README.md", "# ESC-50 (clapnb mirror)\n\nThe real metadata of "
           f"{len(chosen)} clips; their audio is SYNTHETIC (clapnb scripts/mirror.py), "
           "for rehearsing the course offline.\n")
    zw.add(f"{top}/meta/esc50.csv", _csv_text(header, chosen))
    for r in chosen:
        target = int(r["target"])
        rng = _rng("esc50", r["filename"])
        x = synth_clip(rng, ESC50_SECONDS, 110 * 2 ** (target / 12), int(rng.integers(1, 4)),
                       (0.2, 0.8), noise=(target % 5) / 5)
        zw.add(f"{top}/audio/{r['filename']}", wav_bytes(x))
    zw.close()
    return path


class _SevenZip:
    """py7zr's writer with a fixed date on every member (it stamps the clock otherwise)."""

    @staticmethod
    def open(path: Path):
        import py7zr
        from py7zr.helpers import ArchiveTimestamp

        date = ArchiveTimestamp.from_datetime(calendar.timegm((*ARCHIVE_DATE, 0, 0, 0)))

        class Writer(py7zr.SevenZipFile):
            @staticmethod
            def _make_file_info_from_name(bio, size, arcname):
                info = py7zr.SevenZipFile._make_file_info_from_name(bio, size, arcname)
                for key in ("creationtime", "lastwritetime", "lastaccesstime"):
                    info[key] = date
                return info

        return Writer(path, "w", filters=[{"id": py7zr.FILTER_LZMA2, "preset": 6}])


def write_clotho(out: Path, data: Path, split: str, n_clips: int, seconds: float) -> list[Path]:
    """Clotho v2.1 ``split``: the real captions of the first clips, synthetic audio."""
    from clapnb.clotho import CLOTHO_URL, N_CAPTIONS
    header, rows = _read_csv(data / "clotho" / CLOTHO_SPLITS[split])
    columns = ["file_name", *(f"caption_{k}" for k in range(1, N_CAPTIONS + 1))]
    if header[:len(columns)] != columns:
        raise ValueError(f"{CLOTHO_SPLITS[split]}: expected columns {columns}, got {header}")
    rows = [{c: r[c] for c in columns} for r in rows[:n_clips]]
    base = out / mirror_key(CLOTHO_URL.rstrip("/") + "/")
    base.mkdir(parents=True, exist_ok=True)
    captions = base / f"clotho_captions_{split}.csv"
    captions.write_text(_csv_text(columns, rows, lineterminator="\r\n"), encoding="utf-8")
    archive = base / f"clotho_audio_{split}.7z"
    with _SevenZip.open(archive) as z:
        for r in rows:
            rng = _rng("clotho", split, r["file_name"])
            x = synth_clip(rng, seconds, 80 * 2 ** (rng.uniform(0, 48) / 12),
                           int(rng.integers(2, 6)), (0.3, 1.5), noise=rng.uniform(0, 0.6))
            z.writestr(wav_bytes(x), f"{split}/{r['file_name']}")
    return [captions, archive]


def write_fsd50k_metadata(out: Path, data: Path) -> Path:
    """``FSD50K.metadata.zip``: the real layout, filled with the Clotho clips' Freesound tags."""
    from clapnb.vocabulary import FSD50K_METADATA_URL
    path = out / mirror_key(FSD50K_METADATA_URL)
    path.parent.mkdir(parents=True, exist_ok=True)
    zw = _ZipWriter(path)
    for split, clotho in (("dev", "development"), ("eval", "evaluation")):
        _, rows = _read_csv(data / "clotho" / f"clotho_metadata_{clotho}.csv")
        clips = {r["sound_id"]: {"title": r["file_name"], "description": "",
                                 "tags": [t for t in r["keywords"].split(";") if t.strip()],
                                 "license": r["license"], "uploader": r["manufacturer"]}
                 for r in rows}
        zw.add(f"FSD50K.metadata/{split}_clips_info_FSD50K.json", json.dumps(clips))
    zw.add("FSD50K.metadata/README.md", "FSD50K metadata (clapnb mirror): the real layout, "
           "filled with the Freesound tags of the Clotho clips.\n")
    zw.close()
    return path


# ---------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(out: Path) -> dict[str, dict]:
    """``manifest.json``: size and SHA-256 of every file in the tree."""
    manifest = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        key = path.relative_to(out).as_posix()
        if key in (MANIFEST, STAMP):
            continue
        manifest[key] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _inputs(data: Path) -> list[Path]:
    files = [data / "esc50" / "esc50.csv",
             *(data / "clotho" / f"clotho_metadata_{s}.csv" for s in ("development", "evaluation")),
             *(data / "clotho" / name for name in CLOTHO_SPLITS.values()),
             *sorted((REPO / "clapnb" / "vocabularies").glob("*.tsv"))]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the mirror is built from the shared metadata (--data, default "
                                f"{DEFAULT_DATA}); missing: {', '.join(missing)}")
    return files


def settings(data_dir: Path, clips_per_class: int, clotho_clips: int, clotho_splits: list[str],
             clotho_seconds: float, checkpoints: list[str]) -> dict[str, Any]:
    """Everything the bytes of a build depend on (the stamp)."""
    from clapnb.clotho import CLOTHO_URL
    from clapnb.esc50 import ESC50_URL
    from clapnb.msclap import TEXT_MODELS, TOKENIZER_URLS
    from clapnb.vocabulary import FSD50K_METADATA_URL
    CHECKPOINTS = all_checkpoints()
    towers = msclap_text_models(checkpoints)
    return {
        "version": BUILD_VERSION,
        "script_sha256": file_sha256(Path(__file__)),
        "clips_per_class": clips_per_class, "clotho_clips": clotho_clips,
        "clotho_splits": clotho_splits, "clotho_seconds": clotho_seconds,
        "checkpoints": {n: CHECKPOINTS[n].url for n in checkpoints},
        "text_tower": text_tower(),
        **({"msclap_text_towers": {t: TEXT_MODELS[t].tiny for t in towers},
            "msclap_tokenizers": {t: TOKENIZER_URLS[t] for t in towers}} if towers else {}),
        "urls": {"esc50": ESC50_URL, "clotho": CLOTHO_URL, "fsd50k": FSD50K_METADATA_URL,
                 "tokenizer": tokenizer_urls()},
        "inputs": {p.name: file_sha256(p) for p in _inputs(data_dir)},
    }


def build(out_dir: str | os.PathLike, data_dir: str | os.PathLike = DEFAULT_DATA, *,
          clips_per_class: int = 2, clotho_clips: int = 20,
          clotho_splits: Iterable[str] = ("evaluation",), clotho_seconds: float = 15.0,
          checkpoints: Iterable[str] | str | None = None, force: bool = False,
          progress: Callable[[str], None] = log) -> Path:
    """Build the mirror tree in ``out_dir`` (see the module docstring); returns ``out_dir``.

    Skipped when ``out_dir`` holds a finished build with the same settings and inputs
    (unless ``force``). Otherwise the tree is written into a temporary sibling folder and
    renamed into place when complete; an older mirror at ``out_dir`` is replaced, any other
    non-empty folder there is refused.
    """
    out, data = Path(out_dir).resolve(), Path(data_dir).resolve()
    splits = list(dict.fromkeys(clotho_splits))
    unknown = [s for s in splits if s not in CLOTHO_SPLITS]
    if unknown or clips_per_class < 1 or clotho_clips < 1 or clotho_seconds <= 0:
        raise ValueError(f"bad settings: clotho splits {splits} (valid: {', '.join(CLOTHO_SPLITS)}), "
                         f"clips_per_class={clips_per_class}, clotho_clips={clotho_clips}, "
                         f"clotho_seconds={clotho_seconds}")
    names = checkpoint_names(checkpoints)
    wanted = settings(data, clips_per_class, clotho_clips, splits, clotho_seconds, names)
    stamp = out / STAMP
    if not force and stamp.is_file() and (out / MANIFEST).is_file():
        try:
            if json.loads(stamp.read_text()) == wanted:
                progress(f"mirror in {out} is up to date")
                return out
        except ValueError:
            pass
    if out.exists() and any(out.iterdir()) and not (stamp.is_file() or (out / MANIFEST).is_file()):
        raise FileExistsError(f"{out} is not empty and holds no mirror; pick another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    start = time.perf_counter()

    def step(what: str, fn: Callable, *args) -> Any:
        t = time.perf_counter()
        result = fn(*args)
        progress(f"  {what}: {time.perf_counter() - t:.1f} s")
        return result

    try:
        progress(f"building the mirror in {out}")
        roberta = text_tower()
        corpus = tokenizer_corpus(data)
        step("tokenizer", lambda: write_tokenizer(tmp, corpus, roberta["vocab_size"]))
        for text_model in msclap_text_models(names):
            step(f"msclap {text_model} tokenizer", write_msclap_tokenizer, tmp, text_model, corpus)
        for name in names:
            if is_msclap(name):
                step(f"checkpoint {name}", write_msclap_checkpoint, tmp, name)
            else:
                step(f"checkpoint {name}", write_checkpoint, tmp, name, roberta)
        step("ESC-50", write_esc50, tmp, data, clips_per_class)
        for split in splits:
            step(f"Clotho {split}", write_clotho, tmp, data, split, clotho_clips, clotho_seconds)
        step("FSD50K metadata", write_fsd50k_metadata, tmp, data)
        manifest = step("manifest", write_manifest, tmp)
        (tmp / STAMP).write_text(json.dumps(wanted, indent=1) + "\n")
        tmp.chmod(0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(e["size"] for e in manifest.values())
    progress(f"mirror built in {time.perf_counter() - start:.1f} s: {len(manifest)} files, "
             f"{total / 1e6:.1f} MB")
    return out


# ---------------------------------------------------------------------------------
# serve
# ---------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 30  # seconds a stalled client may hold a handler thread
    server_version = "clapnb-mirror/1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _resolve(self) -> Path | None:
        """The file the request names, or None (missing, a folder, or outside the tree)."""
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        parts = [p for p in path.split("/") if p]
        if not path.startswith("/") or any(p in (".", "..") or "\\" in p or "\0" in p
                                           for p in parts):
            return None
        root = self.server.root
        try:
            target = root.joinpath(*parts).resolve()
        except (OSError, ValueError):
            return None
        if not target.is_relative_to(root) or not target.is_file():
            return None  # a link out of the tree lands here too
        return target

    def _answer(self, body: bool) -> None:
        target = self._resolve()
        if self.server.requests is not None:
            self.server.requests.append((self.command, self.path, self.headers.get("Range")))
        if target is None:
            self.send_error(404, "not found")
            return
        size = target.stat().st_size
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", (self.headers.get("Range") or "").strip())
        if m:
            start = int(m[1])
            end = min(int(m[2]), size - 1) if m[2] else size - 1
            if start >= size or end < start:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            length = end - start + 1
        else:
            self.send_response(200)
            length = size
        self.send_header("Content-Length", str(length))
        self.send_header("Content-Type", "application/json" if target.suffix == ".json"
                         else "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        with open(target, "rb") as f:
            f.seek(start)
            while length > 0 and (chunk := f.read(min(_CHUNK, length))):
                self.wfile.write(chunk)
                length -= len(chunk)

    def log_message(self, format: str, *args) -> None:
        if self.server.verbose:
            sys.stderr.write(f"mirror: {self.address_string()} {format % args}\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    verbose: bool = False
    requests: list[tuple[str, str, str | None]] | None = None  # (method, path, Range), if kept


def make_server(out_dir: str | os.PathLike, port: int = 0, verbose: bool = False,
                requests: list | None = None) -> _Server:
    """A server for the mirror in ``out_dir`` on 127.0.0.1 (not started); each request is
    appended to ``requests`` as ``(method, path, Range header or None)`` when it is a list."""
    root = Path(out_dir).resolve()
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(f"{root} holds no mirror ({MANIFEST} is missing); "
                                "build it first: python scripts/mirror.py build OUT_DIR")
    server = _Server(("127.0.0.1", port), _Handler)
    server.root, server.verbose, server.requests = root, verbose, requests
    return server


def base_url(server: _Server) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


@contextmanager
def serving(out_dir: str | os.PathLike, port: int = 0,
            requests: list | None = None) -> Iterator[str]:
    """Serve the mirror in ``out_dir`` in a background thread; yields its base address
    (the value for ``CLAPNB_MIRROR``) and stops the server at the end of the block.
    ``requests``: a list that receives ``(method, path, Range header)`` of every request."""
    server = make_server(out_dir, port, requests=requests)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="clapnb-mirror", daemon=True)
    thread.start()
    try:
        yield base_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def serve(out_dir: str | os.PathLike, port: int = 0, print_url: bool = False,
          verbose: bool = False) -> None:
    """Serve until SIGTERM or SIGINT (the ``serve`` command)."""
    server = make_server(out_dir, port, verbose)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    url = base_url(server)
    if print_url:
        print(url, flush=True)
    else:
        log(f"serving the mirror in {server.root} at {url} (set CLAPNB_MIRROR={url}); "
            "Ctrl-C stops it")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    b = commands.add_parser("build", help="write the mirror tree and its manifest")
    b.add_argument("out_dir", type=Path)
    b.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help=f"the shared reference metadata (default {DEFAULT_DATA})")
    b.add_argument("--clips-per-class", type=int, default=2, help="ESC-50 clips per class")
    b.add_argument("--clotho-clips", type=int, default=20, help="Clotho clips per split")
    b.add_argument("--clotho-seconds", type=float, default=15.0, help="length of a Clotho clip")
    b.add_argument("--clotho-splits", default="evaluation",
                   help=f"comma-separated, of {', '.join(CLOTHO_SPLITS)} (default evaluation)")
    b.add_argument("--checkpoints", default=",".join(DEFAULT_CHECKPOINTS),
                   help="comma-separated names of clapnb.laion.CHECKPOINTS and "
                        "clapnb.msclap.CHECKPOINTS, or 'all'")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    s = commands.add_parser("serve", help="serve a built mirror on 127.0.0.1")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--port", type=int, default=0, help="0: any free port")
    s.add_argument("--print-url", action="store_true",
                   help="print only the base address on stdout once listening")
    s.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared CI machine: one thread
            import torch
            torch.set_num_threads(1)
            build(args.out_dir, args.data, clips_per_class=args.clips_per_class,
                  clotho_clips=args.clotho_clips, clotho_seconds=args.clotho_seconds,
                  clotho_splits=[x for x in args.clotho_splits.split(",") if x],
                  checkpoints=args.checkpoints, force=args.force)
        else:
            serve(args.out_dir, args.port, args.print_url, args.verbose)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        log(f"mirror.py {args.command}: {e}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
