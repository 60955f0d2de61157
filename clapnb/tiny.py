"""TinyCLAP: a small CLAP trained by this project on its synthetic sound world.

The offline mode's model (``load_model("tiny")``). It implements the whole
:class:`~clapnb.model.ClapModel` interface with the same shapes as LAION-CLAP
(512-d unit-norm embeddings, a learned ``logit_scale``), but is small enough to
train on a laptop CPU in minutes (``python scripts/train_tinyclap.py``).

Audio: linear STFT magnitude (16 kHz, n_fft 512, hop 256) -> 64-band log-mel
(computed *inside* :meth:`TinyClap.encode_spectrogram`, so
``embed_from_spectrogram(|stft(x)|) == embed_audio(x)`` by construction) ->
four conv blocks -> mean + max pooling over time (keeping the 4 coarse
frequency bands) -> MLP -> 512-d.

Text: lowercase word tokens, each embedded fastText-style as the mean of a
word vector and hashed character 3-5-grams, so a word never seen in training
still gets an embedding built from its spelling ("sirens" lands near "siren",
"violin" somewhere unrelated). Attention pooling over the words -> MLP -> 512-d.
:attr:`TinyClap.known_words` / :meth:`TinyClap.is_known` say which words the
model actually saw in training: treat any other word's embedding with suspicion.
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clapnb.cache import atomic_write, load_float_state, save_half_state
from clapnb.model import AudioEncoding, ClapModel, StftConfig, check_feature_index, output_tap
from clapnb.settings import default_device

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
#: the committed weights (a float16 state dict for ``torch.load(weights_only=True)``) and config
WEIGHTS_FILE = WEIGHTS_DIR / "tinyclap.pt"
CONFIG_FILE = WEIGHTS_DIR / "tinyclap.json"
#: the LMAC-ZS decoder trained for TinyCLAP (float16 state dict; its config beside it as .json)
DECODER_FILE = WEIGHTS_DIR / "lmaczs_tiny.pt"


@dataclass
class TinyConfig:
    """Architecture, front end and tokenizer of a TinyCLAP (saved next to the weights)."""

    sample_rate: int = 16_000
    clip_samples: int = 80_000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 20.0
    f_max: float = 8_000.0
    log_eps: float = 1e-6          # added to the mel power before the log
    channels: tuple[int, ...] = (16, 32, 64, 128)
    embed_dim: int = 512
    text_dim: int = 128
    n_buckets: int = 4096          # hashed character n-gram rows
    ngram_min: int = 3
    ngram_max: int = 5
    vocabulary: list[str] = field(default_factory=list)  # words seen in training

    @classmethod
    def from_dict(cls, d: dict) -> "TinyConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


# ---------------------------------------------------------------------------------
# Front end
# ---------------------------------------------------------------------------------
def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float,
                   f_max: float) -> np.ndarray:
    """Triangular HTK-scale mel filters, area-normalised: ``(n_mels, n_fft // 2 + 1)``."""
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs - lower) / (centre - lower)
    fall = (upper - freqs) / (upper - centre)
    fb = np.maximum(0.0, np.minimum(rise, fall))
    return (fb * (2.0 / (upper - lower))).astype(np.float32)


# ---------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def words(text: str) -> list[str]:
    """Lowercase word tokens of ``text`` (punctuation dropped)."""
    return _WORD.findall(text.lower())


def _fnv1a(s: str) -> int:
    h = 0x811C9DC5
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


class Tokenizer:
    """Word ids plus hashed character n-grams (fastText style).

    Row layout of the embedding table: ``[0, len(vocabulary))`` word vectors,
    then ``n_buckets`` n-gram vectors. A word maps to its word row (if known)
    and the rows of its n-grams of ``<word>``.
    """

    def __init__(self, vocabulary: list[str], n_buckets: int, ngram_min: int, ngram_max: int):
        self.vocabulary = list(vocabulary)
        self.index = {w: i for i, w in enumerate(self.vocabulary)}
        self.n_buckets, self.ngram_min, self.ngram_max = n_buckets, ngram_min, ngram_max

    @property
    def n_rows(self) -> int:
        return len(self.vocabulary) + self.n_buckets

    def ngrams(self, word: str) -> list[str]:
        w = f"<{word}>"
        return [w[i:i + n] for n in range(self.ngram_min, self.ngram_max + 1)
                for i in range(len(w) - n + 1)] or [w]

    def rows(self, word: str, use_word: bool = True) -> list[int]:
        """Embedding rows of ``word``: word row (when known and ``use_word``) + n-gram rows."""
        grams = [len(self.vocabulary) + _fnv1a(g) % self.n_buckets for g in self.ngrams(word)]
        return ([self.index[word]] if use_word and word in self.index else []) + grams


# ---------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------
class AudioEncoder(nn.Module):
    """Linear STFT magnitude ``(N, F, T)`` -> (projected embedding ``(N, D)``, block outputs)."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        fb = mel_filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.f_min, cfg.f_max)
        self.register_buffer("mel_fb", torch.from_numpy(fb), persistent=False)
        self.log_eps = cfg.log_eps
        self.bn0 = nn.BatchNorm1d(cfg.n_mels)
        blocks, c_in = [], 1
        for c_out in cfg.channels:
            blocks.append(nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                                        nn.BatchNorm2d(c_out), nn.ReLU(), nn.AvgPool2d(2)))
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        n_bands = cfg.n_mels // 2 ** len(cfg.channels)  # frequency rows left after pooling
        self.proj = nn.Sequential(nn.Linear(2 * c_in * n_bands, cfg.embed_dim), nn.GELU(),
                                  nn.Linear(cfg.embed_dim, cfg.embed_dim))

    def mel_power(self, magnitude: torch.Tensor) -> torch.Tensor:
        """``(N, F, T)`` magnitude -> ``(N, n_mels, T)`` mel power."""
        return torch.einsum("mf,nft->nmt", self.mel_fb, magnitude.float() ** 2)

    def from_mel_power(self, mel: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(N, n_mels, T)`` mel power -> (unnormalised embedding, block outputs)."""
        x = self.bn0(torch.log(mel + self.log_eps)).unsqueeze(1)  # (N, 1, M, T)
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        x = x.flatten(1, 2)                                        # (N, C * F', T')
        pooled = torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1)  # (N, 2 C F')
        return self.proj(pooled), features

    def forward(self, magnitude: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.from_mel_power(self.mel_power(magnitude))


class TextEncoder(nn.Module):
    """Texts -> unnormalised ``(N, D)``: mean of word + n-gram vectors per word,
    attention pooling over words, MLP."""

    def __init__(self, cfg: TinyConfig):
        super().__init__()
        self.tokenizer = Tokenizer(cfg.vocabulary, cfg.n_buckets, cfg.ngram_min, cfg.ngram_max)
        self.table = nn.EmbeddingBag(self.tokenizer.n_rows, cfg.text_dim, mode="mean")
        nn.init.normal_(self.table.weight, std=0.1)
        self.attend = nn.Linear(cfg.text_dim, 1)
        self.proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.embed_dim), nn.GELU(),
                                  nn.Linear(cfg.embed_dim, cfg.embed_dim))

    def word_vectors(self, word_list: list[str], drop_word: float = 0.0,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """``(len(word_list), text_dim)``; ``drop_word`` (training) hides word rows at random
        so that the n-grams learn to carry meaning on their own."""
        device = self.table.weight.device
        keep = (torch.rand(len(word_list), generator=generator) >= drop_word).tolist() \
            if drop_word > 0 else [True] * len(word_list)
        rows = [self.tokenizer.rows(w, k) for w, k in zip(word_list, keep)]
        flat = torch.tensor([r for rr in rows for r in rr], dtype=torch.long, device=device)
        offsets = torch.tensor(np.cumsum([0] + [len(r) for r in rows[:-1]]), dtype=torch.long,
                               device=device)
        return self.table(flat, offsets)

    def forward(self, texts: list[str], drop_word: float = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        tokens = [words(t) or ["<empty>"] for t in texts]
        vocab = sorted({w for ws in tokens for w in ws})
        where = {w: i for i, w in enumerate(vocab)}
        vectors = self.word_vectors(vocab, drop_word, generator)          # (U, d)
        length = max(len(ws) for ws in tokens)
        idx = torch.tensor([[where[w] for w in ws] + [0] * (length - len(ws)) for ws in tokens],
                           device=vectors.device)
        mask = torch.tensor([[True] * len(ws) + [False] * (length - len(ws)) for ws in tokens],
                            device=vectors.device)
        x = vectors[idx]                                                  # (N, L, d)
        scores = self.attend(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        pooled = (scores.softmax(dim=1).unsqueeze(-1) * x).sum(dim=1)
        return self.proj(pooled)


# ---------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------
class TinyClap(ClapModel):
    """TinyCLAP (see the module docstring). Build with :func:`load_tiny`."""

    def __init__(self, cfg: TinyConfig, name: str = "tiny", cache_key: str = "tiny-untrained"):
        super().__init__()
        self.config = cfg
        self.name, self.cache_key = name, cache_key
        self.sample_rate, self.clip_samples = cfg.sample_rate, cfg.clip_samples
        self.embed_dim = cfg.embed_dim
        self.stft_config = StftConfig(cfg.n_fft, cfg.hop_length, cfg.n_fft)
        self.audio_encoder = AudioEncoder(cfg)
        self.text_encoder = TextEncoder(cfg)
        self.log_logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

    @property
    def logit_scale(self) -> float:
        return float(self.log_logit_scale.detach().clamp(max=np.log(100.0)).exp())

    def encode_spectrogram(self, magnitude: torch.Tensor) -> AudioEncoding:
        """Differentiable: ``(N, F, T)`` linear STFT magnitude -> unit-norm ``(N, 512)``
        embedding and the four conv-block outputs ``(N, C, F', T')``, shallow to deep."""
        if magnitude.ndim != 3 or magnitude.shape[1] != self.stft_config.n_freq:
            raise ValueError(f"expected a magnitude spectrogram (N, {self.stft_config.n_freq}, T), "
                             f"got shape {tuple(magnitude.shape)}; compute it with "
                             "model.spectrogram(audio).abs()")
        if magnitude.is_complex():
            raise TypeError("pass the magnitude (spec.abs()), not the complex spectrogram")
        emb, features = self.audio_encoder(magnitude.to(self.device))
        return AudioEncoding(F.normalize(emb, dim=-1), features)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_encoder(texts), dim=-1)

    def mel_filters(self) -> torch.Tensor:
        """``(257, 64)`` mel filterbank of the front end."""
        return self.audio_encoder.mel_fb.T

    def encoder_layers(self) -> list[tuple[str, nn.Module]]:
        """The projection MLP, then conv blocks 4..1."""
        blocks = [(f"block {i + 1}", b) for i, b in enumerate(self.audio_encoder.blocks)]
        return [("projection", self.audio_encoder.proj), *reversed(blocks)]

    def feature_tap(self, index: int = -1) -> AbstractContextManager[nn.Module]:
        """The output of conv block ``index`` (features 0-3), as a tap for Grad-CAM."""
        check_feature_index(index, len(self.audio_encoder.blocks), "conv block")
        return output_tap(self.audio_encoder.blocks[index])

    # -- honesty about the vocabulary ----------------------------------------------
    @property
    def known_words(self) -> frozenset[str]:
        """The words TinyCLAP saw in training; any other word is embedded from its spelling only."""
        return frozenset(self.text_encoder.tokenizer.vocabulary)

    def is_known(self, text: str) -> bool:
        """True when every word of ``text`` was seen in training."""
        return not self.unknown_words(text)

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` never seen in training (in order, without repeats)."""
        known = self.text_encoder.tokenizer.index
        return list(dict.fromkeys(w for w in words(text) if w not in known))


# ---------------------------------------------------------------------------------
# Saving and loading
# ---------------------------------------------------------------------------------
def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def save_tiny(model: TinyClap, weights: Path = WEIGHTS_FILE, config: Path = CONFIG_FILE) -> None:
    """Write the state dict (``torch.save``, float tensors as float16 to halve the file)
    and the JSON config, each atomically."""
    save_half_state(model.state_dict(), weights)
    with atomic_write(config, "w") as f:
        f.write(json.dumps(asdict(model.config), indent=1))


def load_tiny(device: str | torch.device | None = None, weights: Path = WEIGHTS_FILE,
              config: Path = CONFIG_FILE) -> TinyClap:
    """The trained TinyCLAP in eval mode (``device=None``: CUDA if available, else CPU).

    The weights are a plain state dict loaded with ``torch.load(weights_only=True)``;
    ``cache_key`` contains a digest of the weights and config files.
    """
    weights, config = Path(weights), Path(config)
    for p in (weights, config):
        if not p.is_file():
            raise FileNotFoundError(f"TinyCLAP file {p} is missing; it ships with clapnb "
                                    "(re-create it with: python scripts/train_tinyclap.py)")
    cfg = TinyConfig.from_dict(json.loads(config.read_text()))
    model = TinyClap(cfg, cache_key=f"tiny-{_digest(weights, config)[:16]}")
    model.load_state_dict(load_float_state(weights))
    return model.eval().to(default_device(device))
