"""The package's architecture: layers import one way, no module imports itself back, the CLI starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

import segrefine

PACKAGE = Path(segrefine.__file__).parent
# Lower layers never import higher ones: models <- hub <- engine <- visualize, serve <- cli. Same-layer imports are fine.
LAYERS = {
    "segrefine": 0, "segrefine.errors": 0, "segrefine.imageio": 0, "segrefine.weights": 0, "segrefine.data": 1,
    "segrefine.models": 1, "segrefine.hub": 2, "segrefine.engine": 3, "segrefine.visualize": 4, "segrefine.serve": 4, "segrefine.cli": 5,
    "segrefine.__main__": 5,
}  # fmt: skip


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    return max((level for prefix, level in LAYERS.items() if module == prefix or module.startswith(prefix + ".")),
               key=lambda level: level)  # fmt: skip


def _imports(path: Path) -> set[str]:
    """Every segrefine module `path` imports, at the top or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    skipped = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
               for stmt in block.body for node in ast.walk(stmt)}  # fmt: skip
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segrefine"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names if _exists(f"{node.module}.{alias.name}"))
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segrefine"))
    return found


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    return (PACKAGE / relative).with_suffix(".py").is_file() or (PACKAGE / relative / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_layers_import_one_way():
    upward = [f"{a} -> {b}" for a, targets in _graph().items() for b in targets if _layer(b) > _layer(a)]
    assert not upward, upward


def test_no_import_circles():
    graph = _graph()
    # A package's __init__ re-exporting its modules is not a circle; a module that imports its own package is.
    edges = {a: {b for b in targets if not a.startswith(b + ".") and not (b.startswith(a + ".") and _is_package(a))}
             for a, targets in graph.items()}  # fmt: skip
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def _is_package(module: str) -> bool:
    return (PACKAGE / Path(*module.split(".")[1:]) / "__init__.py").is_file()


def test_version_and_help_do_not_import_torch():
    code = (
        "import sys\nfrom segrefine.cli import main\n"
        "for argv in (['--version'], ['--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "segrefine" in result.stdout and "predict" in result.stdout


def test_the_predict_job_does_not_import_the_predictor_back():
    """predictor.py runs the job of predict_files.py; the job names the predictor's methods, not its module."""
    tree = ast.parse((PACKAGE / "engine" / "predict_files.py").read_text())
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "segrefine.engine.predictor" not in modules and "segrefine.engine.predict_files" in _imports(PACKAGE / "engine" / "predictor.py")
