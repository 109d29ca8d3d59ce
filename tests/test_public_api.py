"""Every name that cnnlab, cnnlab.nn, cnnlab.functional, cnnlab.optim and cnnlab.nn.init export is
used by some test.

"Used" is read from the tests' source with ast, not grepped: a name counts when a test imports it
from its module (`from cnnlab.nn import Softmax`) or reaches it as an attribute of that module
under whatever local name the file gave the module (`nn.Softmax`, `F.softmax`, `cnnlab.nn.init.ones_`).
`torch.nn.Softmax` or a comment mentioning softmax does not count. This file itself is left out.
A Tensor method (t.sum()) does not count for the functional of that name either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cnnlab

TESTS = Path(__file__).resolve().parent
MODULES = ["cnnlab", "cnnlab.nn", "cnnlab.functional", "cnnlab.optim", "cnnlab.nn.init"]


def _exported(module_name):
    module = cnnlab
    for part in module_name.split(".")[1:]:
        module = getattr(module, part)
    names = getattr(module, "__all__", None)
    if names is None:  # nn.init has no __all__: its public functions
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__]
    return sorted(names)


def _dotted(node):
    """'a.b.c' for an attribute chain on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id] + parts[::-1])


def _uses(path):
    """{(module, name)} that one test file imports or reaches."""
    tree = ast.parse(path.read_text(), filename=str(path))
    alias = {}  # local name -> cnnlab module it stands for
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "cnnlab":
                    if a.asname:
                        alias[a.asname] = a.name
                    else:
                        alias["cnnlab"] = "cnnlab"
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnlab":
            for a in node.names:
                used.add((node.module, a.name))
                alias[a.asname or a.name] = f"{node.module}.{a.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted is None:
                continue
            head, *rest = dotted.split(".")
            if head not in alias or not rest:
                continue
            full = [alias[head]] + rest
            for i in range(1, len(full)):
                used.add((".".join(full[:i]), full[i]))
    return used


USED = set()
for _path in sorted(TESTS.rglob("test_*.py")):
    if _path.resolve() != Path(__file__).resolve():
        USED |= _uses(_path)


def _expanded(used):
    """A module reached as `cnnlab.nn` also counts as the package attribute ('cnnlab', 'nn')."""
    out = set(used)
    for module, _ in used:
        parts = module.split(".")
        for i in range(1, len(parts)):
            out.add((".".join(parts[:i]), parts[i]))
    return out


@pytest.mark.parametrize("module_name", MODULES)
def test_every_exported_name_is_used_by_a_test(module_name):
    used = _expanded(USED)
    missing = [n for n in _exported(module_name) if (module_name, n) not in used]
    assert not missing, f"{module_name} exports names no test uses: {missing}"


def test_the_reader_sees_uses_and_only_uses(tmp_path):
    """The reader on a small file: module aliases, from-imports and attribute chains count;
    torch's names, strings and comments do not."""
    src = (
        "import torch\nimport cnnlab\nimport cnnlab.functional as F\nfrom cnnlab import nn, optim as O\n"
        "from cnnlab.nn import Identity\n"
        "def test():\n"
        "    F.relu(1); nn.Softmax(); O.SGD; cnnlab.nn.init.ones_; torch.nn.LogSoftmax(); Identity()\n"
        "    'F.sigmoid'  # F.tanh\n"
    )
    probe = tmp_path / "test_probe.py"
    probe.write_text(src)
    found = _uses(probe)
    for expected in [("cnnlab.functional", "relu"), ("cnnlab.nn", "Softmax"), ("cnnlab.optim", "SGD"),
                     ("cnnlab.nn.init", "ones_"), ("cnnlab.nn", "Identity"), ("cnnlab", "nn")]:
        assert expected in found
    for absent in [("cnnlab.nn", "LogSoftmax"), ("cnnlab.functional", "sigmoid"), ("cnnlab.functional", "tanh")]:
        assert absent not in found
    assert "relu" in _exported("cnnlab.functional") and "ones_" in _exported("cnnlab.nn.init")
