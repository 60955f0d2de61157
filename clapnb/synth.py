"""A synthetic sound world with ground truth: the offline mode's data.

Fifty sound classes are synthesised procedurally by :mod:`clapnb.sounds` (no
recordings), each with randomised parameters, so every clip is different yet
recognisable. The classes come in five acoustic families (signals, textures,
machines, impacts, animals and people) whose members are built alike, so they
get confused the way real classes do. Events sit over one of four background
ambiences at a spread of levels. Everything is deterministic by seed, and nothing
but seeds and parameters is stored: audio and per-event stems are re-created on
demand (a 5 s clip takes a few ms).

* :data:`CLASSES` — the 44 classes TinyCLAP was trained on. Every name and every
  word in :data:`CONCEPTS` is among the first 2,000 words of both the
  ``"baseline"`` and the ``"pruned"`` vocabulary (:mod:`clapnb.vocabulary`, built
  from the Freesound tags of Clotho), so concept decompositions can find them.
* :data:`HELD_OUT` — 6 classes never used in training, neither their audio nor
  their names; :data:`DESCRIPTIONS` describes each in words TinyCLAP did learn,
  for real zero-shot transfer.
* :data:`CONCEPTS` — per class, 1–6 related words: the class's "true concepts"
  for checking concept decompositions.
* :func:`tags` — Freesound-style tags: the Clotho tags that co-occur with the
  class (:func:`assign_tag_words`, 1,874 of the baseline's first 2,000 words).
* :func:`load_synthetic_clips` — single-event clips laid out like ESC-50
  (class names, 5 folds) as a :class:`~clapnb.datasets.ClipSet`.
* :func:`load_synthetic_scenes` — scenes of 1–3 overlapping events with
  captions and ground-truth :class:`Event` lists as a :class:`~clapnb.datasets.SceneSet`.
* :func:`event_masks` — per event, where in the time–frequency plane it dominates.

Held-out data uses small seeds (the notebooks use ``seed=0``); TinyCLAP is
trained on items drawn from a separate seed stream (:func:`training_clip`,
:func:`training_scene`), so no training item is ever a held-out item.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from clapnb import sounds
from clapnb.datasets import ClipSet, SceneSet
from clapnb.model import StftConfig

SAMPLE_RATE = 16_000
CLIP_SECONDS = 5.0
CLIP_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)

#: RMS of an event at 0 dB gain (about -26 dBFS), and the largest peak allowed
_EVENT_RMS = 0.05
_EVENT_PEAK = 0.5

#: bumped whenever synthesis changes, so cached embeddings of old audio are not reused
VERSION = 2

# seed streams: every item seed is derived from (stream, seed, ...) so streams never meet
_CLIPS, _SCENES, _TRAIN_CLIPS, _TRAIN_SCENES = 1, 2, 3, 4

Rng = np.random.Generator


@dataclass(frozen=True)
class SoundClass:
    """One class of the synthetic world.

    name: the class word (a frequent Freesound tag).
    family: the acoustic family (classes of one family are built alike and get confused).
    concepts: 2-6 related tag words: the class's ground-truth concepts.
    phrases: ``(noun phrase, [verbs])`` pairs used by the caption templates.
    anchors: Freesound tags that mark the class in Clotho's metadata; the tags that
        co-occur with them become the class's tag words (:func:`tag_words`).
    synth: ``(rng, n_samples, sample_rate) -> waveform`` of the event.
    min_seconds: shortest event that still sounds like the class.
    description: held-out classes only: a prompt in words TinyCLAP learned
        (their names never appear in its training texts).
    """

    name: str
    family: str
    concepts: tuple[str, ...]
    phrases: tuple[tuple[str, tuple[str, ...]], ...]
    anchors: tuple[str, ...]
    synth: Callable[[Rng, int, int], np.ndarray]
    min_seconds: float = 1.0
    description: str = ""

    @property
    def held_out(self) -> bool:
        return bool(self.description)


def _c(name: str, family: str, concepts: str, phrases: dict[str, str], anchors: str = "",
       min_seconds: float = 1.0) -> SoundClass:
    """Compact constructor: words space-separated, verbs ``|``-separated; the generator is
    :mod:`clapnb.sounds`' function of the class's name."""
    return SoundClass(name, family, tuple(concepts.split()),
                      tuple((noun, tuple(verbs.split("|"))) for noun, verbs in phrases.items()),
                      tuple(f"{name} {anchors}".split()), getattr(sounds, name), min_seconds)


def _held_out(name: str, family: str, description: str) -> SoundClass:
    return SoundClass(name, family, (), (), (), getattr(sounds, name), 1.5, description)


_SOUND_CLASSES = [
    # -- tonal signals ---------------------------------------------------------------
    _c("siren", "signal", "ambulance police emergency firetruck",
       {"a siren": "wails|blares|sounds", "an ambulance siren": "wails|passes",
        "a police siren": "wails|blares", "an emergency siren": "sounds|wails",
        "a firetruck siren": "blares"}, "sirens ambulance police emergency", 1.5),
    _c("alarm", "signal", "alert warning",
       {"an alarm": "beeps|goes off|rings", "an alert": "sounds", "a warning alarm": "beeps",
        "a security alarm": "goes off"}, "alarms alert"),
    _c("beep", "signal", "microwave elevator",
       {"a beep": "sounds|repeats", "an electronic beep": "repeats", "a microwave": "beeps"}, "beeps beeping electronic"),
    _c("phone", "signal", "telephone ring cellphone call",
       {"a phone": "rings", "a telephone": "rings", "a cellphone": "rings|buzzes",
        "a phone call": "rings", "a ringing telephone": "waits"}, "telephone cellphone ringtone"),
    _c("whistle", "signal", "sport",
       {"a whistle": "blows|shrills", "a sport whistle": "blows", "a referee whistle": "blows"}, "whistling"),
    _c("horn", "signal", "honk car truck",
       {"a horn": "honks|blares|sounds", "a car horn": "honks|blares", "a honk": "sounds"},
       "honk car-horn"),
    _c("bell", "signal", "church cathedral",
       {"a bell": "rings|tolls", "a church bell": "rings|tolls", "cathedral bells": "peal"},
       "bells church"),
    _c("chime", "signal", "tinkle ding dong",
       {"a chime": "rings|tinkles", "a chime going ding dong": "rings",
        "a tinkle of chimes": "rings out"}, "chimes windchimes wind-chimes"),
    # -- water and noise textures ----------------------------------------------------
    _c("rain", "texture", "rainfall drizzle raindrops downpour rainy",
       {"rain": "falls|patters", "rainfall": "patters|continues", "a light drizzle": "falls",
        "raindrops": "fall|patter", "a heavy downpour": "pours down"}, "raining rainfall"),
    _c("stream", "texture", "river creek brook babbling",
       {"a stream": "babbles|flows", "a river": "flows|runs", "a creek": "trickles",
        "a brook": "babbles"}, "river brook creek"),
    _c("waterfall", "texture", "fountain cascade",
       {"a waterfall": "roars|pours down", "a fountain": "splashes|runs",
        "a cascade of water": "falls"}, "fountain"),
    _c("shower", "texture", "bathroom bath wet",
       {"a shower": "runs|sprays", "water in a bathroom": "sprays", "a shower in a bath": "runs"},
       "bathroom"),
    _c("waves", "texture", "sea ocean beach surf shore",
       {"waves": "crash|roll in|break on the shore", "the sea": "surges",
        "ocean surf": "rolls in"}, "sea ocean beach surf", 2.0),
    _c("wind", "texture", "breeze gust blowing windy howling gale",
       {"wind": "blows|howls|whooshes", "a breeze": "blows", "a gust of wind": "blows|rushes past",
        "a windy gale": "howls|roars", "howling wind": "blows"}, "windy breeze", 1.5),
    _c("steam", "texture", "hiss pressure valve",
       {"steam": "hisses|escapes", "a valve": "hisses", "a hiss of steam": "releases pressure"},
       "hiss"),
    _c("fire", "texture", "crackle fireplace burning flame",
       {"a fire": "crackles|burns|pops", "a crackling fire": "burns", "a fireplace": "crackles",
        "burning logs": "crackle", "a burning flame": "crackles"}, "crackling fireplace"),
    _c("boiling", "texture", "bubbles stove",
       {"boiling water": "bubbles", "a pot on the stove": "bubbles", "bubbles": "pop"},
       "bubbles boil"),
    _c("static", "texture", "radio interference tuning",
       {"radio static": "crackles|hisses", "a radio": "crackles", "static": "hisses"}, "radio"),
    # -- machines and vehicles -------------------------------------------------------
    _c("engine", "machine", "motor idle diesel revving vehicle",
       {"an engine": "runs|rumbles|idles", "a motor": "runs|hums along",
        "a diesel engine": "idles|rumbles", "a revving engine": "roars"}, "motor diesel"),
    _c("motorcycle", "machine", "motorbike bike",
       {"a motorcycle": "revs|passes|roars", "a motorbike": "accelerates"}, "motorbike"),
    _c("hum", "machine", "buzz electricity electrical power",
       {"a hum": "drones|continues", "an electrical hum": "drones", "a buzz": "drones",
        "a power hum": "drones"}, "buzz electricity"),
    _c("fan", "machine", "ventilation vent air",
       {"a fan": "whirs|spins", "the ventilation": "hums", "an air vent": "blows"},
       "ventilation air-conditioner"),
    _c("drill", "machine", "construction pneumatic",
       {"a drill": "whines|drills", "a pneumatic drill": "whirs",
        "construction drilling": "continues"},
       "drilling power-tool"),
    _c("helicopter", "machine", "chopper flight military",
       {"a helicopter": "flies over|hovers|passes", "a chopper": "flies over",
        "a military helicopter": "hovers"}, "chopper", 1.5),
    _c("jet", "machine", "plane airplane airport aircraft",
       {"a jet": "flies over|roars", "an airplane": "takes off|passes overhead",
        "a plane": "flies over", "an aircraft": "flies over"}, "airplane plane airport", 2.0),
    _c("train", "machine", "railway station railroad subway",
       {"a train": "rolls by|clatters|passes", "a train on the railway": "clatters",
        "a subway train": "passes"}, "railway railroad subway", 1.5),
    _c("traffic", "machine", "city street road urban",
       {"traffic": "passes|rushes by", "cars in the street": "pass by|drive by",
        "city traffic": "rumbles"},
       "cars street city", 2.0),
    # -- impacts -----------------------------------------------------------------------
    _c("knock", "impact", "wooden wood hit",
       {"a knock": "sounds|repeats", "someone knocking on wood": "waits",
        "a wooden knock": "repeats"}, "knocking"),
    _c("clock", "impact", "ticking mechanical time",
       {"a clock": "ticks|ticks steadily", "a ticking clock": "keeps time",
        "the tick of a clock": "repeats"}, "ticking", 1.5),
    _c("footsteps", "impact", "walking steps shoes feet",
       {"footsteps": "approach|pass by|walk along", "steps": "approach|pass by",
        "someone walking": "passes by", "shoes": "tap along"}, "steps walking", 1.5),
    _c("drip", "impact", "drops droplet leak splash",
       {"a drip": "falls|plops", "water drops": "fall|plop", "a droplet": "falls",
        "a leak": "drips"}, "dripping drops"),
    _c("hammer", "impact", "metal iron clang",
       {"a hammer": "strikes|bangs", "hammering on metal": "continues",
        "a metal clang": "repeats"}, "hammering"),
    _c("typing", "impact", "keyboard typewriter office clicking",
       {"typing": "continues", "a keyboard": "clicks|clacks", "a typewriter": "clacks"},
       "keyboard typewriter"),
    _c("door", "impact", "creak slam hinge creaky squeak",
       {"a door": "creaks|slams|opens and closes", "a creaky door": "slams shut",
        "a hinge": "squeaks"}, "slam", 2.0),
    _c("glass", "impact", "bottle clinking cup",
       {"a glass bottle": "clinks", "a glass": "clinks", "a bottle": "clinks"}, "clink"),
    _c("dishes", "impact", "kitchen cutlery cooking pan",
       {"dishes": "clatter|rattle", "cutlery": "clatters", "plates in a kitchen": "clatter"},
       "cutlery plates kitchen"),
    _c("applause", "impact", "clap audience cheer concert",
       {"applause": "rises|fills the room", "an audience": "claps|applauds",
        "a concert audience": "claps|applauds", "a clapping audience": "cheers"}, "clapping"),
    _c("thunder", "impact", "lightning thunderstorm storm boom rumble",
       {"thunder": "rumbles|roars|cracks", "a thunderstorm": "rumbles", "a storm": "rumbles|roars",
        "a rumble of thunder": "rolls"}, "storm thunderstorm", 2.0),
    # -- animals and people --------------------------------------------------------------
    _c("birds", "animal", "birdsong tweet songbird sparrow",
       {"birds": "sing|chirp|tweet", "birdsong": "fills the morning", "a songbird": "sings",
        "a sparrow": "chirps|tweets"}, "bird birdsong"),
    _c("crickets", "animal", "insects night summer",
       {"crickets": "chirp|sing", "insects": "chirp|sing", "night crickets": "chirp"}, "cricket"),
    _c("frogs", "animal", "pond swamp croak",
       {"frogs": "croak|sing", "frogs in a swamp": "croak", "frogs in a pond": "croak"}, "frog"),
    _c("dog", "animal", "growl pet",
       {"a dog": "barks|growls", "a barking dog": "barks"}, "dogs bark barking"),
    _c("bees", "animal", "fly",
       {"bees": "drone", "a swarm of bees": "drones"}, "bee"),
    _c("crowd", "animal", "people voices chatter talking",
       {"a crowd": "chatters|murmurs|talks", "people": "talk|chatter", "voices": "murmur"},
       "people voices chatter", 1.5),
    # -- held out: never in training, described by words TinyCLAP learned ---------------
    _held_out("doorbell", "signal", "a ding dong chime on the door"),
    _held_out("kettle", "signal", "a whistle over boiling water"),
    _held_out("hail", "texture", "hard drops hitting the roof in a heavy storm"),
    _held_out("chainsaw", "machine", "a motor drilling through wood"),
    _held_out("woodpecker", "impact", "a bird knocking on wood"),
    _held_out("cicada", "animal", "loud buzzing insects in summer"),
]

#: the sound classes TinyCLAP was trained on, index -> name
CLASSES: list[str] = [c.name for c in _SOUND_CLASSES if not c.held_out]
#: classes held out of training entirely (names and audio); see :data:`DESCRIPTIONS`
HELD_OUT: list[str] = [c.name for c in _SOUND_CLASSES if c.held_out]
#: held-out class -> a prompt describing it in words TinyCLAP did learn
DESCRIPTIONS: dict[str, str] = {c.name: c.description for c in _SOUND_CLASSES if c.held_out}
#: class name -> its ground-truth concept words (descriptors)
CONCEPTS: dict[str, list[str]] = {c.name: list(c.concepts) for c in _SOUND_CLASSES
                                  if not c.held_out}
#: class name -> acoustic family ("signal", "texture", "machine", "impact", "animal")
FAMILIES: dict[str, str] = {c.name: c.family for c in _SOUND_CLASSES}
_BY_NAME = {c.name: c for c in _SOUND_CLASSES}
_INDEX = {c.name: i for i, c in enumerate(_SOUND_CLASSES)}  # stable per-class seed key


def sound_class(name: str) -> SoundClass:
    """The :class:`SoundClass` called ``name``; a clear error lists the valid names."""
    if name not in _BY_NAME:
        raise KeyError(f"unknown sound class {name!r}; classes: {', '.join(CLASSES)}; "
                       f"held out of training: {', '.join(HELD_OUT)}")
    return _BY_NAME[name]


# ---------------------------------------------------------------------------------
# Events, stems and mixtures
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """One sound event of a clip or scene: enough to re-create its stem exactly.

    label: class name; onset/offset: seconds from the clip start; gain_db: level in
    dB relative to the reference level (see :func:`render_event`); seed: the
    synthesiser's seed (all its random parameters are drawn from it).
    """

    label: str
    onset: float
    offset: float
    gain_db: float
    seed: int

    @property
    def duration(self) -> float:
        return self.offset - self.onset


@dataclass(frozen=True)
class Recipe:
    """Everything needed to re-create a clip: its events and its background noise."""

    events: tuple[Event, ...]
    background_seed: int
    background_db: float  # RMS of the background noise, dBFS
    background: str = "room"  # its kind: a key of clapnb.sounds.AMBIENCES


def render_event(event: Event, n_samples: int = CLIP_SAMPLES,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The event's stem: float32 ``(n_samples,)``, silent outside [onset, offset).

    The class's sound passes a random recording chain (:func:`clapnb.sounds.recording_chain`),
    then is levelled to ``gain_db`` relative to the reference (RMS -26 dBFS, peaks at
    most -6 dBFS, whichever is reached first), with 10 ms fades at both ends.
    """
    rng = np.random.default_rng(event.seed)
    start = int(round(event.onset * sample_rate))
    stop = min(int(round(event.offset * sample_rate)), n_samples)
    x = sound_class(event.label).synth(rng, stop - start, sample_rate)
    x = sounds.recording_chain(rng, x, sample_rate)
    rms, peak = np.sqrt(np.mean(x ** 2)) + 1e-12, np.abs(x).max() + 1e-12
    x = x * min(_EVENT_RMS / rms, _EVENT_PEAK / peak) * 10 ** (event.gain_db / 20)
    ramp = min(int(0.01 * sample_rate), len(x) // 2)
    fade = np.linspace(0, 1, ramp)
    x[:ramp] *= fade
    x[len(x) - ramp:] *= fade[::-1]
    out = np.zeros(n_samples, dtype=np.float32)
    out[start:stop] = x
    return out


def render_background(seed: int, level_db: float, n_samples: int = CLIP_SAMPLES,
                      sample_rate: int = SAMPLE_RATE, kind: str = "room") -> np.ndarray:
    """Background ambience ``kind`` (a key of :data:`clapnb.sounds.AMBIENCES`: room,
    road, office, outdoors), float32 ``(n_samples,)`` with RMS ``level_db`` dBFS."""
    if kind not in sounds.AMBIENCES:
        raise KeyError(f"unknown background {kind!r}; kinds: {', '.join(sounds.AMBIENCES)}")
    x = sounds.AMBIENCES[kind](np.random.default_rng(seed), n_samples, sample_rate)
    return (x * 10 ** (level_db / 20) / (np.sqrt(np.mean(x ** 2)) + 1e-12)).astype(np.float32)


def render_stems(recipe: Recipe, n_samples: int = CLIP_SAMPLES,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``(E + 1, n_samples)`` float32: one stem per event, then the background."""
    stems = [render_event(e, n_samples, sample_rate) for e in recipe.events]
    stems.append(render_background(recipe.background_seed, recipe.background_db, n_samples,
                                   sample_rate, recipe.background))
    return np.stack(stems)


def render(recipe: Recipe, n_samples: int = CLIP_SAMPLES,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The mixture of a recipe: float32 ``(n_samples,)``."""
    return render_stems(recipe, n_samples, sample_rate).sum(axis=0)


class _RecipeLoader:
    """``loader(i) -> waveform`` of a :class:`ClipSet`/:class:`SceneSet`, keeping the recipes."""

    def __init__(self, recipes: list[Recipe]):
        self.recipes = recipes

    def __call__(self, i: int) -> np.ndarray:
        return render(self.recipes[i])


# ---------------------------------------------------------------------------------
# Random recipes
# ---------------------------------------------------------------------------------
def _item_seed(*keys: int) -> int:
    """A 63-bit seed derived from integer ``keys`` (stream, dataset seed, item...)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(2, np.uint32)
               .view(np.uint64)[0] >> np.uint64(1))


def _random_event(rng: Rng, label: str, min_seconds: float, max_seconds: float = CLIP_SECONDS,
                  gain_db: tuple[float, float] = (-6.0, 0.0)) -> Event:
    low = max(min_seconds, sound_class(label).min_seconds)
    duration = round(float(rng.uniform(low, max(low, max_seconds))), 3)
    onset = round(float(rng.uniform(0, CLIP_SECONDS - duration)), 3)
    return Event(label, onset, round(onset + duration, 3), round(float(rng.uniform(*gain_db)), 2),
                 int(rng.integers(2 ** 62)))


#: background level range, dBFS: events sit at -26 dBFS RMS (-6..0 dB gain), so the
#: signal-to-background ratio spreads from about -10 dB (buried) to 34 dB (clean)
BACKGROUND_DB = (-60.0, -22.0)


def _with_background(rng: Rng, events: list[Event]) -> Recipe:
    kind = str(rng.choice(list(sounds.AMBIENCES)))
    return Recipe(tuple(events), int(rng.integers(2 ** 62)),
                  round(float(rng.uniform(*BACKGROUND_DB)), 2), kind)


def clip_recipe(label: str, seed: int) -> Recipe:
    """A single-event clip of class ``label``: one event of 1-5 s (at least the class's
    ``min_seconds``) over a background ambience."""
    rng = np.random.default_rng(seed)
    return _with_background(rng, [_random_event(rng, label, 1.0)])


def scene_recipe(seed: int, min_events: int = 1, max_events: int = 3) -> Recipe:
    """A scene of ``min_events``..``max_events`` events of distinct classes, 1.5-5 s each."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(min_events, max_events + 1))
    labels = rng.choice(CLASSES, size=k, replace=False)
    return _with_background(rng, [_random_event(rng, str(lab), 1.5, gain_db=(-8.0, 0.0))
                             for lab in labels])


def training_clip(index: int, label: str) -> Recipe:
    """The ``index``-th training clip of ``label`` (a seed stream held-out sets never use)."""
    if sound_class(label).held_out:
        raise ValueError(f"{label!r} is held out of training; training classes: CLASSES")
    return clip_recipe(label, _item_seed(_TRAIN_CLIPS, index, _INDEX[label]))


def training_scene(index: int, min_events: int = 1, max_events: int = 3) -> Recipe:
    """The ``index``-th training scene (a seed stream held-out sets never use)."""
    return scene_recipe(_item_seed(_TRAIN_SCENES, index), min_events, max_events)


# ---------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------
def _phrase(rng: Rng, label: str) -> tuple[str, str]:
    """A random (noun phrase, verb) of the class."""
    phrases = sound_class(label).phrases
    noun, verbs = phrases[rng.integers(len(phrases))]
    return noun, verbs[rng.integers(len(verbs))]


_TEMPLATES: dict[int, list[str]] = {
    1: ["{n0} {v0}", "the sound of {n0}", "{n0} can be heard", "{n0} {v0} nearby",
        "{n0} {v0} in an empty room", "a recording of {n0}"],
    2: ["{n0} {v0} over {n1}", "{n0} {v0} while {n1} {v1}", "{n0} and {n1}",
        "{n0} {v0} as {n1} {v1} in the background", "the sound of {n0} with {n1}",
        "{n0} {v0} and {n1} can be heard"],
    3: ["{n0}, {n1} and {n2}", "{n0} {v0} while {n1} and {n2} can be heard",
        "{n0} {v0} over {n1} as {n2} {v2}", "{n0} {v0}; {n1} and {n2} in the background",
        "the sound of {n0}, {n1} and {n2}"],
}


def caption(events: list[Event] | tuple[Event, ...], rng: Rng) -> str:
    """A caption naming every event, loudest first ("A siren wails over rain.")."""
    if not 1 <= len(events) <= 3:
        raise ValueError(f"captions are written for 1-3 events, got {len(events)}")
    ordered = sorted(events, key=lambda e: -e.gain_db)
    words = {}
    for k, e in enumerate(ordered):
        words[f"n{k}"], words[f"v{k}"] = _phrase(rng, e.label)
    templates = _TEMPLATES[len(events)]
    text = templates[rng.integers(len(templates))].format(**words)
    return text[0].upper() + text[1:] + "."


def assign_tag_words(corpus: list[list[str]], candidates: list[str]
                     ) -> list[tuple[str, str, int]]:
    """Give each candidate tag to the training class it goes with in a tag corpus.

    A clip of the corpus "has" class c when one of its tags is an anchor of c
    (:attr:`SoundClass.anchors`). A tag goes to the class with the highest lift,
    ``count(tag, c) / count(c)`` (ties: the larger count), among the classes it
    co-occurs with; class names and concept words always go to their own class.
    Tags that contain a held-out class's name, and tags that co-occur with no
    class, are left out, so held-out names never reach TinyCLAP's training texts.

    Args:
        corpus: per clip, its tags (lower-cased), e.g. Clotho's Freesound keywords.
        candidates: the tags to assign (e.g. the baseline vocabulary's first 2,000).

    Returns:
        ``(tag, class, count)`` rows, in ``candidates`` order.
    """
    anchors = {name: set(sound_class(name).anchors) for name in CLASSES}
    own = {w: name for name in CLASSES for w in (name, *CONCEPTS[name])}
    per_class: dict[str, int] = dict.fromkeys(CLASSES, 0)
    pairs: dict[str, dict[str, int]] = {}
    for tags in corpus:
        present = set(tags)
        hit = [c for c in CLASSES if anchors[c] & present]
        for c in hit:
            per_class[c] += 1
        for tag in present:
            for c in hit:
                row = pairs.setdefault(tag, {})
                row[c] = row.get(c, 0) + 1
    rows = []
    for tag in candidates:
        if any(name in tag for name in HELD_OUT):
            continue
        counts = pairs.get(tag, {})
        if tag in own:
            rows.append((tag, own[tag], max(counts.get(own[tag], 0), 1)))
        elif counts:
            best = max(counts, key=lambda c: (counts[c] / per_class[c], counts[c]))
            rows.append((tag, best, counts[best]))
    return rows


#: the committed assignment (``scripts/build_vocabularies.py`` writes it from Clotho)
TAG_WORDS_FILE = Path(str(importlib.resources.files("clapnb") / "vocabularies" / "synth_tags.tsv"))


@lru_cache(maxsize=1)
def _tag_table() -> dict[str, tuple[list[str], np.ndarray]]:
    if not TAG_WORDS_FILE.is_file():
        raise FileNotFoundError(f"{TAG_WORDS_FILE} is missing; rebuild it with "
                                "python scripts/build_vocabularies.py")
    table: dict[str, tuple[list[str], list[int]]] = {name: ([], []) for name in CLASSES}
    for line in TAG_WORDS_FILE.read_text(encoding="utf-8").splitlines()[1:]:
        tag, name, count = line.split("\t")
        table[name][0].append(tag)
        table[name][1].append(int(count))
    return {name: (ws, np.sqrt(cs) / np.sqrt(cs).sum()) for name, (ws, cs) in table.items()}


def tag_words(label: str) -> list[str]:
    """The Freesound tags that go with class ``label`` (see :func:`assign_tag_words`)."""
    if sound_class(label).held_out:
        raise ValueError(f"{label!r} is held out of training: it has no training tags")
    return list(_tag_table()[label][0])


def tags(label: str, rng: Rng, max_words: int = 4) -> str:
    """Freesound-style tags of a class: its name (half the time) and 1..``max_words``
    of its tag words, drawn with probability proportional to the square root of their
    Clotho co-occurrence count (so rare tags are seen too), shuffled."""
    words, p = _tag_table()[label]
    k = min(int(rng.integers(1, max_words + 1)), len(words))
    chosen = list(rng.choice(words, size=k, replace=False, p=p))
    if label not in chosen and rng.random() < 0.5:
        chosen.append(label)
    return " ".join(rng.permutation(chosen))


# ---------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------
def load_synthetic_clips(n_per_class: int = 40, seed: int = 0,
                         classes: list[str] | None = None) -> ClipSet:
    """Single-event clips laid out like ESC-50: ``n_per_class`` per class, 5 folds.

    Clip k of a class is in fold ``k % 5 + 1``. Audio (float32, 16 kHz, 5 s) is
    synthesised when ``clips.audio(i)`` is called.

    Args:
        n_per_class: clips per class (ESC-50 has 40).
        seed: dataset seed; different seeds give different clips.
        classes: a subset of :data:`CLASSES` (default: all, in that order).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    _check_seed(seed)
    classes = list(CLASSES if classes is None else classes)
    for name in classes:
        sound_class(name)
    recipes, ids, labels, folds = [], [], [], []
    for c, name in enumerate(classes):
        for k in range(n_per_class):
            recipes.append(clip_recipe(name, _item_seed(_CLIPS, seed, _INDEX[name], k)))
            ids.append(f"synth-v{VERSION}-{seed}-{name}-{k:03d}")
            labels.append(c)
            folds.append(k % 5 + 1)
    return ClipSet(name=f"synthetic-clips-v{VERSION}-{seed}", clip_ids=ids, labels=np.array(labels),
                   folds=np.array(folds), class_names=classes, sample_rate=SAMPLE_RATE,
                   loader=_RecipeLoader(recipes))


def load_synthetic_scenes(n: int = 200, seed: int = 0, min_events: int = 1,
                          max_events: int = 3, n_captions: int = 2) -> SceneSet:
    """Scenes of ``min_events``..``max_events`` overlapping events, with captions and
    ground truth (``scenes.events[i]``: list of :class:`Event`).

    Audio is synthesised when ``scenes.audio(i)`` is called; :func:`event_masks`
    gives the per-event time-frequency masks.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    _check_seed(seed)
    if not 1 <= min_events <= max_events <= 3:
        raise ValueError(f"need 1 <= min_events <= max_events <= 3, got {min_events}, {max_events}")
    recipes, captions = [], []
    for i in range(n):
        item = _item_seed(_SCENES, seed, i)
        recipe = scene_recipe(item, min_events, max_events)
        recipes.append(recipe)
        captions.append(_distinct_captions(recipe.events, np.random.default_rng([item, 1]),
                                           n_captions))
    name = f"synthetic-scenes-v{VERSION}-{seed}-{min_events}to{max_events}"
    return SceneSet(name=name, clip_ids=[f"{name}-{i:04d}" for i in range(n)], captions=captions,
                    sample_rate=SAMPLE_RATE, loader=_RecipeLoader(recipes),
                    events=[list(r.events) for r in recipes])


def _check_seed(seed: int) -> None:
    """Refuse a seed numpy cannot take, naming it: seeds are integers >= 0."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}; pick another seed "
                         "(each seed gives a different synthetic set)")


def _distinct_captions(events: tuple[Event, ...], rng: Rng, n: int) -> list[str]:
    out: list[str] = []
    for _ in range(20 * n):
        text = caption(events, rng)
        if text not in out:
            out.append(text)
        if len(out) == n:
            break
    return out


def recipe_of(data: ClipSet | SceneSet, i: int) -> Recipe:
    """The recipe of item ``i`` of a synthetic clip or scene set (subsets included)."""
    loader = data.loader
    if not isinstance(loader, _RecipeLoader):
        raise TypeError(f"{data.name!r} is not a synthetic set from clapnb.synth; ground truth "
                        "exists only for load_synthetic_clips / load_synthetic_scenes")
    return loader.recipes[int(data.index[i]) if data.index is not None else int(i)]


def event_masks(data: ClipSet | SceneSet, i: int, stft_config: StftConfig,
                floor_db: float = -60.0) -> np.ndarray:
    """Where each event of item ``i`` dominates, on the STFT grid of ``stft_config``.

    An event dominates a time-frequency bin when its stem's magnitude exceeds the
    summed magnitudes of all other stems (the other events and the background)
    and is above a floor ``floor_db`` below the mixture's loudest bin.

    Args:
        stft_config: the model's STFT; it is applied to the 16 kHz stems
            (TinyCLAP's rate), giving the grid of ``model.spectrogram(audio)``.

    Returns:
        bool ``(E, F, T)`` with E events in ``recipe_of(data, i).events`` order;
        masks of different events never overlap.
    """
    stems = render_stems(recipe_of(data, i))
    mags = stft_config.stft(torch.from_numpy(stems)).abs().numpy()
    mix = stft_config.stft(torch.from_numpy(stems.sum(axis=0))[None]).abs().numpy()[0]
    floor = mix.max() * 10 ** (floor_db / 20)
    total = mags.sum(axis=0)
    events = mags[:-1]
    return (events > total - events) & (events > floor)
