"""Procedural sound generators: the building blocks of the synthetic world.

Every generator has the signature ``(rng, n_samples, sample_rate) -> waveform``
(float arrays of ``n_samples``) and draws all its random parameters from ``rng``,
so a seed re-creates a sound exactly. :mod:`clapnb.synth` names them as classes,
levels them and mixes them into clips and scenes.

Generators of one *family* share a mechanism and differ in parameter ranges
(alarm / beep / phone are gated tones; rain / shower / waterfall / steam are
shaped noise; knock / hammer / typing are struck resonators), so a model can
confuse them as real models confuse real classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import fft, signal

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


def _smooth(x: np.ndarray, k: int) -> np.ndarray:
    """Moving average of ``x`` over ``k`` samples (centred, by cumulative sums)."""
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    pad = np.pad(c, (k // 2, k - k // 2), mode="edge")
    return (pad[k:] - pad[:-k])[:len(x)] / k


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
# Sound generators: (rng, n samples, sample rate) -> waveform, one per class
# ---------------------------------------------------------------------------------
def siren(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def bell(rng: Rng, n: int, sr: int) -> np.ndarray:
    f0 = rng.uniform(250, 900)
    ratios = np.array([0.5, 1.0, 1.19, 1.5, 2.0, 2.52, 2.66, 3.01]) * rng.uniform(0.99, 1.01, 8)
    amps = [0.4, 1.0, 0.6, 0.4, 0.6, 0.25, 0.2, 0.15] * rng.uniform(0.5, 1.0, 8)
    length = rng.uniform(1.5, 3.5)
    strike = _resonator(rng, sr, list(f0 * ratios), list(length / ratios ** 0.7 / 3), list(amps),
                        max_seconds=n / sr)
    strike[:int(0.005 * sr)] += 0.3 * rng.standard_normal(int(0.005 * sr))
    times = np.arange(rng.uniform(0, 0.2), n / sr, rng.uniform(0.6, 1.6))[:rng.integers(1, 5)]
    return _place(n, sr, times, strike)


def rain(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def wind(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def engine(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    fire = rng.uniform(25, 90)  # firing rate, Hz
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


def birds(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def whistle(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = rng.uniform(1800, 3500)
    blasts, start = [], rng.uniform(0, 0.2)
    for _ in range(rng.integers(1, 4)):
        stop = start + rng.uniform(0.3, 1.2)
        blasts.append((start, stop))
        start = stop + rng.uniform(0.15, 0.5)
    env = _gate(n, sr, blasts, 0.01)
    trill = rng.uniform(0.0, 0.05)  # a pea whistle's rattle; 0 is a plain whistle
    freq = f0 * (1 + trill * np.sign(np.sin(2 * np.pi * rng.uniform(20, 40) * t)))
    freq = np.convolve(freq, np.ones(40) / 40, mode="same")
    breath = _filter(rng.standard_normal(n), sr, f0 * 0.8, f0 * 1.25)
    return env * (_tone(freq, n, sr, (1.0, 0.05)) + rng.uniform(0.05, 0.2) * breath)


def alarm(rng: Rng, n: int, sr: int) -> np.ndarray:
    on, gap = rng.uniform(0.05, 0.15), rng.uniform(0.05, 0.12)
    count, pause = rng.integers(1, 6), rng.uniform(0.2, 0.8)
    segments, start = [], rng.uniform(0, 0.2)
    while start < n / sr:
        for _ in range(count):
            segments.append((start, start + on))
            start += on + gap
        start += pause
    f = rng.uniform(1000, 4000)
    return _gate(n, sr, segments, 0.002) * _tone(f, n, sr, (1.0, 0.0, 0.3))


def clock(rng: Rng, n: int, sr: int) -> np.ndarray:
    period = rng.uniform(0.25, 0.6)  # tick-to-tock spacing, s
    times = _regular_times(rng, period, n / sr, 0.01)
    f_tick, f_tock = rng.uniform(2500, 5000), rng.uniform(1500, 3000)
    tick = _resonator(rng, sr, [f_tick, 1.7 * f_tick], [0.003, 0.002])
    tock = _resonator(rng, sr, [f_tock, 1.6 * f_tock], [0.004, 0.002]) * rng.uniform(0.5, 1)
    return _place(n, sr, times[0::2], tick) + _place(n, sr, times[1::2], tock)


def thunder(rng: Rng, n: int, sr: int) -> np.ndarray:
    t = np.arange(n) / sr
    brown = np.cumsum(rng.standard_normal(n))
    rumble = _filter(brown, sr, 25, rng.uniform(150, 450))
    rumble /= np.abs(rumble).max() + 1e-9
    attack = rng.uniform(0.02, 0.4)
    env = np.minimum(t / attack, 1) * np.exp(-t / rng.uniform(0.8, 2.5))
    env *= np.exp(0.8 * _smooth_random(rng, 10, t, 3.0))  # rolls
    crack = _filter(rng.standard_normal(n), sr, 200, 4000) * _decay(n, sr, rng.uniform(0.05, 0.2))
    return env * rumble + rng.uniform(0.0, 0.5) * crack


def drip(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def applause(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    rate = rng.uniform(15, 60) / 4
    out = sum(_place(n, sr, _poisson_times(rng, rate, duration),
                     _burst(rng, sr, rng.uniform(0.004, 0.012), low=rng.uniform(500, 1200),
                            high=rng.uniform(2000, 5000)))
              for _ in range(4))
    swell = np.minimum(t / rng.uniform(0.1, 0.5), 1) * np.minimum((t[-1] - t) / 0.5 + 0.2, 1)
    return out * swell


def hum(rng: Rng, n: int, sr: int) -> np.ndarray:
    f0 = rng.choice([50.0, 60.0, 100.0, 120.0]) * rng.uniform(0.998, 1.002)
    phase = 2 * np.pi * f0 * np.arange(n) / sr
    x = np.tanh(rng.uniform(1, 6) * np.sin(phase)) + rng.uniform(0, 0.8) * np.abs(np.sin(phase))
    x = _filter(x - x.mean(), sr, 30, rng.uniform(400, 3000))
    return x * (1 + 0.05 * _smooth_random(rng, 6, np.arange(n) / sr, 1.0))


def footsteps(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def crickets(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def knock(rng: Rng, n: int, sr: int) -> np.ndarray:
    modes = [rng.uniform(120, 300), rng.uniform(350, 800), rng.uniform(1000, 2000)]
    hit = _resonator(rng, sr, modes, [rng.uniform(0.015, 0.04), 0.012, 0.005], [1.0, 0.6, 0.3])
    hit[:int(0.002 * sr)] += 0.5 * rng.standard_normal(int(0.002 * sr))
    times, start, spacing = [], rng.uniform(0, 0.3), rng.uniform(0.12, 0.25)
    while start < n / sr - 0.2:
        k = rng.integers(2, 6)
        times += list(start + spacing * np.arange(k) + rng.normal(0, 0.01, k))
        start += spacing * k + rng.uniform(0.6, 1.5)
    return _place(n, sr, np.array(times), hit, rng.uniform(0.7, 1.0, len(times)))


def phone(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def horn(rng: Rng, n: int, sr: int) -> np.ndarray:
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


def fire(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    times = _poisson_times(rng, rng.uniform(5, 25), duration)
    pops = _place(n, sr, times, _burst(rng, sr, rng.uniform(0.0005, 0.002), low=500),
                  np.minimum(rng.pareto(1.5, len(times)) + 0.2, 8.0))
    roar = _filter(rng.standard_normal(n), sr, 40, rng.uniform(300, 800))
    flicker = np.exp(0.5 * _smooth_random(rng, 12, t, 4.0))
    return pops + rng.uniform(0.05, 0.25) * roar * flicker


def helicopter(rng: Rng, n: int, sr: int) -> np.ndarray:
    duration, t = n / sr, np.arange(n) / sr
    slaps = _place(n, sr, _regular_times(rng, 1 / rng.uniform(8, 20), duration, 0.02),
                   _burst(rng, sr, rng.uniform(0.01, 0.03), low=60, high=rng.uniform(300, 1200)))
    whine = _tone(rng.uniform(1500, 3000), n, sr) * rng.uniform(0.02, 0.1)
    bed = _filter(rng.standard_normal(n), sr, 100, 3000) * rng.uniform(0.05, 0.15)
    if rng.random() < 0.5:  # passing by
        centre = rng.uniform(0.3, 0.7) * duration
        slaps *= np.exp(-((t - centre) / (0.4 * duration)) ** 2) + 0.2
    return slaps + whine + bed


# -- tonal signals: confusable with alarm, phone, whistle, bell ---------------------
def beep(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Single pure beeps of 0.1-0.5 s at a steady period (a microwave, a reversing truck)."""
    on = rng.uniform(0.08, 0.5)
    times = _regular_times(rng, on + rng.uniform(0.2, 1.0), n / sr, 0.0)
    return _gate(n, sr, [(s, s + on) for s in times], 0.003) * \
        _tone(rng.uniform(700, 3000), n, sr, (1.0, rng.uniform(0, 0.3)))


def chime(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Wind chimes: irregular strikes of 4-6 tuned tubes (1-4 kHz) ringing for 0.5-2 s."""
    tubes = rng.uniform(1000, 4000, rng.integers(4, 7))
    out = np.zeros(n)
    for when in _poisson_times(rng, rng.uniform(2, 6), n / sr):
        f = tubes[rng.integers(len(tubes))]
        ring = _resonator(rng, sr, [f, 2.76 * f], [rng.uniform(0.1, 0.35), 0.05], [1.0, 0.3])
        a = int(when * sr)
        m = min(len(ring), n - a)
        out[a:a + m] += rng.uniform(0.3, 1.0) * ring[:m]
    return out


def doorbell(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. Ding-dong: two struck bars a third apart, once or twice."""
    f = rng.uniform(600, 1000)
    ding = _resonator(rng, sr, [f, 3.9 * f], [rng.uniform(0.3, 0.6), 0.05], [1.0, 0.2])
    dong = _resonator(rng, sr, [f / 1.26, 3.9 * f / 1.26], [rng.uniform(0.5, 0.9), 0.05],
                      [1.0, 0.2])
    gap = rng.uniform(0.35, 0.6)
    starts = np.arange(rng.uniform(0, 0.3), n / sr - 0.5, rng.uniform(1.8, 2.6))[:2]
    return _place(n, sr, starts, ding) + _place(n, sr, starts + gap, dong)


def kettle(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. A long whistle rising in pitch over the rumble of boiling water."""
    t = np.arange(n) / sr
    f0 = rng.uniform(1500, 3000)
    env = np.minimum(t / rng.uniform(0.3, 1.0), 1.0)
    freq = f0 * (1 + rng.uniform(0.1, 0.3) * t / t[-1])
    breath = _filter(rng.standard_normal(n), sr, f0 * 0.8, f0 * 1.4)
    return env * (_tone(freq, n, sr, (1.0, 0.1)) + 0.3 * breath) + 0.3 * boiling(rng, n, sr)


# -- shaped noise: confusable with rain, wind, fire ---------------------------------
def _bubbles(rng: Rng, n: int, sr: int, rate: tuple[float, float], length: tuple[float, float],
             pitch: tuple[float, float], rise: tuple[float, float], level: tuple[float, float],
             tau: float) -> np.ndarray:
    """Bubbles at a random Poisson ``rate`` (per s): each a tone of ``length`` s starting at
    ``pitch`` Hz and gliding up by a factor 1 + ``rise``, decaying with time constant ``tau``."""
    out = np.zeros(n)
    for when in _poisson_times(rng, rng.uniform(*rate), n / sr):
        m = int(rng.uniform(*length) * sr)
        a = int(when * sr)
        if a + m <= n:
            f = rng.uniform(*pitch) * (1 + np.linspace(0, rng.uniform(*rise), m))
            out[a:a + m] += rng.uniform(*level) * _tone(f, m, sr) * _decay(m, sr, tau)
    return out


def stream(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A babbling brook: dense small bubbles (300-1500 Hz chirps) over low rushing water."""
    out = _bubbles(rng, n, sr, (30, 80), (0.01, 0.04), (300, 1500), (0.2, 1.0), (0.2, 1.0), 0.008)
    rush = _filter(rng.standard_normal(n), sr, 100, rng.uniform(600, 1500))
    return out + rng.uniform(0.1, 0.3) * rush


def waterfall(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Steady broadband roar, slightly brighter than pink noise, with a slow surge."""
    tilt = rng.uniform(0.2, 0.6)
    surge = rng.uniform(0.1, 0.4)
    knots = rng.uniform(-1, 1, 4)

    def gain(f: np.ndarray, t: np.ndarray) -> np.ndarray:
        u = t / max(t[-1, 0], 1e-3) * 3
        return (np.maximum(f, 80) / 1000) ** (-tilt) * (1 + surge * np.interp(u, range(4), knots))

    return _shaped_noise(rng, n, sr, gain)


def shower(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Spray above 1 kHz plus splashes: water hitting a tiled floor."""
    spray = _filter(rng.standard_normal(n), sr, rng.uniform(800, 2000), 7500, order=3)
    splash = _place(n, sr, _poisson_times(rng, rng.uniform(20, 60), n / sr),
                    _burst(rng, sr, 0.003, low=1000, high=6000))
    return spray + rng.uniform(0.5, 2.0) * splash


def waves(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Surf: noise swelling and receding every 3-7 s, brighter at each crest."""
    period, phase = rng.uniform(3, 7), rng.uniform(0, 2 * np.pi)

    def gain(f: np.ndarray, t: np.ndarray) -> np.ndarray:
        swell = 0.5 - 0.5 * np.cos(2 * np.pi * t / period + phase)
        cutoff = 300 + 2500 * swell
        return (0.05 + swell ** 2) / (1 + (f / cutoff) ** 2)

    return _shaped_noise(rng, n, sr, gain)


def steam(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Hiss: high-pass noise above 2-4 kHz, in one or two releases of pressure."""
    hiss = _filter(rng.standard_normal(n), sr, rng.uniform(2000, 4000), order=4)
    segments, start = [], rng.uniform(0, 0.5)
    for _ in range(rng.integers(1, 3)):
        stop = start + rng.uniform(1.0, 3.0)
        segments.append((start, stop))
        start = stop + rng.uniform(0.3, 1.0)
    return _gate(n, sr, segments, 0.05) * hiss


def boiling(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A pot on the stove: low bubbles (150-600 Hz) bursting over a soft rumble."""
    out = _bubbles(rng, n, sr, (15, 40), (0.02, 0.06), (150, 600), (0.5, 2.0), (0.3, 1.0), 0.015)
    return out + 0.1 * _filter(rng.standard_normal(n), sr, 50, 500)


def hail(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. Rain with hard bright impacts of ice (2-6 kHz clicks) on a roof."""
    times = _poisson_times(rng, rng.uniform(40, 120), n / sr)
    stone = _resonator(rng, sr, [rng.uniform(2000, 4000), rng.uniform(4000, 6000)],
                       [0.004, 0.002])
    stones = _place(n, sr, times, stone, np.minimum(rng.pareto(2.0, len(times)) + 0.3, 4.0))
    return 0.5 * rain(rng, n, sr) + 3 * stones


# -- machines: confusable with engine, hum, helicopter ------------------------------
def motorcycle(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A two-stroke: fast firing (60-150 Hz) with a raspy exhaust, revving."""
    t = np.arange(n) / sr
    fire = rng.uniform(50, 150)
    freq = fire * (1 + rng.uniform(0.3, 1.0) * np.abs(_smooth_random(rng, 6, t, 1.5)))
    phase = np.cumsum(freq) / sr
    pulses = np.exp(-(phase % 1.0) / rng.uniform(0.05, 0.15))
    rasp = _filter(rng.standard_normal(n), sr, 500, 4000) * pulses
    return _filter(pulses - pulses.mean(), sr, 40, 3000) + rng.uniform(0.3, 0.8) * rasp


def drill(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A power drill: a whining motor (150-500 Hz, many harmonics) in bursts, with grinding."""
    t = np.arange(n) / sr
    f0 = rng.uniform(150, 500)
    segments, start = [], rng.uniform(0, 0.3)
    while start < n / sr:
        stop = start + rng.uniform(0.5, 2.0)
        segments.append((start, stop))
        start = stop + rng.uniform(0.2, 0.8)
    env = _gate(n, sr, segments, 0.08)
    freq = f0 * (0.7 + 0.3 * _smooth(env, 4000))
    whine = _tone(freq, n, sr, (1.0, 0.7, 0.5, 0.4, 0.3, 0.2))
    grind = _filter(rng.standard_normal(n), sr, 1000, 5000) * rng.uniform(0.1, 0.5)
    return env * (whine + grind * (1 + np.sin(2 * np.pi * 7 * t)))


def fan(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Ventilation: steady low broadband air noise and a weak blade-pass tone (40-200 Hz)."""
    air = _filter(rng.standard_normal(n), sr, 60, rng.uniform(800, 2500))
    blade = _tone(rng.uniform(40, 200), n, sr, (1.0, 0.5, 0.25))
    return air + rng.uniform(0.05, 0.3) * blade


def train(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Rolling stock: a low rumble and wheel clatter, two clicks every 0.4-1.0 s."""
    period = rng.uniform(0.4, 1.0)
    times = _regular_times(rng, period, n / sr, 0.02)
    click = _mix(_burst(rng, sr, 0.01, low=200, high=2500),
                 _resonator(rng, sr, [rng.uniform(1500, 3000)], [0.01], [0.3]))
    gap = rng.uniform(0.08, 0.15)
    clatter = _place(n, sr, times, click) + _place(n, sr, times + gap, click)
    rumble = _filter(rng.standard_normal(n), sr, 30, rng.uniform(300, 700))
    return rng.uniform(0.5, 1.5) * clatter + rumble


def jet(rng: Rng, n: int, sr: int) -> np.ndarray:
    """An aircraft passing over: broadband roar that rises and fades, with a turbine whine."""
    t = np.arange(n) / sr
    centre = rng.uniform(0.3, 0.8) * t[-1]
    level = np.exp(-((t - centre) / rng.uniform(1.0, 2.5)) ** 2) + 0.1
    roar = _filter(rng.standard_normal(n), sr, 50, rng.uniform(1500, 4000))
    whine = _tone(rng.uniform(2000, 5000) * (1 - 0.05 * (t - centre) / t[-1]), n, sr)
    return level * (roar + rng.uniform(0.02, 0.1) * whine)


def chainsaw(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. A motorcycle-like engine with a drill's buzzing chain, revved in bursts."""
    return motorcycle(rng, n, sr) + 0.6 * drill(rng, n, sr)


# -- impacts: confusable with knock, clock, footsteps --------------------------------
def hammer(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Metal struck at a steady pace: a ringing clang (1-3 kHz modes) with each blow."""
    f = rng.uniform(1000, 3000)
    clang = _resonator(rng, sr, [f, 2.3 * f, 3.7 * f], [rng.uniform(0.05, 0.2), 0.05, 0.02])
    clang[:int(0.002 * sr)] += rng.standard_normal(int(0.002 * sr))
    times = _regular_times(rng, rng.uniform(0.3, 0.8), n / sr, 0.05)
    return _place(n, sr, times, clang, rng.uniform(0.6, 1.0, len(times)))


def typing(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A keyboard: 5-12 irregular bright clicks per second, some louder (the space bar)."""
    times = _poisson_times(rng, rng.uniform(5, 12), n / sr)
    click = _mix(_burst(rng, sr, 0.002, low=1500, high=6000),
                 _resonator(rng, sr, [rng.uniform(2000, 4000)], [0.004], [0.5]))
    return _place(n, sr, times, click, rng.uniform(0.3, 1.0, len(times)))


def door(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A creaking hinge (a gliding rough tone of 300-900 Hz) and then a slam."""
    t = np.arange(n) / sr
    creak_len = rng.uniform(0.5, 0.7) * t[-1]
    f = rng.uniform(300, 900) * (1 + 0.3 * _smooth_random(rng, 6, t, 2.0))
    stick = (np.sin(2 * np.pi * rng.uniform(20, 60) * t) > 0.3)  # stick-slip friction
    creak = _tone(f, n, sr, (1.0, 0.6, 0.4, 0.3)) * stick * (t < creak_len)
    slam = _mix(_burst(rng, sr, rng.uniform(0.03, 0.08), high=600),
                _burst(rng, sr, 0.01, low=500, high=4000))
    return 0.4 * creak + 4 * _place(n, sr, np.array([creak_len + 0.05]), slam)


def glass(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Glasses clinking: a few high, pure, slowly decaying rings (2-6 kHz)."""
    f = rng.uniform(2000, 6000)
    ring = _resonator(rng, sr, [f, 2.1 * f], [rng.uniform(0.15, 0.5), 0.05], [1.0, 0.3])
    times = _poisson_times(rng, rng.uniform(0.8, 3.0), n / sr)
    return _place(n, sr, times, ring, rng.uniform(0.4, 1.0, len(times)))


def dishes(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Clattering crockery: dense random short clinks of many pitches (1-5 kHz)."""
    out = np.zeros(n)
    for when in _poisson_times(rng, rng.uniform(4, 12), n / sr):
        f = rng.uniform(1000, 5000)
        hit = _resonator(rng, sr, [f, 1.6 * f], [rng.uniform(0.02, 0.08), 0.01])
        a = int(when * sr)
        m = min(len(hit), n - a)
        out[a:a + m] += rng.uniform(0.2, 1.0) * hit[:m]
    return out


def woodpecker(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. Drumming: bursts of 10-25 fast knocks on wood, 0.5-1 s each."""
    hit = _resonator(rng, sr, [rng.uniform(400, 900), rng.uniform(1200, 2500)], [0.01, 0.005])
    rate = rng.uniform(12, 25)
    times = []
    start = rng.uniform(0, 0.5)
    while start < n / sr - 0.5:
        k = int(rng.integers(10, 26))
        times += list(start + np.arange(k) / rate)
        start += k / rate + rng.uniform(0.5, 1.5)
    return _place(n, sr, np.array(times), hit)


# -- animals: confusable with birds and crickets ------------------------------------
def _calls(rng: Rng, n: int, sr: int, length: tuple[float, float], period: tuple[float, float],
           call: Callable[[int], np.ndarray]) -> np.ndarray:
    """Calls of ``length`` s at a ``period`` s pace, each ``call(m)`` of m samples."""
    out = np.zeros(n)
    for when in _regular_times(rng, rng.uniform(*period), n / sr, 0.25):
        m = int(rng.uniform(*length) * sr)
        a = int(when * sr)
        if 0 <= a and a + m <= n:
            out[a:a + m] += call(m) * np.sin(np.linspace(0, np.pi, m)) ** 0.5
    return out


def frogs(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Croaks: low pulsed tones (150-500 Hz, pulsing 15-40 times a second)."""
    f, pulse = rng.uniform(150, 500), rng.uniform(15, 40)
    t = np.arange(n) / sr
    return _calls(rng, n, sr, (0.2, 0.6), (0.4, 1.2),
                  lambda m: _tone(f, m, sr, (1.0, 0.6, 0.4, 0.2))
                  * (0.5 + 0.5 * np.sin(2 * np.pi * pulse * t[:m])) ** 2)


def dog(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Barks: short harmonic bursts (f0 300-700 Hz, falling) with a noisy onset."""
    f0 = rng.uniform(300, 700)

    def bark(m: int) -> np.ndarray:
        fall = f0 * np.linspace(1.2, 0.8, m)
        noise = _filter(rng.standard_normal(m), sr, 500, 4000) * _decay(m, sr, 0.03)
        return _tone(fall, m, sr, (1.0, 0.8, 0.6, 0.4, 0.2)) + 0.5 * noise

    return _calls(rng, n, sr, (0.1, 0.25), (0.3, 0.9), bark)


def bees(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A swarm's buzz: several sawtooth-like drones (150-300 Hz) wandering in pitch."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(rng.integers(2, 5)):
        f = rng.uniform(150, 300) * (1 + 0.05 * _smooth_random(rng, 10, t, 3.0))
        level = 0.6 + 0.4 * _smooth_random(rng, 8, t, 2.0)
        out += level * _tone(f, n, sr, tuple(1 / k for k in range(1, 12)))
    return out


def cicada(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Held out. A continuous high buzz (4-7 kHz) pulsing fast, like crickets without pauses."""
    t = np.arange(n) / sr
    carrier = rng.uniform(4000, 7000)
    pulses = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(80, 200) * t)
    swell = 0.6 + 0.4 * _smooth_random(rng, 6, t, 1.0)
    return swell * pulses * (_tone(carrier, n, sr) + 0.3 * _filter(
        rng.standard_normal(n), sr, carrier * 0.8, min(carrier * 1.2, 7800)))


# -- people, radio, streets ----------------------------------------------------------
def crowd(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Babble: 5-12 voices, each a harmonic buzz (f0 90-260 Hz) through wandering formants,
    switched on and off at a syllable rate of 3-6 per second."""
    t = np.arange(n) / sr
    out = np.zeros(n)
    for _ in range(rng.integers(5, 13)):
        f0 = rng.uniform(90, 260) * (1 + 0.1 * _smooth_random(rng, 12, t, 4.0))
        voice = _tone(f0, n, sr, tuple(1 / k for k in range(1, 16)))
        formant = rng.uniform(500, 2500)
        voice = _filter(voice, sr, formant * 0.6, formant * 1.6)
        syllables = (np.sin(2 * np.pi * rng.uniform(3, 6) * t + rng.uniform(0, 6)) > 0)
        out += rng.uniform(0.3, 1.0) * voice * _smooth(syllables, 400)
    return out


def static(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Radio static: band-limited hiss with crackles and a wavering tuning whistle."""
    t = np.arange(n) / sr
    hiss = _filter(rng.standard_normal(n), sr, 200, rng.uniform(3000, 6000))
    crackle = _place(n, sr, _poisson_times(rng, rng.uniform(10, 40), n / sr),
                     _burst(rng, sr, 0.0005, low=1000))
    whistle_f = rng.uniform(500, 3000) * (1 + 0.3 * _smooth_random(rng, 6, t, 1.0))
    return hiss + 2 * crackle + rng.uniform(0.0, 0.4) * _tone(whistle_f, n, sr)


def traffic(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A street: cars passing at 1-4 s intervals (swelling low-passed noise) over a rumble."""
    t = np.arange(n) / sr
    out = _filter(rng.standard_normal(n), sr, 30, 400) * rng.uniform(0.2, 0.5)
    for centre in np.arange(rng.uniform(-0.5, 1.0), t[-1] + 1, rng.uniform(1.0, 4.0)):
        width = rng.uniform(0.5, 1.5)
        car = _filter(rng.standard_normal(n), sr, 60, rng.uniform(800, 2500))
        out += np.exp(-((t - centre) / width) ** 2) * car
    return out


# -- recording conditions -------------------------------------------------------------
def recording_chain(rng: Rng, x: np.ndarray, sr: int) -> np.ndarray:
    """What a microphone and the room do to an event: 60 % of the time a gentle low-pass
    at 2-7 kHz (a dull microphone, a distant or muffled source)."""
    if rng.random() < 0.6:
        return _filter(x, sr, high=rng.uniform(2000, 7000))
    return x


# -- background ambiences (never named in captions) ----------------------------------
def room_tone(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Pink noise: a quiet room."""
    return _shaped_noise(rng, n, sr, lambda f, t: 1 / np.sqrt(np.maximum(f, 40)))


def distant_road(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Brown-ish rumble below 500 Hz that slowly swells: a road far away."""
    level = np.exp(0.4 * _smooth_random(rng, 5, np.arange(n) / sr, 0.5))
    return level * _filter(rng.standard_normal(n), sr, 20, rng.uniform(200, 500))


def air_handling(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Pink noise with a faint mains-frequency drone: an office with air conditioning."""
    drone = _tone(rng.choice([50.0, 60.0]) * 2, n, sr, (1.0, 0.5))
    return room_tone(rng, n, sr) + 0.3 * drone


def outdoors(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Leaves and distant air: noise above 1 kHz, gently fluctuating."""
    level = np.exp(0.5 * _smooth_random(rng, 8, np.arange(n) / sr, 1.0))
    return level * _filter(rng.standard_normal(n), sr, rng.uniform(800, 2000), 7000)


#: background kinds of :func:`clapnb.synth.render_background`
AMBIENCES: dict[str, Callable[[Rng, int, int], np.ndarray]] = {
    "room": room_tone, "road": distant_road, "office": air_handling, "outdoors": outdoors}
