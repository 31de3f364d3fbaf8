#!/usr/bin/env bash
# Installs (from Debian's packages, when missing) and starts the project's own MariaDB,
# PostgreSQL and Redis servers on loopback, with data in the cache folder, for the barrier and
# XA tests.
#
#   scripts/db.sh start   install if needed, start both (idempotent), print the URLs
#   scripts/db.sh stop    stop both
#   scripts/db.sh clean   roll back XA transactions left prepared by earlier runs (start does
#                         this whenever it starts a server)
#   scripts/db.sh env     print `export` lines with the URLs the tests read
#
#   DTM_SDK_DB_DIR  data folder (default /var/tmp/dtm-rs-db: the servers' own users must be
#                   able to reach it, which rules out root's home)
#   MARIADB_PORT    default 13306      POSTGRES_PORT   default 15432
#   REDIS_PORT      default 16379
#
# The tests read DTM_TEST_MYSQL_URL, DTM_TEST_POSTGRES_URL and DTM_TEST_REDIS_URL (as printed
# by `env`).
# PostgreSQL runs with max_prepared_transactions > 0, which XA needs.
set -euo pipefail

db_root="${DTM_SDK_DB_DIR:-/var/tmp/dtm-rs-db}"
my_port="${MARIADB_PORT:-13306}"
pg_port="${POSTGRES_PORT:-15432}"
redis_port="${REDIS_PORT:-16379}"
redis_dir="$db_root/redis"
my_dir="$db_root/mariadb"
pg_dir="$db_root/postgres"
my_sock="$my_dir/mysqld.sock"
log() { echo "db: $*" >&2; }

as_user() {
  local user="$1"; shift
  if [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}

install_packages() {
  local missing=()
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server mariadb-client)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql postgresql-client)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

mysql_url() { echo "mysql://dtm:dtm@127.0.0.1:$my_port/dtm_busi"; }
pg_url() { echo "postgres://postgres@127.0.0.1:$pg_port/postgres"; }
redis_url() { echo "redis://127.0.0.1:$redis_port/"; }

start_redis() {
  mkdir -p "$redis_dir"
  if ! redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
    log "starting Redis on 127.0.0.1:$redis_port"
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$redis_dir" --save "" \
      --appendonly no --daemonize yes --pidfile "$redis_dir/redis.pid" \
      --logfile "$redis_dir/server.log" >&2
    for _ in $(seq 1 100); do
      redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 \
      || { log "Redis did not start"; tail -n 30 "$redis_dir/server.log" >&2; exit 1; }
  fi
}

start_mariadb() {
  mkdir -p "$my_dir"
  chmod 755 "$db_root"
  if [ ! -d "$my_dir/data/mysql" ]; then
    log "initialising MariaDB in $my_dir/data"
    mkdir -p "$my_dir/data"
    chown -R mysql:mysql "$my_dir" 2>/dev/null || true
    mariadb-install-db --user=mysql --datadir="$my_dir/data" --skip-test-db >"$my_dir/install.log" 2>&1 \
      || { cat "$my_dir/install.log" >&2; exit 1; }
  fi
  if ! mariadb-admin --socket="$my_sock" -uroot ping >/dev/null 2>&1; then
    chown -R mysql:mysql "$my_dir" 2>/dev/null || true
    log "starting MariaDB on 127.0.0.1:$my_port"
    (mariadbd --user=mysql --datadir="$my_dir/data" --socket="$my_sock" \
      --pid-file="$my_dir/mysqld.pid" --bind-address=127.0.0.1 --port="$my_port" \
      --max-connections=500 --innodb-buffer-pool-size=256M --skip-name-resolve \
      >"$my_dir/server.log" 2>&1 &)
    for _ in $(seq 1 150); do
      mariadb-admin --socket="$my_sock" -uroot ping >/dev/null 2>&1 && break
      sleep 0.2
    done
    mariadb-admin --socket="$my_sock" -uroot ping >/dev/null 2>&1 \
      || { log "MariaDB did not start"; tail -n 30 "$my_dir/server.log" >&2; exit 1; }
    clean_mariadb
  fi
  mariadb --socket="$my_sock" -uroot <<'SQL'
CREATE USER IF NOT EXISTS 'dtm'@'127.0.0.1' IDENTIFIED BY 'dtm';
GRANT ALL PRIVILEGES ON *.* TO 'dtm'@'127.0.0.1';
CREATE DATABASE IF NOT EXISTS dtm_busi;
SQL
}

start_postgres() {
  local bin; bin="$(pg_bin)"
  mkdir -p "$pg_dir"
  chown postgres:postgres "$pg_dir" 2>/dev/null || true
  if [ ! -f "$pg_dir/data/PG_VERSION" ]; then
    log "initialising PostgreSQL in $pg_dir/data"
    as_user postgres "$bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >"$pg_dir/initdb.log" 2>&1 \
      || { cat "$pg_dir/initdb.log" >&2; exit 1; }
  fi
  if ! as_user postgres "$bin/pg_ctl" -D "$pg_dir/data" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$pg_port"
    as_user postgres "$bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
      -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c max_prepared_transactions=200 -c max_connections=300 -c fsync=off" \
      start >&2 || { tail -n 30 "$pg_dir/server.log" >&2; exit 1; }
    clean_postgres
  fi
}

# Test servers only: an interrupted XA test (or a client that died between prepare and
# commit) leaves prepared XA transactions holding row locks until someone decides them.
clean_mariadb() {
  local xids
  xids=$(mariadb --socket="$my_sock" -uroot -N -e "xa recover" 2>/dev/null | awk '{print $4}')
  for xid in $xids; do
    log "rolling back XA transaction $xid left by an earlier run"
    mariadb --socket="$my_sock" -uroot -e "xa rollback '$xid'" || true
  done
}

clean_postgres() {
  local bin; bin="$(pg_bin)"
  local gids
  gids=$(as_user postgres "$bin/psql" -h "$pg_dir" -p "$pg_port" -U postgres -tA \
    -c "select gid from pg_prepared_xacts" 2>/dev/null)
  for gid in $gids; do
    log "rolling back prepared transaction $gid left by an earlier run"
    for db in $(as_user postgres "$bin/psql" -h "$pg_dir" -p "$pg_port" -U postgres -tA \
      -c "select database from pg_prepared_xacts where gid = '$gid'"); do
      as_user postgres "$bin/psql" -h "$pg_dir" -p "$pg_port" -U postgres -d "$db" \
        -c "rollback prepared '$gid'" >&2 || true
    done
  done
}

case "${1:-start}" in
  start)
    install_packages
    start_mariadb
    start_postgres
    start_redis
    echo "DTM_TEST_MYSQL_URL=$(mysql_url)"
    echo "DTM_TEST_POSTGRES_URL=$(pg_url)"
    echo "DTM_TEST_REDIS_URL=$(redis_url)"
    ;;
  stop)
    mariadb-admin --socket="$my_sock" -uroot shutdown 2>/dev/null || true
    as_user postgres "$(pg_bin)/pg_ctl" -D "$pg_dir/data" -m fast stop >/dev/null 2>&1 || true
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    ;;
  clean)
    clean_mariadb
    clean_postgres
    ;;
  env)
    echo "export DTM_TEST_MYSQL_URL=$(mysql_url)"
    echo "export DTM_TEST_POSTGRES_URL=$(pg_url)"
    echo "export DTM_TEST_REDIS_URL=$(redis_url)"
    ;;
  *)
    echo "usage: $0 start|stop|clean|env" >&2
    exit 2
    ;;
esac
