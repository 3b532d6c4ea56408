"""Dependencies run one way: every import in ferkeras/ (those inside functions too) points down
the declared layers, and none makes a cycle. ferkeras.cli (cli/) sits on top and may import
anything; nothing imports it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ferkeras"

# Bottom to top, in the order of the README's layout tree (test_layers_follow_the_readme_tree):
# a module may import only modules listed before it. A package's __init__ comes after the
# submodules it gathers; importing ferkeras.x.y imports the package ferkeras.x too.
LAYERS = [
    "ferkeras",  # __version__ only
    # facts and I/O helpers
    "ferkeras.errors", "ferkeras.cpu", "ferkeras.spec", "ferkeras.fileio", "ferkeras.plotting",
    # media (no model): images, the face records, detectors, crops, drawing, frames, tracking;
    # photos in image folders are read through its detectors
    "ferkeras.media.images", "ferkeras.media.faces", "ferkeras.media.detect", "ferkeras.media.mtcnn",
    "ferkeras.media.blazeface", "ferkeras.media.crop", "ferkeras.media.detectors",
    "ferkeras.media.draw", "ferkeras.media.frames", "ferkeras.media.track", "ferkeras.media",
    # what a run is, where runs are, what they trained on
    "ferkeras.config", "ferkeras.synthetic", "ferkeras.data.splits", "ferkeras.data.cache",
    "ferkeras.data.csvfile", "ferkeras.data.folders", "ferkeras.data", "ferkeras.runs",
    # the model, and running any model file
    "ferkeras.model", "ferkeras.runners",
    # the gradient math, then the stages: train (and its multi-worker loop, teachers and
    # callbacks), evaluate (and its metrics), calibration, export
    "ferkeras.gradients", "ferkeras.distributed", "ferkeras.teaching", "ferkeras.callbacks",
    "ferkeras.train", "ferkeras.ensemble", "ferkeras.metrics",
    "ferkeras.evaluate", "ferkeras.calibrate",
    "ferkeras.exportmeta", "ferkeras.export",
    # explanations: methods and figures (arrays in, arrays and figures out), and the `viz`
    # commands composed of them and the stages
    "ferkeras.viz.figures", "ferkeras.viz.filters", "ferkeras.viz.saliency", "ferkeras.viz.workflows",
    "ferkeras.viz",
    # the report
    "ferkeras.report.tex", "ferkeras.report.document", "ferkeras.report.sections",
    "ferkeras.report.build", "ferkeras.report",
    # applications
    "ferkeras.predict", "ferkeras.pipeline_eval", "ferkeras.video",
    "ferkeras.compat.fer", "ferkeras.compat.classes", "ferkeras.compat", "ferkeras.service",
    "ferkeras.serve",
]


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


def upward_imports(edges: dict[str, set[str]], layers: list[str] = LAYERS) -> list[str]:
    """Each import of a module listed later in layers, as "a imports b"."""
    rank = {name: i for i, name in enumerate(layers)}
    return [f"{module} imports {target}" for module, targets in sorted(edges.items()) if module in rank
            for target in sorted(targets) if target in rank and rank[target] > rank[module]]


def test_imports_point_down_the_layers():
    upward = upward_imports(graph())
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def readme_tree() -> list[str]:
    """The modules of the README's layout tree under ferkeras/, top to bottom, as dotted names."""
    text = (PACKAGE.parent / "README.md").read_text()
    block = text[text.index("## Layout"):]
    block = block[block.index("```") + 3:]
    block = block[:block.index("```")]
    names, folder, top = [], None, None
    for line in block.splitlines():
        entry = line.split()[0] if line.strip() else ""
        depth = (len(line) - len(line.lstrip())) // 2
        if depth == 0:
            top = entry  # ferkeras/, cli/, exported/, bench/, tests/
            continue
        if top != "ferkeras/":
            continue
        if depth == 1:
            folder = entry.rstrip("/") if entry.endswith("/") else None
        if entry.endswith(".py"):
            names.append(".".join(["ferkeras", *([folder] if depth == 2 else []), entry[:-3]]))
    return names


def test_layers_follow_the_readme_tree():
    modules = [name for name in LAYERS
               if not (PACKAGE.parent / Path(*name.split(".")) / "__init__.py").is_file()]
    assert modules == readme_tree()


def test_nothing_imports_the_cli():
    users = [module for module, targets in graph().items()
             if any(t.startswith("ferkeras.cli") for t in targets)]
    assert not users, f"ferkeras.cli is the top layer, but {users} import it"


def test_the_checks_catch_what_they_should():
    # A cycle hidden in a function-level import is found, and its path named.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = PACKAGE / "evaluate.py"
    assert {"ferkeras.plotting", "ferkeras.runners"} <= imports_of(source)
    assert "ferkeras.model" in imports_of(source)  # the lazy import inside evaluate()
    # A stage that imports an explanation figure points up, as evaluate once did.
    edges = {"ferkeras.evaluate": {"ferkeras.viz", "ferkeras.viz.figures", "ferkeras.runners"}}
    assert upward_imports(edges) == ["ferkeras.evaluate imports ferkeras.viz",
                                     "ferkeras.evaluate imports ferkeras.viz.figures"]
