#!/usr/bin/env bash
# The Python package's tests: a virtualenv in DIR (default build/python) with
# PyPI's build tools, numpy, pytest, transformers, gguf and accelerate, and
# torch 2.13.0 (the CPU build this machine kind keeps on disk: a plain `torch`
# would download a CUDA build of several GB); then `pip install ./python`
# (compiled through ccache when test.sh set it up) and pytest on python/tests.
#
# The SmolLM2 proof (python/tests/test_smollm2.py) compares with the C++
# engine: LQER_LLAMA names it (test.sh's gcc stage builds it at
# build/gcc/examples/llama/llama); without it, or without the cached model,
# those tests skip and say why.
#
#   bash scripts/test_python.sh [DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dir=${1:-build/python}
env=$PWD/$dir/venv
mkdir -p "$dir"
[[ -x $env/bin/python ]] || python3 -m venv "$env"
pip=("$env/bin/pip" install -q --disable-pip-version-check)
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" numpy pytest "scikit-build-core>=0.10" "nanobind>=2.0" transformers gguf accelerate safetensors
# --no-build-isolation: the build tools above, at fixed paths (ccache hits
# across clones); -C build-dir keeps the CMake tree inside DIR.
CMAKE_BUILD_PARALLEL_LEVEL=${LQER_JOBS:-2} "${pip[@]}" --no-build-isolation -C build-dir="$PWD/$dir/cmake" ./python
export LQER_LLAMA=${LQER_LLAMA:-$PWD/build/gcc/examples/llama/llama}
cd python
"$env/bin/python" -m pytest -q -rs tests
