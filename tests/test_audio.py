"""Bad and unusual audio input: clapnb.audio.prepare_waveforms (what every model's
``prepare`` calls) and the prompt checks of clapnb.model.check_texts."""

import io
import re

import numpy as np
import pytest
import torch
from scipy.io import wavfile

from clapnb.audio import check_sample_rate, fit_length, prepare_waveforms, to_mono
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


def test_8_bit_pcm_has_its_offset_removed():
    """8-bit WAV is unsigned: 128 is silence, 0 and 255 the extremes."""
    pcm8 = np.array([0, 64, 128, 192, 255], dtype=np.uint8)
    torch.testing.assert_close(prepare(pcm8, clip_samples=None)[0],
                               torch.tensor([-1.0, -0.5, 0.0, 0.5, 127 / 128]))
    assert not prepare(np.full(RATE, 128, np.uint8)).any()  # silence stays silent
    signed = np.array([-128, -64, 0, 64, 127], dtype=np.int8)  # the same samples, signed
    assert torch.equal(prepare(signed, clip_samples=None), prepare(pcm8, clip_samples=None))
    pcm16 = np.array([-32768, 0, 16384], np.int16)  # wider unsigned PCM: the same rule
    assert torch.equal(prepare((pcm16.astype(np.int32) + 32768).astype(np.uint16), clip_samples=None),
                       prepare(pcm16, clip_samples=None))
    assert to_mono(np.full((100, 2), 128, np.uint8)).tolist() == [0.0] * 100


def test_8_bit_wav_read_by_scipy_matches_the_float_clip():
    x = tone(0.1)  # amplitude 0.5
    buf = io.BytesIO()
    wavfile.write(buf, RATE, np.round(x * 127 + 128).astype(np.uint8))  # 8-bit WAV
    rate, pcm8 = wavfile.read(io.BytesIO(buf.getvalue()))
    assert rate == RATE and pcm8.dtype == np.uint8
    out = prepare(pcm8, sample_rate=rate, clip_samples=None)[0].numpy()
    np.testing.assert_allclose(out, x, atol=1.5 / 128)  # not shifted up by 0.5 or 1.0


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


@pytest.mark.parametrize("bad", [0, -16_000])
def test_a_non_positive_sample_rate_is_refused(bad):
    with pytest.raises(ValueError, match=rf"sample_rate must be a positive integer.*got {bad}; "
                                         "pass the rate the audio was recorded at"):
        prepare(tone(1), sample_rate=bad)  # 0 used to end in a bare ZeroDivisionError


@pytest.mark.parametrize("bad", [16_000.0, 44.1e3, np.float32(16_000), True, np.True_, "16000"])
def test_a_sample_rate_that_is_not_an_integer_is_refused(bad):
    with pytest.raises(TypeError, match=rf"sample_rate must be a positive integer.*got "
                                        rf"{re.escape(repr(bad))} \({type(bad).__name__}\)"):
        prepare(tone(1), sample_rate=bad)


def test_numpy_integer_sample_rates_are_accepted():
    expected = prepare(tone(1.0, rate=16_000), sample_rate=16_000, clip_samples=None)
    for rate in (np.int64(16_000), np.int32(16_000), np.uint16(16_000)):
        assert torch.equal(prepare(tone(1.0, rate=16_000), sample_rate=rate, clip_samples=None),
                           expected)
    assert check_sample_rate(np.int64(48_000)) == 48_000 and type(check_sample_rate(np.int64(1))) is int
    assert "int(sr)" in str(pytest.raises(TypeError, check_sample_rate, 22_050.0).value)
    with pytest.raises(ValueError, match="model_rate must be a positive integer.*got 0"):
        prepare_waveforms(tone(1), 0, None)


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
