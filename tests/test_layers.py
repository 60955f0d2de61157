"""The package's structure: layers that import downwards only (import-linter's contract in
pyproject.toml), no import cycle, no backend probing outside the registry, and word
lists that travel inside an installed wheel."""

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clapnb"
MODULES = sorted(PACKAGE.glob("*.py"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def test_import_linter_layers_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 kept, 0 broken" in out.stdout


def _clapnb_imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, whether the import sits inside a function) for every clapnb import."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("clapnb"):
                names = [a.name for a in child.names] if child.module == "clapnb" else \
                    [child.module.split(".")[1]]
                found.extend((n, in_function) for n in names)
            elif isinstance(child, ast.Import):
                found.extend((a.name.split(".")[1], in_function) for a in child.names
                             if a.name.startswith("clapnb."))
            visit(child, inner)

    visit(tree, False)
    return found


def test_no_import_cycle_and_no_function_local_clapnb_imports():
    graph = {p.stem: set() for p in MODULES if p.stem != "__init__"}
    local = []
    for path in MODULES:
        if path.stem == "__init__":
            continue
        for target, in_function in _clapnb_imports(path):
            if target in graph:
                graph[path.stem].add(target)
            if in_function:
                local.append(f"{path.name} imports clapnb.{target} inside a function")
    assert not local, local

    def reaches(start: str, goal: str, seen: set) -> bool:
        return any(t == goal or (t not in seen and not seen.add(t) and reaches(t, goal, seen))
                   for t in graph[start])

    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, f"modules on an import cycle: {cycles}"


def _code_of_notebooks() -> list[tuple[str, str]]:
    return [(nb.name, "".join(c["source"])) for nb in NOTEBOOKS
            for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("pattern", [".kind", "hasattr(model", "model.name ==", "model.name !=",
                                     "._fold(", "isinstance(model, TinyClap)",
                                     "isinstance(model, LaionClap)"])
def test_nothing_outside_the_registry_probes_a_backend(pattern):
    """Behaviour that depends on the backend comes from the registry or the model interface."""
    places = [f"clapnb/{p.name}" for p in MODULES
              if p.stem not in ("registry", "laion", "tiny") and pattern in p.read_text()]
    places += [name for name, code in _code_of_notebooks() if pattern in code]
    assert not places, f"{pattern!r} in {places}"


@pytest.mark.slow
def test_wheel_installed_outside_the_repository_loads_the_word_lists(tmp_path):
    """Build a wheel, install it into a fresh virtual environment, import it from a folder
    outside the repository: the shipped vocabularies come with it (package data)."""
    dist, venv, elsewhere = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # pip must not see a checkout
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "-w", str(dist), str(ROOT)], check=True, timeout=600,
                   capture_output=True, env=clean)
    [wheel] = dist.glob("clapnb-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", str(wheel)], check=True, timeout=600, capture_output=True, env=clean)
    # the dependencies (numpy, torch, ...) come from this environment, behind the fresh one
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    script = ("import clapnb, clapnb.vocabulary as V; "
              "b, p = V.load_vocabulary('baseline', 2000), V.load_vocabulary('pruned', 2000); "
              "print(clapnb.__file__, len(b), len(p), b.words[0])")
    out = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    location, n_baseline, n_pruned, _ = out.stdout.split()
    assert Path(location).is_relative_to(venv) and not Path(location).is_relative_to(ROOT)
    assert int(n_baseline) == 2000 and int(n_pruned) == 2000
    shutil.rmtree(dist)
