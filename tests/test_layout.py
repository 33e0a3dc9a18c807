"""The package layout: kd/'s subpackages import one way, data -> models -> retrieval -> distill.

A module may import its own layer or a lower one, never a higher one, so each subpackage can be read
(and tested) with only what lies below it. The top-level plumbing (config, artifacts, errors, ...) lies
under everything; `kd.compute` (where bulk model passes run) sits between models and retrieval.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = {"data": 1, "models": 2, "compute": 3, "retrieval": 4, "distill": 5}


def layer(module: str) -> int:
    """The layer of a `kd.` module name: its subpackage's, or 0 for top-level plumbing."""
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def kd_imports(path: Path) -> set[str]:
    """Every `kd.` module or package an import statement in `path` names (inside functions too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kd.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("kd"):
            if node.module == "kd" or node.module.count(".") == 1 and (ROOT / "kd" / node.module[3:]).is_dir():
                out |= {f"{node.module}.{a.name}" for a in node.names}  # `from kd import x`, `from kd.models import x`
            else:
                out.add(node.module)
    return out


def modules() -> list[Path]:
    return sorted((ROOT / "kd").rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_imports_run_down_the_layers(path: Path) -> None:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    upward = sorted(m for m in kd_imports(path) if layer(m) > layer(name))
    assert not upward, f"{name} (layer {layer(name)}) imports a higher layer: {upward}; move the shared code down"


def test_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    script = tmp_path / "m.py"
    script.write_text("from kd.distill import train\n\ndef f():\n    from kd.retrieval.search import search\n")
    found = kd_imports(script)
    assert found == {"kd.distill.train", "kd.retrieval.search"}
    assert all(layer(m) > layer("kd.models.teacher") for m in found)
    assert layer("kd.config") == 0 and layer("kd.compute") == LAYERS["compute"]


def test_every_kd_module_lives_in_a_named_part() -> None:
    top = sorted(p.stem for p in (ROOT / "kd").glob("*.py"))
    plumbing = ["__init__", "artifacts", "atomic", "choices", "cli", "compose", "config", "errors", "params", "paths", "tracking"]
    assert top == plumbing, f"new top-level module(s) {sorted(set(top) - set(plumbing))}: put them in a subpackage"
