#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server on a free loopback port for the catalog tests and prints
# `export` lines for CLIPLAB_TEST_POSTGRES_URL and CLIPLAB_TEST_PGDATA (eval them). Prints nothing
# and exits 0 when no server can be started: the postgres tests then skip, saying why.
set -u
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bindir" ] && [ -x "$bindir/initdb" ] || exit 0
user=$(id -un)
run() { if [ "$user" = root ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$user" != root ] || id postgres >/dev/null 2>&1 || exit 0
dir=$(mktemp -d /tmp/cliplab-pg.XXXXXX) || exit 0
[ "$user" = root ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
run "$bindir/initdb" -D "$dir/data" -U cliplab --auth=trust >"$dir/initdb.log" 2>&1 || exit 0
run "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c fsync=off" start \
  >/dev/null 2>&1 || exit 0
run "$bindir/createdb" -h 127.0.0.1 -p "$port" -U cliplab cliplab_test >/dev/null 2>&1 || exit 0
echo "export CLIPLAB_TEST_POSTGRES_URL=postgresql+psycopg://cliplab@127.0.0.1:$port/cliplab_test"
echo "export CLIPLAB_TEST_PGDATA=$dir/data"
