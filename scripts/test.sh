#!/usr/bin/env bash
# Sets up a machine and runs every test: each stage configures its own build
# directory under build/, builds everything with warnings as errors, and runs
# ctest. Exits non-zero if any stage fails (all stages run, then a summary).
#
#   bash scripts/test.sh              every stage
#   bash scripts/test.sh gcc tsan     only the named stages
#
# Adding a stage (sanitizers, fuzzers, a cross build): write a `stage_<name>`
# function below and append <name> to STAGES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Two cores are all the machine has; LQER_JOBS overrides.
JOBS=${LQER_JOBS:-2}
STAGES=(lint docs gcc python avx2 asan tsan aarch64 fuzz deps)

log() { printf '\n==> %s\n' "$*"; }

# configure_build_test <build dir> [cmake options...]: the body of most stages.
configure_build_test() {
  local dir=$1
  shift
  log "configure $dir"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLQER_WERROR=ON "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; return 1; }
  log "build $dir"
  cmake --build "$dir" -j "$JOBS"
  log "test $dir"
  ctest --test-dir "$dir" --output-on-failure -j "$JOBS"
}

# GCC 12, the compiler Debian bookworm ships: -Wall -Wextra -Werror, Release,
# everything (tests, tools, examples, benchmarks).
stage_gcc() { configure_build_test build/gcc -DCMAKE_CXX_COMPILER=g++; }

# Clang 14 with AddressSanitizer + UndefinedBehaviorSanitizer (any finding is
# fatal: -fno-sanitize-recover=all): the whole test suite, the CLI and the
# USE-lite example included. It is also the clang warning check (-Werror).
# Benchmarks are built (and warning-checked) by the gcc stage only: two cores
# cannot afford every heavy translation unit twice in one CI run. -O1: the
# sanitizers' usual trade-off between compile time and the tests' run time.
stage_asan() {
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    configure_build_test build/asan -DCMAKE_CXX_COMPILER=clang++ -DLQER_SANITIZE=address,undefined \
    -DLQER_BUILD_BENCH=OFF -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG"
}

# ThreadSanitizer over what runs threads: the executors and the kernels (which
# run their tiles on a thread pool). OpenMP is left out: its runtime is not
# instrumented, so TSan would report its internal synchronisation.
stage_tsan() {
  local dir=build/tsan
  local targets=(test_executor test_linear test_prologue test_pack test_dispatch)
  log "configure $dir"
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLQER_WERROR=ON -DCMAKE_CXX_COMPILER=clang++ \
    -DLQER_SANITIZE=thread -DLQER_BUILD_BENCH=OFF -DLQER_BUILD_EXAMPLES=OFF -DLQER_BUILD_TOOLS=OFF \
    >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; return 1; }
  log "build $dir"
  cmake --build "$dir" -j "$JOBS" --target "${targets[@]}"
  log "test $dir"
  local pattern
  pattern=$(IFS='|'; echo "^(${targets[*]}):")
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$JOBS" -R "$pattern"
}

# The Python package (python/): pip install into a virtualenv of its own, then
# pytest, including the SmolLM2 proof against the gcc stage's llama engine.
stage_python() { bash scripts/test_python.sh build/python; }

# The gcc stage's portable tests once more on an emulated AVX2-only x86-64 CPU
# (qemu-x86_64 -cpu EPYC-Milan), so both kinds of CI machine are covered in
# every run whichever one this is.
stage_avx2() { bash scripts/test_x86_avx2.sh build/gcc; }

# The AArch64 build of the kernels (neon_dotprod and generic paths), cross
# compiled and run under qemu-aarch64 with and without the dot-product extension.
stage_aarch64() { bash scripts/test_aarch64.sh build/aarch64; }

# libFuzzer targets (tests/fuzz), each for a bounded time on its committed seeds
# plus a scratch corpus; any crash, sanitizer report or leak fails the stage.
stage_fuzz() { LQER_FUZZ_BUILD=build/fuzz bash scripts/fuzz.sh "${LQER_FUZZ_SECONDS:-30}"; }

# Every system file the builds above read (headers, libraries, CMake package
# configs, the programs the stages run) must come from a package that
# scripts/setup.sh installs or that apt pulls in with it (issue #17: a CI
# machine with a hand-installed package passed while fresh machines failed).
# The second run proves the check can fail: without ocl-icd-opencl-dev in the
# list (the package that went missing then), it must refuse the same builds.
stage_deps() {
  local builds=()
  for d in build/gcc build/asan build/tsan build/aarch64 build/fuzz; do [[ -d $d ]] && builds+=("$d"); done
  python3 scripts/check_deps.py "${builds[@]}"
  sed 's/ ocl-icd-opencl-dev//' scripts/setup.sh >build/setup-without-opencl.sh
  if grep -q 'with oneDNN' build/gcc.configure.log 2>/dev/null; then
    if python3 scripts/check_deps.py --setup build/setup-without-opencl.sh "${builds[@]}" >build/deps-selftest.log; then
      echo "deps: FAILED — the check passed without ocl-icd-opencl-dev in setup.sh, so it would not catch issue #17"
      return 1
    fi
    echo "deps: self-test ok — without ocl-icd-opencl-dev in setup.sh the check refuses the builds:"
    grep 'ocl-icd-opencl-dev' build/deps-selftest.log | sed 's/^/  /'
  fi
}

# include/ under clang-format, self-containedness and clang-tidy.
stage_lint() { LQER_LINT_DIR=build/lint bash scripts/lint.sh; }

# Doxygen over include/ and docs/guide.md with zero warnings.
stage_docs() { bash scripts/docs.sh build/docs; }

# Which CPU this run is on and which kernel paths its tests exercise (a path
# the CPU lacks is skipped by the tests with a message naming it).
print_machine() {
  log "machine"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
  echo "cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512(f|bw|vl)|avx512_vnni|avx_vnni|avx512_bf16)$' | tr '\n' ' ')"
  mkdir -p build
  g++ -std=c++20 -O1 -Iinclude scripts/kernel_paths.cpp -o build/kernel_paths && build/kernel_paths
}

# Every stage compiles through ccache (CMake reads CMAKE_CXX_COMPILER_LAUNCHER
# from the environment as the default of each configure). The cache is keyed by
# the preprocessed source, the compiler and every flag, so a hit is the object
# the compiler would produce; CCACHE_BASEDIR makes paths inside the checkout
# relative, so a second clone of the same commit (CI after a developer's run)
# hits. A cold cache (a new machine) compiles everything: that is the time the
# README states; the summary prints this run's hit rate.
use_ccache() {
  command -v ccache >/dev/null || { echo "test.sh: ccache not found; compiling without a cache"; return 0; }
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$PWD
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/lqer/ccache} CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-20G}
  ccache --zero-stats >/dev/null
}

# A Python with PyPI's safetensors + numpy for the interop tests (LQER_PYTHON:
# test_safetensors and test_checkpoint read lqer's files with Hugging Face's
# package); made once in build/pyenv. Without it those tests skip, saying so.
python_env() {
  local env=$PWD/build/pyenv
  if { [[ -x $env/bin/python ]] || python3 -m venv "$env"; } &&
    "$env/bin/pip" install -q --disable-pip-version-check safetensors numpy; then
    export LQER_PYTHON=$env/bin/python
  else
    echo "test.sh: warning: no Python with safetensors + numpy in $env; the interop tests will skip" >&2
  fi
}

main() {
  if (($# > 0)); then STAGES=("$@"); fi
  for s in "${STAGES[@]}"; do
    declare -F "stage_$s" >/dev/null || { echo "test.sh: unknown stage '$s' (known: ${STAGES[*]})" >&2; exit 2; }
  done

  log "setup"
  bash scripts/setup.sh
  use_ccache
  print_machine
  # The real-model tests (tests/examples, tests/io) read USE-lite and SmolLM2 from the cache this
  # fills; without it they skip with a message rather than fail.
  bash scripts/fetch_use_lite.sh >/dev/null || echo "test.sh: warning: USE-lite could not be fetched; its tests will skip" >&2
  # Likewise SmolLM2-135M (the GGUF reader's and the llama engine's real-model tests).
  bash scripts/fetch_smollm2.sh >/dev/null || echo "test.sh: warning: SmolLM2 could not be fetched; its tests will skip" >&2
  mkdir -p build
  python_env

  local failed=() summary=() s rc start
  for s in "${STAGES[@]}"; do
    start=$SECONDS
    # A subshell with -e of its own: a failing command ends the stage, not the script.
    set +e
    (set -e; "stage_$s")
    rc=$?
    set -e
    summary+=("$(printf '%-10s %-6s %4ds' "$s" "$([[ $rc -eq 0 ]] && echo ok || echo FAILED)" $((SECONDS - start)))")
    ((rc == 0)) || failed+=("$s")
  done

  log "summary"
  printf '  %s\n' "${summary[@]}"
  if [[ -n ${CMAKE_CXX_COMPILER_LAUNCHER:-} ]]; then
    ccache --show-stats 2>/dev/null | grep -iE 'hits|misses|cache size' | sed 's/^/  ccache: /' || true
  fi
  if ((${#failed[@]} > 0)); then
    echo "test.sh: failed stages: ${failed[*]}" >&2
    exit 1
  fi
  echo "test.sh: all stages passed"
}

main "$@"
