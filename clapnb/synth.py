"""A synthetic sound world with ground truth: the offline mode's data.

Twenty sound classes are synthesised procedurally (no recordings), each with
randomised parameters, so every clip is different yet recognisable. Everything is
deterministic by seed, and nothing but seeds and parameters is stored: audio and
per-event stems are re-created on demand (a 5 s clip takes a few ms).

* :data:`CLASSES` — the class names; every name and every descriptor word in
  :data:`CONCEPTS` is among the first 2,000 words of both the ``"baseline"`` and
  the ``"pruned"`` vocabulary (:mod:`clapnb.vocabulary`, built from the Freesound
  tags of Clotho), so concept decompositions can find them.
* :data:`CONCEPTS` — per class, 3–6 related words (synonyms, sources,
  qualities): the class's "true concepts" for checking concept decompositions.
* :func:`load_synthetic_clips` — single-event clips laid out like ESC-50
  (class names, 5 folds) as a :class:`~clapnb.datasets.ClipSet`.
* :func:`load_synthetic_scenes` — scenes of 1–3 overlapping events with
  captions and ground-truth :class:`Event` lists as a :class:`~clapnb.datasets.SceneSet`.
* :func:`event_masks` — per event, where in the time–frequency plane it dominates.

Held-out data uses small seeds (the notebooks use ``seed=0``); TinyCLAP is
trained on items drawn from a separate seed stream (:func:`training_clip`,
:func:`training_scene`), so no training item is ever a held-out item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import fft, signal

from clapnb.datasets import ClipSet, SceneSet
from clapnb.model import StftConfig

SAMPLE_RATE = 16_000
CLIP_SECONDS = 5.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)

#: RMS of an event at 0 dB gain (about -26 dBFS), and the largest peak allowed
_EVENT_RMS = 0.05
_EVENT_PEAK = 0.5

#: bumped whenever synthesis changes, so cached embeddings of old audio are not reused
VERSION = 1

# seed streams: every item seed is derived from (stream, seed, ...) so streams never meet
_CLIPS, _SCENES, _TRAIN_CLIPS, _TRAIN_SCENES = 1, 2, 3, 4

Rng = np.random.Generator


# ---------------------------------------------------------------------------------
# Signal building blocks (all return float64 arrays of n samples)
# ---------------------------------------------------------------------------------
_NFFT, _HOP = 512, 256
_HANN = np.hanning(_NFFT + 1)[:-1]  # periodic Hann: sums to 1 at 50 % overlap


def _shaped_noise(rng: Rng, n: int, sr: int,
                  gain: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """Noise whose magnitude spectrum over time is ``gain(freqs (1, F) Hz, times (T, 1) s)``.

    Gaussian noise shaped on a 512/256 STFT grid, then overlap-added; ``gain``
    returns ``(T, F)`` (or anything that broadcasts to it).
    """
    frames = n // _HOP + 1
    freqs = np.fft.rfftfreq(_NFFT, 1 / sr)[None, :]
    times = (np.arange(frames) * _HOP / sr)[:, None]
    spec = rng.standard_normal((frames, 2 * freqs.shape[1])).view(np.complex128)
    chunks = fft.irfft(spec * gain(freqs, times), n=_NFFT, axis=1) * _HANN
    out = np.zeros((frames + 1) * _HOP)
    out[:frames * _HOP].reshape(frames, _HOP)[:] += chunks[:, :_HOP]
    out[_HOP:].reshape(frames, _HOP)[:] += chunks[:, _HOP:]
    return out[:n]


def _smooth_random(rng: Rng, n_points: int, t: np.ndarray, rate: float) -> np.ndarray:
    """A smooth random curve of ``t`` with about ``rate`` wiggles per second, in [-1, 1]."""
    knots = rng.uniform(-1, 1, n_points)
    grid = np.linspace(0, n_points - 1, len(t)) * min(1.0, rate * t[-1] / max(n_points - 1, 1))
    return np.interp(grid, np.arange(n_points), knots)


def _filter(x: np.ndarray, sr: int, low: float | None = None, high: float | None = None,
            order: int = 2) -> np.ndarray:
    """Butterworth high-pass (``low``), low-pass (``high``) or band-pass (both), in Hz."""
    nyq = sr / 2 * 0.98
    if low and high:
        sos = signal.butter(order, [low, min(high, nyq)], "bandpass", fs=sr, output="sos")
    elif low:
        sos = signal.butter(order, low, "highpass", fs=sr, output="sos")
    else:
        sos = signal.butter(order, min(high, nyq), "lowpass", fs=sr, output="sos")
    return signal.sosfilt(sos, x)


def _tone(freq: np.ndarray | float, n: int, sr: int, harmonics: tuple[float, ...] = (1.0,),
          phase0: float = 0.0) -> np.ndarray:
    """A tone of (time-varying) frequency ``freq`` Hz with the given harmonic amplitudes."""
    if np.ndim(freq) == 0:
        phase = (2 * np.pi * float(freq) / sr) * np.arange(n) + phase0
    else:
        phase = (2 * np.pi / sr) * np.cumsum(freq) + phase0
    phase = (phase % (2 * np.pi)).astype(np.float32)  # float32 sines are several times faster
    out = np.zeros(n, dtype=np.float32)
    for k, a in enumerate(harmonics):
        below = (k + 1) * np.asarray(freq) < 0.48 * sr  # harmonics above Nyquist are left out
        if a and np.any(below):
            out += a * np.sin((k + 1) * phase) * below
    return out


def _decay(n: int, sr: int, tau: float, attack: float = 0.001) -> np.ndarray:
    """Envelope: linear ``attack`` (s), then exponential decay with time constant ``tau`` (s)."""
    t = np.arange(n, dtype=np.float32) / sr
    return np.minimum(t / attack, 1.0) * np.exp(-t / tau)


def _gate(n: int, sr: int, segments: list[tuple[float, float]], ramp: float = 0.005) -> np.ndarray:
    """0/1 envelope that is on during each ``(start, stop)`` segment in s, with short ramps."""
    env = np.zeros(n)
    for start, stop in segments:
        a, b = int(start * sr), min(int(stop * sr), n)
        if b > a:
            env[a:b] = 1.0
    k = max(int(ramp * sr), 1)
    return np.convolve(env, np.ones(k) / k, mode="same")


def _place(n: int, sr: int, times: np.ndarray, kernel: np.ndarray,
           amps: np.ndarray | None = None) -> np.ndarray:
    """Copies of ``kernel`` starting at each time in ``times`` (s), scaled by ``amps``."""
    idx = (np.asarray(times) * sr).astype(int)
    amps = np.ones(len(idx)) if amps is None else np.asarray(amps)
    keep = (idx >= 0) & (idx < n)
    idx, amps = idx[keep], amps[keep]
    if len(idx) <= 16:  # few copies: adding them is faster than a convolution
        out = np.zeros(n)
        for i, a in zip(idx, amps):
            m = min(len(kernel), n - i)
            out[i:i + m] += a * kernel[:m]
        return out
    pulses = np.zeros(n)
    np.add.at(pulses, idx, amps)
    return signal.oaconvolve(pulses, kernel)[:n]


def _poisson_times(rng: Rng, rate: float, duration: float) -> np.ndarray:
    """Event times (s) of a Poisson process of ``rate`` per second."""
    return np.sort(rng.uniform(0, duration, rng.poisson(rate * duration)))


def _regular_times(rng: Rng, period: float, duration: float, jitter: float = 0.0) -> np.ndarray:
    """Times every ``period`` s from a random phase, each jittered by ``jitter`` * period."""
    times = np.arange(rng.uniform(0, period), duration, period)
    return times + rng.normal(0, jitter * period, len(times))


def _burst(rng: Rng, sr: int, tau: float, low: float | None = None, high: float | None = None,
           length: float | None = None) -> np.ndarray:
    """A decaying filtered noise burst (time constant ``tau`` s): a click, clap or thud."""
    n = int((length or 6 * tau) * sr)
    return _filter(rng.standard_normal(n), sr, low, high) * _decay(n, sr, tau)


def _mix(*parts: np.ndarray) -> np.ndarray:
    """Sum of arrays of different lengths (zero-padded to the longest)."""
    out = np.zeros(max(len(p) for p in parts))
    for p in parts:
        out[:len(p)] += p
    return out


def _resonator(rng: Rng, sr: int, freqs: list[float], taus: list[float],
               amps: list[float] | None = None, max_seconds: float = 5.0) -> np.ndarray:
    """Struck modes: decaying sines at ``freqs`` Hz with time constants ``taus`` s."""
    n = int(min(6 * max(taus), max_seconds) * sr)
    amps = amps or [1.0] * len(freqs)
    return sum(a * _tone(f, n, sr, phase0=rng.uniform(0, 2 * np.pi)) * _decay(n, sr, tau)
               for f, tau, a in zip(freqs, taus, amps))


# ---------------------------------------------------------------------------------
# The twenty sound classes: (rng, n samples, sample rate) -> waveform
# ---------------------------------------------------------------------------------
def _siren(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    low = rng.uniform(500, 800)
    style = rng.choice(["wail", "yelp", "hi-lo"])
    if style == "wail":      # slow rise and fall
        period = rng.uniform(2.0, 4.5)
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
        high = low * rng.uniform(1.5, 2.0)
    elif style == "yelp":    # fast rising sweeps
        sweep = ((t / rng.uniform(0.2, 0.45) + rng.random()) % 1.0) ** 0.7
        high = low * rng.uniform(1.5, 2.0)
    else:                    # two alternating tones
        sweep = ((t / rng.uniform(0.8, 1.5) + rng.random()) % 1.0 > 0.5).astype(float)
        sweep = np.convolve(sweep, np.ones(160) / 160, mode="same")
        high = low * rng.uniform(1.2, 1.4)
    freq = low + (high - low) * sweep
    return _tone(freq, n, sr, (1.0, rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.3), 0.1))


def _bell(rng: Rng, n: int, sr: int) -> np.ndarray:
    f0 = rng.uniform(250, 900)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01]) * rng.uniform(0.99, 1.01, 8)
    amps = [0.4, 1.0, 0.6, 0.4, 0.6, 0.25, 0.2, 0.15] * rng.uniform(0.5, 1.0, 8)
    length = rng.uniform(1.5, 3.5)
    strike = _resonator(rng, sr, list(f0 * ratios), list(length / ratios ** 0.7 / 3), list(amps),
                        max_seconds=n / sr)
    strike[:int(0.005 * sr)] += 0.3 * rng.standard_normal(int(0.005 * sr))
    times = np.arange(rng.uniform(0, 0.2), n / sr, rng.uniform(0.6, 1.6))[:rng.integers(1, 5)]
    return _place(n, sr, times, strike)


def _rain(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration = n / sr
    density = rng.uniform(300, 2000)
    drops = sum(_place(n, sr, times, _burst(rng, sr, 0.0008, low=rng.uniform(1500, 3500)),
                       np.minimum(rng.pareto(3.0, len(times)) + 0.3, 4.0))
                for times in [_poisson_times(rng, density / 4, duration) for _ in range(4)])
    big = _place(n, sr, _poisson_times(rng, rng.uniform(3, 15), duration),
                 _burst(rng, sr, 0.004, low=800, high=4000))
    tilt = rng.uniform(0.0, 1.0)
    hiss = _shaped_noise(rng, n, sr, lambda f, t: (np.clip(f, 300, None) / 1000) ** (-tilt)
                         * (f > 400))
    return drops * rng.uniform(0.5, 1.0) + 3 * big + hiss * rng.uniform(0.01, 0.03)


def _wind(rng: Rng, n: int, sr: int) -> np.ndarray:
    center0, width = rng.uniform(250, 900), rng.uniform(0.25, 0.9)  # Hz, octaves
    drift = rng.uniform(0.5, 1.5)
    knots = rng.uniform(-1, 1, 6)
    gust_knots = rng.uniform(-1, 1, 6)

    def gain(f: np.ndarray, t: np.ndarray) -> np.ndarray:
        u = t / max(t[-1, 0], 1e-3) * 5
        center = center0 * 2 ** (drift * np.interp(u, np.arange(6), knots))
        gusts = np.exp(1.2 * np.interp(u, np.arange(6), gust_knots))
        band = np.exp(-0.5 * (np.log2(np.maximum(f, 20) / center) / width) ** 2)
        return gusts * (band + 0.05 * (f < 300))

    return _shaped_noise(rng, n, sr, gain)


def _engine(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    fire = rng.uniform(25, 70)  # firing rate, Hz
    if rng.random() < 0.5:      # idling
        freq = fire * (1 + 0.02 * _smooth_random(rng, 8, t, 2.0))
    else:                       # revving up and back down
        peak = rng.uniform(1.5, 2.5)
        freq = fire * (1 + (peak - 1) * np.sin(np.pi * t / t[-1]) ** 2)
    phase = np.cumsum(freq) / sr
    pulses = np.exp(-(phase % 1.0) / rng.uniform(0.05, 0.2))
    pulses *= 1 + 0.3 * np.sin(np.pi * phase)  # uneven cylinders
    x = _filter(pulses - pulses.mean(), sr, 20, rng.uniform(600, 2000))
    noise = _filter(rng.standard_normal(n), sr, 100, 1200) * pulses
    return x + rng.uniform(0.1, 0.4) * noise


def _birds(rng: Rng, n: int, sr: int) -> np.ndarray:
    base, span = rng.uniform(2500, 5500), rng.uniform(-0.5, 0.5)
    length, trill = rng.uniform(0.04, 0.18), rng.uniform(0, 1) < 0.4
    out = np.zeros(n)
    for start in _regular_times(rng, rng.uniform(0.12, 0.35), n / sr, 0.3):
        m = int(length * rng.uniform(0.7, 1.3) * sr)
        a = int(start * sr)
        if a < 0 or a + m > n:
            continue
        u = np.linspace(0, 1, m)
        freq = base * rng.uniform(0.9, 1.1) * (1 + span * u)
        if trill:
            freq = freq * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(30, 70) * u * length))
        out[a:a + m] += _tone(freq, m, sr, (1.0, 0.15)) * np.sin(np.pi * u) ** 2
    return out


def _whistle(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = rng.uniform(1800, 3500)
    if rng.random() < 0.6:  # pea whistle: short trilled blasts
        blasts, start = [], rng.uniform(0, 0.2)
        for _ in range(rng.integers(1, 4)):
            stop = start + rng.uniform(0.3, 1.2)
            blasts.append((start, stop))
            start = stop + rng.uniform(0.15, 0.5)
        env = _gate(n, sr, blasts, 0.01)
        freq = f0 * (1 + 0.04 * np.sign(np.sin(2 * np.pi * rng.uniform(20, 40) * t)))
        freq = np.convolve(freq, np.ones(40) / 40, mode="same")
    else:                   # kettle: one long tone rising in pitch
        env = np.minimum(t / rng.uniform(0.2, 0.8), 1.0)
        freq = f0 * (1 + rng.uniform(0.05, 0.2) * t / t[-1])
    breath = _filter(rng.standard_normal(n), sr, f0 * 0.8, f0 * 1.25)
    return env * (_tone(freq, n, sr, (1.0, 0.05)) + rng.uniform(0.05, 0.2) * breath)


def _alarm(rng: Rng, n: int, sr: int) -> np.ndarray:
    on, gap = rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.12)
    count, pause = rng.integers(2, 6), rng.uniform(0.2, 0.8)
    segments, start = [], rng.uniform(0, 0.2)
    while start < n / sr:
        for _ in range(count):
            segments.append((start, start + on))
            start += on + gap
        start += pause
    f = rng.uniform(2000, 4000)
    return _gate(n, sr, segments, 0.002) * _tone(f, n, sr, (1.0, 0.0, 0.3))


def _clock(rng: Rng, n: int, sr: int) -> np.ndarray:
    period = rng.uniform(0.25, 0.6)  # tick-to-tock spacing, s
    times = _regular_times(rng, period, n / sr, 0.01)
    f_tick, f_tock = rng.uniform(2500, 5000), rng.uniform(1500, 3000)
    tick = _resonator(rng, sr, [f_tick, 1.7 * f_tick], [0.003, 0.002])
    tock = _resonator(rng, sr, [f_tock, 1.6 * f_tock], [0.004, 0.002]) * rng.uniform(0.5, 1)
    return _place(n, sr, times[0::2], tick) + _place(n, sr, times[1::2], tock)


def _thunder(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    brown = np.cumsum(rng.standard_normal(n))
    rumble = _filter(brown, sr, 25, rng.uniform(150, 450))
    rumble /= np.abs(rumble).max() + 1e-9
    attack = rng.uniform(0.02, 0.4)
    env = np.minimum(t / attack, 1) * np.exp(-t / rng.uniform(0.8, 2.5))
    env *= np.exp(0.8 * _smooth_random(rng, 10, t, 3.0))  # rolls
    crack = _filter(rng.standard_normal(n), sr, 200, 4000) * _decay(n, sr, rng.uniform(0.05, 0.2))
    return env * rumble + rng.uniform(0.0, 0.5) * crack


def _drip(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    mean_gap = rng.uniform(0.2, 0.8)
    start = rng.uniform(0, mean_gap)
    f_lo = rng.uniform(500, 1500)
    while start < n / sr:
        m = int(rng.uniform(0.03, 0.08) * sr)
        a = int(start * sr)
        if a + m <= n:
            u = np.arange(m) / sr
            jitter = rng.uniform(0.85, 1.15)
            rise = 1 + rng.uniform(0.5, 2.0) * np.minimum(u / 0.03, 1)  # a bubble's upward chirp
            freq = f_lo * jitter * rise
            out[a:a + m] += _tone(freq, m, sr) * _decay(m, sr, rng.uniform(0.008, 0.03))
        start += mean_gap * rng.uniform(0.5, 1.5)
    return out


def _applause(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    rate = rng.uniform(15, 60) / 4
    out = sum(_place(n, sr, _poisson_times(rng, rate, duration),
                     _burst(rng, sr, rng.uniform(0.004, 0.012), low=rng.uniform(500, 1200),
                            high=rng.uniform(2000, 5000)))
              for _ in range(4))
    swell = np.minimum(t / rng.uniform(0.1, 0.5), 1) * np.minimum((t[-1] - t) / 0.5 + 0.2, 1)
    return out * swell


def _hum(rng: Rng, n: int, sr: int) -> np.ndarray:
    f0 = rng.choice([50.0, 60.0, 100.0, 120.0]) * rng.uniform(0.998, 1.002)
    phase = 2 * np.pi * f0 * np.arange(n) / sr
    x = np.tanh(rng.uniform(1, 6) * np.sin(phase)) + rng.uniform(0, 0.8) * np.abs(np.sin(phase))
    x = _filter(x - x.mean(), sr, 30, rng.uniform(400, 3000))
    return x * (1 + 0.05 * _smooth_random(rng, 6, np.arange(n) / sr, 1.0))


def _footsteps(rng: Rng, n: int, sr: int) -> np.ndarray:
    times = _regular_times(rng, rng.uniform(0.4, 0.7), n / sr, 0.04)
    heel = _mix(_burst(rng, sr, rng.uniform(0.01, 0.03), high=rng.uniform(300, 900)),
                _resonator(rng, sr, [rng.uniform(60, 140)], [0.02]))
    toe = _burst(rng, sr, 0.01, low=300, high=2500) * rng.uniform(0.2, 0.6)
    amps = rng.uniform(0.7, 1.0, len(times))
    out = _place(n, sr, times, heel, amps)
    out += _place(n, sr, times + rng.uniform(0.05, 0.12), toe, amps)
    if rng.random() < 0.5:  # gravel: a crunch with every step
        crunch = _filter(rng.standard_normal(int(0.12 * sr)), sr, 1500, 7000) * \
            rng.uniform(0.3, 1, int(0.12 * sr)) ** 4 * _decay(int(0.12 * sr), sr, 0.04, 0.01)
        out += _place(n, sr, times, crunch, amps) * rng.uniform(0.5, 1.0)
    return out


def _crickets(rng: Rng, n: int, sr: int) -> np.ndarray:
    out = np.zeros(n)
    t = np.arange(n) / sr
    for _ in range(rng.integers(1, 3)):
        carrier = rng.uniform(3500, 5500)
        pulse_rate, pulses = rng.uniform(25, 50), rng.integers(2, 6)
        chirp_period = max(rng.uniform(0.25, 0.7), 1.3 * pulses / pulse_rate)
        within = (t + rng.uniform(0, chirp_period)) % chirp_period
        env = (within < pulses / pulse_rate) * np.sin(np.pi * within * pulse_rate) ** 2
        out += rng.uniform(0.5, 1) * env * _tone(carrier, n, sr, (1.0, 0.1))
    return out


def _knock(rng: Rng, n: int, sr: int) -> np.ndarray:
    modes = [rng.uniform(120, 300), rng.uniform(350, 800), rng.uniform(1000, 2000)]
    hit = _resonator(rng, sr, modes, [rng.uniform(0.015, 0.04), 0.012, 0.005], [1.0, 0.6, 0.3])
    hit[:int(0.002 * sr)] += 0.5 * rng.standard_normal(int(0.002 * sr))
    times, start, spacing = [], rng.uniform(0, 0.3), rng.uniform(0.12, 0.25)
    while start < n / sr - 0.2:
        k = rng.integers(2, 6)
        times += list(start + spacing * np.arange(k) + rng.normal(0, 0.01, k))
        start += spacing * k + rng.uniform(0.6, 1.5)
    return _place(n, sr, np.array(times), hit, rng.uniform(0.7, 1.0, len(times)))


def _phone(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f1 = rng.uniform(700, 1100)
    f2 = f1 * rng.uniform(1.15, 1.35)
    if rng.random() < 0.5:  # warble between two tones
        freq = np.where(np.sin(2 * np.pi * rng.uniform(15, 25) * t) > 0, f1, f2)
        tone = _tone(np.convolve(freq, np.ones(16) / 16, mode="same"), n, sr, (1.0, 0.2))
    else:                   # two tones at once
        tone = _tone(f1, n, sr, (1.0, 0.2)) + _tone(f2, n, sr, (1.0, 0.2))
    if rng.random() < 0.5:  # double ring
        cadence = [(0.0, 0.4), (0.6, 1.0)], rng.uniform(2.2, 3.0)
    else:
        cadence = [(0.0, rng.uniform(0.8, 1.5))], rng.uniform(2.0, 3.0)
    segments = [(s + k * cadence[1], e + k * cadence[1]) for k in range(4) for s, e in cadence[0]]
    return _gate(n, sr, [(s - rng.uniform(0, 0.5), e) for s, e in segments], 0.01) * tone


def _horn(rng: Rng, n: int, sr: int) -> np.ndarray:
    f1 = rng.uniform(330, 520)
    f2 = f1 * rng.uniform(1.2, 1.3)
    drive = rng.uniform(2, 5)
    t = np.arange(n) / sr
    tone = np.tanh(drive * np.sin(2 * np.pi * f1 * t)) + np.tanh(drive * np.sin(2 * np.pi * f2 * t))
    blasts, start = [], rng.uniform(0, 0.2)
    for _ in range(rng.integers(1, 4)):
        stop = start + rng.uniform(0.15, 1.0)
        blasts.append((start, stop))
        start = stop + rng.uniform(0.1, 0.4)
    return _gate(n, sr, blasts, 0.01) * _filter(tone, sr, 150, rng.uniform(2500, 5000))


def _fire(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    times = _poisson_times(rng, rng.uniform(5, 25), duration)
    pops = _place(n, sr, times, _burst(rng, sr, rng.uniform(0.0005, 0.002), low=500),
                  np.minimum(rng.pareto(1.5, len(times)) + 0.2, 8.0))
    roar = _filter(rng.standard_normal(n), sr, 40, rng.uniform(300, 800))
    flicker = np.exp(0.5 * _smooth_random(rng, 12, t, 4.0))
    return pops + rng.uniform(0.05, 0.25) * roar * flicker


def _helicopter(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    slaps = _place(n, sr, _regular_times(rng, 1 / rng.uniform(8, 20), duration, 0.02),
                   _burst(rng, sr, rng.uniform(0.01, 0.03), low=60, high=rng.uniform(300, 1200)))
    whine = _tone(rng.uniform(1500, 3000), n, sr) * rng.uniform(0.02, 0.1)
    bed = _filter(rng.standard_normal(n), sr, 100, 3000) * rng.uniform(0.05, 0.15)
    if rng.random() < 0.5:  # passing by
        centre = rng.uniform(0.3, 0.7) * duration
        slaps *= np.exp(-((t - centre) / (0.4 * duration)) ** 2) + 0.2
    return slaps + whine + bed


@dataclass(frozen=True)
class SoundClass:
    """One class of the synthetic world.

    name: the class word (a frequent Freesound tag).
    concepts: 3-6 related tag words: the class's ground-truth concepts.
    phrases: ``(noun phrase, [verbs])`` pairs used by the caption templates;
        every concept word appears in at least one phrase.
    synth: ``(rng, n_samples, sample_rate) -> waveform`` of the event.
    min_seconds: shortest event that still sounds like the class.
    """

    name: str
    concepts: tuple[str, ...]
    phrases: tuple[tuple[str, tuple[str, ...]], ...]
    synth: Callable[[Rng, int, int], np.ndarray]
    min_seconds: float = 1.0


def _c(name: str, concepts: str, phrases: dict[str, str], synth,
       min_seconds: float = 1.0) -> SoundClass:
    """Compact constructor: ``concepts`` space-separated, verbs ``|``-separated."""
    return SoundClass(name, tuple(concepts.split()),
                      tuple((noun, tuple(verbs.split("|"))) for noun, verbs in phrases.items()),
                      synth, min_seconds)


_SOUND_CLASSES = [
    _c("siren", "ambulance police emergency firetruck",
       {"a siren": "wails|blares|sounds", "an ambulance siren": "wails|passes",
        "a police siren": "wails|blares", "an emergency siren": "sounds|wails",
        "a firetruck siren": "blares", "a police siren on the road": "wails"}, _siren, 1.5),
    _c("bell", "church chime ding dong",
       {"a bell": "rings|chimes", "a church bell": "rings|tolls", "a bell chime": "rings",
        "a bell going ding dong": "rings", "a church chime": "sounds"}, _bell),
    _c("rain", "rainfall drizzle raindrops downpour rainy",
       {"rain": "falls|patters", "rainfall": "patters|continues", "a light drizzle": "falls",
        "raindrops": "fall|patter", "a heavy downpour": "pours down",
        "rain on a rainy day": "falls"}, _rain),
    _c("wind", "breeze gust blowing windy howling gale",
       {"wind": "blows|howls|whooshes", "a breeze": "blows", "a gust of wind": "blows|rushes past",
        "a windy gale": "howls|roars", "howling wind": "blows",
        "the blowing wind": "rises and falls"},
       _wind, 1.5),
    _c("engine", "motor idle diesel revving vehicle",
       {"an engine": "runs|rumbles|idles", "a motor": "runs|hums along",
        "a diesel engine": "idles|rumbles", "an idle engine": "rumbles",
        "a revving engine": "roars", "a vehicle engine": "runs"}, _engine),
    _c("birds", "birdsong tweet songbird sparrow",
       {"birds": "sing|chirp|tweet", "birdsong": "fills the air", "a songbird": "sings",
        "a sparrow": "chirps|tweets", "the tweet of a bird": "repeats", "small birds": "chirp"},
       _birds),
    _c("whistle", "kettle sport steam",
       {"a whistle": "blows|shrills", "a sport whistle": "blows", "a referee whistle": "blows",
        "a kettle": "whistles", "a whistling kettle": "sings", "a steam whistle": "blows"},
       _whistle),
    _c("alarm", "beep alert warning",
       {"an alarm": "beeps|goes off|rings", "an alarm beep": "repeats",
        "a beeping alarm": "goes off",
        "an alert": "beeps", "a warning alarm": "beeps", "a warning beep": "repeats"}, _alarm),
    _c("clock", "ticking mechanical time",
       {"a clock": "ticks|ticks steadily", "a ticking clock": "keeps time",
        "a mechanical clock": "ticks",
        "the tick of a clock": "repeats", "the ticking": "continues",
        "a clock marking time": "ticks"}, _clock, 1.5),
    _c("thunder", "lightning thunderstorm storm boom rumble",
       {"thunder": "rumbles|roars|cracks", "a thunderstorm": "rumbles", "a storm": "rumbles|roars",
        "a boom of thunder": "rolls", "a rumble of thunder": "rolls",
        "thunder after lightning": "rumbles"},
       _thunder, 2.0),
    _c("drip", "drops droplet leak faucet",
       {"a drip": "falls|plops", "water drops": "fall|plop", "a droplet": "falls",
        "a leak": "drips", "a faucet": "drips", "water dripping from a leak": "echoes",
        "a dripping faucet": "plops"}, _drip),
    _c("applause", "clap audience cheer concert",
       {"applause": "rises|fills the room", "an audience": "claps|applauds",
        "a concert audience": "claps|applauds", "a cheer and applause": "erupts",
        "the clap of hands": "continues", "a clapping audience": "cheers"}, _applause),
    _c("hum", "buzz electricity electrical power",
       {"a hum": "drones|continues", "an electrical hum": "drones", "a buzz": "drones",
        "an electrical buzz": "continues", "a power hum": "drones", "electricity": "hums|buzzes"},
       _hum),
    _c("footsteps", "walking steps shoes feet",
       {"footsteps": "approach|pass by|walk along", "steps": "approach|pass by",
        "someone walking": "passes by", "shoes": "tap along", "feet": "walk along",
        "walking footsteps": "continue"}, _footsteps, 1.5),
    _c("crickets", "insects night summer",
       {"crickets": "chirp|sing", "insects": "chirp|sing", "night crickets": "chirp",
        "summer crickets": "sing", "insects at night": "chirp"}, _crickets),
    _c("knock", "door wooden hit",
       {"a knock": "sounds|comes from the door", "someone knocking on a door": "waits",
        "a knock on a wooden door": "sounds", "a wooden knock": "repeats",
        "a hit on a door": "sounds"}, _knock),
    _c("phone", "telephone ring cellphone call",
       {"a phone": "rings", "a telephone": "rings", "a phone ring": "repeats",
        "a cellphone": "rings|buzzes", "a phone call": "rings", "a ringing telephone": "waits"},
       _phone),
    _c("horn", "honk traffic car",
       {"a horn": "honks|blares|sounds", "a car horn": "honks|blares", "a honk": "sounds",
        "a horn in traffic": "honks", "a car horn in traffic": "blares"}, _horn),
    _c("fire", "crackle fireplace burning flame",
       {"a fire": "crackles|burns|pops", "a crackling fire": "burns", "a fireplace": "crackles",
        "burning wood": "crackles", "a burning flame": "crackles",
        "the crackle of a fire": "continues"},
       _fire),
    _c("helicopter", "aircraft chopper flight military",
       {"a helicopter": "flies over|hovers|passes", "a flying helicopter": "passes",
        "a chopper": "flies over", "an aircraft": "flies over", "a military helicopter": "hovers",
        "a helicopter flight": "passes"}, _helicopter, 1.5),
]

#: the sound classes, index -> name
CLASSES: list[str] = [c.name for c in _SOUND_CLASSES]
#: class name -> its ground-truth concept words (descriptors)
CONCEPTS: dict[str, list[str]] = {c.name: list(c.concepts) for c in _SOUND_CLASSES}
_BY_NAME = {c.name: c for c in _SOUND_CLASSES}


def sound_class(name: str) -> SoundClass:
    """The :class:`SoundClass` called ``name``; a clear error lists the valid names."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown sound class {name!r}; classes: {', '.join(CLASSES)}")
    return _BY_NAME[name]


# ---------------------------------------------------------------------------------
# Events, stems and mixtures
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One sound event of a clip or scene: enough to re-create its stem exactly.

    label: class name; onset/offset: seconds from the clip start; gain_db: level in
    dB relative to the reference level (see :func:`render_event`); seed: the
    synthesiser's seed (all its random parameters are drawn from it).
    """

    label: str
    onset: float
    offset: float
    gain_db: float
    seed: int

    @property
    def duration(self) -> float:
        return self.offset - self.onset


@dataclass(frozen=True)
class Recipe:
    """Everything needed to re-create a clip: its events and its background noise."""

    events: tuple[Event, ...]
    background_seed: int
    background_db: float  # RMS of the background noise, dBFS


def render_event(event: Event, n_samples: int = CLIP_SAMPLES,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The event's stem: float32 ``(n_samples,)``, silent outside [onset, offset).

    Its level is ``gain_db`` relative to the reference (RMS -26 dBFS, peaks at most
    -6 dBFS, whichever is reached first), with 10 ms fades at both ends.
    """
    rng = np.random.default_rng(event.seed)
    start = int(round(event.onset * sample_rate))
    stop = min(int(round(event.offset * sample_rate)), n_samples)
    x = sound_class(event.label).synth(rng, stop - start, sample_rate)
    rms, peak = np.sqrt(np.mean(x ** 2)) + 1e-12, np.abs(x).max() + 1e-12
    x = x * min(_EVENT_RMS / rms, _EVENT_PEAK / peak) * 10 ** (event.gain_db / 20)
    ramp = min(int(0.01 * sample_rate), len(x) // 2)
    fade = np.linspace(0, 1, ramp)
    x[:ramp] *= fade
    x[len(x) - ramp:] *= fade[::-1]
    out = np.zeros(n_samples, dtype=np.float32)
    out[start:stop] = x
    return out


def render_background(seed: int, level_db: float, n_samples: int = CLIP_SAMPLES,
                      sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Faint pink room noise, float32 ``(n_samples,)`` with RMS ``level_db`` dBFS."""
    rng = np.random.default_rng(seed)
    x = _shaped_noise(rng, n_samples, sample_rate, lambda f, t: 1 / np.sqrt(np.maximum(f, 40)))
    return (x * 10 ** (level_db / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def render_stems(recipe: Recipe, n_samples: int = CLIP_SAMPLES,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(E + 1, n_samples)`` float32: one stem per event, then the background."""
    stems = [render_event(e, n_samples, sample_rate) for e in recipe.events]
    stems.append(render_background(recipe.background_seed, recipe.background_db, n_samples,
                                   sample_rate))
    return np.stack(stems)


def render(recipe: Recipe, n_samples: int = CLIP_SAMPLES,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The mixture of a recipe: float32 ``(n_samples,)``."""
    return render_stems(recipe, n_samples, sample_rate).sum(axis=0)


class _RecipeLoader:
    """``loader(i) -> waveform`` of a :class:`ClipSet`/:class:`SceneSet`, keeping the recipes."""

    def __init__(self, recipes: list[Recipe]):
        self.recipes = recipes

    def __call__(self, i: int) -> np.ndarray:
        return render(self.recipes[i])


# ---------------------------------------------------------------------------------
# Random recipes
# ---------------------------------------------------------------------------------
def _item_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer ``keys`` (stream, dataset seed, item...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint32)
               .view(np.uint64)[0] >> np.uint64(1))


def _random_event(rng: Rng, label: str, min_seconds: float, max_seconds: float = CLIP_SECONDS,
                  gain_db: tuple[float, float] = (-6.0, 0.0)) -> Event:
    low = max(min_seconds, sound_class(label).min_seconds)
    duration = round(float(rng.uniform(low, max(low, max_seconds))), 3)
    onset = round(float(rng.uniform(0, CLIP_SECONDS - duration)), 3)
    return Event(label, onset, round(onset + duration, 3), round(float(rng.uniform(*gain_db)), 2),
                 int(rng.integers(2 ** 62)))


def _with_background(rng: Rng, events: list[Event]) -> Recipe:
    return Recipe(tuple(events), int(rng.integers(2 ** 62)), round(float(rng.uniform(-65, -50)), 2))


def clip_recipe(label: str, seed: int) -> Recipe:
    """A single-event clip of class ``label``: one event of 2-5 s over faint background noise."""
    rng = np.random.default_rng(seed)
    return _with_background(rng, [_random_event(rng, label, 2.0)])


def scene_recipe(seed: int, min_events: int = 1, max_events: int = 3) -> Recipe:
    """A scene of ``min_events``..``max_events`` events of distinct classes, 1.5-5 s each."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(min_events, max_events + 1))
    labels = rng.choice(CLASSES, size=k, replace=False)
    return _with_background(rng, [_random_event(rng, str(lab), 1.5, gain_db=(-8.0, 0.0))
                             for lab in labels])


def training_clip(index: int, label: str) -> Recipe:
    """The ``index``-th training clip of ``label`` (a seed stream held-out sets never use)."""
    return clip_recipe(label, _item_seed(_TRAIN_CLIPS, index, CLASSES.index(label)))


def training_scene(index: int, min_events: int = 1, max_events: int = 3) -> Recipe:
    """The ``index``-th training scene (a seed stream held-out sets never use)."""
    return scene_recipe(_item_seed(_TRAIN_SCENES, index), min_events, max_events)


# ---------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------
def _phrase(rng: Rng, label: str) -> tuple[str, str]:
    """A random (noun phrase, verb) of the class."""
    phrases = sound_class(label).phrases
    noun, verbs = phrases[rng.integers(len(phrases))]
    return noun, verbs[rng.integers(len(verbs))]


_TEMPLATES: dict[int, list[str]] = {
    1: ["{n0} {v0}", "the sound of {n0}", "{n0} can be heard", "{n0} {v0} nearby",
        "{n0} {v0} in an empty room", "a recording of {n0}"],
    2: ["{n0} {v0} over {n1}", "{n0} {v0} while {n1} {v1}", "{n0} and {n1}",
        "{n0} {v0} as {n1} {v1} in the background", "the sound of {n0} with {n1}",
        "{n0} {v0} and {n1} can be heard"],
    3: ["{n0}, {n1} and {n2}", "{n0} {v0} while {n1} and {n2} can be heard",
        "{n0} {v0} over {n1} as {n2} {v2}", "{n0} {v0}; {n1} and {n2} in the background",
        "the sound of {n0}, {n1} and {n2}"],
}


def caption(events: list[Event] | tuple[Event, ...], rng: Rng) -> str:
    """A caption naming every event, loudest first ("A siren wails over rain.")."""
    if not 1 <= len(events) <= 3:
        raise ValueError(f"captions are written for 1-3 events, got {len(events)}")
    ordered = sorted(events, key=lambda e: -e.gain_db)
    words = {}
    for k, e in enumerate(ordered):
        words[f"n{k}"], words[f"v{k}"] = _phrase(rng, e.label)
    templates = _TEMPLATES[len(events)]
    text = templates[rng.integers(len(templates))].format(**words)
    return text[0].upper() + text[1:] + "."


def tags(label: str, rng: Rng, max_words: int = 4) -> str:
    """Freesound-style tags of a class: its name and/or some concept words, shuffled."""
    words = [label, *CONCEPTS[label]]
    k = int(rng.integers(1, max_words + 1))
    return " ".join(rng.choice(words, size=min(k, len(words)), replace=False))


# ---------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------
def load_synthetic_clips(n_per_class: int = 40, seed: int = 0,
                         classes: list[str] | None = None) -> ClipSet:
    """Single-event clips laid out like ESC-50: ``n_per_class`` per class, 5 folds.

    Clip k of a class is in fold ``k % 5 + 1``. Audio (float32, 16 kHz, 5 s) is
    synthesised when ``clips.audio(i)`` is called.

    Args:
        n_per_class: clips per class (ESC-50 has 40).
        seed: dataset seed; different seeds give different clips.
        classes: a subset of :data:`CLASSES` (default: all, in that order).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    _check_seed(seed)
    classes = list(CLASSES if classes is None else classes)
    for name in classes:
        sound_class(name)
    recipes, ids, labels, folds = [], [], [], []
    for c, name in enumerate(classes):
        for k in range(n_per_class):
            recipes.append(clip_recipe(name, _item_seed(_CLIPS, seed, CLASSES.index(name), k)))
            ids.append(f"synth-v{VERSION}-{seed}-{name}-{k:03d}")
            labels.append(c)
            folds.append(k % 5 + 1)
    return ClipSet(name=f"synthetic-clips-v{VERSION}-{seed}", clip_ids=ids, labels=np.array(labels),
                   folds=np.array(folds), class_names=classes, sample_rate=SAMPLE_RATE,
                   loader=_RecipeLoader(recipes))


def load_synthetic_scenes(n: int = 200, seed: int = 0, min_events: int = 1,
                          max_events: int = 3, n_captions: int = 2) -> SceneSet:
    """Scenes of ``min_events``..``max_events`` overlapping events, with captions and
    ground truth (``scenes.events[i]``: list of :class:`Event`).

    Audio is synthesised when ``scenes.audio(i)`` is called; :func:`event_masks`
    gives the per-event time-frequency masks.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    _check_seed(seed)
    if not 1 <= min_events <= max_events <= 3:
        raise ValueError(f"need 1 <= min_events <= max_events <= 3, got {min_events}, {max_events}")
    recipes, captions = [], []
    for i in range(n):
        item = _item_seed(_SCENES, seed, i)
        recipe = scene_recipe(item, min_events, max_events)
        recipes.append(recipe)
        captions.append(_distinct_captions(recipe.events, np.random.default_rng([item, 1]),
                                           n_captions))
    name = f"synthetic-scenes-v{VERSION}-{seed}-{min_events}to{max_events}"
    return SceneSet(name=name, clip_ids=[f"{name}-{i:04d}" for i in range(n)], captions=captions,
                    sample_rate=SAMPLE_RATE, loader=_RecipeLoader(recipes),
                    events=[list(r.events) for r in recipes])


def _check_seed(seed: int) -> None:
    """Refuse a seed numpy cannot take, naming it: seeds are integers >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}; pick another seed "
                         "(each seed gives a different synthetic set)")


def _distinct_captions(events: tuple[Event, ...], rng: Rng, n: int) -> list[str]:
    out: list[str] = []
    for _ in range(20 * n):
        text = caption(events, rng)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def recipe_of(data: ClipSet | SceneSet, i: int) -> Recipe:
    """The recipe of item ``i`` of a synthetic clip or scene set (subsets included)."""
    loader = data.loader
    if not isinstance(loader, _RecipeLoader):
        raise TypeError(f"{data.name!r} is not a synthetic set from clapnb.synth; ground truth "
                        "exists only for load_synthetic_clips / load_synthetic_scenes")
    return loader.recipes[int(data.index[i]) if data.index is not None else int(i)]


def event_masks(data: ClipSet | SceneSet, i: int, stft_config: StftConfig,
                floor_db: float = -60.0) -> np.ndarray:
    """Where each event of item ``i`` dominates, on the STFT grid of ``stft_config``.

    An event dominates a time-frequency bin when its stem's magnitude exceeds the
    summed magnitudes of all other stems (the other events and the background)
    and is above a floor ``floor_db`` below the mixture's loudest bin.

    Args:
        stft_config: the model's STFT; it is applied to the 16 kHz stems
            (TinyCLAP's rate), giving the grid of ``model.spectrogram(audio)``.

    Returns:
        bool ``(E, F, T)`` with E events in ``recipe_of(data, i).events`` order;
        masks of different events never overlap.
    """
    stems = render_stems(recipe_of(data, i))
    mags = stft_config.stft(torch.from_numpy(stems)).abs().numpy()
    mix = stft_config.stft(torch.from_numpy(stems.sum(axis=0))[None]).abs().numpy()[0]
    floor = mix.max() * 10 ** (floor_db / 20)
    total = mags.sum(axis=0)
    events = mags[:-1]
    return (events > total - events) & (events > floor)
