"""The house rules of docs/ARCHITECTURE.md, checked on the source: no import cycle, the room table's
import rules (read from the page itself), short modules and functions, no pruning method named in
the generic loop, recipes and paper numbers written once, and the table declarations shipping
inside the package."""
from __future__ import annotations

import ast
import os
import re
import subprocess
from dataclasses import dataclass

import pytest

from repro.papers import TABLES, load_table, recipes

from conftest import PYTHON, REPO

PKG = REPO / "repro"
MODULES = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
           for p in PKG.rglob("*.py")}


def _imports(tree: ast.AST):
    """Every import statement: module level, inside functions, and type-only ones under
    ``if TYPE_CHECKING:`` (they never run, but they are a dependency all the same)."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _absolute(mod: str, node) -> list[str]:
    """The dotted names an import statement of module ``mod`` reaches (relative ones resolved)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = mod if MODULES[mod].name == "__init__.py" else mod.rpartition(".")[0]
        parts = pkg.split(".")
        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
    return [f"{base}.{a.name}" for a in node.names]


def _module_of(name: str) -> str | None:
    """The project module a dotted name is (``repro.x.y``) or lives in (``repro.x.y.attr``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(mod: str, source: str) -> tuple[set[str], set[str]]:
    """(project modules, top-level third-party packages) that ``mod``'s ``source`` imports."""
    project, external = set(), set()
    for node in _imports(ast.parse(source)):
        for name in _absolute(mod, node):
            target = _module_of(name)
            if target is not None:
                if target != mod:
                    project.add(target)
            elif not name.startswith("repro."):
                external.add(name.split(".")[0])
    return project, external


def import_graph() -> dict[str, set[str]]:
    return {m: module_imports(m, p.read_text())[0] for m, p in MODULES.items()}


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
    """The cycle test above can only fail if edges are found: relative, absolute, function-level
    and type-only imports all count."""
    graph = import_graph()
    assert "repro.engine.loop" in graph["repro.train"]            # absolute, module level
    assert "repro.engine.checkpoint" in graph["repro.engine.loop"]  # relative "from . import"
    assert "repro.engine.finish" in graph["repro.engine.loop"]     # inside a function
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .loop import Session\n"
    assert module_imports("repro.engine.finish", type_only) == ({"repro.engine.loop"}, {"typing"})
    assert module_imports("repro.papers.spec", "import torch.nn\nfrom repro.papers.recipes import CIFAR\n") == \
        ({"repro.papers.recipes"}, {"torch"})


# ---------------------------------------------------------------------------- the rooms
@dataclass(frozen=True)
class Room:
    prefixes: tuple[str, ...]   # the modules of the room: these and everything under them
    order: int                  # its row in the table (a room imports only from rows before it)
    never: tuple[str, ...]      # module prefixes (or third-party packages) it must never import
    unless: tuple[str, ...]     # exceptions to ``never``


def _names(cell: str) -> list[str]:
    return [n.strip().strip("`") for n in re.split(r"[,;]", re.sub(r"\([^)]*\)", "", cell)) if n.strip()]


def read_rooms(text: str) -> list[Room]:
    """The room table of docs/ARCHITECTURE.md: the rows in order, and the "must never import" column
    (room names, ``torch``, "anything of the project", "every row after it", "X except Y")."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in text.split("## The rooms")[1].split("\n## ")[0].splitlines() if line.startswith("| `")]
    assert rows and all(len(r) == 4 for r in rows), rows
    prefixes = [tuple("repro." + p.strip("/").removeprefix("repro/").removesuffix(".py").replace("/", ".")
                      for p in _names(r[0]) if p.startswith("repro/")) for r in rows]
    rooms = []
    for i, (row, own) in enumerate(zip(rows, prefixes)):
        never, unless = [], []
        for name in _names(row[3]):
            if name == "anything of the project":
                never.append("repro")
            elif name == "every row after it":
                never += [p for later in prefixes[i + 1:] for p in later]
            elif name not in ("—", ""):
                banned, _, allowed = name.partition(" except ")
                never.append(banned if banned == "torch" else "repro." + banned.strip("`"))
                unless += ["repro." + a.strip().strip("`") for a in allowed.split(" and ") if a.strip()]
        if own:
            rooms.append(Room(own, i, tuple(never), tuple(unless)))
    return rooms


ROOMS = read_rooms((REPO / "docs" / "ARCHITECTURE.md").read_text())


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def room_of(mod: str) -> Room | None:
    return next((r for r in ROOMS if any(_within(mod, p) for p in r.prefixes)), None)


def room_violations(edges: dict[str, tuple[set[str], set[str]]]) -> list[str]:
    """Every import that breaks the table: from a row listed after the importer's, or one its
    "must never import" column names."""
    bad = []
    for mod, (project, external) in edges.items():
        room = room_of(mod)
        for target in sorted(project):
            there = room_of(target)
            if there is not None and there.order > room.order:
                bad.append(f"{mod} imports {target}, a room listed after its own")
        for target in sorted(project | external):
            if any(_within(target, n) for n in room.never) and not any(_within(target, u) for u in room.unless):
                bad.append(f"{mod} imports {target}, which its room must never import")
    return bad


def test_every_module_has_a_room():
    assert [m for m in MODULES if m != "repro" and room_of(m) is None] == []


def test_the_room_table_is_read():
    """The table gives the rooms in order and their rules (so the test below checks something)."""
    order = [r.prefixes for r in ROOMS]
    assert order[0] == ("repro.io",) and order[-1] == ("repro.bench",) and len(order) >= 18
    rules = {r.prefixes[0]: r for r in ROOMS}
    assert rules["repro.io"].never == ("repro",)
    assert "torch" in rules["repro.papers"].never and "repro.engine" in rules["repro.papers"].never
    assert "repro.bench" in rules["repro.models"].never          # "every row after it"
    assert rules["repro.bench"].unless == ("repro.engine.precision", "repro.engine.latency")


def test_rooms_import_only_downwards_and_never_what_the_table_forbids():
    edges = {m: module_imports(m, p.read_text()) for m, p in MODULES.items() if m != "repro"}
    assert room_violations(edges) == []
    # the check sees an upward import, and a forbidden one, when there is one
    assert room_violations({"repro.engine.latency": ({"repro.bench.latency"}, set())}) == [
        "repro.engine.latency imports repro.bench.latency, a room listed after its own",
        "repro.engine.latency imports repro.bench.latency, which its room must never import"]
    assert room_violations({"repro.papers.spec": (set(), {"torch"})}) == [
        "repro.papers.spec imports torch, which its room must never import"]
    assert room_violations({"repro.bench.gpu": ({"repro.engine.precision", "repro.engine.latency"}, set())}) == []
    assert room_violations({"repro.bench.gpu": ({"repro.engine.loop"}, set())}) == [
        "repro.bench.gpu imports repro.engine.loop, which its room must never import"]


def test_planning_and_building_a_table_load_no_trainer(tmp_path):
    """runs.plan and the table builder read run folders; they must not load the training engine."""
    code = ("import sys; from pathlib import Path; from repro.papers import load_table; "
            "from repro.runs.plan import plan; from repro.tables import build; spec = load_table('snf_cifar'); "
            "plan(spec, Path('R')); build(spec, 'R', 'O'); "
            "print(sorted(m for m in sys.modules if m.startswith(('repro.engine', 'repro.train'))))")
    out = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and (tmp_path / "O" / "snf_cifar.md").exists(), out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_no_module_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_no_function_over_60_lines():
    """From its ``def`` line to its last line, decorators aside."""
    long = {}
    for m, p in MODULES.items():
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
