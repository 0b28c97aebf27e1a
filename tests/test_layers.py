"""The package's layers (docs/design.md, "Layers"): no import circles, no import back up the layers.

Every import of every module is read with `ast` (those inside functions too: a lazy import is still
a dependency), so the check needs nothing installed. A module matches the longest prefix below;
a module that matches none fails the test, so a new module is placed in a layer on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "efficientvis_trt"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# Lowest first; a module may import its own layer and the ones before it. Written once more, as prose,
# in docs/design.md, "Layers".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "foundation",
        (
            "",  # the package itself: __version__
            "errors",
            "cpu_info",
            "extras",
            "io_utils",
            "memory",
            "timing",
            "versions",
            "resize_kernels",
            "resize",
            "video",
            "contract",
            "config",
        ),
    ),
    ("bundle", ("bundle", "ort_session")),
    ("operators", ("plugins",)),
    ("model and data", ("model", "data", "eval")),
    ("tensorrt", ("trt",)),
    ("capabilities", ("capabilities",)),
    ("producers", ("export", "precision")),
    ("runtime", ("runtime",)),
    ("applications", ("serve", "train", "measure")),
    ("commands", ("commands", "cli", "__main__")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The module of ours that `name` (a module, or a module's attribute) is, or None for another package's."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def imports_of(module: str) -> set[str]:
    """The modules of ours that `module` imports anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        found.update(o for o in map(_owner, names) if o is not None and o != module)
    return found


def layer_of(module: str) -> int:
    rel = module[len(PACKAGE) + 1 :] if module != PACKAGE else ""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (rel == prefix or rel.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS here and to docs/design.md, 'Layers'")
    return best


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_back_up_the_layers():
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})"
        for m, targets in sorted(GRAPH.items())
        for t in sorted(targets)
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    # Tarjan's strongly connected components: any component of more than one module is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for t in GRAPH[m]:
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                component.append(t)
                if t == m:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in sorted(GRAPH):
        if m not in index:
            visit(m)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_layer_order_is_the_one_in_the_design_doc():
    doc = (ROOT.parent / "docs" / "design.md").read_text()
    section = doc.split("## Layers", 1)[1].split("\n## ", 1)[0]
    listed = [line.split("**")[1] for line in section.splitlines() if line[:1].isdigit() and "**" in line]
    assert listed == [name for name, _ in LAYERS]


def test_every_folder_of_the_package_is_a_package():
    # setuptools' find (pyproject.toml) packs only folders with an __init__.py: a module elsewhere is lost
    folders = {p.parent for p in ROOT.rglob("*.py") if "__pycache__" not in p.parts}
    assert sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").is_file()) == []
