"""The package import graph: common ← theory ← compare ← figures, and empirical on common and
theory only. Every .py of the five packages is parsed with ``ast`` (imports inside functions count too, and so do
``importlib.import_module("pkg...")`` calls with a literal name), so an import that only runs on some code path
cannot hide a dependency. theory and compare must load without torch: a subprocess imports every one of their
modules and looks at sys.modules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "theory", "empirical", "compare", "figures")

# Which packages each package may import (besides itself). Nothing may import figures but figures (and scripts/,
# which is not a package); compare and theory never import empirical, so they never pull in torch.
ALLOWED = {
    "common": set(),
    "theory": {"common"},
    "empirical": {"common", "theory"},
    "compare": {"common", "theory"},
    "figures": {"common", "theory", "compare"},
}
# theory/ keeps the model; only its command line and its quick-look plots use the shared plumbing of common/.
THEORY_MODULES_ON_COMMON = {"theory/predict.py", "theory/plotting.py"}


def _imported_names(tree: ast.AST, package: str) -> set[str]:
    """Top-level names of everything a module imports: import x.y, from x.y import z, relative imports (its own
    package), and importlib.import_module / __import__ with a literal module name."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            out.add(package if node.level else (node.module or "").split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in ("import_module", "__import__"):
                out.add(node.args[0].value.split(".")[0])
    return out


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            yield pkg, path


def package_edges() -> dict[str, dict[str, list[str]]]:
    """{package: {imported package: [files that import it]}} over the five packages (self-imports left out)."""
    edges: dict[str, dict[str, list[str]]] = {p: {} for p in PACKAGES}
    for pkg, path in _modules():
        names = _imported_names(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), pkg)
        for dep in names & set(PACKAGES) - {pkg}:
            edges[pkg].setdefault(dep, []).append(str(path.relative_to(ROOT)))
    return edges


def _cycle(edges: dict[str, dict]) -> list[str] | None:
    """One cycle of the package graph as a list of packages, or None (depth-first search, three colours)."""
    colour = {p: 0 for p in edges}
    stack: list[str] = []

    def visit(p):
        colour[p] = 1
        stack.append(p)
        for q in edges[p]:
            if colour[q] == 1:
                return stack[stack.index(q):] + [q]
            if colour[q] == 0 and (found := visit(q)):
                return found
        colour[p] = 2
        stack.pop()
        return None

    for p in edges:
        if colour[p] == 0 and (found := visit(p)):
            return found
    return None


def test_the_parser_sees_every_kind_of_import():
    src = ("import figures.build\nfrom compare.load import stack\nfrom . import spec\n"
           "def f():\n    import torch\n    importlib.import_module('empirical.run')\n")
    assert _imported_names(ast.parse(src), "theory") == {"figures", "compare", "theory", "torch", "empirical"}


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": []}, "b": {}}) is None


def test_no_cycle_between_packages():
    assert _cycle(package_edges()) is None


def module_edges() -> dict[str, dict[str, list[str]]]:
    """{module: {imported module of the five packages: [the importing file]}} (``from pkg import mod`` and
    ``from .mod import x`` count as importing that module; imports inside functions count too)."""
    names = {f"{pkg}.{'.'.join(p.relative_to(ROOT / pkg).with_suffix('').parts)}": p for pkg, p in _modules()}
    names = {n.removesuffix(".__init__"): p for n, p in names.items()}
    edges: dict[str, dict[str, list[str]]] = {n: {} for n in names}
    for mod, path in names.items():
        pkg = mod.split(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (pkg + ("." + node.module if node.module else "")) if node.level else (node.module or "")
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for t in targets:
                if t in names and t != mod and t != pkg:
                    edges[mod].setdefault(t, []).append(str(path.relative_to(ROOT)))
    return edges


def test_no_cycle_between_modules():
    # e.g. empirical.run and empirical.train once imported each other for the exception the loop raises
    assert _cycle(module_edges()) is None


@pytest.mark.parametrize("pkg", PACKAGES)
def test_each_package_imports_only_what_it_may(pkg):
    bad = {dep: files for dep, files in package_edges()[pkg].items() if dep not in ALLOWED[pkg]}
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg]) or 'nothing'} of the packages; found {bad}"


def test_nothing_outside_figures_imports_figures():
    users = {p for p, deps in package_edges().items() if "figures" in deps}
    assert users == set()


def test_theory_uses_common_only_in_its_cli_and_plots():
    files = set(package_edges()["theory"].get("common", []))
    assert files <= THEORY_MODULES_ON_COMMON, files - THEORY_MODULES_ON_COMMON


@pytest.mark.parametrize("pkg", ["theory", "compare", "common"])
def test_no_torch_import_in_source(pkg):
    hits = [str(path.relative_to(ROOT)) for p, path in _modules() if p == pkg
            and "torch" in _imported_names(ast.parse(path.read_text(encoding="utf-8")), p)]
    assert hits == []


def test_importing_theory_and_compare_loads_no_torch():
    """Every module of theory/ and compare/ imported in a fresh interpreter: torch (and empirical, figures) absent."""
    code = ("import importlib, json, pkgutil, sys\n"
            "import theory, compare\n"
            "for pkg in (theory, compare):\n"
            "    for m in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'empirical', 'figures'))))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": str(ROOT), "PATH": "", "MPLBACKEND": "Agg"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == []


# No private name crosses a module boundary: a helper one module lends another gets a public name (and a
# docstring) in the module that defines it. Method calls on objects (``bank._x()``) are not seen here.
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_names() -> dict[str, Path]:
    """{dotted module name: file} of the five packages (``pkg/__init__.py`` is ``pkg``)."""
    names = {f"{pkg}.{'.'.join(p.relative_to(ROOT / pkg).with_suffix('').parts)}": p for pkg, p in _modules()}
    return {n.removesuffix(".__init__"): p for n, p in names.items()}


def _private_uses(tree: ast.AST, mod: str, modules: set[str], is_package: bool = False) -> list[tuple[int, str]]:
    """(line, what) of each private name that module ``mod`` takes from another module of ``modules``:
    ``from X import _name`` (X absolute or relative, a module of ``modules``; ``from __future__`` is not one), and
    ``alias._name`` where ``alias`` (or a dotted ``a.b``) is bound in this file by an import of such a module
    (``import a.b``, ``import a.b as m``, ``from a import b``). Dunders are public; ``mod``'s own names are its own."""
    package = mod if is_package else mod.rpartition(".")[0]
    bound: dict[str, str] = {}                 # name or dotted name in this file -> the module it is
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    if a.name in modules:
                        bound[a.asname] = a.name
                else:
                    parts = a.name.split(".")
                    bound |= {d: d for d in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if d in modules}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
                src = f"{base}.{node.module}" if node.module else base
            else:
                src = node.module or ""
            if src not in modules:
                continue
            for a in node.names:
                if _is_private(a.name) and src != mod:
                    out.append((node.lineno, f"from {'.' * node.level}{node.module or ''} import {a.name}"))
                if f"{src}.{a.name}" in modules:
                    bound[a.asname or a.name] = f"{src}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            parts, v = [], node.value
            while isinstance(v, ast.Attribute):
                parts.append(v.attr)
                v = v.value
            if isinstance(v, ast.Name):
                dotted = ".".join([v.id, *reversed(parts)])
                if dotted in bound and bound[dotted] != mod:
                    out.append((node.lineno, f"{dotted}.{node.attr}  ({bound[dotted]})"))
    return sorted(out)


def test_the_private_name_check_sees_both_kinds():
    mods = {"theory", "theory.moments", "theory.spec", "empirical", "empirical.bank", "empirical.library",
            "empirical.probes"}
    src = ("from __future__ import annotations\n"
           "import torch\n"
           "import theory.spec\n"
           "from theory.moments import _chunked, moments\n"
           "from .bank import __doc__, FixedBatchBank\n"
           "from . import probes as P, bank\n"
           "from .library import _own\n"
           "torch._foreach_add_(a, b)\n"
           "P._int('x', 1, 0)\n"
           "theory.spec._int(3)\n"
           "bank.__name__, FixedBatchBank._publish, moments._x\n"
           "def f():\n"
           "    from .probes import _pairs as pairs\n"
           "    import empirical.bank as B\n"
           "    B._publish()\n")
    assert _private_uses(ast.parse(src), "empirical.library", mods) == [
        (4, "from theory.moments import _chunked"), (9, "P._int  (empirical.probes)"),
        (10, "theory.spec._int  (theory.spec)"), (13, "from .probes import _pairs"),
        (15, "B._publish  (empirical.bank)")]


def test_no_private_name_is_used_across_modules():
    modules = _module_names()
    hits = [f"{path.relative_to(ROOT)}:{line}: {what}" for mod, path in modules.items()
            for line, what in _private_uses(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), mod,
                                            set(modules), path.name == "__init__.py")]
    assert hits == [], "private names used across modules (give them a public name where defined):\n" + \
        "\n".join(hits)
