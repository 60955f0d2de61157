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


# ---------------------------------------------------------------------------------
# Edges of the pure functions
# ---------------------------------------------------------------------------------
def test_table_names_and_directions():
    assert metrics.METRICS == ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "MM")
    assert metrics.DIRECTION == {"AI": 1, "AD": -1, "AG": 1, "FF": 1, "Fid-In": 1, "SPS": 1,
                                 "COMP": -1, "MM": 0}


@pytest.mark.parametrize("fn", [metrics.average_increase, metrics.average_drop,
                                metrics.average_gain, metrics.faithfulness_on_spectra])
def test_probabilities_must_lie_in_0_1(fn):
    second = "p_out" if fn is metrics.faithfulness_on_spectra else "p_in"
    fn([0.0, 1.0, 0.5], torch.tensor([1.0, 0.0, 0.5]))          # both ends are probabilities
    for bad in (1.5, 1.0 + 1e-9, -1e-9, float("nan")):
        with pytest.raises(ValueError, match=r"^p must hold probabilities in \[0, 1\]"):
            fn([0.5, bad], [0.5, 0.5])
        with pytest.raises(ValueError, match=rf"^{second} must hold probabilities"):
            fn([0.5, 0.5], [bad, 0.5])
    with pytest.raises(ValueError, match="got values from -0.5 to 0.3 "
                                         r"\(pass softmax outputs, not logits\)"):
        fn([-0.5, 0.3], [0.5, 0.5])


def test_faithfulness_edges_by_hand():
    p = np.array([0.0, 1.0, 0.25, 0.6, 0.6])
    p_in = np.array([0.5, 0.5, 0.25, 0.9, 0.3])
    np.testing.assert_array_equal(metrics.average_increase(p, p_in), [100, 0, 0, 100, 0])
    np.testing.assert_allclose(metrics.average_drop(p, p_in), [0, 50, 0, 0, 50])
    np.testing.assert_allclose(metrics.average_gain(p, p_in), [50, 0, 0, 75, 0])
    np.testing.assert_allclose(metrics.faithfulness_on_spectra(p, p_in), [-0.5, 0.5, 0, -0.3, 0.3])
    assert metrics.average_drop([0.0], [0.0]).dtype == np.float64
    np.testing.assert_array_equal(metrics.input_fidelity(np.array([[0, 1]]), np.array([[0, 2]])),
                                  [[1.0, 0.0]])
    with pytest.raises(ValueError, match=r"predictions differ in shape: \(2,\) vs \(1,\)"):
        metrics.input_fidelity([1, 2], [1])


def test_mask_shape_metrics_edges():
    # one bin holding everything: Gini (n - 1) / n up to the 1e-7 offset; scale-free; |mask|
    one_hot = metrics.sparseness([[0, 0, 0, 0.5], [-1, 0, 0, 0], [0, 0, 0, 7]])
    np.testing.assert_allclose(one_hot, [3 / (4 + 16e-7)] * 3, rtol=1e-12)
    # [0, 1]: (-1e-7 + 1 + 1e-7) / (2 (1 + 2e-7)); an all-zero mask is flat: 0
    np.testing.assert_allclose(metrics.sparseness([[0, 1], [0, 0], [0, 1e-35]]),
                               [1 / (2 + 4e-7), 0, 1 / (2 + 4e-7)], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(metrics.sparseness(torch.tensor([[[1.0, 2], [3, 4]]])), [0.25],
                               atol=1e-6)
    # entropy of masks summing to 1 or less is defined too (only an all-zero mask is not)
    comp = metrics.complexity([[0.25, 0.25, 0, 0], [0.2, 0.2, 0.2, 0.2], [1e-3, 0, 0, 0],
                               [0, -2, 2, 0]])
    np.testing.assert_allclose(comp, [math.log(2), math.log(4), 0, math.log(2)], atol=1e-12)
    assert not np.isnan(comp).any()
    np.testing.assert_allclose(metrics.complexity(torch.ones(2, 3, 3)), [math.log(9)] * 2)
    with pytest.raises(ValueError, match=r"one mask per clip, got shape \(4,\)"):
        metrics.sparseness(np.ones(4))
    with pytest.raises(ValueError, match="one mask per clip"):
        metrics.complexity(np.ones(4))
    masks = torch.tensor([[[0.0, 1], [1, 1]], [[0, 0], [0, 1]]])
    np.testing.assert_allclose(metrics.mask_mean(masks), [0.75, 0.25])


def test_roc_auc_edges():
    truth = np.array([[True, False], [False, False]])
    assert metrics.roc_auc(torch.tensor([[0.9, 0.1], [0.8, 0.2]]), truth) == 1.0   # torch mask
    assert metrics.roc_auc(np.full((2, 2), 0.3), truth) == 0.5                     # all tied
    assert metrics.roc_auc(np.array([[1, 0], [1, 1]]), ~truth) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="all True or all False"):
        metrics.roc_auc(np.ones((2, 2)), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"mask \(2, 2\) and ground truth \(2, 3\) differ"):
        metrics.roc_auc(np.ones((2, 2)), np.ones((2, 3), bool))


def test_scores_per_clip_and_summary():
    n = {name: np.array([i, i + 1.0]) for i, name in enumerate(metrics.METRICS)}
    s = metrics.FaithfulnessScores(predicted=np.array([0, 1]), p=np.ones(2), p_in=np.ones(2),
                                   p_out=np.ones(2), ai=n["AI"], ad=n["AD"], ag=n["AG"],
                                   ff=n["FF"], fid_in=n["Fid-In"], sps=n["SPS"],
                                   comp=np.array([np.nan, 3.0]), mm=n["MM"])
    assert s.per_clip("Fid-In") is n["Fid-In"] and s.per_clip("AI") is n["AI"]
    with pytest.raises(KeyError, match="unknown metric 'fid_in'; metrics: AI, AD"):
        s.per_clip("fid_in")
    summary = s.summary()
    assert summary == {"AI": 0.5, "AD": 1.5, "AG": 2.5, "FF": 3.5, "Fid-In": 4.5, "SPS": 5.5,
                       "COMP": 3.0, "MM": 7.5}                # nan means skip the NaN
    assert all(type(v) is float for v in summary.values())


# ---------------------------------------------------------------------------------
# The model-driven functions, with a non-identity prompt matrix
# ---------------------------------------------------------------------------------
PROMPTS = torch.tensor([[2.0, 0.0], [3.0, 3.0]])              # rows (1, 0) and (1, 1) / sqrt(2)


def _classifier_by_hand(mag: np.ndarray) -> np.ndarray:
    """softmax over the prompts of the cosine of the time-summed spectrum with each row."""
    e = mag.sum(-1)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    p = np.array([[1.0, 0.0], [0.5 ** 0.5, 0.5 ** 0.5]])
    logits = e @ p.T
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_zero_shot_probs_normalises_each_prompt():
    model = SumModel()
    mag = torch.tensor([[[3.0], [4.0]], [[1.0], [0.2]], [[0.1], [2.0]]])
    probs = metrics.zero_shot_probs(model, mag, PROMPTS, batch_size=2)
    np.testing.assert_allclose(probs.numpy(), _classifier_by_hand(mag.numpy()), rtol=1e-6)
    assert probs.argmax(dim=1).tolist() == [1, 0, 1]
    assert probs.device.type == "cpu" and probs.shape == (3, 2)


def test_evaluate_masks_by_hand_with_skewed_prompts():
    model = SumModel()
    mag = torch.tensor([[[3.0, 0.0], [4.0, 0.0]],         # class 1
                        [[1.0, 0.0], [0.2, 0.0]],         # class 0
                        [[0.5, 0.5], [2.0, 2.0]]])        # class 1
    masks = torch.tensor([[[1.0, 1.0], [0.5, 0.5]],       # (3, 2): class 1 weaker, kept
                          [[1.0, 0.0], [0.0, 0.0]],       # (1, 0): class 0 stronger
                          [[1.0, 1.0], [0.0, 0.0]]])      # (1, 0): flips to class 0
    s = metrics.evaluate_masks(model, mag, masks, PROMPTS, batch_size=2)
    probs = _classifier_by_hand(mag.numpy())
    c = probs.argmax(axis=1)
    rows = np.arange(3)
    p = probs[rows, c]
    probs_in = _classifier_by_hand((masks * mag).numpy())
    p_in = probs_in[rows, c]
    p_out = _classifier_by_hand(((1 - masks) * mag + 1e-30).numpy())[rows, c]
    np.testing.assert_array_equal(s.predicted, [1, 0, 1])
    np.testing.assert_allclose(s.p, p, rtol=1e-6)
    np.testing.assert_allclose(s.p_in, p_in, rtol=1e-6)
    np.testing.assert_allclose(s.p_out, p_out, rtol=1e-6)
    np.testing.assert_array_equal(s.ai, [0, 100, 0])
    np.testing.assert_allclose(s.ad, [100 * (p[0] - p_in[0]) / p[0], 0,
                                      100 * (p[2] - p_in[2]) / p[2]], rtol=1e-5)
    np.testing.assert_allclose(s.ag, [0, 100 * (p_in[1] - p[1]) / (1 - p[1]), 0], rtol=1e-5)
    np.testing.assert_allclose(s.ff, p - p_out, rtol=1e-5)
    np.testing.assert_array_equal(s.fid_in, [1, 1, 0])
    np.testing.assert_allclose(s.sps, metrics.sparseness(masks))
    np.testing.assert_allclose(s.comp, metrics.complexity(masks))
    np.testing.assert_allclose(s.mm, [0.75, 0.25, 0.5])


def test_evaluate_masks_accepts_0_and_1_and_refuses_outside():
    model, mag = SumModel(), torch.ones(2, 2, 3)
    ok = metrics.evaluate_masks(model, mag, torch.tensor([0.0, 1.0]).repeat(2, 2, 3)[:, :, :3]
                                .reshape(2, 2, 3), PROMPTS)
    assert ok.mm.shape == (2,)
    with pytest.raises(ValueError, match=r"masks must lie in \[0, 1\], got -0.1..1"):
        metrics.evaluate_masks(model, mag, torch.ones(2, 2, 3).index_put_(
            (torch.tensor([0]),), torch.tensor(-0.1)), PROMPTS)
    with pytest.raises(ValueError, match=r"got 0..1.01; turn attributions into masks"):
        metrics.evaluate_masks(model, mag, torch.zeros(2, 2, 3).index_put_(
            (torch.tensor([1]),), torch.tensor(1.01)), PROMPTS)
    with pytest.raises(ValueError, match=r"masks must lie in \[0, 1\], got nan"):
        metrics.evaluate_masks(model, mag, torch.full((2, 2, 3), 0.5).index_put_(
            (torch.tensor([1]),), torch.tensor(float("nan"))), PROMPTS)


def test_score_explainer_explains_the_predicted_class():
    model = SumModel()
    mag = torch.tensor([[[3.0], [4.0]], [[1.0], [0.2]], [[0.1], [2.0]]])
    seen = {}

    def explainer(m, magnitude, prompt_emb, target):
        seen.update(model=m, magnitude=magnitude, prompts=prompt_emb, target=target)
        # float64 with a graph attached, as a gradient explainer may return
        return torch.tensor([[[1.0], [0.5]], [[1.0], [0.0]], [[0.2], [1.0]]],
                            dtype=torch.float64, requires_grad=True) * 1.0

    s = metrics.score_explainer(model, explainer, mag, PROMPTS, batch_size=2)
    assert seen["model"] is model and seen["magnitude"] is mag and seen["prompts"] is PROMPTS
    assert seen["target"].tolist() == [1, 0, 1]
    ref = metrics.evaluate_masks(model, mag, torch.tensor([[[1.0], [0.5]], [[1.0], [0.0]],
                                                           [[0.2], [1.0]]]), PROMPTS)
    for name in ("predicted", "p", "p_in", "p_out", "ai", "ad", "ag", "ff", "fid_in", "sps",
                 "comp", "mm"):
        np.testing.assert_allclose(getattr(s, name), getattr(ref, name), rtol=1e-6)


class StftSumModel(SumModel):
    """SumModel on TinyCLAP's STFT grid (16 kHz, 5 s, n_fft 512, hop 256): F = 257 "bins"."""

    sample_rate, clip_samples = 16_000, 80_000

    def __init__(self):
        super().__init__()
        from clapnb.model import StftConfig
        self.stft_config = StftConfig(512, 256, 512)

    def spectrogram(self, waveforms, sample_rate=None):
        assert sample_rate == self.sample_rate
        x = torch.as_tensor(np.stack(waveforms), dtype=torch.float32)
        return self.stft_config.stft(x)


def test_ground_truth_auc_scores_each_event_against_its_own_mask():
    from clapnb.synth import event_masks, load_synthetic_scenes
    model = StftSumModel()
    scenes = load_synthetic_scenes(n=3, seed=0)
    classes = sorted({e.label for events in scenes.events for e in events}) + ["unused"]
    truths = [event_masks(scenes, i, model.stft_config) for i in range(3)]
    rng = np.random.default_rng(0)
    noisy = [[0.3 * gt + rng.random(gt.shape) for gt in t] for t in truths]
    calls = []

    def explainer(m, magnitude, prompt_emb, target):
        i = len(calls)
        calls.append(target.tolist())
        expected = model.spectrogram([scenes.audio(i)], sample_rate=16_000).abs()
        assert magnitude.shape == (len(truths[i]),) + expected.shape[1:]
        assert torch.equal(magnitude[-1], expected[0]) and prompt_emb is PROMPTS
        return torch.from_numpy(np.stack(noisy[i]))

    aucs = metrics.ground_truth_auc(model, explainer, scenes, PROMPTS, classes)
    assert calls == [[classes.index(e.label) for e in events] for events in scenes.events]
    from sklearn.metrics import roc_auc_score
    expected = [roc_auc_score(gt.ravel(), m.ravel()) for t, ms in zip(truths, noisy)
                for gt, m in zip(t, ms)]
    assert len(expected) == 9 and 0.6 < min(expected) and max(expected) < 1
    np.testing.assert_allclose(aucs, expected, rtol=1e-12)


def test_ground_truth_prompt_auc_tells_the_prompted_event_from_the_others():
    from clapnb.synth import event_masks, load_synthetic_scenes
    model = StftSumModel()
    scenes = load_synthetic_scenes(n=4, seed=1, min_events=2, max_events=3)
    classes = sorted({e.label for events in scenes.events for e in events})
    truths = [event_masks(scenes, i, model.stft_config) for i in range(len(scenes))]
    state = {"i": 0}

    def maps(kind):
        def explainer(m, magnitude, prompt_emb, target):
            t = truths[state["i"]]
            state["i"] += 1
            own = [classes.index(e.label) for e in scenes.events[state["i"] - 1]]
            picked = [own.index(int(c)) for c in target]
            if kind == "own":        # the prompted event's bins: a perfect, prompt-aware map
                out = [t[k] for k in picked]
            elif kind == "all":      # every event's bins: a prompt-blind map
                out = [t.any(axis=0)] * len(picked)
            else:                    # another event's bins: the wrong event
                out = [t[(k + 1) % len(t)] for k in picked]
            return torch.from_numpy(np.stack(out).astype(np.float32))
        return explainer

    scores = {}
    for kind in ("own", "all", "other"):
        state["i"] = 0
        scores[kind] = metrics.ground_truth_auc(model, maps(kind), scenes, PROMPTS, classes,
                                                prompt=True)
    assert len(scores["own"]) >= 8
    np.testing.assert_allclose(scores["own"], 1.0)
    np.testing.assert_allclose(scores["all"], 0.5)
    assert scores["other"].max() < 0.5
    # plain AUC rewards the prompt-blind map too
    state["i"] = 0
    assert metrics.ground_truth_auc(model, maps("all"), scenes, PROMPTS, classes).mean() > 0.9


def test_ground_truth_auc_skips_events_without_a_region(monkeypatch):
    from clapnb import synth
    scenes = synth.load_synthetic_scenes(n=3, seed=0)        # 3, 3 and 3 events
    F_, T_ = 257, 313
    some = np.zeros((F_, T_), bool)
    some[:10, :20] = True
    fake = {0: np.stack([np.zeros((F_, T_), bool), some, np.ones((F_, T_), bool)]),
            1: np.zeros((3, F_, T_), bool),                  # nothing to score: no explainer call
            2: np.stack([some, ~some, some & False])}

    def fake_masks(data, i, stft_config):
        assert data is scenes and stft_config == model.stft_config
        return fake[i]

    monkeypatch.setattr(synth, "event_masks", fake_masks)
    monkeypatch.setattr(metrics, "event_masks", fake_masks, raising=False)
    model = StftSumModel()
    classes = sorted({e.label for events in scenes.events for e in events})
    calls = []

    def explainer(m, magnitude, prompt_emb, target):
        calls.append(target.tolist())
        return torch.from_numpy(np.stack([some, ~some][:len(target)])).float()

    aucs = metrics.ground_truth_auc(model, explainer, scenes, PROMPTS, classes)
    labels = [[classes.index(e.label) for e in events] for events in scenes.events]
    assert calls == [[labels[0][1]], [labels[2][0], labels[2][1]]]
    np.testing.assert_array_equal(aucs, [1.0, 1.0, 1.0])
    # nothing kept anywhere: an empty array
    fake.update({0: fake[1], 2: fake[1]})
    assert metrics.ground_truth_auc(model, explainer, scenes, PROMPTS, classes).shape == (0,)


def test_ground_truth_auc_needs_scenes_with_events():
    from types import SimpleNamespace
    with pytest.raises(ValueError, match="'clotho' has no ground-truth events; this check needs "
                                         "synthetic scenes"):
        metrics.ground_truth_auc(SumModel(), None, SimpleNamespace(name="clotho", events=None),
                                 PROMPTS, [])


def test_prompt_auc_ranks_only_the_bins_some_event_dominates():
    truths = np.zeros((2, 2, 4), dtype=bool)
    truths[0, 0, :2] = True          # event 0: two bins
    truths[1, 1, 2:] = True          # event 1: two bins; the other four bins are background
    mask = np.array([[0.9, 0.2, 0.0, 0.0],
                     [1.0, 1.0, 0.5, 0.1]])
    # over all bins: 0.9 beats 4 of the 6 others, 0.2 beats 3 (the loud background counts)
    assert metrics.roc_auc(mask, truths[0]) == pytest.approx(7 / 12)
    # among dominated bins only: event 0 (0.9, 0.2) against event 1 (0.5, 0.1): 3 of 4 pairs
    assert metrics.prompt_auc(mask, truths, 0) == pytest.approx(0.75)
    assert metrics.prompt_auc(mask, truths, 1) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="all True or all False"):
        metrics.prompt_auc(mask, truths[:1], 0)      # no other event to tell apart
    with pytest.raises(ValueError, match=r"\(E, F, T\)"):
        metrics.prompt_auc(mask, truths[0], 0)


def test_loudness_map_is_the_level_in_db_scaled_to_0_1():
    magnitude = torch.tensor([[1.0, 0.1], [0.01, 0.0]])
    loud = metrics.loudness_map(magnitude)
    np.testing.assert_allclose(loud, [[1.0, 0.75], [0.5, 0.0]], atol=1e-6)
    np.testing.assert_allclose(metrics.loudness_map(magnitude, floor_db=-40), [[1, 0.5], [0, 0]], atol=1e-6)
