"""One interface for every CLAP model the course uses, and ``load_model`` to pick one.

A :class:`ClapModel` maps audio and text into one embedding space:

* ``embed_audio(waveforms) -> (N, D)`` and ``embed_text(texts) -> (N, D)``,
  unit-norm float32, on ``model.device``;
* ``logit_scale``: the learned temperature; ``logit_scale * a @ t.T`` are the
  logits of zero-shot classification;
* what LMAC-ZS needs: the model's own STFT (:class:`StftConfig`), a
  differentiable ``embed_from_spectrogram(magnitude)`` that re-encodes a (masked)
  linear-magnitude STFT, and ``encode_spectrogram`` which also returns the
  encoder's intermediate features for a decoder.

* what explainers need of the encoder, handed over rather than guessed:
  ``encoder_layers()`` (for the model-randomisation check), ``feature_tap(index)``
  (the layer captum's Grad-CAM takes) and ``mel_filters()`` (from the encoder's
  mel grid back to the STFT bins).

``embed_audio(x)`` is *defined* as ``embed_from_spectrogram(|stft(x)|)``, so the
two always agree; each backend's tests check that this path reproduces the
original model's own front end.

One module per backend implements this interface (:mod:`clapnb.tiny`,
:mod:`clapnb.laion`, :mod:`clapnb.msclap`); :mod:`clapnb.registry` maps names to them and says what
comes with each (datasets, a shipped decoder, ground truth).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from clapnb.audio import AudioInput, prepare_waveforms


@dataclass(frozen=True)
class StftConfig:
    """A model's short-time Fourier transform (Hann window, centred, reflect padding).

    Spectrograms are complex tensors ``(N, n_fft // 2 + 1, frames)``; a clip of
    S samples has ``1 + S // hop_length`` frames.
    """

    n_fft: int
    hop_length: int
    win_length: int

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop_length

    def _window(self, device: torch.device) -> torch.Tensor:
        return torch.hann_window(self.win_length, device=device)

    def stft(self, waveforms: torch.Tensor) -> torch.Tensor:
        """``(N, S)`` float -> ``(N, F, T)`` complex."""
        return torch.stft(waveforms, self.n_fft, self.hop_length, self.win_length,
                          window=self._window(waveforms.device), center=True,
                          pad_mode="reflect", return_complex=True)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """``(N, F, T)`` complex -> ``(N, length)`` float (inverse of :meth:`stft`)."""
        return torch.istft(spec, self.n_fft, self.hop_length, self.win_length,
                           window=self._window(spec.device), center=True, length=length)


@dataclass
class AudioEncoding:
    """What the audio encoder computes from a spectrogram.

    embedding: ``(N, D)`` unit-norm audio embeddings.
    features: intermediate encoder outputs, shallow to deep, each ``(N, C, ...)``:
        the input a LMAC-ZS decoder is built on.
    """

    embedding: torch.Tensor
    features: list[torch.Tensor]


class ClapModel(nn.Module):
    """Base class of the backends; subclasses set the attributes and implement
    :meth:`encode_spectrogram`, :meth:`_encode_text`, :attr:`logit_scale`,
    :meth:`mel_filters`, :meth:`encoder_layers` and :meth:`feature_tap`.

    Attributes:
        name: registry name (``"tiny"``, ``"laion/630k-audioset"``, ...).
        cache_key: string that changes whenever the embeddings would (model,
            checkpoint digest, preprocessing); used by the embedding cache.
        sample_rate: Hz of the audio the model takes.
        clip_samples: fixed input window in samples (shorter clips are
            repeat-padded, longer ones cropped from the start by ``prepare`` and
            ``spectrogram``; a backend's ``embed_audio`` may see more of a long clip, as
            LAION's fusion checkpoints do).
        embed_dim: D, the size of the shared embedding space.
        stft_config: the model's own STFT.
        rehearsal: True for a model built from a local mirror's stand-in checkpoint
            (``CLAPNB_MIRROR``, random weights): the code path is real, its numbers mean nothing.
    """

    name: str
    cache_key: str
    sample_rate: int
    clip_samples: int
    embed_dim: int
    stft_config: StftConfig
    rehearsal: bool = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def logit_scale(self) -> float:
        """Multiplier turning cosine similarities into zero-shot logits."""
        raise NotImplementedError

    # -- what a backend implements -------------------------------------------------
    def encode_spectrogram(self, magnitude: torch.Tensor) -> AudioEncoding:
        """Differentiable: ``(N, F, T)`` linear STFT magnitude -> embedding and features."""
        raise NotImplementedError

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """``len(texts)`` strings -> ``(N, D)`` unit-norm embeddings (no grad needed)."""
        raise NotImplementedError

    def mel_filters(self) -> torch.Tensor:
        """``(F, n_mels)`` filterbank from the linear STFT bins to the encoder's mel bands:
        how a map on the encoder's mel grid is brought back to the STFT grid."""
        raise NotImplementedError

    def encoder_layers(self) -> list[tuple[str, nn.Module]]:
        """The audio encoder's layers from the top (output) down, as ``(name, module)``:
        what the cascading model-randomisation check re-initialises one after another."""
        raise NotImplementedError

    def feature_tap(self, index: int = -1) -> AbstractContextManager[nn.Module]:
        """A context giving an ``nn.Identity`` through which the feature map
        ``encode_spectrogram(X).features[index]`` ``(N, C, F', T')`` flows while it is open:
        the layer to hand captum's layer methods (Grad-CAM). Maps on that frequency x time
        grid go back to the STFT bins through :meth:`mel_filters`."""
        raise NotImplementedError

    # -- the interface every notebook uses -----------------------------------------
    def prepare(self, waveforms: AudioInput, sample_rate: int | None = None) -> torch.Tensor:
        """Validate and batch audio: float32 ``(N, clip_samples)`` on ``self.device``."""
        x = prepare_waveforms(waveforms, self.sample_rate, self.clip_samples, sample_rate)
        return x.to(self.device)

    def spectrogram(self, waveforms: AudioInput, sample_rate: int | None = None) -> torch.Tensor:
        """Complex STFT ``(N, F, T)`` of the prepared audio."""
        return self.stft_config.stft(self.prepare(waveforms, sample_rate))

    def embed_from_spectrogram(self, magnitude: torch.Tensor) -> torch.Tensor:
        """Differentiable: ``(N, F, T)`` linear magnitude -> ``(N, D)`` unit-norm."""
        return self.encode_spectrogram(magnitude).embedding

    def embed_audio(self, waveforms: AudioInput, sample_rate: int | None = None,
                    grad: bool = False, batch_size: int = 32) -> torch.Tensor:
        """Audio -> ``(N, D)`` unit-norm float32 embeddings on ``self.device``.

        Runs under ``torch.no_grad()`` unless ``grad=True``.
        """
        x = self.prepare(waveforms, sample_rate)
        with torch.set_grad_enabled(grad):
            parts = [self.embed_from_spectrogram(self.stft_config.stft(x[i:i + batch_size]).abs())
                     for i in range(0, len(x), batch_size)]
        return torch.cat(parts).float()

    def embed_text(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Strings -> ``(N, D)`` unit-norm float32 embeddings on ``self.device``."""
        texts = check_texts(texts)
        with torch.no_grad():
            parts = [self._encode_text(texts[i:i + batch_size])
                     for i in range(0, len(texts), batch_size)]
        return torch.cat(parts).float()

    def unknown_words(self, text: str) -> list[str]:
        """Words of ``text`` the text encoder never saw in training (their embeddings
        carry no learned meaning). Sub-word tokenizers (LAION-CLAP) know every word."""
        return []

    def describe(self) -> str:
        """One line: name, rate, window, embedding size."""
        return (f"{self.name}: {self.sample_rate} Hz, "
                f"{self.clip_samples / self.sample_rate:g} s window, {self.embed_dim}-d embeddings")


def check_texts(texts: Sequence[str]) -> list[str]:
    """Refuse a bare string, an empty list and empty prompts, with a clear message."""
    if isinstance(texts, str):
        raise TypeError("embed_text takes a list of strings; wrap a single prompt as [prompt]")
    texts = list(texts)
    if not texts:
        raise ValueError("no texts given: pass a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, not str")
        if not t.strip():
            raise ValueError(f"text {i} is empty; every prompt needs at least one word")
    return texts


def check_feature_index(index: int, n: int, what: str) -> None:
    """Refuse a feature index outside ``-n..n-1`` with a message naming the range."""
    if not -n <= index < n:
        raise IndexError(f"{what} index {index} out of range: this model has {n} ({-n}..{n - 1})")


@contextmanager
def output_tap(module: nn.Module) -> Iterator[nn.Module]:
    """An ``nn.Identity`` through which ``module``'s output flows while the context is open
    (a forward hook): the simplest :meth:`ClapModel.feature_tap`."""
    tap = nn.Identity()
    handle = module.register_forward_hook(lambda _module, _inputs, out: tap(out))
    try:
        yield tap
    finally:
        handle.remove()
