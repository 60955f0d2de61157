"""Microsoft's CLAP (the ``msclap`` 1.3.4 package) as a :class:`~clapnb.model.ClapModel`.

Two checkpoints (:data:`CHECKPOINTS`), both with 1,024-d embeddings:

* ``msclap/2023``: HTS-AT audio encoder, GPT-2 text encoder, 7-s clips;
* ``msclap/2022``: CNN14 audio encoder, BERT-base-uncased text encoder, 5-s clips.

:func:`load_msclap` downloads a checkpoint, builds the package's own model classes
(``msclap/models``) and wraps them in :class:`MsClap`. Where this module departs from
``from msclap import CLAP``, and why:

* **No** ``import msclap``. Its ``__init__`` imports ``CLAPWrapper``, which imports
  torchaudio (only needed to read and resample files) and the Hugging Face hub client.
  :func:`import_msclap_models` loads ``msclap/models`` (clap.py, audio.py, htsat.py,
  config.py, pytorch_utils.py) alone; the configurations are read from the package's
  own ``configs/config_<version>.yml`` (:func:`package_config`).
* ``msclap.models.clap.TextEncoder`` calls ``AutoModel.from_pretrained(text_model)``:
  while :func:`build_clap` runs, that builds GPT-2 / BERT from a configuration
  (:func:`text_config`, read off the checkpoint's own weights: gpt2 and bert-base-uncased
  for the real checkpoints) instead of downloading weights the checkpoint replaces.
* Tokenizers are transformers' GPT-2 / BERT tokenizers built from the real files
  (:data:`TOKENIZER_URLS`), fetched by clapnb's :func:`~clapnb.download.download_file`,
  and refused unless they are the real ones (:func:`check_tokenizer`); under
  ``CLAPNB_MIRROR`` (the rehearsal) the mirror's small tokenizer only has to fit the
  checkpoint (:func:`check_tokenizer_fits`). As the package does, GPT-2 gets ``"!"``
  (id 0) as its padding token.
* Checkpoints are read with ``torch.load(weights_only=True)`` (:func:`read_checkpoint`)
  and loaded strictly (:func:`load_weights`), where the package loads with
  ``strict=False``: only buffers that the model computes itself may be missing.

What the package's ``CLAPWrapper`` does to audio, reproduced (tested for parity), with
its one random choice made deterministic:

* audio at 44.1 kHz (other rates resampled with librosa, where the package uses
  torchaudio's resampler: the only step whose numbers differ, and only for audio not
  at 44.1 kHz); a fixed window of 7 s (2023) or 5 s (2022);
* a shorter clip is repeated and cut to the window (``repeat`` then crop: the last
  repetition is partial, no zeros), a clip of exactly the window is taken as it is;
* a longer clip: the package crops the window at a *random* start; clapnb keeps the
  *first* window, as every clapnb model does, so that the window LMAC-ZS explains,
  plays and masks starts where the clip starts.

The front end is the package's own from the power spectrogram on, started from the
linear STFT magnitude (:class:`~clapnb.model.StftConfig` n_fft = window 1024, hop 320:
torchlibrosa's Spectrogram, centred, reflect padding, periodic Hann window): power ->
the model's mel filterbank (``logmel_extractor.melW``, 64 bands) -> ``10 log10(max(.,
1e-10))`` -> the encoder's batch norm ``bn0`` -> the encoder. Note that HTS-AT in
msclap takes its front-end settings from ``msclap/models/config.py`` (32 kHz, 50-14,000
Hz), not from the yaml (44.1 kHz, 50-8,000 Hz): its mel filterbank is laid out for
32-kHz audio while it hears 44.1-kHz audio. clapnb uses the filterbank the model holds
(its checkpoint's), exactly as the package does.

Text goes in as ``CLAPWrapper.get_text_embeddings`` feeds it (tested for parity):
GPT-2 texts get ``" <|endoftext|>"`` appended; ids are padded to the configuration's
``text_len`` (77 for 2023, 100 for 2022) and never truncated (the package does not
truncate either: a longer text keeps all its tokens, as the package gives it when
embedded on its own); GPT-2's embedding is its hidden state at position "number of
non-zero ids - 1" (the package's rule; id 0 is ``"!"``, so a text containing ``"!"``
is read a little early, as in the package); BERT's is the ``[CLS]`` state.

Without a checkpoint, :func:`random_msclap` builds a randomly initialised model of the
real audio architecture offline (a one-layer text tower); tests use it.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clapnb.audio import AudioInput, prepare_waveforms, split_clips
from clapnb.checkpoints import CheckpointError, TokenizerError  # shared with laion; re-exported
from clapnb.checkpoints import (CheckpointFile, check_fits, check_real, fetch_tokenizer, find_checkpoint,
                                load_strict, lookup_file, read_state, reading_tokenizer_files,
                                require_tokenizer, tokenizer_folder)
from clapnb.download import Source
from clapnb.model import AudioEncoding, ClapModel, StftConfig, check_feature_index
from clapnb.settings import default_device

#: where the checkpoints live (Microsoft's Hugging Face repository)
BASE_URL = "https://huggingface.co/microsoft/msclap/resolve/main/"
SAMPLE_RATE = 44_100
EMBED_DIM = 1024
#: torchlibrosa's Spectrogram of both audio encoders: n_fft = window = 1024, hop 320
STFT = StftConfig(n_fft=1024, hop_length=320, win_length=1024)


@dataclass(frozen=True)
class Checkpoint:
    """One msclap checkpoint file.

    file: its name in the Hugging Face repository.
    version: the package's version name (``"2023"``, ``"2022"``): its configuration file.
    audio / text: the encoders (for people; the configuration decides).
    text_model: ``"gpt2"`` or ``"bert"`` (:data:`TEXT_MODELS`).
    size: bytes, where known (checked after the download and by :func:`checkpoint_cached`).
    sha256: hex digest, where known (checked after the download).
    about: what it was trained on.
    """

    file: str
    version: str
    audio: str
    text: str
    text_model: str
    size: int | None
    sha256: str | None
    about: str

    @property
    def url(self) -> str:
        return BASE_URL + self.file

    @property
    def seconds(self) -> int:
        return int(package_config(self.version)["duration"])


#: name -> checkpoint. The 2022 size and digest are those of the Hugging Face LFS record
#: (commit 23e65db of microsoft/msclap, the same digest as every copy of the file on the hub);
#: none could be found for the 2023 file (about 690 MB): its download is accepted unverified
#: (an UnverifiedDownload warning) and the strict weight loading is what catches a wrong file.
CHECKPOINTS: dict[str, Checkpoint] = {
    "msclap/2023": Checkpoint(
        "CLAP_weights_2023.pth", "2023", "HTS-AT", "GPT-2", "gpt2", None, None,
        "Microsoft CLAP 2023: 4.6M audio-text pairs; HTS-AT + GPT-2, 7-s clips"),
    "msclap/2022": Checkpoint(
        "CLAP_weights_2022.pth", "2022", "CNN14", "BERT-base-uncased", "bert", 2_333_972_488,
        "5b917c47fec10547b65cf1d9096e194896fa1c2d6180536c8524289721a4c5b8",
        "Microsoft CLAP 2022: 128k audio-text pairs; CNN14 + BERT, 5-s clips"),
}
DEFAULT_CHECKPOINT = "msclap/2023"

#: gpt2's config.json (transformers' GPT2Config defaults): the 2023 text tower
GPT2_SMALL: dict[str, Any] = dict(
    vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
    activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    layer_norm_epsilon=1e-5, initializer_range=0.02, bos_token_id=50256, eos_token_id=50256)
#: bert-base-uncased's config.json (transformers' BertConfig defaults): the 2022 text tower
BERT_BASE: dict[str, Any] = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1, max_position_embeddings=512, type_vocab_size=2,
    initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0)
#: one-layer towers of the same width (the text projection expects 768), for random models
#: and the rehearsal's mirror
GPT2_TINY: dict[str, Any] = {**GPT2_SMALL, "vocab_size": 1000, "n_positions": 128, "n_layer": 1,
                             "n_inner": 64, "bos_token_id": 999, "eos_token_id": 999}
BERT_TINY: dict[str, Any] = {**BERT_BASE, "vocab_size": 1000, "num_hidden_layers": 1,
                             "intermediate_size": 64, "max_position_embeddings": 128}


@dataclass(frozen=True)
class TextModel:
    """A text tower and its tokenizer.

    name: what the package's configuration names (``text_model``), also the tokenizer's
        cache folder.
    urls: file name -> address of the real tokenizer files.
    probe: a text and its ids in the real tokenizer.
    vocab_size: tokens of the real tokenizer.
    real / tiny: the real tower's configuration, and a one-layer one.
    token_keys: what the package feeds the tower (``CLAPWrapper.token_keys``).
    """

    name: str
    urls: dict[str, str]
    probe: tuple[str, list[int]]
    vocab_size: int
    real: dict[str, Any]
    tiny: dict[str, Any]
    token_keys: tuple[str, ...]


TEXT_MODELS: dict[str, TextModel] = {
    "gpt2": TextModel(
        "gpt2", {name: f"https://huggingface.co/openai-community/gpt2/resolve/main/{name}"
                 for name in ("vocab.json", "merges.txt")},
        ("Hello world", [15496, 995]), 50257, GPT2_SMALL, GPT2_TINY,
        ("input_ids", "attention_mask")),
    "bert": TextModel(
        "bert-base-uncased",
        {"vocab.txt": "https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt"},
        ("hello world", [101, 7592, 2088, 102]), 30522, BERT_BASE, BERT_TINY,
        ("input_ids", "token_type_ids", "attention_mask")),
}
#: file name -> address of every tokenizer file (what a mirror must serve)
TOKENIZER_URLS: dict[str, dict[str, str]] = {k: dict(t.urls) for k, t in TEXT_MODELS.items()}
#: GPT-2's end token (the package appends it) and padding token (the package's choice: id 0)
END_TOKEN, GPT2_PAD = "<|endoftext|>", "!"
#: what MsClap does to audio before a model; part of its cache keys
PREPROCESSING = "44.1kHz-mono-{seconds}s-crop-start-repeat-cut-stft1024-hop320-mel64-v1"


# ---------------------------------------------------------------------------------
# The package's model code, imported without msclap/__init__.py
# ---------------------------------------------------------------------------------
def _package_folder() -> Path:
    spec = importlib.util.find_spec("msclap")  # finds the folder, runs nothing
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("msclap (Microsoft CLAP's model code) is not installed: run "
                          "pip install --no-deps msclap==1.3.4 (without its outdated pins)")
    return Path(next(iter(spec.submodule_search_locations)))


def import_msclap_models() -> ModuleType:
    """``msclap.models`` (the model code), without running ``msclap/__init__.py``.

    Registers ``msclap.models`` and its submodules in ``sys.modules``; ``sys.path`` is
    not touched. While they are imported, a bare ``msclap`` package stands in for the
    real one (``from . import config`` asks Python for the top-level package); it is
    removed again afterwards. Where ``msclap`` itself is already imported (torchaudio
    installed), its own ``msclap.models`` is used.
    """
    name = "msclap.models"
    if name in sys.modules:
        return sys.modules[name]
    folder = _package_folder()
    if "msclap" in sys.modules:
        return importlib.import_module(name)
    from transformers import AutoModel  # noqa: F401  (what clap.py imports, imported first)
    stand_in = types.ModuleType("msclap", "clapnb: stand-in while msclap.models is imported")
    stand_in.__path__ = [str(folder)]
    spec = importlib.util.spec_from_file_location(
        name, folder / "models" / "__init__.py", submodule_search_locations=[str(folder / "models")])
    module = importlib.util.module_from_spec(spec)
    sys.modules["msclap"] = stand_in
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
            del sys.modules[key]
        raise
    finally:
        if sys.modules.get("msclap") is stand_in:
            del sys.modules["msclap"]
    return module


def package_config(version: str) -> dict[str, Any]:
    """The package's ``configs/config_<version>.yml`` (what ``CLAPWrapper`` reads)."""
    try:
        import yaml
    except ImportError as e:
        raise ImportError("reading msclap's configuration needs pyyaml: pip install pyyaml") from e
    path = _package_folder() / "configs" / f"config_{version}.yml"
    if not path.is_file():
        raise ValueError(f"msclap has no configuration {path.name}; versions: 2022, 2023")
    return yaml.safe_load(path.read_text())


@contextmanager
def _text_tower_from_config(text_model: str, config: dict[str, Any]) -> Iterator[None]:
    """While the CLAP is built, ``AutoModel.from_pretrained(text_model)`` in
    ``msclap.models.clap`` builds the architecture from ``config`` instead of downloading
    weights that the checkpoint replaces anyway."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model
    import_msclap_models()
    code = sys.modules["msclap.models.clap"]
    expected = TEXT_MODELS[text_model].name

    class FromConfig:
        @staticmethod
        def from_pretrained(name: str, *args, **kwargs) -> nn.Module:
            if name != expected:
                raise ValueError(f"expected the {expected} text tower, not {name!r}")
            if text_model == "gpt2":
                return GPT2Model(GPT2Config(**config))
            return BertModel(BertConfig(**config))

    original = code.AutoModel
    code.AutoModel = FromConfig
    try:
        yield
    finally:
        code.AutoModel = original


def _text_model_of(version: str) -> str:
    name = package_config(version)["text_model"]
    for key, spec in TEXT_MODELS.items():
        if spec.name == name:
            return key
    raise ValueError(f"msclap {version}'s text model {name!r} is not supported")


def build_clap(version: str = "2023", text: dict[str, Any] | None = None) -> nn.Module:
    """The package's ``CLAP`` module for ``version``, built as ``CLAPWrapper.load_clap``
    builds it from the package's configuration, randomly initialised, in eval mode, on
    the CPU. ``text``: configuration of the text tower (default: the real one)."""
    models = import_msclap_models()
    args = package_config(version)
    text_model = _text_model_of(version)
    with _text_tower_from_config(text_model, text or TEXT_MODELS[text_model].real), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)  # in the package's HTS-AT
        module = models.clap.CLAP(
            audioenc_name=args["audioenc_name"], sample_rate=args["sampling_rate"],
            window_size=args["window_size"], hop_size=args["hop_size"], mel_bins=args["mel_bins"],
            fmin=args["fmin"], fmax=args["fmax"], classes_num=args["num_classes"],
            out_emb=args["out_emb"], text_model=args["text_model"],
            transformer_embed_dim=args["transformer_embed_dim"], d_proj=args["d_proj"])
    return module.eval()


# ---------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------
def _checkpoint(name: str) -> Checkpoint:
    return find_checkpoint(CHECKPOINTS, name, "msclap")


def checkpoint_file(name: str) -> CheckpointFile:
    """Checkpoint ``name`` of :data:`CHECKPOINTS` as a file to cache and download
    (:class:`~clapnb.checkpoints.CheckpointFile`)."""
    return lookup_file(CHECKPOINTS, name, "msclap")


def checkpoint_path(name: str) -> Path:
    """Where checkpoint ``name`` is (or will be) cached."""
    return checkpoint_file(name).path()


def checkpoint_source(name: str) -> Source:
    """Where checkpoint ``name`` comes from and what it must be (:func:`clapnb.download.source`):
    Hugging Face with the size and digest of :data:`CHECKPOINTS`, or, with ``CLAPNB_MIRROR``
    set (the rehearsal), the mirror with those of its manifest."""
    return checkpoint_file(name).source()


def checkpoint_cached(name: str) -> bool:
    """True when checkpoint ``name`` is in the cache with the right size (where known)."""
    return checkpoint_file(name).cached()


def fetch_checkpoint(name: str) -> Path:
    """The cached checkpoint file, downloaded (and verified where a digest is known) first
    if needed."""
    return checkpoint_file(name).fetch()


#: globals the published files need beyond what ``weights_only=True`` allows anyway: none
#: (Hugging Face's pickle scan lists OrderedDict, FloatStorage, LongStorage and
#: _rebuild_tensor_v2 only)
ALLOWED_GLOBALS: list = []


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights in an msclap checkpoint file (``{"model": state_dict, ...}``, as
    ``CLAPWrapper.load_clap`` reads it; a bare state dict is accepted too).

    Reads with ``torch.load(weights_only=True)`` (:func:`~clapnb.checkpoints.read_state`):
    tensors and plain containers (the 2022 file also holds an optimiser state, left on disk
    by memory-mapping); anything else is refused.
    """
    return read_state(path, "model", "an msclap checkpoint", ALLOWED_GLOBALS)


#: keys older transformers saved that today's text towers do not have (dropped)
_OBSOLETE = re.compile(r"caption_encoder\.base\.(embeddings\.(position_ids|token_type_ids)"
                       r"|h\.\d+\.attn\.(bias|masked_bias))")
#: buffers the model computes itself at construction (filled from the model when missing;
#: GPT-2's attention masks are such buffers in transformers < 4.31)
_COMPUTED = re.compile(r".*\.(num_batches_tracked|relative_position_index|attn_mask"
                       r"|position_ids|token_type_ids)"
                       r"|caption_encoder\.base\.h\.\d+\.attn\.(bias|masked_bias)")


def load_weights(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load ``state`` into ``module`` strictly, with a readable error for any mismatch.

    Where the package loads with ``strict=False``, only these may differ: keys of older
    transformers versions (GPT-2's ``attn.bias``/``attn.masked_bias``, BERT's
    ``position_ids``) are dropped, and missing buffers the model computes itself at
    construction (``num_batches_tracked``, HTS-AT's ``relative_position_index`` and
    ``attn_mask``) keep their computed values, as with the package. Any other missing or
    unexpected key, or another shape, is a :class:`CheckpointError`
    (:func:`~clapnb.checkpoints.load_strict`).
    """
    load_strict(module, state, source, hint="Is it an msclap checkpoint of this version "
                "(2023: HTS-AT + GPT-2, 2022: CNN14 + BERT)?",
                may_be_missing=_COMPUTED.fullmatch, may_be_extra=_OBSOLETE.fullmatch)


_TEXT = "caption_encoder.base."


def _shape(state: dict[str, torch.Tensor], key: str, what: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"the checkpoint has no {key}: its text tower is not {what}")
    return tuple(state[key].shape)


def _layers(state: dict[str, torch.Tensor], prefix: str) -> int:
    layers = {int(k[len(prefix):].split(".", 1)[0]) for k in state if k.startswith(prefix)}
    if not layers or layers != set(range(len(layers))):
        raise CheckpointError(f"the checkpoint's text tower has layers {sorted(layers)}; "
                              f"expected layers 0..n-1 ({prefix}<i>)")
    return len(layers)


def text_config(text_model: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The configuration of the text tower (``"gpt2"`` or ``"bert"``) whose weights are
    in ``state``, read off the shapes: vocabulary, width, positions (and token types),
    layers, feed-forward size; one attention head per 64 channels; everything else is the
    real tower's (:data:`GPT2_SMALL`, :data:`BERT_BASE`). Every real checkpoint gives
    exactly the real tower; a rehearsal checkpoint with a shallow tower gives its own."""
    tower = TEXT_MODELS[text_model]
    if text_model == "gpt2":
        vocab, width = _shape(state, _TEXT + "wte.weight", "a GPT-2")
        layers = _layers(state, _TEXT + "h.")
        inner = _shape(state, _TEXT + "h.0.mlp.c_fc.weight", "a GPT-2")[1]
        return {**tower.real, "vocab_size": vocab, "n_embd": width,
                "n_head": max(1, width // 64), "n_layer": layers,
                "n_positions": _shape(state, _TEXT + "wpe.weight", "a GPT-2")[0],
                "n_inner": None if inner == 4 * width else inner,
                "bos_token_id": min(tower.real["bos_token_id"], vocab - 1),
                "eos_token_id": min(tower.real["eos_token_id"], vocab - 1)}
    vocab, width = _shape(state, _TEXT + "embeddings.word_embeddings.weight", "a BERT")
    return {**tower.real, "vocab_size": vocab, "hidden_size": width,
            "num_attention_heads": max(1, width // 64),
            "num_hidden_layers": _layers(state, _TEXT + "encoder.layer."),
            "intermediate_size": _shape(state, _TEXT + "encoder.layer.0.intermediate.dense.weight",
                                        "a BERT")[0],
            "max_position_embeddings": _shape(state, _TEXT + "embeddings.position_embeddings.weight",
                                              "a BERT")[0],
            "type_vocab_size": _shape(state, _TEXT + "embeddings.token_type_embeddings.weight",
                                      "a BERT")[0]}


# ---------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------
def tokenizer_dir(text_model: str) -> Path:
    """Where the tokenizer files of ``text_model`` (``"gpt2"``, ``"bert"``) are cached."""
    return tokenizer_folder(TEXT_MODELS[text_model].name)


def build_tokenizer(text_model: str, files: dict[str, Path]):
    """transformers' tokenizer of ``text_model`` from its files (positional arguments:
    transformers 4 names them ``vocab_file``/``merges_file``, transformers 5 ``vocab``/
    ``merges``, and a wrong keyword silently builds an empty stand-in). GPT-2 gets ``"!"``
    as its padding token, as ``CLAPWrapper.load_clap`` gives it."""
    from transformers import BertTokenizerFast, GPT2TokenizerFast
    with reading_tokenizer_files(next(iter(files.values())).parent):
        if text_model == "gpt2":
            tokenizer = GPT2TokenizerFast(str(files["vocab.json"]), str(files["merges.txt"]))
            tokenizer.add_special_tokens({"pad_token": GPT2_PAD})
        else:
            tokenizer = BertTokenizerFast(str(files["vocab.txt"]))
    return tokenizer


def check_tokenizer(text_model: str, tokenizer: Callable, where: str | Path | None = None) -> None:
    """Refuse anything but the real tokenizer of ``text_model`` (vocabulary size and the
    ids of its probe text): a stand-in would give every text a meaningless embedding."""
    tower = TEXT_MODELS[text_model]
    check_real(tokenizer, tower.name, tower.vocab_size, tower.probe, tower.urls, where)


def check_tokenizer_fits(tokenizer: Callable, text_model: str, config: dict[str, Any]) -> None:
    """Refuse a tokenizer whose ids do not fit a text tower of configuration ``config``:
    more tokens than rows in its embedding table, another padding id (GPT-2: the package
    counts the non-zero ids, so padding must be id 0), or no GPT-2 end token."""
    no_end = text_model == "gpt2" and END_TOKEN not in tokenizer.get_vocab()
    check_fits(tokenizer, config["vocab_size"], 0, tokenizer_dir(text_model),
               [f"it has no {END_TOKEN} token"] if no_end else [])


def load_tokenizer(text_model: str):
    """The tokenizer of ``text_model`` (``"gpt2"``, ``"bert"``) from the real files.

    The files are fetched with :func:`clapnb.download.download_file` from
    :data:`TOKENIZER_URLS` into :func:`tokenizer_dir` (no network when they are cached;
    offline and not cached: a :class:`~clapnb.download.DownloadError` at once). No digest
    is published for them: a download is accepted with an
    :class:`~clapnb.download.UnverifiedDownload` warning, then checked against the real
    vocabulary (:func:`check_tokenizer`); cached files that fail the check (say, a
    rehearsal's) are deleted and downloaded once more. Under ``CLAPNB_MIRROR`` the mirror
    serves a small tokenizer of the same kind, verified by its manifest: the probe is
    skipped (:func:`load_msclap` checks that it fits the checkpoint instead).
    Raises :class:`TokenizerError` (:func:`~clapnb.checkpoints.fetch_tokenizer`).
    """
    tower = TEXT_MODELS[text_model]
    return fetch_tokenizer(tower.urls, tokenizer_dir(text_model), tower.name,
                           partial(build_tokenizer, text_model), partial(check_tokenizer, text_model))


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
def fit_clip(x: np.ndarray, n: int) -> np.ndarray:
    """``CLAPWrapper.load_audio_into_tensor`` made deterministic: a clip of at most ``n``
    samples is repeated ``ceil(n / len)`` times and cut to ``n`` (the last repetition
    partial, no zeros); a longer one keeps its first ``n`` samples (the package: a random
    start)."""
    if len(x) >= n:
        return x[:n]
    return np.tile(x, -(-n // len(x)))[:n]


def preprocessing(version: str) -> str:
    """What :class:`MsClap` does to audio before a model of ``version``: part of its cache keys."""
    return PREPROCESSING.format(seconds=package_config(version)["duration"])


class MsClap(ClapModel):
    """An msclap model (the package's ``CLAP`` module) behind the clapnb interface.

    Args:
        module: a ``CLAP`` from :func:`build_clap` (weights loaded, or random).
        tokenizer: its text tower's tokenizer (:func:`load_tokenizer`), or None for a model
            without text (``embed_text`` then raises).
        version: ``"2023"`` or ``"2022"``, the package's configuration the module was built from.
        name, cache_key, rehearsal: as in :class:`~clapnb.model.ClapModel`.

    The model is frozen: its parameters need no gradient and it stays in eval mode
    (``.train()`` does not switch on dropout or batch-norm updates); gradients still flow
    to the input of :meth:`encode_spectrogram`.
    """

    sample_rate = SAMPLE_RATE
    embed_dim = EMBED_DIM
    stft_config = STFT

    def __init__(self, module: nn.Module, tokenizer: Callable | None, version: str, name: str,
                 cache_key: str, rehearsal: bool = False):
        super().__init__()
        args = package_config(version)
        self.version = version
        self.text_model = _text_model_of(version)
        self.audio_encoder_name = args["audioenc_name"]
        if self.audio_encoder_name not in ("HTSAT", "Cnn14"):
            raise ValueError(f"audio encoder {self.audio_encoder_name!r} is not supported")
        self.clip_samples = int(args["duration"]) * SAMPLE_RATE
        self.text_len = int(args.get("text_len", 77))
        if int(args["sampling_rate"]) != SAMPLE_RATE or int(args["d_proj"]) != EMBED_DIM:
            raise ValueError(f"msclap {version}: rate {args['sampling_rate']}, {args['d_proj']}-d; "
                             f"MsClap supports {SAMPLE_RATE} Hz, {EMBED_DIM}-d")
        self.clap = module.eval().requires_grad_(False)
        self._check_front_end()
        self.tokenizer = tokenizer
        self.name = name
        self.cache_key = cache_key
        self.rehearsal = bool(rehearsal)
        tower = self.clap.caption_encoder.base.config
        self.text_positions = int(tower.max_position_embeddings)

    def _base(self) -> nn.Module:
        """The audio encoder's feature extractor: HTS-AT's Swin transformer or CNN14."""
        base = self.clap.audio_encoder.base
        return base.htsat if self.audio_encoder_name == "HTSAT" else base

    def _check_front_end(self) -> None:
        """The module's STFT must be the one :attr:`stft_config` computes (torchlibrosa's
        Hann-window DFT kernels, hop 320): a checkpoint holds these kernels too."""
        from torchlibrosa.stft import STFT as TorchlibrosaStft
        stft = self._base().spectrogram_extractor.stft
        s = self.stft_config
        reference = TorchlibrosaStft(n_fft=s.n_fft, hop_length=s.hop_length, win_length=s.win_length,
                                     window="hann", center=True, pad_mode="reflect")
        same = (stft.conv_real.stride == (s.hop_length,) and stft.center and stft.pad_mode == "reflect"
                and stft.conv_real.weight.shape == reference.conv_real.weight.shape)
        for ours, theirs in ((stft.conv_real, reference.conv_real), (stft.conv_imag, reference.conv_imag)):
            same = same and torch.allclose(ours.weight.detach().cpu().float(), theirs.weight, atol=1e-5)
        if not same:
            raise CheckpointError("the model's STFT is not the Hann-window STFT (n_fft 1024, hop "
                                  "320) of the msclap package; is it an msclap checkpoint?")
        if self._base().logmel_extractor.melW.shape != (s.n_freq, 64):
            raise CheckpointError(f"the model's mel filterbank has shape "
                                  f"{tuple(self._base().logmel_extractor.melW.shape)}, not (513, 64)")

    def train(self, mode: bool = True) -> "MsClap":
        super().train(mode)
        self.clap.eval()  # frozen: see the class docstring
        return self

    @property
    def logit_scale(self) -> float:
        return float(self.clap.logit_scale.exp())

    def mel_filters(self) -> torch.Tensor:
        """``(513, 64)`` mel filterbank of the model's front end (``logmel_extractor.melW``)."""
        return self._base().logmel_extractor.melW

    def describe(self) -> str:
        return (f"{super().describe()}, {self.audio_encoder_name} + "
                f"{TEXT_MODELS[self.text_model].name}")

    # -- audio ---------------------------------------------------------------------
    def prepare(self, waveforms: AudioInput, sample_rate: int | None = None) -> torch.Tensor:
        """Validate and batch audio: float32 ``(N, clip_samples)`` on ``self.device``;
        shorter clips repeated and cut, longer ones cropped to their first window
        (:func:`fit_clip`)."""
        clips = []
        for i, clip in enumerate(split_clips(waveforms)):
            try:
                x = prepare_waveforms(clip, self.sample_rate, None, sample_rate)[0].numpy()
            except (TypeError, ValueError) as e:  # name the clip in the batch, not "clip 0"
                raise type(e)(str(e).replace("clip 0", f"clip {i}", 1)) from None
            clips.append(fit_clip(x, self.clip_samples))
        return torch.from_numpy(np.stack(clips)).to(self.device)

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Linear STFT magnitude ``(N, 513, T)`` -> log-mel ``(N, T, 64)`` in dB, as the
        package's front end computes it: power -> mel (:meth:`mel_filters`) ->
        ``10 log10(max(., 1e-10))``."""
        logmel = self._base().logmel_extractor
        power = magnitude.to(logmel.melW.dtype) ** 2
        return logmel.power_to_db(power.transpose(1, 2) @ logmel.melW)

    def encode_spectrogram(self, magnitude: torch.Tensor) -> AudioEncoding:
        """Differentiable: linear STFT magnitude ``(N, 513, T)`` of the window -> embedding
        and features (T = 965 frames for 2023's 7 s, 690 for 2022's 5 s).

        The package's own path from the power spectrogram on: log-mel (:meth:`log_mel`) ->
        per-band batch norm (``bn0``) -> the audio encoder -> its embedding -> the audio
        projection -> L2 norm.

        * HTS-AT (2023): the log-mel stretched from 965 to 1,024 frames (bicubic) and cut
          into 4 chunks stacked along frequency (``reshape_wav2img``) -> patch embedding ->
          4 Swin stages -> layer norm -> mean over positions. ``features``: 5 maps, the
          patch embedding and each stage's output before its patch merging, folded back to
          frequency (low to high) x time (the window, in equal steps): C = 96, 96, 192, 384,
          768 on F' x T' = 16 x 256, 16 x 256, 8 x 128, 4 x 64, 2 x 32.
        * CNN14 (2022): 6 convolution blocks (2 x 2 average pooling after the first five) ->
          mean over frequency -> max + mean over time -> ``fc1`` + ReLU. ``features``: the
          6 blocks' outputs as frequency x time maps: C = 64, 128, 256, 512, 1024, 2048 on
          F' x T' = 32 x 345, 16 x 172, 8 x 86, 4 x 43, 2 x 21, 2 x 21.
        """
        n_frames = self.stft_config.n_frames(self.clip_samples)
        if magnitude.is_complex() or magnitude.ndim != 3 or \
                tuple(magnitude.shape[1:]) != (self.stft_config.n_freq, n_frames):
            raise ValueError(f"expected a real (N, {self.stft_config.n_freq}, {n_frames}) linear "
                             f"magnitude of {self.clip_samples / SAMPLE_RATE:g}-s clips, got "
                             f"{tuple(magnitude.shape)} {magnitude.dtype}; use "
                             "model.spectrogram(audio).abs()")
        base = self._base()
        x = self.log_mel(magnitude)[:, None]  # (N, 1, T, 64)
        x = base.bn0(x.transpose(1, 3)).transpose(1, 3)
        if self.audio_encoder_name == "HTSAT":
            pooled, features = self._htsat(base, x)
        else:
            pooled, features = self._cnn14(base, x)
        embedding = F.normalize(self.clap.audio_encoder.projection(pooled), dim=-1)
        return AudioEncoding(embedding=embedding, features=features)

    def _htsat(self, htsat: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """HTS-AT's ``forward`` (eval, a clip of at most 1,024 frames) and
        ``forward_features``' ``latent_output``, with the stages' outputs as maps."""
        x = htsat.reshape_wav2img(x)  # (N, 1, 256, 256)
        tokens = htsat.patch_embed(x)
        if htsat.ape:
            tokens = tokens + htsat.absolute_pos_embed
        tokens = htsat.pos_drop(tokens)
        features = [self._to_map(tokens, htsat.patch_embed.grid_size)]
        for layer in htsat.layers:
            for block in layer.blocks:
                tokens, _ = block(tokens)
            features.append(self._to_map(tokens, layer.input_resolution))
            if layer.downsample is not None:
                tokens = layer.downsample(tokens)
        return htsat.norm(tokens).mean(dim=1), features

    @staticmethod
    def _cnn14(cnn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """CNN14's ``forward`` in eval mode (its dropouts do nothing), its ``embedding``."""
        features = []
        for i in range(1, 7):
            x = getattr(cnn, f"conv_block{i}")(x, pool_size=(2, 2) if i < 6 else (1, 1),
                                                pool_type="avg")
            features.append(x.transpose(2, 3))  # (N, C, T', F') -> (N, C, F', T')
        x = torch.mean(x, dim=3)
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
        return F.relu(cnn.fc1(x)), features

    def _to_map(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(N, H*W, C)`` tokens on HTS-AT's image grid -> ``(N, C, H/r, r*W)`` frequency x
        time map, undoing ``reshape_wav2img``'s r = 4 time chunks stacked along frequency."""
        n, _, c = tokens.shape
        h, w = grid
        r = self._base().freq_ratio
        x = tokens.transpose(1, 2).reshape(n, c, r, h // r, w)
        return x.permute(0, 1, 3, 2, 4).reshape(n, c, h // r, r * w)

    def _to_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`_to_map`: ``(N, C, H/r, r*W)`` map -> ``(N, H*W, C)`` tokens."""
        n, c, h_r, rw = x.shape
        r = self._base().freq_ratio
        return x.reshape(n, c, h_r, r, rw // r).permute(0, 1, 3, 2, 4).reshape(n, c, -1).transpose(1, 2)

    def encoder_layers(self) -> list[tuple[str, nn.Module]]:
        """Top down: the audio projection, then HTS-AT's Swin stages 4..1 and patch
        embedding (2023), or CNN14's ``fc1`` and convolution blocks 6..1 (2022)."""
        base = self._base()
        top = [("projection", self.clap.audio_encoder.projection)]
        if self.audio_encoder_name == "HTSAT":
            stages = [(f"stage {i + 1}", layer) for i, layer in enumerate(base.layers)]
            return [*top, *reversed(stages), ("patch embedding", base.patch_embed)]
        blocks = [(f"conv block {i}", getattr(base, f"conv_block{i}")) for i in range(1, 7)]
        return [*top, ("fc1", base.fc1), *reversed(blocks)]

    @contextmanager
    def feature_tap(self, index: int = -1) -> Iterator[nn.Module]:
        """HTS-AT: the output of Swin stage ``index`` (features 1-4 or -1..-4; not the patch
        embedding, feature 0), folded from the token layout to frequency x time and back.
        CNN14: the output of convolution block ``index + 1`` (features 0-5 or -1..-6),
        transposed to frequency x time and back. Gradients flow through the tap."""
        base, tap = self._base(), nn.Identity()
        if self.audio_encoder_name == "HTSAT":
            n = len(base.layers) + 1
            check_feature_index(index, n, "feature map")
            if index % n == 0:
                raise ValueError("Grad-CAM on msclap 2023 taps a Swin stage (features 1-4 or "
                                 "-1..-4), not the patch embedding (feature 0)")
            layer = base.layers[index % n - 1]

            def hook(module, inputs, out):
                tokens, attn = out
                return self._to_tokens(tap(self._to_map(tokens, layer.input_resolution))), attn

            handle = layer.blocks[-1].register_forward_hook(hook)
        else:
            check_feature_index(index, 6, "feature map")
            block = getattr(base, f"conv_block{index % 6 + 1}")
            handle = block.register_forward_hook(
                lambda module, inputs, out: tap(out.transpose(2, 3)).transpose(2, 3))
        try:
            yield tap
        finally:
            handle.remove()

    # -- text: the package's get_text_embeddings -----------------------------------------
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        require_tokenizer(self.tokenizer, self.name,
                          "load_model('msclap/...') or clapnb.msclap.load_msclap()")
        if self.text_model == "gpt2":
            texts = [t + " " + END_TOKEN for t in texts]
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        for i, n in enumerate(lengths):
            if n > self.text_positions:
                raise ValueError(f"text {i} has {n} tokens; the {TEXT_MODELS[self.text_model].name} "
                                 f"text encoder takes at most {self.text_positions}: shorten it")
        tokens = self.tokenizer(texts, add_special_tokens=True, padding="max_length",
                                max_length=max(self.text_len, *lengths), return_tensors="pt")
        x = {k: tokens[k].to(self.device) for k in TEXT_MODELS[self.text_model].token_keys}
        return F.normalize(self.clap.caption_encoder(x), dim=-1)


def load_msclap(name: str = DEFAULT_CHECKPOINT, device: str | torch.device | None = None) -> MsClap:
    """Load msclap checkpoint ``name`` (see :data:`CHECKPOINTS`), downloading it if needed.

    The tokenizer is loaded first (cheap, and a missing one fails before a large download;
    offline and not cached: a :class:`~clapnb.download.DownloadError` at once). The text
    tower is built from the checkpoint's own shapes (:func:`text_config`) and the tokenizer
    must fit it (:func:`check_tokenizer_fits`). Under ``CLAPNB_MIRROR`` everything comes
    from the mirror, checked against its manifest, and the model is a rehearsal model
    (``model.rehearsal``). The cache key names the file, its size and digest (the mirror's,
    under a mirror), ``rehearsal`` under a mirror, and :func:`preprocessing`.
    ``device=None`` means CUDA when available, else CPU.
    """
    spec, file = _checkpoint(name), checkpoint_file(name)
    package_config(spec.version)  # msclap (and pyyaml) missing: an ImportError before any download
    src = file.source()
    tokenizer = load_tokenizer(spec.text_model)
    path = file.fetch()
    state = read_checkpoint(path)
    config = text_config(spec.text_model, state)
    check_tokenizer_fits(tokenizer, spec.text_model, config)
    module = build_clap(spec.version, text=config)
    load_weights(module, state, source=str(path))
    del state
    cache_key = file.cache_key(src, preprocessing(spec.version))
    model = MsClap(module, tokenizer, version=spec.version, name=name, cache_key=cache_key,
                   rehearsal=src.mirrored)
    return model.to(default_device(device))


def random_msclap(name: str = DEFAULT_CHECKPOINT, seed: int = 0, text: dict[str, Any] | None = None,
                  tokenizer: Callable | None = None,
                  device: str | torch.device | None = "cpu") -> MsClap:
    """A randomly initialised msclap model of the real audio architecture of checkpoint
    ``name``, built offline. Its text tower: ``text`` (default: a one-layer one, see
    :data:`GPT2_TINY` / :data:`BERT_TINY`); without a ``tokenizer`` ``embed_text`` raises.
    For tests and for trying the LMAC-ZS machinery without a download."""
    spec = _checkpoint(name)
    text = text or TEXT_MODELS[spec.text_model].tiny
    with torch.random.fork_rng(devices=[]):  # leaves the global random state alone
        torch.manual_seed(seed)
        module = build_clap(spec.version, text=text)
    random_name = f"{name}-random"
    return MsClap(module, tokenizer, version=spec.version, name=random_name,
                  cache_key=f"{random_name}|seed={seed}|{preprocessing(spec.version)}"
                  ).to(default_device(device))
