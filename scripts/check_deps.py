#!/usr/bin/env python3
"""Fails when a build read a system file that scripts/setup.sh does not install.

Why: CI runs on a machine where earlier sessions may have installed packages by
hand, so a green run can hide a missing install step (issue #17: oneDNN's CMake
config needs OpenCL, which Debian only *recommends* with libdnnl-dev, and
setup.sh installs with --no-install-recommends). This check makes that
mechanical: every system file a build read must belong to a Debian package in
the closure of setup.sh's list under Depends/Pre-Depends (what apt installs
without recommends) or to Debian's essential/required set (on every Debian
system by policy), so that a fresh machine gets it too.

What counts as "read by a build", for each build directory given:
  * every header in the compiler's dependency files (ninja -t deps);
  * every absolute path in the link and compile commands (ninja -t commands):
    libraries, crt files, sanitizer runtimes;
  * every file or directory path CMake found and cached (CMakeCache.txt:
    find_package config directories, find_library / find_path results);
  * the programs the test stages run (cmake, ninja, the compilers, clang-tidy,
    clang-format, doxygen, qemu-aarch64, spin, cc).
Files outside /usr, /lib, /bin, /etc and /opt (the checkout, build trees, a
pyenv Python) are not Debian's business and are skipped. A system file that no
package owns (installed by hand, `make install`) fails too.

Usage: check_deps.py [--setup scripts/setup.sh] BUILD_DIR...
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

SYSTEM_PREFIXES = ("/usr/", "/lib/", "/lib64/", "/bin/", "/sbin/", "/etc/", "/opt/")
PROGRAMS = ["cmake", "ninja", "g++", "gcc", "cc", "clang++", "clang", "clang-tidy", "clang-format", "doxygen",
            "qemu-aarch64", "aarch64-linux-gnu-g++", "spin"]


def setup_packages(setup: Path) -> list[str]:
    """The LQER_PACKAGES=( ... ) list of setup.sh, comments dropped."""
    text = setup.read_text()
    m = re.search(r"LQER_PACKAGES=\((.*?)\n\)", text, re.S)
    if not m:
        sys.exit(f"check_deps: {setup}: no LQER_PACKAGES=( ... ) list found")
    words = []
    for line in m.group(1).splitlines():
        words += line.split("#", 1)[0].split()
    return words


def depends_closure(packages: list[str]) -> set[str]:
    """Every package apt installs for `packages` without recommends."""
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts", "--no-breaks",
         "--no-replaces", "--no-enhances", *packages],
        check=True, capture_output=True, text=True).stdout
    closure = set(packages)
    for line in out.splitlines():
        if not line or line[0].isspace():
            # "    pkg" lines list the providers of a virtual dependency
            s = line.strip()
            if s and ":" not in s and not s.startswith("<"):
                closure.add(s)
            continue
        closure.add(line.strip().strip("<>"))
    return {p.split(":")[0] for p in closure}


def essential_packages() -> list[str]:
    """Essential and Priority: required packages: on every Debian system, by policy."""
    names, name = [], None
    for line in Path("/var/lib/dpkg/status").read_text(errors="replace").splitlines():
        if line.startswith("Package: "):
            name = line.split()[1]
        elif name and (line == "Essential: yes" or line == "Priority: required"):
            names.append(name)
    return sorted(set(names))


def dpkg_owners() -> dict[str, str]:
    """path → package, from dpkg's file lists (one read instead of a dpkg -S per file)."""
    owners: dict[str, str] = {}
    info = Path("/var/lib/dpkg/info")
    for lst in info.glob("*.list"):
        pkg = lst.name[: -len(".list")].split(":")[0]
        for line in lst.read_text(errors="replace").splitlines():
            owners.setdefault(line, pkg)
    return owners


def owner_of(path: str, owners: dict[str, str]) -> str | None:
    """The package owning `path`, trying the merged-/usr spellings and the resolved path."""
    candidates = [path]
    real = os.path.realpath(path)
    candidates.append(real)
    for p in list(candidates):
        if p.startswith("/usr/lib/") or p.startswith("/usr/bin/") or p.startswith("/usr/sbin/"):
            candidates.append(p[len("/usr"):])
        elif p.startswith(("/lib/", "/lib64/", "/bin/", "/sbin/")):
            candidates.append("/usr" + p)
    for p in candidates:
        pkg = owners.get(os.path.normpath(p))
        if pkg:
            return pkg
    return None


def files_read(build: Path) -> set[str]:
    files: set[str] = set()
    if (build / "build.ninja").exists():
        deps = subprocess.run(["ninja", "-C", str(build), "-t", "deps"], capture_output=True, text=True).stdout
        files |= {line.strip() for line in deps.splitlines() if line.startswith("    /")}
        cmds = subprocess.run(["ninja", "-C", str(build), "-t", "commands"], capture_output=True, text=True).stdout
        for line in cmds.splitlines():
            try:
                tokens = shlex.split(line)
            except ValueError:
                tokens = line.split()
            for t in tokens:
                for part in re.split(r"[=,]", t):
                    if part.startswith("/") and os.path.exists(part):
                        files.add(part)
    cache = build / "CMakeCache.txt"
    if cache.exists():
        for line in cache.read_text(errors="replace").splitlines():
            m = re.match(r"^([A-Za-z0-9_.+-]+):(FILEPATH|PATH|STRING|UNINITIALIZED|INTERNAL)=(/.*)$", line)
            if not m:
                continue
            key = m.group(1)
            for value in m.group(3).split(";"):
                if not os.path.exists(value):
                    continue
                # Directories only where they are something found: a package's
                # config dir (<Pkg>_DIR) or an include dir; not CMAKE_INSTALL_PREFIX.
                if os.path.isdir(value) and not re.search(r"_DIR$|_INCLUDE_DIRS?$", key):
                    continue
                files.add(value)
    return {f for f in files if f.startswith(SYSTEM_PREFIXES)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--setup", default=str(Path(__file__).with_name("setup.sh")))
    ap.add_argument("builds", nargs="+")
    args = ap.parse_args()

    allowed = depends_closure(setup_packages(Path(args.setup)) + essential_packages())
    owners = dpkg_owners()

    files: dict[str, str] = {}  # file → what read it
    for b in args.builds:
        build = Path(b)
        if not build.is_dir():
            print(f"check_deps: {b}: no such build directory (skipped)")
            continue
        for f in files_read(build):
            files.setdefault(f, b)
    for prog in PROGRAMS:
        p = shutil.which(prog)
        if p and os.path.realpath(p).startswith(SYSTEM_PREFIXES):
            files.setdefault(os.path.realpath(p), f"the program {prog}")

    bad: dict[str, list[str]] = {}
    unowned: list[str] = []
    used: set[str] = set()
    for f, who in sorted(files.items()):
        if os.path.isdir(f):
            # A directory (a find_package config dir): the package of a file in it.
            inner = next((str(p) for p in sorted(Path(f).iterdir()) if p.is_file()), None)
            pkg = owner_of(inner, owners) if inner else owner_of(f, owners)
        else:
            pkg = owner_of(f, owners)
        if pkg is None:
            unowned.append(f"{f} (read by {who})")
            continue
        used.add(pkg)
        if pkg not in allowed:
            bad.setdefault(pkg, []).append(f"{f} (read by {who})")

    print(f"check_deps: {len(files)} system files read, from {len(used)} Debian packages; "
          f"setup.sh's list and its dependencies: {len(allowed)} packages")
    for pkg, where in sorted(bad.items()):
        print(f"check_deps: package {pkg} is used but scripts/setup.sh does not install it "
              f"(not even as a dependency): {where[0]}" + (f" and {len(where) - 1} more" if len(where) > 1 else ""))
    for f in unowned[:20]:
        print(f"check_deps: {f} belongs to no Debian package (installed by hand?)")
    if len(unowned) > 20:
        print(f"check_deps: ... and {len(unowned) - 20} more files of no package")
    if bad or unowned:
        print("check_deps: FAILED — add the packages to LQER_PACKAGES in scripts/setup.sh "
              "(a fresh machine would not have them)")
        return 1
    print("check_deps: ok — everything the builds read is installed by scripts/setup.sh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
