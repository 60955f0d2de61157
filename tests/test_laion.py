"""The LAION-CLAP backend, tested offline on a randomly initialised model of the real
architecture (HTSAT-tiny): the pretrained checkpoints themselves cannot be downloaded
here, so everything up to them runs with real code (the package's own model classes,
the checkpoint file format, the download through a loopback server)."""

import importlib.util
import math
import socket
import string
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clapnb
from clapnb import _torchvision_shim as shim
from clapnb import laion
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
    # a fresh batch norm is the identity; give it statistics like a trained one's so
    # that comparisons with the package see whether it is applied
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
    """laion_clap's get_audio_features, data_filling="repeatpad" (training/data.py):
    repeat the clip int(480000 / len) times, then zero-pad to 480,000 samples."""
    x = torch.from_numpy(clip)
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


@pytest.mark.slow
def test_fusion_model_matches_the_package_fusion_path(clips):
    model = laion.random_laion("HTSAT-tiny", fusion=True, seed=1)
    assert model.fusion and model.name.endswith("fusion")
    ours = model.embed_audio(clips[:1])
    # the package's path for a clip of at most 10 s: get_mel (torchaudio MelSpectrogram,
    # HTK filters, then 10 log10) stacked 4 times as "mel_fusion", longer=False
    power = model.stft_config.stft(torch.from_numpy(clips[0])[None]).abs() ** 2
    mel = 10 * torch.log10(torch.clamp(power.transpose(1, 2) @ model.htk_filters, min=1e-10))
    batch = {"longer": torch.tensor([False]), "mel_fusion": mel[:, None].repeat(1, 4, 1, 1)}
    with torch.no_grad():
        pooled = model.clap.audio_branch(batch, device="cpu")["embedding"]
        theirs = F.normalize(model.clap.audio_projection(pooled), dim=-1)
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=0)


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


def test_the_offline_stand_in_tokenizer_is_refused():
    from transformers import RobertaTokenizer
    stand_in = RobertaTokenizer()  # what from_pretrained returns offline without a cache
    with pytest.raises(laion.TokenizerError, match="not the real one.*HF_HUB_OFFLINE"):
        laion.check_roberta_tokenizer(stand_in)
    with pytest.raises(laion.TokenizerError, match="50,265"):
        laion.check_roberta_tokenizer(_Stub(50265, [0, 1, 2]))  # right size, wrong ids
    laion.check_roberta_tokenizer(_Stub(50265, [0, 31414, 232, 2]))  # behaves like roberta-base


def test_load_roberta_tokenizer_refuses_a_stand_in_and_stays_offline(monkeypatch):
    from transformers import RobertaTokenizer
    calls = []

    def from_pretrained(name, **kwargs):
        calls.append((name, kwargs))
        return RobertaTokenizer()

    monkeypatch.setattr(RobertaTokenizer, "from_pretrained", from_pretrained)
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    with pytest.raises(laion.TokenizerError, match="not the real one"):
        laion.load_roberta_tokenizer()
    assert calls == [("roberta-base", {"local_files_only": True})]
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")  # online: tries the cache, then a download
    with pytest.raises(laion.TokenizerError):
        laion.load_roberta_tokenizer()
    assert calls[1:] == [("roberta-base", {"local_files_only": True}), ("roberta-base", {})]


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
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
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


def test_read_checkpoint_refuses_other_python_objects(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": threading.Event}, tmp_path / "evil.pt")
    with pytest.raises(laion.CheckpointError, match="threading.Event"):
        laion.read_checkpoint(tmp_path / "evil.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(laion.CheckpointError, match="unreadable.*delete it"):
        laion.read_checkpoint(tmp_path / "cut.pt")
    torch.save({"state_dict": {"w": [1, 2]}}, tmp_path / "odd.pt")
    with pytest.raises(laion.CheckpointError, match="no state dict"):
        laion.read_checkpoint(tmp_path / "odd.pt")


def test_load_weights_is_strict_and_says_what_does_not_fit(model):
    state = dict(model.clap.state_dict())
    laion.load_weights(model.clap, state)  # its own weights fit
    key = "audio_projection.0.weight"
    cases = {"1 missing: " + key: {k: v for k, v in state.items() if k != key},
             "1 unexpected: extra.weight": state | {"extra.weight": torch.ones(1)},
             "1 with another shape: " + key: state | {key: torch.ones(3, 3)}}
    for message, broken in cases.items():
        with pytest.raises(laion.CheckpointError, match=message):
            laion.load_weights(model.clap, broken)


@pytest.mark.slow
def test_load_laion_downloads_verifies_builds_and_loads(model, clips, cache, monkeypatch):
    """The whole of load_laion with a loopback server in place of Hugging Face and the
    random model's weights in place of a pretrained checkpoint."""
    import hashlib
    import io

    from _loopback import LoopbackServer
    buffer = io.BytesIO()
    torch.save(_training_checkpoint(model.clap.state_dict()), buffer)
    payload = buffer.getvalue()  # ~140 MB
    spec = laion.Checkpoint("test-best.pt", "HTSAT-tiny", False, len(payload),
                            hashlib.sha256(payload).hexdigest(), "test")
    monkeypatch.setitem(laion.CHECKPOINTS, "laion/test", spec)
    monkeypatch.setattr(laion, "ROBERTA_BASE", laion.ROBERTA_TINY)  # the source's text tower
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
    assert laion.PREPROCESSING in loaded.cache_key
    torch.testing.assert_close(loaded.embed_audio(clips[:1]), model.embed_audio(clips[:1]))
    source_text = laion.LaionClap(model.clap, tiny_tokenizer(), name="source", cache_key="s")
    torch.testing.assert_close(loaded.embed_text(["a dog"]), source_text.embed_text(["a dog"]))


def test_audio_config_other_than_laions_is_refused():
    from types import SimpleNamespace
    cfg = SimpleNamespace(sample_rate=44_100, clip_samples=441_000, window_size=1024,
                          hop_size=441, mel_bins=64)
    with pytest.raises(ValueError, match="audio config"):
        laion.LaionClap(SimpleNamespace(audio_cfg=cfg), None, name="x", cache_key="x")
