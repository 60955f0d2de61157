"""Bad and unusual audio input: clapnb.audio.prepare_waveforms (what every model's
``prepare`` calls) and the prompt checks of clapnb.model.check_texts."""

import numpy as np
import pytest
import torch

from clapnb.audio import fit_length, prepare_waveforms, to_mono
from clapnb.model import check_texts

RATE = 48_000
WINDOW = 480_000


def prepare(waveforms, sample_rate=None, clip_samples=WINDOW):
    return prepare_waveforms(waveforms, RATE, clip_samples, sample_rate)


def tone(seconds: float, rate: int = RATE, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_clip_a_batch_and_a_list_give_float32_batches():
    x = tone(10)
    for given, n in ((x, 1), (x[None], 1), (np.stack([x, x, x]), 3), ([x, x], 2), (torch.from_numpy(x), 1)):
        out = prepare(given)
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
        assert out.shape == (n, WINDOW)
        assert torch.equal(out[0], torch.from_numpy(x))


def test_another_sample_rate_is_resampled():
    out = prepare(tone(1.0, rate=16_000), sample_rate=16_000, clip_samples=None)
    assert out.shape == (1, RATE)  # 1 s at the model's rate
    spectrum = np.abs(np.fft.rfft(out[0].numpy()))
    assert np.argmax(spectrum) * RATE / out.shape[1] == pytest.approx(440, abs=2)  # pitch kept
    assert torch.equal(prepare(tone(1.0), sample_rate=RATE, clip_samples=None),
                       prepare(tone(1.0), clip_samples=None))  # the model's rate: untouched


@pytest.mark.parametrize("shape", [(RATE, 2), (2, RATE), (RATE, 1), (RATE, 6)])
def test_multichannel_audio_is_refused_naming_to_mono(shape):
    x = np.zeros(shape, dtype=np.float32)
    with pytest.raises(ValueError, match=r"stereo.*to_mono"):
        prepare(x)
    assert prepare(to_mono(x)).shape == (1, WINDOW)  # the fix the message suggests works


def test_a_batch_of_two_mono_clips_goes_in_as_a_list():
    pair = np.stack([tone(1), tone(1, freq=220)])  # (2, S): ambiguous, so refused ...
    with pytest.raises(ValueError, match=r"list\(x\)"):
        prepare(pair)
    assert prepare(list(pair)).shape == (2, WINDOW)  # ... and the suggested fix works


def test_a_clip_with_channels_in_a_list_is_refused():
    with pytest.raises(ValueError, match=r"clip 1 .*to_mono"):
        prepare([tone(1), np.zeros((RATE, 2), np.float32)])


def test_integer_pcm_is_scaled_to_plus_minus_one():
    pcm16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    out = prepare(pcm16, clip_samples=None)[0]
    torch.testing.assert_close(out, torch.tensor([0.0, 0.5, -1.0, 32767 / 32768]))
    pcm32 = np.array([0, -2**31, 2**30], dtype=np.int32)
    torch.testing.assert_close(prepare(pcm32, clip_samples=None)[0], torch.tensor([0.0, -1.0, 0.5]))


def test_non_numeric_audio_is_refused():
    with pytest.raises(TypeError, match="numeric"):
        prepare(np.array([True, False] * 100))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_is_refused_naming_the_clip(bad):
    broken = tone(1)
    broken[100] = bad
    with pytest.raises(ValueError, match=r"clip 2 .*NaN or inf"):
        prepare([tone(1), tone(1), broken])


def test_empty_input_is_refused():
    with pytest.raises(ValueError, match=r"clip 1 is empty"):
        prepare([tone(1), np.zeros(0, np.float32)])
    with pytest.raises(ValueError, match="no audio"):
        prepare([])


def test_a_silent_clip_is_accepted():
    out = prepare(np.zeros(RATE, np.float32))
    assert out.shape == (1, WINDOW) and not out.any()


def test_long_clips_are_cropped_from_the_start_deterministically():
    rng = np.random.default_rng(0)
    long = rng.standard_normal(WINDOW + 12_345).astype(np.float32)
    first, second = prepare(long), prepare(long)
    assert torch.equal(first, second)
    assert torch.equal(first[0], torch.from_numpy(long[:WINDOW]))


def test_short_clips_are_repeated_whole_then_zero_filled_like_laion_clap():
    """LAION-CLAP's "repeatpad" (laion_clap/training/data.py, get_audio_features):
    n = int(max_len / len(x)); x.repeat(n); zero-pad to max_len."""
    x = np.arange(1, 16_801, dtype=np.float32)  # 0.35 s (28.6 fit in 10 s), no zeros inside
    out = prepare(x)[0].numpy()
    n = WINDOW // len(x)
    assert np.array_equal(out[:n * len(x)], np.tile(x, n))
    assert not out[n * len(x):].any() and len(out) - n * len(x) == WINDOW % len(x) > 0
    assert np.array_equal(fit_length(x[:5], 12), [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 0, 0])
    assert np.array_equal(fit_length(x[:4], 12), [1, 2, 3, 4] * 3)  # an exact fit: no zeros


def test_clips_of_different_lengths_need_a_window():
    with pytest.raises(ValueError, match="different lengths"):
        prepare([tone(1), tone(2)], clip_samples=None)
    assert prepare([tone(1), tone(2)]).shape == (2, WINDOW)


def test_texts_are_checked():
    assert check_texts(("a dog", "rain")) == ["a dog", "rain"]
    with pytest.raises(ValueError, match="no texts"):
        check_texts([])
    for empty in ("", "   "):
        with pytest.raises(ValueError, match="text 1 is empty"):
            check_texts(["a dog", empty])
    with pytest.raises(TypeError, match=r"\[prompt\]"):
        check_texts("a dog")
    with pytest.raises(TypeError, match="text 0 is int"):
        check_texts([3])
