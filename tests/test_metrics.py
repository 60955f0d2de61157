"""Faithfulness metrics against small cases worked out by hand, and SPS / COMP against
the formulas of Quantus (Sparseness, Complexity) written out independently here."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

from clapnb import metrics
from clapnb.model import ClapModel


# ---------------------------------------------------------------------------------
# AI, AD, AG, FF, Fid-In
# ---------------------------------------------------------------------------------
def test_average_increase_drop_and_gain_by_hand():
    p = np.array([0.5, 0.8, 0.2])
    p_in = np.array([0.6, 0.4, 0.2])
    np.testing.assert_allclose(metrics.average_increase(p, p_in), [100, 0, 0])
    np.testing.assert_allclose(metrics.average_drop(p, p_in), [0, 50, 0])       # 0.4 / 0.8
    np.testing.assert_allclose(metrics.average_gain(p, p_in), [20, 0, 0])       # 0.1 / 0.5


def test_average_gain_of_a_certain_prediction_is_zero_not_nan():
    assert metrics.average_gain([1.0], [1.0])[0] == 0.0
    assert metrics.average_drop([0.0], [0.0])[0] == 0.0


def test_faithfulness_on_spectra_and_input_fidelity():
    np.testing.assert_allclose(metrics.faithfulness_on_spectra([0.5, 0.8], [0.1, 0.9]), [0.4, -0.1])
    np.testing.assert_array_equal(metrics.input_fidelity([1, 2, 3], [1, 0, 3]), [1, 0, 1])


def test_logits_instead_of_probabilities_are_refused():
    with pytest.raises(ValueError, match="probabilities"):
        metrics.average_drop([2.5], [0.1])
    with pytest.raises(ValueError, match="shape"):
        metrics.input_fidelity([1, 2], [1])


# ---------------------------------------------------------------------------------
# SPS, COMP, MM
# ---------------------------------------------------------------------------------
def _quantus_sparseness(a: np.ndarray) -> float:
    """Quantus Sparseness.evaluate_instance (abs=True, normalise=True: divided by max |a|)."""
    a = np.abs(a.ravel()).astype(np.float64)
    a = a / np.max(a)
    a = a + 0.0000001
    a = np.sort(a)
    n = a.shape[0]
    return float(np.sum((2 * np.arange(1, n + 1) - n - 1) * a) / (n * np.sum(a)))


def _quantus_complexity(a: np.ndarray) -> float:
    """Quantus Complexity.evaluate_instance (abs=True): entropy of a / sum |a|."""
    a = np.abs(a.ravel()).astype(np.float64)
    return float(scipy.stats.entropy(pk=a / np.sum(np.abs(a))))


def test_sparseness_by_hand():
    # [1, 2, 3, 4] / 4 sorted, weights 2i - n - 1 = -3, -1, 1, 3: (-.75 - .5 + .75 + 3) / (4 * 2.5)
    np.testing.assert_allclose(metrics.sparseness([[1, 2, 3, 4]]), [0.25], atol=1e-6)
    np.testing.assert_allclose(metrics.sparseness([[0, 0, 0, 1]]), [0.75], atol=1e-6)  # (n-1)/n
    np.testing.assert_allclose(metrics.sparseness([[0.3] * 8]), [0.0], atol=1e-6)


def test_sparseness_and_complexity_match_quantus_formulas():
    rng = np.random.default_rng(0)
    masks = rng.uniform(size=(5, 6, 7)) ** rng.uniform(0.5, 6, size=(5, 1, 1))
    np.testing.assert_allclose(metrics.sparseness(masks), [_quantus_sparseness(m) for m in masks],
                               rtol=1e-10)
    np.testing.assert_allclose(metrics.complexity(masks), [_quantus_complexity(m) for m in masks],
                               rtol=1e-10)


def test_complexity_by_hand_and_mask_mean():
    masks = np.array([[1.0, 1, 1, 1], [0, 0, 0, 5], [2, 2, 0, 0]])
    np.testing.assert_allclose(metrics.complexity(masks), [math.log(4), 0.0, math.log(2)], atol=1e-12)
    np.testing.assert_allclose(metrics.mask_mean(masks), [1.0, 1.25, 1.0])
    assert np.isnan(metrics.complexity(np.zeros((1, 4)))[0])


def test_roc_auc_by_hand():
    mask = np.array([[0.9, 0.1], [0.8, 0.2]])
    assert metrics.roc_auc(mask, [[True, False], [False, False]]) == 1.0
    assert metrics.roc_auc(mask, [[False, True], [False, False]]) == 0.0
    assert metrics.roc_auc(mask, [[False, False], [False, True]]) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="undefined"):
        metrics.roc_auc(mask, np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="shape"):
        metrics.roc_auc(mask, np.ones((3, 2), bool))


# ---------------------------------------------------------------------------------
# evaluate_masks on a model whose probabilities can be worked out by hand
# ---------------------------------------------------------------------------------
class SumModel(ClapModel):
    """Embedding = the spectrogram summed over time, unit-normed; two "frequency bins"."""

    name = "sum"

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    @property
    def logit_scale(self) -> float:
        return 1.0

    def embed_from_spectrogram(self, magnitude):
        return F.normalize(magnitude.sum(-1), dim=-1)


def _softmax(*logits):
    e = np.exp(logits)
    return e / e.sum()


def test_evaluate_masks_by_hand():
    model = SumModel()
    prompts = torch.eye(2)
    magnitude = torch.tensor([[[3.0], [4.0]]])          # embedding (0.6, 0.8): class 1
    mask = torch.tensor([[[1.0], [0.0]]])              # keeps the bin of class 0
    s = metrics.evaluate_masks(model, magnitude, mask, prompts)
    p = _softmax(0.6, 0.8)[1]
    p_in = _softmax(1.0, 0.0)[1]                        # masked in: (3, 0) -> (1, 0)
    p_out = _softmax(0.0, 1.0)[1]                       # masked out: (0, 4) -> (0, 1)
    assert s.predicted[0] == 1
    np.testing.assert_allclose([s.p[0], s.p_in[0], s.p_out[0]], [p, p_in, p_out], rtol=1e-6)
    np.testing.assert_allclose(s.ad, [100 * (p - p_in) / p], rtol=1e-6)
    np.testing.assert_allclose(s.ff, [p - p_out], rtol=1e-6)
    assert s.ai[0] == 0 and s.ag[0] == 0 and s.fid_in[0] == 0 and s.mm[0] == 0.5
    summary = s.summary()
    assert list(summary) == list(metrics.METRICS)
    assert summary["FF"] == pytest.approx(p - p_out, rel=1e-6)


def test_evaluate_masks_refuses_bad_masks():
    model, prompts = SumModel(), torch.eye(2)
    magnitude = torch.ones(1, 2, 3)
    with pytest.raises(ValueError, match="match the spectrograms"):
        metrics.evaluate_masks(model, magnitude, torch.ones(1, 2, 4), prompts)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.evaluate_masks(model, magnitude, 2 * torch.ones(1, 2, 3), prompts)
