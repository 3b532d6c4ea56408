"""Dependencies run one way: every import in ferkeras/ (those inside functions too) points down
the declared layers, and none makes a cycle. ferkeras.cli (cli/) sits on top and may import
anything; nothing imports it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ferkeras"

# Bottom to top: a module may import only modules listed before it. A package's __init__ comes
# after the submodules it gathers; importing ferkeras.x.y imports the package ferkeras.x too.
LAYERS = [
    "ferkeras",  # __version__ only
    # facts and I/O helpers
    "ferkeras.errors", "ferkeras.spec", "ferkeras.fileio",
    # what a run is, where runs are, what they trained on
    "ferkeras.config", "ferkeras.synthetic", "ferkeras.data", "ferkeras.runs",
    # the model, and running any model file
    "ferkeras.model", "ferkeras.runners",
    # media: images, detectors, crops, drawing, frames, tracking
    "ferkeras.media.images", "ferkeras.media.detect", "ferkeras.media.mtcnn", "ferkeras.media.crop",
    "ferkeras.media.draw", "ferkeras.media.frames", "ferkeras.media.track", "ferkeras.media",
    # explanation methods and figures (arrays in, arrays and figures out), the gradient math
    "ferkeras.viz.figures", "ferkeras.viz.filters", "ferkeras.viz.saliency", "ferkeras.viz",
    "ferkeras.gradients",
    # the stages: train (and its multi-worker loop), evaluate, export
    "ferkeras.distributed", "ferkeras.train", "ferkeras.evaluate", "ferkeras.export",
    # the `viz` commands and the report, composed of the stages
    "ferkeras.viz.workflows",
    "ferkeras.report.tex", "ferkeras.report.document", "ferkeras.report.sections",
    "ferkeras.report.build", "ferkeras.report",
    # applications
    "ferkeras.predict", "ferkeras.video", "ferkeras.compat", "ferkeras.serve",
]

# Known upward imports, each with the change that removes it. An entry that no longer occurs
# fails test_pending_exceptions_still_exist, so the list only shrinks.
PENDING: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative).with_suffix(".py").is_file() or \
        (PACKAGE.parent / relative / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """Every ferkeras module that a file imports, anywhere in it, with the packages that hold them."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from .x import y
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for alias in node.names:  # from ferkeras import viz: the module ferkeras.viz
                targets.append(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
        for target in targets:
            if target.split(".")[0] != "ferkeras":
                continue
            parts = target.split(".")
            # Importing ferkeras.a.b runs ferkeras.a's __init__ first, unless we are inside it.
            for i in range(2, len(parts) + 1):
                module = ".".join(parts[:i])
                if not (name == module or name.startswith(module + ".")):
                    found.add(module)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path (first module repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_every_module_has_a_declared_layer():
    undeclared = sorted(set(graph()) - set(LAYERS))
    assert not undeclared, f"add these to LAYERS in tests/test_layout.py, where they belong: {undeclared}"


def test_imports_point_down_the_layers():
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = [f"{module} imports {target}" for module, targets in graph().items() if module in rank
              for target in sorted(targets)
              if target in rank and rank[target] > rank[module] and (module, target) not in PENDING]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    edges = {module: targets - {t for m, t in PENDING if m == module} for module, targets in graph().items()}
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_pending_exceptions_still_exist():
    edges = graph()
    gone = [f"{m} -> {t}" for m, t in PENDING if t not in edges.get(m, set())]
    assert not gone, f"no longer imported: remove from PENDING: {gone}"


def test_nothing_imports_the_cli():
    users = [module for module, targets in graph().items()
             if any(t.startswith("ferkeras.cli") for t in targets)]
    assert not users, f"ferkeras.cli is the top layer, but {users} import it"


def test_the_checks_catch_what_they_should():
    # A cycle hidden in a function-level import is found, and its path named.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = PACKAGE / "evaluate.py"
    assert {"ferkeras.viz", "ferkeras.viz.figures", "ferkeras.runners"} <= imports_of(source)
    assert "ferkeras.model" in imports_of(source)  # the lazy import inside evaluate()
