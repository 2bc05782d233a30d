#!/usr/bin/env bash
# API documentation gate: runs Doxygen (docs/Doxyfile: include/lqer + docs/guide.md)
# and fails on any warning (a broken \param, an unknown command, a missing file...).
#
#   bash scripts/docs.sh [output-dir]      (default /tmp/lqer-docs-$UID; HTML in <dir>/html)
#
# Exit status 0 with zero warnings, 1 otherwise (the warnings are printed).
# Runtime: a few seconds.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-/tmp/lqer-docs-$(id -u)}
mkdir -p "$out"
command -v doxygen >/dev/null || { echo "docs: FAILED (doxygen not installed: apt-get install doxygen)"; exit 1; }
start=$(date +%s)
# The Doxyfile with the output directory and a warning log appended (later lines win).
# WARN_AS_ERROR=NO here: the log is the gate, so that every warning is listed, not only the first.
{
  cat docs/Doxyfile
  echo "OUTPUT_DIRECTORY = $out"
  echo "WARN_LOGFILE = $out/warnings.log"
  echo "WARN_AS_ERROR = NO"
} | doxygen - >"$out/doxygen.out" 2>&1
rc=$?
secs=$(($(date +%s) - start))
n=$(grep -c . "$out/warnings.log" 2>/dev/null); n=${n:-0}
if ((rc != 0 || n != 0)); then
  cat "$out/warnings.log" "$out/doxygen.out" 2>/dev/null | head -50
  echo "docs: FAILED (doxygen exit $rc, $n warning line(s)) in ${secs}s"
  exit 1
fi
echo "docs: OK (doxygen, zero warnings; HTML in $out/html) in ${secs}s"
