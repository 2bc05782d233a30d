# Sourced by the fetch scripts: the King James Bible as plain text, from
# Debian's bible-kjv (the `bible` reader) and bible-kjv-text (its data), which
# scripts/setup.sh installs; installed here too when a fetch script runs alone.
# Needs `say` and `die` from the caller.

# kjv_require: makes sure `bible` and its data are there.
kjv_require() {
  if command -v bible >/dev/null && [[ -f /usr/lib/bible.data ]]; then return 0; fi
  say "installing Debian's bible-kjv and bible-kjv-text"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || die "not root and sudo is missing: install bible-kjv bible-kjv-text"
    sudo=(sudo)
  fi
  # Try without `apt-get update` first: it is slow and usually not needed.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends bible-kjv bible-kjv-text >/dev/null 2>&1; then
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends bible-kjv bible-kjv-text >/dev/null
  fi
}

# kjv_verses RANGE: one verse per line, e.g. kjv_verses "Gen1:1-Mal4:6".
# `bible -l1000` prints each verse as "  <n> <text>" under "Book c" headings;
# keep the verse lines and strip the verse number.
kjv_verses() { bible -l1000 -p /usr/lib "$1" | sed -n 's/^  [0-9][0-9]* //p'; }
