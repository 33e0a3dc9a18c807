"""dvc.yaml lists, for every stage, all the kd/ code the stage's script imports (directly or not).

Without this, editing a module a stage runs leaves its outputs "up to date" in `dvc status`.
Imports are read from the source (module level and inside functions), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for cand in (ROOT / rel.with_suffix(".py"), ROOT / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None


def imported_modules(path: Path) -> set[str]:
    """Every `kd...` module named by an import statement in `path` (`from kd import x` -> kd.x if a module)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "kd"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.split(".")[0] == "kd":
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if module_file(f"{node.module}.{a.name}")}
    return out


def closure(path: Path) -> set[Path]:
    """The kd/ files `path` needs: its imports, their imports, ... plus each package's __init__."""
    seen: set[Path] = set()
    todo = [path]
    while todo:
        for name in imported_modules(todo.pop()):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing kd.data.io runs kd/__init__ and kd/data/__init__
                f = module_file(".".join(parts[:i]))
                if f is not None and f not in seen:
                    seen.add(f)
                    todo.append(f)
    return seen


def stage_needs() -> dict[str, set[str]]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = {}
    for name, st in stages.items():
        script = ROOT / st["cmd"].split("-m ")[1].split()[0].replace(".", "/")
        script = script.with_suffix(".py")
        out[name] = {f.relative_to(ROOT).as_posix() for f in closure(script)}
    return out


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def test_every_stage_depends_on_all_the_kd_code_it_imports() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {
        name: sorted(f for f in needs if not covered(f, stages[name]["deps"]))
        for name, needs in stage_needs().items()
    }
    missing = {k: v for k, v in missing.items() if v}
    assert not missing, f"dvc.yaml deps miss imported code (add them): {missing}"


def test_closure_follows_imports_inside_functions(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("def f():\n    from kd.models.teacher import model_key\n")
    files = {f.relative_to(ROOT).as_posix() for f in closure(script)}
    assert {"kd/models/teacher.py", "kd/models/loading.py", "kd/config.py", "kd/__init__.py"} <= files  # models via teacher


def test_kd_imports_run_one_way() -> None:
    """No import cycle inside kd/, not even through an import inside a function: imports run one way."""
    files = sorted(p for p in (ROOT / "kd").rglob("*.py"))
    name_of = {f: ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for f in files}
    edges = {name_of[f]: {m for m in imported_modules(f) if module_file(m)} - {name_of[f]} for f in files}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
