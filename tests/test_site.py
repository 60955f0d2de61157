"""`make site` (scripts/build_site.py): a static site from executed notebooks and docs/.

The site is built from a tiny synthetic *executed* notebook made here (an audio player,
a claim check, a solution, the explorer, a progress bar) plus the real docs pages, so no
course notebook is executed."""

import base64
import io
import json
import os
import re
import sys
import wave
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import build_site  # noqa: E402

WIDGET = "application/vnd.jupyter.widget-view+json"
COURSE = json.loads((ROOT / "notebooks/course.json").read_text())


def _wav_base64(seconds: float = 0.5, rate: int = 16000) -> str:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def _widget(text: str):
    return new_output("display_data", data={WIDGET: {"model_id": "abc", "version_major": 2,
                                                      "version_minor": 0}, "text/plain": text})


def _executed_notebook(tag_explorer: bool = True):
    """A small executed notebook with every kind of cell the site treats specially."""
    audio = (f'<audio controls="controls"><source src="data:audio/wav;base64,{_wav_base64()}" '
             'type="audio/wav" />Your browser does not support the audio element.</audio>')
    explorer = new_code_cell("display(widgets.VBox([clip_box, button, out]))  # EXPLORER_CODE",
                             execution_count=4, outputs=[_widget("VBox(children=(HBox(...),))")])
    if tag_explorer:
        explorer.metadata["tags"] = ["explorer"]
    cells = [
        new_markdown_cell("# 98 · A synthetic notebook\n\n## 1. Listen"),
        new_code_cell("play(clip)", execution_count=1, outputs=[
            new_output("display_data", data={"text/html": audio, "text/plain": "<Audio>"})]),
        new_code_cell("train()  # PROGRESS_CODE", execution_count=2, outputs=[
            _widget("HBox(children=(HTML(value='train'), FloatProgress(value=0.0)))"),
            new_output("stream", name="stdout", text="trained for 3 steps\n")]),
        new_code_cell('check.offline("accuracy above 0.9", acc > 0.9, "0.97")  # CLAIM_CODE',
                      execution_count=3, metadata={"tags": ["claim-check"], "jupyter": {"source_hidden": True}},
                      outputs=[new_output("stream", name="stdout", text="CLAIM_VERDICT holds\n")]),
        new_markdown_cell("## 2. Explore"),
        explorer,
        new_code_cell("explain_and_show(0, 'rain')", execution_count=5, outputs=[
            new_output("stream", name="stdout", text="STATIC_EXAMPLE mask mean 0.31\n")]),
        new_markdown_cell("## Exercises\n\n1. Do it.\n\n### Solutions\n\nExercise 1:"),
        new_code_cell("answer = 42  # SOLUTION_CODE\nprint(answer)", execution_count=6,
                      metadata={"tags": ["solution"], "jupyter": {"source_hidden": True}},
                      outputs=[new_output("stream", name="stdout", text="42\n")]),
        new_markdown_cell("SOLUTION_ANSWER: 42, as printed."),
        new_markdown_cell("## References\n\n- REFERENCES_TEXT", metadata={"tags": ["template-references"]}),
    ]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"}})
    nb.metadata["widgets"] = {WIDGET.replace("view", "state"): {"state": {}, "version_major": 2,
                                                                "version_minor": 0}}
    return nb


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("site")
    paths = []
    for name, tagged in (("98_synthetic.ipynb", True), ("99_untagged.ipynb", False)):
        path = tmp / name
        nbformat.write(_executed_notebook(tagged), path)
        paths.append((path, build_site.NotebookPage(name, f"{name[:2]} · synthetic", "test copy, offline")))
    pages = build_site.build(tmp / "site", paths, COURSE, docs_dir=ROOT / "docs")
    return tmp / "site", pages


def _html(site_dir: Path, name: str) -> str:
    return (site_dir / "notebooks" / name).read_text(encoding="utf-8")


def test_index_links_notebooks_in_order_and_the_teachers_kit(site):
    site_dir, _ = site
    index = (site_dir / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="([^"]+)"', index)
    notebooks = [link for link in links if link.startswith("notebooks/")]
    assert notebooks == ["notebooks/98_synthetic.html", "notebooks/99_untagged.html"]
    for page in ("glossary", "key_results", "pipelines"):
        assert f"docs/{page}.html" in links
        assert (site_dir / "docs" / f"{page}.html").exists()
    for link in links:
        if not link.startswith(("http", "#")):
            assert (site_dir / link).exists(), link


def test_claim_check_code_is_hidden_but_its_verdict_shown(site):
    html = _html(site[0], "98_synthetic.html")
    assert "CLAIM_CODE" not in html and "CLAIM_VERDICT holds" in html
    assert site[1][0].hidden_inputs == 1


def test_solutions_are_folded_from_their_heading_to_the_references(site):
    html = _html(site[0], "98_synthetic.html")
    details = re.findall(r'<details class="clapnb-solution">(.*?)</details>', html, flags=re.S)
    assert len(details) == 1
    folded = details[0]
    assert "SOLUTION_CODE" in folded and "SOLUTION_ANSWER" in folded and "Exercise 1:" in folded
    assert html.count("SOLUTION_CODE") == 1
    assert "Do it." in html and "Do it." not in folded  # the exercises stay visible
    assert "## References" not in folded and "REFERENCES_TEXT" in html.split("</details>")[1]


def test_without_a_solutions_heading_each_solution_cell_is_folded():
    nb = _executed_notebook()
    nb.cells[7].source = "## Exercises\n\n1. Do it."  # no '### Solutions'
    page = build_site.NotebookPage("x.ipynb", "x", "test")
    html = build_site.notebook_html(nb, page)
    details = re.findall(r'<details class="clapnb-solution">(.*?)</details>', html, flags=re.S)
    assert len(details) == 1 and "SOLUTION_CODE" in details[0] and "SOLUTION_ANSWER" not in details[0]


@pytest.mark.parametrize("name", ["98_synthetic.html", "99_untagged.html"])
def test_explorer_replaced_by_a_note_and_the_static_example_kept(site, name):
    html = _html(site[0], name)
    assert "The explorer needs a live kernel" in html and "EXPLORER_CODE" in html
    assert "VBox(children" not in html and WIDGET not in html
    assert "STATIC_EXAMPLE mask mean 0.31" in html
    assert html.index("The explorer needs a live kernel") < html.index("STATIC_EXAMPLE")


def test_progress_bar_widgets_are_dropped_and_their_text_kept(site):
    html = _html(site[0], "98_synthetic.html")
    assert "FloatProgress" not in html and "trained for 3 steps" in html
    assert site[1][0].dropped_widgets == 1


def test_the_untagged_explorer_is_found_and_reported(site):
    assert site[1][1].explorer_cells == 1 and any("no cell tagged 'explorer'" in n for n in site[1][1].notes)


def test_audio_players_are_embedded_and_hold_a_playable_wav(site):
    html = _html(site[0], "98_synthetic.html")
    assert html.count("<audio") == 1 == site[1][0].audio_players
    kind, data = re.search(r'<source src="data:audio/(\w+);base64,([^"]+)"', html).groups()
    with wave.open(io.BytesIO(base64.b64decode(data))) as w:
        assert kind == "wav" and w.getframerate() == 16000 and w.getnframes() == 8000


def test_docs_pages_link_to_the_site_and_embed_the_diagrams(site):
    site_dir, _ = site
    glossary = (site_dir / "docs/glossary.html").read_text(encoding="utf-8")
    assert 'id="clap"' in glossary  # headings are anchors: glossary.html#clap
    assert not re.search(r'href="(?!https:)[^"]*\.md(#[^"]*)?"', glossary), "relative links point into the site"
    pipelines = (site_dir / "docs/pipelines.html").read_text(encoding="utf-8")
    for svg in re.findall(r'src="([^"]+\.svg)"', pipelines):
        assert (site_dir / "docs" / svg).exists()
    assert len(re.findall(r'src="([^"]+\.svg)"', pipelines)) >= 2


def test_link_rewriting():
    files = {"docs/glossary.html", "notebooks/03_sparse_concepts.html"}
    repo = "https://github.com/o/r/blob/v1"
    body = ('<a href="glossary.md#clap">a</a><a href="../notebooks/03_sparse_concepts.ipynb">b</a>'
            '<a href="../README.md#x">c</a><a href="https://x.org">d</a><a href="#y">e</a>')
    out = build_site.rewrite_links(body, "docs/key_results.md", files, repo)
    assert re.findall(r'href="([^"]+)"', out) == [
        "glossary.html#clap", "../notebooks/03_sparse_concepts.html", f"{repo}/README.md#x",
        "https://x.org", "#y"]


def test_fresh_executed_copies_are_used_without_executing(tmp_path, monkeypatch):
    import run_notebooks

    def refuse(*args, **kwargs):
        raise AssertionError("the course must not be executed when a fresh copy exists")

    monkeypatch.setattr(run_notebooks, "run", refuse)
    name = "00_quickstart.ipynb"
    nbformat.write(_executed_notebook(), tmp_path / name)
    later = (ROOT / "notebooks" / name).stat().st_mtime + 10
    os.utime(tmp_path / name, (later, later))
    [(path, page)] = build_site.collect([name], tmp_path, execute=False, timeout=60)
    assert path == tmp_path / name and page.title == COURSE["notebooks"][0]["title"]
    assert page.source.startswith(f"{tmp_path.name}/ copy")


def test_key_results_page_is_generated_from_the_stored_benchmark_lines():
    """docs/key_results.md's tables are what scripts/key_results.py renders from
    docs/key_results_offline.jsonl and clapnb.papers: run the script after changing either."""
    import key_results
    page = (ROOT / "docs/key_results.md").read_text(encoding="utf-8")
    assert key_results.render(key_results.load()) in page
    assert "not measured yet" in page
