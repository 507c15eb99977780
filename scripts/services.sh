#!/usr/bin/env bash
# Installs (from Debian's packages) and starts the servers the test suite talks to: PostgreSQL 15, Redis and
# ClickHouse, each on loopback, on ports of their own, with data under $TRELLIS_SERVICES_DIR
# (default /tmp/trellis-services). Idempotent: a server already answering is left alone.
# Also an S3-compatible server (moto's, from PyPI, in a venv under $DIR) for the cold log tier's S3 path.
# Prints nothing on stdout but the `export` lines of the URLs, so `eval "$(scripts/services.sh)"` works.
set -euo pipefail

DIR="${TRELLIS_SERVICES_DIR:-/tmp/trellis-services}"
PG_PORT="${TRELLIS_PG_PORT:-55432}"
REDIS_PORT="${TRELLIS_REDIS_PORT:-56379}"
CH_HTTP_PORT="${TRELLIS_CH_HTTP_PORT:-58123}"
CH_TCP_PORT="${TRELLIS_CH_TCP_PORT:-59000}"
S3_PORT="${TRELLIS_S3_PORT:-55900}"
MOTO_VERSION=5.1.4
PG_BIN=/usr/lib/postgresql/15/bin

log() { echo "services: $*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_updated=0
ensure_pkg() { # ensure_pkg COMMAND-OR-PATH PACKAGE...
  local probe="$1"; shift
  if command -v "$probe" >/dev/null 2>&1 || [ -x "$probe" ]; then return 0; fi
  if [ "$apt_updated" -eq 0 ]; then
    log "apt-get update"
    $SUDO apt-get update -qq >&2
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >&2
}

ensure_pkg "$PG_BIN/pg_ctl" postgresql-15
ensure_pkg redis-server redis-server
ensure_pkg clickhouse-server clickhouse-server
ensure_pkg curl curl
# The dashboard's browser test (scripts/test-browser.sh): Debian's Chromium and its driver, nothing downloaded.
ensure_pkg chromium chromium chromium-driver
ensure_pkg chromedriver chromium-driver
# The guest examples of WebAssembly strategies in C (scripts/build-wasm-examples.sh): clang and wasm-ld,
# installed here so that one `apt-get update` serves every package.
ensure_pkg clang clang
ensure_pkg wasm-ld lld

mkdir -p "$DIR"
chmod 755 "$DIR"

# --- PostgreSQL -------------------------------------------------------------------------------------
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PGDATA="$DIR/postgres"
if ! "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; then
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$PGDATA"
    log "initdb $PGDATA"
    as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PGDATA -c fsync=off -c max_connections=200" start >/dev/null
fi
psql_admin() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
if [ "$(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = 'trellis_test'")" != "1" ]; then
  psql_admin -c "CREATE DATABASE trellis_test" >/dev/null
fi
# The application role trellis connects as: neither superuser nor BYPASSRLS (migrations grant it access).
if [ "$(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = 'trellis_app'")" != "1" ]; then
  psql_admin -c "CREATE ROLE trellis_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE" >/dev/null
fi

# --- Redis ------------------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  mkdir -p "$DIR/redis"
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$DIR/redis" --daemonize yes \
    --pidfile "$DIR/redis/redis.pid" --logfile "$DIR/redis/redis.log" --save "" --appendonly no >&2
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

# --- ClickHouse -------------------------------------------------------------------------------------
CH="$DIR/clickhouse"
if ! curl -sf "http://127.0.0.1:$CH_HTTP_PORT/ping" >/dev/null 2>&1; then
  log "starting ClickHouse on 127.0.0.1:$CH_HTTP_PORT"
  "$(dirname "$0")/clickhouse-instance.sh" start "$CH" "$CH_HTTP_PORT" "$CH_TCP_PORT"
fi

# --- S3 (moto) --------------------------------------------------------------------------------------
if ! curl -sf "http://127.0.0.1:$S3_PORT/moto-api/" >/dev/null 2>&1; then
  MOTO="$DIR/moto-venv"
  if [ ! -x "$MOTO/bin/moto_server" ]; then
    ensure_pkg python3 python3
    python3 -m venv "$MOTO" >&2 || { ensure_pkg /usr/share/doc/python3-venv python3-venv; python3 -m venv "$MOTO" >&2; }
    log "installing moto[server]==$MOTO_VERSION"
    "$MOTO/bin/python" -m pip install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
  fi
  mkdir -p "$DIR/moto"
  log "starting moto's S3 server on 127.0.0.1:$S3_PORT"
  nohup "$MOTO/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$DIR/moto/server.log" 2>&1 &
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$S3_PORT/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
fi

echo "export TRELLIS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$PG_PORT/trellis_test"
echo "export TRELLIS_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
echo "export TRELLIS_TEST_CLICKHOUSE_URL=http://127.0.0.1:$CH_HTTP_PORT"
echo "export TRELLIS_TEST_S3_URL=http://127.0.0.1:$S3_PORT"
log "PostgreSQL, Redis, ClickHouse and S3 (moto) are up (data in $DIR)"
