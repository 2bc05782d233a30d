#!/usr/bin/env bash
# Cross-compiles lqer's kernel and executor tests for AArch64 with
# aarch64-linux-gnu-g++ and runs them under QEMU user mode: once on a CPU
# model with the dot-product extension (the neon_dotprod path runs and must
# match the reference bit for bit) and once on one without it (the path must
# be reported unusable, its tests skipped, and the generic path still pass).
#
# A separate CI step (not part of ctest): needs Debian's g++-aarch64-linux-gnu
# and qemu-user (`sudo apt-get install g++-aarch64-linux-gnu qemu-user`).
#
#   scripts/test_aarch64.sh [build-dir]        (default: /tmp/lqer-aarch64)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-/tmp/lqer-aarch64}
cxx=${CXX_AARCH64:-aarch64-linux-gnu-g++}
sysroot=${AARCH64_SYSROOT:-/usr/aarch64-linux-gnu}

for tool in "$cxx" qemu-aarch64; do
  command -v "$tool" >/dev/null || {
    echo "test_aarch64: $tool not found (apt-get install g++-aarch64-linux-gnu qemu-user)" >&2
    exit 1
  }
done

mkdir -p "$out"
flags=(-std=c++20 -O2 -Wall -Wextra -pthread -I"$root/include" -I"$root/tests")
# format/: the rounding rules' NEON batch forms and mxint's SIMD whole-block encoder.
tests=(kernel/test_linear kernel/test_prologue kernel/test_pack kernel/test_dispatch exec/test_executor
  format/test_mxint format/test_rounding)

echo "test_aarch64: compiling with $("$cxx" --version | head -1)"
"$cxx" "${flags[@]}" -c "$root/tests/doctest_main.cpp" -o "$out/doctest_main.o"
for t in "${tests[@]}"; do
  name=$(basename "$t")
  "$cxx" "${flags[@]}" "$root/tests/$t.cpp" "$out/doctest_main.o" -o "$out/$name" &
  # two compilers at a time at most
  while (($(jobs -rp | wc -l) >= 2)); do wait -n; done
done
wait

status=0
for cpu in max cortex-a53; do
  for t in "${tests[@]}"; do
    name=$(basename "$t")
    echo "=== $name on qemu-aarch64 -cpu $cpu"
    # The RLIMIT_AS test cannot work under QEMU, which reserves the guest's
    # address space itself (every thread starts); the gcc stage runs it natively.
    if ! qemu-aarch64 -cpu "$cpu" -L "$sysroot" "$out/$name" -tce="*cannot start*"; then status=1; fi
  done
done
exit $status
