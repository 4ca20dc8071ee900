"""The house rules of docs/ARCHITECTURE.md, checked on the source: no import cycle, short modules and
functions, no pruning method named in the generic loop, recipes and paper numbers written once,
and the table declarations shipping inside the package."""
from __future__ import annotations

import ast
import os
import re
import subprocess

import pytest

from repro.papers import TABLES, load_table, recipes

from conftest import PYTHON, REPO

PKG = REPO / "repro"
MODULES = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
           for p in PKG.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING" or \
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"


def _runtime_imports(tree: ast.AST):
    """Every import statement that runs (module level or inside functions), not TYPE_CHECKING ones."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(mod: str, node) -> set[str]:
    pkg = mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = pkg.split(".")
            base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    return {n for n in names if n in MODULES and n != mod}


def import_graph() -> dict[str, set[str]]:
    return {m: set().union(*[_targets(m, n) for n in _runtime_imports(ast.parse(p.read_text()))] or [set()])
            for m, p in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components: every component of more than one node is a cycle."""
    index, low, on, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycle_between_modules():
    assert find_cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_real_edges():
    """The cycle test above can only fail if edges are found: relative, absolute and function-level
    imports all count; TYPE_CHECKING imports do not (they never run)."""
    graph = import_graph()
    assert "repro.engine.loop" in graph["repro.train"]            # absolute, module level
    assert "repro.engine.checkpoint" in graph["repro.engine.loop"]  # relative "from . import"
    assert "repro.engine.finish" in graph["repro.engine.loop"]     # inside a function
    assert "repro.engine.loop" not in graph["repro.engine.finish"]  # TYPE_CHECKING only


def test_layers_import_only_downwards():
    graph = import_graph()
    never = {"repro.prune": ("repro.rundir", "repro.config", "repro.engine", "repro.runs"),
             "repro.engine": ("repro.runs", "repro.launch", "repro.tables", "repro.report"),
             "repro.runs": ("repro.launch", "repro.tables", "repro.report"),
             "repro.papers": ("repro.config", "repro.engine", "repro.runs", "repro.report", "torch"),
             # export stands beside bench: the engine's final phase calls it, it uses engine.exact only
             "repro.export": ("repro.engine.loop", "repro.engine.finish", "repro.runs", "repro.launch",
                              "repro.tables", "repro.report"),
             "repro.io": ("repro.",)}
    for mod, targets in graph.items():
        for layer, banned in never.items():
            if mod == layer or mod.startswith(layer + "."):
                bad = [t for t in targets if any(t == b or t.startswith(b.rstrip(".") + ".") for b in banned)]
                assert not bad, f"{mod} imports {bad}"


def test_no_module_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_over_60_lines_in_engine_runs_and_export():
    long = {}
    for m, p in MODULES.items():
        if m.startswith(("repro.engine", "repro.runs", "repro.export")):
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 60:
                        long[f"{m}.{node.name}"] = n
    assert long == {}


def test_the_generic_loop_names_no_pruning_method():
    hits = [f"{p.relative_to(REPO)}:{i}" for p in (PKG / "engine").rglob("*.py") if "methods" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"prune.method|self.pruner", line)]
    assert hits == []


# ---------------------------------------------------------------------------- facts written once
def _paper_numbers() -> set[float]:
    out = set()
    for name in TABLES:
        spec = load_table(name)
        for row in spec.rows:
            for pv in [*row.paper.values(), row.flops_paper]:
                if pv is not None:
                    out |= {abs(v) for v in pv.numbers if abs(v) >= 1.0}
    return {v for v in out if not v.is_integer()}  # 1.0 or 100.0 identify no fact


def test_paper_numbers_appear_only_in_the_declarations():
    numbers = _paper_numbers()
    assert {70.28, 92.26, 52.94, 41.8, 77.51} <= numbers  # the collection sees the declarations
    hits = []
    for m, p in MODULES.items():
        if m.startswith("repro.papers"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float) and abs(node.value) in numbers:
                hits.append(f"{m}:{node.lineno} {node.value}")
    assert hits == []


def _literal(node):
    try:
        value = ast.literal_eval(node)
    except ValueError:  # a name or a call: not a literal copy
        return None
    try:
        hash(value)
    except TypeError:  # e.g. a tuple of dicts: not a recipe value
        return None
    return value


def test_recipes_are_written_once():
    from repro.config import PRESETS, Config
    assert PRESETS is recipes.PRESETS
    cfg = Config()
    for key, value in recipes.CIFAR.items():  # Config() is the CIFAR recipe ...
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        assert obj == value, key
    # ... because its defaults are read from it, not typed again
    schema = (PKG / "config" / "schema.py").read_text()
    for key in recipes.CIFAR:
        field = key.split(".")[1]
        assert not re.search(rf"\b{field}: [\w\[\], .]+ = key\((\d|\(\d|True\b|False\b)", schema), key
    for name in TABLES:  # every table's base is a recipe plus the data set
        base = load_table(name).base
        recipe = recipes.IMAGENET if base.get("data.name") == "imagenet" else recipes.CIFAR
        assert all(base[k] == v for k, v in recipe.items()), name
    # no hand copy of a recipe anywhere else: no dict literal holding 3+ of a recipe's pairs
    for m, p in MODULES.items():
        if m == "repro.papers.recipes":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Dict):
                pairs = {(k.value, _literal(v)) for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)}
                for recipe in (recipes.CIFAR, recipes.IMAGENET):
                    assert len(pairs & set(recipe.items())) < 3, f"{m}:{node.lineno} copies a recipe"


# ---------------------------------------------------------------------------- packaging
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_declarations_ship_with_the_installed_package(tmp_path):
    """A non-editable install, used from another folder: the tables and the launcher find every
    declaration inside the package (nothing is read from launch/ or the checkout)."""
    import shutil
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):  # a copy: setuptools builds in the source tree
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "repro", src / "repro", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([PYTHON, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--no-compile", "--target", str(site), str(src)], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run([PYTHON, "-c", "import repro.papers.sfp_table2 as m; print(m.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    dry = subprocess.run([PYTHON, "-m", "repro.launch", "table2", "--dry-run", "--root", "R"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "table2: 12 runs (new 12); to submit: 12" in dry.stdout, dry.stderr[-2000:]
    tab = subprocess.run([PYTHON, "-m", "repro.tables", "table2", "--root", "R", "--out", "O"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert tab.returncode == 0, tab.stderr[-2000:]
    assert "Runs found: 0 of 12 expected" in (work / "O" / "table2.md").read_text()
