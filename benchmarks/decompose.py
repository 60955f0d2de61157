"""The batched concept solver at the paper's sparsity, against its peers and the floor.

    python benchmarks/decompose.py [--dictionaries random1024,corr1024,tiny512] [--n 500]
                                   [--vocab-size 2000] [--target-l0 95] [--repeats 3]

Three dictionaries of ``--vocab-size`` concepts, ``--n`` targets each, one global lam
per dictionary chosen so that the mean l0 is about ``--target-l0`` (the paper keeps
90-100 concepts; lam is at least the solver's ``MIN_LAM`` = 1e-3, which on
``corr1024`` already keeps ~94):

* ``random1024``: random 1,024-d unit vectors, concepts and targets alike (the
  easy case for coordinate descent);
* ``corr1024``: 1,024-d unit vectors whose singular values decay like those of
  TinyCLAP's word embeddings: the baseline-vocabulary words TinyCLAP knows are
  embedded, centred and normalised as the decomposer does, and their singular
  values (by rank) are kept for the first half of the ranks and continued by the
  power law ``i^-a`` fitted to ranks 10 to half (extrapolated to rank 1,024);
  concepts are ``U diag(s) Q^T`` with random orthonormal ``U`` and ``Q``, rows
  normalised. Targets are sparse mixtures of 8 concepts plus 8 % (of the energy)
  isotropic noise, which gives them the share of energy in the dictionary's top
  singular directions that TinyCLAP's audio embeddings have in its word
  embeddings' (printed under ``corr1024_matched``);
* ``tiny512``: TinyCLAP's own 512-d text embeddings of the first ``--vocab-size``
  baseline-vocabulary words (it knows ~200 of them; the others are embedded from
  their spelling) and the audio embeddings of synthetic clips as targets.

Every solver gets the same prepared (centred) data, the same objective
``||C^T w - z||^2 + lam |w|_1`` and, where it has one, the same stopping rule:

* ours: ``lasso_fista`` on all targets, ``--repeats`` runs, median time;
* scikit-learn (the paper's solver): ``Lasso`` per target with ``tol / 2`` (its
  objective is half of ours), on ``--sklearn-n`` targets spread over the set (it
  takes a minute per target on ``corr1024`` here, seconds on ``tiny512``), timed in
  ``--repeats`` pieces interleaved with our runs and scaled to all targets by the
  per-target mean (it is a per-sample loop; the spread of targets is the error);
* SpLiCE's ADMM (``splice/admm.py``, written here in torch on the CPU): rho = 5, tol
  1e-6 and max_iter 2,000 as SpLiCE's model uses it, random initialisation, one
  Cholesky factor of ``2 C C^T + rho I``; per iteration x = that solve of
  ``2 C z_t + rho (z - u)``, z = max(x + u - lam / rho, 0), u += x - z, and it stops
  once every column's primal ``|x - z|`` and dual ``rho |z - z_old|`` residuals are
  below tol. Batched over all targets, as SpLiCE does: its time is the factorisation
  plus the iterations, each timed on all targets (``--admm-probe`` of them per
  repeat, interleaved), times the iterations one batch of ``--admm-n`` targets
  needs (it stops on its worst column, so all targets need at least as many; on the
  correlated dictionaries it runs to max_iter). Its product ``C z_t`` is hoisted
  out of the loop (SpLiCE recomputes it every iteration).
* the floor: the one product ``Z @ C.T`` (float32, ``--n`` x D by D x V) that any
  solver must do, median of 7, interleaved too.

torch (and sklearn's loop) run on ``--threads`` threads (default 1). The machine
may be shared: timings are interleaved and the load average is printed. The
last line printed is one JSON object: per dictionary under ``dictionaries``, the
headline fields ``speedup_vs_sklearn_<name>``, ``speedup_vs_admm_<name>``,
``floor_ratio_<name>`` (our time / the floor's), ``objective_rel_gap_max`` (over all
dictionaries, ours vs sklearn) and, as worst cases over the dictionaries, the
fields of one dictionary's report (``speedup_vs_sklearn``, ``support_jaccard``...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import numpy as np
import torch

from clapnb.decompose import MIN_LAM, ConceptDecomposer, lasso_fista, lasso_sklearn, objective

DICTIONARIES = ("random1024", "corr1024", "tiny512")


# ---------------------------------------------------------------------------------
# The three dictionaries
# ---------------------------------------------------------------------------------
def random_embeddings(n: int, vocab_size: int, dim: int = 1024, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Random unit vectors: ``n`` targets and ``vocab_size`` concepts."""
    g = torch.Generator().manual_seed(seed)
    concepts = torch.nn.functional.normalize(torch.randn(vocab_size, dim, generator=g), dim=1)
    audio = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    return audio.numpy(), concepts.numpy()


def _spectrum(emb: torch.Tensor) -> np.ndarray:
    """Singular values of embeddings prepared as the decomposer prepares concepts."""
    d = ConceptDecomposer(emb, [str(i) for i in range(len(emb))], device="cpu").dictionary
    s = torch.linalg.svdvals(d.double()).numpy()
    return s[s > 1e-6 * s[0]]


def known_word_embeddings(model) -> torch.Tensor:
    """TinyCLAP's embeddings of the baseline-vocabulary words it saw in training."""
    from clapnb.vocabulary import load_vocabulary

    return model.embed_text([w for w in load_vocabulary("baseline").words
                             if model.is_known(w)]).cpu()


def decay_like(s: np.ndarray, dim: int) -> tuple[np.ndarray, float]:
    """``dim`` singular values shaped like ``s`` (by rank, largest 1): ``s`` itself for
    the first half of its ranks, then the power law fitted to ranks 10 to half."""
    half = len(s) // 2
    ranks = np.arange(1, len(s) + 1)
    a = -np.polyfit(np.log(ranks[9:half]), np.log(s[9:half]), 1)[0]
    tail = s[half - 1] * (np.arange(half + 1, dim + 1) / half) ** -a
    return np.concatenate([s[:half], tail])[:dim] / s[0], float(a)


def correlated_embeddings(n: int, vocab_size: int, svals: np.ndarray, seed: int = 0,
                          mix: int = 8, noise: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Concepts ``U diag(s) Q^T`` (rows normalised) and targets: ``mix`` concepts with
    random weights plus isotropic noise carrying ``noise`` of the energy."""
    g = torch.Generator().manual_seed(seed)
    dim = len(svals)
    U = torch.linalg.qr(torch.randn(vocab_size, dim, generator=g, dtype=torch.float64))[0]
    Q = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))[0]
    concepts = torch.nn.functional.normalize((U * torch.from_numpy(svals)) @ Q.T, dim=1).float()
    W = torch.zeros(n, vocab_size)
    for i in range(n):
        W[i, torch.randperm(vocab_size, generator=g)[:mix]] = torch.rand(mix, generator=g)
    clean = torch.nn.functional.normalize(W @ concepts, dim=1)
    iso = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    audio = torch.nn.functional.normalize(math.sqrt(1 - noise) * clean + math.sqrt(noise) * iso,
                                          dim=1)
    return audio.numpy(), concepts.numpy()


def tiny_embeddings(model, n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio embeddings of ``n`` synthetic clips and the baseline vocabulary's text
    embeddings, from TinyCLAP (both cached on disk after the first run)."""
    from clapnb import synth
    from clapnb.embeddings import cached_audio_embeddings
    from clapnb.vocabulary import load_vocabulary, vocabulary_embeddings

    clips = synth.load_synthetic_clips(n_per_class=math.ceil(n / len(synth.CLASSES)))
    audio = cached_audio_embeddings(model, clips)[:n]
    return audio, vocabulary_embeddings(model, load_vocabulary("baseline", vocab_size))


def structure(concepts: torch.Tensor, target: torch.Tensor | None = None) -> dict:
    """How correlated a prepared dictionary is, and how its targets sit in it."""
    C = concepts.double()
    s = torch.linalg.svdvals(C)
    G = C @ C.T
    G.fill_diagonal_(-2)
    nearest = G.max(dim=1).values                                 # best other concept
    out = {"effective_rank": round(float(s.pow(2).sum() ** 2 / s.pow(4).sum()), 1),
           "nearest_cosine_median": round(float(nearest.median()), 3),
           "abs_cosine_mean": round(float(G.abs()[G > -2].mean()), 3)}
    if target is not None:
        Vh = torch.linalg.svd(C, full_matrices=False)[2]
        out["target_energy_in_top_singular_dirs"] = {
            f"top{k}": round(float(((target.double() @ Vh[:k].T) ** 2).sum(dim=1).mean()), 3)
            for k in (5, 10, 100)}
    return out


def prepared(audio: np.ndarray, concepts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The decomposer's dictionary and targets (centred on the concept and audio means)."""
    dec = ConceptDecomposer(concepts, [str(i) for i in range(len(concepts))],
                            audio_mean=audio.mean(axis=0), device="cpu")
    return dec.dictionary, dec.prepare(audio).target


# ---------------------------------------------------------------------------------
# SpLiCE's ADMM, on the CPU
# ---------------------------------------------------------------------------------
def admm_splice(C: torch.Tensor, Z: torch.Tensor, lam: float, rho: float = 5.0,
                tol: float = 1e-6, max_iter: int = 2000, seed: int = 0
                ) -> tuple[torch.Tensor, int, float, float]:
    """SpLiCE's ``ADMM.fit`` (rho 5, tol 1e-6, max_iter 2000 as its SPLICE uses) for the
    targets ``Z (m, D)`` at once: weights ``(m, V)``, iterations run, seconds spent
    factoring ``2 C C^T + rho I`` and seconds spent iterating."""
    t0 = time.perf_counter()
    V = C.shape[0]
    L = torch.linalg.cholesky(2 * C @ C.T + rho * torch.eye(V, dtype=C.dtype))
    t1 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    x, z, u = (torch.randn(V, len(Z), generator=g, dtype=C.dtype) for _ in range(3))
    Cb2 = 2 * C @ Z.T                      # SpLiCE recomputes C v^T in every iteration
    for it in range(1, max_iter + 1):
        z_old = z
        x = torch.cholesky_solve(Cb2 + rho * (z - u), L)
        z = torch.relu(x + u - lam / rho)
        u = u + x - z
        res_prim = torch.linalg.norm(x - z, dim=0)
        res_dual = torch.linalg.norm(rho * (z - z_old), dim=0)
        if res_prim.max() < tol and res_dual.max() < tol:
            break
    return z.T.contiguous(), it, t1 - t0, time.perf_counter() - t1


# ---------------------------------------------------------------------------------
# One dictionary
# ---------------------------------------------------------------------------------
def choose_lam(decomposer: ConceptDecomposer, target: torch.Tensor, l0: float) -> float:
    """One global lam giving mean l0 ~ ``l0`` on ``target``: halve lam from the largest
    useful value until mean l0 >= ``l0``, then bisect on log lam (warm-started). The
    solver raises lam to ``MIN_LAM``: when even that keeps fewer concepts, it is the answer."""
    def mean_l0(lam: float, init: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        W, _ = lasso_fista(decomposer.dictionary, target, torch.full((len(target),), lam),
                           gram=decomposer.gram, init=init)
        return float((W > 0).sum(dim=1).float().mean()), W

    hi = math.log(float((2 * target @ decomposer.dictionary.T).max()))
    lo, W = hi - math.log(2), None
    while (m := mean_l0(math.exp(lo), W))[0] < l0:
        if lo <= math.log(MIN_LAM):
            return MIN_LAM
        hi, lo, W = lo, max(lo - math.log(2), math.log(MIN_LAM)), m[1]
    for _ in range(8):
        mid = (lo + hi) / 2
        m = mean_l0(math.exp(mid), W)
        lo, hi = (mid, hi) if m[0] > l0 else (lo, mid)
    return math.exp((lo + hi) / 2)


def _time(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def run_dictionary(name: str, audio: np.ndarray, concept_emb: np.ndarray, args) -> dict:
    decomposer = ConceptDecomposer(concept_emb, [f"c{i}" for i in range(len(concept_emb))],
                                   audio_mean=audio.mean(axis=0), device="cpu")
    target = decomposer.prepare(audio).target
    C, n = decomposer.dictionary, len(target)
    decomposer.gram                        # computed once, outside the timings (cached)
    t0 = time.perf_counter()
    lam = choose_lam(decomposer, target[:args.lam_n], args.target_l0)
    lam_s = time.perf_counter() - t0
    lams = torch.full((n,), lam)
    print(f"{name}: {n} targets, {len(C)} concepts, {C.shape[1]}-d; lam = {lam:.5f} "
          f"(mean l0 {args.target_l0:g} on {args.lam_n} targets, {lam_s:.0f} s)", flush=True)

    # sklearn on targets spread over the set, in `repeats` pieces interleaved with our
    # runs, the floor and ADMM's time per iteration on all targets (a few iterations)
    sk_rows = torch.linspace(0, n - 1, min(args.sklearn_n, n)).round().long()
    ad_rows = torch.linspace(0, n - 1, min(args.admm_n, n)).round().long()
    lasso_fista(C, target[:20], lams[:20], gram=decomposer.gram, tol=args.tol)   # warm-up
    Zf = target.contiguous()
    (C @ Zf.T)                                                                   # warm-up
    runs, cpus, floors, W_ref, ad_factor, ad_per_iter = [], [], [], [], [], []
    sk_wall = sk_cpu = 0.0
    for sk_piece in sk_rows.tensor_split(args.repeats):
        (W_fast, gap_fast), wall, cpu = _time(
            lambda: lasso_fista(C, target, lams, gram=decomposer.gram, tol=args.tol))
        runs.append(wall)
        cpus.append(cpu)
        for _ in range(7):
            floors.append(_time(lambda: Zf @ C.T)[1])
        W, wall, cpu = _time(lambda: lasso_sklearn(C, target[sk_piece], lams[sk_piece],
                                                   tol=args.tol, progress=False))
        W_ref.append(W)
        sk_wall, sk_cpu = sk_wall + wall, sk_cpu + cpu
        _, iters, factor, iter_s = admm_splice(C, target, lam, max_iter=args.admm_probe)
        ad_factor.append(factor)
        ad_per_iter.append(iter_s / iters)
    W_ref = torch.cat(W_ref)
    # ADMM's iterations: one batch of targets spread over the set; a batch stops on its
    # worst column, so all targets at once would need at least as many
    W_admm, ad_iters, _, _ = admm_splice(C, target[ad_rows], lam)

    ours, floor = statistics.median(runs), statistics.median(floors)
    sklearn_s = sk_wall / len(sk_rows) * n
    admm_s = statistics.median(ad_factor) + ad_iters * statistics.median(ad_per_iter)
    f_fast, f_ref = (objective(C, target[sk_rows], W, lams[sk_rows])
                     for W in (W_fast[sk_rows], W_ref))
    f_admm = objective(C, target[ad_rows], W_admm, lams[ad_rows])
    f_fast_ad = objective(C, target[ad_rows], W_fast[ad_rows], lams[ad_rows])
    rel = (f_fast - f_ref) / f_ref
    a, b = W_fast[sk_rows] > 0, W_ref > 0
    jaccard = ((a & b).sum(dim=1) / (a | b).sum(dim=1).clamp(min=1)).float()
    result = {
        "source": name, "n": n, "vocab_size": len(C), "dim": C.shape[1], "lam": lam,
        "torch_threads": torch.get_num_threads(),
        "mean_l0": float((W_fast > 0).sum(dim=1).float().mean()),
        "mean_l0_sklearn": float(b.sum(dim=1).float().mean()),
        "speedup_vs_sklearn": sklearn_s / ours,
        "cpu_speedup_vs_sklearn": sk_cpu / len(sk_rows) * n / statistics.median(cpus),
        "speedup_vs_admm": admm_s / ours,
        "floor_ratio": ours / floor,
        "objective_rel_gap": float(rel.mean()),
        "objective_rel_gap_max": float(rel.abs().max()),
        "admm_objective_rel_gap_vs_ours": float(((f_admm - f_fast_ad) / f_fast_ad).mean()),
        "support_jaccard": float(jaccard.mean()),
        "support_jaccard_min": float(jaccard.min()),
        "max_duality_gap_fista": float(gap_fast.max()),
        "sklearn_targets": len(sk_rows), "admm_targets": len(ad_rows),
        "admm_iterations": ad_iters, "admm_hit_max_iter": ad_iters == 2000,
        "objective_rel_gap_certified_max": float((gap_fast / (objective(C, target, W_fast, lams)
                                                              - gap_fast)).max()),
        "times": {"fista_s": ours, "fista_runs_s": runs, "fista_cpu_s": statistics.median(cpus),
                  "floor_s": floor, "sklearn_s": sklearn_s,
                  "sklearn_measured_s": sk_wall, "sklearn_cpu_measured_s": sk_cpu,
                  "admm_s": admm_s, "admm_factor_s": statistics.median(ad_factor),
                  "admm_per_iteration_s": statistics.median(ad_per_iter), "lam_search_s": lam_s},
    }
    print(f"  ours {ours:.3f} s (runs {', '.join(f'{t:.3f}' for t in runs)}), floor "
          f"{floor * 1e3:.1f} ms -> {result['floor_ratio']:.1f}x the floor; mean l0 "
          f"{result['mean_l0']:.1f}, max duality gap {result['max_duality_gap_fista']:.1e}\n"
          f"  sklearn {sklearn_s:.1f} s for {n} (measured {sk_wall:.1f} s on {len(sk_rows)}) -> "
          f"{result['speedup_vs_sklearn']:.1f}x; objective gap max "
          f"{result['objective_rel_gap_max']:.1e}, support Jaccard {result['support_jaccard']:.3f}"
          f"\n  ADMM {admm_s:.1f} s for {n} ({ad_iters} iterations on {len(ad_rows)} targets, "
          f"{statistics.median(ad_per_iter) * 1e3:.0f} ms each on {n}) -> "
          f"{result['speedup_vs_admm']:.1f}x; its objective "
          f"{result['admm_objective_rel_gap_vs_ours']:+.1e} relative to ours", flush=True)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dictionaries", default=",".join(DICTIONARIES),
                        help=f"comma-separated, from {', '.join(DICTIONARIES)}")
    parser.add_argument("--random", action="store_true",
                        help="only the synthetic dictionaries (random1024, corr1024)")
    parser.add_argument("--n", type=int, default=500, help="targets per dictionary")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--target-l0", type=float, default=95)
    parser.add_argument("--lam-n", type=int, default=100, help="targets lam is chosen on")
    parser.add_argument("--tol", type=float, default=2e-6,
                        help="duality gap / |z|^2 for both (sklearn's tol is half: 1e-6)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of ours (median), interleaved with the others")
    parser.add_argument("--sklearn-n", type=str, default="random1024=30,corr1024=1,tiny512=4",
                        help="targets sklearn solves, per dictionary (or one number)")
    parser.add_argument("--admm-n", type=int, default=16,
                        help="targets ADMM solves (one batch) for its iteration count")
    parser.add_argument("--admm-probe", type=int, default=5,
                        help="ADMM iterations timed on all targets, per repeat")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (sklearn's loop uses one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [d for d in args.dictionaries.split(",") if d]
    if args.random:
        names = [d for d in names if d != "tiny512"]
    if unknown := set(names) - set(DICTIONARIES):
        parser.error(f"unknown dictionaries {sorted(unknown)}; choose from {DICTIONARIES}")
    sklearn_n = dict(p.split("=") for p in args.sklearn_n.split(",")) if "=" in args.sklearn_n \
        else dict.fromkeys(DICTIONARIES, args.sklearn_n)
    load_start, t_start = os.getloadavg(), time.perf_counter()
    print(f"load average {load_start[0]:.2f} on {os.cpu_count()} CPUs; torch threads "
          f"{torch.get_num_threads()}", flush=True)

    from clapnb.tiny import load_tiny
    model = load_tiny("cpu")
    results, matched = {}, None
    for name in names:
        if name == "random1024":
            audio, concepts = random_embeddings(args.n, args.vocab_size)
        elif name == "corr1024":
            known = known_word_embeddings(model)
            s = _spectrum(known)
            svals, a = decay_like(s, 1024)
            audio, concepts = correlated_embeddings(args.n, args.vocab_size, svals)
            tiny = prepared(*tiny_embeddings(model, args.n, args.vocab_size))
            matched = {
                "what": "singular values (by rank) of TinyCLAP's centred, normalised embeddings "
                        "of the baseline words it knows: measured for ranks 1..kept, power-law "
                        "tail fitted to ranks 10..kept; targets: 8-concept mixtures + 8 % "
                        "isotropic noise, for TinyCLAP's share of target energy in the top "
                        "singular directions",
                "words": len(known), "ranks_measured": len(s), "ranks_kept": len(s) // 2,
                "tail_power_law_exponent": round(a, 3),
                "tinyclap_known_words": structure(ConceptDecomposer(
                    known, [str(i) for i in range(len(known))], device="cpu").dictionary),
                f"tinyclap_{args.vocab_size}_words_and_audio": structure(*tiny),
            }
        else:
            audio, concepts = tiny_embeddings(model, args.n, args.vocab_size)
        args.sklearn_n = int(sklearn_n.get(name, 4))
        results[name] = run_dictionary(name, audio, concepts, args)
        results[name]["structure"] = structure(*prepared(audio, concepts))
        if name == "corr1024":
            matched["corr1024"] = results[name]["structure"]

    load_end = os.getloadavg()
    worst = {
        "speedup_vs_sklearn": min, "cpu_speedup_vs_sklearn": min, "objective_rel_gap": max,
        "objective_rel_gap_max": max, "support_jaccard": min, "support_jaccard_min": min,
        "max_duality_gap_fista": max}
    summary = {
        "source": ",".join(names), "n": args.n, "vocab_size": args.vocab_size,
        "dim": {k: r["dim"] for k, r in results.items()},
        "lam": {k: r["lam"] for k, r in results.items()},
        "torch_threads": torch.get_num_threads(), "target_l0": args.target_l0, "tol": args.tol,
        "mean_l0": {k: r["mean_l0"] for k, r in results.items()},
        "mean_l0_sklearn": {k: r["mean_l0_sklearn"] for k, r in results.items()},
        **{field: agg(r[field] for r in results.values()) for field, agg in worst.items()},
    }
    for k, r in results.items():
        summary[f"speedup_vs_sklearn_{k}"] = r["speedup_vs_sklearn"]
        summary[f"speedup_vs_admm_{k}"] = r["speedup_vs_admm"]
        summary[f"floor_ratio_{k}"] = r["floor_ratio"]
    summary["times"] = {k: r["times"] for k, r in results.items()}
    summary["corr1024_matched"] = matched
    summary["load_average"] = {"start": load_start, "end": load_end, "cpus": os.cpu_count()}
    summary["benchmark_s"] = time.perf_counter() - t_start
    summary["dictionaries"] = results
    print(f"load average {load_end[0]:.2f} at the end; {summary['benchmark_s']:.0f} s in all")
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
