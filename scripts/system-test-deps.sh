#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium for the browser tests and a
# PostgreSQL server for the catalog tests. Installs only what is missing.
set -u
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v pg_ctlcluster >/dev/null 2>&1 || [ -d /usr/lib/postgresql ] || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${need[*]} from Debian's packages"
    apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
      || echo "WARNING: could not install ${need[*]}: the tests that need them will be skipped, loudly"
  else
    echo "WARNING: not root, cannot install ${need[*]}: the tests that need them will be skipped, loudly"
  fi
fi
exit 0
