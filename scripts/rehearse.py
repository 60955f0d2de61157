"""The rehearsal: the whole online course, run here as a Colab user would, with no network.

    python scripts/rehearse.py                 # the PLAN: every notebook with LAION-CLAP,
                                               # 00, 01, 03, 04, 07 with MS-CLAP 2023
    python scripts/rehearse.py --model msclap/2023 --notebooks 00 01 03
    make rehearse                              # the same as the first line

What it does, in order (everything under build/rehearsal/, git-ignored):

1. builds a wheel of the repository and installs it into a fresh virtual environment
   with numpy 2, plus ``laion-clap`` with ``--no-deps`` exactly as the notebooks' Colab
   cell does (torch: ``$TORCH``, default ``torch==2.13.0`` as in the Makefile);
2. builds the local mirror (``scripts/mirror.py``): checkpoints in the published file
   formats with random weights, ESC-50, Clotho and FSD50K files in their real layouts,
   a manifest of sizes and digests; and serves it on 127.0.0.1;
3. runs notebook 00 offline (TinyCLAP) from the same wheel, then every notebook online,
   two at a time (``--jobs``), each in its own fresh kernel, from its own folder outside the
   repository, with its own empty cache (a fresh Colab runtime: no notebook finds a
   file another one wrote), with ``CLAPNB_MIRROR`` pointing at the mirror and
   ``CLAPNB_MODEL`` at the online model. The Colab-only cells do nothing outside Colab;
   fast settings are injected after each notebook's configuration cell (the
   ``injected-parameters`` cell, as papermill does), listed in :data:`FAST`.

It prints one line per notebook (wall time, ok or the error) and a summary, writes
build/rehearsal/report.json, and exits non-zero when any notebook failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "rehearsal"
MIRROR = ROOT / "build" / "mirror"
DATA = ROOT.parent / "shared" / "data"
#: the model code the Colab cell installs without its dependencies
MODEL_CODE = ["laion-clap==1.1.7", "msclap==1.3.4"]
#: what Colab provides besides the package (its ipywidgets is 7.7), and the headless runner
RUNNER = ["nbclient>=0.10", "ipykernel>=6", "nbformat>=5", "ipywidgets==7.7.1"]

#: fast settings per notebook: the rehearsal checks that every line runs, not the numbers
#: (random weights); each is a real configuration value a user could set.
FAST: dict[str, dict[str, object]] = {
    "00": {"N_CLIPS": 2, "DECODER_STEPS": 1},
    "01": {"MAX_PER_CLASS": 1},
    "02": {"CLUSTERED_SIZE": 50, "N_NEAREST": 4},
    "03": {"N_PER_CLASS": 1, "LAMS": [1.0, 0.25, 0.05], "N_SOLVER": 3},
    "04": {"N_PER_CLASS": 1, "N_SCENES": 10, "LAMS": [1.0, 0.1], "LAM_TABLE": 0.1,
           "VOCABULARIES": ["baseline", "pruned", "clustered"], "SIZE": 300},
    "05": {"N_PER_CLASS": 2, "EPOCHS": 2},
    "06": {"TRAIN_STEPS": 2, "ONLINE_STEPS": 2, "ABLATION_STEPS": 1, "BATCH_SIZE": 2},
    "07": {"N_SCENES": 4, "DECODER_STEPS": 1},
    "08": {"DECODER_STEPS": 1, "N_CLIPS": 2, "SANITY_CLIPS": 1, "IG_STEPS": 2,
           "SMOOTH_SAMPLES": 2, "TIMING_IG_STEPS": 2, "TIMING_SMOOTH_SAMPLES": 2},
    "09": {"DECODER_STEPS": 1, "N_SCENES": 6, "N_CONCEPTS": 3, "VOCAB_SIZE": 300},
}


#: what `make rehearse` runs: every notebook with LAION-CLAP (the course's default online
#: model), and the notebooks that compare with the papers with MS-CLAP 2023 (their model)
PLAN: list[tuple[str, list[str]]] = [("laion/630k-audioset", sorted(FAST)),
                                      ("msclap/2023", ["00", "01", "03", "04", "07"])]
#: the slowest notebooks start first, so that parallel workers finish together
SLOWEST_FIRST = ["08", "06"]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("$", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def prepare_venv(python: str, torch_spec: str) -> Path:
    """A fresh environment with the wheel of this checkout, numpy 2 and the model code."""
    venv = BUILD / "venv"
    dist = BUILD / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", dist, ROOT])
    [wheel] = dist.glob("clapnb-*.whl")
    py = venv / "bin" / "python"
    if not py.exists():
        run([python, "-m", "venv", venv])
        run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run([py, "-m", "pip", "install", "--quiet", *torch_spec.split()])
        # Colab's runtime comes with numpy 2: installing the course must not downgrade it
        run([py, "-m", "pip", "install", "--quiet", "numpy>=2"])
    before = _numpy_version(py)
    # the wheel as Colab installs it, then the model code without its pins, as the
    # notebooks' first cell does
    run([py, "-m", "pip", "install", "--quiet", "--force-reinstall", "--no-deps", wheel])
    run([py, "-m", "pip", "install", "--quiet", wheel, *RUNNER])
    run([py, "-m", "pip", "install", "--quiet", "--no-deps", *MODEL_CODE])
    numpy = _numpy_version(py)
    if numpy != before or int(numpy.split(".")[0]) < 2:
        raise SystemExit(f"numpy {before} became {numpy} when the course was installed; the "
                         "course must install beside Colab's numpy 2 without touching it")
    print(f"rehearsal environment: {venv} (numpy {numpy}, kept as it was)", flush=True)
    return py


def _numpy_version(py: Path) -> str:
    return subprocess.run([py, "-c", "import numpy; print(numpy.__version__)"],
                          capture_output=True, text=True, check=True).stdout.strip()


def start_mirror(py: Path) -> tuple[subprocess.Popen, str]:
    """Build (once) and serve the mirror; returns the server process and its address."""
    run([py, ROOT / "scripts" / "mirror.py", "build", MIRROR, "--data", DATA])
    server = subprocess.Popen([str(py), str(ROOT / "scripts" / "mirror.py"), "serve", str(MIRROR),
                               "--print-url"], stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        server.kill()
        raise SystemExit(f"the mirror did not start (said {url!r})")
    print(f"mirror: {url}", flush=True)
    return server, url


def inject(nb, values: dict[str, object]):
    """Insert a cell setting ``values`` right after the configuration cell."""
    import nbformat
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "# injected by scripts/rehearse.py: fast settings (the rehearsal's numbers mean nothing)\n"
    source += "".join(f"{k} = {v!r}\n" for k, v in values.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(at + 1, cell)
    return nb


def execute(path: Path, out: Path, values: dict[str, object], timeout: int) -> None:
    """Run one notebook in a fresh kernel of this interpreter (called inside the venv)."""
    import nbformat
    from nbclient import NotebookClient
    nb = inject(nbformat.read(path, as_version=4), values)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, out)


def rehearse_one(py: Path, stem: str, model: str | None, mirror_url: str | None,
                 timeout: int, threads: int) -> dict:
    """Run notebook ``stem`` in the rehearsal environment from a fresh folder outside the
    repository with an empty cache: online against the mirror with ``model``, or offline
    (TinyCLAP) when ``mirror_url`` is None; torch gets ``threads`` CPU threads."""
    [path] = sorted((ROOT / "notebooks").glob(f"{stem}_*.ipynb"))
    home = Path(tempfile.mkdtemp(prefix=f"clapnb-rehearsal-{stem}-"))   # outside the repository
    shutil.copy(path, home / path.name)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLAPNB_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env.update(CLAPNB_CACHE=str(home / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               MPLBACKEND="Agg", OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env.update({"CLAPNB_MIRROR": mirror_url, "CLAPNB_MODEL": model} if mirror_url else
               {"CLAPNB_OFFLINE": "1"})
    values = FAST.get(stem, {}) if mirror_url else {}
    tag = model.replace("/", "_") if mirror_url else "offline"
    out = BUILD / "executed" / f"{path.stem}-{tag}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = subprocess.run([str(py), str(Path(__file__).resolve()), "_execute", str(home / path.name),
                             str(out), json.dumps(values), str(timeout)],
                            cwd=home, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    ok = result.returncode == 0
    error = "" if ok else (result.stderr.strip().splitlines() or ["?"])[-1][:300]
    label = f"{path.name} ({model})" if mirror_url else f"{path.name} (offline, tiny)"
    print(f"{label:58s} {seconds:7.1f} s  {'ok' if ok else 'FAILED: ' + error}", flush=True)
    if not ok:
        print(result.stderr[-4000:], flush=True)
    shutil.rmtree(home, ignore_errors=True)
    return {"notebook": label, "seconds": round(seconds, 1), "ok": ok, "error": error}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="one model for --notebooks (default: the PLAN)")
    parser.add_argument("--notebooks", nargs="*", default=sorted(FAST), help="stems, e.g. 00 07")
    parser.add_argument("--python", default=os.environ.get("PYTHON", "python3"))
    parser.add_argument("--torch", default=os.environ.get("TORCH", "torch==2.13.0"))
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    parser.add_argument("--jobs", type=int, default=2,
                        help="notebooks run at once, each with (CPU cores / jobs) torch threads; "
                             "much of a notebook's time is single-threaded (kernel start, model "
                             "building, Python loops), so 2 jobs on 2 cores finish sooner")
    parser.add_argument("--no-offline-quickstart", dest="offline_quickstart", action="store_false",
                        help="skip notebook 00 offline (TinyCLAP) from the same wheel")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    BUILD.mkdir(parents=True, exist_ok=True)
    py = prepare_venv(args.python, args.torch)
    # first the offline quickstart from the same wheel: numpy 2, no network, TinyCLAP
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    rows = [rehearse_one(py, "00", None, None, args.timeout, os.cpu_count() or 1)
            ] if args.offline_quickstart else []
    plan = [(args.model, args.notebooks)] if args.model else PLAN
    runs = sorted(((stem, model) for model, stems in plan for stem in stems),
                  key=lambda run: SLOWEST_FIRST.index(run[0]) if run[0] in SLOWEST_FIRST
                  else len(SLOWEST_FIRST))
    server, url = start_mirror(py)
    try:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows += list(pool.map(lambda run: rehearse_one(py, *run, url, args.timeout, threads),
                                  runs))
    finally:
        server.terminate()
        server.wait(timeout=30)
    total = time.perf_counter() - started
    failed = [r["notebook"] for r in rows if not r["ok"]]
    report = {"plan": plan, "total_seconds": round(total, 1),
              "notebook_seconds": round(sum(r["seconds"] for r in rows), 1),
              "notebooks": rows, "failed": failed}
    (BUILD / "report.json").write_text(json.dumps(report, indent=1))
    models = " and ".join(f"{m} ({len(stems)} notebooks)" for m, stems in plan)
    print(f"rehearsal of the online course with {models} from a wheel, numpy 2: "
          f"{total:.0f} s in all, notebooks {report['notebook_seconds']:.0f} s", flush=True)
    print(f"rehearsal: {len(rows) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_execute":
        _, _, nb_path, out_path, values, timeout = sys.argv
        execute(Path(nb_path), Path(out_path), json.loads(values), int(timeout))
    else:
        sys.exit(main())
