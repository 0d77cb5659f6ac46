#!/usr/bin/env bash
# The checks that need a GPU, in one call (a lent machine's time is short): every test with a
# CUDA case, then MCMC on CUDA against NumPyro on the same machine's CPU. The machine is bare
# and offline: latentfit's own dependencies that its image lacks travel as wheels in .whl/
# (ignored by git; `carry: [".whl"]`), fetched here once with
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl arviz h5netcdf \
#     platformdirs xarray-einstats pyro-ppl pyro-api hmmlearn
# Logs go to $OUT.
#
#   bash benchmarks/device_check.sh [tests|bench|all]
# TESTS_K: the pytest -k expression (default: every CUDA case; the two slowest posteriors are
# left out);
# BENCH: benchmarks/mcmc.py arguments.
set -u
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
what=${1:-all}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, jax, arviz; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'jax', jax.__version__, 'arviz', arviz.__version__)"

if [[ $what == tests || $what == all ]]; then
    # every case parametrized on "cuda" (tests/conftest.py DEVICES) and the CUDA-only tests;
    # few workers: processes sharing one GPU are time-sliced
    # (not -k "... and not arK": pytest 9 matches -k against more than the test's name, and
    # that deselected every parametrized test there)
    slow=tests/mcmc/test_posteriordb.py::test_nuts_matches_the_reference_posterior
    timeout "${TESTS_TIMEOUT:-170}" python3 -m pytest -v -n 4 -p no:cacheprovider --timeout 120 \
        -k "${TESTS_K:-cuda}" --deselect "$slow[cuda-diamonds]" --deselect "$slow[cuda-arK]" \
        --durations=12 tests > "$OUT/cuda_tests.log" 2>&1
    echo "passed so far: $(grep -cE '\] PASSED' "$OUT/cuda_tests.log")"
    grep -E "\] (FAILED|ERROR)" "$OUT/cuda_tests.log" | head -25
    grep -E "^E  " "$OUT/cuda_tests.log" | head -30
    grep -E "s (call|setup) " "$OUT/cuda_tests.log" | head -12
    tail -2 "$OUT/cuda_tests.log"
fi
if [[ $what == bench || $what == all ]]; then
    # latentfit on CUDA (the default there: eager) against NumPyro on this CPU, the same
    # chains, warm-up and draws
    JAX_PLATFORMS=cpu timeout "${BENCH_TIMEOUT:-80}" python3 benchmarks/mcmc.py --device cuda \
        --skip-pyro --skip-hand ${BENCH:---posterior eight_schools --chains 32 --warmup 200 --draws 200 --skip-replay} \
        2>&1 | tee "$OUT/bench.log" | grep -v "^  "
fi
