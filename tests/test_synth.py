"""The synthetic sound world: classes, determinism, layout, captions, ground-truth masks."""

import re
import time
from collections import Counter

import numpy as np
import pytest
import torch

from clapnb import synth
from clapnb.model import StftConfig
from clapnb.tiny import words

STFT = StftConfig(512, 256, 512)


def _class_words(name: str) -> set[str]:
    return {name, *synth.CONCEPTS[name]}


def test_classes_families_and_concepts():
    assert len(synth.CLASSES) >= 40 and len(synth.HELD_OUT) >= 5
    assert len(set(synth.CLASSES + synth.HELD_OUT)) == len(synth.CLASSES) + len(synth.HELD_OUT)
    assert list(synth.CONCEPTS) == synth.CLASSES
    # confusable families: every family has several trained members
    families = Counter(synth.FAMILIES[c] for c in synth.CLASSES)
    assert len(families) == 5 and min(families.values()) >= 6, families
    owners = Counter(w for name in synth.CLASSES for w in _class_words(name))
    for name, concepts in synth.CONCEPTS.items():
        assert 1 <= len(concepts) <= 6, name
        # a concept word belongs to exactly one class, so it is a usable ground truth
        assert all(owners[w] == 1 for w in _class_words(name)), name


def test_held_out_classes_never_reach_training():
    for name in synth.HELD_OUT:
        assert synth.sound_class(name).held_out and name not in synth.CONCEPTS
        with pytest.raises(ValueError, match="held out"):
            synth.training_clip(0, name)
        # the description uses other words only
        assert not set(words(synth.DESCRIPTIONS[name])) & set(synth.HELD_OUT)
    rng = np.random.default_rng(0)
    texts = [synth.tags(c, rng, 6) for c in synth.CLASSES for _ in range(20)]
    texts += [synth.caption(synth.scene_recipe(s).events, rng) for s in range(200)]
    assert not {w for t in texts for w in words(t)} & set(synth.HELD_OUT)
    assert all(e.label in synth.CLASSES for s in range(200) for e in synth.scene_recipe(s).events)
    held = synth.load_synthetic_clips(n_per_class=2, seed=0, classes=synth.HELD_OUT)
    assert held.class_names == synth.HELD_OUT and np.isfinite(held.audio(3)).all()


@pytest.mark.parametrize("name", ["baseline", "pruned"])
def test_class_and_concept_words_are_in_the_2000_word_vocabularies(name):
    vocabulary = pytest.importorskip("clapnb.vocabulary")
    top = set(vocabulary.load_vocabulary(name, size=2000).words)
    missing = [w for c in synth.CLASSES for w in _class_words(c) if w not in top]
    assert not missing, f"not among the first 2000 words of {name!r}: {missing}"


def test_every_phrase_names_its_class_and_no_other():
    for name in synth.CLASSES:
        others = set().union(*(_class_words(o) for o in synth.CLASSES if o != name))
        for noun, verbs in synth.sound_class(name).phrases:
            toks = set(words(noun))
            assert toks & _class_words(name), (name, noun)
            for verb in verbs:
                assert not (toks | set(words(verb))) & others, (name, noun, verb)


def test_tag_words_come_from_the_baseline_vocabulary_one_class_each():
    vocabulary = pytest.importorskip("clapnb.vocabulary")
    top = set(vocabulary.load_vocabulary("baseline", size=2000).words)
    owner = {}
    for name in synth.CLASSES:
        table = synth.tag_words(name)
        assert set(_class_words(name)) <= set(table), name  # names and concepts stay home
        for w in table:
            assert w in top and w not in owner, (name, w)
            owner[w] = name
    assert len(owner) >= 1000
    rng = np.random.default_rng(1)
    for _ in range(50):
        text = synth.tags("siren", rng, 6).split()
        assert 1 <= len(text) <= 7 and set(text) <= set(synth.tag_words("siren"))
    with pytest.raises(ValueError, match="held out"):
        synth.tag_words("doorbell")


def test_assign_tag_words_by_lift_with_held_out_names_left_out():
    corpus = [["siren", "police", "window"], ["siren", "street"], ["rain", "window"],
              ["rain", "window", "roof"], ["city", "street"], ["doorbell", "siren", "house"]]
    rows = {tag: (name, n) for tag, name, n in synth.assign_tag_words(
        corpus, ["window", "street", "roof", "doorbell", "house", "unrelated", "police"])}
    assert rows["window"] == ("rain", 2)      # 2 of 2 rain clips beat 1 of 3 siren clips
    assert rows["roof"] == ("rain", 1)
    assert rows["police"] == ("siren", 1)    # a concept word goes to its own class
    assert rows["street"][0] in {"siren", "traffic"}
    assert "doorbell" not in rows and "unrelated" not in rows


def test_clips_are_deterministic_by_seed():
    a = synth.load_synthetic_clips(n_per_class=2, seed=5, classes=["siren", "rain"])
    b = synth.load_synthetic_clips(n_per_class=2, seed=5, classes=["siren", "rain"])
    c = synth.load_synthetic_clips(n_per_class=2, seed=6, classes=["siren", "rain"])
    assert a.clip_ids == b.clip_ids
    for i in range(len(a)):
        np.testing.assert_array_equal(a.audio(i), b.audio(i))
        assert not np.allclose(a.audio(i), c.audio(i))
    # re-rendering is exact, and every clip differs from the others
    assert len({a.audio(i).tobytes() for i in range(len(a))}) == len(a)


def test_clip_layout_like_esc50():
    clips = synth.load_synthetic_clips(n_per_class=10, seed=1)
    assert clips.class_names == synth.CLASSES
    assert len(clips) == 10 * len(synth.CLASSES) == len(set(clips.clip_ids))
    for c in range(len(synth.CLASSES)):
        assert sorted(clips.folds[clips.labels == c]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    fold = clips.fold(3)
    assert set(fold.folds) == {3} and len(fold) == 2 * len(synth.CLASSES)
    x = fold.audio(0)
    assert x.dtype == np.float32 and x.shape == (synth.CLIP_SAMPLES,)
    event = synth.recipe_of(fold, 0).events[0]
    assert event.label == fold.label_name(0)
    assert 0 <= event.onset < event.offset <= synth.CLIP_SECONDS
    assert event.duration >= 1.0
    # the event is louder than the background ambience around it
    recipe = synth.recipe_of(fold, 0)
    inside = x[int(event.onset * 16000):int(event.offset * 16000)]
    assert np.sqrt(np.mean(inside ** 2)) > np.sqrt(np.mean(synth.render_background(
        recipe.background_seed, recipe.background_db, kind=recipe.background) ** 2))
    # backgrounds: every kind, over a spread of levels
    recipes = [synth.recipe_of(clips, i) for i in range(len(clips))]
    assert {r.background for r in recipes} == set(synth.sounds.AMBIENCES)
    levels = [r.background_db for r in recipes]
    assert min(levels) < -55 and max(levels) > -40


def test_every_class_renders_finite_audio_quickly():
    start = time.perf_counter()
    for name in synth.CLASSES:
        x = synth.render(synth.clip_recipe(name, 3))
        assert np.isfinite(x).all() and np.abs(x).max() < 1.0
        assert np.abs(x).max() > 0.01, name
    assert (time.perf_counter() - start) / len(synth.CLASSES) < 0.1  # generous on a shared CPU


def test_scenes_events_and_captions():
    scenes = synth.load_synthetic_scenes(n=30, seed=3, min_events=1, max_events=3)
    assert len(scenes) == 30 and scenes.events is not None
    counts = Counter(len(ev) for ev in scenes.events)
    assert set(counts) <= {1, 2, 3} and len(counts) == 3
    for events, caps in zip(scenes.events, scenes.captions):
        assert all(isinstance(e, synth.Event) for e in events)
        assert len({e.label for e in events}) == len(events)
        assert all(0 <= e.onset < e.offset <= synth.CLIP_SECONDS for e in events)
        assert 1 <= len(caps) <= 2 and len(set(caps)) == len(caps)
        for cap in caps:  # every event's class is named (by its word or a concept word)
            for e in events:
                assert set(words(cap)) & _class_words(e.label), (cap, e.label)
    two = synth.load_synthetic_scenes(n=5, seed=3, min_events=2, max_events=2)
    assert all(len(ev) == 2 for ev in two.events)
    again = synth.load_synthetic_scenes(n=5, seed=3, min_events=2, max_events=2)
    assert again.captions == two.captions and again.events == two.events
    np.testing.assert_array_equal(two.audio(4), again.audio(4))


def test_scene_audio_is_the_sum_of_its_stems():
    scenes = synth.load_synthetic_scenes(n=3, seed=0, min_events=3, max_events=3)
    stems = synth.render_stems(synth.recipe_of(scenes, 1))
    assert stems.shape == (4, synth.CLIP_SAMPLES)
    np.testing.assert_allclose(stems.sum(axis=0), scenes.audio(1), atol=1e-6)
    for e, stem in zip(scenes.events[1], stems):  # silent outside the event
        start, stop = int(e.onset * 16000), int(e.offset * 16000)
        assert not stem[:start - 1].any() and not stem[stop + 1:].any()


def test_lone_event_mask_covers_its_energy():
    clips = synth.load_synthetic_clips(n_per_class=1, seed=2)
    # clips over a quiet background (at least ~13 dB below the event): a loud ambience
    # rightly takes the bins where the event is weaker than it
    quiet = [i for i in range(len(clips)) if synth.recipe_of(clips, i).background_db < -45]
    assert len(quiet) >= 10
    for i in quiet:
        masks = synth.event_masks(clips, i, STFT)
        assert masks.shape == (1, 257, 313) and masks.dtype == bool
        stem = synth.render_event(synth.recipe_of(clips, i).events[0])
        power = STFT.stft(torch.from_numpy(stem)[None]).abs().numpy()[0] ** 2
        covered = (power * masks[0]).sum() / power.sum()
        assert covered > 0.9, (clips.label_name(i), covered)
        # nothing is marked long before the event starts
        onset_frame = int(synth.recipe_of(clips, i).events[0].onset * 16000 / 256)
        assert not masks[0][:, :max(onset_frame - 3, 0)].any()


def test_masks_of_overlapping_events_are_disjoint():
    scenes = synth.load_synthetic_scenes(n=6, seed=4, min_events=2, max_events=3)
    for i in range(len(scenes)):
        masks = synth.event_masks(scenes, i, STFT)
        assert masks.shape == (len(scenes.events[i]), 257, 313)
        assert masks.sum(axis=0).max() <= 1  # at most one event dominates a bin
        assert all(m.any() for m in masks)
    # a subset keeps pointing at the right recipes
    sub = scenes.subset([4, 1])
    assert sub.events[0] == list(synth.recipe_of(sub, 0).events) == scenes.events[4]


def test_bad_input_gets_clear_errors():
    with pytest.raises(KeyError, match="unknown sound class"):
        synth.load_synthetic_clips(n_per_class=1, classes=["violin"])
    with pytest.raises(ValueError, match="n_per_class"):
        synth.load_synthetic_clips(n_per_class=0)
    with pytest.raises(ValueError, match="min_events"):
        synth.load_synthetic_scenes(n=2, min_events=2, max_events=4)
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match=rf"seed must be an integer >= 0, got {re.escape(repr(bad))}"):
            synth.load_synthetic_scenes(n=2, seed=bad)
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            synth.load_synthetic_clips(n_per_class=1, seed=bad)
    from clapnb.datasets import SceneSet
    other = SceneSet("x", ["a"], [["a caption"]], 16000, lambda i: np.zeros(10, np.float32))
    with pytest.raises(TypeError, match="not a synthetic set"):
        synth.event_masks(other, 0, STFT)
