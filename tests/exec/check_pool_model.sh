#!/usr/bin/env bash
# Model-checks thread_pool_executor's claim protocol (thread_pool.pml beside
# this file) with spin, over every interleaving of its caller and workers:
#   - the protocol as built must verify: no assertion violation, no hang;
#   - the protocol before issue #19 (-DOLD_PROTOCOL) must give a
#     counterexample, which shows the model can fail at all.
# Usage: check_pool_model.sh <scratch dir>; needs spin and a C compiler (cc).
set -euo pipefail
model="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/thread_pool.pml"
work=${1:?usage: check_pool_model.sh <scratch dir>}
CC=${CC:-cc}

# verify <dir> [spin -D options]: prints pan's summary; exit 0 when it found no error.
verify() {
  local dir=$1
  shift
  rm -rf "$dir" && mkdir -p "$dir" && cd "$dir"
  spin "$@" -a "$model" >/dev/null
  "$CC" -O2 -DSAFETY -o pan pan.c
  ./pan -m100000 >pan.out 2>&1 || true
  grep -E 'errors:|assertion violated|invalid end state|states, stored' pan.out | sed 's/^/    /'
  grep -q 'errors: 0' pan.out
}

echo "pool model: the protocol as built"
verify "$work/current" || { echo "pool model: FAILED — the current protocol has a counterexample ($work/current/*.trail)"; exit 1; }
echo "pool model: the protocol before issue #19 (must fail)"
if verify "$work/old" -DOLD_PROTOCOL; then
  echo "pool model: FAILED — the old protocol verified, so the model no longer detects the race it was written for"
  exit 1
fi
echo "pool model: ok (current verifies, old has a counterexample)"
