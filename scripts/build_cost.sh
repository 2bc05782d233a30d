#!/usr/bin/env bash
# What one translation unit costs to compile (issue #18): wall seconds and peak
# memory (GNU time's %e and %M) for each kind of TU in scripts/build_cost/,
# header-only and as a TU of a target that links the compiled companions
# lqer::offline and lqer::kernels (which define LQER_OFFLINE_LIBRARY and
# LQER_KERNELS_LIBRARY for it: the headers then declare their lists'
# instantiations extern), and what the companions cost once. A measurement,
# not a test: it prints a Markdown table and fails only if a compile fails.
#
#   scripts/build_cost.sh [compiler]        (default g++; flags: LQER_BUILD_COST_FLAGS)
#
# The default flags are the issue's: -std=c++20 -O2 -march=native. Run it on
# an otherwise idle machine; the numbers are one compile each, one at a time.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cxx=${1:-g++}
read -r -a flags <<<"${LQER_BUILD_COST_FLAGS:--std=c++20 -O2 -march=native}"
inc=(-Iinclude -isystem /usr/include/eigen3)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
command -v /usr/bin/time >/dev/null || { echo "build_cost: GNU time (/usr/bin/time, Debian's 'time') is needed" >&2; exit 1; }

# compile <source> [extra flags...] → "seconds GB"
compile() {
  local src=$1
  shift
  /usr/bin/time -f '%e %M' -o "$out/time" "$cxx" "${flags[@]}" "${inc[@]}" "$@" -c "$src" -o "$out/tu.o"
  awk '{printf "%.1f s | %.2f GB", $1, $2 / 1048576}' "$out/time"
}

companions=(-DLQER_OFFLINE_LIBRARY -DLQER_KERNELS_LIBRARY)
echo "compiler: $($cxx --version | head -1); flags: ${flags[*]}; $(nproc) cores"
echo
echo "| translation unit | header-only: wall | peak memory | with lqer::offline + lqer::kernels: wall | peak memory |"
echo "|---|---|---|---|---|"
for tu in user_program factorize_default linear_default factorize_uncommon include_only eigen_svd; do
  src=scripts/build_cost/$tu.cpp
  what=$(sed -n 's|^// build_cost: ||p' "$src" | head -1)
  if [[ $tu == eigen_svd ]]; then
    echo "| $tu: $what | $(compile "$src") | — | — |"
  else
    echo "| $tu: $what | $(compile "$src") | $(compile "$src" "${companions[@]}") |"
  fi
done
echo
echo "The companions themselves, compiled once per build (same flags):"
echo
echo "| source | wall | peak memory |"
echo "|---|---|---|"
for src in src/*.cpp; do
  echo "| $src | $(compile "$src") |"
done
