"""TinyCLAP: the ClapModel interface, the committed weights, and that it actually works."""

import hashlib

import numpy as np
import pytest
import torch

from clapnb import synth
from clapnb.registry import load_model
from clapnb.tiny import CONFIG_FILE, WEIGHTS_FILE, TinyClap, TinyConfig, load_tiny, words
from clapnb.zeroshot import class_prompts, zero_shot


@pytest.fixture(scope="module")
def model() -> TinyClap:
    return load_tiny("cpu")


@pytest.fixture(scope="module")
def clips():
    return synth.load_synthetic_clips(n_per_class=3, seed=99)


def test_committed_weights_are_a_small_plain_state_dict():
    assert WEIGHTS_FILE.stat().st_size < 8e6
    state = torch.load(WEIGHTS_FILE, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    assert "log_logit_scale" in state


def test_cache_key_contains_the_weights_digest(model):
    digest = hashlib.sha256(WEIGHTS_FILE.read_bytes() + CONFIG_FILE.read_bytes()).hexdigest()
    assert model.cache_key == f"tiny-{digest[:16]}"


def test_load_model_tiny_uses_this_backend():
    m = load_model("tiny", device="cpu", verbose=False)
    assert isinstance(m, TinyClap) and m.name == "tiny" and m.embed_dim == 512
    assert m.sample_rate == 16000 and m.clip_samples == 80000
    assert not m.training


def test_embeddings_are_unit_norm_with_the_right_shapes(model, clips):
    a = model.embed_audio([clips.audio(i) for i in range(4)])
    t = model.embed_text(["This is a sound of siren.", "rain", "a dog barks at a saxophone"])
    assert a.shape == (4, 512) and t.shape == (3, 512)
    assert a.dtype == torch.float32 and t.dtype == torch.float32
    np.testing.assert_allclose(a.norm(dim=1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(t.norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert 1.0 < model.logit_scale <= 100.0


def test_embed_from_spectrogram_equals_embed_audio(model, clips):
    x = np.stack([clips.audio(i) for i in range(3)])
    via_audio = model.embed_audio(x)
    mag = model.spectrogram(x).abs()
    assert mag.shape == (3, 257, 313)
    np.testing.assert_allclose(model.embed_from_spectrogram(mag).detach().numpy(),
                               via_audio.numpy(), atol=1e-5)


def test_batching_does_not_change_results(model, clips):
    x = [clips.audio(i) for i in range(3)]
    np.testing.assert_allclose(model.embed_audio(x)[1].numpy(), model.embed_audio(x[1]).numpy()[0],
                               atol=1e-5)
    texts = ["a bell", "A siren wails over steady rain, then thunder rumbles."]
    np.testing.assert_allclose(model.embed_text(texts)[0].numpy(),
                               model.embed_text(texts[:1])[0].numpy(), atol=1e-5)


def test_gradients_flow_through_the_spectrogram(model, clips):
    mag = model.spectrogram(clips.audio(0)).abs().requires_grad_(True)
    enc = model.encode_spectrogram(mag)
    target = model.embed_text(["This is a sound of siren."])
    (enc.embedding @ target.T).sum().backward()
    assert mag.grad is not None and torch.isfinite(mag.grad).all() and mag.grad.abs().sum() > 0
    shapes = [tuple(f.shape) for f in enc.features]
    assert len(shapes) == 4 and all(len(s) == 4 and s[0] == 1 for s in shapes)
    assert [s[2] for s in shapes] == sorted((s[2] for s in shapes), reverse=True)


def test_bad_spectrograms_are_refused(model, clips):
    spec = model.spectrogram(clips.audio(0))
    with pytest.raises(TypeError, match="magnitude"):
        model.encode_spectrogram(spec)
    with pytest.raises(ValueError, match="257"):
        model.encode_spectrogram(spec.abs()[:, :100])


def test_unknown_words_are_flagged_but_still_embedded(model):
    assert {"siren", "ambulance", "rain"} <= model.known_words
    assert model.is_known("This is a sound of siren.")
    assert not model.is_known("a saxophone")
    assert model.unknown_words("A saxophone, a siren and a Saxophone cello") == ["saxophone", "cello"]
    t = model.embed_text(["saxophone", "cello", "siren"])
    assert torch.isfinite(t).all()
    assert (t[0] - t[1]).abs().max() > 1e-3  # unseen words are not all mapped to one vector
    # character n-grams: an unseen spelling variant stays closer to its known word
    assert "helicopters" not in model.known_words
    v = model.embed_text(["helicopters", "helicopter", "bell", "rain"])
    assert v[0] @ v[1] > max(v[0] @ v[2], v[0] @ v[3])


def test_held_out_class_names_were_never_seen_but_their_descriptions_were(model):
    from clapnb import synth
    assert not set(synth.HELD_OUT) & model.known_words
    for name, text in synth.DESCRIPTIONS.items():
        assert model.is_known(text), (name, model.unknown_words(text))


def test_tokenizer_words():
    assert words("A Siren, wailing!  over  RAIN.") == ["a", "siren", "wailing", "over", "rain"]
    m = TinyClap(TinyConfig(vocabulary=["a"]))
    with pytest.raises(ValueError, match="at least one word"):
        m.embed_text(["  "])


def test_committed_model_beats_chance_on_held_out_clips(model, clips):
    """A real check: 3 held-out clips per class, 44 classes (chance 2.3 %)."""
    audio = model.embed_audio([clips.audio(i) for i in range(len(clips))])
    result = zero_shot(audio, model.embed_text(class_prompts(clips.class_names)), model.logit_scale)
    assert result.accuracy(clips.labels) > 0.6
