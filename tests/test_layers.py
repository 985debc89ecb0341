"""The package's shape: every import runs one way, down the layers, with no circles (lazy imports included).

A new module gets a line in ``LAYERS``; an import that runs back up fails here with the pair named.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import modules_after

import gantune

ROOT = Path(gantune.__file__).parent

#: lowest first; a module may import its own layer or a lower one. Matched by longest dotted prefix.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "env", "events", "registry", "provenance", "viz", "dburl", "progress", "sampling.expr", "noise",
     "plugins"),
    ("latent",),  # slerp walks through a generator's latent space and their pictures (torch and viz only)
    ("config",),
    ("rundir",),
    ("data",),
    ("devices",),
    ("gan", "gan.progressive"),  # gan.progressive builds on gan.nets (no circle: nets never imports it)
    ("metrics",),
    ("catalogue", "health"),
    ("trial", "generate"),
    # the Optuna side (a review's votes, the warm-start recipes too); MLflow
    ("sampling", "sampling.votes", "sampling.recipes", "sampling.warm", "tracking"),
    ("search",),  # the Ray side
    ("export", "report", "production", "review", "starter"),
    ("cli", ""),  # "" is the package itself
]


def layer_of(module: str) -> int:
    rel = module.removeprefix("gantune").removeprefix(".")
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for i, names in enumerate(LAYERS):
        for name in names:
            matches = rel == name or rel.startswith(name + ".") or name == ""
            if matches and (best is None or len(name) > best[0]):
                best = (len(name), i)
    assert best is not None, f"{module} has no layer in tests/test_layers.py"
    return best[1]


def module_name(path: Path) -> str:
    parts = ["gantune", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str], me: str) -> set[str]:
    """The gantune modules ``path`` (module ``me``) imports anywhere in its body (``from pkg import sub`` counts
    as ``pkg.sub``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in modules and m != me}


def graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules, module_name(p)) for p in paths}


def test_every_import_runs_down_the_layers() -> None:
    up = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
          for a, deps in graph().items() for b in sorted(deps) if layer_of(b) > layer_of(a)]
    assert not up, "imports that run back up:\n" + "\n".join(up)


def test_no_import_circles() -> None:
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if dep == "gantune":  # a submodule's parent package runs first anyway: not an edge of the shape
                continue
            if state.get(dep) == 1:
                circles.append(" -> ".join([*path[path.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions (the lazy kind that hid the old circles)."""
    src = tmp_path / "config.py"
    src.write_text("def f():\n    from gantune.gan.nets import ARCHS\n    return ARCHS\n")
    found = imports(src, {"gantune.gan.nets", "gantune.config"}, "gantune.config")
    assert found == {"gantune.gan.nets"} and layer_of("gantune.gan.nets") > layer_of("gantune.config")


def test_the_schema_imports_no_torch() -> None:
    """Reading a config (the schema) needs neither torch nor the layers that register names."""
    modules, _ = modules_after("import gantune.config")
    assert not {"torch", "gantune.data", "gantune.gan"} & modules
