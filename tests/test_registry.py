"""The registry: names, the "auto" rule, the banner, the environment override, what comes
with each backend; and the model interface's STFT."""

import numpy as np
import pytest
import torch

import clapnb
from clapnb import laion, msclap, registry, synth, tiny
from clapnb.model import ClapModel, StftConfig


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*tiny.*laion/630k-audioset"):
        clapnb.load_model("nope", verbose=False)


def test_unknown_explicit_name_is_reported_even_when_the_environment_overrides(monkeypatch):
    monkeypatch.setenv("CLAPNB_MODEL", "tiny")
    with pytest.raises(ValueError, match=r"unknown model 'nonsense' \(passed to load_model\)"):
        clapnb.load_model("nonsense", verbose=False)


def test_unknown_name_in_the_environment_names_the_variable(monkeypatch):
    monkeypatch.setenv("CLAPNB_MODEL", "laion/nope")
    with pytest.raises(ValueError, match=r"'laion/nope' \(from CLAPNB_MODEL\)"):
        clapnb.load_model("tiny", verbose=False)


def test_auto_offline_loads_tiny_and_says_why(monkeypatch, capsys):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    m = clapnb.load_model("auto")
    banner = capsys.readouterr().out
    assert isinstance(m, tiny.TinyClap) and m.name == "tiny"
    assert "OFFLINE (TinyCLAP, synthetic sound world)" in banner and "CLAPNB_OFFLINE=1" in banner


def test_environment_variable_overrides_the_name(monkeypatch, capsys):
    monkeypatch.setenv("CLAPNB_MODEL", "tiny")
    m = clapnb.load_model("laion/630k-audioset")
    assert m.name == "tiny"
    assert "CLAPNB_MODEL=tiny" in capsys.readouterr().out


@pytest.mark.parametrize("cached, reachable, expected", [
    (True, False, laion.DEFAULT_CHECKPOINT),
    (False, True, laion.DEFAULT_CHECKPOINT),
    (False, False, "tiny"),
])
def test_auto_rule_when_online_is_allowed(monkeypatch, cached, reachable, expected):
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    monkeypatch.setattr(laion, "checkpoint_cached", lambda name: cached)
    monkeypatch.setattr(laion, "checkpoint_reachable", lambda name: reachable)
    name, why = registry._resolve_auto()
    assert name == expected and why


def test_every_laion_checkpoint_is_registered_online_without_ground_truth():
    names = registry.model_names()
    assert names[:2] == ["auto", "tiny"] and set(laion.CHECKPOINTS) <= set(names)
    for name in laion.CHECKPOINTS:
        entry = registry.backend(name)
        assert entry.mode == "online" and entry.family == "LAION-CLAP"
        assert entry.ground_truth is None and entry.decoder is None
        assert entry.banner_mode() == "ONLINE (LAION-CLAP)"


def test_tiny_comes_with_its_synthetic_world_decoder_and_ground_truth():
    model = tiny.load_tiny("cpu")
    truth = registry.ground_truth(model)
    assert registry.has_ground_truth(model) and truth.concepts is synth.CONCEPTS
    assert registry.shipped_decoder(model) == tiny.DECODER_FILE and tiny.DECODER_FILE.is_file()
    clips = clapnb.load_clips(model, max_per_class=2, seed=3)
    assert clips.name == f"synthetic-clips-v{synth.VERSION}-3" and len(clips) == 2 * len(synth.CLASSES)
    scenes = clapnb.load_scenes(model, max_items=5)
    assert len(scenes) == 5 and scenes.events is not None
    train = registry.decoder_scenes(model, 3)
    assert train.name == synth.load_synthetic_scenes(n=3, seed=registry.TINY_DECODER_SEED,
                                                     min_events=2, max_events=3).name
    assert all(2 <= len(events) <= 3 for events in train.events)
    gt = truth.scenes(n=4, seed=2, min_events=2, max_events=3)
    assert all(2 <= len(ev) <= 3 for ev in gt.events)
    unseen = truth.held_out_clips(2, 0)
    assert unseen.class_names == synth.HELD_OUT and len(unseen) == 2 * len(synth.HELD_OUT)
    assert set(truth.descriptions) == set(synth.HELD_OUT)
    assert set(truth.families) == set(synth.CLASSES) | set(synth.HELD_OUT)
    assert not set(unseen.class_names) & set(clips.class_names)
    assert len(truth.event_masks(gt, 0, model.stft_config)) == len(gt.events[0])


def test_both_ms_clap_checkpoints_are_registered_as_the_papers_models():
    from clapnb import papers
    for name in ("msclap/2023", "msclap/2022"):
        entry = registry.backend(name)
        assert entry.mode == "online" and entry.family == "MS-CLAP" and entry.ground_truth is None
    assert papers.PAPER_A_MODEL in registry.model_names()


def test_models_built_by_hand_have_no_registry_entry():
    model = laion.random_laion("HTSAT-tiny", seed=0)
    assert registry.shipped_decoder(model) is None
    with pytest.raises(ValueError, match="unknown model 'laion/random-HTSAT-tiny'.*built by hand"):
        clapnb.load_clips(model)


def test_every_backend_hands_over_its_layers():
    """The explainers' needs are part of the interface: every backend implements them."""
    for cls in (tiny.TinyClap, laion.LaionClap, msclap.MsClap):
        for method in ("encoder_layers", "feature_tap", "mel_filters", "encode_spectrogram"):
            assert getattr(cls, method) is not getattr(ClapModel, method), (cls, method)
    layers = tiny.load_tiny("cpu").encoder_layers()
    assert [n for n, _ in layers] == ["projection", "block 4", "block 3", "block 2", "block 1"]


def test_stft_round_trip_and_shape():
    cfg = StftConfig(n_fft=512, hop_length=128, win_length=512)
    x = torch.randn(2, 4000)
    spec = cfg.stft(x)
    assert spec.shape == (2, cfg.n_freq, cfg.n_frames(4000)) and spec.is_complex()
    np.testing.assert_allclose(cfg.istft(spec, 4000).numpy(), x.numpy(), atol=1e-5)


def test_a_rehearsal_model_says_so_in_the_banner(capsys):
    model = tiny.load_tiny("cpu")
    model.rehearsal = True
    registry._banner(model, registry.backend("tiny"), "a test")
    out = capsys.readouterr().out
    assert "REHEARSAL: random weights served by the local mirror (CLAPNB_MIRROR)" in out
    assert "numbers below mean nothing" in out
    registry._banner(tiny.load_tiny("cpu"), registry.backend("tiny"), "a test")
    assert "REHEARSAL" not in capsys.readouterr().out
