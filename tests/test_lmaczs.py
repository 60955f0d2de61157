"""LMAC-ZS: the loss, the decoder, explanations, training with resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapnb import lmaczs, synth
from clapnb.tiny import load_tiny

PROMPTS = ["This is a sound of siren.", "This is a sound of rain.", "This is a sound of bell."]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = load_tiny("cpu")
    for p in m.parameters():
        p.requires_grad_(False)
    return m


@pytest.fixture(scope="module")
def scenes():
    return synth.load_synthetic_scenes(n=6, seed=31, min_events=1, max_events=2)


@pytest.fixture(scope="module")
def batch(model, scenes):
    """Three clips with one prompt each, as training sees them."""
    batches = lmaczs.SceneBatches(model, scenes, batch_size=3, seed=0, progress=False)
    return batches(0)


def _ones_decoder(model) -> lmaczs.MaskDecoder:
    """A decoder whose masks are exactly 1 everywhere (sigmoid of a large logit)."""
    decoder = lmaczs.new_decoder(model)
    with torch.no_grad():
        decoder.refine[-1].bias.fill_(40.0)
    return decoder.eval()


def test_similarity_loss_is_zero_for_all_ones_masks_and_positive_otherwise(model, batch):
    waveforms, prompts = batch
    magnitude = model.stft_config.stft(waveforms).abs()
    text = model.embed_text(prompts)
    audio_emb = model.embed_from_spectrogram(magnitude)
    only_sim = lmaczs.LossWeights(sim=1, cls=0, out=0, l1=0, tv=0, div=0)
    ones = torch.ones(3, 3, *magnitude.shape[1:])
    loss, values = lmaczs.lmaczs_loss(model, ones, magnitude, text, audio_emb, only_sim)
    assert float(loss) < 1e-8 and set(values) == {"sim", "total", "mask_related", "mask_unrelated"}
    # a mask keeping the first half of every clip, checked against the formula by hand
    half = torch.zeros_like(ones)
    half[..., : magnitude.shape[-1] // 2] = 1
    tau = model.logit_scale
    s = tau * audio_emb @ text.T
    s_in = torch.stack([tau * model.embed_from_spectrogram(half[:, j] * magnitude) @ text[j]
                        for j in range(3)], dim=1)
    prob = s.softmax(dim=1)
    r = prob / prob.amax(dim=1, keepdim=True)
    one_sided = (r * torch.relu(s - s_in) ** 2).sum() / r.sum()
    paper = ((s_in - s) ** 2).mean()  # u = a = 1: every pair, both directions
    got = lmaczs.lmaczs_loss(model, half, magnitude, text, audio_emb, only_sim)[0]
    torch.testing.assert_close(got, one_sided, rtol=1e-4, atol=1e-6)
    got = lmaczs.lmaczs_loss(model, half, magnitude, text, audio_emb,
                             lmaczs.LossWeights(sim_unrelated=1, sim_above=1, cls=0, out=0, l1=0,
                                                div=0))[0]
    torch.testing.assert_close(got, paper, rtol=1e-4, atol=1e-6)
    assert float(paper) > 1e-3
    # the regularisers are not zero for all-ones masks: they are what makes masks small
    _, full = lmaczs.lmaczs_loss(model, ones, magnitude, text, audio_emb,
                                 lmaczs.LossWeights(tv=1.0))
    assert full["l1"] == pytest.approx(1.0) and full["tv"] == pytest.approx(0.0, abs=1e-7)
    assert full["out"] >= 0 and full["div"] > 0


def test_relevance_weights_the_diversity_term(model, batch):
    """L_div charges masks of unrelated prompts only: masks given to the most similar
    prompt of each clip cost nothing."""
    waveforms, prompts = batch
    magnitude = model.stft_config.stft(waveforms).abs()
    text = model.embed_text(prompts)
    audio_emb = model.embed_from_spectrogram(magnitude)
    best = (audio_emb @ text.T).argmax(dim=1)
    masks = torch.zeros(3, 3, *magnitude.shape[1:])
    masks[torch.arange(3), best] = 1
    only_div = lmaczs.LossWeights(sim=0, cls=0, out=0, l1=0, tv=0, div=1)
    assert float(lmaczs.lmaczs_loss(model, masks, magnitude, text, audio_emb, only_div)[0]) < 1e-6
    assert float(lmaczs.lmaczs_loss(model, 1 - masks, magnitude, text, audio_emb, only_div)[0]) > 0.01


def test_gradients_reach_the_decoder_and_not_the_clap_model(model, batch):
    decoder = lmaczs.new_decoder(model)
    decoder.train()
    loss, _ = lmaczs.batch_loss(model, decoder, *batch, lmaczs.LossWeights(), bf16=True)
    loss.backward()
    for name, p in decoder.named_parameters():
        if name.startswith("refine.0"):
            continue  # sits behind the zero-initialised last refine layer: no gradient at step 0
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert all(p.grad is None for p in model.parameters())


def test_istft_of_an_all_ones_mask_returns_the_original_audio(model, scenes):
    ex = lmaczs.explain(model, _ones_decoder(model), scenes.audio(0), PROMPTS[:2])
    assert ex.mask.shape == (2, 257, 313) and torch.all(ex.mask == 1)
    assert ex.masked_in.shape == (2, 80_000)
    original = torch.from_numpy(scenes.audio(0))
    torch.testing.assert_close(ex.original, original)
    torch.testing.assert_close(ex.masked_in, original.expand(2, -1), atol=1e-5, rtol=0)
    assert ex.masked_out.abs().max() < 1e-6
    torch.testing.assert_close(ex.similarity_in, ex.similarity, atol=1e-5, rtol=0)


def test_explain_with_the_committed_decoder(model, scenes):
    """Masks in [0, 1]; masked-in + masked-out audio add up to the clip (same phase)."""
    decoder = lmaczs.load_decoder(model)
    ex = lmaczs.explain(model, decoder, scenes.audio(1), PROMPTS)
    assert ex.mask.min() >= 0 and ex.mask.max() <= 1
    torch.testing.assert_close(ex.masked_in + ex.masked_out, ex.original.expand(3, -1),
                               atol=1e-5, rtol=0)
    assert list(ex.table()["prompt"]) == PROMPTS
    again = lmaczs.predict_masks(model, decoder, ex.magnitude[None].expand(3, -1, -1),
                                 model.embed_text(PROMPTS))
    torch.testing.assert_close(again, ex.mask)


def test_batches_are_the_same_loaded_up_front_or_on_demand(model, scenes):
    kept = lmaczs.SceneBatches(model, scenes, batch_size=3, seed=4, progress=False)
    lazy = lmaczs.SceneBatches(model, scenes, batch_size=3, seed=4, preload=False)
    for step in (0, 7):
        (wa, pa), (wb, pb) = kept(step), lazy(step)
        assert pa == pb
        torch.testing.assert_close(wa, wb)
    assert kept(0)[1] != kept(1)[1] or not torch.equal(kept(0)[0], kept(1)[0])


def test_mel_to_stft_weights_are_convex_mixes(model):
    weights = lmaczs.new_decoder(model).mel_to_stft
    assert weights.shape == (257, 64) and weights.min() >= 0
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(257))


def test_decoders_are_deterministic_by_seed(model):
    a, b, c = (lmaczs.new_decoder(model, seed=s) for s in (3, 3, 4))
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_training_resumes_from_a_checkpoint_to_the_same_weights(model, scenes, tmp_path):
    batches = lmaczs.SceneBatches(model, scenes, batch_size=2, seed=1, progress=False)
    straight = lmaczs.new_decoder(model)
    history = lmaczs.train_decoder(model, straight, batches, steps=4, progress=False)
    assert len(history.train) == 4 and history.train[-1]["total"] > 0

    class Stop(Exception):
        pass

    def interrupt(step, _):
        if step == 2:
            raise Stop

    checkpoint = tmp_path / "run.pt"
    resumed = lmaczs.new_decoder(model)
    with pytest.raises(Stop):
        lmaczs.train_decoder(model, resumed, batches, steps=4, checkpoint=checkpoint,
                             save_every=2, progress=False, callback=interrupt)
    assert not list(tmp_path.glob("*.tmp*")), "a half-written checkpoint was left behind"
    resumed = lmaczs.new_decoder(model)
    history = lmaczs.train_decoder(model, resumed, batches, steps=4, checkpoint=checkpoint,
                                   progress=False)
    assert len(history.train) == 4
    for (name, p), q in zip(straight.named_parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, atol=0, rtol=0, msg=name)


def test_save_and_load_round_trip(model, tmp_path):
    decoder = lmaczs.new_decoder(model, seed=5)
    lmaczs.save_decoder(decoder, tmp_path / "d.pt")
    loaded = lmaczs.load_decoder(model, tmp_path / "d.pt")
    for (name, p), q in zip(decoder.named_parameters(), loaded.parameters()):
        torch.testing.assert_close(p.half().float(), q, msg=name)  # stored as float16


# ---------------------------------------------------------------------------------
# LAION-CLAP: the decoder on the real HTSAT architecture (random weights, offline)
# ---------------------------------------------------------------------------------
def test_laion_decoder_runs_on_random_htsat(monkeypatch):
    """The decoder, the loss and explain() on the real HTSAT-tiny architecture with random
    weights. Without a checkpoint there is no tokenizer, so prompt embeddings are random
    unit vectors (the text side is not what is tested here)."""
    from clapnb.laion import random_laion
    laion = random_laion(seed=0)
    decoder = lmaczs.new_decoder(laion, width=16)
    assert decoder.config.feature_channels == [96, 96, 192, 384, 768]
    rng = np.random.default_rng(0)
    clips = rng.normal(0, 0.1, (2, 48_000 * 3)).astype(np.float32)
    text = torch.nn.functional.normalize(torch.randn(2, 512), dim=-1)
    monkeypatch.setattr(laion, "embed_text", lambda prompts: text[: len(prompts)])
    magnitude = laion.spectrogram(list(clips), 48_000).abs()
    assert magnitude.shape == (2, 513, 1001)
    with torch.no_grad():
        encoding = laion.encode_spectrogram(magnitude)
    masks = lmaczs.pair_masks(decoder, encoding, text, magnitude)
    assert masks.shape == (2, 2, 513, 1001)
    assert 0 <= float(masks.detach().min()) <= float(masks.detach().max()) <= 1
    loss, values = lmaczs.lmaczs_loss(laion, masks, magnitude, text, encoding.embedding, bf16=True)
    loss.backward()
    assert np.isfinite(values["total"]) and decoder.query[-1].weight.grad.abs().sum() > 0
    ex = lmaczs.explain(laion, decoder.eval(), clips[0], ["a dog barks"], sample_rate=48_000)
    assert ex.mask.shape == (1, 513, 1001) and ex.masked_in.shape == (1, 480_000)
    with pytest.raises(ValueError, match="STFT"):
        lmaczs.explain(load_tiny("cpu"), decoder, clips[0], ["a dog"], sample_rate=48_000)


# ---------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------
def test_empty_prompt_is_refused(model, scenes):
    with pytest.raises(ValueError, match="empty"):
        lmaczs.explain(model, lmaczs.load_decoder(model), scenes.audio(0), ["rain", "  "])
    with pytest.raises(TypeError, match="list"):
        lmaczs.explain(model, lmaczs.load_decoder(model), scenes.audio(0), "rain")


def test_a_list_holding_one_clip_is_explained_like_the_clip(model, scenes):
    decoder = lmaczs.load_decoder(model)
    clip = scenes.audio(0)
    as_list = lmaczs.explain(model, decoder, [clip], ["rain"])
    torch.testing.assert_close(as_list.mask, lmaczs.explain(model, decoder, clip, ["rain"]).mask)
    with pytest.raises(ValueError, match="one clip at a time, got a list of 2; loop over"):
        lmaczs.explain(model, decoder, [clip, clip], ["rain"])


def test_ground_truth_scores_name_classes_missing_from_the_class_list(model):
    scenes = synth.load_synthetic_scenes(n=3, seed=5, min_events=2, max_events=2)
    present = sorted({e.label for ev in scenes.events for e in ev})
    others = [c for c in synth.CLASSES if c != present[0]]
    with pytest.raises(ValueError, match=rf"not in class_names: {present[0]}; pass every class"):
        lmaczs.ground_truth_scores(model, lmaczs.load_decoder(model), scenes, others, progress=False)


def test_audio_shorter_than_one_frame_is_refused(model):
    with pytest.raises(ValueError, match="shorter than one STFT frame"):
        lmaczs.explain(model, lmaczs.load_decoder(model), np.zeros(100, np.float32), ["rain"])


def test_decoder_of_another_model_or_stft_is_refused(model, tmp_path):
    decoder = lmaczs.new_decoder(model)
    decoder.config.model_key = "tiny-0123456789abcdef"
    with pytest.raises(ValueError, match="trained for model"):
        lmaczs.predict_masks(model, decoder, torch.ones(1, 257, 313), model.embed_text(["rain"]))
    decoder = lmaczs.new_decoder(model)
    decoder.config.stft = [1024, 480, 1024]
    lmaczs.save_decoder(decoder, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="STFT"):
        lmaczs.load_decoder(model, tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing"):
        lmaczs.load_decoder(model, tmp_path / "absent.pt")


def test_mismatched_batch_and_bad_training_settings_are_refused(model, scenes):
    decoder = lmaczs.new_decoder(model)
    with pytest.raises(ValueError, match="one prompt embedding per clip"):
        lmaczs.predict_masks(model, decoder, torch.ones(2, 257, 313), model.embed_text(["rain"]))
    with pytest.raises(ValueError, match="batch_size"):
        lmaczs.SceneBatches(model, scenes, batch_size=1, progress=False)
    with pytest.raises(ValueError, match="larger than"):
        lmaczs.SceneBatches(model, scenes, batch_size=len(scenes) + 1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        lmaczs.train_decoder(model, decoder, lambda step: None, steps=0)


def test_decoder_for_prefers_the_shipped_decoder(model):
    shipped = lmaczs.decoder_for(model, progress=False)
    reference = lmaczs.load_decoder(model)
    for a, b in zip(shipped.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_decoder_for_trains_once_saves_and_then_loads(model, monkeypatch, tmp_path, capsys):
    """A model without a shipped decoder (as LAION-CLAP online): the first call trains on the
    registry's decoder scenes and saves; the next call (the next notebook) loads that file."""
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
    monkeypatch.setattr(lmaczs, "shipped_decoder", lambda m: None)
    asked = []

    def scenes_for(m, n):
        asked.append(n)
        return synth.load_synthetic_scenes(n=4, seed=9)

    monkeypatch.setattr(lmaczs, "decoder_scenes", scenes_for)
    first = lmaczs.decoder_for(model, steps=2, max_items=4, batch_size=2, progress=False)
    path = lmaczs.trained_decoder_path(model)
    assert path.is_file() and not path.with_suffix(".checkpoint").exists() and asked == [4]
    assert "training one now, 2 steps on 4 clips" in capsys.readouterr().out
    again = lmaczs.decoder_for(model, steps=2, progress=False)
    assert asked == [4]                                   # loaded, not trained again
    for a, b in zip(first.state_dict().values(), again.state_dict().values()):
        torch.testing.assert_close(a, b)
    untrained = lmaczs.new_decoder(model, seed=0)
    assert any(not torch.allclose(a, b, atol=1e-3) for a, b in
               zip(first.state_dict().values(), untrained.state_dict().values()))  # it was trained


def test_scene_batches_use_captions_where_scenes_know_no_events(model):
    """Online scenes (Clotho) have captions but no events: the default prompt is a caption."""
    scenes = synth.load_synthetic_scenes(n=4, seed=3)
    captioned = scenes.subset(np.arange(4))
    captioned.events = None
    _, prompts = lmaczs.SceneBatches(model, captioned, batch_size=2, seed=0, progress=False)(0)
    assert all(any(p in caps for caps in captioned.captions) for p in prompts)
    _, named = lmaczs.SceneBatches(model, scenes, batch_size=2, seed=0, progress=False)(0)
    labels = {e.label for ev in scenes.events for e in ev}
    assert all(any(label in p for label in labels) for p in named)


def test_same_scene_pairs_prompt_one_scene_with_two_of_its_events(model):
    scenes = synth.load_synthetic_scenes(n=6, seed=3, min_events=2, max_events=3)
    batches = lmaczs.SceneBatches(model, scenes, batch_size=4, seed=0, progress=False,
                                  same_scene_pairs=True)
    for step in range(3):
        audio, prompts = batches(step)
        assert audio.shape[0] == 4 == len(prompts)
        for k in (0, 2):
            torch.testing.assert_close(audio[k], audio[k + 1])   # the same scene twice
            i = next(i for i in range(len(scenes)) if torch.equal(batches.audio[i], audio[k]))
            named = [next(e.label for e in scenes.events[i] if e.label in p.replace(".", " ").split())
                     for p in prompts[k:k + 2]]
            assert named[0] != named[1], prompts[k:k + 2]      # two different events of it
    for bad in (dict(batch_size=3), dict(batch_size=4, prompt=lmaczs.caption_prompt)):
        with pytest.raises(ValueError, match="same_scene_pairs"):
            lmaczs.SceneBatches(model, scenes, seed=0, progress=False, same_scene_pairs=True, **bad)


def test_ground_truth_scores_set_the_map_against_a_loudness_baseline(model):
    scenes = synth.load_synthetic_scenes(n=3, seed=5, min_events=2, max_events=2)
    scores = lmaczs.ground_truth_scores(model, lmaczs.load_decoder(model), scenes, synth.CLASSES,
                                        progress=False)
    assert scores["n_prompt_events"] > 0
    for key in ("gt_auc", "prompt_auc", "loudness_gt_auc", "loudness_prompt_auc"):
        assert 0.0 <= scores[key] <= 1.0, key
    # loudness is blind to the prompt: two events' prompts get the same map, so their
    # prompt AUCs add up to 1 in a two-event scene (ties count half): their mean is 0.5
    assert scores["loudness_prompt_auc"] == pytest.approx(0.5, abs=1e-9)


def test_ground_truth_scores_per_event_are_what_prompt_auc_averages(model):
    scenes = synth.load_synthetic_scenes(n=3, seed=5, min_events=2, max_events=2)
    decoder = lmaczs.load_decoder(model)
    scores = lmaczs.ground_truth_scores(model, decoder, scenes, synth.CLASSES, progress=False,
                                        per_event=True)
    events = scores["prompt_events"]
    assert len(events) == scores["n_prompt_events"] > 0
    assert np.mean([auc for _, _, auc in events]) == pytest.approx(scores["prompt_auc"])
    assert {i for i, _, _ in events} <= set(range(len(scenes)))
    assert all(0 <= k < len(scenes.events[i]) for i, k, _ in events)
    assert "prompt_events" not in lmaczs.ground_truth_scores(model, decoder, scenes, synth.CLASSES,
                                                             progress=False)


def test_cls_rewards_masks_that_keep_only_the_prompted_event(model):
    """L_cls over scenes of two events, each prompted by name: masks that keep only the
    prompted event's true bins are recognised as their prompt better than masks keeping
    the whole scene; for the whole scene L_cls is the clip's own zero-shot cross-entropy;
    one prompt, or a second prompt that is the same text, leaves nothing to choose (0)."""
    scenes = synth.load_synthetic_scenes(n=8, seed=5, min_events=2, max_events=2)
    only_cls = lmaczs.LossWeights(sim=0, cls=1, out=0, l1=0, tv=0, div=0)
    whole, alone = [], []
    for i in range(len(scenes)):
        magnitude = model.spectrogram([scenes.audio(i)], scenes.sample_rate).abs()   # (1, F, T)
        text = model.embed_text([f"This is a sound of {e.label}." for e in scenes.events[i]])
        emb = model.embed_from_spectrogram(magnitude)
        truth = torch.from_numpy(synth.event_masks(scenes, i, model.stft_config)).float()

        def cls(masks, text=text):
            return float(lmaczs.lmaczs_loss(model, masks, magnitude, text, emb, only_cls)[0])

        whole.append(cls(torch.ones(1, 2, *magnitude.shape[1:])))
        alone.append(cls(truth[None]))
        s = model.logit_scale * emb @ text.T                                    # (1, 2)
        r = s.softmax(-1) / s.softmax(-1).max()
        by_hand = float((r * -s.log_softmax(-1)).sum() / r.sum())
        assert whole[-1] == pytest.approx(by_hand, rel=1e-4)
        assert cls(truth[None, :1], text[:1]) == 0.0
        assert cls(torch.ones(1, 2, *magnitude.shape[1:]), text[[0, 0]]) == 0.0
    assert np.mean(alone) < 0.5 * np.mean(whole), (alone, whole)
    assert sum(a < w for a, w in zip(alone, whole)) >= 6, (alone, whole)
