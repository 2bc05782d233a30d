#!/usr/bin/env bash
# Sets up a machine and runs every test: each stage configures its own build
# directory under build/, builds everything with warnings as errors, and runs
# ctest. Exits non-zero if any stage fails (all stages run, then a summary).
#
#   bash scripts/test.sh              every stage
#   bash scripts/test.sh gcc          only the named stages (gcc, clang, ...)
#
# Adding a stage (sanitizers, fuzzers, a cross build): write a `stage_<name>`
# function below and append <name> to STAGES.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Two cores are all the machine has; LQER_JOBS overrides.
JOBS=${LQER_JOBS:-2}
STAGES=(gcc clang)

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

# GCC 12, the compiler Debian bookworm ships: -Wall -Wextra -Werror.
stage_gcc() { configure_build_test build/gcc -DCMAKE_CXX_COMPILER=g++; }

# Clang 14: the same warnings through a second front end.
# Benchmarks and examples are built (and warning-checked) by the gcc stage only:
# two cores cannot afford every heavy translation unit twice in one CI run.
stage_clang() {
  configure_build_test build/clang -DCMAKE_CXX_COMPILER=clang++ -DLQER_BUILD_BENCH=OFF -DLQER_BUILD_EXAMPLES=OFF
}

main() {
  if (($# > 0)); then STAGES=("$@"); fi
  for s in "${STAGES[@]}"; do
    declare -F "stage_$s" >/dev/null || { echo "test.sh: unknown stage '$s' (known: ${STAGES[*]})" >&2; exit 2; }
  done

  log "setup"
  bash scripts/setup.sh
  # The real-model tests (tests/examples) read USE-lite from the cache this
  # fills; without it they skip with a message rather than fail.
  bash scripts/fetch_use_lite.sh >/dev/null || echo "test.sh: warning: USE-lite could not be fetched; its tests will skip" >&2
  mkdir -p build

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
  if ((${#failed[@]} > 0)); then
    echo "test.sh: failed stages: ${failed[*]}" >&2
    exit 1
  fi
  echo "test.sh: all stages passed"
}

main "$@"
