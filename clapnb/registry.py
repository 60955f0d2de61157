"""The registry: every model name, the backend behind it, and what comes with it.

A :class:`Backend` says how to load one model and what goes with it: the clips and
scenes the notebooks use with it, the scenes its LMAC-ZS decoder trains on, the
decoder shipped with the package (if any) and, for a world with known answers, its
:class:`GroundTruth`. Every "which model is this and what does it come with?"
question, in the package and in the notebooks, is answered here; no other module
compares model names.

Adding a backend is one module implementing :class:`~clapnb.model.ClapModel` plus
entries in :data:`BACKENDS`.

>>> "tiny" in model_names() and "auto" in model_names()
True
>>> backend("tiny").mode
'offline'
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from clapnb import laion, msclap, synth, tiny
from clapnb.clotho import load_clotho
from clapnb.datasets import ClipSet, SceneSet
from clapnb.esc50 import load_esc50
from clapnb.model import ClapModel, StftConfig
from clapnb.settings import (MIRROR_ENV, MODEL_ENV, OFFLINE_ENV, default_device, model_override,
                             offline)

#: what ``"auto"`` loads when the network (or a cached checkpoint) allows
ONLINE_DEFAULT = laion.DEFAULT_CHECKPOINT
#: seed of the synthetic scenes the shipped TinyCLAP decoder was trained on (no evaluation uses it)
TINY_DECODER_SEED = 1


@dataclass(frozen=True)
class GroundTruth:
    """What a world with known answers offers the notebooks.

    scenes: ``(n, seed, min_events, max_events) -> SceneSet`` whose ``events`` are known.
    event_masks: ``(scenes, i, stft_config) -> [(F, T) bool]``, one time-frequency
        mask per event of scene ``i``, on the model's STFT grid.
    concepts: class name -> the concept words that describe it.
    held_out_clips: ``(n_per_class, seed) -> ClipSet`` of classes the model never
        trained on (neither their audio nor their names).
    descriptions: held-out class -> a prompt in words the model did learn.
    families: class name -> its acoustic family (classes of one family sound alike).
    """

    scenes: Callable[..., SceneSet]
    event_masks: Callable[[SceneSet, int, StftConfig], list[np.ndarray]]
    concepts: Mapping[str, Sequence[str]]
    held_out_clips: Callable[[int, int], ClipSet]
    descriptions: Mapping[str, str]
    families: Mapping[str, str]


@dataclass(frozen=True)
class Backend:
    """One registered model name and what comes with it.

    name: what :func:`load_model` takes (``"tiny"``, ``"laion/630k-audioset"``).
    family: the model family, for people (``"TinyCLAP"``, ``"LAION-CLAP"``).
    mode: ``"offline"`` (runs without network) or ``"online"`` (downloads a checkpoint).
    about: one line on what the model was trained on.
    load: ``device -> ClapModel``.
    clips: ``(max_per_class, seed) -> ClipSet``, labelled clips for zero-shot classification.
    scenes: ``(max_items, seed) -> SceneSet``, captioned clips for retrieval.
    decoder_scenes: ``max_items -> SceneSet``, what its LMAC-ZS decoder trains on.
    decoder: the LMAC-ZS decoder shipped with the package, or ``None``.
    ground_truth: a world with known answers (synthetic scenes), or ``None``.
    """

    name: str
    family: str
    mode: str
    about: str
    load: Callable[[torch.device], ClapModel]
    clips: Callable[[int | None, int], ClipSet]
    scenes: Callable[[int | None, int], SceneSet]
    decoder_scenes: Callable[[int | None], SceneSet]
    decoder: Path | None = None
    ground_truth: GroundTruth | None = None

    def banner_mode(self) -> str:
        """``"OFFLINE (TinyCLAP, ...)"``: what the banner says of the mode."""
        return f"{self.mode.upper()} ({self.family}{', ' + self.about if self.mode == 'offline' else ''})"


# ---------------------------------------------------------------------------------
# The data that goes with each backend
# ---------------------------------------------------------------------------------
def _per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Positions of the first ``k`` clips of every class, in dataset order."""
    keep = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        keep[np.flatnonzero(labels == c)[:k]] = True
    return keep


def _esc50_clips(max_per_class: int | None, seed: int) -> ClipSet:
    clips = load_esc50()
    return clips if max_per_class is None else clips.subset(_per_class(clips.labels, max_per_class))


def _clotho_scenes(max_items: int | None, seed: int = 0) -> SceneSet:
    scenes = load_clotho("evaluation")
    return scenes if max_items is None else scenes.subset(np.arange(min(max_items, len(scenes))))


def _synthetic_clips(max_per_class: int | None, seed: int) -> ClipSet:
    return synth.load_synthetic_clips(n_per_class=max_per_class or 40, seed=seed)


def _synthetic_scenes(max_items: int | None, seed: int) -> SceneSet:
    return synth.load_synthetic_scenes(n=max_items or 200, seed=seed)


def _tiny_decoder_scenes(max_items: int | None) -> SceneSet:
    return synth.load_synthetic_scenes(n=max_items or 400, seed=TINY_DECODER_SEED,
                                       min_events=2, max_events=3)


def _synthetic_truth_scenes(n: int = 100, seed: int = 0, min_events: int = 2,
                            max_events: int = 3) -> SceneSet:
    return synth.load_synthetic_scenes(n=n, seed=seed, min_events=min_events, max_events=max_events)


def _held_out_clips(n_per_class: int = 20, seed: int = 0) -> ClipSet:
    return synth.load_synthetic_clips(n_per_class=n_per_class, seed=seed, classes=synth.HELD_OUT)


SYNTHETIC_TRUTH = GroundTruth(scenes=_synthetic_truth_scenes, event_masks=synth.event_masks,
                              concepts=synth.CONCEPTS, held_out_clips=_held_out_clips,
                              descriptions=synth.DESCRIPTIONS, families=synth.FAMILIES)


def _backends() -> dict[str, Backend]:
    entries = [Backend(
        name="tiny", family="TinyCLAP", mode="offline", about="synthetic sound world",
        load=lambda device: tiny.load_tiny(device), clips=_synthetic_clips,
        scenes=_synthetic_scenes, decoder_scenes=_tiny_decoder_scenes,
        decoder=tiny.DECODER_FILE, ground_truth=SYNTHETIC_TRUTH)]
    entries += [Backend(
        name=name, family="LAION-CLAP", mode="online", about=spec.about,
        load=partial(laion.load_laion, name), clips=_esc50_clips, scenes=_clotho_scenes,
        decoder_scenes=_clotho_scenes) for name, spec in laion.CHECKPOINTS.items()]
    entries += [Backend(
        name=name, family="MS-CLAP", mode="online", about=spec.about,
        load=partial(msclap.load_msclap, name), clips=_esc50_clips, scenes=_clotho_scenes,
        decoder_scenes=_clotho_scenes) for name, spec in msclap.CHECKPOINTS.items()]
    return {b.name: b for b in entries}


#: every registered model name -> its :class:`Backend`
BACKENDS: dict[str, Backend] = _backends()


# ---------------------------------------------------------------------------------
# Questions about a model
# ---------------------------------------------------------------------------------
def model_names() -> list[str]:
    """Every name :func:`load_model` accepts."""
    return ["auto", *BACKENDS]


def backend(model: ClapModel | str) -> Backend:
    """The :class:`Backend` of a loaded model or a model name; a clear error for others."""
    name = model if isinstance(model, str) else model.name
    if name not in BACKENDS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(BACKENDS)}. "
                         "Models built by hand (e.g. clapnb.laion.random_laion) have no "
                         "registered data or decoder: pass them explicitly.")
    return BACKENDS[name]


def shipped_decoder(model: ClapModel) -> Path | None:
    """The LMAC-ZS decoder file shipped for ``model``, or ``None`` (also for unregistered models)."""
    entry = BACKENDS.get(model.name)
    return entry.decoder if entry is not None else None


def ground_truth(model: ClapModel) -> GroundTruth | None:
    """The known answers of ``model``'s world (synthetic scenes for TinyCLAP), or ``None``."""
    return backend(model).ground_truth


def has_ground_truth(model: ClapModel) -> bool:
    """True when ``model``'s world has ground truth (events, masks, concept words)."""
    return ground_truth(model) is not None


def load_clips(model: ClapModel, max_per_class: int | None = None, seed: int = 0) -> ClipSet:
    """Labelled clips for zero-shot classification that go with ``model``: ESC-50 for
    LAION-CLAP, synthetic single-event clips for TinyCLAP (held-out seed, never trained on).

    Args:
        model: the active model; its registry entry decides.
        max_per_class: keep at most this many clips per class (fast settings).
        seed: seed of a synthetic set (ignored by real datasets).
    """
    return backend(model).clips(max_per_class, seed)


def load_scenes(model: ClapModel, max_items: int | None = None, seed: int = 0) -> SceneSet:
    """Captioned clips for retrieval that go with ``model``: Clotho evaluation for
    LAION-CLAP, synthetic scenes (with ground-truth events) for TinyCLAP."""
    return backend(model).scenes(max_items, seed)


def decoder_scenes(model: ClapModel, max_items: int | None = None) -> SceneSet:
    """The scenes a LMAC-ZS decoder for ``model`` trains on (TinyCLAP: synthetic scenes
    of 2-3 events, seed :data:`TINY_DECODER_SEED`; LAION-CLAP: Clotho evaluation)."""
    return backend(model).decoder_scenes(max_items)


# ---------------------------------------------------------------------------------
# Loading a model by name
# ---------------------------------------------------------------------------------
def _banner(model: ClapModel, entry: Backend, why: str) -> None:
    lines = [f"clapnb model: {model.describe()}", f"mode: {entry.banner_mode()}", f"why: {why}"]
    if model.rehearsal:
        lines += [f"REHEARSAL: random weights served by the local mirror ({MIRROR_ENV}).",
                  "The code path is the real one; the numbers below mean nothing."]
    width = max(map(len, lines)) + 2
    print("+" + "-" * width + "+")
    for line in lines:
        print("| " + line.ljust(width - 1) + "|")
    print("+" + "-" * width + "+")


def _check_name(name: str, source: str) -> str:
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown model {name!r} ({source}); valid names: {', '.join(model_names())}")
    return name


def load_model(name: str | None = None, device: str | torch.device | None = None,
               verbose: bool = True) -> ClapModel:
    """Load a CLAP model by name; the ``CLAPNB_MODEL`` environment variable overrides ``name``.

    Args:
        name: ``"auto"`` (default), ``"tiny"`` or a LAION-CLAP checkpoint name
            such as ``"laion/630k-audioset"``; :func:`model_names` lists them. An
            unknown name is an error even when ``CLAPNB_MODEL`` overrides it.
        device: ``None`` means CUDA when available, else CPU.
        verbose: print the banner saying which model is active and why.
    """
    if name is not None:
        _check_name(name, "passed to load_model")
    env = model_override()
    requested = _check_name(env, f"from {MODEL_ENV}") if env else (name or "auto")
    why = f"{MODEL_ENV}={env}" if env else f"load_model({requested!r})"
    if requested == "auto":
        requested, why = _resolve_auto()
    entry = BACKENDS[requested]
    model = entry.load(default_device(device))
    if verbose:
        _banner(model, entry, why)
    return model


def _resolve_auto() -> tuple[str, str]:
    """Decide what ``"auto"`` means here and now: (model name, reason)."""
    if offline():
        return "tiny", f"{OFFLINE_ENV}=1 (no network use allowed)"
    if laion.checkpoint_cached(ONLINE_DEFAULT):
        return ONLINE_DEFAULT, "LAION-CLAP checkpoint found in the cache"
    if laion.checkpoint_reachable(ONLINE_DEFAULT):
        return ONLINE_DEFAULT, "LAION-CLAP checkpoint can be downloaded"
    return "tiny", "no LAION-CLAP checkpoint cached and none could be reached (offline?)"
