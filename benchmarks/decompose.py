"""Batched FISTA vs the per-sample scikit-learn reference on one concept-decomposition problem.

    python benchmarks/decompose.py [--random] [--n 2000] [--vocab-size 2000] [--target-l0 30]

Default data: audio embeddings of synthetic clips and text embeddings of the
shipped "baseline" vocabulary, both from the active model (``load_model("auto")``;
set CLAPNB_MODEL=tiny for TinyCLAP). ``--random``: random unit vectors with
low-rank structure and a shared offset (no model needed).

Both solvers run in this process on the same prepared (centred) data with the
same objective ``||C^T w - z||^2 + lam |w|_1`` and the same stopping rule
(duality gap <= tol |z|^2; sklearn's own tol is half of it, 1e-6 by default);
lam is set once, globally, so that the mean l0 is about ``--target-l0``.
sklearn is timed over its whole per-sample loop (no warm start), run in
``--repeats`` consecutive pieces; before each piece FISTA solves the whole
batch, and its time is the median of those runs (after an untimed warm-up on
a few samples). Interleaving keeps a shared machine's changing load from
favouring either side. torch uses ``--threads`` (default 1, like sklearn's
loop). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import numpy as np
import torch

from clapnb.decompose import ConceptDecomposer, lasso_fista, lasso_sklearn, objective


def random_embeddings(n: int, vocab_size: int, dim: int = 512, rank: int = 64, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm stand-ins: concepts share a rank-``rank`` subspace and an offset; each
    audio vector is a sparse mixture of concepts plus noise and its own offset."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim))
    concepts = (rng.standard_normal((vocab_size, rank)) @ basis / math.sqrt(rank)
                + 0.7 * rng.standard_normal((vocab_size, dim)) + rng.standard_normal(dim))
    concepts /= np.linalg.norm(concepts, axis=1, keepdims=True)
    weights = np.zeros((n, vocab_size))
    for i in range(n):
        weights[i, rng.choice(vocab_size, 8, replace=False)] = rng.random(8)
    audio = weights @ concepts
    audio += 0.9 * np.linalg.norm(audio, axis=1, keepdims=True) * rng.standard_normal((n, dim)) \
        / math.sqrt(dim) + 0.5 * rng.standard_normal(dim)
    audio /= np.linalg.norm(audio, axis=1, keepdims=True)
    return audio.astype(np.float32), concepts.astype(np.float32)


def model_embeddings(n: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Audio embeddings of ``n`` synthetic clips and the baseline vocabulary's text embeddings."""
    from clapnb import synth
    from clapnb.embeddings import cached_audio_embeddings
    from clapnb.registry import load_model
    from clapnb.vocabulary import load_vocabulary, vocabulary_embeddings

    model = load_model("auto", device="cpu")
    clips = synth.load_synthetic_clips(n_per_class=math.ceil(n / len(synth.CLASSES)))
    audio = cached_audio_embeddings(model, clips)[:n]
    vocab = load_vocabulary("baseline", vocab_size)
    return audio, vocabulary_embeddings(model, vocab), list(vocab.words), model.name


def choose_lam(decomposer: ConceptDecomposer, target: torch.Tensor, l0: float) -> float:
    """One global lam giving mean l0 ~ ``l0`` on ``target``: halve lam from the largest
    useful value until mean l0 >= ``l0``, then bisect on log lam (warm-started)."""
    def mean_l0(lam: float, init: torch.Tensor | None) -> tuple[float, torch.Tensor]:
        W, _ = lasso_fista(decomposer.dictionary, target, torch.full((len(target),), lam),
                           gram=decomposer.gram, init=init)
        return float((W > 0).sum(dim=1).float().mean()), W

    hi = math.log(float((2 * target @ decomposer.dictionary.T).max()))
    lo, W = hi - math.log(2), None
    while (m := mean_l0(math.exp(lo), W))[0] < l0:
        hi, lo, W = lo, lo - math.log(2), m[1]
    for _ in range(8):
        mid = (lo + hi) / 2
        m = mean_l0(math.exp(mid), W)
        lo, hi = (mid, hi) if m[0] > l0 else (lo, mid)
    return math.exp((lo + hi) / 2)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--random", action="store_true", help="random embeddings, no model")
    parser.add_argument("--n", type=int, default=2000, help="audio embeddings")
    parser.add_argument("--vocab-size", type=int, default=2000)
    parser.add_argument("--target-l0", type=float, default=30)
    parser.add_argument("--tol", type=float, default=2e-6,
                        help="duality gap / |z|^2 for both (sklearn's tol is half: 1e-6)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed FISTA runs (median), interleaved with sklearn")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (sklearn's loop uses one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.random:
        audio, concept_emb = random_embeddings(args.n, args.vocab_size)
        concepts, source = [f"concept{i}" for i in range(args.vocab_size)], "random"
    else:
        audio, concept_emb, concepts, source = model_embeddings(args.n, args.vocab_size)
    decomposer = ConceptDecomposer(concept_emb, concepts, audio_mean=audio.mean(axis=0),
                                   device="cpu")
    target = decomposer.prepare(audio).target
    C, n = decomposer.dictionary, len(target)
    decomposer.gram  # computed once, outside the timings (cached by the decomposer)
    lam = choose_lam(decomposer, target[:200], args.target_l0)
    lams = torch.full((n,), lam)
    print(f"{source}: {n} audio embeddings, {len(C)} concepts, {C.shape[1]}-d; "
          f"lam = {lam:.4f}; torch threads = {torch.get_num_threads()}")

    # the machine is shared: interleave the timings so both solvers see the same load.
    # sklearn's loop is split into `repeats` consecutive pieces (their times add up to
    # one full loop); a full FISTA run on all n samples precedes each piece.
    lasso_fista(C, target[:50], lams[:50], gram=decomposer.gram, tol=args.tol)   # warm-up
    fista_times, fista_cpu, sklearn_time, sklearn_cpu, W_ref = [], [], 0.0, 0.0, []
    for piece in torch.arange(n).tensor_split(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        W_fast, gap_fast = lasso_fista(C, target, lams, gram=decomposer.gram, tol=args.tol)
        fista_times.append(time.perf_counter() - t0)
        fista_cpu.append(time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        W_ref.append(lasso_sklearn(C, target[piece], lams[piece], tol=args.tol, progress=False))
        sklearn_time += time.perf_counter() - t0
        sklearn_cpu += time.process_time() - c0
    W_ref = torch.cat(W_ref)

    f_fast, f_ref = objective(C, target, W_fast, lams), objective(C, target, W_ref, lams)
    a, b = W_fast > 0, W_ref > 0
    union = (a | b).sum(dim=1).clamp(min=1)
    jaccard = ((a & b).sum(dim=1) / union).float()
    fista_time = statistics.median(fista_times)
    result = {
        "source": source, "n": n, "vocab_size": len(C), "dim": C.shape[1], "lam": lam,
        "torch_threads": torch.get_num_threads(),
        "mean_l0": float(a.sum(dim=1).float().mean()),
        "mean_l0_sklearn": float(b.sum(dim=1).float().mean()),
        "speedup_vs_sklearn": sklearn_time / fista_time,
        "cpu_speedup_vs_sklearn": sklearn_cpu / statistics.median(fista_cpu),
        "objective_rel_gap": float(((f_fast - f_ref) / f_ref).mean()),
        "objective_rel_gap_max": float(((f_fast - f_ref) / f_ref).abs().max()),
        "support_jaccard": float(jaccard.mean()),
        "support_jaccard_min": float(jaccard.min()),
        "max_duality_gap_fista": float(gap_fast.max()),
        "times": {"sklearn_s": sklearn_time, "fista_s": fista_time,
                  "fista_runs_s": fista_times, "sklearn_cpu_s": sklearn_cpu,
                  "fista_cpu_s": statistics.median(fista_cpu)},
    }
    print(f"sklearn per-sample loop: {sklearn_time:.2f} s ({sklearn_cpu:.2f} CPU s); "
          f"FISTA: {fista_time:.3f} s (runs {', '.join(f'{t:.3f}' for t in fista_times)})")
    print(f"speedup {result['speedup_vs_sklearn']:.1f}x wall, "
          f"{result['cpu_speedup_vs_sklearn']:.1f}x CPU time; objective gap "
          f"{result['objective_rel_gap']:.2e}; support Jaccard {result['support_jaccard']:.4f}; "
          f"mean l0 {result['mean_l0']:.1f}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
