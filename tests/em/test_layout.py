"""The import graph of latentfit.em: no module imports itself back through others (also through
imports inside functions), and em/ imports nothing from the layers above it."""

import ast
from pathlib import Path

import latentfit

SRC = Path(latentfit.__file__).parent
# the layers em/ may import: itself, estimation and data loading below it, the ground floor
ALLOWED = (
    "latentfit.em",
    "latentfit.estimate",
    "latentfit.datasets",
    "latentfit.errors",
    "latentfit._validation",
    "latentfit._compiled",
    "latentfit.io",
)


def _module(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every latentfit module ``path`` imports, at any depth of the file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("latentfit")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latentfit"):
            for a in node.names:  # `from pkg import module` names a module
                sub = f"{node.module}.{a.name}"
                found = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                out.add(sub if found else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    files = sorted((SRC / "em").rglob("*.py"))
    mods = {_module(f): f for f in files}
    return {m: {i for i in _imports(f) if i in mods} for m, f in mods.items()}


def test_em_has_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if n.endswith("__init__") or n == m:
                continue
            assert state.get(n) != 1, " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])


def test_em_imports_nothing_from_a_higher_layer():
    for f in sorted((SRC / "em").rglob("*.py")):
        bad = [i for i in _imports(f) if not i.startswith(ALLOWED)]
        assert not bad, f"{_module(f)} imports {bad}"
