"""clapnb: the helper package of a notebook course on interpreting CLAP audio models.

Start with :func:`load_model` (``"auto"``, ``"tiny"`` or a LAION-CLAP checkpoint name)
and :func:`load_clips` / :func:`load_scenes`, which follow the active model; the
registry (:mod:`clapnb.registry`) says what comes with each model.
"""

from clapnb.datasets import ClipSet, SceneSet
from clapnb.model import ClapModel, StftConfig
from clapnb.registry import (backend, decoder_scenes, ground_truth, has_ground_truth, load_clips,
                             load_model, load_scenes, model_names)

__version__ = "0.1.0"
__all__ = ["ClapModel", "ClipSet", "SceneSet", "StftConfig", "backend", "decoder_scenes",
           "ground_truth", "has_ground_truth", "load_clips", "load_model", "load_scenes",
           "model_names", "__version__"]
