"""SSIM against a loop-by-loop reference and closed forms; out-of-domain mixtures;
cascading randomisation leaves the original model alone and changes the copy top down."""

import numpy as np
import pytest
import torch

from clapnb import sanity


# ---------------------------------------------------------------------------------
# SSIM
# ---------------------------------------------------------------------------------
def _ssim_by_loops(a: np.ndarray, b: np.ndarray, size=11, sigma=1.5, L=1.0) -> float:
    """Wang et al. (2004) written out window by window, weighted by a 2-D Gaussian."""
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-x ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    values = []
    for i in range(a.shape[0] - size + 1):
        for j in range(a.shape[1] - size + 1):
            pa, pb = a[i:i + size, j:j + size], b[i:i + size, j:j + size]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * (pa - ma) ** 2).sum(), (w * (pb - mb) ** 2).sum()
            cov = (w * (pa - ma) * (pb - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_the_definition_window_by_window():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 14, 13))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    b[1] = rng.uniform(size=(14, 13))
    np.testing.assert_allclose(sanity.ssim(a, b), [_ssim_by_loops(a[k], b[k]) for k in range(2)],
                               rtol=1e-9)


def test_ssim_closed_forms():
    rng = np.random.default_rng(1)
    a = rng.uniform(size=(1, 20, 20))
    assert sanity.ssim(a, a)[0] == pytest.approx(1.0)
    # constant images: no variance, so SSIM = (2 a b + C1) / (a^2 + b^2 + C1)
    c1 = 0.01 ** 2
    got = sanity.ssim(np.full((1, 12, 12), 0.2), np.full((1, 12, 12), 0.6))[0]
    assert got == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.2 ** 2 + 0.6 ** 2 + c1))
    assert sanity.ssim(a, 1 - a)[0] < 0  # inverted structure: negative covariance


def test_ssim_refuses_mismatched_or_tiny_images():
    with pytest.raises(ValueError, match="same"):
        sanity.ssim(np.zeros((1, 12, 12)), np.zeros((1, 12, 13)))
    with pytest.raises(ValueError, match="smaller than"):
        sanity.ssim(np.zeros((1, 5, 20)), np.zeros((1, 5, 20)))


# ---------------------------------------------------------------------------------
# Out-of-domain inputs
# ---------------------------------------------------------------------------------
def test_mix_normalises_the_other_clip_to_the_same_rms():
    clip = np.array([1.0, -1.0, 1.0, -1.0], dtype=np.float32)       # RMS 1
    other = np.array([4.0, 0.0], dtype=np.float32)                  # RMS 2*sqrt(2), repeated to 4
    scaled = np.array([4.0, 0.0, 4.0, 0.0]) / np.sqrt(8)            # RMS 1
    np.testing.assert_allclose(sanity.mix(clip, other, 0.8), 0.8 * clip + 0.2 * scaled, rtol=1e-6)
    with pytest.raises(ValueError, match="silent"):
        sanity.mix(np.zeros(4), other)
    with pytest.raises(ValueError, match="weight"):
        sanity.mix(clip, other, 1.5)


def test_partners_are_of_another_class_and_noise_is_reproducible():
    labels = np.array([0, 0, 1, 2, 2])
    p = sanity.partners(labels, seed=3)
    assert (labels[p] != labels).all()
    np.testing.assert_array_equal(sanity.white_noise(10, 1), sanity.white_noise(10, 1))
    with pytest.raises(ValueError, match="two classes"):
        sanity.partners([1, 1])


# ---------------------------------------------------------------------------------
# Cascading randomisation
# ---------------------------------------------------------------------------------
def test_cascading_randomization_goes_top_down_and_leaves_the_model_alone():
    from clapnb.tiny import load_tiny
    model = load_tiny("cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.encoder_layers()]
    assert names == ["projection", "block 4", "block 3", "block 2", "block 1"]
    seen = []
    for k, (name, broken) in enumerate(sanity.cascading_randomization(model, seed=0)):
        seen.append(name)
        state = broken.state_dict()
        changed = {n for n, m in broken.encoder_layers()
                   if any(not torch.equal(p, before[f"audio_encoder.{key}"])
                          for key, p in _named(model, broken, m).items())}
        assert changed == set(names[:k + 1])        # exactly the top k + 1 layers are random
        assert "randomized" in broken.cache_key and broken.cache_key != model.cache_key
        torch.testing.assert_close(state["text_encoder.table.weight"], before["text_encoder.table.weight"])
    assert seen == names
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} of the original model changed"


def _named(model, broken, module):
    """The module's parameters keyed like ``audio_encoder.<key>`` of the state dict."""
    prefix = {id(m): n for n, m in broken.audio_encoder.named_modules()}[id(module)]
    return {f"{prefix}.{k}": p for k, p in module.state_dict().items() if p.is_floating_point()}


def test_randomize_resets_modules_and_draws_bare_parameters():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(50, 50)
            self.norm = torch.nn.BatchNorm1d(50)
            self.bias_table = torch.nn.Parameter(torch.full((100, 50), 5.0))

    block = Block()
    with torch.no_grad():
        block.linear.weight.fill_(3.0)
        block.norm.running_mean.fill_(7.0)
    sanity.randomize_(block, torch.Generator().manual_seed(0))
    assert block.linear.weight.abs().max() <= 1 / np.sqrt(50)          # PyTorch's default init bound
    assert torch.equal(block.norm.running_mean, torch.zeros(50))
    assert block.bias_table.std().item() == pytest.approx(0.02, rel=0.05)


def test_out_of_domain_mixes_each_clip_with_another_class_or_noise():
    rng = np.random.default_rng(0)
    audio = [rng.standard_normal(100).astype(np.float32) for _ in range(4)]
    labels = [0, 0, 1, 1]
    ood = sanity.out_of_domain(audio, labels, seed=2)
    other = sanity.partners(labels, seed=2)
    for i, a in enumerate(audio):
        np.testing.assert_allclose(ood["mix"][i], sanity.mix(a, audio[other[i]]), rtol=1e-6)
        np.testing.assert_allclose(ood["noise"][i], sanity.mix(a, sanity.white_noise(100, 2 + i)), rtol=1e-6)
    with pytest.raises(ValueError, match="labels"):
        sanity.out_of_domain(audio, labels[:3])
