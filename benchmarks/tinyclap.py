"""Evaluate the committed TinyCLAP weights on held-out synthetic data.

    python benchmarks/tinyclap.py [--clips-per-class 20] [--scenes 250] [--seed 2024]

Zero-shot classification of single-event clips of the training classes with the
prompt "This is a sound of {class}." (and with other templates: ``prompt_spread``
is the best minus the worst accuracy), zero-shot classification among the
classes held out of training (each described by ``synth.DESCRIPTIONS``), how many
baseline-vocabulary words TinyCLAP learned, the modality gap, and caption -> scene
retrieval (the first caption of every scene is the query; only its own scene
counts as correct). The data come from seeds that training never uses.

Targets (issue 15): zero_shot_accuracy 0.70-0.92; heldout_class_accuracy at least
2.5x heldout_class_chance; prompt_spread at least 0.02; known_vocabulary_words at
least 1,000. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

from pathlib import Path

import numpy as np
import torch

from clapnb import synth
from clapnb.tiny import CONFIG_FILE, WEIGHTS_FILE, load_tiny
from clapnb.tiny import words
from clapnb.vocabulary import load_vocabulary
from clapnb.zeroshot import (PROMPT, bootstrap_ci, class_prompts, modality_gap,
                             retrieval_metrics, zero_shot)

#: templates for prompt_spread: the papers' prompt, the bare name, two plain wordings and one
#: that names the recording ("field recording" is the most frequent Freesound tag: its words
#: carry what TinyCLAP learned from the clips they were used on)
TEMPLATES = [PROMPT, "{}", "a recording of {}", "the sound of a {}", "field recording of {}"]


def embed_set(model, data, batch_size: int = 32) -> torch.Tensor:
    """Audio embeddings ``(N, D)`` of every item of a clip or scene set."""
    parts = []
    for start in range(0, len(data), batch_size):
        batch = [data.audio(i) for i in range(start, min(start + batch_size, len(data)))]
        parts.append(model.embed_audio(batch))
    return torch.cat(parts)


def concept_word_accuracy(model, audio: torch.Tensor, labels: np.ndarray,
                          class_names: list[str]) -> float:
    """Share of concept words (bare, e.g. "ambulance") whose text embedding is closest to
    the mean audio embedding of their own class: do the ground-truth concepts make sense
    to the model?"""
    centroids = torch.stack([audio[torch.from_numpy(labels == c)].mean(0)
                             for c in range(len(class_names))])
    pairs = [(w, c) for c, name in enumerate(class_names) for w in synth.CONCEPTS[name]]
    text = model.embed_text([w for w, _ in pairs])
    nearest = (text @ centroids.T).argmax(1).numpy()
    return float(np.mean([nearest[k] == c for k, (_, c) in enumerate(pairs)]))


def class_set_oracle(scenes) -> dict[str, float]:
    """Expected R@1/R@5 of a ranking that puts the scenes with exactly the query's classes
    first, in random order: the ceiling for a caption that only names classes."""
    keys = [frozenset(e.label for e in events) for events in scenes.events]
    ties = np.array([keys.count(k) for k in keys])
    return {"R@1": float(np.mean(1 / ties)), "R@5": float(np.mean(np.minimum(1, 5 / ties)))}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-class", type=int, default=20)
    parser.add_argument("--scenes", type=int, default=250)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_FILE.parent,
                        help="folder holding tinyclap.pt and tinyclap.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)

    t0 = time.perf_counter()
    model = load_tiny("cpu", args.weights_dir / WEIGHTS_FILE.name,
                      args.weights_dir / CONFIG_FILE.name)
    load_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    clips = synth.load_synthetic_clips(n_per_class=args.clips_per_class, seed=args.seed)
    audio = embed_set(model, clips)
    prompt_emb = model.embed_text(class_prompts(clips.class_names))
    result = zero_shot(audio, prompt_emb, model.logit_scale)
    correct = result.predictions == clips.labels
    acc, low, high = bootstrap_ci(correct)
    per_class = {name: float(correct[clips.labels == c].mean())
                 for c, name in enumerate(clips.class_names)}
    concept_acc = concept_word_accuracy(model, audio, clips.labels, clips.class_names)
    by_template = {t: float((zero_shot(audio, model.embed_text(class_prompts(clips.class_names, t)),
                                       model.logit_scale).predictions == clips.labels).mean())
                   for t in TEMPLATES}
    spread = max(by_template.values()) - min(by_template.values())
    own_prompt = prompt_emb[torch.from_numpy(clips.labels)]   # (N, D): each clip's class prompt
    gap = modality_gap(audio, own_prompt)
    matched = float((audio * own_prompt).sum(1).mean())

    held = synth.load_synthetic_clips(n_per_class=args.clips_per_class, seed=args.seed,
                                      classes=synth.HELD_OUT)
    held_audio = embed_set(model, held)
    held_pred = zero_shot(held_audio, model.embed_text([synth.DESCRIPTIONS[c] for c in synth.HELD_OUT]),
                          model.logit_scale).predictions
    held_acc = float((held_pred == held.labels).mean())
    held_by_name = float((zero_shot(held_audio, model.embed_text(class_prompts(synth.HELD_OUT)),
                                    model.logit_scale).predictions == held.labels).mean())
    baseline = load_vocabulary("baseline", 2000).words
    known = [w for w in baseline if all(t in model.known_words for t in words(w))]
    clip_seconds = time.perf_counter() - t0
    print(f"zero-shot accuracy on {len(clips)} held-out clips: {acc:.3f} "
          f"(95% CI {low:.3f}-{high:.3f})")
    worst = sorted(per_class.items(), key=lambda kv: kv[1])[:3]
    print("  weakest classes: " + ", ".join(f"{k} {v:.2f}" for k, v in worst))
    print(f"concept words (synth.CONCEPTS) nearest to their own class's mean audio embedding: "
          f"{concept_acc:.3f}")
    print("accuracy by prompt template: " + ", ".join(f"{t!r} {a:.3f}" for t, a in
                                                      by_template.items()) + f"; spread {spread:.3f}")
    print(f"held-out classes ({', '.join(synth.HELD_OUT)}), described in learned words: "
          f"{held_acc:.3f} (chance {1 / len(synth.HELD_OUT):.3f}); by their unseen names: "
          f"{held_by_name:.3f}")
    print(f"baseline-2000 words TinyCLAP learned: {len(known)}")
    print(f"modality gap ||mean audio - mean text||: {gap:.3f}; mean cosine of a clip with its "
          f"own class prompt: {matched:.3f}")

    t0 = time.perf_counter()
    scenes = synth.load_synthetic_scenes(n=args.scenes, seed=args.seed)
    scene_audio = embed_set(model, scenes)
    queries = model.embed_text([caps[0] for caps in scenes.captions])
    sim = (queries @ scene_audio.T).numpy()
    t2a = retrieval_metrics(sim, [[i] for i in range(len(scenes))])
    a2t = retrieval_metrics(sim.T, [[i] for i in range(len(scenes))])
    oracle = class_set_oracle(scenes)
    scene_seconds = time.perf_counter() - t0
    print(f"caption -> scene retrieval among {len(scenes)} held-out scenes: "
          f"R@1 {t2a['R@1']:.3f}  R@5 {t2a['R@5']:.3f}  R@10 {t2a['R@10']:.3f}")
    print(f"  (a ranking that knows each scene's classes but nothing else, ties broken at random, "
          f"reaches R@1 {oracle['R@1']:.3f}, R@5 {oracle['R@5']:.3f})")
    print(f"scene -> caption retrieval: R@1 {a2t['R@1']:.3f}  R@5 {a2t['R@5']:.3f}")
    print(f"load {load_seconds:.2f} s, clips {clip_seconds:.1f} s, scenes {scene_seconds:.1f} s")

    out = {"model": model.name, "cache_key": model.cache_key, "seed": args.seed,
           "n_clips": len(clips), "n_classes": len(clips.class_names), "n_scenes": len(scenes),
           "zero_shot_accuracy": round(acc, 4), "zero_shot_ci95": [round(low, 4), round(high, 4)],
           "worst_class_accuracy": round(min(per_class.values()), 4),
           "accuracy_by_template": {t: round(a, 4) for t, a in by_template.items()},
           "prompt_spread": round(spread, 4),
           "heldout_class_accuracy": round(held_acc, 4),
           "heldout_class_chance": round(1 / len(synth.HELD_OUT), 4),
           "heldout_by_unseen_name_accuracy": round(held_by_name, 4),
           "n_heldout_clips": len(held),
           "known_vocabulary_words": len(known),
           "modality_gap": round(gap, 4), "matched_cosine": round(matched, 4),
           "concept_word_accuracy": round(concept_acc, 4),
           "t2a_recall_at_1": round(t2a["R@1"], 4), "t2a_recall_at_5": round(t2a["R@5"], 4),
           "t2a_recall_at_10": round(t2a["R@10"], 4),
           "t2a_class_set_oracle_at_1": round(oracle["R@1"], 4),
           "t2a_class_set_oracle_at_5": round(oracle["R@5"], 4),
           "a2t_recall_at_1": round(a2t["R@1"], 4), "a2t_recall_at_5": round(a2t["R@5"], 4),
           "logit_scale": round(model.logit_scale, 2),
           "load_seconds": round(load_seconds, 3),
           "eval_seconds": round(clip_seconds + scene_seconds, 1)}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
