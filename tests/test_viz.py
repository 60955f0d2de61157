"""Plots: the mask overlay shows exactly the mask (cyan, opacity proportional to it)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from clapnb import viz  # noqa: E402


def test_mask_overlay_opacity_follows_the_mask():
    rng = np.random.default_rng(0)
    magnitude = rng.random((257, 40)).astype(np.float32)
    mask = np.zeros((257, 40), dtype=np.float32)
    mask[10:20, 5:15] = 1.0
    mask[30:40, 20:30] = 0.5
    fig, ax = plt.subplots()
    viz.plot_spectrogram(magnitude, 16_000, 256, ax=ax, mask=mask, mask_alpha=0.6)
    spectrogram, overlay = ax.get_images()
    assert spectrogram.get_array().shape == (257, 40)
    rgba = np.asarray(overlay.get_array())
    np.testing.assert_allclose(rgba[..., 3], 0.6 * mask, atol=1e-6)  # no mask, no tint
    np.testing.assert_allclose(rgba[mask > 0, :3], np.tile([0.0, 1.0, 1.0], (int((mask > 0).sum()), 1)))
    assert ax.get_xlim() == pytest.approx((0, 40 * 256 / 16_000))
    plt.close(fig)


def test_spectrogram_db_is_relative_to_the_maximum_and_floored():
    db = viz.spectrogram_db(np.array([[1.0, 0.1, 0.0]]), floor_db=-80)
    np.testing.assert_allclose(db, [[0.0, -20.0, -80.0]], atol=1e-4)


def test_mask_overlay_has_a_legend_and_optional_colour_bars():
    magnitude = np.random.default_rng(0).random((65, 20)).astype(np.float32)
    mask = np.zeros((65, 20), dtype=np.float32)
    fig, (ax1, ax2) = plt.subplots(1, 2)
    viz.plot_spectrogram(magnitude, 16_000, 256, ax=ax1, mask=mask)
    assert [t.get_text() for t in ax1.get_legend().get_texts()] == ["cyan = mask"]
    assert len(fig.axes) == 2  # no colour bar unless asked for
    viz.plot_spectrogram(magnitude, 16_000, 256, ax=ax2, mask=mask, mask_label="true mask", colorbar=True)
    assert [t.get_text() for t in ax2.get_legend().get_texts()] == ["cyan = true mask"]
    labels = [a.get_ylabel() for a in fig.axes[2:]]
    assert labels == ["level (dB re max)", "true mask"]
    viz.plot_spectrogram(magnitude, 16_000, 256, ax=ax1)  # no mask: no legend needed
    plt.close(fig)


def test_modality_gap_names_both_clouds_and_the_classes():
    rng = np.random.default_rng(0)
    audio, text = rng.normal(size=(30, 8)), rng.normal(size=(3, 8))
    fig, ax = plt.subplots()
    viz.plot_modality_gap(audio, text, ax=ax, audio_labels=np.arange(30) % 3, class_names=["a", "b", "c"])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["audio clips", "text prompts"]
    bar = fig.axes[1]
    assert bar.get_ylabel() == "class of the audio clip"
    assert [t.get_text() for t in bar.get_yticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel().startswith("PC 1 (")
    plt.close(fig)


def test_loss_history_gets_one_panel_per_term_plus_total_and_masks():
    from clapnb.lmaczs import History, LossWeights
    steps = [{"sim": 1.0 / k, "out": 300.0 / k, "l1": 0.1, "div": 0.01, "total": 31.0 / k,
              "mask_related": 0.3, "mask_unrelated": 0.1} for k in range(1, 11)]
    history = History(train=steps, val=[{"step": 10, **steps[-1]}])
    axes = viz.plot_loss_history(history, weights=LossWeights(out=0.1))
    titles = [ax.get_title() for ax in axes]
    assert titles == ["sim (weight 1)", "out (weight 0.1)", "l1 (weight 1)", "div (weight 2)",
                      "total (weighted sum)", "mean mask"]
    assert all(ax.get_xlabel() == "step" and ax.get_ylabel() for ax in axes)
    out_line = axes[1].get_lines()[0]
    np.testing.assert_allclose(out_line.get_ydata(), [300.0 / k for k in range(1, 11)])
    assert axes[1].get_ylim()[1] > 250 and axes[2].get_ylim()[1] < 1  # each term on its own scale
    assert len(axes[0].get_lines()) == 2  # training curve and the validation point
    plt.close(axes[0].figure)
    # a plain list of dicts, no weights: term names as titles
    axes = viz.plot_loss_history(steps[:3])
    assert [ax.get_title() for ax in axes][:2] == ["sim", "out"]
    plt.close(axes[0].figure)
    # seven panels wrap onto two rows of at most four; the spare cell stays hidden
    axes = viz.plot_loss_history([{**s, "cls": 0.5} for s in steps], weights=LossWeights())
    fig = axes[0].figure
    assert len(axes) == 7 and [ax.get_title() for ax in axes][1] == "cls (weight 5)"
    fig.canvas.draw()
    rows = sorted({round(ax.get_position().y0, 3) for ax in axes})
    assert len(rows) == 2 and sum(ax.get_visible() for ax in fig.axes) == 7 and len(fig.axes) == 8
    plt.close(fig)


def test_explanation_figure_shows_as_png_without_pyplot():
    import torch
    from matplotlib.figure import Figure

    from clapnb.lmaczs import Explanation
    fields = Explanation.__dataclass_fields__
    assert {"magnitude", "mask", "prompts", "sample_rate"} <= set(fields)
    ex = type("Ex", (), {"magnitude": torch.rand(65, 20), "mask": torch.rand(2, 65, 20),
                         "prompts": ["a", "b"], "sample_rate": 16_000})()
    fig = viz.explanation_figure(ex, 256, ["first", "second"])
    assert isinstance(fig, Figure) and fig not in map(plt.figure, plt.get_fignums())
    assert [ax.get_title() for ax in fig.axes] == ["original", "first", "second"]
    png = fig._repr_png_()  # what display(fig) shows, before pyplot's inline backend exists
    assert png.startswith(b"\x89PNG")
