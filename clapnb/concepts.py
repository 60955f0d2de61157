"""Concept decompositions put to work: concept spaces, sweeps over lam, zero-shot, retrieval,
ground truth.

The concept paper (Zhang, Thomaz & Lu, IJCNN 2025) replaces a dense CLAP audio
embedding by the reconstruction of its sparse concept decomposition and asks what
that costs downstream. Every scorer here takes an *audio representation*
``(N, D)`` -- the dense embeddings or ``Decomposition.reconstruction`` -- so
dense and concept rows of a table come from the same code::

    from clapnb import concepts
    space = concepts.concept_space(model, "pruned", reference=audio_emb)   # words + embeddings + mean
    decomposer = space.decomposer()
    dense = concepts.zero_shot_scores(audio_emb, prompt_emb, labels)
    table = concepts.lambda_sweep(
        decomposer, audio_emb, [1.0, 0.25, 0.05],
        lambda dec: concepts.zero_shot_scores(dec.reconstruction, prompt_emb, labels))

Scores are flat ``{name: float}`` dicts (one table row each); every mean comes
with its 95 % bootstrap interval over the evaluation items, as ``name``,
``name_low`` and ``name_high``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from clapnb.decompose import ConceptDecomposer, ConceptSpace, Decomposition, embedding_mean
from clapnb.model import ClapModel
from clapnb.vocabulary import PAPER_SIZE, Vocabulary, load_vocabulary, vocabulary_embeddings
from clapnb.zeroshot import bootstrap_ci, cosine_matrix, retrieval_metrics, zero_shot
from clapnb.settings import progress_bar

Array = np.ndarray | torch.Tensor


def concept_space(model: ClapModel, vocabulary: str | Vocabulary = "pruned",
                  size: int | None = PAPER_SIZE, reference: Array | None = None,
                  known_words_only: bool = True) -> ConceptSpace:
    """A vocabulary embedded by ``model``, ready to decompose with.

    The chain every concept notebook needs, once: load the word list (``"clustered"`` is
    built for ``model``), drop the words the model never learned (``known_words_only``;
    LAION-CLAP's sub-word tokenizer knows them all), embed the rest (cached) and, given
    ``reference`` ``(N, D)`` audio embeddings, centre on their mean.

    Args:
        model: the active model.
        vocabulary: a vocabulary name (``"baseline"``, ``"pruned"``, ``"clustered"``, ...)
            or a :class:`~clapnb.vocabulary.Vocabulary`.
        size: the first ``size`` words of a named vocabulary (the paper: 2,000).
        reference: audio embeddings whose mean centres decompositions (SpLiCE's
            centring); ``None``: each decomposition centres on its own batch.
        known_words_only: leave out words the model never learned (listed in ``dropped``).
    """
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else \
        load_vocabulary(vocabulary, size=size, model=model)
    kept = vocab.filter(lambda word: not model.unknown_words(word)) if known_words_only else vocab
    known = set(kept.words)
    dropped = tuple(w for w in vocab.words if w not in known)
    return ConceptSpace(list(kept.words), vocabulary_embeddings(model, kept),
                        None if reference is None else embedding_mean(reference),
                        name=f"{vocab.name} @ {model.name}", dropped=dropped)


def _interval(name: str, values: np.ndarray, n_boot: int, seed: int) -> dict[str, float]:
    """``{name: mean, name_low: ..., name_high: ...}`` of per-item values (95 % bootstrap)."""
    mean, low, high = bootstrap_ci(values, n_boot=n_boot, seed=seed)
    return {name: mean, f"{name}_low": low, f"{name}_high": high}


def _rows(x: Array, what: str) -> int:
    if not isinstance(x, (np.ndarray, torch.Tensor)) or x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) array, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(x.shape)}); pass at least one row")
    return x.shape[0]


# ---------------------------------------------------------------------------------
# Sweeping the L1 weight
# ---------------------------------------------------------------------------------
def lambda_sweep(decomposer: ConceptDecomposer, audio_emb: Array, lams: Sequence[float],
                 evaluate: Callable[[Decomposition], Mapping[str, float]] | None = None,
                 audio_mean: Array | None = None, progress: bool = True) -> pd.DataFrame:
    """Decompose ``audio_emb`` ``(N, D)`` once per ``lam`` and tabulate the results.

    Args:
        decomposer: holds the concept dictionary (and usually the audio mean).
        lams: L1 weights, e.g. ``[1.0, 0.5, 0.25, 0.1, 0.05]`` (any order).
        evaluate: ``Decomposition -> {metric: value}``, e.g. a lambda calling
            :func:`zero_shot_scores` on ``dec.reconstruction``; its keys become columns.
        audio_mean: passed on to the decomposer (default: the decomposer's own).

    Returns:
        One row per ``lam`` in the given order: ``lam``, ``l0`` (mean number of
        concepts), ``l0_min``, ``l0_max``, ``cosine`` (mean cosine of
        reconstruction and embedding), ``seconds`` (solver time), then the metrics.
    """
    lams = [float(lam) for lam in np.atleast_1d(np.asarray(lams, dtype=float))]
    if not lams:
        raise ValueError("lams is empty: give at least one L1 weight, e.g. [0.25]")
    if any(not np.isfinite(lam) or lam < 0 for lam in lams):
        raise ValueError(f"every lam must be finite and >= 0, got {lams}")
    rows = []
    for lam in progress_bar(lams, desc="lambda sweep", disable=not progress):
        start = time.perf_counter()
        dec = decomposer(audio_emb, lam=lam, audio_mean=audio_mean, progress=False)
        seconds = time.perf_counter() - start
        l0 = dec.l0.float()
        row = {"lam": lam, "l0": float(l0.mean()), "l0_min": int(l0.min()),
               "l0_max": int(l0.max()), "cosine": float(dec.cosine.mean()), "seconds": seconds}
        if evaluate is not None:
            row.update(evaluate(dec))
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------
# Scores of one representation
# ---------------------------------------------------------------------------------
def zero_shot_scores(representation: Array, prompt_emb: Array, labels: Sequence[int] | np.ndarray,
                     logit_scale: float = 100.0, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Zero-shot accuracy of ``representation`` ``(N, D)`` against one prompt per class
    ``(C, D)``: ``{"accuracy", "accuracy_low", "accuracy_high"}`` (95 % bootstrap over clips)."""
    n = _rows(representation, "representation")
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must be one class index per clip ({n}), got shape {labels.shape}")
    n_classes = _rows(prompt_emb, "prompt_emb")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"labels must be class indices in 0..{n_classes - 1} (one prompt per "
                         f"class), got {labels.min()}..{labels.max()}")
    correct = zero_shot(representation, prompt_emb, logit_scale).predictions == labels
    return _interval("accuracy", correct, n_boot, seed)


def retrieval_scores(representation: Array, caption_emb: Array,
                     caption_clip: Sequence[int] | np.ndarray, n_boot: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Text->audio and audio->text retrieval between clips and their captions.

    Args:
        representation: ``(N, D)`` one row per clip (dense or reconstruction).
        caption_emb: ``(M, D)`` text embeddings of all captions.
        caption_clip: ``(M,)`` the clip each caption describes (Clotho: 5 per clip).

    Returns:
        ``t2a_R@1``, ``t2a_R@5``, ``t2a_R@10``, ``t2a_mAP@10`` (each caption queries the
        clips; only its own clip counts as correct) and the same ``a2t_...`` (each clip
        queries the captions; all its captions count), each with ``_low``/``_high``
        (95 % bootstrap over queries).
    """
    n = _rows(representation, "representation")
    m = _rows(caption_emb, "caption_emb")
    owner = np.asarray(caption_clip)
    if owner.shape != (m,):
        raise ValueError(f"caption_clip must give one clip index per caption ({m}), "
                         f"got shape {owner.shape}")
    if owner.min() < 0 or owner.max() >= n:
        raise ValueError(f"caption_clip holds clip indices {owner.min()}..{owner.max()} but "
                         f"there are {n} clips; index the rows of representation")
    missing = np.setdiff1d(np.arange(n), owner)
    if missing.size:
        raise ValueError(f"clips {missing[:5].tolist()}... have no caption; audio->text "
                         "retrieval needs at least one per clip (drop those clips)")
    sim = cosine_matrix(caption_emb, representation)                      # (M, N)
    scores: dict[str, float] = {}
    for prefix, s, relevant in (("t2a", sim, [[int(c)] for c in owner]),
                                ("a2t", sim.T, [np.flatnonzero(owner == i) for i in range(n)])):
        per_query = [retrieval_metrics(s[q:q + 1], [relevant[q]]) for q in range(len(relevant))]
        for metric in per_query[0]:
            scores.update(_interval(f"{prefix}_{metric}", np.array([p[metric] for p in per_query]),
                                    n_boot, seed))
    return scores


def top_k_ground_truth(dec: Decomposition, labels: Sequence[int] | np.ndarray,
                       class_names: Sequence[str], class_words: Mapping[str, Sequence[str]],
                       k: int = 3, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """How often a clip's k strongest concepts name its true class.

    For clip i of class ``c = class_names[labels[i]]``, take the (at most) k concepts
    with the largest non-zero weights. Two hit rates, each with a 95 % bootstrap
    interval over clips:

    * ``class_name``: ``c`` itself is among them;
    * ``class_or_concept``: ``c`` or one of ``class_words[c]`` is (offline:
      :data:`clapnb.synth.CONCEPTS`, e.g. siren -> ambulance, police, ...).

    Words are compared exactly (``"bird"`` does not match ``"birds"``). Also returns
    ``class_name_in_vocabulary``: the share of clips whose class name is a concept
    at all (a ceiling on the first rate).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    labels = np.asarray(labels)
    if labels.shape != (len(dec),):
        raise ValueError(f"labels must be one class index per decomposed clip ({len(dec)}), "
                         f"got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(f"labels must index class_names (0..{len(class_names) - 1}), got "
                         f"{labels.min()}..{labels.max()}")
    unknown = [c for c in set(class_names[i] for i in labels) if c not in class_words]
    if unknown:
        raise KeyError(f"class_words has no entry for {sorted(unknown)}; give every class its "
                       "list of concept words (it may be empty)")
    vocab = set(dec.concepts)
    name_hit, any_hit, in_vocab = [], [], []
    for i, label in enumerate(labels):
        name = class_names[label]
        top = {concept for concept, _ in dec.top(k, i)}
        name_hit.append(name in top)
        any_hit.append(bool(top & {name, *class_words[name]}))
        in_vocab.append(name in vocab)
    return {**_interval("class_name", np.array(name_hit), n_boot, seed),
            **_interval("class_or_concept", np.array(any_hit), n_boot, seed),
            "class_name_in_vocabulary": float(np.mean(in_vocab))}
