"""scripts/mirror.py: the local mirror of every download host, used by the rehearsal.

One small mirror is built per module (1 ESC-50 clip per class, 3 Clotho clips, the
non-fusion checkpoint only) and served on 127.0.0.1; with ``CLAPNB_MIRROR`` pointing at it
the REAL loaders, at their real addresses, download, verify and read every file.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import importlib.util
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.request import Request, urlopen

import numpy as np
import pytest

from clapnb import download

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.skipif(not (DATA / "esc50" / "esc50.csv").is_file(),
                                reason=f"the shared metadata is not at {DATA} (../shared/data)")
CLIPS_PER_CLASS, CLOTHO_CLIPS, CLOTHO_SECONDS = 1, 3, 15.0
CHECKPOINT = "laion/630k-audioset"
MSCLAP = "msclap/2023"
CHECKPOINTS = [CHECKPOINT, MSCLAP]


def _import_mirror():
    spec = importlib.util.spec_from_file_location("clapnb_mirror_script", ROOT / "scripts" / "mirror.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


mirror = _import_mirror()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A small mirror, built once for the module."""
    return mirror.build(tmp_path_factory.mktemp("mirror") / "tree", DATA,
                        clips_per_class=CLIPS_PER_CLASS, clotho_clips=CLOTHO_CLIPS,
                        clotho_seconds=CLOTHO_SECONDS, checkpoints=CHECKPOINTS,
                        progress=lambda message: None)


@pytest.fixture(scope="module")
def requests_seen() -> list:
    return []


@pytest.fixture(scope="module")
def base_url(tree, requests_seen) -> str:
    with mirror.serving(tree, requests=requests_seen) as url:
        yield url


@pytest.fixture
def mirrored(base_url, monkeypatch, tmp_path) -> str:
    """CLAPNB_MIRROR set to the served mirror, a private cache, network allowed (loopback only)."""
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)
    for env in ("CLAPNB_ESC50_URL", "CLAPNB_CLOTHO_URL"):  # the real addresses, mirrored
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("CLAPNB_MIRROR", base_url)
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(download, "_manifests", {})
    return base_url


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------
# The tree and its manifest
# ---------------------------------------------------------------------------------
def test_manifest_lists_every_file_with_its_digest(tree, base_url):
    manifest = json.loads((tree / "manifest.json").read_text())
    files = {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}
    assert set(manifest) == files - {"manifest.json", mirror.STAMP}
    for key, entry in manifest.items():
        data = (tree / key).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, key
    with urlopen(f"{base_url}/manifest.json") as response:
        assert json.loads(response.read()) == manifest


def test_every_address_the_course_downloads_is_mirrored(tree, mirrored):
    from clapnb.clotho import CLOTHO_URL
    from clapnb.esc50 import ESC50_URL
    from clapnb.laion import CHECKPOINTS
    from clapnb.vocabulary import FSD50K_METADATA_URL
    urls = [ESC50_URL, FSD50K_METADATA_URL, CHECKPOINTS[CHECKPOINT].url,
            f"{CLOTHO_URL}/clotho_captions_evaluation.csv?download=1",
            f"{CLOTHO_URL}/clotho_audio_evaluation.7z?download=1",
            *mirror.tokenizer_urls().values()]
    for url in urls:
        src = download.source(url)
        assert src.mirrored and src.url.startswith(mirrored + "/") and src.sha256, url
    assert mirror.mirror_key(ESC50_URL).startswith("github.com/")
    assert not any(p.name.endswith("fusion-best.pt") for p in tree.rglob("*.pt"))  # not asked for


def test_a_second_build_with_the_same_settings_does_nothing(tree):
    before = (tree / "manifest.json").stat().st_mtime_ns
    messages = []
    mirror.build(tree, DATA, clips_per_class=CLIPS_PER_CLASS, clotho_clips=CLOTHO_CLIPS,
                 clotho_seconds=CLOTHO_SECONDS, checkpoints=CHECKPOINTS, progress=messages.append)
    assert messages == [f"mirror in {tree} is up to date"]
    assert (tree / "manifest.json").stat().st_mtime_ns == before


def test_archives_are_deterministic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        mirror.write_esc50(out, DATA, 1)
        mirror.write_clotho(out, DATA, "evaluation", 2, 2.0)
        mirror.write_fsd50k_metadata(out, DATA)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert len(files) == 4
    for name in files:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_a_folder_that_is_not_a_mirror_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds no mirror"):
        mirror.build(tmp_path, DATA, checkpoints=[], progress=lambda m: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------------------------
# The real loaders against the mirror
# ---------------------------------------------------------------------------------
def test_esc50(mirrored):
    from clapnb.esc50 import load_esc50
    clips = load_esc50()
    assert clips.sample_rate == 44_100 and len(clips.class_names) == 50
    assert np.bincount(clips.labels).tolist() == [CLIPS_PER_CLASS] * 50
    real = _rows(DATA / "esc50" / "esc50.csv")
    first = {}
    for r in real:
        first.setdefault(int(r["target"]), r)
    assert sorted(clips.clip_ids) == sorted(r["filename"][:-4] for r in first.values())
    i = clips.clip_ids.index(first[0]["filename"][:-4])
    assert clips.label_name(i) == "dog" and clips.folds[i] == int(first[0]["fold"])
    x = clips.audio(i)
    assert x.dtype == np.float32 and x.shape == (5 * 44_100,) and 0.1 < np.abs(x).max() <= 1


def test_clotho_evaluation(mirrored):
    from clapnb.clotho import load_clotho
    scenes = load_clotho("evaluation")
    real = _rows(DATA / "clotho" / "wavcaps_clotho_v2_test.csv")[:CLOTHO_CLIPS]
    assert scenes.clip_ids == [r["file_name"][:-4] for r in real]
    assert scenes.captions == [[r[f"caption_{k}"] for k in range(1, 6)] for r in real]
    assert scenes.sample_rate == 44_100
    x = scenes.audio(CLOTHO_CLIPS - 1)
    assert x.shape == (int(CLOTHO_SECONDS * 44_100),) and np.abs(x).max() > 0.1


def test_fsd50k_tag_corpus(mirrored):
    from clapnb.vocabulary import fsd50k_tag_corpus
    corpus = fsd50k_tag_corpus()
    assert len(corpus) > 3000 and all(isinstance(tags, list) for tags in corpus)
    assert ["electric-motor", "fear", "motor", "whir"] in corpus  # Santa Motor.wav's tags


def test_checkpoint_and_tokenizer_fit_the_model(mirrored):
    import torch
    from transformers import RobertaTokenizer

    from clapnb.laion import LaionClap, build_clap, fetch_checkpoint, load_weights, read_checkpoint
    path = fetch_checkpoint(CHECKPOINT)
    assert zipfile.is_zipfile(path)  # torch's zip format, as LAION's files
    state = read_checkpoint(path)
    assert not any(k.startswith("module.") for k in state)
    roberta = mirror.text_tower()
    assert roberta["num_hidden_layers"] == 1
    rows = state["text_branch.embeddings.word_embeddings.weight"].shape[0]
    module = build_clap("HTSAT-tiny", False, roberta=roberta)
    load_weights(module, state, source=str(path))
    assert torch.equal(module.state_dict()["audio_projection.0.weight"],
                       state["audio_projection.0.weight"])

    files = {name: download.download_file(url, path.parent / "roberta" / name)
             for name, url in mirror.tokenizer_urls().items()}
    tokenizer = RobertaTokenizer(vocab=str(files["vocab.json"]), merges=str(files["merges.txt"]))
    assert len(tokenizer) == rows == roberta["vocab_size"]
    vocab = json.loads(files["vocab.json"].read_text(encoding="utf-8"))
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, rows - 1]
    ids = tokenizer("a dog barks in the rain")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and 3 not in ids and len(ids) < 12  # merges were learned
    model = LaionClap(module, tokenizer, name=CHECKPOINT, cache_key="mirror")
    embedding = model.embed_text(["a dog barks", "rain on a roof"])
    assert embedding.shape == (2, 512) and torch.isfinite(torch.as_tensor(embedding)).all()


def test_load_laion_rehearses_on_the_mirror(mirrored):
    from clapnb import laion
    if not hasattr(laion, "roberta_config"):
        pytest.skip("this clapnb.laion builds the roberta-base text tower whatever the "
                    "checkpoint holds; it cannot load a mirrored checkpoint")
    model = laion.load_laion(CHECKPOINT, device="cpu")
    assert len(model.tokenizer) == mirror.text_tower()["vocab_size"]
    embedding = model.embed_text(["a dog barks"])
    assert embedding.shape == (1, 512)


def test_msclap_checkpoint_and_tokenizer_are_in_the_published_formats(tree, mirrored):
    import torch

    from clapnb import msclap
    spec = msclap.CHECKPOINTS[MSCLAP]
    for url in [spec.url, *msclap.TOKENIZER_URLS["gpt2"].values()]:
        src = download.source(url)
        assert src.mirrored and src.url.startswith(mirrored + "/") and src.sha256, url
    path = msclap.fetch_checkpoint(MSCLAP)
    assert zipfile.is_zipfile(path)  # torch's zip format, as Microsoft's files
    assert list(torch.load(path, map_location="cpu", weights_only=True, mmap=True)) == ["model"]
    config = msclap.text_config("gpt2", msclap.read_checkpoint(path))
    assert config == msclap.GPT2_TINY and config["n_layer"] == 1
    vocab = json.loads((tree / mirror.mirror_key(msclap.TOKENIZER_URLS["gpt2"]["vocab.json"]))
                       .read_text(encoding="utf-8"))
    assert len(vocab) == config["vocab_size"] and vocab["!"] == 0  # msclap pads with "!" = 0
    assert vocab[msclap.END_TOKEN] == len(vocab) - 1  # last, as in gpt2 (50256)
    assert not list(tree.rglob("CLAP_weights_2022.pth"))  # not asked for
    assert not list(tree.rglob("vocab.txt"))  # the bert tokenizer comes with 2022 only


def test_msclap_bert_vocabulary_fits_the_2022_text_tower(tmp_path):
    from clapnb import msclap
    vocab = mirror.write_msclap_tokenizer(tmp_path, "bert", mirror.tokenizer_corpus(DATA))
    path = tmp_path / mirror.mirror_key(msclap.TOKENIZER_URLS["bert"]["vocab.txt"])
    tokenizer = msclap.build_tokenizer("bert", {"vocab.txt": path})
    msclap.check_tokenizer_fits(tokenizer, "bert", msclap.BERT_TINY)
    assert len(tokenizer) == len(vocab) <= msclap.BERT_TINY["vocab_size"] and vocab["[PAD]"] == 0
    ids = tokenizer("A dog barks in the rain")["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) < 12


def test_load_model_msclap_2023_rehearses_on_the_mirror(mirrored, capsys):
    import torch

    import clapnb
    from clapnb import msclap
    model = clapnb.load_model(MSCLAP, device="cpu")
    assert isinstance(model, msclap.MsClap) and model.rehearsal and "rehearsal" in model.cache_key
    assert "REHEARSAL" in capsys.readouterr().out
    assert len(model.tokenizer) == msclap.GPT2_TINY["vocab_size"]
    ids = model.tokenizer("a dog barks in the rain")["input_ids"]
    assert 0 not in ids and len(ids) < 12  # merges were learned
    rng = np.random.default_rng(0)
    audio = model.embed_audio([0.1 * rng.standard_normal(3 * 44_100).astype(np.float32),
                               0.1 * rng.standard_normal(9 * 44_100).astype(np.float32)])
    text = model.embed_text(["a dog barks", "rain on a roof"])
    assert audio.shape == (2, 1024) and text.shape == (2, 1024)
    assert torch.isfinite(audio).all() and torch.isfinite(text).all()
    torch.testing.assert_close(text.norm(dim=1), torch.ones(2))


# ---------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------
def _get(base_url: str, path: str, headers: dict | None = None, method: str = "GET"):
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_range_requests_resume(tree, base_url, mirrored, requests_seen, tmp_path):
    from clapnb.clotho import CLOTHO_URL
    key = mirror.mirror_key(f"{CLOTHO_URL}/clotho_audio_evaluation.7z")
    data = (tree / key).read_bytes()
    status, headers, body = _get(base_url, f"/{key}?download=1", {"Range": "bytes=1000-"})
    assert status == 206 and body == data[1000:]
    assert headers["Content-Range"] == f"bytes 1000-{len(data) - 1}/{len(data)}"
    assert _get(base_url, f"/{key}", {"Range": "bytes=10-19"})[2] == data[10:20]
    assert _get(base_url, f"/{key}", {"Range": f"bytes={len(data)}-"})[0] == 416
    status, headers, body = _get(base_url, f"/{key}", method="HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(data) and body == b""

    # the real downloader resumes a cut transfer from where its .part ends
    dest = tmp_path / "clotho_audio_evaluation.7z"
    (tmp_path / (dest.name + ".part")).write_bytes(data[:12345])
    del requests_seen[:]
    download.download_file(f"{CLOTHO_URL}/clotho_audio_evaluation.7z?download=1", dest)
    assert dest.read_bytes() == data
    assert [r for r in requests_seen if r[1] != "/manifest.json"] == \
        [("GET", f"/{key}?download=1", "bytes=12345-")]


def test_nothing_outside_the_tree_is_served(tree, base_url, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the mirror")
    link = tree / "link.txt"
    link.symlink_to(secret)
    try:
        for path in ("/../secret.txt", "/github.com/../../secret.txt", "/%2e%2e/secret.txt",
                     "/..%2fsecret.txt", "/link.txt", f"/{secret}", "//etc/passwd", "/",
                     "/github.com", "/nothing-here.zip", "http://example.com/manifest.json"):
            status, _, body = _get(base_url, path)
            assert status == 404 and b"not for the mirror" not in body, path
    finally:
        link.unlink()


def test_serve_command_prints_its_address_and_stops_on_sigterm(tree):
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "mirror.py"), "serve",
                                str(tree), "--print-url"], stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        with urlopen(Request(f"{url}/manifest.json")) as response:
            assert json.loads(response.read()) == json.loads((tree / "manifest.json").read_text())
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def test_esc50_clips_come_from_different_folds(tmp_path):
    """Two clips per class: one from fold 1, one from fold 2, so fine-tuning has held-out folds."""
    import zipfile
    archive = mirror.write_esc50(tmp_path, DATA, 2)
    with zipfile.ZipFile(archive) as zf:
        [meta] = [n for n in zf.namelist() if n.endswith("meta/esc50.csv")]
        rows = list(csv.DictReader(io.StringIO(zf.read(meta).decode())))
    folds: dict[str, set] = {}
    for r in rows:
        folds.setdefault(r["target"], set()).add(int(r["fold"]))
    assert len(folds) == 50 and all(f == {1, 2} for f in folds.values())
