#!/usr/bin/env bash
# The PostgreSQL server the tests use: a cluster of its own (Debian's
# postgresql package), in /tmp/sav-test-pg-<port>, on 127.0.0.1:<port>
# (25432 unless SAV_TEST_PG_PORT says otherwise), user `sav`, trust
# authentication on loopback only, fsync off (test data). Idempotent:
#   scripts/test-postgres.sh start   # initialise once, start if stopped
#   scripts/test-postgres.sh stop
# PostgreSQL refuses to run as root: as root, it runs as the `postgres` user.
set -euo pipefail

port=${SAV_TEST_PG_PORT:-25432}
dir=/tmp/sav-test-pg-$port
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$bin" ]; then
  echo "PostgreSQL is not installed (Debian package postgresql): run scripts/test.sh" >&2
  exit 1
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

case "${1:-start}" in
  start)
    if [ -f "$dir/data/PG_VERSION" ] && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      echo "postgres://sav@127.0.0.1:$port"
      exit 0
    fi
    mkdir -p "$dir"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bin/initdb" -D "$dir/data" -U sav --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null \
      || { cat "$dir/server.log" >&2; exit 1; }
    echo "postgres://sav@127.0.0.1:$port"
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
