"""The LAION-CLAP backend, tested offline on a randomly initialised model of the real
architecture (HTSAT-tiny): the pretrained checkpoints themselves cannot be downloaded
here, so everything up to them runs with real code (the package's own model classes,
the checkpoint file format, the download through a loopback server, the rehearsal's
mirror). Embeddings are compared with the package's own inference code
(``CLAP_Module.get_audio_embedding_from_data`` / ``get_text_embedding`` in its
hook.py, loaded offline by tests/_laion_reference.py) on the same random weights."""

import hashlib
import importlib.util
import io
import json
import math
import socket
import string
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clapnb
from clapnb import _torchvision_shim as shim
from clapnb import laion
from clapnb.download import DownloadError, UnverifiedDownload
from clapnb.registry import model_names

ROOT = Path(__file__).resolve().parents[1]
RATE, WINDOW = laion.LaionClap.sample_rate, laion.LaionClap.clip_samples
_CONNECTS: list = []  # network connections attempted while the module fixture was built


@pytest.fixture(scope="module")
def model() -> laion.LaionClap:
    """A random HTSAT-tiny LAION-CLAP, built once, with every network connection refused."""
    def refuse(sock, address, *args):
        _CONNECTS.append(address)
        raise OSError("test_laion: no network while the model is built")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        model = laion.random_laion("HTSAT-tiny", seed=0)
    return _with_bn0_statistics(model)


def _with_bn0_statistics(model: laion.LaionClap) -> laion.LaionClap:
    """A fresh batch norm is the identity; give it statistics like a trained one's so
    that comparisons with the package see whether it is applied."""
    bn0 = model.clap.audio_branch.bn0
    with torch.no_grad():
        bn0.running_mean.copy_(torch.linspace(-40.0, 0.0, 64))
        bn0.running_var.copy_(torch.linspace(50.0, 400.0, 64))
        bn0.weight.copy_(torch.linspace(0.5, 1.5, 64))
        bn0.bias.copy_(torch.linspace(-1.0, 1.0, 64))
    return model


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    """Two clips: 10 s of noise, and 3 s of a tone in noise (padded by the model)."""
    rng = np.random.default_rng(0)
    t = np.arange(3 * RATE) / RATE
    return [(0.1 * rng.standard_normal(WINDOW)).astype(np.float32),
            (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)]


@pytest.fixture(scope="module")
def embedded(model, clips) -> torch.Tensor:
    return model.embed_audio(clips)


def tiny_tokenizer():
    """A real (byte-level BPE) RobertaTokenizer with a 32-token vocabulary, for the
    one-layer RoBERTa of the random model."""
    from transformers import RobertaTokenizer
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for c in "Ġ" + string.ascii_lowercase:
        vocab[c] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=[])


# ---------------------------------------------------------------------------------
# Importing and building: no network, no sys.path changes, no stray modules
# ---------------------------------------------------------------------------------
def test_building_the_model_needs_no_network(model):
    assert isinstance(model, clapnb.ClapModel)
    assert _CONNECTS == []


def test_the_package_cannot_shadow_our_modules_or_tests(model):
    package = Path(importlib.util.find_spec("laion_clap").submodule_search_locations[0])
    assert not [p for p in sys.path if p and Path(p).resolve().is_relative_to(package)]
    # laion_clap/__init__.py (sys.path.append + tokenizer downloads) never ran
    assert "laion_clap" not in sys.modules and "laion_clap.hook" not in sys.modules
    assert "laion_clap.clap_module" in sys.modules
    for name in ("clap_module", "training", "evaluate"):
        assert name not in sys.modules
    assert importlib.util.find_spec("clap_module") is None
    # the wheel's top-level `tests` package is not what runs here
    assert Path(__file__).resolve().is_relative_to(ROOT / "tests")
    if "tests" in sys.modules:
        assert Path(sys.modules["tests"].__file__).resolve().is_relative_to(ROOT)
    for name, module in list(sys.modules.items()):
        if (name == "clapnb" or name.startswith("clapnb.")) and getattr(module, "__file__", None):
            assert Path(module.__file__).resolve().is_relative_to(ROOT / "clapnb"), name
    if not shim.torchvision_installed():
        assert "torchvision" not in sys.modules  # the stand-ins are gone again


# ---------------------------------------------------------------------------------
# The audio path against the package's own
# ---------------------------------------------------------------------------------
def _repeatpad(clip: np.ndarray) -> torch.Tensor:
    """laion_clap's get_audio_features, data_filling="repeatpad" (training/data.py), after
    its int16 quantisation: repeat the clip int(480000 / len) times, then zero-pad to
    480,000 samples."""
    clip = (np.clip(clip, -1.0, 1.0) * 32767.0).astype(np.int16)  # float32_to_int16
    x = torch.from_numpy((clip / 32767.0).astype(np.float32))  # int16_to_float32
    n_repeat = int(WINDOW / len(x))
    return F.pad(x.repeat(n_repeat), (0, WINDOW - len(x) * n_repeat))


def test_embed_audio_matches_the_package_audio_branch(model, clips, embedded):
    with torch.no_grad():  # one batch through the package's own front end and HTSAT
        theirs = model.clap.get_audio_embedding([{"waveform": _repeatpad(c)} for c in clips])
    torch.testing.assert_close(embedded, theirs, atol=1e-4, rtol=0)
    assert float(embedded[0] @ embedded[1]) < 0.99  # the clips do give different embeddings


def test_embeddings_are_unit_norm_512_d_without_grad(embedded):
    assert embedded.shape == (2, 512) and embedded.dtype == torch.float32
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(2))
    assert not embedded.requires_grad


def test_long_clips_are_cropped_from_the_start_every_time(model, clips, embedded):
    rng = np.random.default_rng(1)
    long = np.concatenate([clips[0], rng.standard_normal(2 * RATE).astype(np.float32)])
    first = model.embed_audio(long)
    assert torch.equal(first, model.embed_audio(long))  # deterministic
    torch.testing.assert_close(first, embedded[:1], atol=1e-6, rtol=0)  # = its first 10 s


def test_embed_from_spectrogram_of_the_stft_equals_embed_audio(model, clips, embedded):
    with torch.no_grad():
        again = model.embed_from_spectrogram(model.spectrogram(clips[1]).abs())
    torch.testing.assert_close(again, embedded[1:], atol=1e-6, rtol=0)


def test_gradients_flow_through_encode_spectrogram_and_features_are_maps(model, clips, embedded):
    magnitude = model.spectrogram(clips[:1]).abs().requires_grad_()
    encoding = model.encode_spectrogram(magnitude)
    assert [tuple(f.shape) for f in encoding.features] == [
        (1, 96, 16, 256), (1, 96, 16, 256), (1, 192, 8, 128), (1, 384, 4, 64), (1, 768, 2, 32)]
    (encoding.embedding @ embedded[1]).sum().backward()
    assert magnitude.grad is not None and magnitude.grad.shape == magnitude.shape
    assert torch.isfinite(magnitude.grad).all() and magnitude.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())  # the model itself is frozen


def test_folding_undoes_htsats_image_layout(model):
    """reshape_wav2img stacks 4 time chunks along frequency; _fold must put them back."""
    logmel = torch.randn(2, 1, 1024, 64)  # (N, 1, frames, mels)
    image = model.clap.audio_branch.reshape_wav2img(logmel)  # (N, 1, 256, 256)
    tokens = image.flatten(2).transpose(1, 2)  # one "token" per pixel
    assert torch.equal(model._fold(tokens, (256, 256)), logmel.transpose(2, 3))


def test_encode_spectrogram_refuses_what_is_not_a_10_s_magnitude(model, clips):
    spec = model.spectrogram(clips[:1])
    with pytest.raises(ValueError, match="abs"):
        model.encode_spectrogram(spec)  # complex
    with pytest.raises(ValueError, match="10-s"):
        model.encode_spectrogram(spec.abs()[..., :500])


def test_train_mode_leaves_the_model_frozen(model):
    model.train()
    try:
        assert model.training and not model.clap.training
        assert not any(m.training for m in model.clap.modules())
    finally:
        model.eval()


def test_logit_scale_is_exp_of_the_learned_logit(model):
    original = model.clap.logit_scale_a.detach().clone()
    with torch.no_grad():
        model.clap.logit_scale_a.fill_(math.log(33.0))
    try:
        assert model.logit_scale == pytest.approx(33.0)
    finally:
        with torch.no_grad():
            model.clap.logit_scale_a.copy_(original)


def test_htk_filters_are_torchaudios_melscale_fbanks():
    """torchaudio (used by the fusion front end) is not installed here: compare with
    its melscale_fbanks(norm=None, mel_scale="htk") formula."""
    sr, n_fft, n_mels, fmin, fmax = 48_000, 1024, 64, 50.0, 14_000.0
    all_freqs = torch.linspace(0, sr // 2, n_fft // 2 + 1, dtype=torch.float64)
    m_pts = torch.linspace(2595.0 * math.log10(1.0 + fmin / 700.0),
                           2595.0 * math.log10(1.0 + fmax / 700.0), n_mels + 2, dtype=torch.float64)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None] - all_freqs[:, None]
    expected = torch.clamp(torch.min(-slopes[:, :-2] / f_diff[:-1], slopes[:, 2:] / f_diff[1:]), min=0)
    ours = laion.htk_mel_filters(sr, n_fft, n_mels, fmin, fmax)
    assert ours.shape == (513, 64)
    torch.testing.assert_close(ours.double(), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------------
# Parity with the package's own inference code (hook.py), for every clip length
# ---------------------------------------------------------------------------------
PARITY_ATOL = 1e-4
#: the package's fusion input has three cases for clips over 10 s: 1001 frames (the
#: whole clip, not "longer"), a third of the possible crop starts empty, and the rest
FUSION_CORNERS = {"10 s + 200 samples": WINDOW + 200, "10 s + 480 samples": WINDOW + 480}


@pytest.fixture(scope="module")
def hook():
    """laion_clap/hook.py, loaded offline (tests/_laion_reference.py)."""
    from _laion_reference import load_hook
    return load_hook()


@pytest.fixture(scope="module")
def fusion_model() -> laion.LaionClap:
    return _with_bn0_statistics(laion.random_laion("HTSAT-tiny", fusion=True, seed=1))


def _parity_clip(n: int, seed: int) -> np.ndarray:
    """``n`` samples whose thirds differ (a chirp, then noise, then a tone), with a
    burst beyond full scale that the int16 quantisation clips."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = 0.02 * rng.standard_normal(n)
    third = n // 3
    x[:third] += 0.3 * np.sin(2 * np.pi * (200 + 2000 * t[:third] / t[third]) * t[:third])
    x[third:2 * third] += 0.2 * rng.standard_normal(third)
    x[2 * third:] += 0.4 * np.sin(2 * np.pi * 3000 * t[2 * third:])
    x[n // 2:n // 2 + 2000] *= 8.0
    return x.astype(np.float32)


def _parity_clips(extra: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    lengths = {"5 s": 5 * RATE, "10 s": WINDOW, "25 s": 25 * RATE, **(extra or {})}
    return {name: _parity_clip(n, seed) for seed, (name, n) in enumerate(lengths.items())}


@pytest.fixture
def clapnb_rules(monkeypatch) -> list:
    """The package's two random draws made clapnb's rules, recorded: ``np.random.choice``
    (a fusion crop start within one third) -> the middle one (fusion_crop_starts);
    ``np.random.randint(0, overflow + 1)`` (the 10-s crop of a long clip) -> 0, the start."""
    draws = []

    def middle(a):
        a = np.asarray(a)
        draws.append(("choice", int(a[0]), len(a)))
        return a[len(a) // 2]

    def start(low, high=None, size=None):
        draws.append(("randint", low, high))
        return low

    monkeypatch.setattr(np.random, "choice", middle)
    monkeypatch.setattr(np.random, "randint", start)
    return draws


def _max_differences(model, reference, clips: dict[str, np.ndarray]) -> dict[str, float]:
    """Per clip, max |ours - package| over the embedding, all clips in one batch each."""
    theirs = torch.from_numpy(reference.get_audio_embedding_from_data(list(clips.values())))
    ours = model.embed_audio(list(clips.values()))
    return dict(zip(clips, (ours - theirs).abs().amax(dim=1).tolist()))


def test_quantisation_is_the_packages(hook):
    x = np.concatenate([np.linspace(-1.5, 1.5, 200_001), np.random.default_rng(0).standard_normal(50_000)])
    x = x.astype(np.float32)
    theirs = hook.int16_to_float32(hook.float32_to_int16(x))
    ours = laion.quantize_int16(torch.from_numpy(x))
    assert ours.dtype == torch.float32 and np.array_equal(ours.numpy(), theirs)
    every_level = torch.arange(-32767, 32768, dtype=torch.float32) / 32767.0
    assert torch.equal(laion.quantize_int16(every_level), every_level)  # idempotent


def test_fusion_crop_starts_take_the_middle_of_each_third():
    assert laion.fusion_crop_starts(2501, 1001) == (250, 751, 1251)  # 25 s: 1,501 starts
    assert laion.fusion_crop_starts(1002, 1001) == (0, 1, 0)  # starts 0, 1: the last third is empty
    assert laion.fusion_crop_starts(1003, 1001) == (0, 1, 2)
    assert laion.fusion_crop_starts(3001, 1001) == (333, 1000, 1667)


@pytest.mark.slow
def test_audio_embeddings_match_the_package_non_fusion(model, hook, clapnb_rules):
    """get_audio_embedding_from_data: int16 quantisation, repeatpad, "rand_trunc" made
    "the first 10 s"; the package's own torchlibrosa front end against clapnb's STFT."""
    from _laion_reference import reference_module
    clips = _parity_clips()
    differences = _max_differences(model, reference_module(hook, model), clips)
    print("non-fusion max |ours - package|:", differences)
    assert max(differences.values()) <= PARITY_ATOL, differences
    assert clapnb_rules == [("randint", 0, 15 * RATE + 1)]  # the 25-s clip, cropped at its start


@pytest.mark.slow
def test_audio_embeddings_match_the_package_fusion(fusion_model, hook, clapnb_rules, monkeypatch):
    """get_audio_embedding_from_data on a fusion model: the fusion input (the whole
    clip's log-mel shrunk to 10 s, three local crops) for clips over 10 s, with the
    middle crop of each third; torchaudio / torchvision stand-ins where not installed."""
    from _laion_reference import reference_module
    clips = _parity_clips(FUSION_CORNERS)
    reference = reference_module(hook, fusion_model)
    differences = _max_differences(fusion_model, reference, clips)
    print("fusion max |ours - package|:", differences)
    assert max(differences.values()) <= PARITY_ATOL, differences
    # three draws per clip with more than 1001 frames; one third empty for +480 samples
    assert [d for d in clapnb_rules if d[0] == "choice"] == [
        ("choice", 0, 501), ("choice", 501, 500), ("choice", 1001, 500),  # 25 s: 2,501 frames
        ("choice", 0, 1), ("choice", 1, 1), ("choice", 0, 1)]  # +480 samples: 1,002 frames
    # the 25-s clip is heard whole: not its first 10 s, and another crop changes it
    long = clips["25 s"]
    ours = fusion_model.embed_audio(long)
    assert torch.equal(ours, fusion_model.embed_audio(long))  # deterministic
    assert (ours - fusion_model.embed_audio(long[:WINDOW])).abs().max() > 10 * PARITY_ATOL
    monkeypatch.setattr(np.random, "choice", lambda a: np.asarray(a)[0])  # the first of each third
    other = torch.from_numpy(reference.get_audio_embedding_from_data([long]))
    assert (ours - other).abs().max() > 10 * PARITY_ATOL  # the rule matters: 30x the tolerance


def test_fusion_model_on_clips_of_at_most_10_s_is_the_window_path(fusion_model, clips):
    """Up to 10 s a fusion model sees the global view only: embed_audio is
    embed_from_spectrogram of the 10-s window, which LMAC-ZS masks."""
    ours = fusion_model.embed_audio(clips)
    with torch.no_grad():
        again = fusion_model.embed_from_spectrogram(fusion_model.spectrogram(clips).abs())
    torch.testing.assert_close(ours, again, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="clip 1 contains NaN"):  # checked clip by clip
        fusion_model.embed_audio([clips[0], np.full(WINDOW + 1, np.nan, dtype=np.float32)])


# ---------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------
def test_embed_text_without_a_tokenizer_says_so(model):
    with pytest.raises(RuntimeError, match="no tokenizer"):
        model.embed_text(["a dog barks"])


def test_text_goes_through_the_package_text_branch(model):
    tokenizer = tiny_tokenizer()
    with_text = laion.LaionClap(model.clap, tokenizer, name="laion/random-text", cache_key="t")
    texts = ["a dog barks", "rain on a roof", "a dog barks loudly"]
    ours = with_text.embed_text(texts)
    tokens = tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        theirs = model.clap.get_text_embedding(dict(tokens))
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(with_text.embed_text(texts, batch_size=1), ours)
    assert float(ours[0] @ ours[1]) < 0.999


class _Stub:
    """Tokenizer-shaped object: a vocabulary size and what "Hello world" becomes."""

    def __init__(self, size: int, ids: list[int]):
        self.size, self.ids = size, ids

    def __len__(self) -> int:
        return self.size

    def __call__(self, text):
        return {"input_ids": self.ids}


def _files_tokenizer(files: dict[str, bytes], folder: Path):
    """A RobertaTokenizer built by clapnb from ``vocab.json`` / ``merges.txt`` bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return laion._build_tokenizer(folder / "vocab.json", folder / "merges.txt", folder)


@pytest.mark.slow
def test_text_embeddings_match_the_package_with_a_roberta_base_tower(hook, tmp_path):
    """CLAP_Module.get_text_embedding with the real text architecture (roberta-base's
    configuration, random weights) and the same tokenizer object."""
    from _laion_reference import reference_module
    from _laion_tokenizer import small_files
    tokenizer = _files_tokenizer(small_files(), tmp_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        module = laion.build_clap("HTSAT-tiny", roberta=laion.ROBERTA_BASE)
    assert laion.roberta_config(module.state_dict()) == laion.ROBERTA_BASE
    ours = laion.LaionClap(module, tokenizer, name="laion/random-roberta-base", cache_key="t")
    reference = reference_module(hook, ours, tokenizer)
    assert reference.tokenize is tokenizer
    texts = ["a dog barks", "rain on a roof", "the dog barks on the roof",
             "Ünïcödé ♪ " + "and a very long caption " * 12]  # > 77 tokens: truncated
    theirs = torch.from_numpy(reference.get_text_embedding(texts))
    embedded = ours.embed_text(texts)
    difference = float((embedded - theirs).abs().max())
    print("text max |ours - package|:", difference)
    assert difference <= PARITY_ATOL
    torch.testing.assert_close(ours.embed_text(texts, batch_size=1), embedded, atol=1e-5, rtol=0)
    assert float(embedded[0] @ embedded[1]) < 0.999


def test_a_stand_in_tokenizer_is_refused():
    from transformers import RobertaTokenizer
    stand_in = RobertaTokenizer()  # a tokenizer without roberta-base's files
    with pytest.raises(laion.TokenizerError, match="not the real roberta-base one.*delete"):
        laion.check_roberta_tokenizer(stand_in)
    with pytest.raises(laion.TokenizerError, match="50,265"):
        laion.check_roberta_tokenizer(_Stub(50265, [0, 1, 2]))  # right size, wrong ids
    laion.check_roberta_tokenizer(_Stub(50265, [0, 31414, 232, 2]))  # behaves like roberta-base


def test_a_tokenizer_must_fit_the_checkpoints_text_tower():
    laion.check_tokenizer_fits(tiny_tokenizer(), laion.ROBERTA_TINY)
    laion.check_tokenizer_fits(_Stub(50265, []), laion.ROBERTA_BASE)
    with pytest.raises(laion.TokenizerError, match="50,265 tokens.*1,000 rows"):
        laion.check_tokenizer_fits(_Stub(50265, []), laion.ROBERTA_TINY)
    odd = tiny_tokenizer()
    odd.pad_token = "<s>"  # id 0
    with pytest.raises(laion.TokenizerError, match="padding id is 0, not 1"):
        laion.check_tokenizer_fits(odd, laion.ROBERTA_TINY)


def _tokenizer_routes(server) -> dict[str, str]:
    return {name: server.base_url + "/FacebookAI/roberta-base/resolve/main/" + name
            for name in laion.TOKENIZER_URLS}


def _serve(server, urls: dict[str, str], files: dict[str, bytes]) -> None:
    for name, url in urls.items():
        server.add(url.removeprefix(server.base_url), files[name])


@pytest.fixture
def no_hub(monkeypatch):
    """The Hugging Face hub client is never asked for the tokenizer."""
    from transformers import RobertaTokenizer

    def refuse(*args, **kwargs):
        raise AssertionError("RobertaTokenizer.from_pretrained was called")

    monkeypatch.setattr(RobertaTokenizer, "from_pretrained", refuse)


def test_the_tokenizer_is_downloaded_unverified_checked_by_its_vocabulary_and_cached(
        cache, monkeypatch, no_hub):
    from _laion_tokenizer import roberta_shaped_files
    from _loopback import LoopbackServer
    assert laion.TOKENIZER_URLS == {
        "vocab.json": "https://huggingface.co/FacebookAI/roberta-base/resolve/main/vocab.json",
        "merges.txt": "https://huggingface.co/FacebookAI/roberta-base/resolve/main/merges.txt"}
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with LoopbackServer() as server:
        urls = _tokenizer_routes(server)
        _serve(server, urls, roberta_shaped_files())
        monkeypatch.setattr(laion, "TOKENIZER_URLS", urls)
        with pytest.warns(UnverifiedDownload, match="no checksum is published"):
            tokenizer = laion.load_roberta_tokenizer()
        assert len(tokenizer) == 50265 and tokenizer("Hello world")["input_ids"] == [0, 31414, 232, 2]
        assert len(server.requests) == 2
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # cached: no download, no warning
            assert len(laion.load_roberta_tokenizer()) == 50265
        assert len(server.requests) == 2
    folder = laion.tokenizer_dir()
    assert folder == cache.parent / "tokenizers" / "roberta-base"
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")  # cached: offline is fine
    assert len(laion.load_roberta_tokenizer()) == 50265


def test_tokenizer_files_that_are_not_roberta_bases_are_refused_or_fetched_again(
        cache, monkeypatch, no_hub):
    from _laion_tokenizer import roberta_shaped_files, small_files
    from _loopback import LoopbackServer
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    folder = laion.tokenizer_dir()
    for name, data in small_files().items():  # what a rehearsal leaves in the cache
        (folder / name).write_bytes(data)
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    with pytest.raises(laion.TokenizerError, match="not the real roberta-base one"):
        laion.load_roberta_tokenizer()  # offline: cannot fetch them again
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with LoopbackServer() as server:
        urls = _tokenizer_routes(server)
        _serve(server, urls, roberta_shaped_files())
        monkeypatch.setattr(laion, "TOKENIZER_URLS", urls)
        with pytest.warns(UnverifiedDownload):
            assert len(laion.load_roberta_tokenizer()) == 50265  # replaced
        assert len(server.requests) == 2
    for files, message in ((small_files(), "not the real roberta-base one"),
                           ({"vocab.json": b"<html>busy</html>", "merges.txt": b"x"}, "unreadable")):
        for path in folder.iterdir():
            path.unlink()
        with LoopbackServer() as server:
            urls = _tokenizer_routes(server)
            _serve(server, urls, files)
            monkeypatch.setattr(laion, "TOKENIZER_URLS", urls)
            with pytest.warns(UnverifiedDownload), pytest.raises(laion.TokenizerError, match=message):
                laion.load_roberta_tokenizer()
            assert len(server.requests) == 2  # freshly downloaded: not fetched twice


def test_under_a_mirror_the_tokenizer_is_its_own_verified_and_not_probed(cache, monkeypatch, no_hub):
    from _laion_mirror import MirrorServer
    from _laion_tokenizer import small_files
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with MirrorServer() as mirror:
        for name, url in laion.TOKENIZER_URLS.items():
            mirror.add_mirrored(url, small_files()[name])
        mirror.publish()
        monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnverifiedDownload)  # the manifest verifies them
            tokenizer = laion.load_roberta_tokenizer()
        assert mirror.hits("/huggingface.co/FacebookAI/roberta-base/resolve/main/vocab.json") == [None]
    assert len(tokenizer) == len(json.loads(small_files()["vocab.json"]))
    laion.check_tokenizer_fits(tokenizer, laion.ROBERTA_TINY)


# ---------------------------------------------------------------------------------
# The torchvision stand-in
# ---------------------------------------------------------------------------------
def test_torchvision_stand_in_exists_only_inside_the_block(monkeypatch):
    if "torchvision" in sys.modules:
        pytest.skip("a real torchvision is imported")
    monkeypatch.setattr(shim, "torchvision_installed", lambda: False)
    with shim.torchvision_stand_in() as used:
        assert used
        from torchvision.ops.misc import FrozenBatchNorm2d
        from torchvision.transforms import InterpolationMode, Normalize
        with pytest.raises(ImportError, match="torchvision is not installed"):
            Normalize((0.5,), (0.5,))
        with pytest.raises(AttributeError, match="torchvision is not installed"):
            InterpolationMode.BICUBIC  # noqa: B018
        with pytest.raises(ImportError):
            FrozenBatchNorm2d(4)
    assert not [name for name in sys.modules if name.split(".")[0] == "torchvision"]
    with pytest.raises(KeyError), shim.torchvision_stand_in():
        raise KeyError("an error inside the block")
    assert "torchvision" not in sys.modules


def test_torchvision_stand_in_is_not_used_when_torchvision_is_installed(monkeypatch):
    monkeypatch.setattr(shim, "torchvision_installed", lambda: True)
    before = set(sys.modules)
    with shim.torchvision_stand_in() as used:
        assert not used and set(sys.modules) == before


def test_laion_image_code_got_the_stand_in_and_transformers_the_truth(model):
    if shim.torchvision_installed():
        pytest.skip("torchvision is installed: no stand-in is used")
    from transformers.utils import is_torchvision_available
    assert not is_torchvision_available()
    with pytest.raises(ImportError, match="torchvision is not installed"):
        laion.import_clap_module().transform.image_transform(224, is_train=False)


# ---------------------------------------------------------------------------------
# Checkpoints: registry, cache, reachability, reading, strict loading, load_laion
# ---------------------------------------------------------------------------------
def test_checkpoint_registry():
    assert laion.DEFAULT_CHECKPOINT in laion.CHECKPOINTS
    assert set(laion.CHECKPOINTS) <= set(model_names())
    for name, spec in laion.CHECKPOINTS.items():
        assert name.startswith("laion/")
        assert spec.url == "https://huggingface.co/lukewys/laion_clap/resolve/main/" + spec.file
        assert spec.amodel == ("HTSAT-base" if "music" in name else "HTSAT-tiny")
        assert spec.fusion == ("fusion" in name)
        assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
        assert spec.size is None or 1.8e9 < spec.size < 2.4e9


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache, and no mirror unless a test sets one."""
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    return tmp_path / "checkpoints"


def test_checkpoint_cached_checks_the_size(cache):
    name = laion.DEFAULT_CHECKPOINT
    assert not laion.checkpoint_cached(name)
    path = laion.checkpoint_path(name)
    assert path == cache / "630k-audioset-best.pt"
    with open(path, "wb") as f:  # sparse files: no disk space used
        f.truncate(laion.CHECKPOINTS[name].size - 1)
    assert not laion.checkpoint_cached(name)
    with open(path, "wb") as f:
        f.truncate(laion.CHECKPOINTS[name].size)
    assert laion.checkpoint_cached(name)
    assert laion.CHECKPOINTS["laion/630k-fusion"].size is None
    laion.checkpoint_path("laion/630k-fusion").write_bytes(b"x")  # size unknown: presence
    assert laion.checkpoint_cached("laion/630k-fusion")
    with pytest.raises(ValueError, match="valid names"):
        laion.checkpoint_cached("laion/nope")


class _HeadHandler(BaseHTTPRequestHandler):
    def do_HEAD(self):  # noqa: N802
        if self.path.endswith("/630k-audioset-best.pt"):
            self.send_response(200)
            self.send_header("Content-Length", "1863587645")
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture
def head_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HeadHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_checkpoint_reachable_is_false_at_once_offline(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("offline, yet a request was made")

    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    monkeypatch.setattr(laion, "urlopen", no_network)
    assert laion.checkpoint_reachable(laion.DEFAULT_CHECKPOINT) is False


def test_checkpoint_reachable_asks_the_server(monkeypatch, head_server):
    from _loopback import unused_port
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    monkeypatch.setattr(laion, "BASE_URL", head_server + "/lukewys/")
    assert laion.checkpoint_reachable("laion/630k-audioset") is True
    assert laion.checkpoint_reachable("laion/630k") is False  # 404
    monkeypatch.setattr(laion, "BASE_URL", f"http://127.0.0.1:{unused_port()}/")
    assert laion.checkpoint_reachable("laion/630k-audioset", timeout=1.0) is False


def test_under_a_mirror_the_mirrors_size_applies_and_head_goes_to_it(cache, monkeypatch):
    from _laion_mirror import MirrorServer
    name = laion.DEFAULT_CHECKPOINT
    spec = laion.CHECKPOINTS[name]
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with MirrorServer() as mirror:
        served = mirror.add_mirrored(spec.url, b"rehearsal weights")
        mirror.publish()
        monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
        src = laion.checkpoint_source(name)
        assert src.mirrored and src.url == mirror.base_url + served and src.size == 17
        assert src.sha256 == hashlib.sha256(b"rehearsal weights").hexdigest() != spec.sha256
        assert laion.checkpoint_reachable(name) and mirror.heads == [served]
        assert not laion.checkpoint_reachable("laion/630k")  # not in the manifest: no request
        assert mirror.heads == [served]
        path = laion.checkpoint_path(name)
        with open(path, "wb") as f:
            f.truncate(spec.size)  # the real size is the wrong one here
        assert not laion.checkpoint_cached(name)
        assert laion.fetch_checkpoint(name).read_bytes() == b"rehearsal weights"
        assert laion.checkpoint_cached(name)
    monkeypatch.setenv("CLAPNB_MIRROR", f"http://127.0.0.1:{_unused_port()}")
    assert not laion.checkpoint_reachable(name)  # no mirror answering: unreachable
    with pytest.raises(DownloadError, match="is the mirror running"):
        laion.checkpoint_cached(name)


def _unused_port() -> int:
    from _loopback import unused_port
    return unused_port()


def _training_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """A checkpoint as LAION-CLAP's training saves it: DDP "module." names, the
    position_ids buffer, numpy scalars beside the weights."""
    return {"epoch": np.int64(20), "name": "test", "best_metric": np.float64(0.89),
            "state_dict": {"module." + k: v for k, v in state.items()}
            | {"module.text_branch.embeddings.position_ids": torch.arange(514)[None]},
            "optimizer": {"state": {}, "param_groups": [{"lr": np.float32(1e-4), "params": [0]}]}}


def test_read_checkpoint_handles_laions_file_format(tmp_path):
    state = {"audio_projection.0.weight": torch.randn(4, 3), "logit_scale_a": torch.tensor(2.6)}
    torch.save(_training_checkpoint(state), tmp_path / "ckpt.pt")
    read = laion.read_checkpoint(tmp_path / "ckpt.pt")
    assert read.keys() == state.keys()
    assert all(torch.equal(read[k], v) for k, v in state.items())
    torch.save(state, tmp_path / "bare.pt")  # a bare state dict works too
    assert laion.read_checkpoint(tmp_path / "bare.pt").keys() == state.keys()


def test_load_weights_is_strict_and_names_the_architecture(model):
    """Strict loading itself: tests/test_checkpoints.py; here, the package's own module."""
    state = dict(model.clap.state_dict())
    laion.load_weights(model.clap, state)  # its own weights fit
    key = "audio_projection.0.weight"
    with pytest.raises(laion.CheckpointError, match=rf"ckpt does not fit the model \(1 missing: {key}\)\. "
                                                    r"Is it a checkpoint of this architecture \(HTSAT"):
        laion.load_weights(model.clap, {k: v for k, v in state.items() if k != key}, source="ckpt")


def _roberta_state(config: dict) -> dict[str, torch.Tensor]:
    """The text tower's weights as a checkpoint names them, on the meta device (shapes only)."""
    from transformers import RobertaConfig, RobertaModel
    with torch.device("meta"):
        text = RobertaModel(RobertaConfig(**config))
    return {"text_branch." + k: v for k, v in text.state_dict().items()}


def test_the_text_tower_configuration_is_read_off_the_checkpoint(model):
    assert laion.roberta_config(_roberta_state(laion.ROBERTA_BASE)) == laion.ROBERTA_BASE
    assert laion.roberta_config(model.clap.state_dict()) == laion.ROBERTA_TINY
    shallow = {**laion.ROBERTA_BASE, "vocab_size": 300, "num_hidden_layers": 2,
               "intermediate_size": 128, "max_position_embeddings": 100}
    assert laion.roberta_config(_roberta_state(shallow)) == shallow
    state = _roberta_state(laion.ROBERTA_TINY)
    with pytest.raises(laion.CheckpointError, match="no text_branch.embeddings.word_embeddings"):
        laion.roberta_config({k: v for k, v in state.items() if "word_embeddings" not in k})
    gap = {k.replace("encoder.layer.0.", "encoder.layer.1."): v for k, v in state.items()}
    with pytest.raises(laion.CheckpointError, match=r"layers \[1\]"):
        laion.roberta_config(gap)
    short = _roberta_state({**laion.ROBERTA_TINY, "max_position_embeddings": 78})
    with pytest.raises(laion.CheckpointError, match="78 positions; 77-token texts need 79"):
        laion.roberta_config(short)


def test_offline_load_laion_fails_at_once_without_touching_the_network(cache, monkeypatch):
    connects = []

    def refuse(sock, address, *args):
        connects.append(address)
        raise OSError("test_laion: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="CLAPNB_OFFLINE=1 forbids network access"):
        laion.load_laion(laion.DEFAULT_CHECKPOINT, device="cpu")
    assert time.monotonic() - started < 5 and connects == []
    assert not laion.checkpoint_reachable(laion.DEFAULT_CHECKPOINT) and connects == []


def _payload(model: laion.LaionClap) -> bytes:
    buffer = io.BytesIO()
    torch.save(_training_checkpoint(model.clap.state_dict()), buffer)
    return buffer.getvalue()  # ~140 MB


@pytest.mark.slow
def test_load_laion_downloads_verifies_builds_and_loads(model, clips, cache, monkeypatch):
    """The whole of load_laion with a loopback server in place of Hugging Face and the
    random model's weights in place of a pretrained checkpoint (its text tower: a
    one-layer RoBERTa, read off the checkpoint)."""
    from _loopback import LoopbackServer
    payload = _payload(model)
    spec = laion.Checkpoint("test-best.pt", "HTSAT-tiny", False, len(payload),
                            hashlib.sha256(payload).hexdigest(), "test")
    monkeypatch.setitem(laion.CHECKPOINTS, "laion/test", spec)
    monkeypatch.setattr(laion, "load_roberta_tokenizer", tiny_tokenizer)
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    try:
        with LoopbackServer() as server:
            server.add("/lukewys/test-best.pt", payload)
            monkeypatch.setattr(laion, "BASE_URL", server.base_url + "/lukewys/")
            loaded = laion.load_laion("laion/test", device="cpu")
            assert server.hits("/lukewys/test-best.pt") == [None]
            assert laion.checkpoint_cached("laion/test")
            laion.fetch_checkpoint("laion/test")  # cached now: no second download
            assert len(server.hits("/lukewys/test-best.pt")) == 1
    finally:
        laion.checkpoint_path("laion/test").unlink(missing_ok=True)  # pytest keeps tmp dirs
    assert loaded.name == "laion/test" and isinstance(loaded, laion.LaionClap)
    assert "test-best.pt" in loaded.cache_key and spec.sha256 in loaded.cache_key
    assert laion.PREPROCESSING in loaded.cache_key and "rehearsal" not in loaded.cache_key
    assert loaded.rehearsal is False
    assert loaded.clap.text_branch.config.num_hidden_layers == 1
    torch.testing.assert_close(loaded.embed_audio(clips[:1]), model.embed_audio(clips[:1]))
    source_text = laion.LaionClap(model.clap, tiny_tokenizer(), name="source", cache_key="s")
    torch.testing.assert_close(loaded.embed_text(["a dog"]), source_text.embed_text(["a dog"]))


@pytest.mark.slow
def test_load_laion_from_a_mirror_is_a_rehearsal_with_its_own_text_tower(
        fusion_model, clips, cache, monkeypatch, no_hub):
    """The rehearsal: every file from the mirror, checked against its manifest (not the
    real sizes and digests); a shallow text tower and a small tokenizer that fits it."""
    from _laion_mirror import MirrorServer
    from _laion_tokenizer import small_files
    payload = _payload(fusion_model)
    name = "laion/630k-audioset-fusion"  # a real entry: its real size and digest must not apply
    spec = laion.CHECKPOINTS[name]
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    try:
        with MirrorServer() as mirror:
            served = mirror.add_mirrored(spec.url, payload)
            for file, url in laion.TOKENIZER_URLS.items():
                mirror.add_mirrored(url, small_files()[file])
            mirror.publish()
            monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
            assert laion.checkpoint_reachable(name) and not laion.checkpoint_cached(name)
            with warnings.catch_warnings():
                warnings.simplefilter("error", UnverifiedDownload)
                loaded = laion.load_laion(name, device="cpu")
            assert mirror.hits(served) == [None] and laion.checkpoint_cached(name)
    finally:
        laion.checkpoint_path(name).unlink(missing_ok=True)
    assert loaded.rehearsal is True and loaded.fusion
    assert "rehearsal" in loaded.cache_key and hashlib.sha256(payload).hexdigest() in loaded.cache_key
    assert laion.PREPROCESSING_FUSION in loaded.cache_key
    assert loaded.clap.text_branch.config.num_hidden_layers == 1
    torch.testing.assert_close(loaded.embed_audio(clips), fusion_model.embed_audio(clips))
    source_text = laion.LaionClap(fusion_model.clap, loaded.tokenizer, name="source", cache_key="s")
    texts = ["a dog barks", "rain on the roof"]
    torch.testing.assert_close(loaded.embed_text(texts), source_text.embed_text(texts))


def test_audio_config_other_than_laions_is_refused():
    from types import SimpleNamespace
    cfg = SimpleNamespace(sample_rate=44_100, clip_samples=441_000, window_size=1024,
                          hop_size=441, mel_bins=64)
    with pytest.raises(ValueError, match="audio config"):
        laion.LaionClap(SimpleNamespace(audio_cfg=cfg), None, name="x", cache_key="x")
