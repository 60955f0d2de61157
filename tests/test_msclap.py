"""The msclap backend (Microsoft CLAP 2023 and 2022), tested offline on randomly
initialised models of the real architectures (HTS-AT + GPT-2, CNN14 + BERT): the
pretrained checkpoints cannot be downloaded here, so everything up to them runs with real
code (the package's own model classes and configurations, the checkpoint file format,
the downloads through a loopback server, the rehearsal's mirror). Embeddings are compared
with the package's own inference code (``CLAPWrapper.get_audio_embeddings`` /
``get_text_embeddings``, loaded offline by tests/_msclap_reference.py) on the same weights."""

import dataclasses
import hashlib
import io
import socket
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clapnb
from clapnb import checkpoints, msclap, registry
from clapnb.download import DownloadError, UnverifiedDownload

RATE = msclap.SAMPLE_RATE
NAMES = ("msclap/2023", "msclap/2022")
PARITY_ATOL = 1e-4
_CONNECTS: list = []  # network connections attempted while the module fixtures were built


def _files_tokenizer(text_model: str, files: dict[str, bytes], folder: Path):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return msclap.build_tokenizer(text_model, {name: folder / name for name in files})


def _small_tokenizer(text_model: str, folder: Path):
    from _msclap_tokenizer import bert_small_vocab, gpt2_small_files
    files = gpt2_small_files() if text_model == "gpt2" else bert_small_vocab()
    return _files_tokenizer(text_model, files, folder)


def _with_bn0_statistics(model: msclap.MsClap) -> msclap.MsClap:
    """A fresh batch norm is the identity; give it statistics like a trained one's so
    that comparisons with the package see whether it is applied."""
    bn0 = model._base().bn0
    with torch.no_grad():
        bn0.running_mean.copy_(torch.linspace(-40.0, 0.0, 64))
        bn0.running_var.copy_(torch.linspace(50.0, 400.0, 64))
        bn0.weight.copy_(torch.linspace(0.5, 1.5, 64))
        bn0.bias.copy_(torch.linspace(-1.0, 1.0, 64))
    if model.audio_encoder_name == "Cnn14":
        _calibrate_batch_norms(model)
    return model


def _calibrate_batch_norms(model: msclap.MsClap) -> None:
    """CNN14's other batch norms get the statistics of a few clips (a fresh one is the
    identity, and a random CNN14 then maps every clip to nearly the same embedding)."""
    cnn = model._base()
    norms = [m for name, m in cnn.named_modules()
             if isinstance(m, torch.nn.BatchNorm2d) and name != "bn0"]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # a cumulative average
        bn.train()
    with torch.no_grad():
        x = model.prepare([_clip(k * RATE, 100 + k) for k in range(1, 5)])
        model.clap.audio_encoder(x)
    for bn in norms:
        bn.momentum = 0.1
        bn.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, msclap.MsClap]:
    """A random model of each version (one-layer text towers, small real tokenizers),
    built once, with every network connection refused."""
    def refuse(sock, address, *args):
        _CONNECTS.append(address)
        raise OSError("test_msclap: no network while the models are built")

    folder = tmp_path_factory.mktemp("tokenizers")
    built = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        for seed, name in enumerate(NAMES):
            text_model = msclap.CHECKPOINTS[name].text_model
            tokenizer = _small_tokenizer(text_model, folder / text_model)
            built[name] = _with_bn0_statistics(msclap.random_msclap(name, seed=seed, tokenizer=tokenizer))
    return built


@pytest.fixture(scope="module")
def wrapper():
    """msclap/CLAPWrapper.py, loaded offline (tests/_msclap_reference.py)."""
    from _msclap_reference import load_wrapper
    return load_wrapper()


@pytest.fixture(scope="module")
def references(models, wrapper) -> dict:
    """Per version, a CLAPWrapper built by the package with the random model's weights."""
    from _msclap_reference import reference
    return {name: reference(wrapper, m, m.tokenizer) for name, m in models.items()}


def _clip(n: int, seed: int) -> np.ndarray:
    """``n`` samples whose halves differ (a chirp in noise, then a tone), with a burst."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    x = 0.02 * rng.standard_normal(n)
    half = n // 2
    x[:half] += 0.3 * np.sin(2 * np.pi * (200 + 3000 * t[:half] / max(t[half], 1e-3)) * t[:half])
    x[half:] += 0.4 * np.sin(2 * np.pi * 2500 * t[half:])
    x[n // 3:n // 3 + 2000] *= 5.0
    return x.astype(np.float32)


def _parity_clips(model: msclap.MsClap) -> dict[str, np.ndarray]:
    """Shorter than, equal to and longer than the model's window."""
    n = model.clip_samples
    lengths = {"shorter (2.5 s)": int(2.5 * RATE), f"equal ({n // RATE} s)": n,
               f"longer ({n // RATE + 6} s)": n + 6 * RATE}
    return {name: _clip(k, seed) for seed, (name, k) in enumerate(lengths.items())}


# ---------------------------------------------------------------------------------
# Importing and building: no network, msclap/__init__.py never runs
# ---------------------------------------------------------------------------------
def test_building_needs_no_network_and_never_runs_msclaps_init(models):
    assert _CONNECTS == []
    assert all(isinstance(m, clapnb.ClapModel) for m in models.values())
    if "torchaudio" not in sys.modules:
        assert "msclap" not in sys.modules and "msclap.CLAPWrapper" not in sys.modules
    assert "msclap.models.clap" in sys.modules and "msclap.models.htsat" in sys.modules
    package = msclap._package_folder()
    assert not [p for p in sys.path if p and Path(p).resolve().is_relative_to(package)]


def test_the_models_are_the_packages_configurations(models):
    m23, m22 = models["msclap/2023"], models["msclap/2022"]
    assert (m23.clip_samples, m23.text_len, m23.audio_encoder_name) == (7 * RATE, 77, "HTSAT")
    assert (m22.clip_samples, m22.text_len, m22.audio_encoder_name) == (5 * RATE, 100, "Cnn14")
    for m in (m23, m22):
        assert m.stft_config == msclap.STFT and m.embed_dim == 1024 and m.sample_rate == 44_100
        assert m.mel_filters().shape == (513, 64)
        assert m.logit_scale == pytest.approx(1 / 0.07)  # the package's initial temperature
    # HTS-AT takes its front end from msclap/models/config.py (32 kHz, 50-14,000 Hz)
    import librosa
    slaney32k = librosa.filters.mel(sr=32_000, n_fft=1024, n_mels=64, fmin=50, fmax=14_000).T
    np.testing.assert_allclose(m23.mel_filters().numpy(), slaney32k, atol=1e-7)
    slaney44k = librosa.filters.mel(sr=44_100, n_fft=1024, n_mels=64, fmin=50, fmax=14_000).T
    np.testing.assert_allclose(m22.mel_filters().numpy(), slaney44k, atol=1e-7)


# ---------------------------------------------------------------------------------
# Audio: parity with the package's own path, the STFT path, gradients, features
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_audio_embeddings_match_the_package(models, references, wrapper, name, monkeypatch):
    """CLAPWrapper.get_audio_embeddings (repeat-pad, crop, the package's torchlibrosa front
    end and encoder; normalised as compute_similarity does) against embed_audio, on clips
    shorter than, equal to and longer than the window; the random crop start made 0."""
    model, ref = models[name], references[name]
    clips = _parity_clips(model)
    ref.clips.update(clips)
    draws = []
    monkeypatch.setattr(wrapper.random, "randrange", lambda stop: draws.append(stop) or 0)
    theirs = F.normalize(ref.get_audio_embeddings(list(clips), resample=True), dim=-1)
    ours = model.embed_audio(list(clips.values()))
    differences = dict(zip(clips, (ours - theirs).abs().amax(dim=1).tolist()))
    print(f"{name} audio max |ours - package|:", differences)
    assert max(differences.values()) <= PARITY_ATOL, differences
    assert draws == [6 * RATE]  # the long clip: its crop drawn once, here at the start
    assert float(ours[0] @ ours[2]) < 0.999  # the clips do give different embeddings


@pytest.mark.parametrize("name", NAMES)
def test_embed_from_spectrogram_of_the_stft_equals_embed_audio(models, name):
    model = models[name]
    clip = _clip(3 * RATE, 7)
    embedded = model.embed_audio(clip)
    assert embedded.shape == (1, 1024) and embedded.dtype == torch.float32 and not embedded.requires_grad
    torch.testing.assert_close(embedded.norm(dim=1), torch.ones(1))
    with torch.no_grad():
        again = model.embed_from_spectrogram(model.stft_config.stft(model.prepare(clip)).abs())
    torch.testing.assert_close(again, embedded, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_windows_are_repeated_and_cut_or_cropped_at_the_start(models, name):
    model = models[name]
    n = model.clip_samples
    short = _clip(2 * RATE + 123, 3)
    prepared = model.prepare(short)[0].numpy()
    reps = -(-n // len(short))
    np.testing.assert_array_equal(prepared, np.tile(short, reps)[:n])  # no zeros: a partial repeat
    assert prepared[-1] != 0
    long = _clip(n + 3 * RATE, 4)
    first = model.embed_audio(long)
    assert torch.equal(first, model.embed_audio(long))  # deterministic
    torch.testing.assert_close(first, model.embed_audio(long[:n]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="clip 1 contains NaN"):
        model.embed_audio([short, np.full(n + 1, np.nan, dtype=np.float32)])


FEATURES = {"msclap/2023": [(96, 16, 256), (96, 16, 256), (192, 8, 128), (384, 4, 64), (768, 2, 32)],
            "msclap/2022": [(64, 32, 345), (128, 16, 172), (256, 8, 86), (512, 4, 43),
                            (1024, 2, 21), (2048, 2, 21)]}


@pytest.mark.parametrize("name", NAMES)
def test_gradients_flow_to_the_spectrogram_only_and_features_are_maps(models, name):
    model = models[name]
    magnitude = model.spectrogram(_clip(4 * RATE, 5)).abs().requires_grad_()
    assert magnitude.shape == (1, 513, model.stft_config.n_frames(model.clip_samples))
    encoding = model.encode_spectrogram(magnitude)
    assert [tuple(f.shape[1:]) for f in encoding.features] == FEATURES[name]
    target = torch.nn.functional.normalize(torch.randn(1024), dim=0)
    (encoding.embedding @ target).sum().backward()
    assert magnitude.grad is not None and torch.isfinite(magnitude.grad).all()
    assert magnitude.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="abs"):
        model.encode_spectrogram(model.spectrogram(_clip(RATE, 1)))  # complex
    with pytest.raises(ValueError, match=f"{model.clip_samples // RATE}-s"):
        model.encode_spectrogram(magnitude.detach()[..., :500])


def test_folding_undoes_htsats_image_layout(models):
    """reshape_wav2img stacks 4 time chunks along frequency; _to_map must put them back."""
    model = models["msclap/2023"]
    logmel = torch.randn(2, 1, 1024, 64)  # (N, 1, frames, mels)
    image = model._base().reshape_wav2img(logmel)  # (N, 1, 256, 256)
    tokens = image.flatten(2).transpose(1, 2)  # one "token" per pixel
    assert torch.equal(model._to_map(tokens, (256, 256)), logmel.transpose(2, 3))
    assert torch.equal(model._to_tokens(model._to_map(tokens, (256, 256))), tokens)


def test_train_mode_leaves_the_model_frozen(models):
    model = models["msclap/2022"]
    model.train()
    try:
        assert model.training and not any(m.training for m in model.clap.modules())
    finally:
        model.eval()


LAYERS = {"msclap/2023": ["projection", "stage 4", "stage 3", "stage 2", "stage 1", "patch embedding"],
          "msclap/2022": ["projection", "fc1", *(f"conv block {i}" for i in range(6, 0, -1))]}


@pytest.mark.parametrize("name", NAMES)
def test_encoder_layers_and_grad_cam_through_the_feature_tap(models, name):
    from clapnb.attribution import attribute
    model = models[name]
    layers = model.encoder_layers()
    assert [n for n, _ in layers] == LAYERS[name]
    assert all(any(p.numel() for p in module.parameters()) for _, module in layers)
    magnitude = model.spectrogram([_clip(3 * RATE, 8), _clip(5 * RATE, 9)]).abs()
    prompts = torch.nn.functional.normalize(torch.randn(3, 1024, generator=torch.Generator().manual_seed(0)), dim=1)
    for index in (-1, 1):
        cam = attribute(model, magnitude, prompts, torch.tensor([0, 2]), "gradcam", feature_index=index)
        assert cam.shape == magnitude.shape and torch.isfinite(cam).all()
    with model.feature_tap(-1) as tap:
        seen = []
        handle = tap.register_forward_hook(lambda m, i, out: seen.append(out.shape))
        with torch.no_grad():
            features = model.encode_spectrogram(magnitude).features
        handle.remove()
    assert seen == [features[-1].shape]
    n = len(FEATURES[name])
    with pytest.raises(IndexError, match="out of range"):
        with model.feature_tap(n):
            pass
    if name == "msclap/2023":
        with pytest.raises(ValueError, match="patch embedding"):
            with model.feature_tap(0):
                pass


def test_cascading_randomisation_changes_the_embedding(models):
    from clapnb.sanity import cascading_randomization
    model = models["msclap/2022"]
    clip = _clip(2 * RATE, 2)
    before = model.embed_audio(clip)
    steps = cascading_randomization(model, seed=0)
    name, broken = next(steps)
    assert name == "projection" and broken is not model
    assert (broken.embed_audio(clip) - before).abs().max() > 1e-3
    torch.testing.assert_close(model.embed_audio(clip), before)  # the original is left alone


# ---------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------
TEXTS = ["a dog barks", "Rain on the roof!", "the dog barks on a roof", "ünïcödé ♪ rain"]
#: longer than text_len (77 / 100) but within the one-layer towers' 128 positions
LONG = {"msclap/2023": "the dog barks " * 30, "msclap/2022": "the dog barks " * 38}


@pytest.mark.parametrize("name", NAMES)
def test_text_embeddings_match_the_package(models, references, name):
    """CLAPWrapper.get_text_embeddings (GPT-2: the end token appended; padded to text_len;
    the package's pooling), normalised, against embed_text; a text longer than text_len
    is not truncated by the package: compared with the package embedding it on its own."""
    model, ref = models[name], references[name]
    long = LONG[name]
    n_long = len(model.tokenizer(long)["input_ids"])
    assert model.text_len < n_long <= model.text_positions
    ours = model.embed_text([*TEXTS, long])
    theirs = F.normalize(torch.cat([ref.get_text_embeddings(TEXTS), ref.get_text_embeddings([long])]), dim=-1)
    difference = float((ours - theirs).abs().max())
    print(f"{name} text max |ours - package|:", difference)
    assert difference <= PARITY_ATOL
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(len(ours)))
    torch.testing.assert_close(model.embed_text(TEXTS, batch_size=1), ours[:4], atol=1e-5, rtol=0)
    assert float(ours[0] @ ours[2]) < 0.999


def test_gpt2_texts_end_with_the_end_token_and_are_read_where_the_package_reads(models):
    tokenizer = models["msclap/2023"].tokenizer
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id == 0
    ids = tokenizer("a dog barks " + msclap.END_TOKEN)["input_ids"]
    assert ids[-1] == tokenizer.convert_tokens_to_ids(msclap.END_TOKEN)


@pytest.mark.parametrize("name", NAMES)
def test_texts_longer_than_the_text_tower_and_models_without_text_are_refused(models, name):
    model = models[name]
    with pytest.raises(ValueError, match="text 1 has .* tokens.*at most 128"):
        model.embed_text(["a dog", "the dog barks " * 60])
    bare = msclap.MsClap(model.clap, None, version=model.version, name="x", cache_key="x")
    with pytest.raises(RuntimeError, match="no tokenizer"):
        bare.embed_text(["a dog barks"])


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_text_parity_with_the_real_size_text_tower(wrapper, name, tmp_path):
    """The real text architecture (gpt2 / bert-base-uncased configuration, random weights)
    with a tokenizer shaped like the real one, against the package's get_text_embeddings."""
    from _msclap_reference import reference
    from _msclap_tokenizer import bert_shaped_vocab, gpt2_shaped_files
    spec = msclap.CHECKPOINTS[name]
    files = gpt2_shaped_files() if spec.text_model == "gpt2" else bert_shaped_vocab()
    tokenizer = _files_tokenizer(spec.text_model, files, tmp_path)
    msclap.check_tokenizer(spec.text_model, tokenizer)
    real = msclap.TEXT_MODELS[spec.text_model].real
    model = msclap.random_msclap(name, seed=3, text=real, tokenizer=tokenizer)
    assert msclap.text_config(spec.text_model, model.clap.state_dict()) == real
    ref = reference(wrapper, model, tokenizer)
    texts = ["Hello world", "hello world hello", "world"]
    theirs = F.normalize(ref.get_text_embeddings(texts), dim=-1)
    ours = model.embed_text(texts)
    difference = float((ours - theirs).abs().max())
    print(f"{name} real-size text tower max |ours - package|:", difference)
    assert difference <= PARITY_ATOL and float(ours[0] @ ours[2]) < 0.999


# ---------------------------------------------------------------------------------
# Tokenizers: the real ones only, from clapnb's downloads
# ---------------------------------------------------------------------------------
class _Stub:
    """Tokenizer-shaped object: a vocabulary size and what the probe text becomes."""

    def __init__(self, size: int, ids: list[int], pad: int = 0, vocab=()):
        self.size, self.ids, self.pad_token_id, self.vocab = size, ids, pad, dict.fromkeys(vocab, 0)

    def __len__(self) -> int:
        return self.size

    def __call__(self, text):
        return {"input_ids": self.ids}

    def get_vocab(self):
        return self.vocab


def test_stand_in_tokenizers_are_refused(tmp_path):
    from transformers import BertTokenizerFast, GPT2TokenizerFast

    from _msclap_tokenizer import bert_shaped_vocab, gpt2_shaped_files
    for text_model, stand_in, expected in (("gpt2", GPT2TokenizerFast(), "50,257"),
                                           ("bert", BertTokenizerFast(), "30,522")):
        with pytest.raises(msclap.TokenizerError, match=f"not the real .* one.*{expected}.*delete"):
            msclap.check_tokenizer(text_model, stand_in)
    gpt2_files = {n: tmp_path / n for n in ("vocab.json", "merges.txt")}
    for name, data in gpt2_shaped_files().items():
        gpt2_files[name].write_bytes(data)
    wrong_keyword = GPT2TokenizerFast(vocab_file=str(gpt2_files["vocab.json"]),
                                      merges_file=str(gpt2_files["merges.txt"]))
    if len(wrong_keyword) != 50257:  # transformers 5: a silent stand-in
        with pytest.raises(msclap.TokenizerError):
            msclap.check_tokenizer("gpt2", wrong_keyword)
    real_shaped = msclap.build_tokenizer("gpt2", gpt2_files)
    msclap.check_tokenizer("gpt2", real_shaped)
    assert real_shaped("Hello world")["input_ids"] == [15496, 995] and real_shaped.pad_token_id == 0
    (tmp_path / "vocab.txt").write_bytes(bert_shaped_vocab()["vocab.txt"])
    bert = msclap.build_tokenizer("bert", {"vocab.txt": tmp_path / "vocab.txt"})
    msclap.check_tokenizer("bert", bert)
    assert bert("Hello World")["input_ids"] == [101, 7592, 2088, 102]
    with pytest.raises(msclap.TokenizerError, match="30,522"):
        msclap.check_tokenizer("bert", _Stub(30522, [101, 1, 2, 102]))  # right size, wrong ids


def test_a_tokenizer_must_fit_the_checkpoints_text_tower(models):
    for m in models.values():
        msclap.check_tokenizer_fits(m.tokenizer, m.text_model, msclap.TEXT_MODELS[m.text_model].tiny)
    msclap.check_tokenizer_fits(_Stub(50257, [], vocab=[msclap.END_TOKEN]), "gpt2", msclap.GPT2_SMALL)
    with pytest.raises(msclap.TokenizerError, match="50,257 tokens, the embedding table 1,000 rows"):
        msclap.check_tokenizer_fits(_Stub(50257, [], vocab=[msclap.END_TOKEN]), "gpt2", msclap.GPT2_TINY)
    with pytest.raises(msclap.TokenizerError, match="padding id is 5.*no <\\|endoftext\\|>"):
        msclap.check_tokenizer_fits(_Stub(10, [], pad=5), "gpt2", msclap.GPT2_TINY)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache, and no mirror unless a test sets one."""
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    return tmp_path


@pytest.fixture
def no_hub(monkeypatch):
    """The Hugging Face hub client is never asked for a tokenizer."""
    from transformers import AutoTokenizer, BertTokenizerFast, GPT2TokenizerFast

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called")

    for cls in (AutoTokenizer, BertTokenizerFast, GPT2TokenizerFast):
        monkeypatch.setattr(cls, "from_pretrained", refuse)


def _serve_tokenizer(server, monkeypatch, text_model: str, files: dict[str, bytes]) -> None:
    """The tokenizer files of ``text_model`` served by a loopback server at its addresses."""
    tower = msclap.TEXT_MODELS[text_model]
    urls = {}
    for name, url in tower.urls.items():
        path = "/" + url.split("://", 1)[1].split("/", 1)[1]
        server.add(path, files[name])
        urls[name] = server.base_url + path
    monkeypatch.setitem(msclap.TEXT_MODELS, text_model, dataclasses.replace(tower, urls=urls))


@pytest.mark.parametrize("text_model", ["gpt2", "bert"])
def test_tokenizers_are_downloaded_unverified_checked_cached_and_fetched_again_when_stale(
        cache, monkeypatch, no_hub, text_model):
    from _loopback import LoopbackServer
    from _msclap_tokenizer import bert_shaped_vocab, bert_small_vocab, gpt2_shaped_files, gpt2_small_files
    assert msclap.TOKENIZER_URLS == {
        "gpt2": {"vocab.json": "https://huggingface.co/openai-community/gpt2/resolve/main/vocab.json",
                 "merges.txt": "https://huggingface.co/openai-community/gpt2/resolve/main/merges.txt"},
        "bert": {"vocab.txt": "https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt"}}
    real, small = ((gpt2_shaped_files(), gpt2_small_files()) if text_model == "gpt2"
                   else (bert_shaped_vocab(), bert_small_vocab()))
    tower = msclap.TEXT_MODELS[text_model]
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with LoopbackServer() as server:
        _serve_tokenizer(server, monkeypatch, text_model, real)
        with pytest.warns(UnverifiedDownload, match="no checksum is published"):
            tokenizer = msclap.load_tokenizer(text_model)
        assert len(tokenizer) == tower.vocab_size
        assert tokenizer(tower.probe[0])["input_ids"] == tower.probe[1]
        assert len(server.requests) == len(real)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # cached: no download, no warning
            msclap.load_tokenizer(text_model)
        assert len(server.requests) == len(real)
    folder = msclap.tokenizer_dir(text_model)
    assert folder == cache / "tokenizers" / tower.name
    for name, data in small.items():  # what a rehearsal would leave: refused offline...
        (folder / name).write_bytes(data)
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    with pytest.raises(msclap.TokenizerError, match=f"not the real {tower.name} one"):
        msclap.load_tokenizer(text_model)
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with LoopbackServer() as server:  # ... and fetched afresh online
        _serve_tokenizer(server, monkeypatch, text_model, real)
        with pytest.warns(UnverifiedDownload):
            assert len(msclap.load_tokenizer(text_model)) == tower.vocab_size
        assert len(server.requests) == len(real)


def test_under_a_mirror_the_tokenizer_is_its_own_verified_and_not_probed(cache, monkeypatch, no_hub):
    from _laion_mirror import MirrorServer
    from _msclap_tokenizer import gpt2_small_files
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    with MirrorServer() as mirror:
        for name, url in msclap.TOKENIZER_URLS["gpt2"].items():
            mirror.add_mirrored(url, gpt2_small_files()[name])
        mirror.publish()
        monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnverifiedDownload)  # the manifest verifies them
            tokenizer = msclap.load_tokenizer("gpt2")
        assert mirror.hits("/huggingface.co/openai-community/gpt2/resolve/main/vocab.json") == [None]
    msclap.check_tokenizer_fits(tokenizer, "gpt2", msclap.GPT2_TINY)


# ---------------------------------------------------------------------------------
# Checkpoints: registry, reading, strict loading, text towers from shapes, loading
# ---------------------------------------------------------------------------------
def test_checkpoints_are_registered_online_without_ground_truth():
    assert [n for n in registry.model_names() if n.startswith("msclap/")] == list(NAMES)
    for name, spec in msclap.CHECKPOINTS.items():
        assert spec.url == f"https://huggingface.co/microsoft/msclap/resolve/main/CLAP_weights_{spec.version}.pth"
        entry = registry.backend(name)
        assert entry.mode == "online" and entry.family == "MS-CLAP"
        assert entry.decoder is None and entry.ground_truth is None
        assert entry.load.func is msclap.load_msclap and entry.load.args == (name,)
        assert entry.clips is registry._esc50_clips and entry.scenes is registry._clotho_scenes
        assert entry.decoder_scenes is registry._clotho_scenes
        assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)
    assert msclap.CHECKPOINTS["msclap/2022"].size == 2_333_972_488
    assert msclap.CHECKPOINTS["msclap/2023"].seconds == 7 and msclap.CHECKPOINTS["msclap/2022"].seconds == 5


def test_read_checkpoint_handles_the_published_format(tmp_path):
    state = {"audio_encoder.projection.linear1.weight": torch.randn(4, 3),
             "logit_scale": torch.tensor(2.6),
             "audio_encoder.base.htsat.bn0.num_batches_tracked": torch.tensor(5)}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(4, 3)}},
                 "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999), "params": [0]}]}
    torch.save({"model": state, "optimizer": optimizer, "epoch": 44}, tmp_path / "ckpt.pth")
    read = msclap.read_checkpoint(tmp_path / "ckpt.pth")
    assert read.keys() == state.keys() and all(torch.equal(read[k], v) for k, v in state.items())
    torch.save(state, tmp_path / "bare.pth")
    assert msclap.read_checkpoint(tmp_path / "bare.pth").keys() == state.keys()


def test_load_weights_is_strict_but_for_what_the_package_lets_pass(models):
    """Strict loading itself: tests/test_checkpoints.py; here, the message names the
    versions, and what the package's strict=False lets pass passes."""
    model = models["msclap/2023"]
    module = model.clap
    state = dict(module.state_dict())
    msclap.load_weights(module, state)  # its own weights fit
    key = "audio_encoder.projection.linear1.weight"
    with pytest.raises(msclap.CheckpointError, match=rf"ckpt does not fit the model \(1 missing: {key}\)\. "
                                                     r"Is it an msclap checkpoint of this version \(2023"):
        msclap.load_weights(module, {k: v for k, v in state.items() if k != key}, source="ckpt")
    # what the package's strict=False lets pass, and clapnb too: keys of older transformers,
    # and buffers the model computes itself (the 2023 file holds no int64 tensor)
    computed = [k for k in state if k.endswith(("num_batches_tracked", "relative_position_index"))]
    assert computed and any("relative_position_index" in k for k in computed)
    old = {k: v for k, v in state.items() if k not in computed}
    old["caption_encoder.base.h.0.attn.masked_bias"] = torch.tensor(-1e4)
    old["caption_encoder.base.h.0.attn.bias"] = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    msclap.load_weights(module, old)
    assert all(torch.equal(module.state_dict()[k], state[k]) for k in computed)
    bert = models["msclap/2022"].clap
    bert_state = dict(bert.state_dict()) | {
        "caption_encoder.base.embeddings.position_ids": torch.arange(128)[None]}
    msclap.load_weights(bert, bert_state)


def test_a_checkpoint_with_another_stft_is_refused(models):
    """The checkpoint holds the STFT's kernels too: clapnb's torch.stft must be that STFT."""
    model = models["msclap/2023"]
    kernel = model._base().spectrogram_extractor.stft.conv_real.weight
    original = kernel.detach().clone()
    with torch.no_grad():
        kernel.mul_(torch.hamming_window(1024) / torch.hann_window(1024).clamp_min(1e-3))
    try:
        with pytest.raises(msclap.CheckpointError, match="not the Hann-window STFT"):
            msclap.MsClap(model.clap, None, version="2023", name="x", cache_key="x")
    finally:
        with torch.no_grad():
            kernel.copy_(original)
    msclap.MsClap(model.clap, None, version="2023", name="x", cache_key="x")


def _tower_state(text_model: str, config: dict) -> dict[str, torch.Tensor]:
    """A text tower's weights as a checkpoint names them, on the meta device (shapes only)."""
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model
    with torch.device("meta"):
        tower = GPT2Model(GPT2Config(**config)) if text_model == "gpt2" else BertModel(BertConfig(**config))
    return {"caption_encoder.base." + k: v for k, v in tower.state_dict().items()}


@pytest.mark.parametrize("text_model", ["gpt2", "bert"])
def test_the_text_tower_configuration_is_read_off_the_checkpoint(text_model):
    tower = msclap.TEXT_MODELS[text_model]
    assert msclap.text_config(text_model, _tower_state(text_model, tower.real)) == tower.real
    assert msclap.text_config(text_model, _tower_state(text_model, tower.tiny)) == tower.tiny
    layers = "h." if text_model == "gpt2" else "encoder.layer."
    state = _tower_state(text_model, tower.tiny)
    gap = {k.replace(layers + "0.", layers + "1."): v for k, v in state.items()}
    with pytest.raises(msclap.CheckpointError, match=r"layers \[1\]"):
        msclap.text_config(text_model, gap)
    other = "bert" if text_model == "gpt2" else "gpt2"
    with pytest.raises(msclap.CheckpointError, match="not a (GPT-2|BERT)"):
        msclap.text_config(other, state)


@pytest.mark.parametrize("name", NAMES)
def test_offline_load_fails_at_once_without_touching_the_network(cache, monkeypatch, name):
    connects = []

    def refuse(sock, address, *args):
        connects.append(address)
        raise OSError("test_msclap: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DownloadError, match="CLAPNB_OFFLINE=1 forbids network access"):
        clapnb.load_model(name, device="cpu", verbose=False)
    assert time.monotonic() - started < 5 and connects == []
    assert not msclap.checkpoint_cached(name)


def test_without_the_package_load_says_how_to_install_it_before_any_download(cache, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "msclap" else find_spec(name, *args))
    monkeypatch.setattr(checkpoints, "download_file", lambda *a, **k: pytest.fail("a download started"))
    with pytest.raises(ImportError, match="pip install --no-deps msclap==1.3.4"):
        msclap.load_msclap("msclap/2023", device="cpu")


@pytest.mark.slow
def test_load_msclap_from_a_mirror_is_a_rehearsal_with_its_own_text_tower(
        models, cache, monkeypatch, no_hub):
    """The whole of load_msclap against a loopback mirror: the checkpoint in the published
    format ({"model": state_dict}) with the random model's weights (a one-layer GPT-2),
    the small GPT-2 tokenizer; every file checked against the mirror's manifest."""
    from _laion_mirror import MirrorServer
    from _msclap_tokenizer import gpt2_small_files
    source = models["msclap/2023"]
    buffer = io.BytesIO()
    torch.save({"model": source.clap.state_dict()}, buffer)
    payload = buffer.getvalue()
    name = "msclap/2023"
    spec = msclap.CHECKPOINTS[name]
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    try:
        with MirrorServer() as mirror:
            served = mirror.add_mirrored(spec.url, payload)
            for file, url in msclap.TOKENIZER_URLS["gpt2"].items():
                mirror.add_mirrored(url, gpt2_small_files()[file])
            mirror.publish()
            monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
            with warnings.catch_warnings():
                warnings.simplefilter("error", UnverifiedDownload)
                loaded = clapnb.load_model(name, device="cpu", verbose=False)
            assert mirror.hits(served) == [None] and msclap.checkpoint_cached(name)
    finally:
        msclap.checkpoint_path(name).unlink(missing_ok=True)
    assert isinstance(loaded, msclap.MsClap) and loaded.rehearsal is True and loaded.name == name
    assert "rehearsal" in loaded.cache_key and hashlib.sha256(payload).hexdigest() in loaded.cache_key
    assert msclap.preprocessing("2023") in loaded.cache_key
    assert loaded.clap.caption_encoder.base.config.n_layer == 1
    clips = [_clip(3 * RATE, 1), _clip(9 * RATE, 2)]
    torch.testing.assert_close(loaded.embed_audio(clips), source.embed_audio(clips))
    torch.testing.assert_close(loaded.embed_text(TEXTS), source.embed_text(TEXTS))
