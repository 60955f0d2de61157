"""LAION-CLAP (the ``laion-clap`` 1.1.7 package) as a :class:`~clapnb.model.ClapModel`.

:func:`load_laion` downloads a checkpoint (see :data:`CHECKPOINTS`), builds the
package's own model classes and wraps them in :class:`LaionClap`. Where this
module departs from ``import laion_clap``, and why:

* **No** ``import laion_clap``. Its ``__init__`` appends its folder to
  ``sys.path`` (which makes its top-level names ``clap_module``, ``training``
  and ``evaluate`` importable, next to a top-level ``tests`` package the wheel
  installs) and downloads three tokenizers from Hugging Face at import time
  (retrying for minutes offline; with ``HF_HUB_OFFLINE=1`` it silently gets
  stand-in tokenizers that map every text to the same embedding).
  :func:`import_clap_module` loads only ``laion_clap/clap_module`` (the model
  code) and leaves ``sys.path`` alone.
* The model is built by ``clap_module.create_model``, but its RoBERTa text tower
  is built from a configuration read off the checkpoint's own weights
  (:func:`roberta_config`: roberta-base for every real checkpoint) instead of
  downloading roberta-base's weights: the checkpoint supplies every weight anyway.
* The tokenizer is transformers' ``RobertaTokenizer`` built from roberta-base's
  ``vocab.json`` and ``merges.txt`` (:data:`TOKENIZER_URLS`, ~1.4 MB), fetched by
  clapnb's own :func:`~clapnb.download.download_file` into
  ``cache_dir("tokenizers", "roberta-base")``: one code path online and in the
  rehearsal (``CLAPNB_MIRROR``), never the Hugging Face hub client. A wrong
  vocabulary is refused (:func:`check_roberta_tokenizer`).
* Checkpoints are read with ``torch.load(weights_only=True)``, allowing only
  numpy scalar types besides tensors (:func:`read_checkpoint`), and loaded
  strictly (:func:`load_weights`).
* Every address goes through :func:`clapnb.download.source`: under ``CLAPNB_MIRROR``
  (the rehearsal) checkpoints and tokenizer come from the mirror, checked against
  its manifest, and the model says so (``LaionClap.rehearsal``).
* Audio goes in as the package's ``get_audio_embedding_from_data`` feeds it
  (``hook.py``; tested for parity), with its two random choices made
  deterministic:

  - every clip is quantised through 16-bit integers first
    (``int16_to_float32(float32_to_int16(x))``: clipped to [-1, 1]), see
    :func:`quantize_int16`;
  - clips of at most 10 s are repeated whole and zero-filled to 10 s ("repeatpad");
  - longer clips, non-fusion checkpoints: the package crops 10 s at *random*
    ("rand_trunc"); clapnb keeps the *first* 10 s, as every clapnb model does
    (:class:`~clapnb.model.ClapModel`), so that the window LMAC-ZS explains,
    plays and masks starts where the clip starts;
  - longer clips, fusion checkpoints: the package's fusion input (a log-mel of
    the whole clip shrunk to 10 s, beside three 10-s crops drawn at random from
    its front, middle and back thirds); clapnb takes the middle crop of each
    third (:func:`fusion_crop_starts`), so the whole clip is seen, evenly.
  :meth:`LaionClap.encode_spectrogram` starts from the linear STFT magnitude of
  the 10-s window, so that LMAC-ZS can mask it; ``embed_audio`` equals it on that
  window except for clips over 10 s on fusion checkpoints (see
  :meth:`LaionClap.embed_audio`).

Without a checkpoint, :func:`random_laion` builds a randomly initialised model
of the real audio architecture, offline; tests use it.
"""

from __future__ import annotations

import http.client
import importlib.util
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.request import Request, urlopen

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clapnb._torchvision_shim import torchvision_stand_in
from clapnb.audio import AudioInput, split_clips, prepare_waveforms
from clapnb.checkpoints import CheckpointError, TokenizerError  # shared with msclap; re-exported
from clapnb.checkpoints import (CheckpointFile, check_fits, check_real, fetch_tokenizer, find_checkpoint,
                                load_strict, lookup_file, read_state, reading_tokenizer_files,
                                require_tokenizer, tokenizer_folder)
from clapnb.download import DownloadError, Source
from clapnb.model import AudioEncoding, ClapModel, StftConfig, check_feature_index
from clapnb.settings import default_device, offline

#: where the checkpoints live (the LAION-CLAP authors' Hugging Face repository)
BASE_URL = "https://huggingface.co/lukewys/laion_clap/resolve/main/"
DEFAULT_CHECKPOINT = "laion/630k-audioset"
#: what the wrapper does to audio before a non-fusion model; part of its cache keys
PREPROCESSING = "48kHz-mono-int16-10s-crop-start-repeatpad-stft1024-hop480-mel64-v2"
#: the same for a fusion model (clips over 10 s: the fusion input, middle crops of the thirds)
PREPROCESSING_FUSION = "48kHz-mono-int16-10s-repeatpad-fusion-mid3-stft1024-hop480-htkmel64-v2"


@dataclass(frozen=True)
class Checkpoint:
    """One LAION-CLAP checkpoint file.

    file: its name in the Hugging Face repository.
    amodel: audio encoder, ``"HTSAT-tiny"`` or ``"HTSAT-base"`` (text: RoBERTa-base).
    fusion: trained with feature fusion (``aff_2d``) for clips longer than 10 s.
    size: bytes, where known (checked after the download and by :func:`checkpoint_cached`).
    sha256: hex digest, where known (checked after the download).
    about: what it was trained on.
    """

    file: str
    amodel: str
    fusion: bool
    size: int | None
    sha256: str | None
    about: str

    @property
    def url(self) -> str:
        return BASE_URL + self.file


#: name -> checkpoint. Sizes and digests are those of the Hugging Face LFS records;
#: None where no record could be found (the download then checks nothing, and the
#: strict weight loading is what catches a wrong file).
CHECKPOINTS: dict[str, Checkpoint] = {
    "laion/630k-audioset": Checkpoint(
        "630k-audioset-best.pt", "HTSAT-tiny", False, 1_863_587_645,
        "8053c9775516af2f4902e1e8281e356cc1bf7a85e8b761908170767b77c3f037",
        "LAION-Audio-630K + AudioSet; general sounds up to 10 s (the default)"),
    "laion/630k": Checkpoint(
        "630k-best.pt", "HTSAT-tiny", False, None,
        "e02951eae3c9955db546c50086059e6457188ec39446858f2bddbcb4b56b1cb3",
        "LAION-Audio-630K; general sounds up to 10 s"),
    "laion/630k-audioset-fusion": Checkpoint(
        "630k-audioset-fusion-best.pt", "HTSAT-tiny", True, 1_863_889_051,
        "fb171dd9b608aebdac3d89286cd7615c5100af4cc7dc37797c7fb8d3cc15e3a5",
        "LAION-Audio-630K + AudioSet, feature fusion: clips over 10 s are heard whole"),
    "laion/630k-fusion": Checkpoint(
        "630k-fusion-best.pt", "HTSAT-tiny", True, None, None,
        "LAION-Audio-630K, feature fusion: clips over 10 s are heard whole"),
    "laion/music_audioset": Checkpoint(
        "music_audioset_epoch_15_esc_90.14.pt", "HTSAT-base", False, 2_352_471_003,
        "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd",
        "music + AudioSet + LAION-Audio-630K"),
    "laion/music_speech": Checkpoint(
        "music_speech_epoch_15_esc_89.25.pt", "HTSAT-base", False, 2_352_471_003,
        "a27dfbd00d96781020d83044136f084343edab799d2657ef3cfe5c4f2222bb28",
        "music + speech + LAION-Audio-630K"),
    "laion/music_speech_audioset": Checkpoint(
        "music_speech_audioset_epoch_15_esc_89.98.pt", "HTSAT-base", False, 2_352_471_003,
        "51c68f12f9d7ea25fdaaccf741ec7f81e93ee594455410f3bca4f47f88d8e006",
        "music + speech + AudioSet + LAION-Audio-630K"),
}

#: roberta-base's config.json: the text tower of every checkpoint above (what
#: :func:`roberta_config` reads off each of them)
ROBERTA_BASE: dict[str, Any] = dict(
    vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
    initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
#: a one-layer RoBERTa of the same width (the text projection expects 768), for random models
ROBERTA_TINY: dict[str, Any] = {**ROBERTA_BASE, "vocab_size": 1000, "num_hidden_layers": 1,
                                "intermediate_size": 64, "max_position_embeddings": 80}
#: the tokenizer of the text tower, and how the package calls it
TOKENIZER_NAME = "roberta-base"
TEXT_LENGTH = 77
#: file name -> address of the roberta-base tokenizer files (no digest is published for them:
#: they are accepted with an UnverifiedDownload warning, then checked by check_roberta_tokenizer).
#: A mirror (CLAPNB_MIRROR) serves a small roberta-style tokenizer under the same paths.
TOKENIZER_URLS: dict[str, str] = {
    name: f"https://huggingface.co/FacebookAI/roberta-base/resolve/main/{name}"
    for name in ("vocab.json", "merges.txt")}
#: a sentence and its ids in the real roberta-base (the example in transformers' RobertaTokenizer docs)
TOKENIZER_PROBE = ("Hello world", [0, 31414, 232, 2])

_USER_AGENT = "clapnb/0.1 (Python urllib)"


# ---------------------------------------------------------------------------------
# The package's model code, imported without laion_clap/__init__.py
# ---------------------------------------------------------------------------------
def import_clap_module() -> ModuleType:
    """``laion_clap.clap_module`` (the model code), without running ``laion_clap/__init__.py``.

    Registers it in ``sys.modules`` under its own name; ``sys.path`` is not
    touched. Where torchvision is missing, stand-ins are used during the import
    (:mod:`clapnb._torchvision_shim`).
    """
    name = "laion_clap.clap_module"
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec("laion_clap")  # finds the folder, runs nothing
    if package is None or not package.submodule_search_locations:
        raise ImportError("laion-clap (the LAION-CLAP model code) is not installed: run "
                          "pip install --no-deps laion-clap==1.1.7 (without its outdated pins)")
    folder = Path(next(iter(package.submodule_search_locations))) / "clap_module"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    # what clap_module imports from transformers, imported (and transformers' cached
    # "is torchvision there?" answered) before any torchvision stand-in exists
    from transformers import BartModel, BertModel, RobertaModel  # noqa: F401
    from transformers.utils import is_torchvision_available
    is_torchvision_available()
    sys.modules[name] = module
    try:
        with torchvision_stand_in():
            spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        raise
    return module


@contextmanager
def _roberta_from_config(config: dict[str, Any]) -> Iterator[None]:
    """While the CLAP is built, ``RobertaModel.from_pretrained("roberta-base")`` in
    ``clap_module.model`` builds the architecture from ``config`` instead of
    downloading ~500 MB of weights that the checkpoint replaces anyway."""
    from transformers import RobertaConfig, RobertaModel
    model_code = sys.modules["laion_clap.clap_module.model"]

    class FromConfig:
        @staticmethod
        def from_pretrained(name: str, *args, **kwargs) -> RobertaModel:
            if name != "roberta-base":
                raise ValueError(f"expected the roberta-base text tower, not {name!r}")
            return RobertaModel(RobertaConfig(**config))

    original = model_code.RobertaModel
    model_code.RobertaModel = FromConfig
    try:
        yield
    finally:
        model_code.RobertaModel = original


def build_clap(amodel: str = "HTSAT-tiny", fusion: bool = False,
               roberta: dict[str, Any] | None = None) -> nn.Module:
    """The package's ``CLAP`` module, randomly initialised, in eval mode, on the CPU.

    Args:
        amodel: audio encoder config, ``"HTSAT-tiny"`` or ``"HTSAT-base"``.
        fusion: build the feature-fusion variant (``aff_2d``) of the fusion checkpoints.
        roberta: RoBERTa configuration of the text tower (default :data:`ROBERTA_BASE`).
    """
    clap_module = import_clap_module()
    with _roberta_from_config(roberta or ROBERTA_BASE), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)  # in the package's HTSAT
        module, _ = clap_module.create_model(amodel, "roberta", enable_fusion=fusion,
                                             fusion_type="aff_2d" if fusion else "None")
    return module.eval()


# ---------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------
def _checkpoint(name: str) -> Checkpoint:
    return find_checkpoint(CHECKPOINTS, name, "LAION-CLAP")


def checkpoint_file(name: str) -> CheckpointFile:
    """Checkpoint ``name`` of :data:`CHECKPOINTS` as a file to cache and download
    (:class:`~clapnb.checkpoints.CheckpointFile`)."""
    return lookup_file(CHECKPOINTS, name, "LAION-CLAP")


def checkpoint_path(name: str) -> Path:
    """Where checkpoint ``name`` is (or will be) cached."""
    return checkpoint_file(name).path()


def checkpoint_source(name: str) -> Source:
    """Where checkpoint ``name`` comes from and what it must be (:func:`clapnb.download.source`):
    Hugging Face with the sizes and digests of :data:`CHECKPOINTS`, or, with
    ``CLAPNB_MIRROR`` set (the rehearsal), the mirror with those of its manifest."""
    return checkpoint_file(name).source()


def checkpoint_cached(name: str) -> bool:
    """True when checkpoint ``name`` is in the cache with the right size (where known;
    under a mirror, the size its manifest gives: a :class:`~clapnb.download.DownloadError`
    when that manifest cannot be read)."""
    return checkpoint_file(name).cached()


def checkpoint_reachable(name: str, timeout: float = 3.0) -> bool:
    """True when the server (the mirror, under ``CLAPNB_MIRROR``) answers a HEAD request
    for checkpoint ``name`` within ``timeout`` seconds; False at once when
    ``clapnb.settings.offline()``, and when the mirror's manifest cannot be read."""
    if offline():
        return False
    try:
        url = checkpoint_source(name).url
        request = Request(url, method="HEAD", headers={"User-Agent": _USER_AGENT})
        with urlopen(request, timeout=timeout) as response:
            return response.status < 400
    # URLError, HTTPError, timeouts; DownloadError: a mirror whose manifest cannot be read
    except (OSError, http.client.HTTPException, ValueError, DownloadError):
        return False


def fetch_checkpoint(name: str) -> Path:
    """The cached checkpoint file, downloaded (and verified) first if needed."""
    return checkpoint_file(name).fetch()


def _numpy_scalar_types() -> list:
    """What unpickling numpy scalars needs: numpy's scalar constructor (under its
    numpy 1 and numpy 2 names), ``np.dtype`` and the plain numeric dtype classes."""
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:
        from numpy.core.multiarray import scalar  # numpy 1.x
    kinds = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
             np.uint64, np.float16, np.float32, np.float64)
    return [scalar, (scalar, "numpy.core.multiarray.scalar"),
            (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *{type(np.dtype(k)) for k in kinds}]


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in a LAION-CLAP checkpoint file, keyed as the model expects.

    Reads with ``torch.load(weights_only=True)`` (:func:`~clapnb.checkpoints.read_state`):
    tensors and plain containers, plus numpy scalars (the files hold a few, e.g. training
    metrics); anything else is refused. Takes ``state_dict`` when the file holds a training
    checkpoint, strips the ``module.`` prefix of distributed training and drops
    ``text_branch.embeddings.position_ids`` (a buffer that newer transformers no
    longer saves).
    """
    state = read_state(path, "state_dict", "a LAION-CLAP checkpoint", _numpy_scalar_types())
    state = {k.removeprefix("module."): v for k, v in state.items()}
    state.pop("text_branch.embeddings.position_ids", None)
    return state


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``module.load_state_dict(state)``, strictly, with a readable error for any mismatch
    (:func:`~clapnb.checkpoints.load_strict`)."""
    load_strict(module, state, source, hint="Is it a checkpoint of this architecture "
                "(HTSAT-tiny/base, fusion or not)?")


_TEXT = "text_branch."
_LAYER = _TEXT + "encoder.layer."


def roberta_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The RoBERTa configuration of the text tower whose weights are in ``state``.

    Read off the shapes: vocabulary size, width, maximum positions and token types
    (the embedding tables), number of layers (the ``encoder.layer.<i>`` keys) and
    intermediate size (the first layer's feed-forward). Attention heads: one per
    64 channels, as in roberta-base; everything else is roberta-base's
    (:data:`ROBERTA_BASE`). Every real checkpoint gives exactly roberta-base; a
    rehearsal checkpoint with a shallow text tower gives its own. Raises
    :class:`CheckpointError` where the weights are not a RoBERTa text tower, or
    have too few positions for :data:`TEXT_LENGTH` tokens.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"the checkpoint has no {key}: its text tower is not a RoBERTa "
                                  "(is it a LAION-CLAP checkpoint with the roberta text model?)")
        return tuple(state[key].shape)

    vocab_size, hidden = shape(_TEXT + "embeddings.word_embeddings.weight")
    layers = {int(k[len(_LAYER):].split(".", 1)[0]) for k in state if k.startswith(_LAYER)}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"the checkpoint's text tower has layers {sorted(layers)}; "
                              "expected layers 0..n-1 of a RoBERTa encoder")
    config = {**ROBERTA_BASE,
              "vocab_size": vocab_size,
              "hidden_size": hidden,
              "num_attention_heads": max(1, hidden // 64),
              "num_hidden_layers": len(layers),
              "intermediate_size": shape(_LAYER + "0.intermediate.dense.weight")[0],
              "max_position_embeddings": shape(_TEXT + "embeddings.position_embeddings.weight")[0],
              "type_vocab_size": shape(_TEXT + "embeddings.token_type_embeddings.weight")[0]}
    # RoBERTa numbers positions from pad_token_id + 1: TEXT_LENGTH tokens need this many
    needed = TEXT_LENGTH + config["pad_token_id"] + 1
    if config["max_position_embeddings"] < needed:
        raise CheckpointError(f"the checkpoint's text tower has {config['max_position_embeddings']} "
                              f"positions; {TEXT_LENGTH}-token texts need {needed}")
    return config


# ---------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------
def tokenizer_dir() -> Path:
    """Where the tokenizer files (:data:`TOKENIZER_URLS`) are cached."""
    return tokenizer_folder(TOKENIZER_NAME)


def check_roberta_tokenizer(tokenizer: Callable, where: str | Path | None = None) -> None:
    """Refuse anything but the real roberta-base tokenizer (vocabulary size and the
    ids of :data:`TOKENIZER_PROBE`): a stand-in would give every text the same
    embedding. ``where``: the folder its files came from (named in the message)."""
    check_real(tokenizer, TOKENIZER_NAME, ROBERTA_BASE["vocab_size"], TOKENIZER_PROBE,
               TOKENIZER_URLS, where)


def check_tokenizer_fits(tokenizer: Callable, config: dict[str, Any]) -> None:
    """Refuse a tokenizer whose ids do not fit a text tower of RoBERTa configuration
    ``config`` (:func:`roberta_config`): more tokens than rows in its embedding table,
    or another padding id (RoBERTa numbers positions from it)."""
    check_fits(tokenizer, config["vocab_size"], config["pad_token_id"], tokenizer_dir())


def load_roberta_tokenizer():
    """transformers' ``RobertaTokenizer`` from roberta-base's ``vocab.json`` and ``merges.txt``.

    The files are fetched with :func:`clapnb.download.download_file` from
    :data:`TOKENIZER_URLS` into :func:`tokenizer_dir` (no network when they are
    cached; offline and not cached: :class:`~clapnb.download.DownloadError`). No
    digest is published for them: a download is accepted with an
    :class:`~clapnb.download.UnverifiedDownload` warning and the tokenizer is then
    checked against the real vocabulary (:func:`check_roberta_tokenizer`); cached
    files that fail the check (say, a rehearsal's) are deleted and downloaded once
    more. Under ``CLAPNB_MIRROR`` (the rehearsal) the mirror serves a small
    roberta-style tokenizer, verified by its manifest: the real-vocabulary probe is
    skipped (:func:`load_laion` checks that it fits the checkpoint instead).
    Raises :class:`TokenizerError` (:func:`~clapnb.checkpoints.fetch_tokenizer`).
    """
    folder = tokenizer_dir()
    return fetch_tokenizer(
        TOKENIZER_URLS, folder, TOKENIZER_NAME,
        lambda files: _build_tokenizer(files["vocab.json"], files["merges.txt"], folder),
        check_roberta_tokenizer)


def _build_tokenizer(vocab: Path, merges: Path, folder: Path):
    """``RobertaTokenizer(vocab_file, merges_file)`` (positional: transformers 4 names
    them ``vocab_file, merges_file``, transformers 5 ``vocab, merges``)."""
    from transformers import RobertaTokenizer
    with reading_tokenizer_files(folder):
        return RobertaTokenizer(str(vocab), str(merges))


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
def htk_mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    """``(n_fft // 2 + 1, n_mels)`` triangular HTK-mel filters, not normalised: the
    defaults of torchaudio's MelSpectrogram, which the package's fusion front end
    (``training/data.py: get_mel``) uses. The non-fusion front end uses the
    slaney filters of torchlibrosa's LogmelFilterBank instead."""
    import librosa
    filters = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin,
                                  fmax=fmax, htk=True, norm=None)
    return torch.from_numpy(np.ascontiguousarray(filters.T, dtype=np.float32))


def quantize_int16(x: torch.Tensor) -> torch.Tensor:
    """The package's ``int16_to_float32(float32_to_int16(x))`` (``training/data.py``), in torch
    on any device: clip to [-1, 1], scale by 32767, truncate to int16, divide by 32767.

    The package quantises every clip this way before its front end (LAION-CLAP was
    trained on 16-bit audio): it clips louder samples and moves the rest by less
    than 1/32767. numpy divides in float64 and rounds to float32; dividing in float32
    gives the same floats (an int16 over 32767 is never close enough to a float32
    rounding boundary for the two to differ). Quantising twice changes nothing, so
    prepared audio can be passed in again.
    """
    q = (x.clamp(-1.0, 1.0) * 32767.0).to(torch.int16)
    return q.to(x.dtype) / 32767.0


def fusion_crop_starts(total_frames: int, chunk_frames: int) -> tuple[int, int, int]:
    """First frames of the three local views of a clip of ``total_frames`` STFT frames
    in the fusion input (``chunk_frames`` each, the 10-s window).

    The package (``get_audio_features``, ``data_truncating="fusion"``) splits the
    possible starts ``0 .. total - chunk`` into three runs with ``np.array_split``
    (an empty run becomes ``[0]``) and draws one start at random from each. clapnb
    takes the middle of each run (``run[len(run) // 2]``): the same clip always gets
    the same embedding and the three views sit evenly over the front, middle and
    back of the clip (a 30-s clip: the 10 s from 3.3, 10 and 16.7 s).
    """
    runs = np.array_split(np.arange(total_frames - chunk_frames + 1), 3)
    return tuple(int(run[len(run) // 2]) if len(run) else 0 for run in runs)


class LaionClap(ClapModel):
    """A LAION-CLAP model (the package's ``CLAP`` module) behind the clapnb interface.

    Args:
        module: a ``CLAP`` from :func:`build_clap` (weights loaded, or random).
        tokenizer: the roberta-base tokenizer (:func:`load_roberta_tokenizer`), or
            None for a model without text (``embed_text`` then raises).
        name: registry name, e.g. ``"laion/630k-audioset"``.
        cache_key: changes whenever the embeddings would (see :func:`load_laion`).
        rehearsal: True for a model loaded from a mirror (``CLAPNB_MIRROR``, the
            rehearsal of the online course): its weights are random stand-ins and its
            numbers mean nothing; the registry's banner says so.

    The model is frozen: its parameters need no gradient and it stays in eval
    mode (``.train()`` does not switch on dropout or batch-norm updates);
    gradients still flow to the input of :meth:`encode_spectrogram`.
    """

    sample_rate = 48_000
    clip_samples = 480_000
    embed_dim = 512
    stft_config = StftConfig(n_fft=1024, hop_length=480, win_length=1024)

    def __init__(self, module: nn.Module, tokenizer: Callable | None, name: str, cache_key: str,
                 rehearsal: bool = False):
        super().__init__()
        cfg = module.audio_cfg
        theirs = (cfg.sample_rate, cfg.clip_samples, cfg.window_size, cfg.hop_size, cfg.mel_bins)
        ours = (self.sample_rate, self.clip_samples, self.stft_config.n_fft,
                self.stft_config.hop_length, 64)
        if theirs != ours:
            raise ValueError(f"this CLAP's audio config (rate, samples, n_fft, hop, mels) = {theirs}; "
                             f"LaionClap supports {ours}")
        if tokenizer is not None and module.text_branch_type != "roberta":
            raise ValueError(f"a tokenizer needs a RoBERTa text tower, not {module.text_branch_type!r}")
        branch = module.audio_branch
        self.fusion = bool(branch.enable_fusion)
        if self.fusion and branch.fusion_type not in ("aff_2d", "daf_2d", "iaff_2d"):
            raise ValueError(f"fusion type {branch.fusion_type!r} is not supported")
        self.clap = module.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.cache_key = cache_key
        self.rehearsal = bool(rehearsal)
        htk = htk_mel_filters(cfg.sample_rate, cfg.window_size, cfg.mel_bins, cfg.fmin, cfg.fmax)
        self.register_buffer("htk_filters", htk if self.fusion else None, persistent=False)

    def train(self, mode: bool = True) -> "LaionClap":
        super().train(mode)
        self.clap.eval()  # frozen: see the class docstring
        return self

    @property
    def logit_scale(self) -> float:
        return float(self.clap.logit_scale_a.exp())

    def mel_filters(self) -> torch.Tensor:
        """``(513, 64)`` mel filterbank of the package's front end for this model."""
        return self.htk_filters if self.fusion else self.clap.audio_branch.logmel_extractor.melW

    def encode_spectrogram(self, magnitude: torch.Tensor) -> AudioEncoding:
        """Differentiable: linear STFT magnitude ``(N, 513, 1001)`` -> embedding and features.

        The package's own path from the power spectrogram on: power -> mel (its
        filterbank) -> 10 log10 (dB) -> per-band batch norm -> the 256 x 256 image
        HTSAT reads (``reshape_wav2img``: 1001 frames stretched to 1024, cut into 4
        chunks stacked along frequency) -> patch embedding -> 4 Swin stages ->
        layer norm -> mean over positions -> audio projection -> L2 norm.

        ``features`` are 5 maps ``(N, C, F', T')``, folded back from the image
        layout to frequency (low to high, each row 64 / F' mel bands) by time
        (the 10-s window, T' equal steps): the patch embedding and the output of
        each Swin stage before its patch merging. HTSAT-tiny: C = 96, 96, 192,
        384, 768 on F' x T' = 16 x 256, 16 x 256, 8 x 128, 4 x 64, 2 x 32;
        HTSAT-base: C = 128, 128, 256, 512, 1024 on the same grids.
        """
        n_frames = self.stft_config.n_frames(self.clip_samples)
        if magnitude.is_complex() or magnitude.ndim != 3 or \
                tuple(magnitude.shape[1:]) != (self.stft_config.n_freq, n_frames):
            raise ValueError(f"expected a real (N, {self.stft_config.n_freq}, {n_frames}) linear "
                             f"magnitude of 10-s clips, got {tuple(magnitude.shape)} "
                             f"{magnitude.dtype}; use model.spectrogram(audio).abs()")
        return self._encode_log_mel(self.log_mel(magnitude)[:, None], longer_idx=[])

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude ``(N, 513, T)`` -> log-mel ``(N, T, 64)`` in dB, as the
        package's front end for this model computes it: power -> mel (its filterbank,
        :meth:`mel_filters`) -> ``10 log10(max(., 1e-10))``."""
        filters = self.mel_filters()
        power = magnitude.to(filters.dtype) ** 2
        return self.clap.audio_branch.logmel_extractor.power_to_db(power.transpose(1, 2) @ filters)

    def _encode_log_mel(self, x: torch.Tensor, longer_idx: list[int]) -> AudioEncoding:
        """HTSAT from the log-mel ``(N, C, 1001, 64)`` on: per-band batch norm -> image ->
        patch embedding -> Swin stages -> pooled, projected, normalised. C = 1, or 4 for
        the fusion input (global view, then the three local views), whose local views
        are used for the clips ``longer_idx`` only (the package's ``forward_features``)."""
        branch = self.clap.audio_branch
        x = branch.bn0(x.transpose(1, 3)).transpose(1, 3)  # (N, C, T, 64)
        x = branch.reshape_wav2img(x)  # (N, C, 256, 256)
        tokens = branch.patch_embed(x, longer_idx=longer_idx)  # (N, L, C'); fusion: AFF of the views
        if branch.ape:
            tokens = tokens + branch.absolute_pos_embed
        tokens = branch.pos_drop(tokens)
        features = [self._fold(tokens, branch.patch_embed.grid_size)]
        for layer in branch.layers:
            for block in layer.blocks:
                tokens, _ = block(tokens)
            features.append(self._fold(tokens, layer.input_resolution))
            if layer.downsample is not None:
                tokens = layer.downsample(tokens)
        pooled = branch.norm(tokens).mean(dim=1)  # HTSAT's "embedding" output
        embedding = F.normalize(self.clap.audio_projection(pooled), dim=-1)
        return AudioEncoding(embedding=embedding, features=features)

    # -- audio in: the package's get_audio_embedding_from_data, made deterministic -------
    def prepare(self, waveforms: AudioInput, sample_rate: int | None = None) -> torch.Tensor:
        """Validate and batch audio: float32 ``(N, 480000)`` on ``self.device``, quantised
        through 16-bit integers as the package does (:func:`quantize_int16`); shorter
        clips repeat-padded, longer ones cropped to their first 10 s."""
        return quantize_int16(super().prepare(waveforms, sample_rate))

    def embed_audio(self, waveforms: AudioInput, sample_rate: int | None = None,
                    grad: bool = False, batch_size: int = 32) -> torch.Tensor:
        """Audio -> ``(N, 512)`` unit-norm float32 embeddings, as the package's
        ``get_audio_embedding_from_data`` computes them (see the module docstring).

        ``embed_from_spectrogram(|stft(prepare(x))|)``, the 10-s window LMAC-ZS explains,
        for every clip except one over 10 s on a fusion checkpoint: that one gets the
        package's fusion input from the whole clip (:meth:`fusion_input`).
        """
        if not self.fusion:
            return super().embed_audio(waveforms, sample_rate, grad=grad, batch_size=batch_size)
        clips = self._whole_clips(waveforms, sample_rate)
        with torch.set_grad_enabled(grad):
            parts = [self._embed_fusion(clips[i:i + batch_size])
                     for i in range(0, len(clips), batch_size)]
        return torch.cat(parts).float()

    def _whole_clips(self, waveforms: AudioInput, sample_rate: int | None) -> list[np.ndarray]:
        """The clips as :meth:`prepare` checks and converts them, at the model's rate,
        neither padded nor cropped (not quantised yet)."""
        clips = []
        for i, clip in enumerate(split_clips(waveforms)):
            try:
                clips.append(prepare_waveforms(clip, self.sample_rate, None, sample_rate)[0].numpy())
            except (TypeError, ValueError) as e:  # name the clip in the batch, not "clip 0"
                raise type(e)(str(e).replace("clip 0", f"clip {i}", 1)) from None
        return clips

    def _embed_fusion(self, clips: list[np.ndarray]) -> torch.Tensor:
        """Embeddings of a batch of whole clips on a fusion checkpoint."""
        window = self.clip_samples
        out: list[torch.Tensor | None] = [None] * len(clips)
        short = [i for i, c in enumerate(clips) if len(c) <= window]
        if short:
            x = self.prepare([clips[i] for i in short])
            for i, e in zip(short, self.embed_from_spectrogram(self.stft_config.stft(x).abs())):
                out[i] = e
        longer, views = [], []
        for i, c in enumerate(clips):
            if len(c) > window:
                mel, is_longer = self.fusion_input(quantize_int16(torch.from_numpy(c).to(self.device)))
                if is_longer:
                    longer.append(i)
                    views.append(mel)
                else:  # at most 479 samples over 10 s: the log-mel of the whole clip, 1001 frames
                    out[i] = self._encode_log_mel(mel[None, :1], longer_idx=[]).embedding[0]
        if longer:
            embedded = self._encode_log_mel(torch.stack(views), longer_idx=list(range(len(longer))))
            for i, e in zip(longer, embedded.embedding):
                out[i] = e
        return torch.stack(out)

    def fusion_input(self, clip: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """The package's fusion input of one quantised clip ``(S,)`` longer than 10 s:
        ``(4, 1001, 64)`` log-mel and whether it is "longer".

        As ``get_audio_features(..., data_truncating="fusion")`` builds it: the
        log-mel of the whole clip (HTK filters, :meth:`log_mel`) resized to 1001
        frames (torchvision's ``Resize``: bilinear with antialiasing, the default
        since torchvision 0.17), then three 1001-frame crops of it starting at
        :func:`fusion_crop_starts` (the package draws them at random). A clip of at
        most 479 samples over 10 s has exactly 1001 frames: its log-mel four times,
        not "longer".
        """
        chunk = self.stft_config.n_frames(self.clip_samples)
        mel = self.log_mel(self.stft_config.stft(clip[None]).abs())[0]  # (T, 64)
        total = mel.shape[0]
        if total == chunk:
            return torch.stack([mel] * 4), False
        shrunk = F.interpolate(mel[None, None], size=(chunk, mel.shape[1]), mode="bilinear",
                               align_corners=False, antialias=True)[0, 0]
        crops = [mel[start:start + chunk] for start in fusion_crop_starts(total, chunk)]
        return torch.stack([shrunk, *crops]), True

    def _fold(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(N, H*W, C)`` tokens on HTSAT's image grid -> ``(N, C, H/r, r*W)`` frequency x
        time map, undoing ``reshape_wav2img``'s r = 4 time chunks stacked along frequency."""
        n, _, c = tokens.shape
        h, w = grid
        r = self.clap.audio_branch.freq_ratio
        x = tokens.transpose(1, 2).reshape(n, c, r, h // r, w)
        return x.permute(0, 1, 3, 2, 4).reshape(n, c, h // r, r * w)

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_fold`: ``(N, C, H/r, r*W)`` map -> ``(N, H*W, C)`` tokens."""
        n, c, h_r, rw = x.shape
        r = self.clap.audio_branch.freq_ratio
        return x.reshape(n, c, h_r, r, rw // r).permute(0, 1, 3, 2, 4).reshape(n, c, -1).transpose(1, 2)

    def encoder_layers(self) -> list[tuple[str, nn.Module]]:
        """HTSAT's audio projection, Swin stages 4..1, the patch embedding."""
        branch = self.clap.audio_branch
        stages = [(f"stage {i + 1}", layer) for i, layer in enumerate(branch.layers)]
        return [("projection", self.clap.audio_projection), *reversed(stages),
                ("patch embedding", branch.patch_embed)]

    @contextmanager
    def feature_tap(self, index: int = -1) -> Iterator[nn.Module]:
        """The output of Swin stage ``index`` (features 1-4 or -1..-4; the patch embedding,
        feature 0, is not supported), folded from HTSAT's token layout to frequency x time
        and back, so gradients flow through the tap."""
        layers = self.clap.audio_branch.layers
        n = len(layers) + 1
        check_feature_index(index, n, "feature map")
        if index % n == 0:
            raise ValueError("Grad-CAM on LAION-CLAP taps a Swin stage (features 1-4 or -1..-4), "
                             "not the patch embedding (feature 0)")
        layer = layers[index % n - 1]
        tap = nn.Identity()

        def hook(module, inputs, out):
            tokens, attn = out
            return self._unfold(tap(self._fold(tokens, layer.input_resolution))), attn

        handle = layer.blocks[-1].register_forward_hook(hook)
        try:
            yield tap
        finally:
            handle.remove()

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        require_tokenizer(self.tokenizer, self.name,
                          "load_model('laion/...') or clapnb.laion.load_laion()")
        tokens = self.tokenizer(texts, padding="max_length", truncation=True,
                                max_length=TEXT_LENGTH, return_tensors="pt")
        return self.clap.get_text_embedding({k: tokens[k] for k in ("input_ids", "attention_mask")})


def preprocessing(fusion: bool) -> str:
    """What :class:`LaionClap` does to audio before a (fusion) model: part of its cache keys."""
    return PREPROCESSING_FUSION if fusion else PREPROCESSING


def load_laion(name: str = DEFAULT_CHECKPOINT, device: str | torch.device | None = None) -> LaionClap:
    """Load LAION-CLAP checkpoint ``name`` (see :data:`CHECKPOINTS`), downloading it if needed.

    The tokenizer is loaded first (cheap, and a missing one fails before a ~2 GB
    download; offline and not cached: a :class:`~clapnb.download.DownloadError` at
    once). The text tower is built from the checkpoint's own shapes
    (:func:`roberta_config`) and the tokenizer must fit it
    (:func:`check_tokenizer_fits`). Under ``CLAPNB_MIRROR`` everything comes from
    the mirror, checked against its manifest, and the model is a rehearsal model
    (``model.rehearsal``). The cache key names the file, its size and digest (the
    mirror's, under a mirror), ``rehearsal`` under a mirror, and
    :func:`preprocessing`. ``device=None`` means CUDA when available, else CPU.
    """
    spec, file = _checkpoint(name), checkpoint_file(name)
    src = file.source()
    tokenizer = load_roberta_tokenizer()
    path = file.fetch()
    state = read_checkpoint(path)
    roberta = roberta_config(state)
    check_tokenizer_fits(tokenizer, roberta)
    module = build_clap(spec.amodel, spec.fusion, roberta=roberta)
    load_weights(module, state, source=str(path))
    del state
    cache_key = file.cache_key(src, preprocessing(spec.fusion))
    model = LaionClap(module, tokenizer, name=name, cache_key=cache_key, rehearsal=src.mirrored)
    return model.to(default_device(device))


def random_laion(amodel: str = "HTSAT-tiny", fusion: bool = False, seed: int = 0,
                 device: str | torch.device | None = "cpu") -> LaionClap:
    """A randomly initialised LAION-CLAP of the real audio architecture, built offline
    (no checkpoint, no tokenizer: ``embed_text`` raises); its text tower is a
    one-layer RoBERTa (:data:`ROBERTA_TINY`). For tests and for trying the
    LMAC-ZS machinery without a download."""
    with torch.random.fork_rng(devices=[]):  # leaves the global random state alone
        torch.manual_seed(seed)
        module = build_clap(amodel, fusion, roberta=ROBERTA_TINY)
    name = f"laion/random-{amodel}{'-fusion' if fusion else ''}"
    return LaionClap(module, None, name=name,
                     cache_key=f"{name}|seed={seed}|{preprocessing(fusion)}").to(default_device(device))
