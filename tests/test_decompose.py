"""Sparse concept decompositions: both solvers, the SpLiCE preparation, target_l0, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapnb.decompose import (MIN_LAM, SOLVERS, ConceptDecomposer, Decomposition, decompose,
                              duality_gap, embedding_mean, lasso_fista, lasso_sklearn, objective)
from clapnb.settings import default_device


def unit_rows(rng: np.random.Generator, n: int, d: int, offset: float = 0.0) -> np.ndarray:
    """Random unit vectors, optionally sharing a common offset (like CLAP embeddings do)."""
    x = rng.standard_normal((n, d)) + offset * rng.standard_normal(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def problem(n=8, v=120, d=24, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """A correlated dictionary C (v, d) and targets Z (n, d), unit-norm rows."""
    rng = np.random.default_rng(seed)
    C = unit_rows(rng, v, d, offset=0.5)
    Z = rng.random((n, 8)) @ C[rng.choice(v, 8, replace=False)] + 0.1 * unit_rows(rng, n, d)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    return torch.from_numpy(C), torch.from_numpy(Z.astype(np.float32))


def assert_kkt(C, Z, W, lam, atol=2e-3):
    """Optimality of min_{w>=0} ||C^T w - z||^2 + lam |w|_1: with g = 2 C (z - C^T w),
    g_j = lam where w_j > 0 and g_j <= lam where w_j = 0."""
    g = 2 * (Z - W @ C) @ C.T
    lam = torch.as_tensor(lam).expand(len(Z))[:, None]
    assert (W >= 0).all()
    active = W > 0
    assert active.any()
    assert torch.allclose(g[active], lam.expand_as(g)[active], atol=atol)
    assert (g[~active] <= lam.expand_as(g)[~active] + atol).all()


# ---------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["fista", "sklearn"])
def test_solvers_match_closed_form_on_orthonormal_dictionary(solver):
    # orthonormal rows make (1) separable: w_j = max(0, c_j . z - lam / 2)
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.standard_normal((32, 32)))
    C = torch.from_numpy(q[:20].astype(np.float32))                  # 20 orthonormal rows
    Z = torch.from_numpy(unit_rows(rng, 5, 32))
    lam = torch.tensor([0.001, 0.05, 0.1, 0.2, 0.4])
    expected = torch.clamp(Z @ C.T - lam[:, None] / 2, min=0)
    if solver == "fista":
        W, gap = lasso_fista(C, Z, lam, tol=1e-7)
        assert (gap <= 1e-7).all()
    else:
        W = lasso_sklearn(C, Z, lam, progress=False)
    assert torch.allclose(W, expected, atol=1e-4)
    assert torch.allclose(duality_gap(C, Z, expected, lam), torch.zeros(5), atol=1e-6)


@pytest.mark.parametrize("solver", ["fista", "sklearn"])
def test_solvers_satisfy_kkt_on_correlated_dictionary(solver):
    C, Z = problem()
    lam = torch.full((len(Z),), 0.2)
    W = lasso_fista(C, Z, lam, working_set=16)[0] if solver == "fista" else \
        lasso_sklearn(C, Z, lam, progress=False)
    assert_kkt(C, Z, W, lam)
    assert (W > 0).sum(dim=1).min() >= 2            # a real sparse mixture, not a trivial one


def test_fista_and_sklearn_agree():
    C, Z = problem(n=10, v=300, d=32, seed=2)
    lam = torch.linspace(0.05, 0.4, 10)
    W_fast, gap = lasso_fista(C, Z, lam, working_set=16)
    W_ref = lasso_sklearn(C, Z, lam, progress=False)
    f_fast, f_ref = objective(C, Z, W_fast, lam), objective(C, Z, W_ref, lam)
    assert ((f_fast - f_ref).abs() / f_ref).max() < 1e-4
    a, b = W_fast > 0, W_ref > 0
    assert ((a & b).sum(dim=1) / (a | b).sum(dim=1)).min() >= 0.9
    assert (gap <= 1e-6 * 10).all()
    # the gap bounds the distance to the optimum, which sklearn approximates
    assert (f_fast - f_ref <= gap + 1e-6).all()


def test_fista_with_near_duplicate_concepts():
    # collinear concepts make the small problems ill-conditioned (and the weights
    # non-unique); the objective and the optimality conditions are still reached
    C, Z = problem(n=6, v=60, d=24, seed=6)
    rng = np.random.default_rng(6)
    twins = C[:30] + 1e-3 * torch.from_numpy(unit_rows(rng, 30, 24))
    C = torch.nn.functional.normalize(torch.cat([C, twins]), dim=1)
    lam = torch.full((6,), 0.05)
    W, gap = lasso_fista(C, Z, lam, tol=1e-6)
    assert (gap <= 1e-6).all()
    assert_kkt(C, Z, W, lam)
    W_ref = lasso_sklearn(C, Z, lam, tol=1e-7, progress=False)
    assert torch.allclose(objective(C, Z, W, lam), objective(C, Z, W_ref, lam), atol=1e-6)


def test_fista_warm_start_and_working_set_growth():
    C, Z = problem(n=6, v=200, d=32, seed=3)
    lam = torch.full((6,), 0.02)                    # small lam: supports larger than the set
    W, _ = lasso_fista(C, Z, lam, working_set=4)
    assert (W > 0).sum(dim=1).max() > 4
    assert_kkt(C, Z, W, lam)
    W2, gap = lasso_fista(C, Z, lam, init=W, working_set=4)
    assert torch.allclose(W2, W, atol=1e-3) and (gap <= 1e-5).all()


def test_fista_warns_when_iterations_run_out():
    C, Z = problem()
    with pytest.warns(UserWarning, match="did not reach tol"):
        lasso_fista(C, Z, torch.full((len(Z),), 0.1), max_iter=10, max_rounds=1, tol=1e-9)


def test_duality_gap_is_positive_away_from_the_optimum():
    C, Z = problem()
    lam = torch.full((len(Z),), 0.2)
    zero_gap = duality_gap(C, Z, torch.zeros(len(Z), len(C)), lam)
    assert (zero_gap > 1e-3).all()
    W, gap = lasso_fista(C, Z, lam)
    assert (gap < 1e-5).all() and torch.allclose(duality_gap(C, Z, W, lam), gap, atol=1e-6)


# ---------------------------------------------------------------------------------
# The decomposer: preparation, results, target_l0
# ---------------------------------------------------------------------------------
def embeddings(n=12, v=150, d=32, seed=4):
    rng = np.random.default_rng(seed)
    return unit_rows(rng, n, d, offset=1.0), unit_rows(rng, v, d, offset=1.0), \
        [f"c{i}" for i in range(v)]


def test_decompose_result_fields():
    audio, concept_emb, names = embeddings()
    dec = decompose(audio, concept_emb, names, lam=0.2, device="cpu")
    n, v = len(audio), len(names)
    assert isinstance(dec, Decomposition) and len(dec) == n
    assert dec.weights.shape == (n, v) and dec.reconstruction.shape == (n, audio.shape[1])
    assert torch.equal(dec.l0, (dec.weights > 0).sum(dim=1)) and (dec.l0 > 0).all()
    assert torch.allclose(dec.reconstruction.norm(dim=1), torch.ones(n), atol=1e-5)
    z = torch.nn.functional.normalize(torch.from_numpy(audio), dim=1)
    assert torch.allclose(dec.cosine, (dec.reconstruction * z).sum(dim=1), atol=1e-6)
    assert torch.equal(dec.lam, torch.full((n,), 0.2))
    assert dec.sparse_weights().coalesce().values().numel() == int(dec.l0.sum())
    assert repr(dec).startswith(f"Decomposition({n} embeddings over {v} concepts: mean l0 ")
    # top(): the largest non-zero weights, in order, with their names
    top = dec.top(100, i=3)
    assert len(top) == int(dec.l0[3])
    values = [w for _, w in top]
    assert values == sorted(values, reverse=True) and values[-1] > 0
    best = int(dec.weights[3].argmax())
    assert top[0] == (names[best], pytest.approx(float(dec.weights[3, best])))
    assert len(dec.top(2, i=3)) == 2
    with pytest.raises(IndexError):
        dec.top(3, i=n)


def test_decomposition_is_sparse_and_explains_the_audio():
    audio, concept_emb, names = embeddings(v=300)
    dense = decompose(audio, concept_emb, names, lam=0.01, device="cpu")
    sparse = decompose(audio, concept_emb, names, lam=0.3, device="cpu")
    assert (sparse.l0 < dense.l0).all()
    assert (dense.cosine > 0.95).all()
    assert (sparse.cosine < dense.cosine).all()


def test_centering_round_trip():
    audio, concept_emb, names = embeddings(v=80)
    mean = embedding_mean(audio)
    dec = ConceptDecomposer(concept_emb, names, audio_mean=mean, device="cpu")
    prepared = dec.prepare(audio)
    z, target, norm = prepared.embeddings, prepared.target, prepared.centered_norm
    # centring: target = (z - mean) / |z - mean|, unit norm; the norm is kept
    assert torch.equal(prepared.mean, mean)
    assert torch.allclose(target * norm[:, None] + mean, z, atol=1e-6)
    assert torch.allclose(target.norm(dim=1), torch.ones(len(z)), atol=1e-6)
    # the concepts were centred too: their mean direction is gone
    assert dec.dictionary.mean(dim=0).norm() < 0.05 < dec.concept_mean.norm()
    # any weights that reproduce the centred target map back to exactly z
    exact = torch.linalg.lstsq(dec.dictionary.T, target.T).solution.T    # (n, V), any sign
    assert torch.allclose(dec.reconstruct(exact, norm), z, atol=1e-4)
    # SpLiCE's formula (no length restored) does not round-trip
    assert not torch.allclose(dec.reconstruct(exact), z, atol=1e-2)
    # and an almost unregularised decomposition nearly reproduces the audio
    result = dec(audio, lam=1e-3)
    assert (result.cosine > 0.99).all()
    # a Decomposition carries what reconstruct() needs, e.g. after editing its weights
    assert torch.allclose(dec.reconstruct(result.weights, result.centered_norm, result.audio_mean),
                          result.reconstruction, atol=1e-6)
    dropped = result.weights.sum(dim=0).argmax()                # the most used concept
    edited = result.weights.clone()
    edited[:, dropped] = 0
    cosine = torch.cosine_similarity(dec.reconstruct(edited, result.centered_norm,
                                                     result.audio_mean), z)
    used = result.weights[:, dropped] > 0
    assert used.sum() >= 2
    assert (cosine[used] < result.cosine[used] - 1e-3).all()
    assert torch.allclose(cosine[~used], result.cosine[~used], atol=1e-6)


def test_center_false_only_normalises():
    rng = np.random.default_rng(5)
    q, _ = np.linalg.qr(rng.standard_normal((16, 16)))
    concept_emb = 3 * q[:10]                       # orthogonal rows, not unit norm
    audio = rng.standard_normal((4, 16))
    dec = decompose(audio, concept_emb, [str(i) for i in range(10)], lam=0.1, center=False,
                    device="cpu")
    z = torch.nn.functional.normalize(torch.from_numpy(audio).float(), dim=1)
    expected = torch.clamp(z @ torch.from_numpy(q[:10]).float().T - 0.05, min=0)
    assert torch.allclose(dec.weights, expected, atol=1e-4)
    assert torch.equal(dec.centered_norm, torch.ones(4)) and not dec.audio_mean.any()
    assert torch.allclose(dec.reconstruction, torch.nn.functional.normalize(
        dec.weights @ torch.from_numpy(q[:10]).float(), dim=1), atol=1e-6)


def test_batch_mean_is_used_without_audio_mean():
    audio, concept_emb, names = embeddings()
    implicit = decompose(audio, concept_emb, names, device="cpu")
    explicit = decompose(audio, concept_emb, names, audio_mean=embedding_mean(audio), device="cpu")
    assert torch.allclose(implicit.weights, explicit.weights, atol=1e-5)
    assert torch.allclose(implicit.audio_mean, embedding_mean(audio))
    # a reference mean from elsewhere gives a different (but valid) decomposition
    other = decompose(audio, concept_emb, names, audio_mean=embedding_mean(audio[:3]),
                      device="cpu")
    assert not torch.allclose(other.weights, explicit.weights, atol=1e-3)
    assert implicit.lam[0] == 0.25  # the package default (the lam of SpLiCE's README examples)


def test_decomposer_is_reusable_and_accepts_numpy_or_torch():
    audio, concept_emb, names = embeddings()
    dec = ConceptDecomposer(torch.from_numpy(concept_emb), names, audio_mean=embedding_mean(audio),
                            device="cpu")
    a = dec(audio[:5], lam=0.2)
    b = dec(torch.from_numpy(audio[:5]).double(), lam=0.2)
    c = dec(audio[0], lam=0.2)                      # one (D,) embedding
    assert torch.equal(a.weights, b.weights)
    assert torch.allclose(a.weights[:1], c.weights, atol=1e-3)   # solved in another batch
    assert dec.gram.shape == (len(names), len(names)) and dec.gram is dec.gram


def test_sklearn_solver_through_decompose():
    audio, concept_emb, names = embeddings(n=4)
    ref = decompose(audio, concept_emb, names, solver="sklearn", device="cpu", progress=False)
    fast = decompose(audio, concept_emb, names, solver="fista", device="cpu")
    assert torch.allclose(ref.weights, fast.weights, atol=2e-3)
    assert torch.equal(ref.l0, fast.l0)


def test_per_sample_lam():
    audio, concept_emb, names = embeddings(n=3)
    lam = [0.05, 0.2, 0.6]
    dec = decompose(audio, concept_emb, names, lam=lam, device="cpu")
    assert torch.allclose(dec.lam, torch.tensor(lam))
    assert dec.l0[0] > dec.l0[1] > dec.l0[2]


@pytest.mark.parametrize("k", [1, 5, 12])
@pytest.mark.filterwarnings("ignore:target_l0")     # l0 = 1 is missed where two concepts tie
def test_target_l0(k):
    audio, concept_emb, names = embeddings(n=10, v=200)
    dec = decompose(audio, concept_emb, names, target_l0=k, device="cpu")
    assert (dec.l0 - k).abs().max() <= 1
    assert (dec.l0 == k).float().mean() >= 0.8
    # each lam is a real solution: solving again at that lam gives the same weights
    again = ConceptDecomposer(concept_emb, names, device="cpu")(audio, lam=dec.lam, tol=1e-6)
    assert torch.equal(again.l0, dec.l0)


# ---------------------------------------------------------------------------------
# Devices and bad input
# ---------------------------------------------------------------------------------
def test_default_device():
    audio, concept_emb, names = embeddings(n=3)
    dec = ConceptDecomposer(concept_emb, names)
    assert dec.device == default_device(None)
    result = dec(audio, lam=0.3)
    for t in (result.weights, result.reconstruction, result.lam, result.cosine, result.l0):
        assert t.device.type == dec.device.type


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    audio, concept_emb, names = embeddings(n=20, v=300)
    cpu = decompose(audio, concept_emb, names, lam=0.1, device="cpu")
    gpu = decompose(audio, concept_emb, names, lam=0.1, device="cuda")
    assert gpu.weights.is_cuda and gpu.reconstruction.is_cuda
    assert torch.allclose(cpu.weights, gpu.weights.cpu(), atol=1e-3)
    assert torch.allclose(cpu.cosine, gpu.cosine.cpu(), atol=1e-4)


def test_bad_input():
    audio, concept_emb, names = embeddings(n=3)
    with pytest.raises(ValueError, match="24-d but concept embeddings are 32-d"):
        decompose(audio[:, :24], concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match="vocabulary is empty"):
        decompose(audio, concept_emb[:0], [], device="cpu")
    with pytest.raises(ValueError, match="concept names"):
        decompose(audio, concept_emb, names[:-1], device="cpu")
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        decompose(audio, concept_emb, names, lam=-0.1, device="cpu")
    with pytest.raises(ValueError, match="lam must be finite"):
        decompose(audio, concept_emb, names, lam=float("nan"), device="cpu")
    bad = audio.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"audio_emb contains NaN or inf \(rows \[1\]"):
        decompose(bad, concept_emb, names, device="cpu")
    bad_concepts = concept_emb.copy()
    bad_concepts[7] = np.inf
    with pytest.raises(ValueError, match="concept_emb contains NaN"):
        decompose(audio, bad_concepts, names, device="cpu")
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        decompose(audio, concept_emb, names, target_l0=len(names) + 1, device="cpu")
    with pytest.raises(ValueError, match="positive integer"):
        decompose(audio, concept_emb, names, target_l0=0, device="cpu")
    with pytest.raises(ValueError, match="either lam or target_l0"):
        decompose(audio, concept_emb, names, lam=0.1, target_l0=3, device="cpu")
    with pytest.raises(ValueError, match="unknown solver"):
        decompose(audio, concept_emb, names, solver="admm", device="cpu")
    with pytest.raises(ValueError, match="pass audio_mean"):
        decompose(audio[0], concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match="audio_mean has 5 values"):
        decompose(audio, concept_emb, names, audio_mean=np.ones(5), device="cpu")
    with pytest.raises(ValueError, match="all-zero rows"):
        decompose(np.zeros((2, 32)), concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match=r"\(N, D\) or \(D,\)"):
        decompose(audio[None], concept_emb, names, device="cpu")
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        decompose(audio.tolist(), concept_emb, names, device="cpu")
    with pytest.raises(TypeError, match="list of names"):
        decompose(audio, concept_emb[:1], "dog", device="cpu")
    with pytest.raises(ValueError, match="at least 2 concepts"):
        decompose(audio, concept_emb[:1], ["dog"], device="cpu")
    # without centering a single concept and a single embedding are fine
    single = decompose(audio[0], concept_emb[:1], ["dog"], center=False, lam=0.0, device="cpu")
    assert single.weights.shape == (1, 1)


# ---------------------------------------------------------------------------------
# Known answers: a lasso small enough to solve by hand
# ---------------------------------------------------------------------------------
# Two unit concepts at cos = 0.6, c1 = (1, 0), c2 = (0.6, 0.8), and z = (0.8, 0.6), so
# b = C z = (0.8, 0.96) and G = C C^T = [[1, .6], [.6, 1]]. With both concepts active the
# optimality conditions g = 2 C (z - C^T w) = lam read G w = b - lam / 2:
#   lam = 0.2: w = ((0.7 - 0.6 * 0.86), (0.86 - 0.6 * 0.7)) / 0.64 = (0.2875, 0.6875)
#   lam = 1.0: w = ((0.3 - 0.6 * 0.46), (0.46 - 0.6 * 0.3)) / 0.64 = (0.0375, 0.4375)
# c1 leaves at lam = 2 (b1 - 0.6 b2) / (1 - 0.6) = 1.12; then w = (0, b2 - lam / 2):
#   lam = 1.5: w = (0, 0.21)   (c1's correlation 2 (0.8 - 0.21 * 0.6) = 1.348 <= 1.5)
# and w = 0 from lam_max = 2 max(b) = 1.92 on:
#   lam = 2.0: w = (0, 0)
HAND_C = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
HAND_LAM = torch.tensor([0.2, 1.0, 1.5, 2.0])
HAND_Z = torch.tensor([[0.8, 0.6]]).expand(len(HAND_LAM), 2).contiguous()
HAND_W = torch.tensor([[0.2875, 0.6875], [0.0375, 0.4375], [0.0, 0.21], [0.0, 0.0]])
# objective ||C^T w - z||^2 + lam |w|_1, e.g. lam = 0.2: r = (0.1, 0.05), 0.0125 + 0.2 * 0.975
HAND_OBJECTIVE = torch.tensor([0.2075, 0.5 ** 2 + 0.25 ** 2 + 0.475,
                               0.674 ** 2 + 0.432 ** 2 + 1.5 * 0.21, 1.0])


def test_hand_solved_lasso_fista():
    W, gap = lasso_fista(HAND_C, HAND_Z, HAND_LAM, tol=1e-7)
    assert torch.allclose(W, HAND_W, atol=1e-5)
    assert (W[2:, 0] == 0).all() and (W[3] == 0).all()         # exact zeros, not tiny weights
    assert (gap <= 1e-7).all()
    # float64 in, float64 out, to a tolerance float32 cannot certify
    W, gap = lasso_fista(HAND_C.double(), HAND_Z.double(), HAND_LAM.double(), tol=1e-12)
    assert W.dtype == torch.float64
    assert torch.allclose(W, HAND_W.double(), atol=1e-9) and (gap <= 1e-12).all()


def test_hand_solved_lasso_sklearn():
    W = lasso_sklearn(HAND_C, HAND_Z, HAND_LAM, tol=1e-10, progress=False)
    assert torch.allclose(W, HAND_W, atol=1e-5)
    assert W.dtype == HAND_C.dtype and W.device == HAND_C.device


def test_lam_is_sklearn_alpha_times_2d():
    # the reference solver really is scikit-learn's Lasso with alpha = lam / (2 D)
    from sklearn.linear_model import Lasso
    C, Z = problem(n=3, v=40, d=16, seed=7)
    lam = torch.tensor([0.05, 0.2, 0.5])
    W = lasso_sklearn(C, Z, lam, tol=1e-10, progress=False)
    for i in range(3):
        ref = Lasso(alpha=float(lam[i]) / (2 * 16), positive=True, fit_intercept=False,
                    tol=1e-10, max_iter=100_000).fit(C.T.double().numpy(), Z[i].double().numpy())
        np.testing.assert_allclose(W[i].numpy(), ref.coef_, atol=1e-6)
        assert (W[i] > 0).sum() >= 2


def test_solvers_raise_lam_below_min_lam():
    # lam = 0 is solved as MIN_LAM = 1e-3: on orthonormal rows w = max(0, c . z - 5e-4)
    q = torch.eye(3)[:2]
    z = torch.tensor([[0.6, 0.8, 0.0]])
    expected = torch.tensor([[0.6 - 5e-4, 0.8 - 5e-4]])
    W, _ = lasso_fista(q, z, torch.zeros(1), tol=1e-10)
    assert torch.allclose(W, expected, atol=2e-6)
    W = lasso_sklearn(q, z, torch.zeros(1), tol=1e-10, progress=False)
    assert torch.allclose(W, expected, atol=2e-6)


def test_objective_by_hand():
    assert torch.allclose(objective(HAND_C, HAND_Z, HAND_W, HAND_LAM), HAND_OBJECTIVE, atol=1e-6)
    # |w|_1 also for (infeasible) negative weights: r = (-1.3, -0.6), 1.69 + 0.36 + 0.2 * 0.5
    w = torch.tensor([[-0.5, 0.0]])
    assert torch.allclose(objective(HAND_C, HAND_Z[:1], w, HAND_LAM[:1]), torch.tensor([2.15]))


def _gap_by_definition(C, Z, W, lam) -> np.ndarray:
    """Primal minus dual, written out: the dual of (1) is max |z|^2 - |z - theta|^2 over
    2 C theta <= lam, and theta = s r with s = min(1, lam / max_j 2 c_j . r)."""
    C, Z, W = (x.double().numpy() for x in (C, Z, W))
    out = []
    for z, w, l in zip(Z, W, lam.double().numpy()):
        r = z - w @ C
        top = (2 * C @ r).max()
        s = min(1.0, l / top) if top > 0 else 1.0
        theta = s * r
        out.append(r @ r + l * w.sum() - (z @ z - (z - theta) @ (z - theta)))
    return np.array(out)


def test_duality_gap_by_hand_and_by_definition():
    # at w = 0: r = z, g = 2 b = (1.6, 1.92), s = 0.2 / 1.92 and the gap is (1 - s)^2 |z|^2
    gap = duality_gap(HAND_C, HAND_Z[:1], torch.zeros(1, 2), HAND_LAM[:1])
    assert float(gap) == pytest.approx((1 - 0.2 / 1.92) ** 2, rel=1e-6)
    # zero at the optimum, positive elsewhere, and equal to primal - dual everywhere: points
    # with max correlation above 1, between lam and 1, and below lam (s = 1)
    assert torch.allclose(duality_gap(HAND_C, HAND_Z, HAND_W, HAND_LAM), torch.zeros(4),
                          atol=1e-6)
    W = torch.tensor([[0.0, 0.0], [0.1, 0.3], [0.5, 0.5], [0.3, 0.9], [0.0, 0.5], [2.0, 0.0]])
    Z = HAND_Z[:1].expand(6, 2)
    for lam in (0.2, 0.5, 2.5):
        lam_t = torch.full((6,), lam)
        got = duality_gap(HAND_C, Z, W, lam_t).double().numpy()
        np.testing.assert_allclose(got, np.maximum(_gap_by_definition(HAND_C, Z, W, lam_t), 0),
                                   rtol=1e-5, atol=1e-6)
        assert (got[1:] > 1e-3).all()


def test_decompose_without_centering_gives_the_hand_solution():
    for solver in SOLVERS:
        dec = decompose(HAND_Z, HAND_C, ["c1", "c2"], lam=HAND_LAM, center=False,
                        solver=solver, tol=1e-7, device="cpu", progress=False)
        assert torch.allclose(dec.weights, HAND_W, atol=1e-5)
        assert torch.equal(dec.l0, torch.tensor([2, 2, 1, 0]))
        assert torch.allclose(dec.lam, HAND_LAM)
        assert (dec.gap <= 1e-6).all()
        # reconstructions: normalize(W @ C), e.g. (0.7, 0.55) for lam = 0.2
        recon = torch.nn.functional.normalize(HAND_W[:3] @ HAND_C, dim=1)
        assert torch.allclose(dec.reconstruction[:3], recon, atol=1e-5)
        assert torch.allclose(dec.cosine[:3], recon @ HAND_Z[0], atol=1e-5)
        assert dec.top(5, i=2) == [("c2", pytest.approx(0.21, abs=1e-5))]


def test_solver_choice_reaches_that_solver(monkeypatch):
    import clapnb.decompose as dm
    calls = []
    for name in ("lasso_sklearn", "lasso_fista"):
        real = getattr(dm, name)
        monkeypatch.setattr(dm, name, lambda *a, _real=real, _name=name, **k:
                            calls.append(_name) or _real(*a, **k))
    decompose(HAND_Z, HAND_C, ["c1", "c2"], lam=0.2, center=False, solver="sklearn",
              device="cpu", progress=False)
    assert calls == ["lasso_sklearn"]
    calls.clear()
    decompose(HAND_Z, HAND_C, ["c1", "c2"], lam=0.2, center=False, solver="fista", device="cpu")
    assert calls == ["lasso_fista"]


def test_target_l0_searches_lam_from_lam_max_by_halving_then_bisection():
    # lam_max = 1.92; halving gives 0.96 (< 1.12: both concepts), which is l0 = 2; for l0 = 1
    # the bisection on log lam then tries sqrt(0.96 * 1.92) = 1.92 / sqrt(2) (one concept)
    for solver in SOLVERS:
        z = HAND_Z[:1]
        two = decompose(z, HAND_C, ["c1", "c2"], target_l0=2, center=False, solver=solver,
                        device="cpu", progress=False)
        assert float(two.lam) == pytest.approx(0.96, rel=1e-5) and int(two.l0) == 2
        # b - lam / 2 = (0.32, 0.48): w = (0.32 - 0.288, 0.48 - 0.192) / 0.64
        assert torch.allclose(two.weights, torch.tensor([[0.05, 0.45]]), atol=1e-4)
        one = decompose(z, HAND_C, ["c1", "c2"], target_l0=1, center=False, solver=solver,
                        device="cpu", progress=False)
        assert float(one.lam) == pytest.approx(1.92 / 2 ** 0.5, rel=1e-5) and int(one.l0) == 1
        assert torch.allclose(one.weights, torch.tensor([[0.0, 0.96 - 1.92 / 2 ** 1.5]]),
                              atol=1e-5)
        assert float(one.gap) <= 1e-6


# ---------------------------------------------------------------------------------
# Decomposition, preparation and reconstruction pinned on small cases
# ---------------------------------------------------------------------------------
def hand_decomposition(weights) -> Decomposition:
    w = torch.as_tensor(weights, dtype=torch.float32)
    n, v = w.shape
    return Decomposition(weights=w, concepts=[f"c{j}" for j in range(v)], lam=torch.full((n,), 0.1),
                         l0=(w > 0).sum(dim=1), cosine=torch.ones(n),
                         reconstruction=torch.zeros(n, 2), centered_norm=torch.ones(n),
                         audio_mean=torch.zeros(2), gap=torch.zeros(n))


def test_top_defaults_bounds_and_zeros():
    weights = [[0.0] * 12 + [0.5, 0.0], list(np.arange(1, 15) / 100)]
    dec = hand_decomposition(weights)
    assert dec.top() == [("c12", 0.5)]                    # default i = 0; zeros are left out
    assert len(dec.top(i=1)) == 10                        # default k = 10
    assert dec.top(1, i=1) == [("c13", pytest.approx(0.14))]
    assert dec.top(3, i=-2) == dec.top(3, i=0) and dec.top(2, i=-1) == dec.top(2, i=1)
    assert len(dec.top(50, i=1)) == 14                    # k larger than V
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        dec.top(0)
    with pytest.raises(IndexError, match="sample 2 out of range: this decomposition has 2"):
        dec.top(1, i=2)
    with pytest.raises(IndexError, match="sample -3 out of range"):
        dec.top(1, i=-3)
    assert len(dec) == 2 and repr(dec) == ("Decomposition(2 embeddings over 14 concepts: "
                                           "mean l0 7.5, mean cosine 1.000)")


def test_embedding_mean_by_hand():
    # rows (3, 4) and (0, 2) normalise to (0.6, 0.8) and (0, 1)
    for x in (np.array([[3.0, 4.0], [0.0, 2.0]]), torch.tensor([[3.0, 4.0], [0.0, 2.0]])):
        mean = embedding_mean(x)
        assert mean.shape == (2,) and torch.allclose(mean, torch.tensor([0.3, 0.9]))
    assert torch.allclose(embedding_mean(np.array([0.0, 5.0])), torch.tensor([0.0, 1.0]))


def test_dictionary_is_normalised_and_centred_on_the_concept_mean():
    emb = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    centred = unit - unit.mean(axis=0)
    dec = ConceptDecomposer(emb, ["a", "b", "c"], device="cpu")
    assert torch.allclose(dec.concept_mean, torch.from_numpy(unit.mean(axis=0)).float())
    assert torch.allclose(dec.dictionary, torch.from_numpy(
        centred / np.linalg.norm(centred, axis=1, keepdims=True)).float(), atol=1e-6)
    assert dec.vocab_size == 3 and dec.embed_dim == 2 and dec.audio_mean is None
    assert torch.allclose(dec.gram, dec.dictionary @ dec.dictionary.T)
    plain = ConceptDecomposer(emb, ["a", "b", "c"], center=False, device="cpu")
    assert torch.equal(plain.concept_mean, torch.zeros(2))
    assert torch.allclose(plain.dictionary, torch.from_numpy(unit).float())
    # a dimension no concept uses is fine (only a concept, a row, may not vanish)
    padded = ConceptDecomposer(np.pad(emb, ((0, 0), (0, 1))), ["a", "b", "c"], device="cpu")
    assert torch.allclose(padded.dictionary[:, :2], dec.dictionary)
    assert not padded.dictionary[:, 2].any()


def test_prepare_chooses_the_audio_mean():
    audio, concept_emb, names = embeddings(n=5)
    m1, m2 = embedding_mean(audio[:3]), embedding_mean(audio[2:])
    z = torch.nn.functional.normalize(torch.from_numpy(audio), dim=1)
    with_mean = ConceptDecomposer(concept_emb, names, audio_mean=m1, device="cpu")
    without = ConceptDecomposer(concept_emb, names, device="cpu")
    for dec, arg, expected in [(with_mean, None, m1), (with_mean, m2, m2), (without, m2, m2),
                               (without, None, z.mean(dim=0))]:
        p = dec.prepare(audio, audio_mean=arg)
        assert torch.allclose(p.mean, expected)
        assert torch.allclose(p.centered_norm, (z - expected).norm(dim=1))
        assert torch.allclose(p.target, (z - expected) / (z - expected).norm(dim=1, keepdim=True))
        assert torch.allclose(p.embeddings, z)
    with pytest.raises(ValueError, match="an audio embedding equals the audio mean"):
        ConceptDecomposer(concept_emb, names, audio_mean=audio[1], device="cpu").prepare(audio[:3])
    plain = ConceptDecomposer(concept_emb, names, center=False, device="cpu").prepare(audio[:1])
    assert torch.equal(plain.target, plain.embeddings) and torch.equal(plain.embeddings, z[:1])
    assert torch.equal(plain.centered_norm, torch.ones(1)) and torch.equal(plain.mean,
                                                                          torch.zeros(32))


def test_reconstruct_by_formula():
    audio, concept_emb, names = embeddings(n=4, v=20)
    mean = embedding_mean(audio)
    other = embedding_mean(audio[:2])
    dec = ConceptDecomposer(concept_emb, names, audio_mean=mean, device="cpu")
    w = torch.from_numpy(np.random.default_rng(0).random((4, 20))).float()
    unit = torch.nn.functional.normalize(w @ dec.dictionary, dim=1)
    norm = torch.tensor([0.5, 1.0, 2.0, 3.0])
    normalize = torch.nn.functional.normalize
    assert torch.allclose(dec.reconstruct(w), normalize(unit + mean, dim=1), atol=1e-6)
    assert torch.allclose(dec.reconstruct(w, norm), normalize(norm[:, None] * unit + mean, dim=1),
                          atol=1e-6)
    assert torch.allclose(dec.reconstruct(w, norm, other),
                          normalize(norm[:, None] * unit + other, dim=1), atol=1e-6)
    no_mean = ConceptDecomposer(concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match="this decomposer has no audio_mean"):
        no_mean.reconstruct(w, norm)
    assert torch.allclose(no_mean.reconstruct(w, norm, mean), dec.reconstruct(w, norm), atol=1e-6)
    with pytest.raises(ValueError, match="audio_mean contains NaN or inf"):
        dec.reconstruct(w, norm, torch.full((32,), float("nan")))
    plain = ConceptDecomposer(concept_emb, names, center=False, device="cpu")
    assert torch.allclose(plain.reconstruct(w, norm, mean),
                          normalize(w @ plain.dictionary, dim=1), atol=1e-6)


def test_lam_checks_and_floor():
    audio, concept_emb, names = embeddings(n=3)
    dec = ConceptDecomposer(concept_emb, names, audio_mean=embedding_mean(audio), device="cpu")
    with pytest.raises(ValueError, match=r"lam must be one number or one per sample \(3\), got 2"):
        dec(audio, lam=[0.1, 0.2])
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        dec(audio, lam=[0.1, float("inf"), 0.2])
    with pytest.raises(ValueError, match="lam must be finite and >= 0"):
        dec(audio, lam=torch.tensor([0.1, -1e-6, 0.2]))
    low = dec(audio, lam=[0.0, MIN_LAM / 2, 0.3])
    assert torch.allclose(low.lam, torch.tensor([MIN_LAM, MIN_LAM, 0.3]))
    assert torch.allclose(dec(audio, lam=np.float64(0.2)).lam, torch.full((3,), 0.2))
    assert torch.allclose(dec(audio[:1], lam=[0.2]).lam, torch.tensor([0.2]))


def test_call_argument_checks():
    audio, concept_emb, names = embeddings(n=3, v=4)
    dec = ConceptDecomposer(concept_emb, names, audio_mean=embedding_mean(audio), device="cpu")
    for tol in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="tol must be > 0"):
            dec(audio, tol=tol)
    for k in (True, 2.5, 0, -1):
        with pytest.raises(ValueError, match="target_l0 must be a positive integer"):
            dec(audio, target_l0=k)
    with pytest.raises(ValueError, match="target_l0=5 is larger than the vocabulary "
                                         r"\(4 concepts\)"):
        dec(audio, target_l0=5)
    with pytest.raises(ValueError, match="give either lam or target_l0, not both"):
        dec(audio, lam=0.0, target_l0=1)
    with pytest.raises(ValueError, match=r"unknown solver 'admm'; choose one of \('fista', "
                                         r"'sklearn'\)"):
        dec(audio, solver="admm")
    # the largest l0 the vocabulary allows is accepted, and so is target_l0 = 1.0
    with pytest.warns(UserWarning, match="target_l0=4"):          # centred: rank 3 at most
        dec(audio, target_l0=4, progress=False)
    assert (dec(audio, target_l0=1.0, progress=False).l0 == 1).all()


def test_input_checks_name_the_rows():
    audio, concept_emb, names = embeddings(n=8)
    with pytest.raises(ValueError, match=r"audio_emb is empty \(shape \(0, 32\)\)"):
        decompose(audio[:0], concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match=r"concept_emb is empty \(shape \(150, 0\)\)"):
        decompose(audio, concept_emb[:, :0], names, device="cpu")
    bad = audio.copy()
    bad[1:8, 0] = np.nan
    with pytest.raises(ValueError, match=r"audio_emb contains NaN or inf \(rows \[1, 2, 3, 4, 5\]"
                                         r"\.\.\.\)"):
        decompose(bad, concept_emb, names, device="cpu")
    bad = audio.copy()
    bad[[0, 2, 3, 4, 5, 7]] = 0
    with pytest.raises(ValueError, match=r"audio_emb has all-zero rows \[0, 2, 3, 4, 5\]\.\.\.;"):
        decompose(bad, concept_emb, names, device="cpu")
    with pytest.raises(ValueError, match="all concepts identical"):
        decompose(audio, np.repeat(concept_emb[:1], 3, axis=0), names[:3], device="cpu")
    with pytest.raises(ValueError, match="audio_mean contains NaN or inf"):
        decompose(audio, concept_emb, names, audio_mean=np.full(32, np.inf), device="cpu")
    with pytest.raises(ValueError, match="audio_mean has 31 values but the embeddings are 32-d"):
        ConceptDecomposer(concept_emb, names, audio_mean=np.ones(31), device="cpu")
    # a batch of two is enough for the batch mean; a (D,) embedding is one row
    assert len(decompose(audio[:2], concept_emb, names, device="cpu")) == 2
    assert decompose(audio[0], concept_emb, names, audio_mean=embedding_mean(audio),
                     device="cpu").weights.shape == (1, 150)


# ---------------------------------------------------------------------------------
# Solver internals on the hand-solved problem
# ---------------------------------------------------------------------------------
def test_batches_give_the_same_weights():
    C, Z = (x.double() for x in problem(n=7, v=60, d=16, seed=8))
    lam = torch.linspace(0.05, 0.3, 7, dtype=torch.float64)
    W, gap = lasso_fista(C, Z, lam, tol=1e-10)
    W3, gap3 = lasso_fista(C, Z, lam, tol=1e-10, batch_size=3)
    assert torch.allclose(W, W3, atol=1e-6) and gap3.shape == (7,) and (gap3 <= 1e-10).all()
    W_init, _ = lasso_fista(C, Z, lam, tol=1e-10, batch_size=3, init=-W)   # negative: clamped
    assert torch.allclose(W, W_init, atol=1e-6)


def test_one_cpu_thread_only_on_cpu():
    from clapnb.decompose import _one_cpu_thread
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with _one_cpu_thread(torch.device("cpu")):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with _one_cpu_thread(torch.device("meta")):
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_support_solve_and_sub_gap_by_hand():
    from clapnb.decompose import _fista, _sub_gap, _support_solve
    G = (HAND_C @ HAND_C.T).expand(4, 2, 2).contiguous()
    b = HAND_Z @ HAND_C.T
    zz = torch.ones(4)
    lam = HAND_LAM[:, None]
    # on the full support the system G w = b - lam / 2 ...
    x = _support_solve(G[:2], b[:2], lam[:2], torch.ones(2, 2))
    assert torch.allclose(x, HAND_W[:2], atol=1e-5)
    # ... on a given support only those concepts ...
    x = _support_solve(G[:1], b[:1], lam[:1], torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(x, torch.tensor([[0.0, 0.96 - 0.1]]), atol=1e-5)
    # ... and c1, negative at lam = 1.5, is dropped in the next pass
    x = _support_solve(G[2:3], b[2:3], lam[2:3], torch.ones(1, 2))
    assert torch.allclose(x, HAND_W[2:3], atol=1e-5)
    one_pass = _support_solve(G[2:3], b[2:3], lam[2:3], torch.ones(1, 2), passes=1)
    assert one_pass[0, 0] < 0
    # a concept off the support ahead of two on it: its row of the system is the identity
    C3 = torch.cat([torch.tensor([[0.0, -1.0]]), HAND_C])
    x = _support_solve((C3 @ C3.T)[None], HAND_Z[:1] @ C3.T, lam[:1], torch.tensor([[0.0, 1, 1]]))
    assert torch.allclose(x, torch.tensor([[0.0, 0.2875, 0.6875]]), atol=1e-5)
    # exact duplicates: the ridge keeps the system solvable and splits the weight evenly,
    # (G + 1e-6 I) x = (0.8, 0.8) - 0.1
    dup = _support_solve(torch.ones(1, 2, 2, dtype=torch.float64),
                         torch.tensor([[0.8, 0.8]], dtype=torch.float64),
                         torch.tensor([[0.2]], dtype=torch.float64),
                         torch.ones(1, 2, dtype=torch.float64))
    assert torch.allclose(dup, torch.full((1, 2), 0.7 / (2 + 1e-6), dtype=torch.float64),
                          rtol=1e-9)
    # the small problems' gap is the full problem's gap
    W = torch.tensor([[0.0, 0.0], [0.1, 0.3], [0.5, 0.5], [0.0, 0.21]])
    assert torch.allclose(_sub_gap(G, b, zz, lam, W), duality_gap(HAND_C, HAND_Z, W, HAND_LAM),
                          atol=1e-6)
    # FISTA from zero (and from a poor start) reaches the hand solution
    for w0 in (torch.zeros(4, 2), torch.full((4, 2), 0.9)):
        w = _fista(G, b, zz, HAND_LAM, w0, torch.full((4,), 1e-9), max_iter=2000)
        assert torch.allclose(w, HAND_W, atol=1e-4)


def test_working_set_rounds_on_the_hand_problem():
    # a third concept c3 = (0, -1) never enters (c3 . z < 0). With working_set=1 the first
    # round solves on c2 alone (the largest violator): w2 = 0.96 - lam / 2 = 0.86 ...
    C = torch.cat([HAND_C, torch.tensor([[0.0, -1.0]])]).double()
    z, lam = HAND_Z[:1].double(), torch.tensor([0.2], dtype=torch.float64)
    with pytest.warns(UserWarning, match="1 of 1 samples did not reach tol=1e-12 within "
                                         "max_iter=1000 and max_rounds=1"):
        W, gap = lasso_fista(C, z, lam, working_set=1, max_rounds=1, tol=1e-12)
    assert torch.allclose(W, torch.tensor([[0.0, 0.86, 0.0]], dtype=torch.float64))
    assert torch.allclose(gap, duality_gap(C, z, W, lam))
    # ... and the next round adds c1, the next violator, to the support: the optimum
    W, gap = lasso_fista(C, z, lam, working_set=1, max_rounds=2, tol=1e-12)
    assert torch.allclose(W, torch.tensor([[0.2875, 0.6875, 0.0]], dtype=torch.float64))
    assert float(gap) <= 1e-12
    with pytest.raises(ValueError, match="working_set must be at least 1, got 0"):
        lasso_fista(C, z, lam, working_set=0)


def test_max_rounds_zero_only_checks_the_start():
    # no round: the (clamped) warm start comes back with its duality gap
    init = torch.tensor([[-0.5, 0.3], [0.2875, 0.6875]])
    with pytest.warns(UserWarning, match="1 of 2 samples did not reach"):
        W, gap = lasso_fista(HAND_C, HAND_Z[:2], HAND_LAM[:1].expand(2), init=init, max_rounds=0)
    assert torch.equal(W, torch.tensor([[0.0, 0.3], [0.2875, 0.6875]]))
    assert torch.allclose(gap, duality_gap(HAND_C, HAND_Z[:2], W, HAND_LAM[:1].expand(2)),
                          atol=1e-7)
    with pytest.warns(UserWarning, match="2 of 2 samples"):
        W, gap = lasso_fista(HAND_C, HAND_Z[:2], HAND_LAM[:2], max_rounds=0)
    assert torch.equal(W, torch.zeros(2, 2))
    assert torch.allclose(gap, duality_gap(HAND_C, HAND_Z[:2], W, HAND_LAM[:2]))


def test_warnings_point_at_the_caller():
    C, Z = problem()
    with pytest.warns(UserWarning, match="did not reach tol") as record:
        lasso_fista(C, Z, torch.full((len(Z),), 0.1), max_iter=10, max_rounds=1, tol=1e-9)
    assert record[0].filename == __file__
    # target_l0 out of reach: audio anti-correlated with both concepts has lam_max = 0 (raised
    # to 2 MIN_LAM), and even MIN_LAM keeps no concept; the start (w = 0) is what comes back
    dec = ConceptDecomposer(HAND_C, ["c1", "c2"], center=False, device="cpu")
    with pytest.warns(UserWarning, match=r"target_l0=1: 1 of 1 samples got a different number "
                                         r"of concepts \(up to 1 off\)") as record:
        result = dec(-HAND_Z[:1], target_l0=1, progress=False)
    assert record[0].filename == __file__
    assert int(result.l0) == 0 and float(result.lam) == pytest.approx(2 * MIN_LAM)


def test_documented_defaults():
    import inspect
    import clapnb.decompose as dm
    assert (dm.DEFAULT_LAM, dm.MIN_LAM, dm.SOLVERS) == (0.25, 1e-3, ("fista", "sklearn"))

    def defaults(fn):
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if p.default is not inspect.Parameter.empty}

    assert defaults(ConceptDecomposer.__call__) == dict(
        lam=None, target_l0=None, solver="fista", audio_mean=None, tol=1e-5, max_iter=1000,
        batch_size=None, progress=True)
    assert defaults(lasso_fista) == dict(gram=None, tol=1e-5, max_iter=1000, max_rounds=15,
                                         working_set=40, init=None, batch_size=None)
    assert defaults(lasso_sklearn) == dict(tol=1e-5, max_iter=100_000, progress=True)
    assert defaults(Decomposition.top) == dict(k=10, i=0)


def test_two_concepts_can_be_centred():
    # c1 - mean = -(c2 - mean): the centred dictionary is +-(c1 - c2) / |c1 - c2|
    dec = ConceptDecomposer(HAND_C, ["c1", "c2"], device="cpu")
    d = torch.nn.functional.normalize(HAND_C[0] - HAND_C[1], dim=0)
    assert torch.allclose(dec.dictionary, torch.stack([d, -d]), atol=1e-6)
    # z - mean = 0.5 d: the target is d, so only c1 is used, with weight 1 - lam / 2
    z = HAND_Z[0]
    mean = z - 0.5 * d
    result = dec(z, lam=0.2, audio_mean=mean)
    assert torch.allclose(result.centered_norm, torch.tensor([0.5]))
    assert torch.allclose(result.weights, torch.tensor([[0.9, 0.0]]), atol=1e-3)  # tol 1e-5
    assert torch.allclose(result.reconstruction, z[None], atol=1e-5)


def _fista_by_the_book(G, b, lam, w, n_iter):
    """n_iter steps of projected FISTA with the gradient restart of O'Donoghue & Candes,
    step 1 / (2 |G G|_F^(1/2)), on min w^T G w - 2 b^T w + lam sum(w), w >= 0 (numpy)."""
    step = 1 / (2 * np.sqrt(np.linalg.norm(G @ G)))
    y, t = w.copy(), 1.0
    for _ in range(n_iter):
        w_next = np.maximum(y - step * (2 * (G @ y - b) + lam), 0)
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        if (y - w_next) @ (w_next - w) > 0:               # uphill: restart the momentum
            y, t_next = w_next, 1.0
        else:
            y = w_next + (t - 1) / t_next * (w_next - w)
        w, t = w_next, t_next
    return w


def test_fista_iterates_and_polish():
    from clapnb.decompose import _fista, _sub_gap
    G = (HAND_C @ HAND_C.T).double()
    b = (HAND_Z[0] @ HAND_C.T).double()
    # four problems in one batch: lam 0.2 restarts its momentum at step 7, lam 1.5 (where c1
    # hits zero) at step 4 from zero and at step 6 from (0.9, 0)
    lam = torch.tensor([0.2, 1.5, 0.2, 1.5], dtype=torch.float64)
    w0 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.9, 0.9], [0.9, 0.0]], dtype=torch.float64)
    for n_iter in (1, 2, 3, 4, 5, 6, 7, 9):              # before the first check, at 10
        w = _fista(G.expand(4, 2, 2), b.expand(4, 2), torch.ones(4, dtype=torch.float64), lam,
                   w0, torch.ones(4, dtype=torch.float64), max_iter=n_iter)
        for i in range(4):
            np.testing.assert_allclose(w[i].numpy(), _fista_by_the_book(
                G.numpy(), b.numpy(), float(lam[i]), w0[i].numpy(), n_iter),
                rtol=1e-12, atol=1e-15)
    # nearly collinear concepts (cos 0.99) and one that is never used (an exact zero):
    # FISTA crawls, and the exact solve on the support, tried at iteration 50, finishes
    c, s = 0.99, (1 - 0.99 ** 2) ** 0.5
    C = torch.tensor([[1.0, 0.0], [c, s], [0.0, -1.0]], dtype=torch.float64)
    z = torch.nn.functional.normalize(torch.tensor([[1 + 0.3 * c, 0.3 * s + 0.05]],
                                                   dtype=torch.float64), dim=1)
    G, b, zz = (C @ C.T)[None], z @ C.T, torch.ones(1, dtype=torch.float64)
    lam = torch.tensor([0.05], dtype=torch.float64)
    exact = torch.linalg.solve(G[0, :2, :2], b[0, :2] - lam / 2)
    gaps = {}
    for n_iter in (49, 50):
        w = _fista(G, b, zz, lam, torch.zeros(1, 3, dtype=torch.float64),
                   torch.tensor([1e-8], dtype=torch.float64), max_iter=n_iter)
        gaps[n_iter] = float(_sub_gap(G, b, zz, lam[:, None], w))
    assert gaps[49] > 1e-6 and gaps[50] <= 1e-8
    assert torch.allclose(w[0, :2], exact, atol=1e-6) and w[0, 2] == 0


def test_fista_on_a_small_scale_dictionary():
    # |s C^T w - z|^2 + lam |w|_1 is the hand problem in v = s w with lam / s: w = v / s
    # (lam / s from 1.0 up: s lam stays above MIN_LAM); the step size follows the scale
    s = 1e-3
    W, gap = lasso_fista(s * HAND_C.double(), HAND_Z[1:].double(), s * HAND_LAM[1:].double(),
                         tol=1e-10)
    assert torch.allclose(s * W, HAND_W[1:].double(), atol=1e-6) and (gap <= 1e-10).all()
    # the same through FISTA alone (the solver's fallback)
    from clapnb.decompose import _fista
    G = (s * s * HAND_C @ HAND_C.T).double().expand(3, 2, 2)
    b = (s * HAND_Z[1:] @ HAND_C.T).double()
    w = _fista(G, b, torch.ones(3, dtype=torch.float64), s * HAND_LAM[1:].double(),
               torch.zeros(3, 2, dtype=torch.float64), torch.full((3,), 1e-10,
                                                                  dtype=torch.float64), 1000)
    assert torch.allclose(s * w, HAND_W[1:].double(), atol=1e-6)


@pytest.mark.filterwarnings("error")
def test_target_l0_search_schedule(monkeypatch):
    # the lam values tried, solved with tol / 10: halving from lam_max = 1.92, then bisection
    import clapnb.decompose as dm
    tried = []
    real = dm.lasso_fista

    def spy(C, Z, lam, **kwargs):
        tried.append((lam.tolist(), kwargs["tol"]))
        return real(C, Z, lam, **kwargs)

    monkeypatch.setattr(dm, "lasso_fista", spy)
    dec = ConceptDecomposer(HAND_C, ["c1", "c2"], center=False, device="cpu")
    dec(HAND_Z[:1], target_l0=2, tol=1e-5, progress=False)
    assert tried == [([pytest.approx(0.96)], pytest.approx(1e-6))]
    tried.clear()
    dec(HAND_Z[:1], target_l0=1, progress=False)
    assert [t[0] for t in tried] == [[pytest.approx(0.96)], [pytest.approx(1.92 / 2 ** 0.5)]]
    # nothing to find below MIN_LAM: one solve there, then the search stops (and warns)
    tried.clear()
    with pytest.warns(UserWarning, match="target_l0=1"):
        dec(-HAND_Z[:1], target_l0=1, progress=False)
    assert [t[0] for t in tried] == [[pytest.approx(MIN_LAM)]]


def test_sklearn_solver_settings(monkeypatch):
    import sklearn.linear_model
    made = []
    real = sklearn.linear_model.Lasso

    def spy(**kwargs):
        made.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(sklearn.linear_model, "Lasso", spy)
    W = lasso_sklearn(HAND_C, HAND_Z[:2], HAND_LAM[:2], tol=1e-6, max_iter=5000, progress=False)
    assert made == [dict(alpha=pytest.approx(lam / 4), positive=True, fit_intercept=False,
                         tol=pytest.approx(5e-7), max_iter=5000) for lam in (0.2, 1.0)]
    assert torch.allclose(W, HAND_W[:2], atol=1e-4)
