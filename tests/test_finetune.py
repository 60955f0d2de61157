"""The fine-tuning map H: it learns a known map, starts at zero-shot, is reproducible, checks
input; the four-way cross-validation scores every clip from the fold that held it out."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapnb.decompose import ConceptDecomposer
from clapnb.finetune import REPRESENTATIONS, LinearMap, cross_validate, linear_probe, train_linear_map
from clapnb.zeroshot import zero_shot


def rotated_world(n_per_class=20, n_classes=6, d=12, noise=0.15, seed=0):
    """Prompts t_c (C, D) and audio z = R t_y + noise: the audio space is the text space
    turned by a random rotation R, so zero-shot fails and H = R^T is the right map."""
    rng = np.random.default_rng(seed)
    prompts = rng.standard_normal((n_classes, d))
    prompts /= np.linalg.norm(prompts, axis=1, keepdims=True)
    rotation, _ = np.linalg.qr(rng.standard_normal((d, d)))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    audio = prompts[labels] @ rotation.T + noise * rng.standard_normal((len(labels), d))
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    return audio.astype(np.float32), labels, prompts.astype(np.float32), rotation


def test_learns_the_rotation_between_audio_and_text():
    audio, labels, prompts, rotation = rotated_world()
    # held-out clips of the same world: same prompts and rotation, new noise
    test_labels = np.repeat(np.arange(len(prompts)), 10)
    rng = np.random.default_rng(99)
    test_audio = prompts[test_labels] @ rotation.T + 0.15 * rng.standard_normal((60, 12))
    before = zero_shot(test_audio, prompts).accuracy(test_labels)
    H = train_linear_map(audio, labels, prompts, epochs=60, lr=0.01, batch_size=16, progress=False)
    after = zero_shot(H(test_audio), prompts).accuracy(test_labels)
    assert before < 0.6 and after == 1.0
    # the map sends each class's audio direction R t_c back to its prompt t_c
    mapped = H(prompts @ rotation.T)
    assert (mapped * prompts).sum(1).min() > 0.95
    assert H.losses[-1] < 0.1 < H.losses[0]


def test_first_loss_is_the_zero_shot_loss_and_outputs_are_unit_norm():
    audio, labels, prompts, _ = rotated_world(noise=0.5)
    H = train_linear_map(audio, labels, prompts, epochs=2, progress=False)
    assert len(H.losses) == 3 and H.val_losses == []
    expected = 1 - (audio * prompts[labels]).sum(1).mean()       # H = I: cosine of z with t_y
    assert H.losses[0] == pytest.approx(float(expected), abs=1e-5)
    assert np.allclose(np.linalg.norm(H(audio), axis=1), 1, atol=1e-5)
    assert H.weight.shape == (12, 12) and H.weight.device.type == "cpu"


def test_same_seed_same_map_and_validation_never_trains():
    audio, labels, prompts, _ = rotated_world()
    val_audio, val_labels = audio[::7], labels[::7]
    a = train_linear_map(audio, labels, prompts, epochs=3, seed=1, progress=False)
    b = train_linear_map(audio, labels, prompts, epochs=3, seed=1, progress=False,
                         val=(val_audio, val_labels))
    c = train_linear_map(audio, labels, prompts, epochs=3, seed=2, progress=False)
    assert torch.equal(a.weight, b.weight)
    assert not torch.equal(a.weight, c.weight)        # another seed, another batch order
    assert len(b.val_losses) == 4 and b.val_losses[-1] < b.val_losses[0]


def test_a_map_is_usable_on_its_own():
    H = LinearMap(weight=torch.tensor([[0.0, 1.0], [1.0, 0.0]]))   # swaps the two axes
    assert np.allclose(H(np.array([[3.0, 0.0]])), [[0.0, 1.0]])
    with pytest.raises(ValueError, match="trained on 2-d"):
        H(np.ones((1, 3)))


@pytest.mark.parametrize("change, error, message", [
    (dict(labels=np.arange(120) % 7), ValueError, r"lie in 0\.\.5"),
    (dict(labels=np.zeros(5, int)), ValueError, "one class index per embedding"),
    (dict(labels=np.zeros(120)), TypeError, "integer class indices"),
    (dict(prompt_emb=np.ones((6, 5), np.float32)), ValueError, "same model"),
    (dict(audio_emb=np.full((120, 12), np.nan, np.float32)), ValueError, "NaN"),
    (dict(audio_emb=np.ones(12, np.float32)), ValueError, r"\(N, D\) matrix"),
    (dict(audio_emb=[[1.0] * 12]), TypeError, "numpy array or torch tensor"),
    (dict(epochs=0), ValueError, "epochs must be a positive integer"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(lr=-1.0), ValueError, "lr must be a positive number"),
    (dict(weight_decay=-0.1), ValueError, "weight_decay"),
    (dict(val=np.ones((3, 12))), TypeError, "pair"),
    (dict(val=(np.ones((3, 12)), [0, 1])), ValueError, "validation labels"),
])
def test_bad_input_is_explained(change, error, message):
    audio, labels, prompts, _ = rotated_world()
    args = dict(audio_emb=audio, labels=labels, prompt_emb=prompts, epochs=1, progress=False)
    args.update(change)
    with pytest.raises(error, match=message):
        train_linear_map(**args)


def test_cross_validation_scores_each_clip_from_the_fold_that_held_it_out():
    audio, labels, prompts, _ = rotated_world(n_per_class=20)
    folds = np.tile(np.arange(1, 6), len(labels) // 5)
    # concepts: the prompts themselves plus a few random directions
    words = np.concatenate([prompts, np.random.default_rng(3).standard_normal((6, 12))])
    decomposer = ConceptDecomposer(words, [f"w{i}" for i in range(len(words))], device="cpu")
    options = {"epochs": 60, "lr": 0.01, "batch_size": 16}
    cv = cross_validate(audio, labels, folds, prompts, decomposer, lam=0.05, **options)
    table = cv.table()
    assert list(table["representation"]) == list(REPRESENTATIONS)
    accuracy = dict(zip(table["representation"], table["accuracy"]))
    # the audio space is rotated: zero-shot fails, the learned map recovers it
    assert accuracy["dense zero-shot"] < 0.6 and accuracy["dense fine-tuned"] > 0.95
    assert cv.gain("dense") == pytest.approx(accuracy["dense fine-tuned"] - accuracy["dense zero-shot"])
    assert cv.gain("concept") > 0.3
    # fold 3's clips are classified by an H that never saw them
    held = folds == 3
    H = train_linear_map(audio[~held], labels[~held], prompts, progress=False, **options)
    assert np.array_equal(cv.predicted["dense fine-tuned"][held],
                          zero_shot(H(audio[held]), prompts).predictions)
    # a clip is right exactly when its own prompt beats the best other one
    for name in REPRESENTATIONS:
        assert np.array_equal(cv.predicted[name] == labels, cv.own[name] > cv.other[name])
    assert list(cv.per_fold["held-out fold"]) == [1, 2, 3, 4, 5]
    assert table["low"].le(table["accuracy"]).all() and table["high"].ge(table["accuracy"]).all()


@pytest.mark.parametrize("folds, message", [(np.ones(120, int), "at least two folds"),
                                            (np.ones(7, int), "equally long")])
def test_cross_validation_refuses_bad_folds(folds, message):
    audio, labels, prompts, _ = rotated_world()
    decomposer = ConceptDecomposer(prompts, [f"w{i}" for i in range(len(prompts))], device="cpu")
    with pytest.raises(ValueError, match=message):
        cross_validate(audio, labels, folds, prompts, decomposer, lam=0.05)
    with pytest.raises(ValueError, match="'dense' or 'concept'"):
        cross_validate(audio, labels, np.arange(120) % 2, prompts, decomposer, lam=0.05,
                       epochs=1).gain("fine-tuned")


def test_linear_probe_finds_what_the_embeddings_separate_and_no_more():
    audio, labels, prompts, _ = rotated_world(n_per_class=20)
    folds = np.tile(np.arange(1, 6), len(labels) // 5)
    # rotated away from the prompts, but the classes are apart: a linear classifier finds them
    assert zero_shot(audio, prompts).accuracy(labels) < 0.6
    probe = linear_probe(audio, labels, folds)
    assert probe["accuracy"] > 0.95 and probe["C"] in (0.1, 1.0, 10.0, 100.0)
    # labels unrelated to the audio: nothing to separate, about chance (1/6) on held-out folds
    shuffled = np.random.default_rng(0).permutation(labels)
    assert linear_probe(audio, shuffled, folds)["accuracy"] < 0.35
