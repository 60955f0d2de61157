"""Build a static site of the executed course into ``build/site/`` (``make site``).

Usage: ``python scripts/build_site.py [--out build/site] [--executed executed] [--execute]
[--timeout 600] [NOTEBOOK ...]``

* **Notebooks.** Each course notebook (in the order of ``notebooks/course.json``) is
  taken from ``executed/`` (what ``make run`` writes) when an executed copy exists and is
  newer than the notebook; otherwise it is executed now, offline unless ``CLAPNB_OFFLINE``
  says otherwise, with ``scripts/run_notebooks.py``, and the fresh copy is left in
  ``executed/`` too. ``--execute`` re-executes every notebook.
* **HTML.** nbconvert's ``lab`` template, with three changes:
  cells tagged ``claim-check`` show only their output (the checks' verdicts), not their code;
  the solutions are folded: everything from the ``### Solutions`` heading to the
  References (solution code, its output, the written answers and their claim checks) sits
  in one ``<details>`` element ("Solutions: click to show"), so a learner sees the
  exercises first and opens the answers on purpose (a notebook without that heading gets
  each ``solution``-tagged cell folded on its own); and the cell tagged ``explorer`` (notebook 07's interactive explorer, whose
  widgets need a live kernel) gets a note saying so in place of its widget output. A
  notebook whose cells carry no ``explorer`` tag gets the note in every cell that displayed
  a layout widget (``VBox``/``HBox``/...). Other widget outputs (progress bars) are dropped:
  without a kernel they are empty boxes. Audio players are the notebooks' own outputs
  (``<audio>`` elements with the WAV inline as base64) and play from the HTML file.
* **Pages.** ``index.html`` links the notebooks in course order (titles from
  ``course.json``) and the teacher's kit in ``docs/`` (glossary, key results, pipelines),
  rendered from markdown with mistune (nbconvert's own renderer); the SVG diagrams are
  copied beside them. Links between the pages point to the site's HTML; links to other
  files of the repository point to GitHub at the course's ``git_ref``.

MathJax and require.js come from nbconvert's CDN defaults: formulas render when the page
is opened with network, and read as TeX source without.
"""

from __future__ import annotations

import argparse
import functools
import html
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import mistune
import nbformat
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from notebook_template import offline_time  # noqa: E402  (the README's and headers' wording)

#: the docs pages, in the order the index lists them: (file in docs/, what it is)
DOCS = (
    ("glossary.md", "Glossary: every term a learner meets, and the notebook that teaches it"),
    ("key_results.md", "Key results: our offline numbers, online numbers and the papers' numbers, per method"),
    ("pipelines.md", "Pipelines: one diagram per method"),
)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
#: widget classes that make up an interactive tool (not a progress bar)
LAYOUT_WIDGETS = ("VBox(", "HBox(", "Box(", "Tab(", "Accordion(", "GridBox(", "interactive(")
EXPLORER_NOTE = (
    '<div class="clapnb-note"><strong>The explorer needs a live kernel.</strong> '
    "Its controls cannot run in a static page: open this notebook in Colab (the badge at "
    "the top) or in JupyterLab (<code>make lab</code>) to type your own prompts. "
    "{example}</div>"
)
EXAMPLE_BELOW = "The cell after this one shows what <em>Explain</em> draws for the default choice."
EXAMPLE_ABOVE = "The output above shows what the explorer draws for one choice."

TEMPLATE = r"""
{%- extends 'index.html.j2' -%}
{% block any_cell %}
{%- if cell.metadata.get('clapnb_site', {}).get('close_solutions') %}</details>{% endif -%}
{%- if cell.metadata.get('clapnb_site', {}).get('open_solutions') -%}
<details class="clapnb-solution"><summary>Solutions: click to show</summary>
{%- endif -%}
{{ super() }}
{% endblock any_cell %}
{% block codecell %}
{%- if cell.metadata.get('clapnb_site', {}).get('fold') -%}
<details class="clapnb-solution"><summary>Solution: click to show</summary>
{{ super() }}
</details>
{%- else -%}
{{ super() }}
{%- endif -%}
{% endblock codecell %}
{% block html_head_js %}
{{ super() }}
<style>
.clapnb-solution { margin: 0.4em 0 0.8em 0; }
.clapnb-solution > summary { cursor: pointer; color: #1a5fb4; font-weight: 600; padding: 0.2em 0; }
.clapnb-note { border-left: 4px solid #e5a50a; background: #fdf6e3; padding: 0.6em 1em; margin: 0.4em 0; }
.clapnb-nav { font-family: sans-serif; padding: 0.5em 1em; border-bottom: 1px solid #ddd; }
</style>
{% endblock html_head_js %}
{% block body_header %}
{{ super() }}
{%- if resources.clapnb_nav %}<div class="clapnb-nav">{{ resources.clapnb_nav }}</div>{% endif -%}
{% endblock body_header %}
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem;
       line-height: 1.5; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2em; }}
pre {{ background: #f6f6f6; padding: 0.6em; overflow-x: auto; }}
img {{ max-width: 100%; }}
nav {{ border-bottom: 1px solid #ddd; padding-bottom: 0.5em; margin-bottom: 1em; }}
.meta {{ color: #666; font-size: 0.9em; }}
</style></head>
<body>
{nav}
{body}
</body></html>
"""


@dataclass
class NotebookPage:
    """One notebook of the site: where its executed copy came from and what was changed."""

    name: str
    title: str
    source: str  # "executed/" copy, "executed now", or a path given by the caller
    explorer_cells: int = 0
    hidden_inputs: int = 0
    solutions: int = 0
    dropped_widgets: int = 0
    audio_players: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------
# notebooks
# ---------------------------------------------------------------------------------
def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def _is_layout_widget(output) -> bool:
    data = output.get("data", {})
    text = str(data.get("text/plain", ""))
    # tqdm's notebook bar is an HBox too: HBox(children=(HTML(...), FloatProgress(...), ...))
    return WIDGET_VIEW in data and text.startswith(LAYOUT_WIDGETS) and "Progress(" not in text


def fold_solutions(nb, page: NotebookPage) -> None:
    """Mark the cells that open and close the solutions block (``### Solutions`` up to the
    References); without that heading, mark each ``solution`` cell to be folded alone. A
    markdown cell holding both the exercises and the ``### Solutions`` heading is split there."""
    cells = nb.cells
    start = None
    for i, c in enumerate(cells):
        if c.cell_type == "markdown" and re.search(r"^### Solutions", c.source, flags=re.M):
            before, heading, after = re.split(r"^(### Solutions)", c.source, maxsplit=1, flags=re.M)
            if before.strip():
                c.source = before.rstrip() + "\n"
                cells.insert(i + 1, nbformat.v4.new_markdown_cell(heading + after))
                i += 1
            start = i
            break
    if start is None:
        for c in cells:
            if "solution" in _tags(c):
                c.metadata.setdefault("clapnb_site", {})["fold"] = True
        return
    end = next((j for j in range(start + 1, len(cells))
                if "template-references" in _tags(cells[j]) or cells[j].source.startswith("## References")),
               None)
    cells[start].metadata.setdefault("clapnb_site", {})["open_solutions"] = True
    if end is None:
        cells.append(nbformat.v4.new_markdown_cell(""))
        end = len(cells) - 1
    cells[end].metadata.setdefault("clapnb_site", {})["close_solutions"] = True
    page.notes.append(f"solutions folded: cells {start}-{end - 1}")


def prepare(nb, page: NotebookPage) -> None:
    """Edit an executed notebook in place for the static site (see the module docstring)."""
    fold_solutions(nb, page)
    cells = nb.cells
    tagged = [i for i, c in enumerate(cells) if "explorer" in _tags(c)]
    if not tagged:
        tagged = [i for i, c in enumerate(cells) if c.cell_type == "code"
                  and any(_is_layout_widget(o) for o in c.get("outputs", []))]
        if tagged:
            page.notes.append("no cell tagged 'explorer': the note replaces the widget "
                              f"output of cell(s) {tagged}")
    for i, cell in enumerate(cells):
        if cell.cell_type != "code":
            continue
        tags = _tags(cell)
        page.hidden_inputs += "claim-check" in tags
        page.solutions += "solution" in tags
        if i in tagged:
            page.explorer_cells += 1
            kept = [o for o in cell.outputs if WIDGET_VIEW not in o.get("data", {})]
            following = next((c for c in cells[i + 1:] if c.cell_type == "code"), None)
            example = (EXAMPLE_BELOW if following is not None and following.get("outputs")
                       else EXAMPLE_ABOVE if kept else "")
            note = nbformat.v4.new_output(
                "display_data", data={"text/html": EXPLORER_NOTE.format(example=example),
                                      "text/plain": "The explorer needs a live kernel."})
            cell.outputs = [note, *kept]
            continue
        before = len(cell.get("outputs", []))
        cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
        page.dropped_widgets += before - len(cell.outputs)
    # the saved widget state would make nbconvert load the widget manager from a CDN for
    # widgets that are no longer displayed
    nb.metadata.pop("widgets", None)


@functools.lru_cache(maxsize=1)
def exporter() -> HTMLExporter:
    remove = TagRemovePreprocessor(remove_input_tags={"claim-check"})
    exp = HTMLExporter(template_name="lab", template_file="clapnb_site.html.j2",
                       extra_loaders=[jinja2.DictLoader({"clapnb_site.html.j2": TEMPLATE})])
    exp.register_preprocessor(remove, enabled=True)
    return exp


def notebook_html(nb, page: NotebookPage, nav: str = "") -> str:
    prepare(nb, page)
    body, _ = exporter().from_notebook_node(nb, resources={"clapnb_nav": nav})
    page.audio_players = body.count("<audio")
    return body


# ---------------------------------------------------------------------------------
# markdown pages
# ---------------------------------------------------------------------------------
def _slug(text: str) -> str:
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).lower()
    return re.sub(r"[^\w]+", "-", text).strip("-")


class _Renderer(mistune.HTMLRenderer):
    """mistune's HTML, with an ``id`` on every heading (``glossary.html#clap``)."""

    def heading(self, text: str, level: int, **attrs) -> str:
        return f'<h{level} id="{_slug(text)}">{text}</h{level}>\n'


def markdown_html(text: str) -> str:
    md = mistune.create_markdown(renderer=_Renderer(escape=False),
                                 plugins=["table", "strikethrough", "url"])
    return md(text)


def rewrite_links(body: str, here: str, site_files: set[str], repo_url: str) -> str:
    """Relative links of a docs page (``here``, a path inside the repository such as
    ``docs/glossary.md``) to the site's HTML where the target is in the site, else to the
    repository on GitHub."""

    def fix(match: re.Match) -> str:
        attr, url = match.group(1), match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", url):
            return match.group(0)
        path, _, anchor = url.partition("#")
        target = (Path(here).parent / path).as_posix()
        parts: list[str] = []
        for part in target.split("/"):  # normalise a/../b without touching the disk
            if part == "..":
                parts = parts[:-1]
            elif part not in ("", "."):
                parts.append(part)
        target = "/".join(parts)
        html_target = re.sub(r"\.(md|ipynb)$", ".html", target)
        if html_target in site_files or target in site_files:
            new = path if target in site_files else re.sub(r"\.(md|ipynb)$", ".html", path)
        else:
            new = f"{repo_url}/{target}"
        return f'{attr}="{new}{"#" + anchor if anchor else ""}"'

    return re.sub(r'(href|src)="([^"]*)"', fix, body)


def page(title: str, body: str, nav: str = "") -> str:
    return PAGE.format(title=html.escape(title), body=body, nav=f"<nav>{nav}</nav>" if nav else "")


# ---------------------------------------------------------------------------------
# the site
# ---------------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def build(out: Path, notebooks: list[tuple[Path, NotebookPage]], course: dict,
          docs_dir: Path = ROOT / "docs") -> list[NotebookPage]:
    """Write the site into ``out`` from executed notebooks ``[(path, page), ...]`` (in
    course order) and the markdown pages of ``docs_dir``. Returns the pages."""
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    (out / "docs").mkdir()
    repo_url = f"https://github.com/{course.get('repository', 'clapnb/clapnb')}/blob/{course.get('git_ref', 'main')}"
    docs = [(name, what) for name, what in DOCS if (docs_dir / name).exists()]
    site_files = {"index.html"} | {f"notebooks/{p.name.replace('.ipynb', '.html')}" for p, _ in notebooks}
    site_files |= {f"docs/{name.replace('.md', '.html')}" for name, _ in docs}
    assets = sorted(p for p in docs_dir.glob("*") if p.suffix.lower() in (".svg", ".png"))
    site_files |= {f"docs/{p.name}" for p in assets}

    def nav(prefix: str) -> str:
        links = [f'<a href="{prefix}index.html">clapnb course</a>']
        links += [f'<a href="{prefix}docs/{n.replace(".md", ".html")}">{n[:-3].replace("_", " ")}</a>'
                  for n, _ in docs]
        return " · ".join(links)

    pages = []
    for k, (path, pg) in enumerate(notebooks):
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        prev = notebooks[k - 1][0].name.replace(".ipynb", ".html") if k else None
        nxt = notebooks[k + 1][0].name.replace(".ipynb", ".html") if k + 1 < len(notebooks) else None
        links = nav("../") + (f' · <a href="{prev}">previous</a>' if prev else "") + \
            (f' · <a href="{nxt}">next</a>' if nxt else "")
        (out / "notebooks" / path.name.replace(".ipynb", ".html")).write_text(
            notebook_html(nb, pg, links), encoding="utf-8")
        pg.seconds = time.perf_counter() - start
        pages.append(pg)

    for p in assets:
        shutil.copy2(p, out / "docs" / p.name)
    for name, what in docs:
        text = (docs_dir / name).read_text(encoding="utf-8")
        title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), name)
        body = rewrite_links(markdown_html(text), f"docs/{name}", site_files, repo_url)
        (out / "docs" / name.replace(".md", ".html")).write_text(page(title, body, nav("../")),
                                                                 encoding="utf-8")

    entries = {e["file"]: e for e in course.get("notebooks", [])}
    items = []
    for (path, pg) in notebooks:
        e = entries.get(path.name, {})
        extra = []
        if e.get("teaches"):
            extra.append(html.escape(e["teaches"]))
        if e.get("seconds_offline"):
            extra.append(f'<span class="meta">~{offline_time(e)} offline (CPU)</span>')
        items.append(f'<li><a href="notebooks/{path.name.replace(".ipynb", ".html")}">'
                     f'{html.escape(pg.title)}</a><br>{" · ".join(extra)}</li>')
    kit = "".join(f'<li><a href="docs/{n.replace(".md", ".html")}">{html.escape(what.split(":")[0])}</a>'
                  f': {html.escape(what.split(":", 1)[1].strip())}</li>' for n, what in docs)
    commit = _git("rev-parse", "--short", "HEAD")
    body = f"""<h1>clapnb: interpreting CLAP audio models, one notebook at a time</h1>
<p>The executed course, as static pages: every output (plots, tables, audio players) is
what the notebook printed when it ran{' offline, on TinyCLAP' if _all_offline(pages) else ''}.
To change anything, or to use the interactive explorer of notebook 07, open the notebooks
in Colab or JupyterLab.</p>
<h2>Notebooks</h2>
<ol start="0">{''.join(items)}</ol>
<p class="meta">Code cells that check the text's claims show only their verdicts; exercise
solutions are folded at the end of each notebook (click <em>Solutions: click to show</em>).</p>
<h2>Teacher's kit</h2>
<ul>{kit}</ul>
<p class="meta">Built {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{f' from commit {commit}' if commit else ''}
by <code>make site</code> (<code>scripts/build_site.py</code>).</p>"""
    (out / "index.html").write_text(page("clapnb course", body), encoding="utf-8")
    return pages


def _all_offline(pages: list[NotebookPage]) -> bool:
    return bool(pages) and all("offline (tinyclap" in pg.source.lower() for pg in pages)


def _mode(path: Path) -> str:
    from run_notebooks import _mode as banner_mode
    return banner_mode(nbformat.read(path, as_version=4))


def collect(names: list[str], executed: Path, execute: bool, timeout: int) -> list[tuple[Path, NotebookPage]]:
    """Executed copies of the course notebooks ``names``: from ``executed`` when fresh,
    else executed now (and saved there)."""
    from run_notebooks import run
    course = json.loads((ROOT / "notebooks/course.json").read_text())
    titles = {e["file"]: e["title"] for e in course["notebooks"]}
    result = []
    for name in names:
        src = ROOT / "notebooks" / name
        copy = executed / name
        fresh = copy.exists() and copy.stat().st_mtime >= src.stat().st_mtime
        if execute or not fresh:
            why = "--execute" if execute else ("stale copy" if copy.exists() else "no executed copy")
            print(f"executing {name} ({why})", flush=True)
            ok = run(src, executed, timeout)
            origin = "executed now" if ok else "executed now, FAILED (the page shows the output up to the error)"
        else:
            origin = f"{executed.name}/ copy"
        mode = _mode(copy)
        result.append((copy, NotebookPage(name, titles.get(name, name), f"{origin}, {mode or 'mode unknown'}")))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: the whole course)")
    parser.add_argument("--out", type=Path, default=ROOT / "build/site")
    parser.add_argument("--executed", type=Path, default=ROOT / "executed")
    parser.add_argument("--execute", action="store_true", help="re-execute every notebook")
    parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    args = parser.parse_args()
    course = json.loads((ROOT / "notebooks/course.json").read_text())
    names = [Path(n).name for n in args.notebooks] or [e["file"] for e in course["notebooks"]]
    start = time.perf_counter()
    notebooks = collect(names, args.executed, args.execute, args.timeout)
    pages = build(args.out, notebooks, course)
    for pg in pages:
        print(f"{pg.name:<34} {pg.source}: {pg.audio_players} audio players, "
              f"{pg.hidden_inputs} claim checks, {pg.solutions} solutions, "
              f"{pg.explorer_cells} explorer note(s), {pg.dropped_widgets} widget outputs dropped"
              + "".join(f"\n    note: {n}" for n in pg.notes), flush=True)
    print(f"site in {args.out} ({time.perf_counter() - start:.0f} s): open {args.out / 'index.html'}")
    return 1 if any("FAILED" in pg.source for pg in pages) else 0


if __name__ == "__main__":
    sys.exit(main())
