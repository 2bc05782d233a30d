#!/usr/bin/env bash
# Runs lqer's portable x86-64 tests on an emulated CPU without AVX-512:
# qemu-x86_64 user mode with -cpu EPYC-Milan (AMD Zen 3: AVX2 + FMA, no
# AVX-512, no AVX-VNNI) — the feature set of the Zen 4 machines whose AVX-512
# is hidden. So every CI run checks both kinds of CPU the project lands on:
# natively whatever this machine has, here the AVX2-only one. On it the
# avx512_vnni and avx_vnni paths must be reported unusable and skipped, and the
# avx2 and generic paths must still equal the reference bit for bit.
#
# The binaries are the gcc stage's (built for the baseline x86-64 ISA with
# runtime dispatch); the -march=native ones (tools, the examples, *_native
# tests) are for the building CPU and are not run here.
#
#   scripts/test_x86_avx2.sh <gcc build dir>       (default: build/gcc)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
build=${1:-build/gcc}
cpu=${LQER_QEMU_X86_CPU:-EPYC-Milan}

[[ -f $build/build.ninja ]] || { echo "test_x86_avx2: $build is not configured: run the gcc stage first (scripts/test.sh gcc avx2)" >&2; exit 1; }
command -v qemu-x86_64 >/dev/null || { echo "test_x86_avx2: qemu-x86_64 not found (apt-get install qemu-user)" >&2; exit 1; }
[[ $(uname -m) == x86_64 ]] || { echo "test_x86_avx2: not an x86-64 host: nothing to emulate (skipped)"; exit 0; }

tests=(kernel/test_linear kernel/test_prologue kernel/test_pack kernel/test_dispatch kernel/test_numeric_extremes
  kernel/test_avx_vnni_body kernel/test_linear_fast_math exec/test_executor format/test_mxint format/test_rounding
  format/test_intq format/test_ggml_compat tensor/test_quantized_matrix)
targets=()
for t in "${tests[@]}"; do targets+=("$(basename "$t")"); done
cmake --build "$build" -j "${LQER_JOBS:-2}" --target "${targets[@]}" >/dev/null

# QEMU warns once per CPU feature its TCG lacks; those lines are noise here.
quiet() { grep -v "TCG doesn't support requested feature" || true; }

echo "test_x86_avx2: qemu-x86_64 -cpu $cpu reports:"
g++ -std=c++20 -O1 -Iinclude scripts/kernel_paths.cpp -o "$build/kernel_paths_portable"
paths=$(qemu-x86_64 -cpu "$cpu" "$build/kernel_paths_portable" 2>&1 | quiet)
echo "$paths" | sed 's/^/  /'
if ! grep -q 'usable on this CPU: avx2, generic$' <<<"$paths"; then
  echo "test_x86_avx2: FAILED — the emulated CPU should run exactly avx2 and generic" >&2
  exit 1
fi

status=0
for t in "${tests[@]}"; do
  name=$(basename "$t")
  echo "=== $name on qemu-x86_64 -cpu $cpu"
  # The RLIMIT_AS test cannot work under QEMU, which reserves the guest's
  # address space itself; the gcc stage runs it natively.
  rc=0
  qemu-x86_64 -cpu "$cpu" "$build/tests/$t" -tce="*cannot start*" >"$build/avx2-$name.log" 2>&1 || rc=$?
  quiet <"$build/avx2-$name.log" | grep -E 'test cases|SKIPPED|ERROR|FATAL' || true
  if ((rc != 0)); then
    echo "test_x86_avx2: $name FAILED (exit $rc); its output: $build/avx2-$name.log"
    quiet <"$build/avx2-$name.log" | tail -30
    status=1
  fi
done
exit $status
