"""load_model: names, the "auto" rule, the banner, the environment override; the STFT."""

import numpy as np
import pytest
import torch

import clapnb
from clapnb import laion, model as model_mod
from clapnb.model import StftConfig


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown model 'nope'.*tiny.*laion/630k-audioset"):
        clapnb.load_model("nope", verbose=False)


def test_auto_offline_loads_tiny_and_says_why(monkeypatch, capsys):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    m = clapnb.load_model("auto")
    banner = capsys.readouterr().out
    assert m.kind == "tiny" and m.name == "tiny"
    assert "OFFLINE" in banner and "CLAPNB_OFFLINE=1" in banner


def test_environment_variable_overrides_the_name(monkeypatch, capsys):
    monkeypatch.setenv("CLAPNB_MODEL", "tiny")
    m = clapnb.load_model("laion/630k-audioset")
    assert m.kind == "tiny"
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
    name, why = model_mod._resolve_auto()
    assert name == expected and why


def test_stft_round_trip_and_shape():
    cfg = StftConfig(n_fft=512, hop_length=128, win_length=512)
    x = torch.randn(2, 4000)
    spec = cfg.stft(x)
    assert spec.shape == (2, cfg.n_freq, cfg.n_frames(4000)) and spec.is_complex()
    np.testing.assert_allclose(cfg.istft(spec, 4000).numpy(), x.numpy(), atol=1e-5)
