#!/usr/bin/env bash
# Installs lqer's build and test dependencies on Debian bookworm, idempotently:
# only packages that are missing are installed, and `apt-get update` runs only
# when something is missing. Everything comes from Debian packages (no pip, no
# downloads), so a fresh machine and CI get exactly the same toolchain.
set -euo pipefail

# The one list of what lqer needs. Keep it sorted by role.
LQER_PACKAGES=(
  # toolchains and build (ccache: the test command's compiler cache)
  cmake ninja-build g++ clang libclang-rt-14-dev ccache
  # the library's dependencies
  libeigen3-dev libxsimd-dev
  # tests, benchmarks, the command-line tool
  doctest-dev libbenchmark-dev libcli11-dev libfmt-dev nlohmann-json3-dev
  # the oneDNN peer the benchmarks compare against
  libdnnl-dev ocl-icd-opencl-dev
  # the USE-lite example: ICU's NFKC for its tokenizer, KJV text for calibration
  libicu-dev bible-kjv bible-kjv-text
  # hardening stages: API docs, lint, the AArch64 cross build run under QEMU
  doxygen clang-tidy clang-format g++-aarch64-linux-gnu qemu-user
  # the thread pool's model check (tests/exec/thread_pool.pml)
  spin
  # llvm-symbolizer for symbolized sanitizer reports; clang's CMake toolchain
  # also picks llvm-ar and llvm-addr2line from it
  llvm
  # OpenMP for clang (GCC brings its own libgomp)
  libomp-14-dev
  # helper scripts; python3-venv: test.sh's virtualenv with PyPI's safetensors for the interop tests
  python3 python3-venv
)

missing=()
for pkg in "${LQER_PACKAGES[@]}"; do
  # dpkg -s succeeds for a package that was removed but left its config
  # ("deinstall ok config-files"): require the "install ok installed" status.
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#LQER_PACKAGES[@]} packages are installed"
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: not root and sudo is missing; cannot install: ${missing[*]}" >&2; exit 1; }
  SUDO=(sudo)
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
