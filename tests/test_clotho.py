"""load_clotho end to end against a loopback server: captions CSV + audio .7z.

Captions are the first rows of the real Clotho v2 evaluation captions
(``../shared/data/clotho/wavcaps_clotho_v2_test.csv``, same columns as
``clotho_captions_evaluation.csv``); the audio is tiny generated wav files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from _loopback import LoopbackServer

from clapnb import clotho
from clapnb.clotho import SAMPLE_RATE, URL_ENV, load_clotho
from clapnb.download import DownloadError

py7zr = pytest.importorskip("py7zr", reason="py7zr unpacks Clotho's .7z archives")
CAPTIONS = Path(__file__).resolve().parents[2] / "shared/data/clotho/wavcaps_clotho_v2_test.csv"
pytestmark = pytest.mark.skipif(not CAPTIONS.is_file(),
                                reason=f"Clotho captions not found at {CAPTIONS} (../shared/data)")
N = 4


def captions_csv() -> tuple[bytes, list[dict[str, str]]]:
    with open(CAPTIONS, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(itertools.islice(reader, N))
    out = io.StringIO()
    writer = csv.DictWriter(out, reader.fieldnames)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode(), rows


def tone(k: int) -> np.ndarray:
    t = np.arange(SAMPLE_RATE // 10) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * (300 + 50 * k) * t)).astype(np.float32)


def audio_7z(rows: list[dict[str, str]], tmp_path: Path) -> bytes:
    path = tmp_path / "clotho_audio_evaluation.7z"
    with py7zr.SevenZipFile(path, "w") as z:
        for k, r in enumerate(rows):
            wav = io.BytesIO()
            sf.write(wav, tone(k), SAMPLE_RATE, subtype="PCM_16", format="WAV")
            z.writestr(wav.getvalue(), f"evaluation/{r['file_name']}")
    data = path.read_bytes()
    path.unlink()
    return data



@pytest.fixture
def loopback():
    """An HTTP server on 127.0.0.1 serving what the test adds; stopped afterwards."""
    with LoopbackServer() as server:
        yield server


@pytest.fixture
def served(loopback, monkeypatch, tmp_path):
    """Clotho files on the loopback server, with their checksums in clotho.CHECKSUMS."""
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    text, rows = captions_csv()
    archive = audio_7z(rows, tmp_path)
    loopback.add("/clotho/clotho_captions_evaluation.csv", text)
    loopback.add("/clotho/clotho_audio_evaluation.7z", archive)
    monkeypatch.setenv(URL_ENV, loopback.base_url + "/clotho")
    monkeypatch.setitem(clotho.CHECKSUMS, "evaluation",
                        (hashlib.md5(text).hexdigest(), hashlib.md5(archive).hexdigest()))
    return loopback


def test_download_and_load_end_to_end(served, tmp_path):
    scenes = load_clotho("evaluation")
    _, rows = captions_csv()
    assert len(scenes) == N and scenes.name == "clotho-evaluation" and scenes.events is None
    assert scenes.clip_ids == [Path(r["file_name"]).stem for r in rows]
    assert scenes.captions[1] == [rows[1][f"caption_{k}"] for k in range(1, 6)]
    x = scenes.audio(2)
    assert x.dtype == np.float32 and scenes.sample_rate == 44_100
    np.testing.assert_allclose(x, tone(2), atol=1e-4)
    root = tmp_path / "cache" / "clotho"
    assert not (root / "clotho_audio_evaluation.7z").exists()  # unpacked, then removed
    assert load_clotho().clip_ids == scenes.clip_ids  # second call: no download
    assert [p for p, _ in served.requests] == ["/clotho/clotho_captions_evaluation.csv",
                                               "/clotho/clotho_audio_evaluation.7z"]


def test_checksum_mismatch_is_refused(served, monkeypatch, tmp_path):
    monkeypatch.setitem(clotho.CHECKSUMS, "evaluation", ("0" * 32, "0" * 32))
    with pytest.raises(DownloadError, match="MD5"):
        load_clotho()
    assert [p.name for p in (tmp_path / "cache" / "clotho").iterdir()] == []


def test_missing_audio_is_a_clear_error(served, tmp_path):
    scenes = load_clotho()
    _, rows = captions_csv()
    (tmp_path / "cache/clotho/audio_evaluation/evaluation" / rows[0]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 4 audio files are missing") as err:
        load_clotho()
    assert scenes.clip_ids[0] in str(err.value) and "audio_evaluation" in str(err.value)
    assert "Delete" in str(err.value) and "load_clotho('evaluation')" in str(err.value)


def test_missing_audio_in_the_users_own_copy_is_not_deleted(served, tmp_path):
    load_clotho()
    own = tmp_path / "cache" / "clotho"
    _, rows = captions_csv()
    (own / "audio_evaluation/evaluation" / rows[1]["file_name"]).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 4 audio files are missing") as err:
        load_clotho(root=own)
    assert rows[1]["file_name"] in str(err.value) and "your own copy (root=)" in str(err.value)
    assert "Delete" not in str(err.value)


def test_bad_split_and_no_download(tmp_path):
    with pytest.raises(ValueError, match="evaluation"):
        load_clotho("test")
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_clotho(root=tmp_path, download=False)
