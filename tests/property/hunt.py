"""Hunt for distinct failure classes with the property suite's strategies (not a test).

    PYTHONPATH=src python -m tests.property.hunt [N] [TEST ...] [--lenient]

runs each property test's body N times on fresh random examples without stopping at the first
failure, groups failures by (exception type, where it was raised in latentfit) and prints one
case per group with the smallest drawn data. ``--lenient`` also accepts plain ``ValueError`` /
``FileNotFoundError`` with a message (the class the validation work converts to
``DataError``), to see the failures behind it.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections import defaultdict

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from . import oracle


class _LoggingData:
    def __init__(self, data):
        self.data = data
        self.log = []

    def draw(self, strategy, label=None):
        value = self.data.draw(strategy, label=label)
        self.log.append((label, value))
        return value


def _origin(err: BaseException) -> str:
    frames = traceback.extract_tb(err.__traceback__)
    ours = [f for f in frames if "/latentfit/" in f.filename and "/tests/" not in f.filename]
    if isinstance(err, AssertionError):
        lines = [ln for ln in str(err).splitlines() if ln.strip() and "not equal" not in ln]
        return (lines or [""])[0].split(":")[0][:90]
    frame = ours[-1] if ours else frames[-1]
    return f"{frame.filename.split('/src/')[-1]}:{frame.lineno}"


def _runner(label, inner, fixed, uses_data, strategies, n, found):
    @settings(
        max_examples=n,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(**{k: v for k, v in strategies.items() if k != "data"}, _d=st.data())
    def run(_d, **drawn):
        logged = _LoggingData(_d)
        kwargs = dict(fixed, **drawn)
        if uses_data:
            kwargs["data"] = logged
        start = time.perf_counter()
        try:
            inner(**kwargs)
        except Exception as err:
            key = (label, type(err).__name__, _origin(err))
            case = repr(drawn) + " " + repr(logged.log)
            found[key].append((len(case), case, f"{err}"[:400]))
        seconds = time.perf_counter() - start
        if seconds > 5:  # a case this slow would blow the ci budget: worth a look
            case = repr(drawn) + " " + repr(logged.log)
            found[(label, "slow", ">5 s")].append((len(case), case, f"{seconds:.1f} s"))

    return run


def hunt(targets, n: int, lenient: bool):
    from . import test_cli, test_estimate, test_estimators, test_model_files

    # --force is another branch's work: leave it out, so as to see what lies behind it.
    test_cli.WRITERS = ()
    if lenient:
        oracle.DOCUMENTED_ERRORS = (*oracle.DOCUMENTED_ERRORS, ValueError)
    found = defaultdict(list)
    runs = []
    for name in test_estimators.ESTIMATORS:
        runs.append((f"estimator[{name}]", test_estimators.test_estimator, {"name": name}))
    runs.append(("fit_mle", test_estimate.test_fit_mle, {}))
    runs.append(("fit_map", test_estimate.test_fit_map, {}))
    runs.append(("load", test_model_files.test_load_damaged_model_file, {}))
    for command in test_cli.COMMANDS:
        runs.append((f"cli[{command}]", test_cli.test_command, {"command": command}))
    for label, test, fixed in runs:
        if targets and not any(t in label for t in targets):
            continue
        inner = test.hypothesis.inner_test
        strategies = dict(test.hypothesis._given_kwargs)
        uses_data = "data" in strategies

        run = _runner(label, inner, fixed, uses_data, strategies, n, found)
        print(f"hunting {label} ...", file=sys.stderr, flush=True)
        run()
    for key in sorted(found):
        cases = sorted(found[key])
        _, case, msg = cases[0]
        print(f"\n=== {key} x{len(cases)}\n  {msg}\n  case: {case[:1500]}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 50
    os.chdir(tempfile.mkdtemp(prefix="latentfit-hunt-"))
    hunt(args[1:], n, "--lenient" in sys.argv)
