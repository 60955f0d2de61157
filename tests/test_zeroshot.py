import numpy as np
import pytest

from clapnb.datasets import ClipSet
import torch

from clapnb import zeroshot
from clapnb.zeroshot import bootstrap_ci, class_prompts, cosine_matrix, retrieval_metrics, zero_shot


def test_class_prompts_fill_the_template_and_refuse_one_without_a_slot():
    assert class_prompts(["dog", "rain"]) == ["This is a sound of dog.", "This is a sound of rain."]
    with pytest.raises(ValueError, match="needs a"):
        class_prompts(["dog"], "a sound")


def test_zero_shot_picks_the_most_similar_prompt():
    prompts = np.eye(3, dtype=np.float32)
    audio = np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.8], [0.1, 0.7, 0.0]], dtype=np.float32)
    result = zero_shot(audio, prompts, logit_scale=10.0)
    assert result.predictions.tolist() == [0, 2, 1]
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, rtol=1e-6)
    assert result.accuracy(np.array([0, 2, 0])) == pytest.approx(2 / 3)


def test_cosine_matrix_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match="sizes differ"):
        cosine_matrix(np.ones((2, 3)), np.ones((2, 4)))


def test_retrieval_metrics_on_a_hand_computed_case():
    # query 0: relevant item 2 ranked 1st; query 1: relevant item 0 ranked 3rd
    sim = np.array([[0.1, 0.2, 0.9, 0.0], [0.5, 0.9, 0.1, 0.8]])
    m = retrieval_metrics(sim, [[2], [0]], ks=(1, 2, 3))
    assert m["R@1"] == 0.5 and m["R@2"] == 0.5 and m["R@3"] == 1.0
    assert m["mAP@10"] == pytest.approx((1.0 + 1 / 3) / 2)


def test_bootstrap_interval_contains_the_mean_and_narrows_with_more_data():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.8
    large = rng.random(5000) < 0.8
    m, lo, hi = bootstrap_ci(small)
    assert lo <= m <= hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert hi2 - lo2 < hi - lo


def test_clipset_subset_and_fold_keep_audio_aligned():
    clips = ClipSet(name="toy", clip_ids=[f"c{i}" for i in range(6)], labels=np.array([0, 1, 0, 1, 0, 1]),
                    folds=np.array([1, 1, 2, 2, 3, 3]), class_names=["a", "b"], sample_rate=8,
                    loader=lambda i: np.full(4, i, dtype=np.float32))
    sub = clips.fold(2, 3).subset([1, 2])
    assert sub.clip_ids == ["c3", "c4"]
    assert sub.audio(0)[0] == 3 and sub.label_name(1) == "a"


def test_modality_gap_is_the_distance_between_the_centroids():
    rng = np.random.default_rng(0)
    audio = rng.normal(size=(50, 8))
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    assert zeroshot.modality_gap(audio, audio) == 0.0
    shifted = audio + np.eye(8)[0]
    shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
    expected = np.linalg.norm(audio.mean(0) - shifted.mean(0))
    assert zeroshot.modality_gap(torch.from_numpy(audio), shifted) == pytest.approx(expected)
    assert expected > 0.1
    with pytest.raises(ValueError, match="paired"):
        zeroshot.modality_gap(audio, audio[:10])


def test_nearest_neighbour_accuracy_leaves_each_embedding_out():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.75]])
    # the last point's nearest other point is [0.1, 0.9] (class 1), its own label is 0
    assert zeroshot.nearest_neighbour_accuracy(emb, [0, 0, 1, 1, 0]) == pytest.approx(4 / 5)
    assert zeroshot.nearest_neighbour_accuracy(torch.tensor(emb) * 3, [0, 0, 1, 1, 1]) == 1.0   # cosine: scale-free
    with pytest.raises(ValueError, match="one label per embedding"):
        zeroshot.nearest_neighbour_accuracy(emb, [0, 1])
