"""Rebuild the word lists in clapnb/vocabularies/ from the shared public metadata.

    python scripts/build_vocabularies.py [DATA_DIR] [--out OUT_DIR]

DATA_DIR (default: ../shared/data, next to the repository) must hold
clotho/clotho_metadata_{development,evaluation}.csv (Freesound tags in the
``keywords`` column) and audioset/ontology.json. Writes into OUT_DIR
(default: the package's clapnb/vocabularies/):

    baseline.tsv        most frequent tags, expletives removed (up to 5,000)
    pruned.tsv          the pruned recipe's ranking (up to 5,000)
    pruned_merges.tsv   which tags each pruned word merges, with their counts
    candidates.tsv      the 10,000 most frequent tags (the clustered recipe's input)
    ontology.tsv        the AudioSet class names
    synth_tags.tsv      which baseline tags go with which synthetic class (TinyCLAP's tags)

and prints the corpus statistics quoted in clapnb/vocabularies/README.md. The output
is deterministic: rerunning it reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clapnb import synth
from clapnb.cache import atomic_write
from clapnb.vocabulary import (N_CANDIDATES, PAPER_SIZE, SIZES, build_baseline, build_candidates,
                               build_ontology, clotho_tag_corpus, is_expletive, normalize_tag,
                               prune_tags, tag_counts, write_merges, write_vocabulary)

ROOT = Path(__file__).resolve().parents[1]


def build(data_dir: Path, out_dir: Path) -> None:
    """Write every shipped list into ``out_dir`` and print what went into them."""
    corpus = clotho_tag_corpus(data_dir / "clotho")
    counts = tag_counts(corpus)
    expletives = sorted(t for t in counts if is_expletive(t))
    print(f"corpus: {len(corpus):,} Clotho clips, {sum(map(len, corpus)):,} tag uses, "
          f"{len(counts):,} distinct tags (lower-cased), {len(expletives)} expletive tags")

    largest = max(SIZES)
    candidates = build_candidates(corpus, N_CANDIDATES)
    all_baseline = build_baseline(corpus, size=None)
    baseline = all_baseline.head(min(largest, len(all_baseline)))
    pruning = prune_tags(candidates)
    pruned = pruning.vocabulary.head(min(largest, len(pruning.vocabulary)))

    print(f"candidates: {len(candidates):,} (of at most {N_CANDIDATES:,})")
    dropped = ", ".join(f"{len(tags):,} {reason}" for reason, tags in pruning.dropped.items())
    n_merged = sum(len(tags) for tags in pruning.merged.values())
    n_joined = sum("-" in t or "_" in t for tags in pruning.merged.values() for t, _ in tags)
    print(f"pruning: dropped {dropped}; {n_merged:,} tags ({n_joined} of them hyphenated) "
          f"merged into {len(pruning.merged):,} words; {len(pruning.vocabulary):,} words left")
    for vocab in (all_baseline, pruning.vocabulary):
        sizes = ", ".join(str(s) for s in SIZES if s <= len(vocab)) or "none"
        singles = (f"used once from rank {vocab.counts.index(1) + 1:,}" if 1 in vocab.counts
                   else "none used only once")
        print(f"{vocab.name}: {len(vocab):,} words ({singles}); sizes possible: {sizes}")

    ontology = build_ontology(data_dir / "audioset" / "ontology.json")
    print(f"ontology: {len(ontology)} AudioSet class names")

    out_dir.mkdir(parents=True, exist_ok=True)
    for vocab in (baseline, pruned, candidates, ontology):
        write_vocabulary(vocab, out_dir / f"{vocab.name}.tsv")
    write_merges(pruning, out_dir / "pruned_merges.tsv", size=len(pruned))
    rows = synth.assign_tag_words([[normalize_tag(t) for t in tags] for tags in corpus],
                                  list(baseline.words[:PAPER_SIZE]))
    _write_rows(out_dir / "synth_tags.tsv", ["tag", "class", "count"], rows)
    print(f"synth_tags: {len(rows):,} of the first {PAPER_SIZE:,} baseline tags go with one of "
          f"{len(synth.CLASSES)} synthetic classes")
    print(f"wrote baseline.tsv, pruned.tsv, pruned_merges.tsv, candidates.tsv, ontology.tsv, "
          f"synth_tags.tsv to {out_dir}")


def _write_rows(path: Path, header: list[str], rows: list[tuple]) -> None:
    """Tab-separated rows under a header, written atomically like the other lists."""
    text = "\n".join("\t".join(map(str, r)) for r in [tuple(header), *rows]) + "\n"
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared metadata folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "clapnb" / "vocabularies",
                        help="where to write the lists (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (args.data_dir / "clotho").is_dir():
        sys.exit(f"{args.data_dir} has no clotho/ folder: pass the shared data folder "
                 "(the one with clotho/ and audioset/) as the first argument")
    build(args.data_dir, args.out)


if __name__ == "__main__":
    main()
