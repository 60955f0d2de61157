"""Train TinyCLAP on the synthetic sound world and write the committed weights.

    python scripts/train_tinyclap.py            # ~10-15 min on 2 CPU cores

Writes clapnb/weights/tinyclap.pt (state dict), clapnb/weights/tinyclap.json
(config + tokenizer vocabulary) and data/tinyclap_training_report.md.

Data: a pool of single-event clips (paired with prompts "This is a sound of
{class}.", other templates, or Freesound-style tags) and scenes of 1-3 events
(paired with captions), drawn from training seed streams of clapnb.synth that
held-out sets never use. Each pool item is synthesised once; its mel power is
kept in memory and augmented every epoch (random gain, added noise), and its
text is re-drawn every epoch. Loss: symmetric InfoNCE (CLIP) with soft targets,
where every pair whose audio and text name the same set of classes counts as
positive. Deterministic: fixed seeds, deterministic algorithms, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from clapnb import synth
from clapnb.tiny import CONFIG_FILE, WEIGHTS_FILE, TinyClap, TinyConfig, save_tiny, words

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "data" / "tinyclap_training_report.md"

#: prompt templates for single-event clips; the first is the zero-shot prompt
PROMPTS = ["This is a sound of {}.", "a sound of {}", "{}", "the sound of {}",
           "a recording of {}", "{} can be heard", "this is {}"]
#: validation seeds (the benchmark uses others)
VAL_SEED = 777


@dataclass
class TrainConfig:
    clips_per_class: int = 200
    scenes: int = 4000
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    drop_word: float = 0.15      # hide word vectors so character n-grams learn too
    gain_db: tuple[float, float] = (-10.0, 6.0)
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    seed: int = 0
    threads: int = 2


# ---------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------
@dataclass
class Item:
    """A pool item: its recipe and the class set its texts must name."""

    recipe: synth.Recipe
    is_scene: bool

    @property
    def key(self) -> frozenset[str]:
        return frozenset(e.label for e in self.recipe.events)


_MODEL_FOR_WORKER: TinyClap | None = None


def _log_mel_power(recipe: synth.Recipe) -> np.ndarray:
    """Render a recipe and return ln(mel power) as float16 ``(n_mels, T)`` (worker side)."""
    global _MODEL_FOR_WORKER
    if _MODEL_FOR_WORKER is None:
        torch.set_num_threads(1)
        _MODEL_FOR_WORKER = TinyClap(TinyConfig())
    m = _MODEL_FOR_WORKER
    x = torch.from_numpy(synth.render(recipe))[None]
    with torch.no_grad():
        mel = m.audio_encoder.mel_power(m.stft_config.stft(x).abs())[0]
    return torch.log(mel + 1e-12).numpy().astype(np.float16)


def render_pool(recipes: list[synth.Recipe], workers: int, desc: str) -> torch.Tensor:
    """``(N, n_mels, T)`` float16 log mel power of every recipe, in order."""
    with ProcessPoolExecutor(workers) as ex:
        mels = list(tqdm(ex.map(_log_mel_power, recipes, chunksize=32), total=len(recipes),
                         desc=desc, mininterval=5))
    return torch.from_numpy(np.stack(mels))


def build_pool(cfg: TrainConfig) -> list[Item]:
    items = [Item(synth.training_clip(k, name), False)
             for k in range(cfg.clips_per_class) for name in synth.CLASSES]
    items += [Item(synth.training_scene(i), True) for i in range(cfg.scenes)]
    return items


def draw_text(item: Item, rng: np.random.Generator) -> str:
    """A text naming exactly the item's classes: prompt, tags or caption."""
    events = item.recipe.events
    if len(events) == 1:
        label = events[0].label
        u = rng.random()
        if u < (0.25 if item.is_scene else 0.5):
            return PROMPTS[rng.integers(len(PROMPTS))].format(label)
        if u < (0.4 if item.is_scene else 0.75):
            return synth.tags(label, rng)
        return synth.caption(events, rng)
    if rng.random() < 0.15:
        return " ".join(synth.tags(e.label, rng, 2) for e in rng.permutation(list(events)))
    return synth.caption(events, rng)


def augment(log_mel: torch.Tensor, cfg: TrainConfig, gen: torch.Generator,
            band_weight: torch.Tensor) -> torch.Tensor:
    """Random gain and, with ``noise_prob``, white noise at a random SNR: returns mel power."""
    n = len(log_mel)
    mel = log_mel.float().exp()
    lo, hi = cfg.gain_db
    gain = 10 ** ((lo + (hi - lo) * torch.rand(n, 1, 1, generator=gen)) / 10)
    mel = mel * gain
    lo, hi = cfg.snr_db
    snr = 10 ** ((lo + (hi - lo) * torch.rand(n, 1, 1, generator=gen)) / 10)
    use = (torch.rand(n, 1, 1, generator=gen) < cfg.noise_prob).float()
    noise = mel.mean(dim=(1, 2), keepdim=True) / snr * band_weight[None, :, None]
    return mel + use * noise


# ---------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: TinyClap, clip_mels: torch.Tensor, clip_labels: np.ndarray,
             scene_mels: torch.Tensor, scene_captions: list[str]) -> dict[str, float]:
    model.eval()
    prompts = [PROMPTS[0].format(c) for c in synth.CLASSES]
    t = model.embed_text(prompts)
    a = F.normalize(model.audio_encoder.from_mel_power(clip_mels.float().exp())[0], dim=-1)
    acc = float(((a @ t.T).argmax(1).numpy() == clip_labels).mean())
    s = F.normalize(model.audio_encoder.from_mel_power(scene_mels.float().exp())[0], dim=-1)
    q = model.embed_text(scene_captions)
    rank = (q @ s.T).argsort(dim=1, descending=True)
    hit = rank == torch.arange(len(q))[:, None]
    model.train()
    return {"zero_shot_accuracy": acc, "t2a_R@1": float(hit[:, :1].any(1).float().mean()),
            "t2a_R@5": float(hit[:, :5].any(1).float().mean())}


# ---------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------
def contrastive_loss(audio: torch.Tensor, text: torch.Tensor, keys: list[frozenset[str]],
                     log_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE; pairs whose class sets match are all positives (soft targets)."""
    logits = log_scale.clamp(max=np.log(100.0)).exp() * audio @ text.T
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32)
    targets = same / same.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for smoke-testing")
    parser.add_argument("--out", type=Path, default=WEIGHTS_FILE.parent,
                        help="folder for tinyclap.pt / tinyclap.json")
    parser.add_argument("--no-report", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig()
    if args.quick:
        cfg.clips_per_class, cfg.scenes, cfg.epochs = 10, 200, 1

    wall0, cpu0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)

    # data: training pool, and validation from a held-out seed
    pool = build_pool(cfg)
    mels = render_pool([it.recipe for it in pool], cfg.threads, "synthesising training pool")
    val_clips = synth.load_synthetic_clips(n_per_class=10, seed=VAL_SEED)
    val_scenes = synth.load_synthetic_scenes(n=200, seed=VAL_SEED)
    val_clip_mels = render_pool(val_clips.loader.recipes, cfg.threads, "validation clips")
    val_scene_mels = render_pool(val_scenes.loader.recipes, cfg.threads, "validation scenes")
    val_captions = [c[0] for c in val_scenes.captions]
    synth_seconds = time.perf_counter() - wall0

    # texts for every epoch, drawn up front: the vocabulary is every word they use
    texts = [[draw_text(it, rng) for it in pool] for _ in range(cfg.epochs)]
    vocabulary = sorted({w for epoch in texts for t in epoch for w in words(t)}
                        | {w for p in PROMPTS for w in words(p)})
    model = TinyClap(TinyConfig(vocabulary=vocabulary))
    band_weight = model.audio_encoder.mel_fb.sum(dim=1) / model.audio_encoder.mel_fb.sum(dim=1).mean()

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "table" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "table" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    steps_per_epoch = len(pool) // cfg.batch_size
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps)
                                              * 0.5 * (1 + np.cos(np.pi * min(s / total, 1.0))))
    gen = torch.Generator().manual_seed(cfg.seed)
    history = []
    model.train()
    step = 0
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(pool), generator=gen).numpy()
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", mininterval=10)
        for b in bar:
            idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            mel = augment(mels[idx], cfg, gen, band_weight)
            a = F.normalize(model.audio_encoder.from_mel_power(mel)[0], dim=-1)
            t = F.normalize(model.text_encoder([texts[epoch][i] for i in idx], cfg.drop_word, gen),
                            dim=-1)
            loss = contrastive_loss(a, t, [pool[i].key for i in idx], model.log_logit_scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            losses.append(loss.item())
            if b % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale:.1f}")
        metrics = evaluate(model, val_clip_mels, val_clips.labels, val_scene_mels, val_captions)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **metrics,
                        "logit_scale": model.logit_scale,
                        "wall_seconds": time.perf_counter() - wall0})
        print(json.dumps(history[-1]), flush=True)

    model.eval()
    args.out.mkdir(parents=True, exist_ok=True)
    save_tiny(model, args.out / WEIGHTS_FILE.name, args.out / CONFIG_FILE.name)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {"wall_seconds": time.perf_counter() - wall0,
              "cpu_seconds": time.process_time() - cpu0 + children.ru_utime + children.ru_stime,
              "synthesis_wall_seconds": synth_seconds}
    print(json.dumps(timing))
    if not args.no_report and not args.quick:
        write_report(cfg, model, pool, vocabulary, history, timing)


def write_report(cfg: TrainConfig, model: TinyClap, pool: list[Item], vocabulary: list[str],
                 history: list[dict], timing: dict) -> None:
    n_params = {name: sum(p.numel() for p in part.parameters())
                for name, part in [("audio", model.audio_encoder), ("text", model.text_encoder)]}
    size_mb = (WEIGHTS_FILE.parent / WEIGHTS_FILE.name).stat().st_size / 1e6
    n_scene_events = [len(it.recipe.events) for it in pool if it.is_scene]
    rows = "\n".join(f"| {h['epoch']} | {h['loss']:.3f} | {h['zero_shot_accuracy']:.3f} | "
                     f"{h['t2a_R@1']:.3f} | {h['t2a_R@5']:.3f} | {h['logit_scale']:.1f} | "
                     f"{h['wall_seconds']:.0f} |" for h in history)
    text = f"""# TinyCLAP training report

Generated by `python scripts/train_tinyclap.py` (this file is rewritten by every run).
Held-out evaluation of the committed weights: `python benchmarks/tinyclap.py`.

## Data (synthetic, `clapnb.synth`)
- {len(synth.CLASSES)} procedurally synthesised classes: {", ".join(synth.CLASSES)}.
- Training pool: {cfg.clips_per_class} single-event clips per class
  ({cfg.clips_per_class * len(synth.CLASSES)}) + {cfg.scenes} scenes of 1-3 events
  ({n_scene_events.count(1)}/{n_scene_events.count(2)}/{n_scene_events.count(3)} with 1/2/3 events);
  5 s at 16 kHz, drawn from the training seed streams (`synth.training_clip`,
  `synth.training_scene`) that held-out sets (`load_synthetic_clips/scenes(seed=...)`) never use.
- Texts, re-drawn every epoch: single-event clips get a prompt ("This is a sound of {{class}}."
  or one of {len(PROMPTS) - 1} other templates, 50 %), Freesound-style tags (class word and/or
  concept words, 25 %) or a caption (25 %); scenes get captions (multi-event scenes 15 % tag lists).
- Augmentation (every epoch, on the mel power): gain {cfg.gain_db[0]:+g}..{cfg.gain_db[1]:+g} dB;
  with probability {cfg.noise_prob} white noise at {cfg.snr_db[0]:g}-{cfg.snr_db[1]:g} dB SNR.
- Validation (printed per epoch): 10 clips per class and 200 scenes from seed {VAL_SEED}.

## Model (`clapnb.tiny`)
- Audio: |STFT| (n_fft {model.config.n_fft}, hop {model.config.hop_length}) -> {model.config.n_mels}-band log-mel
  (inside `encode_spectrogram`) -> BatchNorm -> {len(model.config.channels)} blocks
  conv3x3-BN-ReLU-avgpool2 with {list(model.config.channels)} channels -> mean over frequency,
  mean+max over time -> MLP -> {model.config.embed_dim}-d. {n_params["audio"]:,} parameters.
- Text: lowercase words; each word = mean of its word vector (if seen) and hashed character
  {model.config.ngram_min}-{model.config.ngram_max}-grams ({model.config.n_buckets} buckets,
  {model.config.text_dim}-d); attention pooling -> MLP -> {model.config.embed_dim}-d.
  {n_params["text"]:,} parameters. Vocabulary: {len(vocabulary)} words seen in training
  (`model.known_words`); word vectors are hidden {cfg.drop_word:.0%} of the time in training so
  the n-grams carry meaning too.
- Learned temperature: logit_scale = {model.logit_scale:.1f} after training (capped at 100).
- Weights: `clapnb/weights/{WEIGHTS_FILE.name}` ({size_mb:.1f} MB, float32 state dict,
  `torch.load(weights_only=True)`) + `clapnb/weights/{CONFIG_FILE.name}` (config and vocabulary).

## Training
- Symmetric InfoNCE with soft targets (pairs naming the same class set are positives),
  AdamW lr {cfg.lr} (warm-up {cfg.warmup_steps} steps, cosine decay), weight decay
  {cfg.weight_decay}, batch {cfg.batch_size}, {cfg.epochs} epochs ({len(pool) // cfg.batch_size * cfg.epochs} steps).
- Deterministic: seed {cfg.seed}, `torch.use_deterministic_algorithms(True)`, {cfg.threads} threads.
- Time: {timing["wall_seconds"]:.0f} s wall ({timing["synthesis_wall_seconds"]:.0f} s of it synthesising
  the pool), {timing["cpu_seconds"]:.0f} s CPU (main process + workers), on
  {platform.processor() or platform.machine()} with {cfg.threads} threads, torch {torch.__version__},
  Python {sys.version.split()[0]}. The machine was shared with other jobs, so wall time is inflated.

| epoch | loss | val zero-shot acc | val t2a R@1 | val t2a R@5 | logit_scale | wall s |
|---|---|---|---|---|---|---|
{rows}

Training config: `{json.dumps(asdict(cfg))}`
"""
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text)


if __name__ == "__main__":
    main()
