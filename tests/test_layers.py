"""The house's layers run one way: minigpt -> metrics -> decoding -> training -> tasks -> cli -> bench -> run.py.

A module may import its own package and the packages before it, never one after it; no task imports another
task. The test reads every import statement (module level and inside functions) with `ast`, so a lazy import
inside a function counts too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["minigpt", "metrics", "decoding", "training", "tasks", "cli", "bench", "run"]
TASKS = {"sonnet", "sentiment", "paraphrase", "multitask"}


def project_modules():
    """(path relative to the root, its layer) of every project Python file outside tests/."""
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        layer = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if layer in LAYERS:
            yield rel, layer


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module name) of every absolute import in the file; `from X import y` also yields X.y, so
    that `from tasks import sonnet` is seen as importing the task tasks.sonnet."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return found


def test_no_module_imports_a_layer_above_its_own():
    upward = {}
    for rel, layer in project_modules():
        for line, module in imported_modules(ROOT / rel):
            top = module.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > LAYERS.index(layer):
                upward.setdefault((str(rel), line), f"{rel}:{line} imports {module} ({top} is above {layer})")
    assert not upward, "\n".join(upward.values())


def test_no_task_imports_another_task():
    crossing = []
    for rel, layer in project_modules():
        if layer != "tasks" or rel.stem not in TASKS:
            continue
        for line, module in imported_modules(ROOT / rel):
            parts = module.split(".")
            if parts[0] == "tasks" and len(parts) > 1 and parts[1] in TASKS - {rel.stem}:
                crossing.append(f"{rel}:{line} imports {module}")
    assert not crossing, "\n".join(crossing)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checker itself: an import inside a function, of a package above, is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from cli.sweep import main\n    return main\n", encoding="utf-8")
    assert (2, "cli.sweep") in imported_modules(module)
