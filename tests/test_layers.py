"""The shape of the code: core/ in layers that import one way, no import cycles, no lazy imports to dodge one.

Every module under core/ and pages/ (and app.py) is parsed; imports inside functions count too.

    pages/, app.py        may import core and pages
    core.__main__, core.cli   the command line: may import every layer of core
    core.app              may import core.study, core.engine and the base
    core.study            may import core.engine and the base
    core.engine           may import the base
    base                  core (the package), core.errors, core.config, core.storage

`core` never imports Streamlit or the pages. Inside core/, a project module is imported inside a
function only by the command line (which loads each subcommand's layers when it runs).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = {"core", "core.errors", "core.config", "core.storage"}
RANK = {"base": 0, "engine": 1, "study": 2, "app": 3, "cli": 4, "pages": 5}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer(module: str) -> str | None:
    """The layer of a project module, None for anything outside the project."""
    if module in BASE:
        return "base"
    if module == "core.__main__" or module == "core.cli" or module.startswith("core.cli."):
        return "cli"
    for name in ("engine", "study", "app"):
        if module == f"core.{name}" or module.startswith(f"core.{name}."):
            return name
    if module == "app" or module == "pages" or module.startswith("pages."):
        return "pages"
    if module.startswith("core."):
        return "unplaced"
    return None


def imports(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for every import in a file.

    `from a.b import c` names the module a.b.c when that is a module of the project, else a.b.
    """
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, nested) for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    found.append((sub if sub in modules else child.module, child.lineno, nested))
            visit(child, inner)

    visit(tree, False)
    return found


def project_files() -> list[Path]:
    return sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("pages/*.py"), ROOT / "app.py"])


def import_graph(files: list[Path]) -> dict[str, list[tuple[str, int, bool]]]:
    modules = {module_name(p) for p in files}
    return {module_name(p): [(m, line, nested) for m, line, nested in imports(p, modules)] for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strongconnect(v: str) -> None:  # Tarjan's algorithm; the graph has ~60 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    return out


def violations(graph: dict[str, list[tuple[str, int, bool]]]) -> list[str]:
    """Every import against the layer rule, as 'module:line imports target (why)'."""
    bad = []
    for module, found in graph.items():
        mine = layer(module)
        if mine == "unplaced":
            bad.append(f"{module} is in no layer: move it into core/engine, core/study or core/app")
            continue
        for target, line, nested in found:
            theirs = layer(target)
            if mine != "pages" and (target.split(".")[0] in ("streamlit", "pages")):
                bad.append(f"{module}:{line} imports {target} (core never imports Streamlit or the pages)")
            if theirs is None:
                continue
            if theirs == "unplaced":
                bad.append(f"{module}:{line} imports {target}, which is in no layer")
            elif RANK[theirs] > RANK[mine]:
                bad.append(f"{module}:{line} imports {target} ({mine} may not import {theirs})")
            if nested and mine not in ("cli", "pages"):
                bad.append(f"{module}:{line} imports {target} inside a function (import it at the top; "
                           "a lazy import never dodges a cycle)")
    return bad


# --- the checker itself catches what it should -------------------------------------------------------

def test_the_cycle_finder_finds_cycles_through_several_modules_and_none_in_a_tree():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_the_layer_rule_flags_upward_lazy_and_streamlit_imports():
    graph = {
        "core.engine.zoo": [("core.app.demo", 3, True)],
        "core.study.hyper": [("core.engine.data", 1, False), ("streamlit", 2, False)],
        "core.app.views": [("core.study.hyper", 1, False), ("core.engine.analysis", 2, False)],
        "core.stray": [],
    }
    found = "\n".join(violations(graph))
    assert "core.engine.zoo:3 imports core.app.demo (engine may not import app)" in found
    assert "core.engine.zoo:3 imports core.app.demo inside a function" in found
    assert "core.study.hyper:2 imports streamlit" in found
    assert "core.stray is in no layer" in found
    assert "core.app.views" not in found


def test_imports_inside_functions_and_from_imports_of_submodules_are_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "core" / "engine").mkdir(parents=True)
    (tmp_path / "core" / "app").mkdir()
    (tmp_path / "core" / "engine" / "zoo.py").write_text("def f():\n    from core.app import demo\n")
    (tmp_path / "core" / "app" / "demo.py").write_text("from core.engine import zoo\n")
    graph = import_graph([tmp_path / "core" / "engine" / "zoo.py", tmp_path / "core" / "app" / "demo.py"])
    assert graph["core.engine.zoo"] == [("core.app.demo", 2, True)]
    assert cycles({m: {t for t, _, _ in f} for m, f in graph.items()}) == [["core.app.demo", "core.engine.zoo"]]


# --- the real tree -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def graph():
    return import_graph(project_files())


def test_every_module_of_core_is_in_a_layer_and_imports_one_way(graph):
    assert len(graph) > 40  # the whole tree was parsed
    assert violations(graph) == []


def test_there_are_no_import_cycles_lazy_or_not(graph):
    edges = {m: {t for t, _, _ in found if t in graph} for m, found in graph.items()}
    assert cycles(edges) == []


def test_layer_packages_hold_only_their_docstring():
    """`core.engine` & co. import nothing themselves, so importing one module never drags in the others."""
    for name in ("engine", "study", "app"):
        init = ROOT / "core" / name / "__init__.py"
        body = ast.parse(init.read_text()).body
        assert body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), init
        assert "May import" in body[0].value.value, f"{init}: say what the package may import"
        assert len(body) == 1, f"{init} should hold only its docstring"


def test_the_dataset_plugins_import_the_registry_and_one_place_lists_them(graph):
    plugins = ("core.engine.data_digits", "core.engine.data_torchvision", "core.engine.data_own")
    for p in plugins:
        targets = {t for t, _, _ in graph[p]}
        assert "core.engine.registry" in targets and "core.engine.data" not in targets, p
    listing = [m for m, found in graph.items() if {t for t, _, _ in found} >= set(plugins)]
    assert listing == ["core.engine.data"]
