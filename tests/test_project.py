"""The project's own promises: install lists agree, notebooks follow the skeleton and
are stripped, CI runs the README's test command."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _pyproject() -> dict:
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_environment_yml_lists_the_same_dependencies_as_pyproject():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["lab"]) | set(extras["test"])
    env = (ROOT / "environment.yml").read_text()
    pip_lines = re.findall(r"^\s+- (\S.*)$", env.split("- pip:")[1], flags=re.M)
    listed = {line.strip() for line in pip_lines if line.strip() != "-e ."}
    assert listed == wanted, f"only in pyproject: {wanted - listed}; only in environment.yml: {listed - wanted}"


def test_numpy_2_is_allowed_and_laion_clap_comes_without_its_pins():
    """Colab runs Python 3.13 with numpy 2: nothing may pin numpy<2, and laion-clap (whose
    metadata pins numpy<2) is installed with --no-deps by the Makefile and every notebook."""
    deps = _pyproject()["project"]["dependencies"]
    numpy_spec = [d for d in deps if _name(d) == "numpy"]
    assert numpy_spec and "<2" not in numpy_spec[0].replace(" ", "")
    assert not [d for d in deps if _name(d) == "laion-clap"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^MODEL_CODE := laion-clap==1\.1\.7 msclap==1\.3\.4$", makefile, flags=re.M)
    assert "pip install --quiet --no-deps $(MODEL_CODE)" in makefile
    assert {"jupyterlab", "ipywidgets"} & {_name(d) for d in deps} == set()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_installs_a_release_and_the_model_code_without_its_pins(path):
    setup = nbformat.read(path, as_version=4).cells[1].source
    course = json.loads((ROOT / "notebooks/course.json").read_text())
    ref = course["git_ref"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+|[0-9a-f]{40}", ref), "a tag or a commit, not a branch"
    assert f"git+https://github.com/{course['repository']}@{ref}" in setup
    assert "%pip install -q --no-deps laion-clap==1.1.7 msclap==1.3.4" in setup


def test_torch_is_not_pinned_in_package_metadata():
    deps = _pyproject()["project"]["dependencies"]
    torch_specs = [d for d in deps if _name(d) == "torch"]
    assert torch_specs and "==" not in torch_specs[0]


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme and "make run" in readme
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()
          if line.strip() and not line.startswith("#")]
    assert ci[-2:] == ["make test", "make rehearse"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^test: install\n\t.*-m pytest$", makefile, flags=re.M)


def test_notebook_template_and_readme_table_are_up_to_date():
    result = subprocess.run([sys.executable, "scripts/notebook_template.py", "--check"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_notebook_is_in_the_course_list_in_order():
    course = json.loads((ROOT / "notebooks/course.json").read_text())
    files = [nb["file"] for nb in course["notebooks"]]
    assert files == sorted(files) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_follows_the_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    assert cells[0].cell_type == "markdown" and "colab-badge.svg" in cells[0].source
    assert "Time to run" in cells[0].source and "What you will learn" in cells[0].source
    assert cells[1].cell_type == "code" and 'IN_COLAB = "google.colab" in sys.modules' in cells[1].source
    config = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(config) == 1 and config[0].cell_type == "code", "one configuration cell tagged 'parameters'"
    headings = [line for c in cells if c.cell_type == "markdown" for line in c.source.splitlines()
                if line.startswith("## ")]
    assert any(h.startswith("## Summary") for h in headings)
    assert any(h.startswith("## Exercises") for h in headings)
    assert cells[-1].source.startswith("## References")
    assert sum(h.startswith("## 1") for h in headings) == 1, "numbered sections start at '## 1'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"cell {i} has outputs"
