"""Plots and audio players for the notebooks: the one place that draws or plays.

Functions take numpy/torch arrays and a matplotlib ``Axes`` (or create one) and
return what they drew, so a notebook cell stays one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from clapnb.lmaczs import TERMS
from clapnb.metrics import level_db


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def audio_player(waveform, sample_rate: int, normalize: bool = True):
    """An inline player (``IPython.display.Audio``) for a mono ``(S,)`` waveform."""
    from IPython.display import Audio
    x = _np(waveform).astype(np.float32).reshape(-1)
    if not normalize and np.abs(x).max() > 1:
        x = x / np.abs(x).max()
    return Audio(x, rate=sample_rate, normalize=normalize)


def players(waveforms: Sequence, sample_rate: int, titles: Sequence[str]):
    """A row of labelled audio players for comparing clips side by side.

    Plain HTML, not ipywidgets, so it also renders in executed notebooks and on GitHub.
    """
    import html

    from IPython.display import HTML
    cells = [f"<div style='display:inline-block;margin:0 1em 1em 0'><b>{html.escape(title)}</b><br>"
             f"{audio_player(w, sample_rate)._repr_html_()}</div>"
             for w, title in zip(waveforms, titles, strict=True)]
    return HTML("".join(cells))


def spectrogram_db(magnitude, floor_db: float = -80.0) -> np.ndarray:
    """Linear magnitude ``(F, T)`` -> decibels relative to the maximum, floored
    (:func:`clapnb.metrics.level_db`, the level the loudness baseline map uses too)."""
    return level_db(magnitude, floor_db)


#: the colour of mask overlays (cyan reads well on the magma spectrogram)
MASK_RGB = (0.0, 1.0, 1.0)


def mask_colormap(alpha: float = 1.0):
    """Transparent -> cyan at opacity ``alpha``: the overlay's colours, for its colour bar."""
    from matplotlib.colors import LinearSegmentedColormap
    return LinearSegmentedColormap.from_list("mask", [(*MASK_RGB, 0.0), (*MASK_RGB, alpha)])


def plot_spectrogram(magnitude, sample_rate: int, hop_length: int, ax=None, title: str = "",
                     mask=None, mask_alpha: float = 0.7, mask_label: str | None = "mask",
                     colorbar: bool = False):
    """Show a linear-magnitude STFT ``(F, T)`` in dB; optionally overlay a mask in [0, 1]
    (in cyan, its opacity ``mask_alpha * mask``).

    With a mask, a legend names the cyan overlay (``mask_label``; None: no legend).
    ``colorbar`` adds colour bars: the level in dB and, with a mask, the mask value.
    """
    ax = ax or plt.gca()
    m = _np(magnitude)
    extent = [0, m.shape[1] * hop_length / sample_rate, 0, sample_rate / 2000]
    image = ax.imshow(spectrogram_db(m), origin="lower", aspect="auto", extent=extent, cmap="magma")
    if colorbar:
        ax.figure.colorbar(image, ax=ax, label="level (dB re max)", pad=0.01)
    if mask is not None:  # cyan, as opaque as the mask is high: mask 0 leaves the spectrogram as is
        m = np.clip(_np(mask).astype(np.float32), 0, 1)
        rgba = np.zeros((*m.shape, 4), dtype=np.float32)
        rgba[..., :3] = MASK_RGB
        rgba[..., 3] = mask_alpha * m
        ax.imshow(rgba, origin="lower", aspect="auto", extent=extent)
        if mask_label:
            from matplotlib.patches import Patch
            ax.legend(handles=[Patch(facecolor=MASK_RGB, alpha=mask_alpha, label=f"cyan = {mask_label}")],
                      loc="upper right", fontsize="small", framealpha=0.8)
        if colorbar:
            from matplotlib.cm import ScalarMappable
            from matplotlib.colors import Normalize
            bar = ax.figure.colorbar(ScalarMappable(Normalize(0, 1), mask_colormap(mask_alpha)), ax=ax,
                                     label=mask_label or "mask", pad=0.01)
            bar.ax.set_facecolor("black")  # the overlay as it looks on a quiet (dark) bin
    ax.set(xlabel="time (s)", ylabel="frequency (kHz)", title=title)
    return ax


class InlineFigure(Figure):
    """A ``Figure`` outside pyplot that IPython shows as PNG by itself (``_repr_png_``).

    ``display(fig)`` of a plain ``Figure`` shows only its text repr (``<Figure size ...>``)
    until pyplot's inline backend is set up, which matplotlib does lazily, at the first
    pyplot figure: a notebook's first explanation would come out as text.
    """

    def _repr_png_(self) -> bytes:
        import io
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def explanation_figure(ex, hop_length: int, titles: Sequence[str] | None = None):
    """One row: the clip's spectrogram, then each prompt's mask over it.

    ``ex`` is an :class:`clapnb.lmaczs.Explanation` (``magnitude (F, T)``, ``mask (P, F, T)``,
    ``prompts``). Built as a ``matplotlib.figure.Figure`` outside pyplot (an :class:`InlineFigure`), so show it with
    ``display(fig)``: a figure that pyplot does not know cannot be closed half-drawn by
    ``plt.show()`` in another callback (JupyterLab >= 4.6 runs widget callbacks on their
    own kernel thread).
    """
    n = len(ex.prompts)
    fig = InlineFigure(figsize=(4.2 * (n + 1), 3), layout="tight")
    axes = fig.subplots(1, n + 1, sharey=True, squeeze=False)[0]
    plot_spectrogram(ex.magnitude, ex.sample_rate, hop_length, ax=axes[0], title="original")
    for k in range(n):
        plot_spectrogram(ex.magnitude, ex.sample_rate, hop_length, ax=axes[k + 1], mask=ex.mask[k],
                         title=(titles or ex.prompts)[k])
    return fig


def plot_confusion(labels, predictions, class_names: Sequence[str], ax=None, title: str = ""):
    """Row-normalised confusion matrix as a seaborn heatmap."""
    import seaborn as sns
    from sklearn.metrics import confusion_matrix
    n = len(class_names)
    cm = confusion_matrix(labels, predictions, labels=range(n), normalize="true")
    ax = ax or plt.gca()
    sns.heatmap(cm, ax=ax, xticklabels=class_names, yticklabels=class_names, cmap="Blues",
                vmin=0, vmax=1, square=True, cbar_kws={"label": "share of true class"})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return ax


def plot_modality_gap(audio_emb, text_emb, ax=None, audio_labels=None, title: str = "",
                      class_names: Sequence[str] | None = None):
    """2-D PCA of audio and text embeddings together: the two clouds show the modality gap.

    A legend tells audio clips (dots) from text prompts (stars); with ``audio_labels``
    the dots are coloured by class and a colour bar names the classes (``class_names``,
    else their indices).
    """
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.lines import Line2D
    from sklearn.decomposition import PCA
    a, t = _np(audio_emb), _np(text_emb)
    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(np.concatenate([a, t]))
    ax = ax or plt.gca()
    if audio_labels is None:
        ax.scatter(*xy[:len(a)].T, s=12, alpha=0.6, color="tab:blue")
    else:
        labels = _np(audio_labels).astype(int)
        n = max(int(labels.max()) + 1, len(class_names or []))
        colours = plt.get_cmap("tab20")(np.arange(n) % 20)
        dots = ax.scatter(*xy[:len(a)].T, s=12, alpha=0.6, c=labels,
                          cmap=ListedColormap(colours), norm=BoundaryNorm(np.arange(n + 1) - 0.5, n))
        bar = ax.figure.colorbar(dots, ax=ax, pad=0.01, label="class of the audio clip")
        bar.set_ticks(np.arange(n))
        bar.set_ticklabels(list(class_names) if class_names is not None else [str(k) for k in range(n)])
        bar.ax.tick_params(labelsize="small")
    ax.scatter(*xy[len(a):].T, s=60, marker="*", color="black")
    share = pca.explained_variance_ratio_
    ax.set(xlabel=f"PC 1 ({share[0]:.0%} of the variance)", ylabel=f"PC 2 ({share[1]:.0%})", title=title)
    ax.legend(handles=[Line2D([], [], ls="", marker="o", color="gray", label="audio clips"),
                       Line2D([], [], ls="", marker="*", ms=10, color="black", label="text prompts")],
              loc="best", fontsize="small")
    return ax


def plot_loss_history(history, axes=None, weights=None, terms: Sequence[str] | None = None):
    """Training curves of a loss with several terms: one panel per term, then the total
    (and the mean masks, when recorded), each on its own y-axis, at most four a row.

    Terms of very different size (LMAC-ZS's ``out`` is in squared logits, ``l1`` a mean
    mask) stay readable this way. ``history`` is a :class:`clapnb.lmaczs.History` (its
    ``val`` points are drawn as dots) or a list of dicts, one per step. ``weights``
    (e.g. ``lmaczs.LossWeights()``) puts each term's weight in its panel's title: the
    total is the weighted sum. Returns the axes.
    """
    import pandas as pd
    train = pd.DataFrame(getattr(history, "train", history))
    val = pd.DataFrame(getattr(history, "val", []))
    terms = [c for c in (terms or TERMS) if c in train and (weights is None or getattr(weights, c, 1))]
    panels = terms + [c for c in ["total"] if c in train]
    masks = [c for c in ("mask_related", "mask_unrelated") if c in train]
    n = len(panels) + bool(masks)
    if axes is None:   # at most four panels a row, so that the figure stays readable
        cols = min(n, 4)
        rows = -(-n // cols)
        _, grid = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.7 * rows), layout="constrained",
                               squeeze=False)
        for ax in grid.ravel()[n:]:
            ax.set_visible(False)
        axes = grid.ravel()[:n]
    axes = np.asarray(axes).ravel()
    steps = np.arange(1, len(train) + 1)
    for ax, name in zip(axes, panels):
        ax.plot(steps, train[name], color="black" if name == "total" else "tab:blue", lw=1.2,
                label="training batch")
        if name in val:
            ax.plot(val["step"], val[name], "o", color="tab:orange", label="validation")
        weight = getattr(weights, name, None) if weights is not None else None
        title = ("total (weighted sum)" if name == "total"
                 else f"{name} (weight {weight:g})" if weight is not None else name)
        ax.set(title=title, xlabel="step", ylabel="loss" if name == "total" else f"{name} term")
    if masks:
        ax = axes[len(panels)]
        for name, colour in zip(masks, ["tab:green", "tab:red"]):
            ax.plot(steps, train[name], color=colour, label=name.replace("mask_", "") + " prompts")
        ax.set(title="mean mask", xlabel="step", ylabel="mean mask value", ylim=(0, None))
        ax.legend(fontsize="small")
    if len(val):
        axes[0].legend(fontsize="small")
    return axes


def plot_concepts(pairs: Sequence[tuple[str, float]], ax=None, title: str = ""):
    """Horizontal bar plot of (concept, weight) pairs, largest on top."""
    ax = ax or plt.gca()
    words = [w for w, _ in pairs][::-1]
    weights = [float(v) for _, v in pairs][::-1]
    ax.barh(words, weights, color="tab:blue")
    ax.set(xlabel="weight", title=title)
    return ax
