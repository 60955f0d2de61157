"""The exact working-set solver of lasso_fista (block principal pivoting) and its fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from clapnb.decompose import duality_gap, lasso_fista, lasso_sklearn, objective


def correlated(n=6, v=160, d=48, decay=1.5, seed=0, noise=0.08):
    """Unit concepts whose singular values decay like i^-decay (strongly correlated, like
    CLAP word embeddings) and targets mixing 6 of them plus isotropic noise; float32."""
    g = torch.Generator().manual_seed(seed)
    U = torch.linalg.qr(torch.randn(v, d, generator=g, dtype=torch.float64))[0]
    Q = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    s = torch.arange(1, d + 1, dtype=torch.float64) ** -decay
    C = torch.nn.functional.normalize((U * s) @ Q.T, dim=1)
    W = torch.zeros(n, v, dtype=torch.float64)
    for i in range(n):
        W[i, torch.randperm(v, generator=g)[:6]] = torch.rand(6, generator=g, dtype=torch.float64)
    Z = torch.nn.functional.normalize(W @ C, dim=1) * (1 - noise) ** 0.5 \
        + noise ** 0.5 * torch.nn.functional.normalize(torch.randn(n, d, generator=g,
                                                                   dtype=torch.float64), dim=1)
    return C.float(), torch.nn.functional.normalize(Z, dim=1).float()


def kkt_violation(C, Z, W, lam):
    """Largest breach of the optimality conditions (float64): |g_j - lam| on the support,
    g_j - lam off it, with g = 2 C (z - C^T w)."""
    C, Z, W, lam = C.double(), Z.double(), W.double(), lam.double()[:, None]
    g = 2 * (Z - W @ C) @ C.T
    return float(torch.where(W > 0, (g - lam).abs(), (g - lam).clamp(min=0)).max())


def test_pivoting_solves_the_small_problems_exactly():
    from clapnb.decompose import _pivot
    # well-conditioned blocks: pivoting ends with the exact optimum (no violation left)
    rng = np.random.default_rng(0)
    C = torch.from_numpy(rng.standard_normal((30, 60)))
    C = torch.nn.functional.normalize(C, dim=1)
    Z = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((5, 60))), dim=1)
    G = (C @ C.T).expand(5, 30, 30).contiguous()
    lam = torch.full((5,), 0.2, dtype=torch.float64)
    w0 = torch.zeros(5, 30, dtype=torch.float64)
    x, left, _ = _pivot(G, 2 * Z @ C.T, torch.ones(5, dtype=torch.float64), lam, w0,
                     torch.zeros(5, dtype=torch.float64), max_iter=40, rank=60)
    assert len(left) == 0
    assert (x >= 0).all() and (x > 0).any()
    assert kkt_violation(C, Z, x, lam) < 1e-12
    assert (duality_gap(C, Z, x, lam) < 1e-13).all()


def test_pivoting_starts_from_the_measured_point():
    from clapnb.decompose import _pivot
    # started at the optimum, with the correlations measured there, it returns it unchanged
    rng = np.random.default_rng(1)
    C = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((12, 20))), dim=1)
    Z = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((3, 20))), dim=1)
    lam = torch.full((3,), 0.1, dtype=torch.float64)
    W = lasso_fista(C, Z, lam, tol=1e-14)[0]
    r = Z - W @ C
    x, left, _ = _pivot((C @ C.T).expand(3, 12, 12).contiguous(), 2 * r @ C.T, (r * r).sum(dim=1),
                     lam, W, torch.full((3,), 1e-12, dtype=torch.float64), max_iter=5, rank=20)
    assert len(left) == 0 and torch.equal(x, W)


def test_passive_solve_packs_each_samples_passive_set():
    from clapnb.decompose import _passive_solve
    rng = np.random.default_rng(2)
    A = torch.from_numpy(rng.standard_normal((3, 6, 9)))
    G = A @ A.transpose(1, 2)                                  # positive definite
    c = torch.from_numpy(rng.standard_normal((3, 6)))
    passive = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0]]).bool()
    x = _passive_solve(G, c, passive)
    for i in range(3):
        P = passive[i]
        expected = torch.zeros(6, dtype=torch.float64)
        if P.any():
            expected[P] = torch.linalg.solve(G[i][P][:, P], c[i][P])
        assert torch.allclose(x[i], expected, atol=1e-10)
    # exact duplicates make a block singular: a tiny ridge keeps the answer finite
    dup = torch.ones(1, 2, 2, dtype=torch.float64)
    x = _passive_solve(dup, torch.tensor([[0.7, 0.7]], dtype=torch.float64),
                       torch.ones(1, 2, dtype=torch.bool))
    assert torch.isfinite(x).all() and torch.allclose(x.sum(), torch.tensor(0.7, dtype=x.dtype),
                                                      atol=1e-6)


def test_float32_correlated_dictionary_is_certified():
    # near-duplicate concepts (singular values decaying like i^-1.5) at a small lam: the
    # working-set problems start from what the float32 check measured, so rounding cannot
    # keep the gap above tol; the result matches scikit-learn's objective
    C, Z = correlated()
    lam = torch.full((len(Z),), 2e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no "did not reach tol"
        W, gap = lasso_fista(C, Z, lam, tol=2e-6)
    assert (gap <= 2e-6).all()
    assert (W > 0).sum(dim=1).float().mean() > 10
    assert torch.allclose(duality_gap(C, Z, W, lam), gap, atol=2e-7)
    W_ref = lasso_sklearn(C, Z, lam, tol=2e-6, progress=False)
    f, f_ref = objective(C, Z, W, lam), objective(C, Z, W_ref, lam)
    assert ((f - f_ref) / f_ref).abs().max() < 1e-4


def test_more_concepts_than_dimensions_fall_back_to_fista():
    from clapnb import decompose as dm
    # 8 dimensions, 40 concepts and a small lam: the support fills the space and the blocks
    # pivoting would need are singular; those samples are handed to FISTA, which finishes
    rng = np.random.default_rng(4)
    C = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((40, 8))), dim=1)
    Z = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((4, 8))), dim=1)
    lam = torch.full((4,), 1e-2, dtype=torch.float64)
    calls = []
    fista = dm._fista
    try:
        dm._fista = lambda *a, **k: calls.append(len(a[0])) or fista(*a, **k)
        W, gap = lasso_fista(C, Z, lam, tol=1e-8, working_set=40)
    finally:
        dm._fista = fista
    assert calls and (gap <= 1e-8).all()
    assert kkt_violation(C, Z, W, lam) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_the_batch(dtype):
    C, Z = correlated(n=9, seed=4)
    C, Z = C.to(dtype), Z.to(dtype)
    lam = torch.full((9,), 5e-3, dtype=dtype)
    W, gap = lasso_fista(C, Z, lam, tol=1e-6)
    W3, gap3 = lasso_fista(C, Z, lam, tol=1e-6, batch_size=3)
    assert W.dtype == dtype and (gap <= 1e-6).all() and (gap3 <= 1e-6).all()
    assert torch.allclose(objective(C, Z, W, lam), objective(C, Z, W3, lam), rtol=1e-5)
