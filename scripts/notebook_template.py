"""Write the shared header, setup and references cells of every notebook, and the
README's notebook table, from one file: ``notebooks/course.json``.

Usage:
    python scripts/notebook_template.py          # rewrite notebooks + README in place
    python scripts/notebook_template.py --check  # exit 1 if anything would change (tests call this)

A notebook's first three cells (header, Colab setup, the optional Google Drive cache)
and its last cell (references) are owned by this script; every other cell is the notebook's own. It also strips
outputs and execution counts, so committed notebooks stay clean.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
COURSE = ROOT / "notebooks" / "course.json"
README = ROOT / "README.md"
TABLE_START, TABLE_END = "<!-- notebooks:start -->", "<!-- notebooks:end -->"


def offline_time(nb: dict) -> str:
    """``"20 s"`` or ``"2 min"``: the measured offline wall time (``seconds_offline``, from
    ``make run`` on an idle 2-core machine), to the nearest 5 s below 90 s."""
    seconds = nb["seconds_offline"]
    return f"{max(5, 5 * round(seconds / 5))} s" if seconds < 90 else f"{round(seconds / 60)} min"


def header(course: dict, nb: dict) -> str:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/github/{course['repository']}/blob/"
             f"{course['git_ref']}/notebooks/{nb['file']})")
    learn = "\n".join(f"- {item}" for item in nb["learn"])
    return (f"# {nb['title']}\n\n{badge}\n\n**What you will learn**\n\n{learn}\n\n"
            f"**Time to run:** about {offline_time(nb)} offline on a laptop CPU, "
            f"{nb['minutes_colab']} min in Colab with LAION-CLAP on a GPU.  \n"
            f"**Level:** {nb['level']}.  \n**Before this:** {nb['before']}")


def setup(course: dict) -> str:
    code = " ".join(course["model_code"])
    return ("# Colab only: install the course package (a tagged release) and the model code of the\n"
            "# real CLAPs without its outdated pins. Elsewhere this cell does nothing\n"
            "# (locally, `make install` has installed both).\n"
            "import sys\n\n"
            "IN_COLAB = \"google.colab\" in sys.modules\n"
            "if IN_COLAB:\n"
            f"    %pip install -q \"clapnb @ git+https://github.com/{course['repository']}"
            f"@{course['git_ref']}\"\n"
            f"    %pip install -q --no-deps {code}")


def drive(course: dict) -> str:
    return ("# Optional, Colab only: keep clapnb's cache (datasets, checkpoints, trained decoders)\n"
            "# on Google Drive, so that the next notebook (a fresh runtime) finds them.\n"
            "KEEP_CACHE_ON_DRIVE = False\n"
            "if IN_COLAB and KEEP_CACHE_ON_DRIVE:\n"
            "    import os\n\n"
            "    from google.colab import drive\n\n"
            "    drive.mount(\"/content/drive\")\n"
            f"    os.environ[\"CLAPNB_CACHE\"] = \"{course['drive_cache']}\"")


def references(nb: dict, course: dict) -> str:
    refs = "\n".join(f"- {course['references'][key]}" for key in nb["references"])
    return f"## References\n\n{refs}"


def _cell(kind: str, source: str, tag: str):
    make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
    cell = make(source)
    cell.metadata["tags"] = [tag]
    cell["id"] = tag  # stable ids, so regenerating changes nothing
    return cell


def _same(cell, new) -> bool:
    return cell.cell_type == new.cell_type and cell.source == new.source and \
        cell.metadata.get("tags") == new.metadata["tags"]


def render(path: Path, course: dict, nb_meta: dict):
    """The notebook as it should be on disk: template cells in place, outputs stripped."""
    nb = nbformat.read(path, as_version=4)
    cells = list(nb.cells)
    owned = {"template-header", "template-setup", "template-drive", "template-references"}
    body = [c for c in cells if not owned & set(c.metadata.get("tags", []))]
    new = [_cell("markdown", header(course, nb_meta), "template-header"),
           _cell("code", setup(course), "template-setup"),
           _cell("code", drive(course), "template-drive"),
           *body,
           _cell("markdown", references(nb_meta, course), "template-references")]
    # keep existing cell objects (and ids) where nothing changed
    old = {c.metadata.get("tags", [""])[0]: c for c in cells if owned & set(c.metadata.get("tags", []))}
    for i, cell in enumerate(new):
        tag = cell.metadata.get("tags", [""])[0]
        if tag in owned and tag in old and _same(old[tag], cell):
            new[i] = old[tag]
    for cell in new:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
    nb.cells = new
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def readme_table(course: dict) -> str:
    rows = ["| notebook | what it teaches | offline (CPU) | Colab (GPU) |", "|---|---|---|---|"]
    for nb in course["notebooks"]:
        rows.append(f"| [{nb['title']}](notebooks/{nb['file']}) | {nb['teaches']} | "
                    f"~{offline_time(nb)} | ~{nb['minutes_colab']} min |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report what would change")
    args = parser.parse_args()
    course = json.loads(COURSE.read_text())
    stale = []
    for nb_meta in course["notebooks"]:
        path = ROOT / "notebooks" / nb_meta["file"]
        if not path.exists():
            stale.append(f"{path.name} is listed in course.json but missing")
            continue
        text = nbformat.writes(render(path, course, nb_meta)) + "\n"
        if path.read_text() != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text)
    listed = {nb["file"] for nb in course["notebooks"]}
    stale += [f"{p.name} is not listed in course.json"
              for p in sorted((ROOT / "notebooks").glob("*.ipynb")) if p.name not in listed]
    readme = README.read_text()
    start, end = readme.index(TABLE_START) + len(TABLE_START), readme.index(TABLE_END)
    new_readme = readme[:start] + "\n" + readme_table(course) + "\n" + readme[end:]
    if new_readme != readme:
        stale.append("README.md notebook table")
        if not args.check:
            README.write_text(new_readme)
    if stale:
        verb = "out of date" if args.check else "rewritten"
        print(f"{verb}: " + ", ".join(stale))
        if args.check:
            print("run: python scripts/notebook_template.py")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
