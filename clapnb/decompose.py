"""Sparse concept decompositions of CLAP embeddings (SpLiCE, applied to audio).

An audio embedding ``z`` (D,) is rewritten as a sparse, non-negative combination
of the text embeddings of a vocabulary of concepts, the rows of ``C`` (V, D)::

    w* = argmin_{w >= 0}  ||C^T w - z||^2 + lam * ||w||_1          (1)

and the reconstruction ``C^T w*`` is used wherever the dense embedding was.
Everything here is written with embeddings as rows, so a batch is ``Z (N, D)``,
the weights are ``W (N, V)`` and the reconstructions are ``W @ C (N, D)``.

**lam convention.** ``lam`` is the weight of the L1 term in (1), as in the
SpLiCE code. scikit-learn's ``Lasso`` minimises
``1/(2 n_samples) ||y - X w||^2 + alpha ||w||_1`` and here ``n_samples = D``
(the embedding dimensions play the role of samples), so
``alpha = lam / (2 D)`` gives the same minimiser. ``w = 0`` is optimal as soon as
``lam >= max_j 2 c_j . z``.

**Preparation (SpLiCE's, on by default: ``center=True``).** Concepts and audio
are normalised; the concept mean (over the vocabulary) is subtracted from the
concepts and the audio mean (over a reference set of audio embeddings) from the
audio, and both are renormalised. After solving, the reconstruction is mapped
back: ``normalize(|z - mu| * normalize(W @ C) + mu)``. Restoring the length
``|z - mu|`` makes a perfect decomposition give back exactly ``z``; SpLiCE adds
``mu`` to the unit-norm reconstruction, which does not round-trip.

**Solvers** (same objective, same ``lam``):

* ``"sklearn"``: the reference, ``Lasso(positive=True, fit_intercept=False)``
  fitted sample by sample, as the paper did (slow: a Python loop).
* ``"fista"``: batched, in torch, on CPU or GPU. A working-set method: each
  round keeps, per sample, the concepts that are in the support or violate the
  optimality conditions most, solves that small problem exactly for the whole
  batch (block principal pivoting: a few batched Cholesky solves; FISTA with
  adaptive restart where pivoting stalls), and checks the result against the
  full vocabulary with the duality gap. Both solvers stop when the duality gap is
  below ``tol * |z|^2`` (sklearn gets its own ``tol = tol / 2``, because its
  objective is half of ours).

Usage::

    decomposer = ConceptDecomposer(concept_emb, vocab.words, audio_mean=embedding_mean(ref))
    dec = decomposer(audio_emb, lam=0.25)        # or target_l0=10
    dec.top(5, i=0)                              # [('dog', 0.31), ('bark', 0.2), ...]
    dec.reconstruction                           # (N, D), use instead of audio_emb

or in one call: ``decompose(audio_emb, concept_emb, concepts, lam=0.25)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from clapnb.settings import default_device, progress_bar

Array = np.ndarray | torch.Tensor

#: the L1 weight of a decomposition when none is given: 0.25, the value of SpLiCE's README
#: examples (its code's own default, SPLICE(l1_penalty=...), is 0.01)
DEFAULT_LAM = 0.25
#: smallest lam solved: near lam = 0 float32 rounding spoils the duality-gap certificate
MIN_LAM = 1e-3
#: pivoting steps per working-set round before FISTA takes over (real problems need < 20)
_PIVOT_STEPS = 40
#: concepts a pivoting step may add to a passive set, once additions overshoot
_MAX_ADD = 8
#: the solvers :func:`decompose` accepts
SOLVERS = ("fista", "sklearn")


@dataclass
class Decomposition:
    """Sparse concept decompositions of N embeddings over a vocabulary of V concepts.

    All tensors are float32 (``l0`` int64) on the device the decomposer runs on.

    weights: ``(N, V)`` non-negative, mostly zero (:meth:`sparse_weights` keeps the non-zeros).
    concepts: the V concept names, in the column order of ``weights``.
    lam: ``(N,)`` the L1 weight used for each sample.
    l0: ``(N,)`` number of concepts with a non-zero weight.
    cosine: ``(N,)`` cosine similarity of each reconstruction with its embedding.
    reconstruction: ``(N, D)`` unit-norm reconstructions, in the original space.
    centered_norm: ``(N,)`` ``|z - audio_mean|`` of each input (1 without centering).
    audio_mean: ``(D,)`` the audio mean that was subtracted (zeros without centering).
        With ``centered_norm`` it maps edited weights back:
        ``decomposer.reconstruct(weights, dec.centered_norm, dec.audio_mean)``.
    gap: ``(N,)`` duality gap reached (an upper bound on the objective's distance
        to the optimum, relative to ``|z|^2 = 1``).
    """

    weights: torch.Tensor
    concepts: list[str]
    lam: torch.Tensor
    l0: torch.Tensor
    cosine: torch.Tensor
    reconstruction: torch.Tensor
    centered_norm: torch.Tensor
    audio_mean: torch.Tensor
    gap: torch.Tensor

    def __len__(self) -> int:
        return self.weights.shape[0]

    def __repr__(self) -> str:
        return (f"Decomposition({len(self)} embeddings over {len(self.concepts)} concepts: "
                f"mean l0 {self.l0.float().mean():.1f}, "
                f"mean cosine {self.cosine.mean():.3f})")

    def top(self, k: int = 10, i: int = 0) -> list[tuple[str, float]]:
        """The (at most) k largest non-zero weights of sample i: ``[(concept, weight), ...]``."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not -len(self) <= i < len(self):
            raise IndexError(f"sample {i} out of range: this decomposition has {len(self)} samples")
        w = self.weights[i]
        values, idx = w.topk(min(k, w.numel()))
        return [(self.concepts[j], v) for j, v in zip(idx.tolist(), values.tolist()) if v > 0]

    def sparse_weights(self) -> torch.Tensor:
        """``weights`` as a sparse (COO) tensor: only the non-zeros are kept."""
        return self.weights.to_sparse()


@dataclass
class PreparedAudio:
    """Audio embeddings after SpLiCE's preparation.

    embeddings: ``(N, D)`` the inputs, normalised.
    target: ``(N, D)`` unit-norm vectors the solvers decompose: ``(z - mean) / |z - mean|``.
    centered_norm: ``(N,)`` ``|z - mean|``.
    mean: ``(D,)`` the audio mean (zeros without centering, and then target = embeddings).
    """

    embeddings: torch.Tensor
    target: torch.Tensor
    centered_norm: torch.Tensor
    mean: torch.Tensor


# ---------------------------------------------------------------------------------
# Input checks and SpLiCE's preparation
# ---------------------------------------------------------------------------------
def _as_matrix(x: Array, what: str, device: torch.device) -> torch.Tensor:
    """numpy or torch ``(N, D)`` (or ``(D,)``) -> float32 ``(N, D)`` on ``device``, checked."""
    if not isinstance(x, (np.ndarray, torch.Tensor)):
        raise TypeError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")
    t = torch.as_tensor(x).detach().to(device=device, dtype=torch.float32)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2:
        raise ValueError(f"{what} must be (N, D) or (D,), got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(t.shape)})")
    bad = ~torch.isfinite(t).all(dim=1)
    if bad.any():
        rows = bad.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what} contains NaN or inf (rows {rows}...); "
                         "recompute those embeddings or drop them")
    zero = t.norm(dim=1) == 0
    if zero.any():
        rows = zero.nonzero().flatten()[:5].tolist()
        raise ValueError(f"{what} has all-zero rows {rows}...; an embedding needs a direction")
    return t


def embedding_mean(embeddings: Array) -> torch.Tensor:
    """Mean of the normalised rows of ``(N, D)`` embeddings -> ``(D,)`` (on their device).

    SpLiCE's ``image_mean``: pass the mean of a reference set of audio
    embeddings as ``audio_mean``.
    """
    device = embeddings.device if isinstance(embeddings, torch.Tensor) else torch.device("cpu")
    return F.normalize(_as_matrix(embeddings, "embeddings", device), dim=1).mean(dim=0)


def _check_lam(lam: float | Array, n: int, device: torch.device) -> torch.Tensor:
    lam_t = torch.as_tensor(lam, dtype=torch.float32).flatten().to(device)
    if lam_t.numel() not in (1, n):
        raise ValueError(f"lam must be one number or one per sample ({n}), got {lam_t.numel()}")
    if not torch.isfinite(lam_t).all() or (lam_t < 0).any():
        raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    return lam_t.clamp(min=MIN_LAM).expand(n).clone()


# ---------------------------------------------------------------------------------
# The decomposer
# ---------------------------------------------------------------------------------
class ConceptDecomposer:
    """Holds a prepared concept dictionary so repeated decompositions reuse it.

    Args:
        concept_emb: ``(V, D)`` text embeddings of the concepts (numpy or torch).
        concepts: the V concept names.
        audio_mean: ``(D,)`` mean audio embedding of a reference set (see
            :func:`embedding_mean`). ``None``: each call uses the mean of the
            batch it is given (which then needs at least 2 embeddings).
        center: SpLiCE's centering (see the module docstring). ``False`` only
            normalises.
        device: ``None`` means CUDA when available, else CPU.

    Attributes: ``dictionary`` ``(V, D)`` the prepared unit-norm concept rows the
    solvers use; ``concept_mean`` ``(D,)`` (zeros without centering).
    """

    def __init__(self, concept_emb: Array, concepts: Sequence[str], audio_mean: Array | None = None,
                 center: bool = True, device: str | torch.device | None = None):
        self.device = default_device(device)
        self.center = center
        if isinstance(concepts, str):
            raise TypeError("concepts must be a list of names, not one string")
        self.concepts = [str(c) for c in concepts]
        if len(self.concepts) == 0:
            raise ValueError("the vocabulary is empty: pass at least one concept")
        C = F.normalize(_as_matrix(concept_emb, "concept_emb", self.device), dim=1)
        if C.shape[0] != len(self.concepts):
            raise ValueError(f"{C.shape[0]} concept embeddings but {len(self.concepts)} concept "
                             "names; pass one embedding row per concept")
        self.concept_mean = C.mean(dim=0) if center else torch.zeros_like(C[0])
        if center:
            if C.shape[0] < 2:
                raise ValueError("centering needs at least 2 concepts (one concept minus the "
                                 "concept mean is zero); add concepts or pass center=False")
            C = C - self.concept_mean
            if (C.norm(dim=1) < 1e-6).any():
                raise ValueError("after subtracting the concept mean some concepts are zero "
                                 "(all concepts identical?); pass center=False")
        self.dictionary = F.normalize(C, dim=1)
        self.audio_mean = None
        if audio_mean is not None:
            self.audio_mean = self._check_mean(audio_mean)
        self._gram: torch.Tensor | None = None

    @property
    def vocab_size(self) -> int:
        return self.dictionary.shape[0]

    @property
    def embed_dim(self) -> int:
        return self.dictionary.shape[1]

    @property
    def gram(self) -> torch.Tensor:
        """``(V, V)`` ``dictionary @ dictionary.T``, computed once (V^2 floats)."""
        if self._gram is None:
            self._gram = self.dictionary @ self.dictionary.T
        return self._gram

    def _check_mean(self, mean: Array) -> torch.Tensor:
        mean = torch.as_tensor(mean).detach().to(self.device, torch.float32).flatten()
        if mean.numel() != self.embed_dim:
            raise ValueError(f"audio_mean has {mean.numel()} values but the embeddings are "
                             f"{self.embed_dim}-d")
        if not torch.isfinite(mean).all():
            raise ValueError("audio_mean contains NaN or inf")
        return mean

    # -- preparation ----------------------------------------------------------------
    def prepare(self, audio_emb: Array, audio_mean: Array | None = None) -> PreparedAudio:
        """Normalise ``(N, D)`` audio embeddings and, with centering, subtract the audio
        mean (``audio_mean``, else the decomposer's, else the batch mean) and renormalise."""
        z = F.normalize(_as_matrix(audio_emb, "audio_emb", self.device), dim=1)
        if z.shape[1] != self.embed_dim:
            raise ValueError(f"audio embeddings are {z.shape[1]}-d but concept embeddings are "
                             f"{self.embed_dim}-d; embed both with the same model")
        if not self.center:
            return PreparedAudio(z, z, torch.ones(len(z), device=self.device),
                                 torch.zeros(self.embed_dim, device=self.device))
        if audio_mean is not None:
            mean = self._check_mean(audio_mean)
        elif self.audio_mean is not None:
            mean = self.audio_mean
        elif len(z) > 1:
            mean = z.mean(dim=0)
        else:
            raise ValueError("centering needs an audio mean, and one embedding is its own mean: "
                             "pass audio_mean=embedding_mean(reference_embeddings) or center=False")
        norm = (z - mean).norm(dim=1)
        if (norm < 1e-6).any():
            raise ValueError("an audio embedding equals the audio mean, so centering leaves "
                             "nothing to decompose; pass a reference audio_mean")
        return PreparedAudio(z, (z - mean) / norm[:, None], norm, mean)

    def reconstruct(self, weights: Array, centered_norm: Array | None = None,
                    audio_mean: Array | None = None) -> torch.Tensor:
        """Weights ``(N, V)`` -> unit-norm reconstructions ``(N, D)`` in the original space:
        ``normalize(centered_norm * normalize(W @ C) + audio_mean)``.

        Edit a decomposition's weights (e.g. zero a concept) and pass them with its
        ``centered_norm`` and ``audio_mean``. ``centered_norm=None`` uses 1 (SpLiCE's
        formula); ``audio_mean=None`` uses the decomposer's.
        """
        weights = torch.as_tensor(weights).to(self.device, torch.float32)
        recon = F.normalize(weights @ self.dictionary, dim=1)
        if not self.center:
            return recon
        if audio_mean is None and self.audio_mean is None:
            raise ValueError("this decomposer has no audio_mean; pass the one used to decompose "
                             "(Decomposition.audio_mean)")
        mean = self.audio_mean if audio_mean is None else self._check_mean(audio_mean)
        scale = 1.0 if centered_norm is None else \
            torch.as_tensor(centered_norm).to(self.device, torch.float32)[:, None]
        return F.normalize(scale * recon + mean, dim=1)

    # -- decomposing ----------------------------------------------------------------
    def __call__(self, audio_emb: Array, lam: float | Array | None = None,
                 target_l0: int | None = None, solver: str = "fista",
                 audio_mean: Array | None = None, tol: float = 1e-5, max_iter: int = 1000,
                 batch_size: int | None = None, progress: bool = True) -> Decomposition:
        """Decompose ``(N, D)`` audio embeddings; see :func:`decompose` for the arguments."""
        if solver not in SOLVERS:
            raise ValueError(f"unknown solver {solver!r}; choose one of {SOLVERS}")
        if target_l0 is not None and lam is not None:
            raise ValueError("give either lam or target_l0, not both")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}")
        audio = self.prepare(audio_emb, audio_mean)
        options = dict(solver=solver, tol=tol, max_iter=max_iter, batch_size=batch_size)
        if target_l0 is not None:
            if isinstance(target_l0, bool) or int(target_l0) != target_l0 or target_l0 < 1:
                raise ValueError(f"target_l0 must be a positive integer, got {target_l0!r}")
            if target_l0 > self.vocab_size:
                raise ValueError(f"target_l0={target_l0} is larger than the vocabulary "
                                 f"({self.vocab_size} concepts); ask for fewer concepts")
            W, lam_t, gap = self._solve_target(audio.target, int(target_l0), progress, **options)
        else:
            lam_t = _check_lam(DEFAULT_LAM if lam is None else lam, len(audio.target), self.device)
            W, gap = self._solve(audio.target, lam_t, progress=progress, **options)
        recon = self.reconstruct(W, audio.centered_norm, audio.mean)
        return Decomposition(weights=W, concepts=self.concepts, lam=lam_t,
                             l0=(W > 0).sum(dim=1), cosine=(recon * audio.embeddings).sum(dim=1),
                             reconstruction=recon, centered_norm=audio.centered_norm,
                             audio_mean=audio.mean, gap=gap)

    def _solve(self, target: torch.Tensor, lam: torch.Tensor, solver: str, tol: float,
               max_iter: int, batch_size: int | None, progress: bool,
               init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Solve (1) for every row of ``target``: weights ``(N, V)``, duality gaps ``(N,)``."""
        if solver == "sklearn":
            W = lasso_sklearn(self.dictionary, target, lam, tol=tol, progress=progress)
            return W, duality_gap(self.dictionary, target, W, lam)
        return lasso_fista(self.dictionary, target, lam, gram=self.gram, tol=tol,
                           max_iter=max_iter, init=init, batch_size=batch_size)

    def _solve_target(self, target: torch.Tensor, k: int, progress: bool, steps: int = 40,
                      **options) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per sample, find lam with l0 == k: halve lam from ``lam_max`` (where l0 = 0)
        until l0 >= k, then bisect on log(lam) until l0 == k or the bracket is < 0.1 %.

        Keeps, per sample, the solution whose l0 is closest to k. Each step solves
        only the samples still searching, warm-started from the previous step, with
        ``tol / 10`` so that small weights are counted reliably.
        """
        options["tol"] = options["tol"] / 10
        n = len(target)
        lam_max = (2 * target @ self.dictionary.T).max(dim=1).values.clamp(min=2 * MIN_LAM)
        lo = torch.full((n,), -torch.inf, device=self.device)    # log lam with l0 > k
        hi = torch.log(lam_max)                                   # log lam with l0 < k
        best_w = torch.zeros(n, self.vocab_size, device=self.device)
        best_lam, best_gap = lam_max.clone(), torch.zeros(n, device=self.device)
        best_err = torch.full((n,), k, device=self.device)
        todo = torch.arange(n, device=self.device)
        W = torch.zeros(n, self.vocab_size, device=self.device)
        for _ in progress_bar(range(steps), desc=f"searching lam for l0={k}", disable=not progress,
                      leave=False):
            log_lam = torch.where(lo[todo].isinf(), hi[todo] - math.log(2),
                                  (lo[todo] + hi[todo]) / 2).clamp(min=math.log(MIN_LAM))
            lam = log_lam.exp()
            init = None if options["solver"] == "sklearn" else W[todo]
            w, gap = self._solve(target[todo], lam, progress=False, init=init, **options)
            W[todo] = w
            l0 = (w > 0).sum(dim=1)
            err = (l0 - k).abs()
            better = err < best_err[todo]
            rows = todo[better]
            best_w[rows], best_lam[rows], best_gap[rows] = w[better], lam[better], gap[better]
            best_err[rows] = err[better]
            lo[todo] = torch.where(l0 > k, log_lam, lo[todo])
            hi[todo] = torch.where(l0 < k, log_lam, hi[todo])
            searching = (l0 != k) & (hi[todo] - lo[todo] > 1e-3) & (lam > MIN_LAM)
            todo = todo[searching]
            if len(todo) == 0:
                break
        missed = best_err > 0
        if missed.any():
            warnings.warn(f"target_l0={k}: {int(missed.sum())} of {n} samples got a different "
                          f"number of concepts (up to {int(best_err.max())} off); l0 is not "
                          "reachable exactly for every sample", stacklevel=3)
        return best_w, best_lam, best_gap


def decompose(audio_emb: Array, concept_emb: Array, concepts: Sequence[str],
              lam: float | Array | None = None, target_l0: int | None = None,
              solver: str = "fista", center: bool = True, audio_mean: Array | None = None,
              device: str | torch.device | None = None, **kwargs) -> Decomposition:
    """Sparse non-negative decomposition of audio embeddings over concept embeddings.

    Args:
        audio_emb: ``(N, D)`` (or ``(D,)``) audio embeddings, numpy or torch.
        concept_emb: ``(V, D)`` text embeddings of the concepts.
        concepts: the V concept names.
        lam: L1 weight in ``||C^T w - z||^2 + lam ||w||_1`` (one number or one per
            sample; default 0.25, SpLiCE's; values below ``MIN_LAM`` = 1e-3 are raised to it).
            sklearn's ``alpha`` is ``lam / (2 D)``.
        target_l0: instead of ``lam``: find, per sample, the ``lam`` that keeps
            about ``target_l0`` concepts (bisection on log lam).
        solver: ``"fista"`` (batched, torch) or ``"sklearn"`` (per-sample reference).
        center: SpLiCE's centering (module docstring).
        audio_mean: ``(D,)`` reference audio mean for centering (default: the batch mean).
        device: ``None`` means CUDA when available, else CPU.
        **kwargs: ``tol`` (stop when the duality gap is below ``tol |z|^2``; default
            1e-5), ``max_iter`` (FISTA iterations per round, default 1000),
            ``batch_size`` (samples solved together), ``progress`` (progress bars).
    """
    decomposer = ConceptDecomposer(concept_emb, concepts, audio_mean=audio_mean, center=center,
                                   device=device)
    return decomposer(audio_emb, lam=lam, target_l0=target_l0, solver=solver, **kwargs)


@dataclass(eq=False)
class ConceptSpace:
    """A vocabulary seen through one model, bound in one object (SpLiCE's ``SPLICE``):
    the words, their text embeddings and the audio mean that centres decompositions.

    words: the V concept words, row by row.
    embeddings: ``(V, D)`` their text embeddings (numpy or torch).
    audio_mean: ``(D,)`` mean audio embedding of a reference set (:func:`embedding_mean`),
        or ``None``: each decomposition then centres on the batch it is given.
    name: where it came from, e.g. ``"pruned @ tiny"``.
    dropped: vocabulary words left out (e.g. words the model never learned).

    Works on precomputed embeddings: build one from any arrays, or from a model and a
    vocabulary name with :func:`clapnb.concepts.concept_space`. Then
    ``space.decompose(audio_emb, lam=0.25)``; :meth:`decomposer` keeps the prepared
    dictionary for repeated calls.
    """

    words: list[str]
    embeddings: Array
    audio_mean: Array | None = None
    name: str = ""
    dropped: tuple[str, ...] = ()
    _decomposers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.words, str):
            raise TypeError("words must be a list of concept words, not one string")
        self.words = [str(w) for w in self.words]
        if np.ndim(self.embeddings) != 2 or len(self.embeddings) != len(self.words):
            raise ValueError(f"{len(self.words)} words need a ({len(self.words)}, D) embedding "
                             f"matrix, got shape {tuple(np.shape(self.embeddings))}")

    def __len__(self) -> int:
        return len(self.words)

    def __repr__(self) -> str:
        mean = "with" if self.audio_mean is not None else "without"
        return (f"ConceptSpace({self.name or 'unnamed'}: {len(self)} words, "
                f"{np.shape(self.embeddings)[1]}-d, {mean} audio mean)")

    def with_audio_mean(self, reference_emb: Array) -> "ConceptSpace":
        """A copy that centres on the mean of ``reference_emb`` ``(N, D)`` audio embeddings."""
        return ConceptSpace(self.words, self.embeddings, embedding_mean(reference_emb), self.name,
                            self.dropped)

    def decomposer(self, center: bool = True,
                   device: str | torch.device | None = None) -> ConceptDecomposer:
        """The :class:`ConceptDecomposer` of this space, built once per (center, device)."""
        key = (center, str(default_device(device)))
        if key not in self._decomposers:
            self._decomposers[key] = ConceptDecomposer(self.embeddings, self.words,
                                                       audio_mean=self.audio_mean, center=center,
                                                       device=device)
        return self._decomposers[key]

    def decompose(self, audio_emb: Array, **options) -> Decomposition:
        """Decompose ``(N, D)`` audio embeddings over this space (options as in :func:`decompose`,
        except ``center`` and ``device``: use :meth:`decomposer` for those)."""
        return self.decomposer()(audio_emb, **options)


# ---------------------------------------------------------------------------------
# Solvers: both minimise ||C^T w - z||^2 + lam ||w||_1 over w >= 0, row by row
# ---------------------------------------------------------------------------------
def objective(C: torch.Tensor, Z: torch.Tensor, W: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """``(N,)`` values of ``||W_i @ C - z_i||^2 + lam_i ||W_i||_1``."""
    r = W @ C - Z
    return (r * r).sum(dim=1) + lam * W.abs().sum(dim=1)


def duality_gap(C: torch.Tensor, Z: torch.Tensor, W: torch.Tensor, lam: torch.Tensor
                ) -> torch.Tensor:
    """``(N,)`` duality gaps of (1) at ``W``: primal minus the best dual value we can certify.

    With the residual ``r = z - C^T w`` and its correlations ``g = 2 C r``, the
    point ``theta = s r``, ``s = min(1, lam / max_j g_j)``, is dual-feasible
    (``2 C theta <= lam``); the gap then equals
    ``(1 - s)^2 |r|^2 + sum_j w_j (lam - s g_j)`` (>= 0, and 0 exactly at the optimum).
    """
    r = Z - W @ C
    return _gap(W, 2 * r @ C.T, (r * r).sum(dim=1), lam)


def _gap(w: torch.Tensor, g: torch.Tensor, rr: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The gap formula above from weights ``w``, correlations ``g = 2 C r`` and ``|r|^2``."""
    top = g.max(dim=1).values
    s = torch.where(top > lam, lam / top.clamp(min=1e-30), torch.ones_like(top))
    return ((1 - s) ** 2 * rr + (w * (lam[:, None] - s[:, None] * g)).sum(dim=1)).clamp(min=0)


def lasso_sklearn(C: torch.Tensor, Z: torch.Tensor, lam: torch.Tensor, tol: float = 1e-5,
                  max_iter: int = 100_000, progress: bool = True) -> torch.Tensor:
    """Reference solver: scikit-learn's ``Lasso`` per sample (float64, no warm start).

    ``alpha = lam / (2 D)``; sklearn's objective is ours divided by ``2 D`` and its
    ``tol`` is a duality gap relative to ``|z|^2`` in that half scale, so ``tol / 2``
    stops it where :func:`lasso_fista` stops. Returns ``(N, V)`` on ``C.device``.
    """
    from sklearn.linear_model import Lasso

    X = np.asfortranarray(C.T.double().cpu().numpy())          # (D, V): D "samples"
    Y, lams = Z.double().cpu().numpy(), lam.clamp(min=MIN_LAM).double().cpu().numpy()
    W = np.zeros((len(Y), C.shape[0]))
    for i in progress_bar(range(len(Y)), desc="sklearn Lasso", disable=not progress, leave=False):
        model = Lasso(alpha=lams[i] / (2 * X.shape[0]), positive=True, fit_intercept=False,
                      tol=tol / 2, max_iter=max_iter)
        model.fit(X, Y[i])
        W[i] = model.coef_
    return torch.from_numpy(W).to(C.device, C.dtype)


def lasso_fista(C: torch.Tensor, Z: torch.Tensor, lam: torch.Tensor,
                gram: torch.Tensor | None = None, tol: float = 1e-5, max_iter: int = 1000,
                max_rounds: int = 15, working_set: int = 40, init: torch.Tensor | None = None,
                batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched non-negative lasso (1) by working sets + FISTA, on ``C.device``.

    Args:
        C: ``(V, D)`` dictionary rows; Z: ``(N, D)`` targets; lam: ``(N,)`` (at
            least ``MIN_LAM``).
        gram: ``C @ C.T`` if already computed.
        tol: stop a sample once its duality gap is ``<= tol * |z|^2``.
        max_iter: pivoting steps (at most 40) and FISTA iterations per round (a
            safeguard).
        max_rounds: working-set rounds (a safeguard; a warning names the samples
            that did not reach ``tol``).
        working_set: concepts per sample in the first round; later rounds keep
            the support and add at least as many of the worst violators.
        init: ``(N, V)`` warm start.
        batch_size: samples solved together (default 512 on CPU, where small
            blocks stay in cache, 4096 on GPU).

    Returns: weights ``(N, V)`` and duality gaps ``(N,)``.

    Why working sets: a dense first-order step (or an ADMM step, as in the
    SpLiCE code) costs two ``N x V x D`` products, and hundreds are needed; a
    round here costs about one, and the work in between only touches ``K x K``
    blocks of the Gram matrix (K ~ 1.5 x the support << V). The small problems
    are solved exactly by block principal pivoting (:func:`_pivot`): each step
    is one batched Cholesky solve on the concepts currently kept, and a handful
    of steps finish even the ill-conditioned problems of near-duplicate concepts
    (CLAP word embeddings) that first-order methods, and coordinate descent,
    crawl through. Each round's small problem is written around the weights the
    check measured, in float64, so float32 rounding cannot stall the gap. The
    optimality check (duality gap over the full vocabulary) decides convergence,
    so the working set is only a speed-up, never an approximation.
    """
    if working_set < 1:
        raise ValueError(f"working_set must be at least 1, got {working_set}")
    gram = C @ C.T if gram is None else gram
    lam = lam.clamp(min=MIN_LAM)
    batch_size = batch_size or (4096 if C.is_cuda else 512)
    with _one_cpu_thread(C.device):
        parts = [_lasso_fista_batch(C, gram, Z[s:s + batch_size], lam[s:s + batch_size],
                                    None if init is None else init[s:s + batch_size],
                                    tol, max_iter, max_rounds, working_set)
                 for s in range(0, len(Z), batch_size)]
    W, gap = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    unsolved = gap > tol * (Z * Z).sum(dim=1)
    if unsolved.any():
        warnings.warn(f"lasso_fista: {int(unsolved.sum())} of {len(Z)} samples did not reach "
                      f"tol={tol:g} within max_iter={max_iter} and max_rounds={max_rounds} "
                      f"(largest gap {float(gap.max()):.2g}); raise them, or use a larger tol "
                      "(float32 rounding can keep the gap above ~1e-7 sum(w), more when "
                      "concepts are nearly collinear; float64 inputs avoid it)", stacklevel=2)
    return W, gap


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run on one CPU thread: the solver's many small K x K products gain nothing from
    more, and on a busy machine extra threads made it 20-40x slower (measured)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _lasso_fista_batch(C: torch.Tensor, gram: torch.Tensor, Z: torch.Tensor, lam: torch.Tensor,
                       init: torch.Tensor | None, tol: float, max_iter: int, max_rounds: int,
                       working_set: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`lasso_fista` on one batch: weights ``(n, V)`` and duality gaps ``(n,)``."""
    n, V = len(Z), len(C)
    W = Z.new_zeros(n, V) if init is None else init.to(Z.dtype).clamp(min=0)
    b = Z @ C.T                                       # c_j . z, fixed
    zz = (Z * Z).sum(dim=1)
    gap = Z.new_empty(n)
    todo = torch.arange(n, device=C.device)
    max_add = None          # concepts a pivoting step may add: all, until they overshoot
    for rnd in range(max_rounds + 1):
        # full-vocabulary check: residual correlations g = 2 C r and the duality gap
        w = W[todo]
        if rnd == 0 and init is None:
            r, g = Z, 2 * b                                  # w = 0
        else:
            r = Z[todo] - torch.sparse.mm(w.to_sparse(), C)  # w has few non-zeros
            g = 2 * r @ C.T
        rr = (r * r).sum(dim=1)
        gap[todo] = _gap(w, g, rr, lam[todo])
        open_ = gap[todo] > tol * zz[todo]
        todo, w, g, rr = todo[open_], w[open_], g[open_], rr[open_]
        if len(todo) == 0 or rnd == max_rounds:
            break
        # working set: the support, then the concepts violating g_j <= lam the most
        # (at least one more than the support, or working_set=1 would never grow)
        support = w > 0
        n_support = int(support.sum(dim=1).max())
        k = min(V, max(working_set, n_support + (max(working_set, n_support) + 1) // 2))
        score = torch.where(support, torch.inf, g - lam[todo, None])
        idx = score.topk(k, dim=1).indices.sort(dim=1).values          # (n, k)
        ix = idx.to(_index_dtype(V * V))                  # int32 where it fits: half the traffic
        flat = (ix[:, :, None] * V + ix[:, None, :]).flatten()
        sub_gram = gram.flatten().index_select(0, flat).view(-1, k, k)    # (n, k, k)
        # solve the small problems exactly, starting from what this check measured
        w_ws, overshoot = _ws_solve(sub_gram, g.gather(1, idx), rr, lam[todo],
                                    w.gather(1, idx), tol * zz[todo], max_iter, C.shape[1],
                                    max_add)
        if overshoot > 0.1:   # correlated concepts: many that enter come straight back out
            max_add = _MAX_ADD
        W[todo] = torch.zeros_like(w).scatter_(1, idx, w_ws)
    return W, gap


def _ws_solve(G: torch.Tensor, g: torch.Tensor, rr: torch.Tensor, lam: torch.Tensor,
              w: torch.Tensor, tol: torch.Tensor, max_iter: int, rank: int,
              max_add: int | None = None) -> tuple[torch.Tensor, float]:
    """Solve the working-set problems of one round: weights ``(n, k)``, and the share of
    the first pivoting step's passive concepts that came out negative (see :func:`_pivot`).

    ``G (n, k, k)`` is the Gram block of each sample's working set, ``w (n, k)`` its
    current weights there, and ``g (n, k)`` (``2 C r``) and ``rr (n,)`` (``|r|^2``) the
    residual correlations and residual norm the full-vocabulary check measured at
    ``w``. The problem is written around ``w`` (``|r - C^T d|^2 + lam sum(w + d)``
    with ``d = x - w``): it starts from exactly what the check saw, so float32 rounding
    in ``c_j . z`` and ``|z|^2`` cannot keep the gap above ``tol`` round after round.
    Solved in float64 by block principal pivoting (:func:`_pivot`, a few batched
    Cholesky solves even for near-duplicate concepts), to ``tol / 4`` so that the
    float32 check agrees; FISTA (as before) takes over for any problem the pivoting has
    not finished within ``_PIVOT_STEPS`` steps, or whose passive set grew past ``rank``
    (the embedding dimension: such blocks are singular and pivoting can cycle on them).
    """
    dtype = w.dtype
    G, g, rr, lam, w, tol = (t.to(torch.float64) for t in (G, g, rr, lam, w, tol))
    x, left, overshoot = _pivot(G, g, rr, lam, w, tol / 4, min(max_iter, _PIVOT_STEPS), rank,
                                max_add)
    if len(left):
        G, w, g = G[left], w[left], g[left]
        b = _bmv(G, w) + g / 2                     # the same problem in _fista's form
        zz = rr[left] + (w * (b + g / 2)).sum(dim=1)
        x[left] = _fista(G, b, zz, lam[left], w, tol[left], max_iter)
    return x.to(dtype), overshoot


def _pivot(G: torch.Tensor, g: torch.Tensor, rr: torch.Tensor, lam: torch.Tensor,
           w: torch.Tensor, tol: torch.Tensor, max_iter: int, rank: int,
           max_add: int | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Block principal pivoting (Judice & Pires 1994; Kim & Park 2011) on ``n`` problems
    ``min x^T G x - 2 c^T x`` over ``x >= 0``, ``c = G w + (g - lam) / 2`` (:func:`_ws_solve`).

    Each step solves ``G_PP x_P = c_P`` on the passive sets P (:func:`_passive_solve`)
    and swaps into/out of P every concept that breaks the optimality conditions
    (``x_j < 0`` in P, ``y_j = (G x - c)_j < 0`` off it); after 3 swaps without fewer
    violations, only the last violator is swapped, which guarantees termination.
    ``max_add``: at most that many concepts enter P per step, those that violate most
    (on strongly correlated dictionaries most of a large batch comes straight back out,
    at the price of a larger block).
    A problem leaves once its gap (at ``x`` clamped to ``>= 0``) is ``<= tol`` or
    nothing is violated. Returns the weights ``(n, k)``, the rows that did not finish
    within ``max_iter`` steps or whose passive set outgrew ``rank`` (they keep ``w``), and
    the share of P that came out negative in the first step (0 if there was none).
    """
    n, k = w.shape
    out, rows = w.clone(), torch.arange(n, device=w.device)
    sel = rows.clone()                    # the rows of G still pivoting (G is compacted lazily)
    lam = lam[:, None]
    c = _bmv(G, w) + (g - lam) / 2
    passive = w > 0
    fewest = torch.full((n,), k + 1, device=w.device)
    chances = torch.full((n,), 3, device=w.device)
    position = torch.arange(1, k + 1, device=w.device)
    x, xc, y, gx, rrx = w, w, (lam - g) / 2, g, rr          # step 0: the start as it is
    given_up, overshoot = [], 0.0
    for step in range(max_iter + 1):
        if step > 0:
            x = _passive_solve(G, c, passive, sel)
            if step == 1:
                overshoot = float((passive & (x < 0)).sum() / passive.sum().clamp(min=1))
            xc = x.clamp(min=0)
            both = x.new_zeros(len(G), k, 2)
            both[sel] = torch.stack([x, xc], dim=2)
            Gx = torch.bmm(G, both)[sel]
            y = Gx[:, :, 0] - c
            gx = lam - 2 * (Gx[:, :, 1] - c)                  # 2 C r at xc
            rrx = rr - ((xc - w) * (g + gx)).sum(dim=1) / 2     # |r|^2 at xc
        violated = (passive & (x < 0)) | (~passive & (y < 0))
        done = _gap(xc, gx, rrx, lam[:, 0]) <= tol
        if step > 0:        # at the start the passive set's equations need not hold yet
            done |= ~violated.any(dim=1)
        if done.any():
            out[rows[done]] = xc[done]
            keep = ~done
            rows, sel, g, rr, lam, w, tol, c, passive, fewest, chances, violated, y = (
                t[keep] for t in (rows, sel, g, rr, lam, w, tol, c, passive, fewest, chances,
                                  violated, y))
        if len(rows) == 0 or step == max_iter:
            break
        count = violated.sum(dim=1)
        fewer = count < fewest
        fewest = torch.where(fewer, count, fewest)
        chances = torch.where(fewer, 3, chances - 1)
        last = (violated * position).argmax(dim=1, keepdim=True)
        swap = torch.where((chances >= 0)[:, None], violated,
                           torch.zeros_like(violated).scatter_(1, last, True))
        if max_add:
            add = swap & ~passive
            top = torch.where(add, -y, -torch.inf).topk(min(k, max_add), dim=1).indices
            swap = (swap & passive) | (torch.zeros_like(add).scatter_(1, top, True) & add)
        passive = passive ^ swap
        over = passive.sum(dim=1) > rank
        if over.any():
            given_up.append(rows[over])
            keep = ~over
            rows, sel, g, rr, lam, w, tol, c, passive, fewest, chances = (
                t[keep] for t in (rows, sel, g, rr, lam, w, tol, c, passive, fewest, chances))
            if len(rows) == 0:
                break
        if len(sel) < len(G) // 2:        # compact G once half of its rows are done
            G, sel = G[sel], torch.arange(len(sel), device=w.device)
    return out, torch.cat([rows, *given_up]), overshoot


def _passive_solve(G: torch.Tensor, c: torch.Tensor, passive: torch.Tensor,
                   sel: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` with ``G_PP x_P = c_P`` and ``x = 0`` off P, for each problem's passive set P
    (problem i uses ``G[sel[i]]``; default ``sel[i] = i``): one batched Cholesky on the
    passive blocks packed to the largest P (padded with the identity); a ridge of 1e-9
    where a block is not positive definite (duplicates)."""
    n, k = c.shape
    sel = torch.arange(n, device=c.device) if sel is None else sel
    size = passive.sum(dim=1)
    f = int(size.max()) if n else 0
    x = torch.zeros_like(c)
    if f == 0:
        return x
    if f == k and bool((size == k).all()):      # every concept passive: the blocks as they are
        order, m = torch.arange(k, device=c.device).expand(n, k), passive
        A = G if len(sel) == len(G) else G[sel]              # sel is increasing
    else:
        order = torch.argsort((~passive).to(torch.uint8), dim=1, stable=True)[:, :f]  # P first
        m = torch.arange(f, device=c.device) < size[:, None]
        o = order.to(_index_dtype(len(G) * k * k))
        flat = (sel.to(o.dtype) * (k * k))[:, None, None] + o[:, :, None] * k + o[:, None, :]
        A = G.reshape(-1).index_select(0, flat.flatten()).view(n, f, f)
        A.masked_fill_(~(m[:, :, None] & m[:, None, :]), 0)
        A.diagonal(dim1=1, dim2=2).masked_fill_(~m, 1)
    L, info = torch.linalg.cholesky_ex(A)
    bad = info > 0
    if bad.any():
        eye = torch.eye(f, dtype=A.dtype, device=A.device)
        L[bad] = torch.linalg.cholesky_ex(A[bad] + 1e-9 * eye)[0]
    xf = torch.cholesky_solve(c.gather(1, order).masked_fill(~m, 0)[:, :, None], L)[:, :, 0]
    return x.scatter_(1, order, xf.masked_fill(~m, 0).nan_to_num(0.0))


def _index_dtype(bound: int) -> torch.dtype:
    """int32 for flat indices below ``bound`` when they fit (index_select takes both)."""
    return torch.int32 if bound < 2 ** 31 else torch.int64


def _bmv(G: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(n, k, k) x (n, k) -> (n, k)`` as a batched matmul (for the larger blocks)."""
    return torch.bmm(G, x[:, :, None])[:, :, 0]


def _fista(G: torch.Tensor, b: torch.Tensor, zz: torch.Tensor, lam: torch.Tensor,
           w: torch.Tensor, tol: torch.Tensor, max_iter: int, check_every: int = 10,
           polish_every: int = 50) -> torch.Tensor:
    """FISTA with adaptive restart on ``n`` small problems at once.

    Minimises ``w^T G w - 2 b^T w + lam sum(w)`` (= (1) up to ``|z|^2``) over
    ``w >= 0``, with ``G (n, k, k)``, ``b (n, k)``, warm start ``w (n, k)``; a
    problem is done when its duality gap (restricted to these k concepts) is
    ``<= tol (n,)``, and leaves the batch. Returns the weights ``(n, k)``.
    """
    out, rows = w.clone(), torch.arange(len(w), device=w.device)
    lam = lam[:, None]
    # step 1/L with L = 2 lambda_max(G) <= 2 |G G|_F^(1/2): safe, and ~10 % above
    step = 1 / (2 * torch.linalg.matrix_norm(G @ G).sqrt().clamp(min=1e-12))[:, None]
    y, t = w, torch.ones_like(step)
    for it in range(1, max_iter + 1):
        grad = 2 * (_matvec(G, y) - b) + lam
        w_next = torch.relu(y - step * grad)
        t_next = (1 + torch.sqrt(1 + 4 * t * t)) / 2
        # restart the momentum of problems whose last step went uphill
        uphill = ((y - w_next) * (w_next - w)).sum(dim=1, keepdim=True) > 0
        t_next = torch.where(uphill, 1.0, t_next)
        y = w_next + (t - 1) / t_next * (w_next - w) * ~uphill
        w, t = w_next, t_next
        if it % check_every == 0:
            if it % polish_every == 0:
                # FISTA finds the support long before the weights: try the exact
                # minimiser on (a subset of) the current support, keep it where it
                # solves the problem
                x = _support_solve(G, b, lam, w)
                finished = (x >= 0).all(dim=1) & (_sub_gap(G, b, zz, lam, x) <= tol)
                w = torch.where(finished[:, None], x, w)
            done = _sub_gap(G, b, zz, lam, w) <= tol
            if done.any():
                out[rows[done]] = w[done]
                if done.all():
                    return out
                keep = ~done
                rows, G, b, zz, lam, w, y, t, step, tol = (
                    x[keep] for x in (rows, G, b, zz, lam, w, y, t, step, tol))
    out[rows] = w
    return out


def _sub_gap(G: torch.Tensor, b: torch.Tensor, zz: torch.Tensor, lam: torch.Tensor,
             w: torch.Tensor) -> torch.Tensor:
    """Duality gaps of the small problems of :func:`_fista` (``lam`` is ``(n, 1)``)."""
    Gw = _matvec(G, w)
    rr = zz - 2 * (b * w).sum(dim=1) + (w * Gw).sum(dim=1)            # |r|^2
    return _gap(w, 2 * (b - Gw), rr, lam[:, 0])


def _support_solve(G: torch.Tensor, b: torch.Tensor, lam: torch.Tensor, w: torch.Tensor,
                   passes: int = 3) -> torch.Tensor:
    """Minimiser of ``w^T G w - 2 b^T w + lam sum(w)`` on the support S of ``w``:
    solve ``G_SS x_S = b_S - lam / 2`` (batched Cholesky), drop the concepts that come
    out negative (e.g. one of two near-duplicates) and solve again, ``passes`` times."""
    eye = torch.eye(G.shape[1], dtype=G.dtype, device=G.device)
    x = w
    for _ in range(passes):
        m = (x > 0).to(G.dtype)
        # off the support the system is the identity; a tiny ridge keeps collinear
        # concepts solvable
        A = G * m[:, :, None] * m[:, None, :] + torch.diag_embed(1 - m) + 1e-6 * eye
        L, _ = torch.linalg.cholesky_ex(A)
        x = torch.cholesky_solve((m * (b - lam / 2))[:, :, None], L)[:, :, 0]
    return x


def _matvec(G: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(n, k, k) x (n, k) -> (n, k)``; faster on CPU than a batched matmul of tiny matrices."""
    return (G * x[:, None, :]).sum(dim=2)
