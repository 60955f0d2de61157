"""Execute every course notebook in order and write the executed copies to ``executed/``.

Usage: ``python scripts/run_notebooks.py [--out executed] [--timeout 600] [NOTEBOOK ...]``
(``make run`` calls this with ``CLAPNB_OFFLINE=1``). Prints one line per notebook
(status, wall time, the model banner's mode) and exits non-zero if any failed.

Each copy is signed as trusted for the user who ran it (``nbformat.sign``, as
``jupyter trust`` does): JupyterLab then plays its audio and shows its outputs as they
are. A copy from anyone else stays untrusted until you trust it yourself.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbformat.sign import NotebookNotary
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


def _mode(nb) -> str:
    """The 'mode: ...' line the model banner printed, if any."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            for line in out.get("text", "").splitlines():
                if line.startswith("| mode:"):
                    return line.strip("| ").strip()
    return ""


def run(path: Path, out_dir: Path, timeout: int) -> bool:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    error = ""
    try:
        client.execute()
    except CellExecutionError as e:
        error = str(e).strip().splitlines()[-1][:160]
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    NotebookNotary().sign(nb)   # we just executed it: its outputs are our own
    nbformat.write(nb, out_dir / path.name)
    status = "FAILED" if error else "ok"
    print(f"{path.name:<34} {status:<6} {seconds:6.1f} s  {_mode(nb) or error}", flush=True)
    return not error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "executed")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    results = [run(p, args.out, args.timeout) for p in paths]
    print(f"{sum(results)}/{len(results)} notebooks ran; executed copies in {args.out}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
