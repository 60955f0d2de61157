"""What the checkpoint backends (:mod:`clapnb.laion`, :mod:`clapnb.msclap`) share.

Both download a published checkpoint file and a tokenizer, and refuse what does not fit:

* :class:`CheckpointFile`: one checkpoint file, its address, size and digest; where it is
  cached (:meth:`~CheckpointFile.path`), where it comes from (:meth:`~CheckpointFile.source`:
  the mirror under ``CLAPNB_MIRROR``), whether it is cached (:meth:`~CheckpointFile.cached`),
  the file itself (:meth:`~CheckpointFile.fetch`), the cache key of a model built from it
  (:meth:`~CheckpointFile.cache_key`); :func:`lookup_file` looks one up by name;
* :func:`read_state` reads a state dict with ``torch.load(weights_only=True)`` and
  :func:`load_strict` loads it strictly, listing every key that does not fit;
* :func:`fetch_tokenizer` downloads tokenizer files (:func:`fetch_files`) into
  :func:`tokenizer_folder`, builds the tokenizer, checks that it is the real one
  (:func:`check_real`) and fetches stale cached files once more; :func:`check_fits` checks
  that a tokenizer fits the checkpoint's embedding table;
* one :class:`CheckpointError` and one :class:`TokenizerError` for every backend.

What differs between the backends (the checkpoint table, the file's layout, which keys
may be missing, which tokenizer) stays in their modules and comes in as arguments.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from clapnb.cache import cache_dir
from clapnb.download import Source, download_file
from clapnb.download import source as resolve_source
from clapnb.settings import offline

T = TypeVar("T")
Tok = TypeVar("Tok")
#: what a missing-or-extra rule looks like: a key -> whether it may be missing (or extra)
KeyRule = Callable[[str], Any]


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be read or does not fit the model; the message says why."""


class TokenizerError(RuntimeError):
    """A tokenizer is missing, unreadable, a stand-in or does not fit its text tower; the
    message says how to fix it."""


# ---------------------------------------------------------------------------------
# Checkpoint files: lookup, cache, download
# ---------------------------------------------------------------------------------
class Published(Protocol):
    """A backend's checkpoint entry: what :func:`lookup_file` reads of it."""

    @property
    def file(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def size(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...


def find_checkpoint(table: Mapping[str, T], name: str, family: str) -> T:
    """``table[name]``; an unknown name is a ValueError that names ``family`` and lists
    the valid names.

    >>> find_checkpoint({"a/1": 1}, "a/2", "A")
    Traceback (most recent call last):
    ...
    ValueError: unknown A checkpoint 'a/2'; valid names: a/1
    """
    if name not in table:
        raise ValueError(f"unknown {family} checkpoint {name!r}; valid names: {', '.join(table)}")
    return table[name]


@dataclass(frozen=True)
class CheckpointFile:
    """One checkpoint file as it is published and cached.

    name: registry name (``"laion/630k-audioset"``), the first part of :meth:`cache_key`.
    file: its file name, in the cache's ``checkpoints`` folder.
    url: where it is published.
    size: bytes, where known (checked after the download and by :meth:`cached`).
    sha256: hex digest, where known (checked after the download).
    """

    name: str
    file: str
    url: str
    size: int | None = None
    sha256: str | None = None

    def path(self) -> Path:
        """Where the file is (or will be) cached."""
        return cache_dir("checkpoints") / self.file

    def source(self) -> Source:
        """Where the file comes from and what it must be (:func:`clapnb.download.source`):
        :attr:`url` with :attr:`size` and :attr:`sha256`, or, with ``CLAPNB_MIRROR`` set
        (the rehearsal), the mirror with those of its manifest (a
        :class:`~clapnb.download.DownloadError` when that manifest cannot be read)."""
        return resolve_source(self.url, sha256=self.sha256, size=self.size)

    def cached(self) -> bool:
        """True when the file is in the cache with the right size (where known; under a
        mirror, the size its manifest gives)."""
        path = self.path()
        if not path.is_file():
            return False
        size = self.source().size
        return size is None or path.stat().st_size == size

    def fetch(self) -> Path:
        """The cached file, downloaded (and verified where a digest is known) first if needed."""
        path = self.path()
        if not self.cached():
            download_file(self.url, path, sha256=self.sha256, size=self.size, desc=self.file)
        return path

    def cache_key(self, src: Source, preprocessing: str) -> str:
        """The cache key of a model built from the fetched file: its name, file name, size
        on disk and digest (``src``'s: the mirror's, under a mirror), ``rehearsal`` under a
        mirror, and what the model does to audio (``preprocessing``)."""
        return "|".join([self.name, self.file, f"{self.path().stat().st_size}B",
                         src.sha256 or "sha256-unknown", *(["rehearsal"] if src.mirrored else []),
                         preprocessing])


def lookup_file(table: Mapping[str, Published], name: str, family: str) -> CheckpointFile:
    """Checkpoint ``name`` of ``table`` (:func:`find_checkpoint`) as a :class:`CheckpointFile`;
    its address is read now (a test may point a backend's ``BASE_URL`` elsewhere)."""
    spec = find_checkpoint(table, name, family)
    return CheckpointFile(name, spec.file, spec.url, spec.size, spec.sha256)


# ---------------------------------------------------------------------------------
# Reading and loading weights
# ---------------------------------------------------------------------------------
def read_state(path: str | Path, key: str, what: str,
               allowed: Sequence[Any] = ()) -> dict[str, torch.Tensor]:
    """The state dict in checkpoint file ``path``: ``content[key]`` where the file holds a
    dict with ``key`` (a training checkpoint), else the content itself (a bare state dict).

    Reads with ``torch.load(weights_only=True)``: tensors and plain containers, plus the
    globals in ``allowed``; anything else is refused. Zip files are memory-mapped, so what
    else they hold (say, an optimiser state) stays on disk. ``what`` names the expected
    file in messages (``"a LAION-CLAP checkpoint"``). Raises :class:`CheckpointError`.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(allowed)):
            content = torch.load(path, map_location="cpu", weights_only=True,
                                 mmap=zipfile.is_zipfile(path))
    except Exception as e:
        try:
            unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:
            unsafe = []
        why = (f"it holds Python objects other than weights ({', '.join(unsafe)}), which clapnb "
               f"does not unpickle; is it {what}?" if unsafe else
               f"it is unreadable ({e}); delete it and call again to download it afresh")
        raise CheckpointError(f"cannot load {path}: {why}") from e
    state = content.get(key, content) if isinstance(content, dict) else content
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors (bare or under {key!r}); "
                              f"is it {what}?")
    return dict(state)


def mismatches(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
               may_be_missing: KeyRule | None = None) -> list[str]:
    """What keeps ``state`` from loading into a module whose state dict is ``expected``,
    one line per kind (missing keys, unexpected keys, keys with another shape), each with
    its count and up to six keys; empty when it fits. Keys ``may_be_missing`` accepts
    are not reported missing.

    >>> mismatches({"a": torch.ones(2), "b": torch.ones(1)}, {"a": torch.ones(3), "c": torch.ones(1)})
    ['1 missing: b', '1 unexpected: c', '1 with another shape: a (3,) (model: (2,))']
    """
    missing = sorted(k for k in expected.keys() - state.keys()
                     if not (may_be_missing and may_be_missing(k)))
    unexpected = sorted(state.keys() - expected.keys())
    reshaped = sorted(f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
                      for k in expected.keys() & state.keys() if state[k].shape != expected[k].shape)
    return [f"{len(keys)} {what}: {', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected),
                               ("with another shape", reshaped)) if keys]


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
                hint: str = "", may_be_missing: KeyRule | None = None,
                may_be_extra: KeyRule | None = None) -> None:
    """Load ``state`` into ``module`` strictly, with a readable error for any mismatch.

    Every key of the module must be in ``state`` with the module's shape, and nothing
    else, except: keys ``may_be_missing`` accepts keep the module's own values, and keys
    the module lacks that ``may_be_extra`` accepts are dropped. Otherwise a
    :class:`CheckpointError`: ``"<source> does not fit the model (<what>). <hint>"``.
    """
    expected = module.state_dict()
    state = {k: v for k, v in state.items()
             if not (k not in expected and may_be_extra and may_be_extra(k))}
    problems = mismatches(expected, state, may_be_missing)
    if problems:
        raise CheckpointError(f"{source} does not fit the model ({'; '.join(problems)}). {hint}".rstrip())
    module.load_state_dict({**expected, **state}, strict=True)


# ---------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------
def tokenizer_folder(name: str) -> Path:
    """Where the files of tokenizer ``name`` (``"roberta-base"``, ``"gpt2"``) are cached."""
    return cache_dir("tokenizers", name)


def fetch_files(urls: Mapping[str, str], folder: Path, label: str) -> dict[str, Path]:
    """File name -> path of each file of ``urls`` (file name -> address) in ``folder``,
    downloaded first where it is not there (:func:`clapnb.download.download_file`: under
    ``CLAPNB_MIRROR`` from the mirror; without a published digest, with an
    :class:`~clapnb.download.UnverifiedDownload` warning). ``label`` names them in the
    progress bar."""
    return {name: download_file(url, folder / name, desc=f"{label} {name}")
            for name, url in urls.items()}


@contextmanager
def reading_tokenizer_files(folder: Path) -> Iterator[None]:
    """Around building a tokenizer from the files in ``folder``: any error (json, unicode,
    the tokenizers library's own) becomes a :class:`TokenizerError` that says to delete
    them."""
    try:
        yield
    except TokenizerError:
        raise
    except Exception as e:
        raise TokenizerError(f"the tokenizer files in {folder} are unreadable ({e}); delete "
                             "them and load again to download them afresh") from e


def fetch_tokenizer(urls: Mapping[str, str], folder: Path, label: str,
                    build: Callable[[dict[str, Path]], Tok],
                    check: Callable[[Tok, Path], None]) -> Tok:
    """A tokenizer built (``build(files)``) from the files of ``urls`` in ``folder``
    (:func:`fetch_files`), and checked (``check(tokenizer, folder)``, which raises
    :class:`TokenizerError`) to be the real one.

    No network when the files are cached; offline and not cached: a
    :class:`~clapnb.download.DownloadError` at once. Cached files that fail (say, a
    rehearsal's) are deleted and downloaded once more (not offline). Under
    ``CLAPNB_MIRROR`` the mirror's files, verified by its manifest, are not checked: the
    backend checks that they fit the checkpoint instead (:func:`check_fits`).
    """
    mirrored = resolve_source(next(iter(urls.values()))).mirrored
    for attempt in range(2):
        cached = all((folder / name).is_file() for name in urls)
        files = fetch_files(urls, folder, label)
        try:
            tokenizer = build(files)
            if not mirrored:
                check(tokenizer, folder)
            return tokenizer
        except TokenizerError:
            if attempt or not cached or offline():
                raise
            for path in files.values():  # stale files in the cache: fetch them afresh
                path.unlink(missing_ok=True)
    raise AssertionError("unreachable")


def check_real(tokenizer: Callable, name: str, vocab_size: int, probe: tuple[str, list[int]],
               urls: Mapping[str, str], where: str | Path | None = None) -> None:
    """Refuse anything but the real tokenizer ``name``: ``vocab_size`` tokens, and ``probe``
    (a text and its ids) tokenized as the real one does; a stand-in would give every text
    a meaningless embedding. ``where``: the folder its files came from; ``urls``: where the
    real files are (both named in the message)."""
    text, expected = probe
    size, ids = len(tokenizer), list(tokenizer(text)["input_ids"])
    if size != vocab_size or ids != expected:
        origin = f"built from the files in {where}" if where else "given"
        raise TokenizerError(
            f"the tokenizer {origin} is not the real {name} one: its vocabulary has {size:,} "
            f"tokens (expected {vocab_size:,}) and it turns {text!r} into {ids} (expected "
            f"{expected}); every text would get a meaningless embedding. Fix: delete that "
            "folder and load again with network access to download the real files "
            f"({', '.join(urls.values())}), or use the offline model: load_model('tiny').")


def check_fits(tokenizer: Callable, rows: int, pad_id: int, folder: Path,
               problems: Sequence[str] = ()) -> None:
    """Refuse a tokenizer whose ids do not fit a text tower: more tokens than the ``rows``
    of its embedding table, or a padding id other than ``pad_id``; ``problems``: what
    else the backend found wrong. The message says to delete ``folder`` (the tokenizer's
    files) and the checkpoint."""
    size, pad = len(tokenizer), getattr(tokenizer, "pad_token_id", pad_id)
    found = [f"it has {size:,} tokens, the embedding table {rows:,} rows"] if size > rows else []
    found += [f"its padding id is {pad}, not {pad_id}"] if pad != pad_id else []
    found += problems
    if found:
        raise TokenizerError(
            f"the tokenizer does not fit the checkpoint's text tower: {'; '.join(found)}. "
            f"Delete {folder} and the checkpoint, and load again (under CLAPNB_MIRROR: "
            "rebuild the mirror).")


def require_tokenizer(tokenizer: Callable | None, model: str, load: str) -> None:
    """Raise :class:`TokenizerError` when a model (named ``model``) has no tokenizer: it
    was built without a checkpoint; ``load`` says how to load one (``"load_model('laion/...')
    or clapnb.laion.load_laion()"``)."""
    if tokenizer is None:
        raise TokenizerError(f"{model} has no tokenizer loaded (a model built without a "
                             f"checkpoint), so it cannot embed text; load one with {load}")
