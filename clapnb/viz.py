"""Plots and audio players for the notebooks: the one place that draws or plays.

Functions take numpy/torch arrays and a matplotlib ``Axes`` (or create one) and
return what they drew, so a notebook cell stays one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch


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
    """Linear magnitude ``(F, T)`` -> decibels relative to the maximum, floored."""
    m = _np(magnitude)
    db = 20 * np.log10(np.maximum(m, 1e-10) / max(m.max(), 1e-10))
    return np.maximum(db, floor_db)


def plot_spectrogram(magnitude, sample_rate: int, hop_length: int, ax=None, title: str = "",
                     mask=None, mask_alpha: float = 0.7):
    """Show a linear-magnitude STFT ``(F, T)`` in dB; optionally overlay a mask in [0, 1]
    (in cyan, its opacity ``mask_alpha * mask``)."""
    ax = ax or plt.gca()
    m = _np(magnitude)
    extent = [0, m.shape[1] * hop_length / sample_rate, 0, sample_rate / 2000]
    ax.imshow(spectrogram_db(m), origin="lower", aspect="auto", extent=extent, cmap="magma")
    if mask is not None:  # cyan, as opaque as the mask is high: mask 0 leaves the spectrogram as is
        m = np.clip(_np(mask).astype(np.float32), 0, 1)
        rgba = np.zeros((*m.shape, 4), dtype=np.float32)
        rgba[..., :3] = (0.0, 1.0, 1.0)
        rgba[..., 3] = mask_alpha * m
        ax.imshow(rgba, origin="lower", aspect="auto", extent=extent)
    ax.set(xlabel="time (s)", ylabel="frequency (kHz)", title=title)
    return ax


def explanation_figure(ex, hop_length: int, titles: Sequence[str] | None = None):
    """One row: the clip's spectrogram, then each prompt's mask over it.

    ``ex`` is an :class:`clapnb.lmaczs.Explanation` (``magnitude (F, T)``, ``mask (P, F, T)``,
    ``prompts``). Built as a ``matplotlib.figure.Figure`` outside pyplot, so show it with
    ``display(fig)``: a figure that pyplot does not know cannot be closed half-drawn by
    ``plt.show()`` in another callback (JupyterLab >= 4.6 runs widget callbacks on their
    own kernel thread).
    """
    from matplotlib.figure import Figure
    n = len(ex.prompts)
    fig = Figure(figsize=(4.2 * (n + 1), 3), layout="tight")
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


def plot_modality_gap(audio_emb, text_emb, ax=None, audio_labels=None, title: str = ""):
    """2-D PCA of audio and text embeddings together: the two clouds show the modality gap."""
    from sklearn.decomposition import PCA
    a, t = _np(audio_emb), _np(text_emb)
    xy = PCA(n_components=2, random_state=0).fit_transform(np.concatenate([a, t]))
    ax = ax or plt.gca()
    ax.scatter(*xy[:len(a)].T, s=12, alpha=0.6, c=audio_labels, cmap="tab20", label="audio")
    ax.scatter(*xy[len(a):].T, s=60, marker="*", color="black", label="text prompts")
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend()
    return ax


def plot_concepts(pairs: Sequence[tuple[str, float]], ax=None, title: str = ""):
    """Horizontal bar plot of (concept, weight) pairs, largest on top."""
    ax = ax or plt.gca()
    words = [w for w, _ in pairs][::-1]
    weights = [float(v) for _, v in pairs][::-1]
    ax.barh(words, weights, color="tab:blue")
    ax.set(xlabel="weight", title=title)
    return ax
