"""The package's shape, checked by reading its source: the import graph runs one way.

- nothing outside ``cnnlab.cli`` imports ``cnnlab.cli``, nor names it to import or run it (a
  string such as "cnnlab.cli" for importlib or runpy), except the package's entry point
  ``cnnlab.__main__`` (``python -m cnnlab``), which runs the command line and is no library code;
- no private name (``_x``) crosses a module: not imported, not reached as ``module._x``;
- no import cycle between modules other than the one ARCHITECTURE allows (``autograd`` -> the
  elementwise operators in ``functional.ops``, which need ``Tensor``).

Every import counts, function-level ones too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "cnnlab"
ALLOWED_CYCLE_EDGES = {("cnnlab.autograd", "cnnlab.functional.ops")}
ENTRY_POINT = "cnnlab.__main__"  # `python -m cnnlab`: runs the command line, so it may name it


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(importer: str, level: int, module: str | None) -> str:
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str):
    """(target module, imported names, line) for each import in a module, function-level too."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    aliases = {}  # local alias -> module, to follow `module._private` attribute access
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                found.append((a.name, [], node.lineno))
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(name, node.level, node.module)
            names = []
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in MODULES:  # `from . import functional`: an import of a module
                    found.append((sub, [], node.lineno))
                    aliases[a.asname or a.name] = sub
                else:
                    names.append(a.name)
            if names:
                found.append((target, names, node.lineno))
    attrs = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            attrs.append((aliases[node.value.id], node.attr, node.lineno))
    return found, attrs


def _owner(target: str) -> str | None:
    """The cnnlab module an import lands in (None for other packages)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


GRAPH = {}
PRIVATE = []
for _name in MODULES:
    _found, _attrs = _imports(_name)
    GRAPH[_name] = set()
    for _target, _names, _line in _found:
        _mod = _owner(_target)
        if _mod is None:
            continue
        if _mod != _name:
            GRAPH[_name].add(_mod)
        for n in _names:
            if n.startswith("_") and not n.startswith("__") and _mod != _name:
                PRIVATE.append(f"{_name}:{_line} imports {_mod}.{n}")
    for _mod, _attr, _line in _attrs:
        if _mod in MODULES and _mod != _name:
            PRIVATE.append(f"{_name}:{_line} reaches {_mod}.{_attr}")


def _in_cli(name: str) -> bool:
    return name == "cnnlab.cli" or name.startswith("cnnlab.cli.")


def test_the_package_has_modules():
    assert "cnnlab.autograd" in MODULES and "cnnlab.functional.ops" in MODULES
    assert sum(len(v) for v in GRAPH.values()) > 50  # the reader found the imports


def test_nothing_outside_cli_imports_cli():
    bad = sorted(f"{a} imports {b}" for a, deps in GRAPH.items() if not _in_cli(a) for b in deps if _in_cli(b))
    assert not bad, "\n".join(bad)


def _names_cli(name: str) -> list[int]:
    """Lines of a module where a string names the CLI's package or one of its modules."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and (node.value == "cnnlab.cli" or node.value.startswith("cnnlab.cli."))]


def test_only_the_entry_point_names_the_cli_outside_it():
    bad = [f"{name}:{line} names cnnlab.cli" for name in MODULES if not _in_cli(name) and name != ENTRY_POINT
           for line in _names_cli(name)]
    assert not bad, "\n".join(bad)
    assert _names_cli(ENTRY_POINT) and not GRAPH[ENTRY_POINT]  # it runs the CLI by name and imports nothing of cnnlab


def test_no_private_name_crosses_modules():
    assert not PRIVATE, "\n".join(PRIVATE)


def _own_submodule(package: str, module: str) -> bool:
    return _is_package(package) and module.startswith(package + ".")


def _cycles():
    """Strongly connected components of more than one module (Tarjan), with the allowed edges removed."""
    graph = {a: {b for b in deps if (a, b) not in ALLOWED_CYCLE_EDGES and not _own_submodule(a, b)}
             for a, deps in GRAPH.items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    """A package's __init__ re-exporting its submodules is no cycle of logic, so edges from a package
    to its own submodules are left out; every other edge counts."""
    assert not _cycles(), _cycles()


@pytest.mark.parametrize("importer, level, module, expected", [
    ("cnnlab.nn.layers", 2, "functional.conv", "cnnlab.functional.conv"),
    ("cnnlab.nn", 1, "layers", "cnnlab.nn.layers"),
    ("cnnlab.autograd", 1, None, "cnnlab"),
])
def test_relative_imports_resolve(importer, level, module, expected):
    assert _resolve(importer, level, module) == expected
