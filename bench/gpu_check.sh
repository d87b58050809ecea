#!/usr/bin/env bash
# GPU check, run by hand on a machine with an NVIDIA GPU (CI has none and never runs this):
#   bash bench/gpu_check.sh            (PYTHON=/path/to/python to choose the interpreter)
# Runs `python -m bench.gpu_check` (training, PGD, AutoAttack on CUDA against the CPU, and the ResNet-18 PGD
# throughput; see its docstring), then the tests that behave differently when CUDA is present (no test is
# marked or skipped for CUDA: these three assert the CUDA branch of resolve_device and train_autocast when it
# is available). Everything together is bounded at 280 s (about a minute and a half expected on an H200).
# Exit status: the first failure's (1: a check failed, 2: no CUDA, 124: out of time), else 0.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    PYTHON=python
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
BUDGET=280
SECONDS=0

run() {  # "$@" under the seconds left of the budget (`timeout 0` would mean no limit: stop instead)
    local left=$((BUDGET - SECONDS))
    if ((left <= 0)); then echo "gpu_check.sh: out of time (${BUDGET} s)" >&2; exit 124; fi
    timeout "$left" "$@"
}

run "$PYTHON" -m bench.gpu_check
run "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_engine_models.py::test_resolve_device \
    tests/test_engine_archs_and_fast_at.py::test_resolve_device_on_this_machine \
    tests/test_engine_archs_and_fast_at.py::test_training_autocast_is_bfloat16_where_native_else_a_no_op
echo "gpu_check.sh: all passed in ${SECONDS} s"
