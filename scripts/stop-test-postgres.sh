#!/usr/bin/env bash
# Stops the server scripts/start-test-postgres.sh started and removes its files.
set -u
data=${CLIPLAB_TEST_PGDATA:-}
[ -n "$data" ] && [ -d "$data" ] || exit 0
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1
else "$bindir/pg_ctl" -D "$data" -m fast stop >/dev/null 2>&1; fi
rm -rf "$(dirname "$data")"
