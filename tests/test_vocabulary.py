"""Vocabulary recipes on hand-made corpora, the loaders' errors, the FSD50K path
(loopback server) and the byte-identical rebuild of the shipped lists."""

from __future__ import annotations

import filecmp
import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _loopback import LoopbackServer

from clapnb import vocabulary as V
from clapnb.model import ClapModel
from clapnb.vocabulary import (Vocabulary, build_baseline, build_candidates, build_clustered,
                               build_ontology, build_pruned, load_vocabulary, prune_tags,
                               read_vocabulary, tag_counts, write_vocabulary)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

# Every tag counts once per clip, case-insensitively. Counts:
#   rain 3; cough, footsteps, foot, saw 2; every other tag 1; "shit" is an expletive.
CORPUS = [
    ["Cough", "coughing", "rain"],
    ["coughs", "rain", "raining"],
    ["cough", "Rain", "rain "],
    ["feet", "foot", "saw"],
    ["see", "saw", "x"],
    ["foot-steps", "footsteps", "field-recording", "foot"],
    ["footsteps", "h4n", "2019"],
    ["wter", "harbour", "shit"],
    ["dripping", "drip", "ground", "grind"],
]


# ---------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------
def test_vocabulary_len_iter_index_head():
    vocab = Vocabulary("demo", ["rain", "dog", "siren"], [5, 3, 1])
    assert len(vocab) == 3 and list(vocab) == ["rain", "dog", "siren"]
    assert vocab.index("siren") == 2 and vocab[1] == "dog" and "dog" in vocab
    assert "cat" not in vocab
    with pytest.raises(KeyError, match="'cat' is not in the 'demo' vocabulary"):
        vocab.index("cat")
    head = vocab.head(2)
    assert head.words == ("rain", "dog") and head.counts == (5, 3)
    with pytest.raises(ValueError, match="only 3 words"):
        vocab.head(4)
    with pytest.raises(ValueError, match="positive integer"):
        vocab.head(0)


@pytest.mark.parametrize("words, counts, message", [
    (["rain", ""], None, "entry 1 is ''"),
    (["rain", " dog"], None, "without surrounding spaces"),
    (["rain", "dog", "rain"], None, "'rain' appears twice"),
    (["rain", "dog"], [1], "2 words but 1 counts"),
    (["rain"], [-1], "counts must be >= 0"),
])
def test_vocabulary_refuses_bad_entries(words, counts, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary("bad", words, counts)


# ---------------------------------------------------------------------------------
# Recipes on the hand-made corpus
# ---------------------------------------------------------------------------------
def test_tag_counts_normalise_and_count_once_per_clip():
    counts = tag_counts(CORPUS)
    assert counts["rain"] == 3  # "Rain" and "rain " in clip 3 count once
    assert counts["cough"] == 2 and counts["coughing"] == 1
    with pytest.raises(TypeError, match="split ';'-joined tags"):
        tag_counts(["rain;dog"])


@pytest.mark.parametrize("tag, expected", [("shit", True), ("holy-shit", True), ("Fucking", True),
                                           ("cock", False), ("screw", False), ("dog", False)])
def test_expletives_match_whole_parts_only(tag, expected):
    assert V.is_expletive(tag) is expected


def test_baseline_ranks_by_count_then_alphabetically_without_expletives():
    vocab = build_baseline(CORPUS, size=6)
    assert vocab.words == ("rain", "cough", "foot", "footsteps", "saw", "2019")
    assert vocab.counts == (3, 2, 2, 2, 2, 1)
    full = build_baseline(CORPUS, size=None)
    assert "shit" not in full and len(full) == len(tag_counts(CORPUS)) - 1
    with pytest.raises(ValueError, match=f"only {len(full)} words"):
        build_baseline(CORPUS, size=len(full) + 1)


def test_pruned_drops_non_words_and_merges_forms_of_one_root():
    pruning = prune_tags(build_candidates(CORPUS))
    vocab = pruning.vocabulary
    # cough 2+1+1, rain 3+1, footsteps 2+1 (foot-steps), foot 2+1 (feet), drip 1+1 (tie:
    # alphabetical), saw/see and ground/grind stay apart, British "harbour" is a word
    assert vocab.words == ("cough", "rain", "foot", "footsteps", "drip", "saw",
                           "grind", "ground", "harbour", "see")
    assert vocab.counts == (4, 4, 3, 3, 2, 2, 1, 1, 1, 1)
    assert pruning.merged == {
        "cough": [("cough", 2), ("coughing", 1), ("coughs", 1)],
        "rain": [("rain", 3), ("raining", 1)],
        "foot": [("foot", 2), ("feet", 1)],
        "footsteps": [("footsteps", 2), ("foot-steps", 1)],
        "drip": [("drip", 1), ("dripping", 1)],
    }
    assert pruning.dropped == {"single letter": ["x"], "number": ["2019", "h4n"],
                               "multi-word tag": ["field-recording"],
                               "not an English word": ["wter"]}
    assert build_pruned(CORPUS, size=3).words == vocab.words[:3]
    with pytest.raises(ValueError, match="only 10 words"):
        build_pruned(CORPUS, size=11)


def test_pruned_starts_from_the_most_frequent_candidates_only():
    # with 1 candidate only "rain" (the most frequent tag) can survive
    assert build_pruned(CORPUS, size=None, n_candidates=1).words == ("rain",)


def test_clustered_keeps_the_member_nearest_each_centroid():
    # three tight, symmetric clusters: each centroid is exactly its middle point
    points = {"a_mid": (10, 0), "a_up": (10, 1), "a_down": (10, -1),
              "b_mid": (0, 10), "b_left": (-1, 10), "b_right": (1, 10),
              "c_mid": (-10, -10), "c_up": (-10, -9), "c_down": (-10, -11)}
    counts = {"a_mid": 3, "b_mid": 5, "c_mid": 1}  # the others are more frequent (100)
    candidates = Vocabulary("candidates", list(points), [counts.get(w, 100) for w in points])
    embeddings = np.array(list(points.values()), dtype=np.float32)
    vocab = build_clustered(candidates, embeddings, size=3, seed=0)
    assert vocab.name == "clustered"
    assert vocab.words == ("b_mid", "a_mid", "c_mid") and vocab.counts == (5, 3, 1)
    assert build_clustered(candidates, embeddings, size=9).words == \
        tuple(sorted(points, key=lambda w: (-candidates.counts[candidates.index(w)],
                                            candidates.index(w))))
    with pytest.raises(ValueError, match=r"must be \(len\(candidates\), D\) = \(9, D\)"):
        build_clustered(candidates, embeddings[:5], size=3)
    with pytest.raises(ValueError, match="only 9 words"):
        build_clustered(candidates, embeddings, size=10)


def test_ontology_keeps_class_names_whole(tmp_path):
    path = tmp_path / "ontology.json"
    path.write_text(json.dumps([{"id": "/m/1", "name": "Speech"},
                                {"id": "/m/2", "name": "Male speech, man speaking"}]))
    vocab = build_ontology(path)
    assert vocab.words == ("Speech", "Male speech, man speaking") and vocab.counts is None
    path.write_text(json.dumps([{"id": "/m/1", "name": "Speech"},
                                {"id": "/m/2", "name": "Speech"}]))
    with pytest.raises(ValueError, match="'Speech' appears twice"):
        build_ontology(path)
    path.write_text(json.dumps({"Speech": 1}))
    with pytest.raises(ValueError, match="not an AudioSet ontology"):
        build_ontology(path)


# ---------------------------------------------------------------------------------
# Files and loaders
# ---------------------------------------------------------------------------------
def test_write_read_round_trip(tmp_path):
    for vocab in (Vocabulary("counted", ["rain", "dog"], [2, 1]),
                  Vocabulary("plain", ["Speech", "Male speech, man speaking"])):
        path = write_vocabulary(vocab, tmp_path / f"{vocab.name}.tsv")
        assert read_vocabulary(path) == vocab
        assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("text, message", [
    ("rain\t2\n", "first line must be the header"),
    ("word\tcount\nrain\t2\n\t1\n", r":3: empty entry"),
    ("word\tcount\nrain\t2\ndog\t1\nrain\t1\n", r":4: duplicate entry 'rain' \(first on line 2\)"),
    ("word\tcount\nrain\tmany\n", r":2: count 'many' is not a whole number"),
    ("word\tcount\nrain\n", r":2: expected word<TAB>count"),
    ("word\n", "no words after the header"),
])
def test_read_vocabulary_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "broken.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_vocabulary(path)


def test_load_vocabulary_errors(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="valid names: baseline, pruned, clustered, ontology, "
                                         "candidates"):
        load_vocabulary("prunned")
    with pytest.raises(ValueError, match="needs|depends on the model"):
        load_vocabulary("clustered", 2000)
    monkeypatch.setattr(V, "VOCABULARY_DIR", tmp_path)
    write_vocabulary(Vocabulary("pruned", ["rain", "dog"], [2, 1]), tmp_path / "pruned.tsv")
    assert load_vocabulary("pruned", size=1).words == ("rain",)
    with pytest.raises(ValueError, match="'pruned' vocabulary has only 2 words"):
        load_vocabulary("pruned", size=3)
    (tmp_path / "baseline.tsv").write_text("word\tcount\nrain\t2\nrain\t1\n")
    with pytest.raises(ValueError, match="duplicate entry 'rain'"):
        load_vocabulary("baseline")
    with pytest.raises(FileNotFoundError, match="build_vocabularies.py"):
        load_vocabulary("ontology")


@pytest.mark.parametrize("name", V.SHIPPED)
def test_shipped_vocabularies_load_and_are_ranked(name):
    vocab = load_vocabulary(name)
    assert vocab.name == name and len(vocab) > 0
    if vocab.counts is not None:
        assert list(vocab.counts) == sorted(vocab.counts, reverse=True)
    small = load_vocabulary(name, size=min(len(vocab), V.PAPER_SIZE))
    assert small.words == vocab.words[:len(small)]
    with pytest.raises(ValueError, match=f"only {len(vocab):,} words"):
        load_vocabulary(name, size=len(vocab) + 1)


def test_shipped_pruned_words_are_single_lowercase_words():
    vocab = load_vocabulary("pruned")
    assert all(w.isascii() and w.isalpha() and w.islower() and len(w) > 1 for w in vocab)


# ---------------------------------------------------------------------------------
# The shipped lists rebuild byte for byte
# ---------------------------------------------------------------------------------
@pytest.mark.skipif(not (DATA / "clotho").is_dir(),
                    reason=f"the shared metadata folder {DATA} is not here")
def test_shipped_lists_rebuild_byte_identical(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_vocabularies.py"),
                          str(DATA), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    built = sorted(p.name for p in tmp_path.iterdir())
    shipped = sorted(p.name for p in (ROOT / "clapnb" / "vocabularies").glob("*.tsv"))
    assert built == shipped
    _, mismatch, errors = filecmp.cmpfiles(tmp_path, ROOT / "clapnb" / "vocabularies", built, shallow=False)
    assert mismatch == [] and errors == [], f"rebuilt lists differ: {mismatch + errors}"


# ---------------------------------------------------------------------------------
# What needs a model (a small deterministic fake) and the embedding cache
# ---------------------------------------------------------------------------------
class HashTextModel(ClapModel):
    """Text embeddings from a hash of the text: deterministic, no weights to load."""

    name, cache_key, embed_dim = "hash", "hash-text-v1", 8

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the model a device
        self.encoded: list[str] = []

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        self.encoded += texts
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        x = torch.tensor(np.stack([np.random.default_rng(s).normal(size=8) for s in seeds]),
                         dtype=torch.float32)
        return torch.nn.functional.normalize(x, dim=-1)


@pytest.fixture
def small_candidates(monkeypatch, tmp_path):
    """A 12-word candidate list in place of the shipped one, and an empty cache."""
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "vocabularies"
    vocab = Vocabulary("candidates", [f"tag{i}" for i in range(12)], list(range(24, 12, -1)))
    write_vocabulary(vocab, folder / "candidates.tsv")
    monkeypatch.setattr(V, "VOCABULARY_DIR", folder)
    return vocab


def test_clustered_vocabulary_is_built_once_then_cached(small_candidates, monkeypatch, tmp_path):
    model = HashTextModel()
    vocab = V.clustered_vocabulary(model, size=4)
    embeddings = model.embed_text(list(small_candidates)).numpy()
    expected = build_clustered(small_candidates, embeddings, 4)
    assert vocab == expected
    assert load_vocabulary("clustered", 4, model=model) == vocab

    def fail(*args, **kwargs):
        raise AssertionError("k-means ran again instead of reading the cache")
    monkeypatch.setattr(V, "build_clustered", fail)
    assert V.clustered_vocabulary(model, size=4) == vocab
    with pytest.raises(AssertionError, match="k-means ran again"):
        V.clustered_vocabulary(model, size=5)  # another size is another entry

    monkeypatch.setattr(V, "build_clustered", build_clustered)
    [cached] = (tmp_path / "cache" / "vocabularies").glob("clustered-4-*.tsv")
    cached.write_text("word\tcount\ntag0\t1\ntag0\t1\n")  # damaged
    with pytest.warns(UserWarning, match="damaged"):
        assert V.clustered_vocabulary(model, size=4) == vocab
    assert V.clustered_vocabulary(model, size=4) == vocab  # repaired


def test_vocabulary_embeddings_rows_follow_the_words(monkeypatch, tmp_path):
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
    model = HashTextModel()
    vocab = Vocabulary("demo", ["rain", "dog", "siren"], [3, 2, 1])
    emb = V.vocabulary_embeddings(model, vocab)
    assert emb.shape == (3, model.embed_dim)
    np.testing.assert_allclose(emb[vocab.index("dog")], model.embed_text(["dog"])[0].numpy(),
                               atol=1e-6)
    n_encoded = len(model.encoded)
    np.testing.assert_array_equal(V.vocabulary_embeddings(model, vocab), emb)
    assert len(model.encoded) == n_encoded  # second call from the cache


# ---------------------------------------------------------------------------------
# FSD50K tags through download_file + extract_archive (loopback server)
# ---------------------------------------------------------------------------------
def _fsd50k_zip() -> bytes:
    dev = {"64760": {"title": "cough.wav", "tags": ["cough", "Coughing", "male"],
                     "license": "CC0", "uploader": "a"},
           "16399": {"title": "rain.wav", "tags": ["rain", "field-recording"],
                     "license": "CC-BY", "uploader": "b"}}
    ev = {"37199": {"title": "dog.wav", "tags": ["dog", "bark", "rain"],
                    "license": "CC0", "uploader": "c"}}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("FSD50K.metadata/dev_clips_info_FSD50K.json", json.dumps(dev))
        zf.writestr("FSD50K.metadata/eval_clips_info_FSD50K.json", json.dumps(ev))
        zf.writestr("FSD50K.metadata/collection/collection_dev.csv", "fname,labels\n")
    return buf.getvalue()


def test_fsd50k_tag_corpus_downloads_once(tmp_path, monkeypatch):
    monkeypatch.delenv("CLAPNB_OFFLINE", raising=False)  # only 127.0.0.1 is contacted
    with LoopbackServer() as server:
        url = server.add("/FSD50K.metadata.zip", _fsd50k_zip())
        root = tmp_path / "fsd50k"
        corpus = V.fsd50k_tag_corpus(root, url=url)
        assert corpus == [["cough", "Coughing", "male"], ["rain", "field-recording"],
                          ["dog", "bark", "rain"]]
        assert build_baseline(corpus, size=2).words == ("rain", "bark")
        assert V.fsd50k_tag_corpus(root, download=False, url=url) == corpus
        assert V.fsd50k_tag_corpus(root, url=url) == corpus
        assert [path for path, _ in server.requests] == ["/FSD50K.metadata.zip"]  # downloaded once


def test_fsd50k_tag_corpus_without_download_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        V.fsd50k_tag_corpus(tmp_path, download=False)


def test_filter_keeps_order_and_counts_and_refuses_an_empty_result():
    vocab = V.Vocabulary("toy", ["rain", "siren", "bell"], [5, 3, 1])
    kept = vocab.filter(lambda w: w != "siren")
    assert kept.words == ("rain", "bell") and kept.counts == (5, 1)
    with pytest.raises(ValueError, match="keeps no word"):
        vocab.filter(lambda w: False)
