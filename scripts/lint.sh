#!/usr/bin/env bash
# Lint gate for include/: clang-format, self-contained headers, clang-tidy.
#
#   bash scripts/lint.sh            check include/ (exit 1 on any finding)
#   bash scripts/lint.sh --fix      rewrite include/ with clang-format first, then check
#
# Stages (all run; a summary line at the end; exit status non-zero if any failed):
#   1. format : clang-format --dry-run -Werror on include/**/*.hpp, *.inl (root .clang-format)
#   2. headers: every public header compiles on its own (clang++ -fsyntax-only,
#               -Wall -Wextra -Werror): no header relies on its includer's includes
#   3. layers : the ladder's directions (DESIGN.md §3), checked on each header's
#               full include closure (clang++ -M): format/ includes no other part
#               of lqer; layer/ and kernel/ never reach factorize/, calib/ or Eigen,
#               and factorize/ never reaches kernel/; lqer.hpp (the runtime API)
#               reaches no Eigen and no factorize/
#   4. tidy   : clang-tidy with the root .clang-tidy (WarningsAsErrors '*') over one
#               translation unit that includes every header, so each header is
#               analysed once (HeaderFilterRegex limits findings to include/lqer/)
# neon_dotprod.hpp is AArch64-only: on other hosts stage 2 skips it and stage 3
# analyses it in a second TU cross-targeted at aarch64-linux-gnu (+dotprod) when
# Debian's cross headers (g++-aarch64-linux-gnu) are installed; otherwise it is
# skipped with a note (scripts/test_aarch64.sh compiles and runs it).
#
# Environment: CLANG_FORMAT, CLANG_TIDY, CXX (default clang-format, clang-tidy, clang++),
# LQER_LINT_DIR scratch directory (default /tmp/lqer-lint-$UID).
# Runtime on the 2-core dev machine: ~2 min (most of it the 35 header compiles).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLANG_FORMAT=${CLANG_FORMAT:-clang-format}
CLANG_TIDY=${CLANG_TIDY:-clang-tidy}
CXX=${CXX:-clang++}
SCRATCH=${LQER_LINT_DIR:-/tmp/lqer-lint-$(id -u)}
mkdir -p "$SCRATCH"

start=$(date +%s)
failed=()
# Flags of the project's own builds: C++20, Eigen as a system header, OpenMP for exec/openmp.hpp.
FLAGS=(-std=c++20 -Iinclude -isystem /usr/include/eigen3 -fopenmp -Wall -Wextra)

mapfile -t all_headers < <(find include -name '*.hpp' -o -name '*.inl' | sort)
mapfile -t headers < <(find include -name '*.hpp' | sort)
if [[ $(uname -m) != aarch64 ]]; then
  mapfile -t headers < <(printf '%s\n' "${headers[@]}" | grep -v 'kernel/arch/neon_dotprod.hpp')
fi

if [[ ${1:-} == --fix ]]; then
  "$CLANG_FORMAT" -i "${all_headers[@]}"
fi

echo "==> lint: clang-format (${#all_headers[@]} files)"
if ! "$CLANG_FORMAT" --dry-run -Werror "${all_headers[@]}" 2>"$SCRATCH/format.out"; then
  # One line per file (the full diagnostics are long): file and number of places.
  grep -oE '^[^:]+:[0-9]+:[0-9]+: error' "$SCRATCH/format.out" | cut -d: -f1 | uniq -c |
    awk '{printf "lint: %s: %d place(s) not clang-formatted\n", $2, $1}'
  echo "lint: run 'bash scripts/lint.sh --fix' (clang-format -i on include/) and commit the result"
  failed+=(format)
fi

echo "==> lint: self-contained headers (${#headers[@]})"
# check_header <header>: compiles `#include` of it twice (self-contained, include guard).
check_header() {
  local rel=${1#include/} err
  err=$(printf '#include "%s"\n#include "%s"\n' "$rel" "$rel" |
    "$CXX" "${FLAGS[@]}" -Werror -fsyntax-only -x c++ - 2>&1) ||
    { printf 'lint: %s does not compile on its own (or twice):\n%s\n' "$1" "$(head -20 <<<"$err")"; return 1; }
}
export -f check_header
export CXX FLAGS_STR="${FLAGS[*]}"
# LQER_JOBS headers at a time (default 2, the machine's cores).
if ! printf '%s\n' "${headers[@]}" |
    xargs -P "${LQER_JOBS:-2}" -I{} bash -c 'FLAGS=($FLAGS_STR); check_header "$1"' _ {}; then
  failed+=(headers)
fi

echo "==> lint: layers (include closures)"
# violation <header> <closure…>: prints the rule the header's closure breaks, if any.
# Paths in the closure are as the compiler opened them: include/lqer/... for
# lqer's own headers, /usr/include/eigen3/... for Eigen.
layer_violation() {
  local h=$1 deps
  deps=$(printf '#include "%s"\n' "${h#include/}" | "$CXX" "${FLAGS[@]}" -M -x c++ - 2>/dev/null |
    tr ' \\' '\n\n' | grep -E '/(lqer/[a-z_/]+\.(hpp|inl)|eigen3/)' | sed -E 's|.*/(lqer/)|\1|; s|.*/eigen3/.*|Eigen|' | sort -u)
  local forbidden=""
  case ${h#include/} in
    lqer/format/*) forbidden='^lqer/(tensor|layer|calib|factorize|kernel|exec|io)/|^Eigen$' ;;
    lqer/layer/* | lqer/kernel/*) forbidden='^lqer/(calib|factorize|io)/|^Eigen$' ;;
    lqer/factorize/layer.hpp | lqer/factorize/reference_forward.hpp) return 0 ;;  # forwarding headers
    lqer/factorize/*) forbidden='^lqer/kernel/' ;;
    lqer/lqer.hpp) forbidden='^lqer/(calib|factorize)/|^Eigen$' ;;
    *) return 0 ;;
  esac
  local bad
  bad=$(grep -E "$forbidden" <<<"$deps" | tr '\n' ' ')
  [[ -z $bad ]] || { echo "lint: $h reaches ${bad}(the ladder forbids it: DESIGN.md §3)"; return 1; }
}
layers_ok=1
for h in "${headers[@]}"; do layer_violation "$h" || layers_ok=0; done
((layers_ok)) || failed+=(layers)

echo "==> lint: clang-tidy"
tu=$SCRATCH/all_headers.cpp
{
  echo "// Generated by scripts/lint.sh: every public header, once."
  for h in "${headers[@]}"; do echo "#include \"${h#include/}\""; done
} >"$tu"
# --config-file: the TU lives outside the tree, so clang-tidy would not find .clang-tidy itself.
if ! "$CLANG_TIDY" --quiet --config-file=.clang-tidy "$tu" -- "${FLAGS[@]}" >"$SCRATCH/tidy.out" 2>&1; then
  grep -A4 -E '(warning|error):' "$SCRATCH/tidy.out" | head -200
  echo "lint: clang-tidy findings (full output: $SCRATCH/tidy.out)"
  failed+=(tidy)
fi

if [[ $(uname -m) != aarch64 ]]; then
  if [[ -d /usr/aarch64-linux-gnu/include ]]; then
    echo "==> lint: clang-tidy, AArch64 (neon_dotprod path)"
    echo '#include "lqer/kernel/linear.hpp"' >"$SCRATCH/aarch64.cpp"
    # -march: clang 14 exposes vdotq_laneq_s32 only with the feature enabled globally.
    if ! "$CLANG_TIDY" --quiet --config-file=.clang-tidy "$SCRATCH/aarch64.cpp" -- --target=aarch64-linux-gnu \
        -march=armv8.2-a+dotprod -std=c++20 -Iinclude -isystem /usr/include/eigen3 -Wall -Wextra \
        >"$SCRATCH/tidy-aarch64.out" 2>&1; then
      grep -A4 -E '(warning|error):' "$SCRATCH/tidy-aarch64.out" | head -100
      echo "lint: clang-tidy findings on AArch64 (full output: $SCRATCH/tidy-aarch64.out)"
      failed+=(tidy-aarch64)
    fi
  else
    echo "lint: note: no /usr/aarch64-linux-gnu headers; kernel/arch/neon_dotprod.hpp not analysed"
  fi
fi

secs=$(($(date +%s) - start))
if ((${#failed[@]})); then
  echo "lint: FAILED (${failed[*]}) in ${secs}s"
  exit 1
fi
echo "lint: OK (format, ${#headers[@]} self-contained headers, layers, clang-tidy) in ${secs}s"
