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
    "latentfit._interrupt",  # Ctrl-C's stop points (a leaf: it imports no latentfit module)
    "latentfit._atomic_fit",  # a failed fit leaves the estimator as it was (a leaf too)
    "latentfit._compiled",
    "latentfit._kernel_ops",
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


def _em_estimators() -> list[type]:
    """Every public estimator of latentfit built on the EM estimator base."""
    from latentfit.em.base import EMEstimator

    found = {getattr(latentfit, n) for n in latentfit.__all__}
    return sorted(
        (c for c in found if isinstance(c, type) and issubclass(c, EMEstimator)),
        key=lambda c: c.__name__,
    )


def test_every_em_estimator_fits_through_the_one_skeleton():
    """The fit of every EM estimator is EMEstimator's: a class may restate ``fit`` only for its
    own signature (``lengths=``, ``labels=``...), and then hands over to ``EMEstimator._fit``;
    nothing else runs the driver."""
    import inspect

    from latentfit.em.base import EMEstimator

    classes = _em_estimators()
    names = {c.__name__ for c in classes}
    assert {"GaussianMixture", "GaussianHMM", "FactorAnalysis", "LinearGaussianSSM"} <= names
    assert {"BayesianGaussianMixture", "GaussianHSMM", "AutoregressiveHMM"} <= names
    for cls in classes:
        assert cls._fit is EMEstimator._fit, f"{cls.__name__} overrides _fit"
        owner = next(k for k in cls.__mro__ if "fit" in vars(k))
        if owner is not EMEstimator:
            body = inspect.getsource(owner.fit)
            assert "self._fit(" in body, f"{owner.__name__}.fit does not call EMEstimator._fit"
            assert inspect.signature(owner.fit) != inspect.signature(EMEstimator.fit), (
                f"{owner.__name__}.fit restates EMEstimator.fit's signature"
            )
    for f in sorted((SRC).rglob("*.py")):
        text = f.read_text()
        if f != SRC / "em" / "base.py":
            assert "self._run_em(" not in text, (
                f"{_module(f)} runs the EM driver outside EMEstimator._fit"
            )


def test_the_hmm_base_module_holds_the_estimator_only():
    """em/hmm/base.py is BaseHMM and its Baum-Welch hooks; the fit record and its warning
    live in monitor.py, the checks of known states in labels.py."""
    tree = ast.parse((SRC / "em" / "hmm" / "base.py").read_text())
    top = {n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef)}
    assert top == {"BaseHMM", "_HMMHooks"}
    from latentfit.em.hmm import ConvergenceMonitor, UnvisitedStateWarning
    from latentfit.em.hmm.labels import check_labels
    from latentfit.em.hmm.monitor import warn_unvisited

    assert ConvergenceMonitor.__module__ == "latentfit.em.hmm.monitor"
    assert UnvisitedStateWarning.__module__ == warn_unvisited.__module__
    assert check_labels.__module__ == "latentfit.em.hmm.labels"
