"""Draw the two methods' pipelines as SVG files in docs/ (docs/pipelines.md shows them).

    python scripts/pipeline_diagrams.py [--out docs]

Boxes and arrows only, with matplotlib; the files are deterministic (fixed SVG ids, no
date), so re-running gives byte-identical files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: fill colours by role
STYLE = {
    "data": "#ffffff",     # something you have or get: audio, words, numbers
    "frozen": "#dce6f2",   # a frozen CLAP encoder
    "math": "#eeeeee",     # a fixed computation
    "learned": "#fcd9b6",  # what is fitted or trained: the lasso weights, the decoder
    "output": "#d5ecd4",   # what a learner reads or hears
}


def box(ax, x, y, text, role="math", w=1.9, h=0.9, size=9):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.04,rounding_size=0.12",
                                fc=STYLE[role], ec="#444444", lw=1.0))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, wrap=True)
    return (x, y, w, h)


def arrow(ax, a, b, text="", side="from", dashed=False, rad=0.0):
    """An arrow from box ``a`` to box ``b`` (edge to edge, picking the facing sides)."""
    (xa, ya, wa, ha), (xb, yb, wb, hb) = a, b
    dx, dy = xb - xa, yb - ya
    if abs(dx) * (ha + hb) >= abs(dy) * (wa + wb):  # mostly horizontal
        start = (xa + (wa / 2 if dx > 0 else -wa / 2), ya)
        end = (xb - (wb / 2 if dx > 0 else -wb / 2), yb)
    else:
        start = (xa, ya + (ha / 2 if dy > 0 else -ha / 2))
        end = (xb, yb - (hb / 2 if dy > 0 else -hb / 2))
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=11, lw=1.0, color="#333333",
                                 linestyle="--" if dashed else "-", connectionstyle=f"arc3,rad={rad}",
                                 shrinkA=1, shrinkB=1))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12, text, ha="center", va="bottom",
                fontsize=7.5, color="#333333", style="italic")


def legend(ax, x, y, roles):
    for k, (role, label) in enumerate(roles):
        ax.add_patch(FancyBboxPatch((x + 2.6 * k, y - 0.12), 0.3, 0.24, boxstyle="round,pad=0.02",
                                    fc=STYLE[role], ec="#444444", lw=0.8))
        ax.text(x + 2.6 * k + 0.4, y, label, va="center", fontsize=8)


def canvas(width, height, title):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, width * 1.25)
    ax.set_ylim(0, height * 1.25)
    ax.axis("off")
    ax.set_title(title, fontsize=11, loc="left")
    return fig, ax


def concepts_figure():
    fig, ax = canvas(13, 4.6, "Concept-based sparse representations (SpLiCE-style; notebooks 02-05, 09)")
    a = box(ax, 1.2, 4.4, "audio clip", "data", w=1.8)
    b = box(ax, 3.7, 4.4, "CLAP audio\nencoder (frozen)", "frozen", w=2.1)
    c = box(ax, 6.7, 4.4, "centre and normalise:\nz - \u03bc_audio", "math", w=2.4)
    w1 = box(ax, 1.2, 2.2, "concept words\n(baseline, pruned or\nclustered vocabulary)", "data", w=2.2, h=1.1)
    t = box(ax, 3.7, 2.2, "CLAP text\nencoder (frozen)", "frozen", w=2.1)
    ct = box(ax, 6.7, 2.2, "centre and normalise:\nC - mean of C", "math", w=2.4)
    lasso = box(ax, 9.9, 3.3, "non-negative lasso:\nminimise over w \u2265 0\n||w C - z||\u00b2 + \u03bb ||w||\u2081",
                "learned", w=2.7, h=1.4)
    wts = box(ax, 13.6, 4.6, "sparse weights w\n(l0 concepts, e.g.\nsiren 0.31, horn 0.12)", "output",
              w=2.8, h=1.1)
    rec = box(ax, 13.6, 2.6, "reconstruct:\n\u03bc + |z - \u03bc| \u00b7 normalise(w C),\nnormalised", "math",
              w=3.2, h=1.1)
    zs = box(ax, 11.0, 0.8, "zero-shot classification:\ncosine with class prompts", "output", w=3.2)
    rt = box(ax, 14.6, 0.8, "retrieval (R@k):\ncosine with captions", "output", w=2.8)
    arrow(ax, a, b)
    arrow(ax, b, c, "z")
    arrow(ax, w1, t)
    arrow(ax, t, ct, "C")
    arrow(ax, c, lasso)
    arrow(ax, ct, lasso)
    arrow(ax, lasso, wts)
    arrow(ax, wts, rec)
    arrow(ax, rec, zs)
    arrow(ax, rec, rt)
    ax.text(9.9, 1.95, "\u03bb sets how many concepts stay;\nthe duality gap certifies the answer",
            ha="center", va="center", fontsize=7.5, color="#555555")
    legend(ax, 0.4, 0.25, [("data", "input"), ("frozen", "frozen CLAP"), ("math", "fixed step"),
                           ("learned", "solved / trained"), ("output", "what you read")])
    return fig


def lmaczs_figure():
    fig, ax = canvas(12.5, 5.4, "LMAC-ZS: listenable maps for a zero-shot classifier (notebooks 06-09)")
    wav = box(ax, 1.1, 5.6, "waveform", "data", w=1.5)
    stft = box(ax, 3.1, 5.6, "STFT", "math", w=1.4)
    mag = box(ax, 5.3, 5.6, "magnitude X\n(linear, F x T)", "data", w=2.0)
    phase = box(ax, 3.1, 3.9, "phase\n(kept aside)", "data", w=1.6)
    front = box(ax, 7.8, 5.6, "encoder's front end\n(mel, log)", "frozen", w=2.2)
    enc = box(ax, 10.5, 5.6, "CLAP audio encoder\n(frozen)", "frozen", w=2.3)
    prompt = box(ax, 13.9, 5.6, "prompt text\n'This is a sound of siren.'", "data", w=2.8)
    tenc = box(ax, 13.9, 3.9, "CLAP text encoder\n(frozen): t", "frozen", w=2.4)
    dec = box(ax, 10.5, 3.9, "mask decoder M(t, h)\n(trained)", "learned", w=2.4)
    mask = box(ax, 7.8, 3.9, "mask M in [0, 1]\non the STFT grid", "output", w=2.2)
    mi = box(ax, 5.6, 2.2, "masked-in M \u00b7 X\nmasked-out (1 - M) \u00b7 X", "math", w=2.5)
    reenc = box(ax, 9.0, 2.2, "re-encode with the same\nfront end and encoder", "frozen", w=2.6)
    loss = box(ax, 13.3, 2.2, "loss (training only):\nM\u00b7X keeps t's similarity,\n(1 - M)\u00b7X loses it,\n"
               "masks small, empty for\nunrelated prompts", "learned", w=3.0, h=1.6)
    istft = box(ax, 3.1, 0.8, "inverse STFT with\nthe original phase", "math", w=2.3)
    listen = box(ax, 6.5, 0.8, "listen: masked-in and\nmasked-out audio", "output", w=2.6)
    arrow(ax, wav, stft)
    arrow(ax, stft, mag)
    arrow(ax, stft, phase)
    arrow(ax, mag, front)
    arrow(ax, front, enc)
    arrow(ax, prompt, tenc)
    arrow(ax, enc, dec, "features h")
    arrow(ax, tenc, dec, "t")
    arrow(ax, dec, mask)
    arrow(ax, mask, mi)
    arrow(ax, mag, mi, dashed=True)
    arrow(ax, mi, reenc)
    arrow(ax, reenc, loss, "similarities")
    arrow(ax, mi, istft)
    arrow(ax, phase, istft, dashed=True)
    arrow(ax, istft, listen)
    ax.text(10.8, 0.8, "to explain a clip: one decoder pass,\nno gradients (about 20 ms offline)", ha="center",
            va="center", fontsize=7.5, color="#555555")
    legend(ax, 0.4, 6.45, [("data", "input"), ("frozen", "frozen CLAP"), ("math", "fixed step"),
                           ("learned", "trained"), ("output", "what you see / hear")])
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    plt.rcParams["svg.hashsalt"] = "clapnb"
    plt.rcParams["svg.fonttype"] = "none"  # text stays text: searchable, small
    for name, make in (("pipeline_concepts.svg", concepts_figure), ("pipeline_lmaczs.svg", lmaczs_figure)):
        fig = make()
        fig.savefig(args.out / name, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        print(args.out / name)


if __name__ == "__main__":
    main()
