"""Regenerate the offline column of docs/key_results.md from the benchmarks' JSON lines.

    python scripts/key_results.py --run tinyclap concepts_downstream lmaczs faithfulness
    python scripts/key_results.py --import lmaczs=/tmp/lmaczs.out --commit abc1234 --date 2026-11-30
    python scripts/key_results.py            # only re-render the page from the stored lines

Each benchmark prints one JSON object as its last line. ``--run`` runs the named benchmarks
offline (one CPU thread each) and stores that line, with the commit, the date and the wall
time, in ``docs/key_results_offline.jsonl``; ``--import`` stores the last line of a saved
output instead. Then the tables between ``<!-- generated:start -->`` and
``<!-- generated:end -->`` in ``docs/key_results.md`` are rewritten from the stored lines
and paper A's tables (``clapnb.papers``); the prose around them is left alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "docs/key_results_offline.jsonl"
PAGE = ROOT / "docs/key_results.md"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"
ONLINE = "not measured yet"
METHODS = ("LMAC-ZS", "Saliency", "SmoothGrad", "Integrated Gradients", "Grad-CAM", "Grad-CAM++")


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def load() -> dict[str, dict]:
    if not STORE.exists():
        return {}
    return {r["benchmark"]: r for r in map(json.loads, STORE.read_text().splitlines()) if r}


def store(records: dict[str, dict]) -> None:
    STORE.write_text("".join(json.dumps(records[k]) + "\n" for k in sorted(records)))


def run(name: str) -> dict:
    env = {**os.environ, "CLAPNB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    out = subprocess.run([sys.executable, f"benchmarks/{name}.py"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return {"benchmark": name, "commit": _git("rev-parse", "--short", "HEAD"),
            "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - start),
            "result": json.loads(out.strip().splitlines()[-1])}


# ---------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------
def ci(v: float, low: float, high: float) -> str:
    return f"{v:.3f} [{low:.3f}, {high:.3f}]"


def source(rec: dict | None) -> str:
    if rec is None:
        return "not run"
    return f"`benchmarks/{rec['benchmark']}.py`, commit {rec['commit']}, {rec['date']}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def concepts_section(recs: dict) -> str:
    from clapnb import papers
    t1, t2, t3 = papers.TABLE_I, papers.TABLE_II, papers.TABLE_III
    cd = recs.get("concepts_downstream")
    if cd is None:
        return "_concepts_downstream not run yet_"
    r = cd["result"]
    lam = 0.1  # the λ of the offline tables (notebooks 04-05 use LAM_TABLE = LAM = 0.1)
    zs = next(z for z in r["pruned"]["zero_shot"] if z["lam"] == lam)
    rt = next(z for z in r["pruned"]["retrieval"] if z["lam"] == lam)
    d, dr, ft = r["dense"]["accuracy"], r["dense"]["retrieval"], r["finetune"]

    def rci(x: dict, k: str) -> str:
        return ci(x[k], x[k + "_low"], x[k + "_high"])

    paper_l0 = f"l0 {papers.PAPER_A_L0[0]}-{papers.PAPER_A_L0[1]}"
    head = ["measure", f"offline: TinyCLAP, synthetic ({r['n_clips']} clips, {r['n_scenes']} scenes)",
            "online: a real CLAP", f"paper A: {papers.PAPER_A_MODEL} (published)"]
    rows = [
        ["zero-shot accuracy, dense", rci(d, "accuracy"), ONLINE,
         f"ESC-50 {t1['dense']['ESC-50']} · US8K {t1['dense']['US8K']}"],
        [f"zero-shot accuracy, concepts (pruned, λ {lam}; paper: {paper_l0})",
         f"{rci(zs, 'accuracy')}, l0 {zs['l0']:.1f}", ONLINE,
         f"ESC-50 {t1['concept']['ESC-50']} · US8K {t1['concept']['US8K']}"],
        ["text→audio R@1, dense", rci(dr, "t2a_R@1"), ONLINE, f"Clotho {t2['dense']['t2a_R@1']}"],
        ["text→audio R@1, concepts", rci(rt, "t2a_R@1"), ONLINE, f"Clotho {t2['concept']['t2a_R@1']}"],
        ["audio→text R@1, dense", rci(dr, "a2t_R@1"), ONLINE, f"Clotho {t2['dense']['a2t_R@1']}"],
        ["audio→text R@1, concepts", rci(rt, "a2t_R@1"), ONLINE, f"Clotho {t2['concept']['a2t_R@1']}"],
        ["text→audio mAP@10, dense / concepts", f"{dr['t2a_mAP@10']:.3f} / {rt['t2a_mAP@10']:.3f}", ONLINE,
         f"Clotho {t2['dense']['t2a_mAP@10']} / {t2['concept']['t2a_mAP@10']}"],
        ["fine-tuned accuracy, dense (5-fold CV)",
         ci(ft["dense fine-tuned"]["accuracy"], ft["dense fine-tuned"]["low"], ft["dense fine-tuned"]["high"]),
         ONLINE, f"ESC-50 {t3['fine-tuned dense']['ESC-50']}"],
        ["fine-tuned accuracy, concepts (5-fold CV)",
         ci(ft["concept fine-tuned"]["accuracy"], ft["concept fine-tuned"]["low"], ft["concept fine-tuned"]["high"]),
         ONLINE, f"ESC-50 {t3['fine-tuned concept']['ESC-50']}"],
        ["cosine of the concept reconstruction with the embedding", f"{zs['cosine']:.3f}", ONLINE,
         "0.856-0.871 (Table IV: one Clotho clip, three vocabularies)"],
        ["the class name is among a clip's 3 strongest concepts", rci(zs, "class_name"),
         "no ground truth", "not reported"],
    ]
    if "concept_minus_dense_l0_3" in r:
        rows += [
            ["zero-shot accuracy, concepts minus dense, about 1 / 3 / 10 / 30 concepts per clip "
             "(baseline vocabulary)", " / ".join(f"{r[f'concept_minus_dense_l0_{k}']:+.3f}"
                                                 for k in (1, 3, 10, 30)), ONLINE,
             "no table; its λ sweep: about 20-40 concepts roughly match dense"],
            ["cosine of the reconstruction with the embedding, about 1 / 3 / 10 / 30 concepts per "
             "clip", " / ".join(f"{r['by_l0'][str(k)]['cosine']:.3f}" for k in (1, 3, 10, 30)), ONLINE,
             "0.856-0.871 (Table IV: one Clotho clip; its λ, hence l0, not stated)"],
            ["fine-tuning gain (fine-tuned minus zero-shot), dense / concepts",
             f"{r['finetune_gain_dense']:+.3f} / {r['finetune_gain_concept']:+.3f}", ONLINE,
             f"ESC-50 {t3['fine-tuned dense']['ESC-50'].value - t1['dense']['ESC-50'].value:+.3f} / "
             f"{t3['fine-tuned concept']['ESC-50'].value - t1['concept']['ESC-50'].value:+.3f}"],
            ["fine-tuning gain on the 6 classes held out of TinyCLAP's training, dense / concepts",
             f"{r['finetune_gain_dense_heldout_classes']:+.3f} / "
             f"{r['finetune_gain_concept_heldout_classes']:+.3f}", "no held-out classes",
             "not applicable"],
            ["a clip's nearest other clip is of its class (trained / held-out classes)",
             f"{r['finetune']['nearest_clip_same_class']:.3f} / "
             f"{r['finetune_heldout_classes']['nearest_clip_same_class']:.3f}", ONLINE,
             "not reported"],
            ["best linear classifier (logistic regression, same folds) minus zero-shot: the most "
             "a linear map can gain (trained / held-out classes)",
             f"{r['linear_probe_gain']:+.3f} / {r['linear_probe_gain_heldout_classes']:+.3f}", ONLINE,
             "not reported"]]
    sweep = [[v, f"{z['lam']:g}", f"{z['l0']:.1f}", f"{z['cosine']:.3f}", rci(z, "accuracy"),
              rci(z, "class_name"), rci(q, "t2a_R@1")]
             for v in ("baseline", "pruned", "clustered")
             for z, q in zip(r[v]["zero_shot"], r[v]["retrieval"])]
    words = ", ".join(f"{v} {r[v]['words']} (holding {r[v]['zero_shot'][0]['class_name_in_vocabulary']:.0%} "
                      "of the class names)" for v in ("baseline", "pruned", "clustered"))
    tc = recs.get("tinyclap")
    extra = ""
    if tc:
        t = tc["result"]
        extra = (f"\n\nTinyCLAP itself ({source(tc)}; {t['n_clips']} clips, {t['n_scenes']} scenes of "
                 f"seed {t['seed']}): zero-shot accuracy {ci(t['zero_shot_accuracy'], *t['zero_shot_ci95'])}, "
                 f"worst class {t['worst_class_accuracy']:.3f}; caption→scene R@1 {t['t2a_recall_at_1']:.3f}, "
                 f"R@5 {t['t2a_recall_at_5']:.3f} (a ranking that knows only each scene's classes reaches "
                 f"R@1 {t['t2a_class_set_oracle_at_1']:.3f}); logit scale {t['logit_scale']}.")
        if "prompt_spread" in t:
            extra += (f" Accuracy by prompt template: "
                      + ", ".join(f"`{k}` {v:.3f}" for k, v in t["accuracy_by_template"].items())
                      + f" (spread {t['prompt_spread']:.3f}). Classes never trained on, described in "
                      f"words it learned: {t['heldout_class_accuracy']:.3f} (chance "
                      f"{t['heldout_class_chance']:.3f}; by their unseen names "
                      f"{t['heldout_by_unseen_name_accuracy']:.3f}). Baseline-2000 words it learned: "
                      f"{t['known_vocabulary_words']}. Modality gap (distance between the mean audio and "
                      f"the mean prompt embedding): {t['modality_gap']:.3f}.")
    return (table(head, rows) + f"\n\nOffline: {source(cd)}; 95 % bootstrap intervals in brackets. "
            f"Words each vocabulary keeps offline (those TinyCLAP knows, of 2,000): {words}." + extra +
            "\n\n**The offline λ sweep** (all three vocabularies):\n\n" +
            table(["vocabulary", "λ", "l0", "cosine", "zero-shot accuracy", "class name in top 3",
                   "text→audio R@1"], sweep) +
            "\n\n**Paper A, every dataset** (from `clapnb/papers.py`, copied from its Tables I-III; "
            f"{papers.PAPER_A_MODEL}, λ {papers.PAPER_A_LAM}, {paper_l0}):\n\n" +
            "\n\n".join(f"{caption}:\n\n" + table(["representation", *tab[next(iter(tab))]],
                                                   [[k, *map(str, v.values())] for k, v in tab.items()])
                        for caption, tab in (("Table I, zero-shot classification (accuracy; DCASE17: F1; "
                                              "AudioSet: mAP)", t1), ("Table II, Clotho retrieval", t2),
                                             ("Table III, fine-tuned classification (accuracy)", t3))))


def lmaczs_section(recs: dict) -> str:
    parts = []
    lm = recs.get("lmaczs")
    if lm:
        r = lm["result"]
        parts.append(table(
            ["measure", f"offline: TinyCLAP + shipped decoder, {r['n_scenes']} synthetic scenes "
                        f"({r['n_events']} events)", "online: a real CLAP", "paper B (published)"],
            [["ground-truth ROC-AUC of the maps", f"{r['gt_auc']:.3f}", "no ground truth", "no ground truth"],
             *([["ground-truth ROC-AUC of a loudness map (ignores the prompt)",
                 f"{r['loudness_gt_auc']:.3f}", "no ground truth", "not measured"],
                ["prompt AUC: the prompted event's bins over the other events'",
                 f"{r['prompt_auc']:.3f}", "no ground truth", "not measured"],
                ["prompt AUC of the loudness map (chance 0.5)",
                 f"{r['loudness_prompt_auc']:.3f}", "no ground truth", "not measured"]]
               if "prompt_auc" in r else []),
             *([["prompt AUC by quartile of how far TinyCLAP tells the events apart (least to most)",
                 " / ".join(f"{v:.3f}" for v in r["prompt_auc_by_separation_quartile"]),
                 "no ground truth", "not measured"]]
               if "prompt_auc_by_separation_quartile" in r else []),
             ["mask size, absent / present classes' prompts", f"{r['absent_to_present_mask_ratio']:.2f}",
              ONLINE, "qualitative: masks for unrelated prompts are almost empty"],
             ["Fid-In: masked-in audio keeps the prediction", f"{r['fid_in']:.3f}", ONLINE, "not readable"],
             ["one explanation, ms (1 CPU thread)", f"{r['explain_ms']:.1f}", ONLINE, "not readable"]])
            + f"\n\nOffline: {source(lm)}. Times depend on the machine's load: these runs shared 2 "
              "CPU cores with other jobs.")
    fa = recs.get("faithfulness")
    if fa:
        r = fa["result"]
        names = [m for m in METHODS if m in r["methods"]]
        for condition in ("in-domain", "mix", "noise"):
            if condition not in r["accuracy"]:
                continue
            rows = [[m, *(f"{r['methods'][m][condition][k]:.3f}" if k in ("FF", "Fid-In", "SPS", "MM")
                          else f"{r['methods'][m][condition][k]:.1f}" if k in ("AI", "AD", "AG")
                          else f"{r['methods'][m][condition][k]:.2f}"
                          for k in ("AI", "AD", "AG", "FF", "Fid-In", "SPS", "COMP", "MM"))]
                    for m in names]
            label = {"in-domain": "in-domain", "mix": "out-of-domain, each clip mixed 0.8 / 0.2 with a clip "
                     "of another class", "noise": "out-of-domain, each clip mixed 0.8 / 0.2 with white noise"}[condition]
            parts.append(f"**Faithfulness, {label}** (offline: TinyCLAP, {r['n_clips']} synthetic clips; "
                         f"zero-shot accuracy {r['accuracy'][condition]:.3f}; online: {ONLINE}; "
                         "paper B: not readable):\n\n"
                         + table(["method", "AI ↑", "AD ↓", "AG ↑", "FF ↑", "Fid-In ↑", "SPS ↑", "COMP ↓", "MM"],
                                 rows))
        layers = list(r["methods"][names[0]]["sanity_ssim"])
        parts.append("**Sanity check: mean SSIM between the maps of the trained and the randomised model** "
                     "(lower = the map changed more; randomised from the top layer down; offline, TinyCLAP; "
                     "paper B, qualitatively: LMAC-ZS maps degrade quickly, Grad-CAM++ maps persist):\n\n"
                     + table(["randomised down to", *names],
                             [[layer, *(f"{r['methods'][m]['sanity_ssim'][layer]:.3f}" for m in names)]
                              for layer in layers]))
        if all("gt_auc" in r["methods"][m] for m in names):
            parts.append("**Ground-truth ROC-AUC and speed** (offline only):\n\n" + table(
                ["method", *names, *(["loudness (ignores the prompt)"] if "prompt_auc" in r["methods"][names[0]]
                                     else [])],
                [["ground-truth ROC-AUC", *(f"{r['methods'][m]['gt_auc']:.3f}" for m in names),
                  *([f"{r['methods']['loudness (prompt-blind)']['gt_auc']:.3f}"]
                    if "loudness (prompt-blind)" in r["methods"] else [])],
                 *([["prompt AUC", *(f"{r['methods'][m]['prompt_auc']:.3f}" for m in names),
                     f"{r['methods']['loudness (prompt-blind)']['prompt_auc']:.3f}"]]
                   if "prompt_auc" in r["methods"][names[0]] else [])])
                + f"\n\nOne explanation of one clip: LMAC-ZS {r['lmaczs_ms']:.1f} ms, Integrated Gradients "
                  f"({r['ig_steps']} steps) {r['ig_ms']:.1f} ms ({r['ig_ms'] / r['lmaczs_ms']:.0f}x).")
        parts.append(f"Faithfulness figures: {source(fa)}.")
    return "\n\n".join(parts) or "_lmaczs / faithfulness not run yet_"


def render(recs: dict) -> str:
    return (f"{START}\n<!-- written by scripts/key_results.py from docs/key_results_offline.jsonl; "
            "edit the script, not this block -->\n\n### Concepts (paper A)\n\n" + concepts_section(recs)
            + "\n\n### LMAC-ZS (paper B)\n\n" + lmaczs_section(recs) + f"\n\n{END}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", nargs="*", default=[], help="benchmarks to run now")
    parser.add_argument("--import", dest="imports", nargs="*", default=[], metavar="NAME=FILE")
    parser.add_argument("--commit", default=None, help="commit the imported outputs were made at")
    parser.add_argument("--date", default=time.strftime("%Y-%m-%d"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    recs = load()
    for item in args.imports:
        name, path = item.split("=", 1)
        recs[name] = {"benchmark": name, "commit": args.commit or _git("rev-parse", "--short", "HEAD"),
                      "date": args.date, "wall_s": None,
                      "result": json.loads(Path(path).read_text().strip().splitlines()[-1])}
    for name in args.run:
        print(f"running benchmarks/{name}.py", flush=True)
        recs[name] = run(name)
    if args.run or args.imports:
        store(recs)
    text = PAGE.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    PAGE.write_text(head + render(recs) + tail)
    print(f"{PAGE} updated from {len(recs)} benchmark(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
