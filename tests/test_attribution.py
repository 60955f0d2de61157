"""Baselines through captum: checked on a linear toy model where every attribution can be
written down by hand, then on TinyCLAP and a random LAION-CLAP against plain autograd."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clapnb import attribution
from clapnb.model import AudioEncoding, ClapModel, output_tap


class _Scale(nn.Module):
    """A "conv block" with fixed per-channel gains: (N, 1, F, T) -> (N, C, F, T), A_c = k_c X."""

    def __init__(self, gains):
        super().__init__()
        self.register_buffer("gains", torch.tensor(gains)[None, :, None, None])

    def forward(self, x):
        return x * self.gains


class LinearModel(ClapModel):
    """embedding_c = sum_ft A_c (not normalised), logit_j = sum_c P[j, c] embedding_c: every
    logit is linear in the spectrogram, so every attribution is known in closed form."""

    name = "linear"

    def __init__(self, gains=(1.0, 2.0), n_freq=3):
        super().__init__()
        self.audio_encoder = nn.Module()
        self.audio_encoder.blocks = nn.ModuleList([_Scale(list(gains))])
        self.embed_dim = len(gains)
        self.n_freq = n_freq

    @property
    def device(self):
        return torch.device("cpu")

    @property
    def logit_scale(self) -> float:
        return 1.0

    def mel_filters(self):
        return torch.eye(self.n_freq)       # one "mel band" per STFT bin

    def encode_spectrogram(self, magnitude):
        a = self.audio_encoder.blocks[0](magnitude[:, None])
        return AudioEncoding(embedding=a.sum(dim=(2, 3)), features=[a])

    def feature_tap(self, index=-1):
        return output_tap(self.audio_encoder.blocks[index])


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    model = LinearModel()
    x = torch.rand(2, 3, 5) + 0.1
    prompts = torch.tensor([[1.0, -2.0], [3.0, 0.5]])   # P[j, c]
    target = torch.tensor([0, 1])
    return model, x, prompts, target


def _attr(toy, method, **kw):
    model, x, prompts, target = toy
    return attribution.attribute(model, x, prompts, target, method, **kw)


def test_prompts_are_normalised_in_the_zero_shot_forward(toy):
    model, x, prompts, _ = toy
    logits = attribution.zero_shot_forward(model, prompts)(x)
    expected = model.encode_spectrogram(x).embedding @ F.normalize(prompts, dim=-1).T
    torch.testing.assert_close(logits, expected)


def test_gradient_methods_by_hand_on_a_linear_model(toy):
    model, x, prompts, target = toy
    # d logit_j / d X[f, t] = sum_c P[j, c] k_c =: w_j for every bin, so d / d log X = w_j X
    w = F.normalize(prompts, dim=-1) @ torch.tensor([1.0, 2.0])
    w = w[target][:, None, None].expand_as(x)
    torch.testing.assert_close(_attr(toy, "saliency"), (w * x).abs())
    torch.testing.assert_close(_attr(toy, "smoothgrad", smooth_noise=1e-7), (w * x).abs())
    noisy = _attr(toy, "smoothgrad", smooth_noise=0.1, smooth_samples=64)
    assert not torch.allclose(noisy, (w * x).abs()) and (noisy > 0).all()
    # IG on log X from B = max(X) * 1e-5 (-100 dB): integral of w exp(z) dz = w (X - B)
    floor = x.flatten(1).amax(dim=1)[:, None, None] * 1e-5
    torch.testing.assert_close(_attr(toy, "integrated_gradients", ig_steps=32), w * (x - floor),
                               rtol=1e-4, atol=1e-6)


def test_gradcam_and_gradcam_plus_plus_by_hand_on_a_linear_model(toy):
    model, x, prompts, target = toy
    p = F.normalize(prompts, dim=-1)[target]              # (N, C): d logit / d A_c, constant
    acts = x[:, None] * torch.tensor([1.0, 2.0])[None, :, None, None]
    cam = F.relu((p[:, :, None, None] * acts).sum(1))     # Grad-CAM: mean gradient = P[j, c]
    torch.testing.assert_close(_attr(toy, "gradcam"), cam)
    hw = x.shape[1] * x.shape[2]
    g = p[:, :, None, None]
    alpha = g ** 2 / (2 * g ** 2 + g ** 3 * acts.sum(dim=(2, 3), keepdim=True))
    plus = F.relu((alpha * F.relu(g) * hw * acts).sum(1))
    torch.testing.assert_close(_attr(toy, "gradcam++"), plus)


def test_gradcam_plus_plus_formula_on_numbers():
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 0.0]]]])      # (1, C=2, 1, 2)
    g = torch.tensor([[[[1.0, 1.0]], [[-1.0, 2.0]]]])
    # channel 0: sum A g^3 = 4, alpha = 1 / (2 + 4) each, w0 = 2/6; channel 1: sum A g^3 = -2,
    # alpha = (1 / 0, 4 / 6) -> the 0 denominator gives 0; w1 = 4/6 * 2 = 4/3
    expected = torch.tensor([[[1 / 3 * 1 + 4 / 3 * 2, 1 / 3 * 3 + 0.0]]])
    torch.testing.assert_close(attribution.gradcam_plus_plus(a, g), expected)


def test_cam_to_stft_averages_the_mel_bands_covering_each_bin():
    class Bands(LinearModel):
        def mel_filters(self):
            return torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])   # (F=3, M=2)

    cam = torch.tensor([[[2.0, 2.0], [4.0, 4.0]]])                      # (1, M=2, T=2)
    out = attribution.cam_to_stft(Bands(), cam, n_frames=2)
    torch.testing.assert_close(out, torch.tensor([[[2.0, 2.0], [3.0, 3.0], [0.0, 0.0]]]))


def test_to_mask_keeps_the_positive_part_scaled_to_one():
    a = torch.tensor([[-1.0, 0.0, 2.0, 4.0], [-3.0, -1.0, -2.0, 0.0]])
    torch.testing.assert_close(attribution.to_mask(a), torch.tensor([[0, 0, 0.5, 1], [0, 0, 0, 0.0]]))


def test_bad_requests_get_clear_errors(toy):
    model, x, prompts, target = toy
    with pytest.raises(ValueError, match="unknown method"):
        attribution.attribute(model, x, prompts, target, "lime")
    with pytest.raises(ValueError, match="one prompt index per clip"):
        attribution.attribute(model, x, prompts, target[:1], "saliency")
    with pytest.raises(IndexError, match="index the 2 prompts"):
        attribution.attribute(model, x, prompts, torch.tensor([0, 2]), "saliency")
    with pytest.raises(ValueError, match="magnitude"):
        attribution.attribute(model, torch.stft(torch.rand(2, 64), 8, window=torch.hann_window(8), return_complex=True),
                              prompts, target, "saliency")
    with pytest.raises(ValueError, match="prompt_emb"):
        attribution.attribute(model, x, torch.ones(2, 5), target, "saliency")
    with pytest.raises(IndexError, match="out of range"):
        attribution.attribute(model, x, prompts, target, "gradcam", feature_index=3)


# ---------------------------------------------------------------------------------
# Real encoders: the tap must be transparent, and Grad-CAM must equal plain autograd
# ---------------------------------------------------------------------------------
def _short_clips(model, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = 0.1 * torch.randn(n, model.clip_samples, generator=g)
    return model.spectrogram(list(audio)).abs()


def test_gradcam_on_tinyclap_matches_autograd_on_its_last_block():
    from clapnb.tiny import load_tiny
    model = load_tiny("cpu")
    x = _short_clips(model)
    prompts = model.embed_text(["This is a sound of siren.", "This is a sound of rain."])
    target = torch.tensor([1, 0])
    x_req = x.clone().requires_grad_(True)
    enc = model.encode_spectrogram(x_req)
    acts = enc.features[-1]
    logits = model.logit_scale * enc.embedding @ prompts.T
    grads, = torch.autograd.grad(logits[torch.arange(2), target].sum(), acts)
    cam = F.relu((grads.mean(dim=(2, 3), keepdim=True) * acts).sum(1)).detach()
    expected = attribution.cam_to_stft(model, cam, x.shape[-1])
    got = attribution.attribute(model, x, prompts, target, "gradcam")
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    masks = attribution.baseline_masks(model, x, prompts, target, "gradcam++", batch_size=1)
    assert masks.shape == x.shape and masks.min() >= 0 and masks.max() == 1


def test_unfold_inverts_the_laion_fold():
    from clapnb import laion
    tokens = torch.randn(2, 8 * 6, 5)                  # (N, H*W, C) on an 8 x 6 grid, r = 4
    fake = type("Fake", (), {"clap": type("C", (), {"audio_branch": type("B", (), {"freq_ratio": 4})})})
    folded = laion.LaionClap._fold(fake, tokens, (8, 6))
    assert folded.shape == (2, 5, 2, 24)
    torch.testing.assert_close(laion.LaionClap._unfold(fake, folded), tokens)


def test_gradcam_on_random_laion_taps_a_swin_stage(laion_model):
    model = laion_model
    x = _short_clips(model, n=1)
    prompts = F.normalize(torch.randn(3, model.embed_dim, generator=torch.Generator().manual_seed(1)), dim=-1)
    forward = attribution.zero_shot_forward(model, prompts)
    from captum.attr import LayerActivation
    with torch.no_grad():
        plain = forward(x)
        features = model.encode_spectrogram(x).features
    for index in (2, -1):
        with model.feature_tap(index) as tap:
            acts = LayerActivation(forward, tap).attribute(x)
            if index == -1:
                with torch.no_grad():
                    torch.testing.assert_close(forward(x), plain)   # the tap changes nothing downstream
        torch.testing.assert_close(acts, features[index])           # it sees the folded feature map
    cam = attribution.attribute(model, x, prompts, torch.tensor([2]), "gradcam")
    assert cam.shape == x.shape and torch.isfinite(cam).all() and cam.max() > 0
    with pytest.raises(ValueError, match="patch embedding"):
        attribution.attribute(model, x, prompts, torch.tensor([0]), "gradcam", feature_index=0)


@pytest.fixture(scope="module")
def laion_model():
    from clapnb import laion
    return laion.random_laion("HTSAT-tiny", seed=0)


def test_explainers_share_one_interface_and_lmaczs_checks_its_model():
    from clapnb import lmaczs, sanity
    from clapnb.tiny import load_tiny
    model = load_tiny("cpu")
    decoder = lmaczs.new_decoder(model).eval()
    x = _short_clips(model)
    prompts = model.embed_text(["This is a sound of siren.", "This is a sound of rain."])
    target = torch.tensor([1, 0])
    methods = attribution.explainers(decoder, ig_steps=2, smooth_samples=2)
    assert list(methods) == ["LMAC-ZS", "Saliency", "SmoothGrad", "Integrated Gradients",
                             "Grad-CAM", "Grad-CAM++"]
    for name, explain in methods.items():
        assert isinstance(explain, attribution.Explainer)           # the one Protocol, peers
        assert attribution.LABELS[explain.name] == name
        masks = explain(model, x, prompts, target)
        assert masks.shape == x.shape and masks.min() >= 0 and masks.max() <= 1, name
    torch.testing.assert_close(methods["LMAC-ZS"](model, x, prompts, target),
                               lmaczs.predict_masks(model, decoder, x, prompts[target]))
    _, broken = next(sanity.cascading_randomization(model))
    with pytest.raises(ValueError, match="trained for model"):
        methods["LMAC-ZS"](broken, x, prompts, target)
    unchecked = attribution.lmaczs_explainer(decoder, check_model=False)
    assert unchecked(broken, x, prompts, target).shape == x.shape
    with pytest.raises(ValueError, match="unknown method 'lime'"):
        attribution.baseline_explainer("lime")
