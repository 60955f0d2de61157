"""Turn whatever audio a learner passes in into the batch a model expects.

Every backend calls :func:`prepare_waveforms` first, so bad input gets the
same clear behaviour whatever model is active:

=========================  ===================================================
input                      behaviour
=========================  ===================================================
1-D array ``(S,)``         one clip
2-D array ``(N, S)``       a batch of N mono clips of equal length (``(2, S)``
                           is taken for stereo: pass a list of two clips)
list of 1-D arrays         a batch; clips may differ in length
stereo ``(S, 2)``/``(2,S)``  refused: pass ``to_mono(x)`` (the error says so)
integer PCM (int16/int32)  scaled to [-1, 1] by the dtype's full range
8-bit PCM (uint8)          offset 128 removed, then scaled: (x - 128) / 128
wrong sample rate          resampled with librosa when ``sample_rate`` is given
bad sample rate            refused unless a positive integer (0, -1, 44.1e3)
NaN / inf                  refused, naming the clip index
empty clip                 refused
silent clip                accepted (an all-zero clip is valid audio)
shorter than the window    repeated whole, then zero-filled (as LAION-CLAP does)
longer than the window     cropped *deterministically* from the start
=========================  ===================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

AudioInput = np.ndarray | torch.Tensor | Sequence[np.ndarray | torch.Tensor]


def to_mono(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """Average the channels of a ``(S, C)`` or ``(C, S)`` array (C <= 8) to ``(S,)``."""
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if x.ndim != 2:
        raise ValueError(f"to_mono expects a 2-D (samples, channels) array, got shape {x.shape}")
    axis = 1 if x.shape[1] <= 8 else 0
    return _to_float(x).mean(axis=axis)


def _to_float(x: np.ndarray) -> np.ndarray:
    """float32 samples; integer PCM is scaled so that its full range is [-1, 1)."""
    if np.issubdtype(x.dtype, np.unsignedinteger):  # 8-bit WAV: 128 is silence
        mid = 2.0 ** (8 * x.dtype.itemsize - 1)
        return ((x.astype(np.float64) - mid) / mid).astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return (x.astype(np.float64) / max(abs(info.min), info.max)).astype(np.float32)
    if np.issubdtype(x.dtype, np.bool_) or not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"audio must be numeric (float or integer PCM), got dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def check_sample_rate(rate: object, name: str = "sample_rate") -> int:
    """``rate`` as an ``int`` when it is a positive integer (numpy integers too), else an error."""
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, np.integer)):
        hint = f" (e.g. {name}=int(sr))" if isinstance(rate, (float, np.floating)) else ""
        raise TypeError(f"{name} must be a positive integer number of Hz such as 16000, "
                        f"got {rate!r} ({type(rate).__name__}){hint}")
    if rate <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz such as 16000, got "
                         f"{rate!r}; pass the rate the audio was recorded at")
    return int(rate)


def split_clips(waveforms: AudioInput) -> list[np.ndarray]:
    """Any accepted audio input (one clip, a batch array, a list of clips) -> a list of 1-D
    clips as numpy arrays, unchanged otherwise; stereo and empty input are refused."""
    if isinstance(waveforms, torch.Tensor):
        waveforms = waveforms.detach().cpu().numpy()
    if isinstance(waveforms, np.ndarray):
        if waveforms.ndim == 1:
            clips = [waveforms]
        elif waveforms.ndim == 2:
            rows, cols = waveforms.shape
            if cols <= 8 < rows or (rows == 2 and cols > 8):  # (S, C) or (2, S): channels
                batch = ", or list(x) if it really is a batch of two mono clips" if rows == 2 else ""
                raise ValueError(
                    f"audio of shape {waveforms.shape} looks like stereo (multi-channel) audio; "
                    f"CLAP models take mono audio: pass clapnb.audio.to_mono(x){batch}")
            clips = list(waveforms)
        else:
            raise ValueError(f"audio must be (samples,) or (batch, samples), got shape {waveforms.shape}")
    else:
        clips = [np.asarray(c.detach().cpu() if isinstance(c, torch.Tensor) else c) for c in waveforms]
    if not clips:
        raise ValueError("no audio given: pass at least one clip")
    for i, c in enumerate(clips):
        if c.ndim != 1:
            raise ValueError(f"clip {i} has shape {c.shape}; each clip must be 1-D mono "
                             "(use clapnb.audio.to_mono for multi-channel audio)")
    return clips


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Keep the first ``n`` samples of a long clip; repeat a short one as many whole
    times as fit in ``n`` and fill the rest with zeros (LAION-CLAP's "repeatpad")."""
    if len(x) >= n:
        return x[:n]
    out = np.zeros(n, dtype=x.dtype)
    reps = n // len(x)
    out[:reps * len(x)] = np.tile(x, reps)
    return out


def prepare_waveforms(waveforms: AudioInput, model_rate: int, clip_samples: int | None,
                      sample_rate: int | None = None) -> torch.Tensor:
    """Validate, convert and batch audio for a model.

    Args:
        waveforms: one clip ``(S,)``, a batch ``(N, S)`` or a list of 1-D clips.
        model_rate: the model's sample rate in Hz.
        clip_samples: the model's fixed window in samples; clips are padded or
            cropped to it. ``None`` keeps lengths (all clips must then be equal).
        sample_rate: the rate of ``waveforms`` in Hz; ``None`` means it is
            already ``model_rate``. A different rate is resampled.

    Returns:
        float32 tensor ``(N, clip_samples)`` on the CPU.

    Raises:
        TypeError, ValueError: a sample rate that is not a positive integer, or
            audio of the wrong shape, dtype or content (the message says which).
    """
    model_rate = check_sample_rate(model_rate, "model_rate")
    if sample_rate is not None:
        sample_rate = check_sample_rate(sample_rate)
    clips = split_clips(waveforms)
    out = []
    for i, c in enumerate(clips):
        c = _to_float(c)
        if c.size == 0:
            raise ValueError(f"clip {i} is empty (0 samples)")
        if not np.isfinite(c).all():
            raise ValueError(f"clip {i} contains NaN or inf samples; clean it first, "
                             "e.g. np.nan_to_num(x)")
        if sample_rate is not None and sample_rate != model_rate:
            import librosa
            c = librosa.resample(c, orig_sr=sample_rate, target_sr=model_rate).astype(np.float32)
        if clip_samples is not None:
            c = fit_length(c, clip_samples)
        out.append(c)
    lengths = {len(c) for c in out}
    if len(lengths) > 1:
        raise ValueError(f"clips have different lengths {sorted(lengths)}; pass clip_samples "
                         "to pad/crop them to one window")
    return torch.from_numpy(np.stack(out).astype(np.float32, copy=False))
