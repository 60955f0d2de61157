"""The published numbers of the papers this course teaches, to print beside ours.

Paper A: Zhang, Thomaz, Lu, *Transformation of audio embeddings into interpretable,
concept-based representations*, IJCNN 2025 (arXiv 2504.14076). Every table was measured
on Microsoft's CLAP 2023 checkpoint (clapnb's ``"msclap/2023"``), with 2,000-word
vocabularies and ``lam = 0.05`` (90-100 concepts per clip). Values are exact copies of
the paper's Tables I-III; ``±`` is the paper's bootstrap interval half-width.

Nothing here imports another clapnb module: plain data and one table builder.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

#: the model every number of paper A was measured on (a clapnb model name)
PAPER_A_MODEL = "msclap/2023"
#: paper A's L1 weight for all tables (SpLiCE's convention, the one clapnb uses) and the
#: number of concepts per clip it reports for it
PAPER_A_LAM = 0.05
PAPER_A_L0 = (90, 100)


@dataclass(frozen=True)
class Published:
    """One published value: ``value`` (and its ``±`` half-width, where given)."""

    value: float
    plus_minus: float | None = None

    def __str__(self) -> str:
        return f"{self.value:.3f}" + ("" if self.plus_minus is None else f" ± {self.plus_minus:.3f}")


#: Table I, zero-shot classification (accuracy; DCASE17: F1; AudioSet: mAP)
TABLE_I: dict[str, dict[str, Published]] = {
    "dense": {"US8K": Published(0.823), "DCASE17": Published(0.466), "ESC-50": Published(0.939),
              "AudioSet": Published(0.268), "VocalSound": Published(0.800),
              "TUT2017": Published(0.538)},
    "concept": {"US8K": Published(0.828, 0.006), "DCASE17": Published(0.470, 0.021),
                "ESC-50": Published(0.937, 0.011), "AudioSet": Published(0.265, 0.007),
                "VocalSound": Published(0.821, 0.011), "TUT2017": Published(0.556, 0.027)},
}
#: Table II, Clotho retrieval (clapnb's metric names)
TABLE_II: dict[str, dict[str, Published]] = {
    "dense": {"a2t_R@1": Published(0.229), "a2t_mAP@10": Published(0.155),
              "t2a_R@1": Published(0.157), "t2a_mAP@10": Published(0.257)},
    "concept": {"a2t_R@1": Published(0.240), "a2t_mAP@10": Published(0.151),
                "t2a_R@1": Published(0.162), "t2a_mAP@10": Published(0.261)},
}
#: Table III, fine-tuned classification (accuracy)
TABLE_III: dict[str, dict[str, Published]] = {
    "fine-tuned dense": {"US8K": Published(0.897, 0.021), "ESC-50": Published(0.972, 0.012),
                         "VocalSound": Published(0.865, 0.010), "TUT2017": Published(0.615, 0.019)},
    "fine-tuned concept": {"US8K": Published(0.900, 0.023), "ESC-50": Published(0.969, 0.012),
                           "VocalSound": Published(0.855, 0.011), "TUT2017": Published(0.647, 0.021)},
}


def beside(measured: dict[str, float], table: dict[str, dict[str, Published]], column: str,
           model_name: str, dataset: str) -> pd.DataFrame:
    """A table of ``measured`` values (row name -> value) beside the paper's ``column`` of
    ``table``, each column labelled with the model and data it was measured on.

    >>> beside({"dense": 0.5}, TABLE_I, "ESC-50", "tiny", "synthetic clips").iloc[0, 1]
    '0.939'
    """
    rows = [*table, *(r for r in measured if r not in table)]
    ours = f"this notebook: {model_name}, {dataset}"
    theirs = f"paper A: {PAPER_A_MODEL}, {column}"
    return pd.DataFrame({
        ours: [f"{measured[r]:.3f}" if r in measured else "" for r in rows],
        theirs: [str(table[r][column]) if r in table and column in table[r] else "" for r in rows],
    }, index=pd.Index(rows, name="representation"))


def comparable(model_name: str, dataset: str) -> bool:
    """True when a measurement is directly comparable with paper A's: the same model, on
    the paper's data (ESC-50 or Clotho evaluation, not a synthetic or mirrored stand-in)."""
    return model_name == PAPER_A_MODEL and dataset in ("esc50", "clotho-evaluation")
