"""cache_dir, atomic writes and the embedding caches, with a tiny real ClapModel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clapnb.cache import atomic_write, cache_dir
from clapnb.embeddings import cached_audio_embeddings, cached_text_embeddings
from clapnb.datasets import ClipSet, SceneSet
from clapnb.model import AudioEncoding, ClapModel, StftConfig


class CountingClap(ClapModel):
    """A tiny CLAP (mean spectrum -> linear; bytes -> embedding bag) that counts its work."""

    def __init__(self, cache_key: str = "counting-v1", seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.name, self.cache_key = "counting", cache_key
        self.sample_rate, self.clip_samples, self.embed_dim = 8000, 2000, 16
        self.stft_config = StftConfig(n_fft=64, hop_length=32, win_length=64)
        self.audio_proj = nn.Linear(self.stft_config.n_freq, self.embed_dim)
        self.byte_embed = nn.EmbeddingBag(256, self.embed_dim)
        self.clips_encoded = 0
        self.texts_encoded = 0

    @property
    def logit_scale(self) -> float:
        return 10.0

    def encode_spectrogram(self, magnitude: torch.Tensor) -> AudioEncoding:
        self.clips_encoded += len(magnitude)
        emb = F.normalize(self.audio_proj(magnitude.mean(-1)), dim=-1)
        return AudioEncoding(emb, [magnitude])

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        self.texts_encoded += len(texts)
        codes = [torch.tensor(list(t.encode())) for t in texts]
        offsets = torch.tensor([0, *np.cumsum([len(c) for c in codes])[:-1]])
        return F.normalize(self.byte_embed(torch.cat(codes), offsets), dim=-1)


def tone(i: int, sample_rate: int = 8000) -> np.ndarray:
    t = np.arange(sample_rate // 4) / sample_rate
    return (0.5 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32)


def make_clips(n: int, sample_rate: int = 8000, fail_at: int | None = None) -> ClipSet:
    loads: list[int] = []

    def loader(i: int) -> np.ndarray:
        if i == fail_at:
            raise KeyboardInterrupt("simulated interruption")
        loads.append(i)
        return tone(i, sample_rate)

    clips = ClipSet(name="tones", clip_ids=[f"tone-{i}" for i in range(n)],
                    labels=np.arange(n) % 3, folds=np.arange(n) % 5 + 1,
                    class_names=["a", "b", "c"], sample_rate=sample_rate, loader=loader)
    clips.loads = loads  # type: ignore[attr-defined]  (test bookkeeping)
    return clips


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cache_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------
# cache_dir and atomic writes
# ---------------------------------------------------------------------------------
def test_cache_dir_follows_env_and_creates_folders(private_cache):
    path = cache_dir("embeddings", "tiny")
    assert path == private_cache / "embeddings" / "tiny" and path.is_dir()


def test_cache_dir_default_is_the_user_cache_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAPNB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # keep the real home clean
    assert cache_dir() == Path(platformdirs.user_cache_dir("clapnb")) and cache_dir().is_dir()


@pytest.mark.parametrize("part", ["../escape", "/abs"])
def test_cache_dir_refuses_paths_leaving_the_cache(part):
    with pytest.raises(ValueError, match="inside the cache"):
        cache_dir(part)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half of the new con")
            raise RuntimeError("crash while writing")
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["data.bin"]
    with atomic_write(path) as f:
        f.write(b"new")
    assert path.read_bytes() == b"new" and [p.name for p in tmp_path.iterdir()] == ["data.bin"]


# ---------------------------------------------------------------------------------
# audio embeddings
# ---------------------------------------------------------------------------------
def test_audio_embeddings_computed_once(private_cache):
    model, clips = CountingClap(), make_clips(7)
    first = cached_audio_embeddings(model, clips, batch_size=3)
    direct = model.embed_audio([tone(i) for i in range(7)]).numpy()
    assert first.shape == (7, 16) and first.dtype == np.float32
    np.testing.assert_allclose(first, direct, atol=1e-6)
    assert model.clips_encoded == 7 + 7 and sorted(clips.loads) == list(range(7))

    again = cached_audio_embeddings(model, clips, batch_size=3)
    assert model.clips_encoded == 14 and len(clips.loads) == 7  # nothing recomputed or loaded
    np.testing.assert_array_equal(again, first)
    assert len(cache_files(private_cache)) == 1  # one .npz, no temporary files


def test_subset_and_superset_reuse_cached_clips():
    model = CountingClap()
    full = cached_audio_embeddings(model, make_clips(6), batch_size=4)
    subset = make_clips(6).subset([5, 1, 3])
    np.testing.assert_array_equal(cached_audio_embeddings(model, subset), full[[5, 1, 3]])
    assert model.clips_encoded == 6

    bigger = make_clips(9)
    out = cached_audio_embeddings(model, bigger, batch_size=4)
    assert model.clips_encoded == 9 and sorted(bigger.loads) == [6, 7, 8]
    np.testing.assert_array_equal(out[:6], full)


def test_scene_sets_are_cached_too():
    model = CountingClap()
    scenes = SceneSet(name="scenes", clip_ids=["s0", "s1"], captions=[["a"], ["b"]],
                      sample_rate=8000, loader=tone)
    first = cached_audio_embeddings(model, scenes)
    np.testing.assert_array_equal(cached_audio_embeddings(model, scenes), first)
    assert model.clips_encoded == 2


def test_key_includes_model_and_preprocessing():
    model = CountingClap()
    base = cached_audio_embeddings(model, make_clips(3))
    other = CountingClap(cache_key="counting-v2", seed=1)  # e.g. another checkpoint
    assert not np.allclose(cached_audio_embeddings(other, make_clips(3)), base)
    assert other.clips_encoded == 3
    cached_audio_embeddings(model, make_clips(3, sample_rate=16000))  # resampled input
    assert model.clips_encoded == 6
    model.clip_samples = 1000  # another window
    cached_audio_embeddings(model, make_clips(3))
    assert model.clips_encoded == 9


def test_interrupted_run_resumes_from_saved_batches():
    model = CountingClap()
    with pytest.raises(KeyboardInterrupt):
        cached_audio_embeddings(model, make_clips(8, fail_at=5), batch_size=2, save_every=1)
    assert model.clips_encoded == 4  # batches [0, 1] and [2, 3] were done and saved
    clips = make_clips(8)
    out = cached_audio_embeddings(model, clips, batch_size=2)
    assert sorted(clips.loads) == [4, 5, 6, 7]
    np.testing.assert_allclose(out, model.embed_audio([tone(i) for i in range(8)]).numpy(), atol=1e-6)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "nan"])
def test_damaged_audio_cache_is_recomputed(private_cache, damage):
    model, clips = CountingClap(), make_clips(4)
    good = cached_audio_embeddings(model, clips)
    (path,) = cache_files(private_cache)
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    else:
        with np.load(path) as f:
            arrays = dict(f)
        arrays["embeddings"][2] = np.nan
        np.savez(path, **arrays)
    with pytest.warns(UserWarning, match="damaged"):
        out = cached_audio_embeddings(model, clips)
    np.testing.assert_array_equal(out, good)
    assert model.clips_encoded == 8
    cached_audio_embeddings(model, clips)  # repaired: no warning, no work
    assert model.clips_encoded == 8


def test_empty_clip_set():
    assert cached_audio_embeddings(CountingClap(), make_clips(0)).shape == (0, 16)


# ---------------------------------------------------------------------------------
# text embeddings
# ---------------------------------------------------------------------------------
def test_text_embeddings_computed_once_per_text_list():
    model = CountingClap()
    words = ["dog", "rain", "engine idling", "birdsong"]
    first = cached_text_embeddings(model, words, "vocab")
    np.testing.assert_allclose(first, model.embed_text(words).numpy(), atol=1e-6)
    assert first.shape == (4, 16) and model.texts_encoded == 8
    np.testing.assert_array_equal(cached_text_embeddings(model, words, "vocab"), first)
    assert model.texts_encoded == 8

    cached_text_embeddings(model, words + ["thunder"], "vocab")  # edited list: new entry
    cached_text_embeddings(model, words, "prompts")  # other name: own entry
    cached_text_embeddings(CountingClap(cache_key="counting-v2"), words, "vocab")
    assert model.texts_encoded == 8 + 5 + 4


def test_damaged_text_cache_is_recomputed(private_cache):
    model = CountingClap()
    first = cached_text_embeddings(model, ["a cat", "a dog"], "pets")
    (path,) = cache_files(private_cache)
    path.write_bytes(b"\x00" * 10)
    with pytest.warns(UserWarning, match="damaged"):
        np.testing.assert_array_equal(cached_text_embeddings(model, ["a cat", "a dog"], "pets"), first)
    assert model.texts_encoded == 4


def test_text_embeddings_check_input():
    with pytest.raises(TypeError, match="list of strings"):
        cached_text_embeddings(CountingClap(), "dog", "vocab")


def test_a_rehearsal_never_shares_the_real_cache(private_cache, monkeypatch):
    real = cache_dir("checkpoints")
    monkeypatch.setenv("CLAPNB_MIRROR", "http://127.0.0.1:9")
    mirrored = cache_dir("checkpoints")
    assert mirrored != real and mirrored.parent.parent == real.parent
    assert mirrored.relative_to(real.parent).parts == ("rehearsal", "checkpoints")
