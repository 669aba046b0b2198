"""The layers import one way: hdl/, firmware/ and sim/ depend on the core (tinylpu/), the compiler
never imports the simulator, the chip knows neither; the core imports no layer.  Parsed from the
source (``ast``), so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# folder on disk -> the import name it is installed as (pyproject's package-dir)
LAYERS = {"tinylpu": "tinylpu", "hdl": "tinylpu.hdl", "firmware": "tinylpu.firmware", "sim": "tinylpu.sim"}
# layer -> the layers it may import (besides itself)
ALLOWED = {
    "tinylpu": {"tinylpu.configs"},
    "tinylpu.hdl": {"tinylpu"},
    "tinylpu.firmware": {"tinylpu"},
    "tinylpu.sim": {"tinylpu", "tinylpu.hdl", "tinylpu.firmware"},
}
# the CLI lives in the core folder but dispatches to every layer: it is the one exception
CLI = {"tinylpu/cli.py"}


def layer_of(module):
    """The layer an absolute module name belongs to (longest prefix), or None if not ours."""
    best = None
    for name in ["tinylpu.configs", *LAYERS.values()]:
        if module == name or module.startswith(name + "."):
            if best is None or len(name) > len(best):
                best = name
    return best


def imports(path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, node.module or "", [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, 0, a.name, []


def sources():
    for folder, layer in LAYERS.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if rel not in CLI:
                yield rel, p, layer


def violations():
    bad = []
    for rel, p, layer in sources():
        for line, level, module, names in imports(p):
            if level:
                bad.append(f"{rel}:{line}: relative import (from {'.' * level}{module}): use an absolute "
                           "tinylpu.* import")
                continue
            targets = [module] + [f"{module}.{n}" for n in names] if module == "tinylpu" else [module]
            for t in targets:
                other = layer_of(t)
                if other is None or other == layer or (module == "tinylpu" and t == "tinylpu"):
                    continue
                if other not in ALLOWED[layer]:
                    bad.append(f"{rel}:{line}: {layer} imports {t} ({other} is not below {layer})")
    return bad


def test_layers_import_one_way():
    assert violations() == []


def test_core_modules_exist():
    """The core holds what every layer shares."""
    for name in ("config", "isa", "arith", "wire", "link", "schema"):
        assert (ROOT / "tinylpu" / f"{name}.py").exists(), name


@pytest.mark.parametrize("src, layer, bad", [
    ("from tinylpu.sim.golden import Golden\n", "tinylpu.firmware", True),
    ("from tinylpu.firmware.asm import assemble\n", "tinylpu.hdl", True),
    ("from tinylpu.hdl.chip import Chip\n", "tinylpu", True),
    ("from tinylpu import isa\n", "tinylpu.hdl", False),
    ("from tinylpu.isa import Opcode\n", "tinylpu.firmware", False),
    ("from tinylpu.hdl.c2c import LinkTX\n", "tinylpu.sim", False),
    ("from ..config import load_config\n", "tinylpu.hdl", True),
])
def test_the_checker_catches(tmp_path, monkeypatch, src, layer, bad):
    """The checker itself: a wrong-way import in a scratch file is reported."""
    folder = {v: k for k, v in LAYERS.items()}[layer]
    d = tmp_path / folder
    d.mkdir()
    (d / "scratch.py").write_text(src)
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    for other in LAYERS:
        (tmp_path / other).mkdir(exist_ok=True)
    assert bool(violations()) == bad
