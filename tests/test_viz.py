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
