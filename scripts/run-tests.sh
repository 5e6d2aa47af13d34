#!/usr/bin/env bash
# Runs the whole suite; starts a throwaway PostgreSQL on loopback for the catalog tests.
set -u
cd "$(dirname "$0")/.."
pgdir=""
if [ -z "${CLIPLAB_TEST_POSTGRES_URL:-}" ]; then
  eval "$(bash scripts/start-test-postgres.sh)" || true
fi
# Two pytest-xdist workers by default: about half the suite waits on app servers, browsers and
# subprocesses, so a second worker fills that time (tests/conftest.py keeps each module on one worker).
# CLIPLAB_TEST_WORKERS=1 runs everything in one process.
workers="${CLIPLAB_TEST_WORKERS:-2}"
parallel=()
if [ "$workers" -gt 1 ] && python3 -c "import xdist" 2>/dev/null; then
  parallel=(-n "$workers" --dist loadgroup)
fi
python3 -m pytest "${parallel[@]}" "$@"
rc=$?
[ -n "${CLIPLAB_TEST_PGDATA:-}" ] && bash scripts/stop-test-postgres.sh
exit $rc
