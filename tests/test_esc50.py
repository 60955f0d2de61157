"""load_esc50 end to end: download from a loopback server, unpack, read metadata and audio.

The archive is built here with the real ``ESC-50-master/`` layout: a 50-row subset
of the real ``meta/esc50.csv`` (one clip per class, all 5 folds) read from
``../shared/data`` and tiny generated wav files.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _loopback import LoopbackServer

from clapnb.download import DownloadError
from clapnb.esc50 import SAMPLE_RATE, URL_ENV, load_esc50, readable

META = Path(__file__).resolve().parents[2] / "shared" / "data" / "esc50" / "esc50.csv"
pytestmark = pytest.mark.skipif(not META.is_file(),
                                reason=f"ESC-50 metadata not found at {META} (../shared/data)")


def subset_rows() -> tuple[list[str], list[dict[str, str]]]:
    """Header and one row per class, taken from fold ``target % 5 + 1``."""
    with open(META, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    chosen = {}
    for r in rows:
        target = int(r["target"])
        if target not in chosen and int(r["fold"]) == target % 5 + 1:
            chosen[target] = r
    return list(reader.fieldnames), [chosen[k] for k in sorted(chosen)]


def tone(k: int) -> np.ndarray:
    """0.05 s at 44.1 kHz, a different pitch per clip."""
    t = np.arange(SAMPLE_RATE // 20) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (100 + 40 * k) * t)).astype(np.float32)


def esc50_zip() -> bytes:
    header, rows = subset_rows()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        meta = io.StringIO()
        writer = csv.DictWriter(meta, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        zf.writestr("ESC-50-master/meta/esc50.csv", meta.getvalue())
        zf.writestr("ESC-50-master/README.md", "test copy")
        for k, r in enumerate(rows):
            wav = io.BytesIO()
            sf.write(wav, tone(k), SAMPLE_RATE, subtype="PCM_16", format="WAV")
            zf.writestr(f"ESC-50-master/audio/{r['filename']}", wav.getvalue())
    return buf.getvalue()



@pytest.fixture
def loopback():
    """An HTTP server on 127.0.0.1 serving what the test adds; stopped afterwards."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def served(loopback, monkeypatch, tmp_path):
    """ESC-50 archive on the loopback server, its URL in CLAPNB_ESC50_URL, a private cache."""
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(URL_ENV, loopback.add("/ESC-50/archive/master.zip", esc50_zip()))
    return loopback


def test_the_download_is_pinned_to_a_commit_of_the_current_repository():
    from clapnb.esc50 import ESC50_COMMIT, ESC50_URL
    assert re.fullmatch(r"[0-9a-f]{40}", ESC50_COMMIT)
    assert ESC50_URL == f"https://github.com/karolpiczak/ESC-50/archive/{ESC50_COMMIT}.zip"


def test_readable_names():
    assert readable("chirping_birds") == "chirping birds" and readable("dog") == "dog"


def test_download_and_load_end_to_end(served, tmp_path):
    _, rows = subset_rows()
    clips = load_esc50()
    assert len(clips) == 50 and clips.name == "esc50" and clips.sample_rate == 44_100
    assert clips.clip_ids[0] == Path(rows[0]["filename"]).stem
    assert len(clips.class_names) == 50 and "chirping birds" in clips.class_names
    assert not any("_" in name for name in clips.class_names)
    for i, r in enumerate(rows):
        assert clips.label_name(i) == r["category"].replace("_", " ")
        assert clips.folds[i] == int(r["fold"])
    assert sorted(np.bincount(clips.folds)[1:]) == [10] * 5

    x = clips.audio(7)
    assert x.dtype == np.float32 and x.shape == (SAMPLE_RATE // 20,)
    np.testing.assert_allclose(x, tone(7), atol=1e-4)  # 16-bit PCM round trip
    fold1 = clips.fold(1)
    np.testing.assert_array_equal(fold1.audio(0), clips.audio(int(np.flatnonzero(clips.folds == 1)[0])))

    # unpacked into the cache, archive removed; a second call does not download again
    root = tmp_path / "cache" / "esc50"
    assert (root / "extracted" / "ESC-50-master" / "meta" / "esc50.csv").is_file()
    assert not (root / "ESC-50-master.zip").exists()
    assert load_esc50().clip_ids == clips.clip_ids
    assert len(served.requests) == 1


def test_url_parameter_and_explicit_root(loopback, monkeypatch, tmp_path):
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    url = loopback.add("/mirror/esc50.zip", esc50_zip())
    clips = load_esc50(root=tmp_path / "data", url=url)
    assert len(clips) == 50 and (tmp_path / "data" / "extracted").is_dir()
    # a user's own unpacked copy is used as it is
    own = load_esc50(root=tmp_path / "data" / "extracted" / "ESC-50-master", download=False)
    assert own.clip_ids == clips.clip_ids


def test_cached_copy_loads_offline(served, monkeypatch):
    load_esc50()
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    assert len(load_esc50()) == 50


def test_offline_without_copy_is_refused(served, monkeypatch):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="CLAPNB_OFFLINE=1"):
        load_esc50()
    assert served.requests == []


def test_missing_audio_file_is_a_clear_error(served, tmp_path):
    clips = load_esc50()
    audio = tmp_path / "cache" / "esc50" / "extracted" / "ESC-50-master" / "audio"
    (audio / f"{clips.clip_ids[3]}.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 50 audio files are missing") as err:
        load_esc50()
    assert clips.clip_ids[3] in str(err.value) and "Delete" in str(err.value)
    assert str(tmp_path / "cache" / "esc50" / "extracted") in str(err.value)


def test_many_missing_files_in_the_users_own_copy_are_counted_listed_and_not_deleted(tmp_path):
    """A folder the user passed as root= is theirs: count, list a few, advise restoring it."""
    with zipfile.ZipFile(io.BytesIO(esc50_zip())) as zf:
        zf.extractall(tmp_path)
    audio = tmp_path / "ESC-50-master" / "audio"
    gone = sorted(p.name for p in audio.iterdir())[:7]
    for name in gone:
        (audio / name).unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_esc50(root=tmp_path)
    message = str(err.value)
    assert "7 of 50 audio files are missing" in message and str(audio) in message
    assert sum(name in message for name in gone) == 5 and "and 2 more" in message
    assert "your own copy (root=)" in message and "restore those files" in message
    assert "Delete" not in message                     # never advise deleting the user's folder


def test_embedding_cache_tells_two_copies_with_the_same_file_names_apart(tmp_path):
    """The audio-embedding cache key holds what identifies the audio (paths, sizes, times)."""
    from clapnb.embeddings import cached_audio_embeddings
    from clapnb.tiny import load_tiny
    for name in ("A", "B"):
        with zipfile.ZipFile(io.BytesIO(esc50_zip())) as zf:
            zf.extractall(tmp_path / name)
    wav = sorted((tmp_path / "B" / "ESC-50-master" / "audio").iterdir())[0]
    x, sr = sf.read(wav, dtype="float32")
    sf.write(wav, np.random.default_rng(0).standard_normal(len(x)).astype(np.float32) * 0.3, sr,
             subtype="PCM_16")                         # same name, other audio
    model = load_tiny("cpu")
    a, b = (load_esc50(root=tmp_path / name).subset([0, 1]) for name in ("A", "B"))
    assert a.clip_ids == b.clip_ids and a.source != b.source
    emb_a, emb_b = cached_audio_embeddings(model, a), cached_audio_embeddings(model, b)
    assert np.abs(emb_a[0] - emb_b[0]).max() > 0.05    # B's own audio, not A's cached rows
    np.testing.assert_allclose(emb_a[1], emb_b[1], atol=1e-6)
    np.testing.assert_array_equal(cached_audio_embeddings(model, a), emb_a)


def test_folder_without_metadata_is_a_clear_error(tmp_path):
    (tmp_path / "ESC-50-master" / "audio").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="meta/esc50.csv is missing; restore"):
        load_esc50(root=tmp_path)


def test_no_copy_and_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_esc50(root=tmp_path, download=False)


def test_archive_without_esc50_inside(loopback, monkeypatch, tmp_path):
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("something/else.txt", "hello")
    url = loopback.add("/wrong.zip", buf.getvalue())
    with pytest.raises(FileNotFoundError, match="meta/esc50.csv is missing"):
        load_esc50(root=tmp_path, url=url)


def test_damaged_archive_is_not_kept(loopback, monkeypatch, tmp_path):
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    url = loopback.add("/rate-limited.zip", b"<html>429 Too Many Requests</html>")
    with pytest.raises(DownloadError, match="not a zip"):
        load_esc50(root=tmp_path, url=url)
    assert list(tmp_path.iterdir()) == []  # the next call downloads afresh
