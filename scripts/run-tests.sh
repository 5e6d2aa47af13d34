#!/usr/bin/env bash
# Runs the whole suite; starts a throwaway PostgreSQL on loopback for the catalog tests.
set -u
cd "$(dirname "$0")/.."
pgdir=""
if [ -z "${CLIPLAB_TEST_POSTGRES_URL:-}" ]; then
  eval "$(bash scripts/start-test-postgres.sh)" || true
fi
python3 -m pytest "$@"
rc=$?
[ -n "${CLIPLAB_TEST_PGDATA:-}" ] && bash scripts/stop-test-postgres.sh
exit $rc
