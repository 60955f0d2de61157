"""Sparse concept decompositions: both solvers, the SpLiCE preparation, target_l0, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clapnb.decompose import (ConceptDecomposer, Decomposition, decompose, duality_gap,
                              embedding_mean, lasso_fista, lasso_sklearn, objective)
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
    assert implicit.lam[0] == 0.25                  # SpLiCE's default lam


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
