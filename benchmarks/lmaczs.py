"""Score the committed LMAC-ZS decoder for TinyCLAP on held-out synthetic scenes.

    python benchmarks/lmaczs.py [--scenes 100] [--seed 2024]

Scenes of 2-3 events from a seed neither TinyCLAP nor the decoder saw. For
each scene, every class prompt ("This is a sound of {class}.") gets a mask;
see :func:`clapnb.lmaczs.ground_truth_scores` for the definitions of
``gt_auc``, ``prompt_auc`` (event-dominated bins only: the prompted event's against the
other events'), the same two for a prompt-blind loudness map (``loudness_gt_auc``,
``loudness_prompt_auc``), ``absent_to_present_mask_ratio`` and ``fid_in``. A map that
explains the prompt must beat loudness on ``prompt_auc``; on ``gt_auc`` loudness does as
well, since most of that score is telling events from background.
``prompt_auc_by_separation_quartile``: the mean prompt AUC per quartile of how far
TinyCLAP itself tells a scene's events apart (:func:`prompt_auc_by_separation`), least
to most, with ``prompt_auc_separation_correlation``. ``explain_ms`` is
the median wall time of ``lmaczs.explain`` for one 5-second clip and one prompt
on the CPU (1 thread and 2 threads). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from clapnb import lmaczs, synth
from clapnb.tiny import load_tiny

TARGETS = {"gt_auc": (">=", 0.80), "prompt_auc": (">=", 0.75),
           "absent_to_present_mask_ratio": ("<=", 0.5), "fid_in": (">=", 0.85)}


def explain_ms(model, decoder, audio: np.ndarray, repeats: int = 20) -> float:
    """Median milliseconds of one explanation (one clip, one prompt)."""
    lmaczs.explain(model, decoder, audio, ["This is a sound of rain."])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        lmaczs.explain(model, decoder, audio, ["This is a sound of rain."])
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def prompt_auc_by_separation(model, scenes, events: list[tuple[int, int, float]]) -> dict:
    """Prompt AUC against how far TinyCLAP itself tells the scene's events apart.

    For each scored event k of a scene (``events``: (scene, k, prompt AUC) from
    ``ground_truth_scores(..., per_event=True)``), every event is embedded alone over the
    scene's background, and the separation is the cosine of event k's solo audio with
    k's prompt minus the largest cosine of another event's solo audio with it. A map
    that explains the model has no reason to tell apart what the model itself barely
    does; the mean prompt AUC per quartile of separation shows how much of the average
    comes from such pairs.
    """
    text = model.embed_text([lmaczs.CLASS_TEMPLATES[0].format(c) for c in synth.CLASSES])
    separation, auc, sims = [], [], {}
    for i, k, value in events:
        if i not in sims:   # each event of scene i alone over its background: (E, C) cosines
            stems = synth.render_stems(synth.recipe_of(scenes, i))
            sims[i] = model.embed_audio(list(stems[:-1] + stems[-1]), scenes.sample_rate) @ text.T
        c = synth.CLASSES.index(scenes.events[i][k].label)
        column = sims[i][:, c]
        separation.append(float(column[k]) - float(torch.cat([column[:k], column[k + 1:]]).max()))
        auc.append(value)
    separation, auc = np.array(separation), np.array(auc)
    quartile = np.searchsorted(np.quantile(separation, [0.25, 0.5, 0.75]), separation)
    return {"prompt_auc_by_separation_quartile": [round(float(auc[quartile == q].mean()), 4)
                                                  for q in range(4)],
            "prompt_auc_separation_correlation": round(float(np.corrcoef(separation, auc)[0, 1]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_tiny("cpu")
    decoder = lmaczs.load_decoder(model)
    scenes = synth.load_synthetic_scenes(n=args.scenes, seed=args.seed, min_events=2, max_events=3)
    scores = lmaczs.ground_truth_scores(model, decoder, scenes, synth.CLASSES, per_event=True)
    scores.update(prompt_auc_by_separation(model, scenes, scores.pop("prompt_events")))
    ms = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        ms[threads] = explain_ms(model, decoder, scenes.audio(0))
    result = {**scores, "explain_ms": round(ms[1], 1), "explain_ms_2_threads": round(ms[2], 1),
              "decoder_parameters": sum(p.numel() for p in decoder.parameters()),
              "seed": args.seed}
    for key, (op, target) in TARGETS.items():
        ok = result[key] >= target if op == ">=" else result[key] <= target
        print(f"{key:32s} {result[key]:.3f}  target {op} {target}  {'ok' if ok else 'MISSED'}")
    margin = result["prompt_auc"] - result["loudness_prompt_auc"]
    print(f"{'prompt_auc - loudness_prompt_auc':32s} {margin:.3f}  target >= 0.15  "
          f"{'ok' if margin >= 0.15 else 'MISSED'}")
    print("prompt_auc by quartile of how far TinyCLAP tells the events apart (least to most): "
          + " / ".join(f"{v:.3f}" for v in result["prompt_auc_by_separation_quartile"])
          + f"; correlation {result['prompt_auc_separation_correlation']:.3f}")
    print(f"{'explain_ms':32s} {result['explain_ms']:.1f} ms (1 thread), "
          f"{result['explain_ms_2_threads']:.1f} ms (2 threads)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
