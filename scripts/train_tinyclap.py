"""Train TinyCLAP on the synthetic sound world and write the committed weights.

    python scripts/train_tinyclap.py     # about 20 min on 2 free CPU cores

Writes clapnb/weights/tinyclap.pt (state dict), clapnb/weights/tinyclap.json
(config + tokenizer vocabulary) and data/tinyclap_training_report.md.

Data: a pool of single-event clips of the 44 training classes (paired with
Freesound-style tags, captions, or now and then a prompt such as "This is a sound
of {class}.") and scenes of 1-3 events (paired with captions or tags), drawn from
training seed streams of clapnb.synth that held-out sets never use. The 6 held-out
classes never appear, neither their audio nor their names (checked). Each pool item is synthesised once; its mel power is
kept in memory and augmented every epoch (random gain, added noise), and its
text is re-drawn every epoch. Loss: symmetric InfoNCE (CLIP) with soft targets,
where every pair whose audio and text name the same set of classes counts as
positive. Deterministic: fixed seeds, deterministic algorithms, 2 threads.
"""

from __future__ import annotations

import argparse
import importlib.util
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

#: prompt templates for single-event clips, a small share of the texts (real CLAPs learn
#: from captions and tags, not from the evaluation's templates); the first is the
#: zero-shot prompt of both papers
PROMPTS = ["This is a sound of {}.", "the sound of {}", "{}"]
#: validation seeds (the benchmark uses others)
VAL_SEED = 777


@dataclass
class TrainConfig:
    clips_per_class: int = 150
    scenes: int = 6000
    epochs: int = 6
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
    """A text naming exactly the item's classes: prompt, Freesound-style tags or caption."""
    events = item.recipe.events
    if len(events) == 1:
        label = events[0].label
        u = rng.random()
        if u < (0.05 if item.is_scene else 0.1):
            return PROMPTS[rng.integers(len(PROMPTS))].format(label)
        if u < (0.35 if item.is_scene else 0.6):
            return synth.tags(label, rng, 6)
        return synth.caption(events, rng)
    if rng.random() < 0.25:
        return " ".join(synth.tags(e.label, rng, 3) for e in rng.permutation(list(events)))
    return synth.caption(events, rng)


def check_no_held_out(texts: list[list[str]]) -> None:
    """Refuse to train when a held-out class name reached a training text."""
    held = set(synth.HELD_OUT)
    leaked = {w for epoch in texts for t in epoch for w in words(t)} & held
    if leaked:
        raise RuntimeError(f"held-out class names in training texts: {sorted(leaked)}")


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


@dataclass
class Validation:
    """Held-out data scored after every epoch (log mel power kept in memory)."""

    clip_mels: torch.Tensor
    clip_labels: np.ndarray
    scene_mels: torch.Tensor
    captions: list[str]


def load_validation(workers: int) -> Validation:
    clips = synth.load_synthetic_clips(n_per_class=10, seed=VAL_SEED)
    scenes = synth.load_synthetic_scenes(n=200, seed=VAL_SEED)
    return Validation(render_pool(clips.loader.recipes, workers, "validation clips"), clips.labels,
                      render_pool(scenes.loader.recipes, workers, "validation scenes"),
                      [c[0] for c in scenes.captions])


def train(model: TinyClap, cfg: TrainConfig, pool: list[Item], mels: torch.Tensor,
          texts: list[list[str]], val: Validation, clock: float) -> list[dict]:
    """The training loop; returns the per-epoch history (loss, validation metrics, time)."""
    mel_fb = model.audio_encoder.mel_fb
    band_weight = mel_fb.sum(dim=1) / mel_fb.sum(dim=1).mean()  # white noise per mel band
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
            losses.append(loss.item())
            if b % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}",
                                scale=f"{model.logit_scale:.1f}")
        metrics = evaluate(model, val.clip_mels, val.clip_labels, val.scene_mels, val.captions)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), **metrics,
                        "logit_scale": model.logit_scale,
                        "wall_seconds": time.perf_counter() - clock})
        print(json.dumps(history[-1]), flush=True)
    return history


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

    pool = build_pool(cfg)
    mels = render_pool([it.recipe for it in pool], cfg.threads, "synthesising training pool")
    val = load_validation(cfg.threads)
    synth_seconds = time.perf_counter() - wall0

    # texts for every epoch, drawn up front: the vocabulary is every word they use
    texts = [[draw_text(it, rng) for it in pool] for _ in range(cfg.epochs)]
    check_no_held_out(texts)
    vocabulary = sorted({w for epoch in texts for t in epoch for w in words(t)}
                        | {w for p in PROMPTS for w in words(p)})
    model = TinyClap(TinyConfig(vocabulary=vocabulary))
    history = train(model, cfg, pool, mels, texts, val, wall0)

    model.eval()
    save_tiny(model, args.out / WEIGHTS_FILE.name, args.out / CONFIG_FILE.name)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    timing = {"wall_seconds": time.perf_counter() - wall0,
              "cpu_seconds": time.process_time() - cpu0 + children.ru_utime + children.ru_stime,
              "synthesis_wall_seconds": synth_seconds}
    print(json.dumps(timing))
    if not args.no_report and not args.quick:
        held_out = run_benchmark(args.out)
        write_report(cfg, model, pool, vocabulary, history, timing, held_out)


def run_benchmark(weights_dir: Path) -> dict:
    """Run benchmarks/tinyclap.py on the new weights (held-out seeds) and return its figures."""
    path = ROOT / "benchmarks" / "tinyclap.py"
    spec = importlib.util.spec_from_file_location("bench_tinyclap", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.main(["--weights-dir", str(weights_dir)])


def write_report(cfg: TrainConfig, model: TinyClap, pool: list[Item], vocabulary: list[str],
                 history: list[dict], timing: dict, held_out: dict) -> None:
    """Write data/tinyclap_training_report.md from this run's figures."""
    mc = model.config
    n_params = {name: sum(p.numel() for p in part.parameters())
                for name, part in [("audio", model.audio_encoder), ("text", model.text_encoder)]}
    size_mb = (WEIGHTS_FILE.parent / WEIGHTS_FILE.name).stat().st_size / 1e6
    n_events = [len(it.recipe.events) for it in pool if it.is_scene]
    bands = mc.n_mels // 2 ** len(mc.channels)
    rows = "\n".join(f"| {h['epoch']} | {h['loss']:.3f} | {h['zero_shot_accuracy']:.3f} | "
                     f"{h['t2a_R@1']:.3f} | {h['t2a_R@5']:.3f} | {h['logit_scale']:.1f} | "
                     f"{h['wall_seconds']:.0f} |" for h in history)
    ho = held_out
    lines = [
        "# TinyCLAP training report",
        "",
        "Generated by `python scripts/train_tinyclap.py` (every run rewrites this file).",
        "Held-out evaluation of the committed weights: `python benchmarks/tinyclap.py`.",
        "",
        "## Data (synthetic, `clapnb.synth`)",
        f"- {len(synth.CLASSES)} procedurally synthesised classes in five acoustic families: "
        f"{', '.join(synth.CLASSES)}. Held out entirely (audio and names): "
        f"{', '.join(synth.HELD_OUT)}; no training text contains their names (checked).",
        f"- Training pool: {cfg.clips_per_class} single-event clips per class "
        f"({cfg.clips_per_class * len(synth.CLASSES)}) and {cfg.scenes} scenes of 1-3 events "
        f"({n_events.count(1)} / {n_events.count(2)} / {n_events.count(3)} with 1 / 2 / 3 events), "
        f"5 s at 16 kHz over one of four background ambiences at {synth.BACKGROUND_DB[0]:g} to "
        f"{synth.BACKGROUND_DB[1]:g} dBFS (events at -32 to -26 dBFS), after a random recording "
        "chain (`sounds.recording_chain`), from the "
        "training seed streams (`synth.training_clip`, `synth.training_scene`) that held-out "
        "sets (`load_synthetic_clips/scenes(seed=...)`) never use. Each item is synthesised "
        "once; its mel power is kept in memory.",
        "- Texts, drawn anew every epoch: a single-event clip gets a prompt (one of "
        f"{', '.join(repr(p) for p in PROMPTS)}, 10 %), Freesound-style tags "
        "(1-6 of the Clotho tags that co-occur with the class, `synth.tags`, 50 %) or a caption "
        "(40 %); a one-event scene gets 5 % prompts, 30 % tags, 65 % captions; a scene of 2-3 "
        "events a caption (75 %) or the tags of each event (25 %).",
        f"- Augmentation, every epoch, on the mel power: gain {cfg.gain_db[0]:+g} to "
        f"{cfg.gain_db[1]:+g} dB; with probability {cfg.noise_prob} white noise at "
        f"{cfg.snr_db[0]:g}-{cfg.snr_db[1]:g} dB SNR.",
        "- Validation (printed every epoch): 10 clips per class and 200 scenes of seed "
        f"{VAL_SEED}.",
        "",
        "## Model (`clapnb.tiny`)",
        f"- Audio ({n_params['audio']:,} parameters): |STFT| (n_fft {mc.n_fft}, hop "
        f"{mc.hop_length}) -> {mc.n_mels}-band log-mel, computed inside `encode_spectrogram` -> "
        f"BatchNorm -> {len(mc.channels)} blocks conv3x3-BN-ReLU-avgpool2 with "
        f"{list(mc.channels)} channels (their outputs are the `features` for a decoder) -> mean "
        f"and max over time of the {bands} remaining frequency rows x {mc.channels[-1]} channels "
        f"-> MLP -> {mc.embed_dim}-d. Encoding one 5 s clip takes about 5 ms on one CPU core.",
        f"- Text ({n_params['text']:,} parameters): lowercase words; a word is the mean of its "
        f"word vector (if seen in training) and its hashed character {mc.ngram_min}-"
        f"{mc.ngram_max}-grams ({mc.n_buckets} buckets, {mc.text_dim}-d); attention pooling -> "
        f"MLP -> {mc.embed_dim}-d. {len(vocabulary)} words were seen in training "
        f"(`model.known_words`); word vectors are hidden {cfg.drop_word:.0%} of the time so the "
        "n-grams carry meaning too.",
        f"- Learned temperature: logit_scale = {model.logit_scale:.1f} after training "
        "(capped at 100).",
        f"- Weights: `clapnb/weights/{WEIGHTS_FILE.name}` ({size_mb:.1f} MB, a state dict stored "
        f"as float16, `torch.load(weights_only=True)`) and `clapnb/weights/{CONFIG_FILE.name}` "
        "(config and vocabulary).",
        "",
        "## Training",
        "- Symmetric InfoNCE with soft targets (every pair whose audio and text name the same "
        f"class set is a positive), AdamW lr {cfg.lr} ({cfg.warmup_steps} warm-up steps, cosine "
        f"decay), weight decay {cfg.weight_decay}, batch {cfg.batch_size}, {cfg.epochs} epochs "
        f"({len(pool) // cfg.batch_size * cfg.epochs} steps).",
        f"- Deterministic: seed {cfg.seed}, `torch.use_deterministic_algorithms(True)`, "
        f"{cfg.threads} threads; two runs give byte-identical weight files.",
        f"- Time: {timing['wall_seconds']:.0f} s wall ({timing['synthesis_wall_seconds']:.0f} s "
        f"of it synthesising), {timing['cpu_seconds']:.0f} s CPU (main process and workers), "
        f"{cfg.threads} threads on {platform.machine()}, torch {torch.__version__}, Python "
        f"{sys.version.split()[0]}. The machine was shared with other jobs, so both may be "
        "inflated.",
        "",
        "| epoch | loss | val zero-shot acc | val t2a R@1 | val t2a R@5 | logit_scale | wall s |",
        "|---|---|---|---|---|---|---|",
        rows,
        "",
        f"Training config: `{json.dumps(asdict(cfg))}`",
        "",
        "## Held-out evaluation (`python benchmarks/tinyclap.py` on these weights)",
        f"Seed {ho['seed']}, never used in training: {ho['n_clips']} single-event clips "
        f"({ho['n_clips'] // ho['n_classes']} per class), clips of the {len(synth.HELD_OUT)} "
        f"held-out classes and {ho['n_scenes']} scenes.",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| `{k}` | {v:.3f} |" if isinstance(v, float) else f"| `{k}` | {v} |"
          for k, v in held_out.items() if isinstance(v, (int, float)) and k != "seed"],
        "",
        "```json",
        json.dumps(held_out),
        "```",
        "",
    ]
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text("\n".join(lines))

if __name__ == "__main__":
    main()
