"""Audio concept vocabularies: the words a CLAP embedding is decomposed into.

Zhang, Thomaz & Lu (IJCNN 2025) publish three vocabularies of single-word
concepts, all built from Freesound user tags (FSD50K):

* ``"baseline"`` -- the most frequent tags as written (``field-recording``
  included), expletives removed;
* ``"pruned"`` -- from the 10,000 most frequent tags, misspellings, single
  letters and numbers dropped, words with the same root merged into their most
  frequent form with their counts summed (cough/coughs/coughing -> cough);
* ``"clustered"`` -- the 10,000 most frequent tags embedded with the model's
  own text encoder, k-means with k = size, the tag nearest each centroid kept.

The paper uses 2,000 words; its size ablations 3,000 and 5,000. This module
also ships ``"ontology"`` (the 632 AudioSet class names, kept whole:
``"Male speech, man speaking"`` is one concept) and ``"candidates"`` (the
10,000-tag list the clustered recipe starts from). The shipped lists live in
``clapnb/vocabularies/``, package data (built from the Clotho copies of the
Freesound tags by ``python scripts/build_vocabularies.py``; provenance in
``clapnb/vocabularies/README.md``). Clustered vocabularies depend on the model, so
they are built for the active model on first use and cached.

Every builder works on any *tag corpus*: an iterable of per-clip tag lists.
A tag counts once per clip (lower-cased, stripped); ties in count are broken
alphabetically, so results are deterministic.

Language tools (all ship their data inside the wheel; nothing is downloaded):

* English words: a word is English when **pyspellchecker** (its English
  frequency list, ~160k words) or **LemmInflect**'s lexicon knows it. The
  spell checker alone misses British spellings (harbour, aluminium,
  neighbours), which are not misspellings; LemmInflect's lexicon has them.
* Shared roots: **LemmInflect**'s dictionary lemmatiser (all parts of speech).
  An inflected form is merged with its lemmas (coughs, coughing -> cough;
  feet -> foot). A word that is itself a dictionary base form is merged only
  with a lemma it regularly inflects (the word starts with the lemma minus its
  last letter), so "dripping" joins "drip" but the tool "saw" does not join
  "see", nor "ground" "grind", nor the bird "dove" "dive". A lemmatiser, not
  a stemmer: Porter/Snowball stems conflate different words (organ/organic,
  universe/university) and leave non-words as the merged form.
* Hyphenated tags: a tag whose parts join into one English word is that word
  (foot-steps -> footsteps); other multi-word tags (field-recording) are
  dropped from the pruned vocabulary, which holds single words only.
* Expletives: :data:`EXPLETIVES`, a short list kept here. Profanity lists on
  PyPI are made for chat filters and flag ordinary sound words (the common
  better-profanity 0.7.0 flags dog, shower, organ, cup, call and bang in these
  tags), so none is used. Words that also name sounds or things (cock, knob,
  screw, bang) are kept.

Example::

    from clapnb import load_model
    from clapnb.vocabulary import (load_vocabulary, clustered_vocabulary,
                                   vocabulary_embeddings, fsd50k_tag_corpus, build_pruned)

    vocab = load_vocabulary("pruned", size=2000)    # shipped; no model needed
    vocab.words[:3], vocab.counts[:3], vocab.index("rain")
    model = load_model()
    concepts = vocabulary_embeddings(model, vocab)  # (2000, 512), cached
    clustered = clustered_vocabulary(model, size=2000)  # k-means once, then cached

    corpus = fsd50k_tag_corpus()                    # Colab: the paper's FSD50K tags
    paper_pruned = build_pruned(corpus, size=2000)
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from clapnb.cache import atomic_write, cache_dir
from clapnb.download import EXTRACTED_MARKER, download_file, extract_archive
from clapnb.embeddings import cached_text_embeddings

#: the recipes; ``load_vocabulary`` also takes ``"candidates"``
VOCABULARIES = ("baseline", "pruned", "clustered", "ontology")
#: vocabularies read from ``clapnb/vocabularies/<name>.tsv``
SHIPPED = ("baseline", "pruned", "ontology", "candidates")
#: the paper's size and its ablations
PAPER_SIZE = 2000
SIZES = (2000, 3000, 5000)
#: how many of the most frequent tags the pruned and clustered recipes start from
N_CANDIDATES = 10_000
#: where the shipped word lists are: package data inside ``clapnb`` (the same folder in a
#: checkout, an editable install and an installed wheel, wherever pip puts the package)
VOCABULARY_DIR = Path(str(importlib.resources.files("clapnb") / "vocabularies"))
#: Zenodo record 4060432: FSD50K metadata (per-clip Freesound title, tags, license, uploader)
FSD50K_METADATA_URL = "https://zenodo.org/records/4060432/files/FSD50K.metadata.zip?download=1"

#: Strong English swear words and slurs without an everyday meaning, in the
#: forms that occur as tags. A tag is an expletive when one of its parts
#: (split at hyphens and other non-letters) is listed.
EXPLETIVES = frozenset("""
    arse arsehole arseholes asshole assholes bastard bastards bitch bitches bitching
    bollocks bullshit cunt cunts damn dammit dickhead dickheads faggot faggots
    fuck fucked fucker fuckers fuckin fucking fucks goddamn goddammit motherfucker
    motherfuckers motherfucking nigga niggas nigger niggers shit shite
    shits shitted shitting shitty twat twats wank wanked wanker wankers wanking
""".split())


# ---------------------------------------------------------------------------------
# The Vocabulary
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vocabulary:
    """An ordered list of distinct concept words.

    name: which vocabulary (``"pruned"``, ``"ontology"``, ...).
    words: the concepts, most frequent first for the frequency recipes.
    counts: per word, the number of clips tagged with it (merged forms summed);
        ``None`` where there is no frequency (``"ontology"``).
    """

    name: str
    words: tuple[str, ...]
    counts: tuple[int, ...] | None = None
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        words = tuple(self.words)
        counts = None if self.counts is None else tuple(int(c) for c in self.counts)
        positions: dict[str, int] = {}
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip() or word != word.strip():
                raise ValueError(f"vocabulary {self.name!r}: entry {i} is {word!r}; every entry "
                                 "must be a non-empty string without surrounding spaces")
            if "\t" in word or "\n" in word:
                raise ValueError(f"vocabulary {self.name!r}: entry {i} {word!r} holds a tab or "
                                 "newline; remove it")
            if word in positions:
                raise ValueError(f"vocabulary {self.name!r}: {word!r} appears twice (entries "
                                 f"{positions[word]} and {i}); remove the duplicate")
            positions[word] = i
        if counts is not None:
            if len(counts) != len(words):
                raise ValueError(f"vocabulary {self.name!r}: {len(words)} words but "
                                 f"{len(counts)} counts; give one count per word")
            if any(c < 0 for c in counts):
                raise ValueError(f"vocabulary {self.name!r}: counts must be >= 0")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "_positions", positions)

    def __len__(self) -> int:
        return len(self.words)

    def __iter__(self) -> Iterator[str]:
        return iter(self.words)

    def __getitem__(self, i: int) -> str:
        return self.words[i]

    def __contains__(self, word: object) -> bool:
        return word in self._positions

    def __repr__(self) -> str:
        shown = ", ".join(self.words[:5]) + (", ..." if len(self) > 5 else "")
        return f"Vocabulary({self.name!r}, {len(self)} words: {shown})"

    def index(self, word: str) -> int:
        """Position of ``word`` (the row of its embedding)."""
        try:
            return self._positions[word]
        except KeyError:
            raise KeyError(f"{word!r} is not in the {self.name!r} vocabulary "
                           f"({len(self)} words)") from None

    def head(self, size: int) -> Vocabulary:
        """The first ``size`` words (the most frequent, for the frequency recipes)."""
        _check_size(size, len(self), f"the {self.name!r} vocabulary has")
        counts = None if self.counts is None else self.counts[:size]
        return Vocabulary(self.name, self.words[:size], counts)


    def filter(self, keep: Callable[[str], bool]) -> Vocabulary:
        """The words for which ``keep(word)`` is true, in order, with their counts.

        For example the words a model saw in training:
        ``vocab.filter(lambda w: not model.unknown_words(w))``.
        """
        rows = [(i, w) for i, w in enumerate(self.words) if keep(w)]
        if not rows:
            raise ValueError(f"the filter keeps no word of the {self.name!r} vocabulary")
        counts = None if self.counts is None else [self.counts[i] for i, _ in rows]
        return Vocabulary(self.name, [w for _, w in rows], counts)


def _check_size(size: int, available: int, what: str) -> None:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if size > available:
        raise ValueError(f"{what} only {available:,} words, fewer than the {size:,} asked for; "
                         f"ask for at most {available:,}")


# ---------------------------------------------------------------------------------
# Tag corpora and counting
# ---------------------------------------------------------------------------------
def normalize_tag(tag: str) -> str:
    """How tags are compared: stripped and lower-cased (``" Rain"`` -> ``"rain"``)."""
    return tag.strip().lower()


def tag_counts(corpus: Iterable[Iterable[str]]) -> Counter[str]:
    """Number of clips carrying each (normalised) tag; a tag counts once per clip."""
    counts: Counter[str] = Counter()
    for i, tags in enumerate(corpus):
        if isinstance(tags, str):
            raise TypeError(f"clip {i} has the string {tags[:40]!r} as its tags; a tag corpus is "
                            "a list of tag *lists* (split ';'-joined tags first)")
        counts.update({t for t in map(normalize_tag, tags) if t})
    return counts


def is_expletive(tag: str) -> bool:
    """True when one of the tag's parts is in :data:`EXPLETIVES`."""
    return any(part in EXPLETIVES for part in re.split(r"[^a-z]+", tag.lower()))


def _ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """Most frequent first; ties alphabetically."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _vocabulary(name: str, ranked: list[tuple[str, int]], size: int | None = None) -> Vocabulary:
    """A vocabulary of ``(word, count)`` pairs: the first ``size`` (``None``: all)."""
    vocab = Vocabulary(name, [w for w, _ in ranked], [c for _, c in ranked])
    return vocab if size is None else vocab.head(size)


# ---------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------
def build_baseline(corpus: Iterable[Iterable[str]], size: int | None = PAPER_SIZE) -> Vocabulary:
    """The ``size`` most frequent tags, expletives removed (``None``: all of them)."""
    ranked = [(t, c) for t, c in _ranked(tag_counts(corpus)) if not is_expletive(t)]
    return _vocabulary("baseline", ranked, size)


def build_candidates(corpus: Iterable[Iterable[str]], n: int = N_CANDIDATES) -> Vocabulary:
    """Up to ``n`` most frequent tags, expletives removed: where pruning and
    clustering start (fewer when the corpus has fewer distinct tags)."""
    ranked = [(t, c) for t, c in _ranked(tag_counts(corpus)) if not is_expletive(t)]
    return _vocabulary("candidates", ranked[:n])


@dataclass
class Pruning:
    """What :func:`prune_tags` did.

    vocabulary: the pruned words, most frequent first.
    merged: for each kept word made of several tags (or of a hyphenated tag), those
        tags and their counts, most frequent first
        (``{"cough": [("cough", 9), ("coughing", 4)], "seashore": [("sea-shore", 6)]}``).
    dropped: the tags removed, by reason (``"single letter"``, ``"number"``,
        ``"multi-word tag"``, ``"not an English word"``).
    """

    vocabulary: Vocabulary
    merged: dict[str, list[tuple[str, int]]]
    dropped: dict[str, list[str]]


def prune_tags(candidates: Vocabulary) -> Pruning:
    """Drop non-words, join hyphenated words, merge forms of one root (see the module doc)."""
    if candidates.counts is None:
        raise ValueError("pruning needs tag counts; pass a vocabulary built from a tag corpus")
    dropped: dict[str, list[str]] = {reason: [] for reason in
                                     ("single letter", "number", "multi-word tag",
                                      "not an English word")}
    tags_of: dict[str, dict[str, int]] = {}  # word -> {tag: count}
    for tag, count in zip(candidates.words, candidates.counts):
        word, reason = _as_word(tag)
        if reason is None:
            tags_of.setdefault(word, {})[tag] = count
        else:
            dropped[reason].append(tag)
    root = _union_roots(list(tags_of))
    groups: dict[str, list[str]] = {}
    for word in tags_of:
        groups.setdefault(root(word), []).append(word)
    totals: dict[str, int] = {}
    merged: dict[str, list[tuple[str, int]]] = {}
    for words in groups.values():
        head = _ranked({w: sum(tags_of[w].values()) for w in words})[0][0]
        tags = _ranked({t: c for w in words for t, c in tags_of[w].items()})
        totals[head] = sum(c for _, c in tags)
        if tags != [(head, totals[head])]:  # several tags, or one joined tag (foot-steps)
            merged[head] = tags
    vocab = _vocabulary("pruned", _ranked(totals))
    return Pruning(vocab, {w: merged[w] for w in vocab if w in merged}, dropped)


def build_pruned(corpus: Iterable[Iterable[str]], size: int | None = PAPER_SIZE,
                 n_candidates: int = N_CANDIDATES) -> Vocabulary:
    """The paper's pruned recipe: :func:`prune_tags` on the ``n_candidates`` most
    frequent tags, then the ``size`` most frequent words (``None``: all)."""
    pruned = prune_tags(build_candidates(corpus, n_candidates)).vocabulary
    return pruned if size is None else pruned.head(size)


def _as_word(tag: str) -> tuple[str, str | None]:
    """(the single English word a tag stands for, None) or (tag, why it is dropped)."""
    if re.search(r"\d", tag):
        return tag, "number"
    if re.fullmatch(r"[a-z]+([-_][a-z]+)+", tag):
        joined = re.sub(r"[-_]", "", tag)
        return (joined, None) if _is_english(joined) else (tag, "multi-word tag")
    if len(tag) == 1:
        return tag, "single letter"
    if not re.fullmatch(r"[a-z]+", tag) or not _is_english(tag):
        return tag, "not an English word"
    return tag, None


@lru_cache(maxsize=1)
def _spell_checker():
    from spellchecker import SpellChecker  # pyspellchecker
    return SpellChecker(language="en")


def _is_english(word: str) -> bool:
    return word in _spell_checker() or bool(_lemmas(word))


def _lemmas(word: str) -> set[str]:
    """Every dictionary lemma of ``word`` over all parts of speech (LemmInflect)."""
    from lemminflect import getAllLemmas
    return {lemma for lemmas in getAllLemmas(word).values() for lemma in lemmas}


def _union_roots(words: list[str]):
    """Union-find over words and their lemmas; returns ``word -> group id``."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for word in words:
        find(word)
        lemmas = _lemmas(word)
        is_base_form = word in lemmas
        for lemma in lemmas - {word}:
            regular = len(lemma) > 2 and word.startswith(lemma[:-1])
            if regular or not is_base_form:
                a, b = find(word), find(lemma)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return find


def build_clustered(candidates: Vocabulary, embeddings: np.ndarray, size: int = PAPER_SIZE,
                    seed: int = 0) -> Vocabulary:
    """The paper's clustered recipe on precomputed embeddings.

    Args:
        candidates: the tags to choose from (with counts, most frequent first).
        embeddings: ``(len(candidates), D)`` text embeddings of the candidates.
        size: k, the number of clusters and of words kept.
        seed: k-means seed (k-means++ initialisation, one run).

    Returns:
        For each cluster, the member nearest its centroid (Euclidean), ordered by
        count (most frequent first), else by candidate order.
    """
    from sklearn.cluster import KMeans

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) != len(candidates):
        raise ValueError(f"embeddings must be (len(candidates), D) = ({len(candidates)}, D), "
                         f"got shape {x.shape}")
    _check_size(size, len(candidates), "the candidate list has")
    km = KMeans(n_clusters=size, n_init=1, random_state=seed).fit(x)
    labels = km.labels_
    dist = ((x - km.cluster_centers_[labels]) ** 2).sum(axis=1)
    order = np.lexsort((np.arange(len(x)), dist, labels))  # by cluster, then distance
    first = order[np.r_[True, labels[order][1:] != labels[order][:-1]]]
    if len(first) < size:
        raise ValueError(f"k-means found only {len(first)} distinct clusters for k = {size}: "
                         "the candidates have too few distinct embeddings; ask for fewer words")
    counts = candidates.counts
    chosen = sorted(first.tolist(), key=lambda i: i if counts is None else (-counts[i], i))
    return Vocabulary("clustered", [candidates.words[i] for i in chosen],
                      None if counts is None else [counts[i] for i in chosen])


def build_ontology(ontology_json: str | os.PathLike) -> Vocabulary:
    """The AudioSet class names of ``ontology.json``, verbatim and whole, in file order."""
    with open(ontology_json, encoding="utf-8") as f:
        classes = json.load(f)
    if not isinstance(classes, list) or not all(isinstance(c, dict) and "name" in c
                                                for c in classes):
        raise ValueError(f"{ontology_json} is not an AudioSet ontology (a JSON list of "
                         "classes with a 'name' each)")
    return Vocabulary("ontology", [c["name"].strip() for c in classes])


# ---------------------------------------------------------------------------------
# Reading and writing word lists (``word<TAB>count`` with a header line)
# ---------------------------------------------------------------------------------
def write_vocabulary(vocab: Vocabulary, path: str | os.PathLike) -> Path:
    """Write ``vocab`` as UTF-8 TSV, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    if vocab.counts is None:
        lines = ["word", *vocab.words]
    else:
        lines = ["word\tcount", *(f"{w}\t{c}" for w, c in zip(vocab.words, vocab.counts))]
    _write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def write_merges(pruning: Pruning, path: str | os.PathLike, size: int | None = None) -> Path:
    """Write which tags each of the first ``size`` pruned words merges, as TSV
    ``word<TAB>count<TAB>tag:count tag:count ...`` (words that are exactly one tag left out)."""
    vocab = pruning.vocabulary if size is None else pruning.vocabulary.head(size)
    lines = ["word\tcount\ttags"] + [
        f"{w}\t{c}\t" + " ".join(f"{form}:{n}" for form, n in pruning.merged[w])
        for w, c in zip(vocab.words, vocab.counts) if w in pruning.merged]
    path = Path(path)
    _write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def _write_text_atomic(path: Path, text: str) -> None:
    with atomic_write(path, "wb") as f:  # bytes: "\n" line ends on every platform
        f.write(text.encode("utf-8"))


def read_vocabulary(path: str | os.PathLike, name: str | None = None) -> Vocabulary:
    """Read a word list written by :func:`write_vocabulary` (header ``word`` or
    ``word<TAB>count``); errors name the file and line."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] not in ("word", "word\tcount"):
        raise ValueError(f"{path}: the first line must be the header 'word' or 'word<TAB>count'")
    with_counts = lines[0] == "word\tcount"
    words: list[str] = []
    counts: list[int] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        word = fields[0].strip()
        if not word:
            raise ValueError(f"{path}:{lineno}: empty entry; delete the line or write a word")
        if len(fields) != (2 if with_counts else 1):
            wanted = "word<TAB>count" if with_counts else "a word"
            raise ValueError(f"{path}:{lineno}: expected {wanted}, got {line!r}")
        if word in seen:
            raise ValueError(f"{path}:{lineno}: duplicate entry {word!r} (first on line "
                             f"{seen[word]}); delete one")
        seen[word] = lineno
        words.append(word)
        if with_counts:
            if not fields[1].isdigit():
                raise ValueError(f"{path}:{lineno}: count {fields[1]!r} is not a whole number")
            counts.append(int(fields[1]))
    if not words:
        raise ValueError(f"{path}: no words after the header")
    return Vocabulary(name or path.stem, words, counts if with_counts else None)


def load_vocabulary(name: str, size: int | None = None, model=None) -> Vocabulary:
    """A shipped vocabulary, or the clustered one for ``model``.

    Args:
        name: ``"baseline"``, ``"pruned"``, ``"ontology"``, ``"candidates"``, or
            ``"clustered"`` (needs ``model``; see :func:`clustered_vocabulary`).
        size: the first ``size`` words; ``None`` means the whole shipped list
            (``PAPER_SIZE`` for ``"clustered"``).
        model: a :class:`~clapnb.model.ClapModel`, for ``"clustered"`` only.
    """
    valid = (*VOCABULARIES, "candidates")
    if name == "clustered":
        if model is None:
            raise ValueError("the clustered vocabulary depends on the model's text encoder: "
                             "call load_vocabulary('clustered', size, model=model)")
        return clustered_vocabulary(model, PAPER_SIZE if size is None else size)
    if name not in SHIPPED:
        raise ValueError(f"unknown vocabulary {name!r}; valid names: {', '.join(valid)}")
    path = VOCABULARY_DIR / f"{name}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall clapnb, or run "
                                "`python scripts/build_vocabularies.py` in a checkout")
    vocab = read_vocabulary(path, name)
    return vocab if size is None else vocab.head(size)


# ---------------------------------------------------------------------------------
# What needs a model: the clustered recipe and concept embeddings (both cached)
# ---------------------------------------------------------------------------------
def clustered_vocabulary(model, size: int = PAPER_SIZE, seed: int = 0) -> Vocabulary:
    """The clustered vocabulary of ``model``, built from the shipped candidates.

    The candidates' text embeddings come from the embedding cache; the chosen
    word list is cached per (``model.cache_key``, size, seed, candidates).
    K-means runs once per model and size: measured on two busy CPU cores with
    6,000 candidates, about 30 s for k = 2,000 and 90 s for k = 3,000 or 5,000.
    """
    candidates = load_vocabulary("candidates")
    _check_size(size, len(candidates), "the candidate list has")
    key = hashlib.sha256("\n".join([model.cache_key, str(seed), *candidates.words])
                         .encode()).hexdigest()[:16]
    path = cache_dir("vocabularies") / f"clustered-{size}-{key}.tsv"
    if path.is_file():
        try:
            return read_vocabulary(path, "clustered")
        except ValueError as e:  # damaged: build it again
            warnings.warn(f"cached clustered vocabulary is damaged ({e}); rebuilding it",
                          stacklevel=2)
    embeddings = cached_text_embeddings(model, list(candidates.words), "vocabulary-candidates")
    vocab = build_clustered(candidates, embeddings, size, seed)
    write_vocabulary(vocab, path)
    return vocab


def vocabulary_embeddings(model, vocab: Vocabulary) -> np.ndarray:
    """``(len(vocab), D)`` unit-norm text embeddings of the words, row i = ``vocab[i]``;
    cached per (model, vocabulary name, size)."""
    return cached_text_embeddings(model, list(vocab.words), f"vocabulary-{vocab.name}-{len(vocab)}")


# ---------------------------------------------------------------------------------
# Tag corpora: Clotho (shipped copies, used for the committed lists) and FSD50K
# ---------------------------------------------------------------------------------
def clotho_tag_corpus(clotho_dir: str | os.PathLike) -> list[list[str]]:
    """The Freesound tags of the Clotho v1 clips: the ``keywords`` column
    (``;``-joined) of ``clotho_metadata_{development,evaluation}.csv``."""
    import csv

    clotho_dir = Path(clotho_dir)
    corpus: list[list[str]] = []
    for split in ("development", "evaluation"):
        path = clotho_dir / f"clotho_metadata_{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; pass the folder holding "
                                    "clotho_metadata_development.csv and _evaluation.csv")
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                corpus.append([t for t in (row.get("keywords") or "").split(";") if t.strip()])
    return corpus


def fsd50k_tag_corpus(root: str | os.PathLike | None = None, download: bool = True,
                      url: str = FSD50K_METADATA_URL) -> list[list[str]]:
    """The Freesound tags of the 51,197 FSD50K clips (dev, then eval), the paper's corpus.

    Downloads ``FSD50K.metadata.zip`` (Zenodo record 4060432) into ``root``
    (default: the clapnb cache) and reads ``dev_clips_info_FSD50K.json`` and
    ``eval_clips_info_FSD50K.json`` (clip id -> ``{"tags": [...], ...}``).
    """

    root = cache_dir("fsd50k") if root is None else Path(root)
    folder = root / "metadata"
    if not (folder / EXTRACTED_MARKER).is_file():
        archive = root / "FSD50K.metadata.zip"
        if not download and not archive.is_file():
            raise FileNotFoundError(f"no FSD50K metadata in {root}; call with download=True or "
                                    f"put FSD50K.metadata.zip (from {url}) there")
        extract_archive(download_file(url, archive, desc="FSD50K metadata"), folder)
    corpus: list[list[str]] = []
    for split in ("dev", "eval"):
        found = sorted(folder.rglob(f"{split}_clips_info_FSD50K.json"))
        if not found:
            raise FileNotFoundError(f"{split}_clips_info_FSD50K.json is not in {folder}; "
                                    "delete the folder to download the metadata again")
        with open(found[0], encoding="utf-8") as f:
            clips = json.load(f)
        corpus.extend(list(info.get("tags") or []) for info in clips.values())
    return corpus
