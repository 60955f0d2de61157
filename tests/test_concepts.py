"""Concept decompositions downstream: the lam sweep, zero-shot, retrieval and ground-truth scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapnb.concepts import lambda_sweep, retrieval_scores, top_k_ground_truth, zero_shot_scores
from clapnb.decompose import ConceptDecomposer, Decomposition
from clapnb.zeroshot import retrieval_metrics


def orthonormal_problem(n=6, v=12, d=16, seed=0):
    """v orthonormal concept rows and n unit targets: without centering the non-negative
    lasso is separable, w_j = max(0, c_j . z - lam / 2), so l0 and the weights are known."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    C = q[:v].astype(np.float32)
    Z = rng.standard_normal((n, d))
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    return C, Z.astype(np.float32)


def fake_decomposition(weights: np.ndarray, concepts: list[str]) -> Decomposition:
    """A Decomposition with given weights (the other fields do not matter for top-k)."""
    w = torch.tensor(weights, dtype=torch.float32)
    n = len(w)
    ones = torch.ones(n)
    return Decomposition(weights=w, concepts=concepts, lam=ones, l0=(w > 0).sum(1), cosine=ones,
                         reconstruction=torch.zeros(n, 2), centered_norm=ones,
                         audio_mean=torch.zeros(2), gap=torch.zeros(n))


# ---------------------------------------------------------------------------------
# lambda_sweep
# ---------------------------------------------------------------------------------
def test_sweep_l0_and_cosine_follow_the_closed_form():
    C, Z = orthonormal_problem()
    lams = [0.05, 0.2, 0.4, 0.8]
    decomposer = ConceptDecomposer(C, [f"c{j}" for j in range(len(C))], center=False, device="cpu")
    table = lambda_sweep(decomposer, Z, lams, progress=False)
    assert list(table["lam"]) == lams
    corr = Z @ C.T                                                     # (n, v): c_j . z
    for row, lam in zip(table.itertuples(), lams):
        w = np.maximum(corr - lam / 2, 0)
        assert row.l0 == pytest.approx((w > 0).sum(1).mean())
        assert row.l0_min == (w > 0).sum(1).min() and row.l0_max == (w > 0).sum(1).max()
        recon = w @ C
        norms = np.linalg.norm(recon, axis=1)
        cos = np.where(norms > 0, (recon * Z).sum(1) / np.maximum(norms, 1e-12), 0)
        assert row.cosine == pytest.approx(cos.mean(), abs=1e-4)
    # larger lam: never more concepts, never a closer reconstruction
    assert np.all(np.diff(table["l0"]) <= 0) and table["l0"].iloc[0] > table["l0"].iloc[-1]
    assert np.all(np.diff(table["cosine"]) <= 1e-6)


def test_sweep_l0_decreases_with_lam_on_a_correlated_centred_dictionary():
    rng = np.random.default_rng(3)
    C = rng.standard_normal((80, 24)) + 0.6 * rng.standard_normal(24)   # shared offset, like CLAP
    Z = rng.random((30, 6)) @ C[:6] + 0.2 * rng.standard_normal((30, 24))
    decomposer = ConceptDecomposer(C, [f"c{j}" for j in range(80)], device="cpu")
    table = lambda_sweep(decomposer, Z, [0.01, 0.03, 0.1, 0.3, 1.0], progress=False)
    assert np.all(np.diff(table["l0"]) < 0)


def test_sweep_adds_the_metrics_of_evaluate_and_passes_each_decomposition():
    C, Z = orthonormal_problem()
    decomposer = ConceptDecomposer(C, [f"c{j}" for j in range(len(C))], center=False, device="cpu")
    seen = []

    def evaluate(dec):
        seen.append(float(dec.lam[0]))
        return {"first_weight": float(dec.weights[0, 0])}

    table = lambda_sweep(decomposer, Z, [0.1, 0.3], evaluate, progress=False)
    assert seen == pytest.approx([0.1, 0.3])
    expected = max(float(Z[0] @ C[0]) - 0.3 / 2, 0)
    assert table["first_weight"].iloc[1] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("lams, message", [([], "empty"), ([0.1, -1.0], ">= 0"),
                                           ([float("nan")], "finite")])
def test_sweep_rejects_bad_lams(lams, message):
    C, Z = orthonormal_problem()
    decomposer = ConceptDecomposer(C, [f"c{j}" for j in range(len(C))], center=False, device="cpu")
    with pytest.raises(ValueError, match=message):
        lambda_sweep(decomposer, Z, lams, progress=False)


# ---------------------------------------------------------------------------------
# zero_shot_scores
# ---------------------------------------------------------------------------------
def test_zero_shot_scores_count_correct_clips():
    prompts = np.eye(3, 4, dtype=np.float32)                   # class k points along axis k
    audio = np.array([[1, .1, 0, 0], [0, 1, .2, 0], [0, .9, .1, 0], [.1, 0, 1, 0]], np.float32)
    labels = np.array([0, 1, 2, 2])                            # clip 2 looks like class 1
    scores = zero_shot_scores(audio, prompts, labels)
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["accuracy_low"] <= 0.75 <= scores["accuracy_high"]
    assert scores["accuracy_low"] < scores["accuracy_high"]
    perfect = zero_shot_scores(audio[[0, 1, 3]], prompts, labels[[0, 1, 3]])
    assert perfect == {"accuracy": 1.0, "accuracy_low": 1.0, "accuracy_high": 1.0}


def test_zero_shot_scores_take_torch_reconstructions():
    prompts = torch.eye(2, 3)
    assert zero_shot_scores(torch.tensor([[0.0, 1.0, 0.0]]), prompts, [1])["accuracy"] == 1.0


@pytest.mark.parametrize("labels, message", [([0, 1], "one class index per clip"),
                                             ([0, 1, 5], "class indices in 0..2")])
def test_zero_shot_scores_reject_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        zero_shot_scores(np.eye(3), np.eye(3), labels)


def test_zero_shot_scores_reject_a_vector():
    with pytest.raises(ValueError, match=r"2-D \(N, D\)"):
        zero_shot_scores(np.ones(3), np.eye(3), [0])


# ---------------------------------------------------------------------------------
# retrieval_scores
# ---------------------------------------------------------------------------------
def retrieval_case():
    """3 clips along the axes; 2 captions each. Caption 5 (of clip 2) points at clip 1."""
    clips = np.eye(3, dtype=np.float32)
    captions = np.array([[1, .1, 0], [1, 0, .2], [0, 1, .1], [.1, 1, 0], [0, .1, 1], [0, 1, .3]],
                        np.float32)
    owner = np.array([0, 0, 1, 1, 2, 2])
    return clips, captions, owner


def test_retrieval_scores_by_hand():
    clips, captions, owner = retrieval_case()
    s = retrieval_scores(clips, captions, owner)
    assert s["t2a_R@1"] == pytest.approx(5 / 6)              # caption 5 finds clip 1 first
    assert s["t2a_R@5"] == 1.0
    assert s["t2a_mAP@10"] == pytest.approx((5 + 1 / 2) / 6)  # its clip comes second
    assert s["a2t_R@1"] == 1.0                                # every clip's best caption is its own
    # each clip's own two captions come first (clip 1: captions 2 and 3, then 5): AP = 1
    assert s["a2t_mAP@10"] == pytest.approx(1.0)
    assert s["t2a_R@1_low"] <= s["t2a_R@1"] <= s["t2a_R@1_high"]


def test_retrieval_scores_agree_with_retrieval_metrics_on_random_embeddings():
    rng = np.random.default_rng(0)
    clips = rng.standard_normal((20, 8))
    owner = np.repeat(np.arange(20), 3)
    captions = clips[owner] + 1.5 * rng.standard_normal((60, 8))
    s = retrieval_scores(clips, captions, owner)
    sim = captions @ clips.T / np.linalg.norm(captions, axis=1)[:, None] / np.linalg.norm(clips, axis=1)
    t2a = retrieval_metrics(sim, [[o] for o in owner])
    a2t = retrieval_metrics(sim.T, [np.flatnonzero(owner == i) for i in range(20)])
    for metric in t2a:
        assert s[f"t2a_{metric}"] == pytest.approx(t2a[metric], abs=1e-6)
        assert s[f"a2t_{metric}"] == pytest.approx(a2t[metric], abs=1e-6)


def test_retrieval_scores_reject_bad_caption_owners():
    clips, captions, owner = retrieval_case()
    with pytest.raises(ValueError, match="one clip index per caption"):
        retrieval_scores(clips, captions, owner[:4])
    with pytest.raises(ValueError, match="there are 3 clips"):
        retrieval_scores(clips, captions, np.array([0, 0, 1, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"clips \[2\]\.\.\. have no caption"):
        retrieval_scores(clips, captions, np.array([0, 0, 1, 1, 1, 1]))


# ---------------------------------------------------------------------------------
# top_k_ground_truth
# ---------------------------------------------------------------------------------
CLASS_WORDS = {"siren": ["police", "ambulance"], "rain": ["drizzle"]}


def test_top_k_ground_truth_counts_both_definitions_by_hand():
    concepts = ["siren", "police", "rain", "drizzle", "car"]
    weights = np.array([
        [0.5, 0.2, 0.0, 0.0, 0.1],   # siren clip: "siren" in top 3          -> name hit, any hit
        [0.0, 0.4, 0.0, 0.0, 0.6],   # siren clip: only "police"             -> any hit
        [0.0, 0.0, 0.0, 0.0, 0.9],   # rain clip: only "car"                 -> miss, miss
        [0.1, 0.3, 0.05, 0.0, 0.4],  # rain clip: "rain" is 4th of 4         -> miss at k=3, hit at k=4
    ])
    dec = fake_decomposition(weights, concepts)
    labels = [0, 0, 1, 1]
    at3 = top_k_ground_truth(dec, labels, ["siren", "rain"], CLASS_WORDS, k=3)
    assert at3["class_name"] == pytest.approx(1 / 4)
    assert at3["class_or_concept"] == pytest.approx(2 / 4)
    assert at3["class_name_in_vocabulary"] == 1.0
    at4 = top_k_ground_truth(dec, labels, ["siren", "rain"], CLASS_WORDS, k=4)
    assert at4["class_name"] == pytest.approx(2 / 4)
    assert at4["class_or_concept"] == pytest.approx(3 / 4)
    assert at4["class_name_low"] <= at4["class_name"] <= at4["class_name_high"]


def test_top_k_ground_truth_ignores_zero_weights_and_reports_missing_class_names():
    # "rain" has weight 0: it is not among the concepts of the clip, even with k = 5
    dec = fake_decomposition(np.array([[0.0, 0.7, 0.0]]), ["rain", "car", "wind"])
    s = top_k_ground_truth(dec, [0], ["rain"], {"rain": []}, k=5)
    assert s["class_name"] == 0.0
    dec = fake_decomposition(np.array([[0.7, 0.2]]), ["police", "car"])
    s = top_k_ground_truth(dec, [0], ["siren"], CLASS_WORDS, k=1)
    assert s["class_name_in_vocabulary"] == 0.0 and s["class_or_concept"] == 1.0


def test_top_k_ground_truth_rejects_bad_input():
    dec = fake_decomposition(np.array([[0.5, 0.1]]), ["siren", "police"])
    with pytest.raises(ValueError, match="k must be a positive integer"):
        top_k_ground_truth(dec, [0], ["siren"], CLASS_WORDS, k=0)
    with pytest.raises(ValueError, match="one class index per decomposed clip"):
        top_k_ground_truth(dec, [0, 0], ["siren"], CLASS_WORDS)
    with pytest.raises(ValueError, match="must index class_names"):
        top_k_ground_truth(dec, [3], ["siren"], CLASS_WORDS)
    with pytest.raises(KeyError, match="no entry for \\['dog'\\]"):
        top_k_ground_truth(dec, [0], ["dog"], CLASS_WORDS)


# ---------------------------------------------------------------------------------
# ConceptSpace and concept_space: words, embeddings and audio mean bound together
# ---------------------------------------------------------------------------------
def test_concept_space_decomposes_like_the_decomposer_it_replaces():
    from clapnb.decompose import ConceptSpace, embedding_mean
    C, Z = orthonormal_problem(n=5, v=10)
    words = [f"w{i}" for i in range(len(C))]
    space = ConceptSpace(words, C, name="toy").with_audio_mean(Z)
    by_hand = ConceptDecomposer(C, words, audio_mean=embedding_mean(Z))(Z, lam=0.1, progress=False)
    dec = space.decompose(Z, lam=0.1, progress=False)
    torch.testing.assert_close(dec.weights, by_hand.weights)
    torch.testing.assert_close(dec.audio_mean, embedding_mean(Z))
    assert space.decomposer() is space.decomposer()                   # prepared once
    assert space.decomposer(center=False) is not space.decomposer()
    assert space.decomposer(center=False).center is False
    assert len(space) == 10 and "toy: 10 words, 16-d, with audio mean" in repr(space)


def test_concept_space_without_a_mean_centres_on_each_batch():
    from clapnb.decompose import ConceptSpace
    C, Z = orthonormal_problem(n=5, v=10)
    dec = ConceptSpace([f"w{i}" for i in range(10)], C).decompose(Z, lam=0.1, progress=False)
    torch.testing.assert_close(dec.audio_mean, torch.as_tensor(Z).mean(0))


@pytest.mark.parametrize("words, emb, message", [
    ("rain", np.zeros((1, 4)), "list of concept words"),
    (["a", "b"], np.zeros((3, 4)), r"2 words need a \(2, D\) embedding matrix, got shape \(3, 4\)"),
    (["a", "b"], np.zeros(4), r"got shape \(4,\)"),
])
def test_concept_space_refuses_misaligned_words_and_embeddings(words, emb, message):
    from clapnb.decompose import ConceptSpace
    with pytest.raises((TypeError, ValueError), match=message):
        ConceptSpace(words, emb)


def test_concept_space_of_a_model_drops_unknown_words_and_keeps_them_aligned():
    from clapnb.concepts import concept_space
    from clapnb.tiny import load_tiny
    from clapnb.vocabulary import Vocabulary, vocabulary_embeddings
    model = load_tiny("cpu")
    vocab = Vocabulary("toy", ["siren", "zzqxj", "rain", "bell"])
    reference = np.eye(model.embed_dim, dtype=np.float32)[:3]
    space = concept_space(model, vocab, reference=reference)
    assert space.words == ["siren", "rain", "bell"] and space.dropped == ("zzqxj",)
    assert space.name == "toy @ tiny"
    np.testing.assert_allclose(space.embeddings, model.embed_text(space.words).numpy(), atol=1e-5)
    np.testing.assert_allclose(space.audio_mean.numpy(), reference.mean(0), atol=1e-6)
    everything = concept_space(model, vocab, known_words_only=False)
    assert everything.words == list(vocab.words) and everything.audio_mean is None
    np.testing.assert_allclose(everything.embeddings, vocabulary_embeddings(model, vocab))
    with pytest.raises(ValueError, match="keeps no word of the 'junk' vocabulary"):
        concept_space(model, Vocabulary("junk", ["zzqxj"]))
