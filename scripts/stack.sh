#!/usr/bin/env bash
# The local stack for development: PostgreSQL, Redis and Apache Kafka as local processes with their
# data under .stack/. A service already answering on its port is reused, never touched.
#   scripts/stack.sh up | down | status
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STACK="$ROOT/.stack"
PG_PORT="${PG_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
# `bench` gives the broker a production-like heap and GC (make bench); `test` is light.
KAFKA_PROFILE="${KAFKA_PROFILE:-test}"
# PostgreSQL's own default is 128MB, which a few million operations' indexes outgrow: the
# batch transaction's id lookups then read pages from the OS at every batch.
PG_SHARED_BUFFERS="${PG_SHARED_BUFFERS:-2GB}"
# Redis runs every request's idempotency exchange on one thread: when the machine's cores are
# all busy (everything runs on one machine here) and the kernel preempts it, every request
# waits, and Redis's slow log showed single commands taking 10-22 ms. A nice value below 0
# needs root; without it nice(1) warns and starts Redis at the usual priority.
REDIS_NICE="${REDIS_NICE:--10}"
# At the default 1GB a benchmark's writes force a checkpoint every 10-25 s, and each one makes
# the next writes of every page log it whole again.
PG_MAX_WAL_SIZE="${PG_MAX_WAL_SIZE:-4GB}"

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for() {
  local port=$1 name=$2 log=$3
  for _ in $(seq 1 150); do
    listening "$port" && return 0
    sleep 0.2
  done
  echo "$name did not start on port $port; see $log" >&2
  tail -n 20 "$log" >&2 || true
  exit 1
}

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_up() {
  if listening "$PG_PORT"; then echo "postgres: reusing 127.0.0.1:$PG_PORT"; return; fi
  local bin data="$STACK/postgres"
  bin="$("$ROOT/scripts/tools.sh" pg-bin)"
  mkdir -p "$STACK"
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data"
    as_postgres "$bin/initdb" -U postgres --auth=trust -E UTF8 -D "$data" >/dev/null
  fi
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$STACK"
  as_postgres "$bin/pg_ctl" -D "$data" -l "$STACK/postgres.log" -w \
    -o "-p $PG_PORT -k $STACK -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=$PG_SHARED_BUFFERS -c max_wal_size=$PG_MAX_WAL_SIZE" \
    start >/dev/null
  touch "$STACK/postgres.started"
  wait_for "$PG_PORT" postgres "$STACK/postgres.log"
  echo "postgres: started on 127.0.0.1:$PG_PORT (data in $data)"
}

redis_up() {
  if listening "$REDIS_PORT"; then echo "redis: reusing 127.0.0.1:$REDIS_PORT"; return; fi
  mkdir -p "$STACK/redis"
  nice -n "$REDIS_NICE" redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$STACK/redis" \
    --pidfile "$STACK/redis.pid" --logfile "$STACK/redis.log" --save "" --appendonly no
  wait_for "$REDIS_PORT" redis "$STACK/redis.log"
  echo "redis: started on 127.0.0.1:$REDIS_PORT"
}

broker_up() {
  if listening "$KAFKA_PORT"; then echo "kafka: reusing 127.0.0.1:$KAFKA_PORT"; return; fi
  "$ROOT/scripts/kafka.sh" libs >/dev/null
  mkdir -p "$STACK"
  nohup "$ROOT/scripts/kafka.sh" run "$STACK/kafka" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT" \
    "$KAFKA_PROFILE" >"$STACK/kafka.log" 2>&1 &
  echo $! >"$STACK/kafka.pid"
  for _ in $(seq 1 300); do
    if "$ROOT/scripts/kafka.sh" ready "$KAFKA_PORT"; then
      echo "kafka: started Apache Kafka on 127.0.0.1:$KAFKA_PORT (data in $STACK/kafka)"
      return 0
    fi
    kill -0 "$(cat "$STACK/kafka.pid")" 2>/dev/null || break
    sleep 0.2
  done
  echo "kafka did not answer on port $KAFKA_PORT; see $STACK/kafka.log" >&2
  tail -n 20 "$STACK/kafka.log" >&2 || true
  exit 1
}

stop_pid() {
  local file=$1 name=$2 pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  kill "$pid" 2>/dev/null || true
  # Kafka's controlled shutdown takes a few seconds.
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  rm -f "$file"
  echo "$name: stopped"
}

down() {
  stop_pid "$STACK/kafka.pid" kafka
  stop_pid "$STACK/redis.pid" redis
  if [ -f "$STACK/postgres.started" ]; then
    as_postgres "$("$ROOT/scripts/tools.sh" pg-bin)/pg_ctl" -D "$STACK/postgres" -m fast stop >/dev/null || true
    rm -f "$STACK/postgres.started"
    echo "postgres: stopped"
  fi
}

status() {
  for entry in "postgres:$PG_PORT" "redis:$REDIS_PORT" "kafka:$KAFKA_PORT"; do
    if listening "${entry#*:}"; then echo "${entry%%:*}: up on ${entry#*:}"; else echo "${entry%%:*}: down"; fi
  done
}

case "${1:-}" in
  up) "$ROOT/scripts/tools.sh" services; postgres_up; redis_up; broker_up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
