#!/usr/bin/env bash
# Installs what the stack and the tests need when it is missing, and prints where it is.
#   scripts/tools.sh services  PostgreSQL and Redis server binaries, docker-compose (Debian packages)
#   scripts/tools.sh java      Java and Maven (Debian packages), which the Kafka broker needs
#   scripts/tools.sh kafka     the Apache Kafka broker's jars, collected once per machine; prints their directory
#   scripts/tools.sh pg-bin    the directory holding initdb and postgres
set -euo pipefail

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return 0; fi
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

services() {
  local missing=() compose=()
  pg_bin >/dev/null || missing+=(postgresql)
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # Only validates compose.yaml in the tests. Without --no-install-recommends apt would also
  # install the docker.io engine, which nothing here runs.
  command -v docker-compose >/dev/null 2>&1 || compose+=(docker-compose)
  if [ "${#missing[@]}" -gt 0 ] || [ "${#compose[@]}" -gt 0 ]; then
    echo "installing ${missing[*]} ${compose[*]}" >&2
    as_root apt-get update -qq >&2
  fi
  if [ "${#missing[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >&2
  fi
  if [ "${#compose[@]}" -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      "${compose[@]}" >&2
  fi
}

java_tools() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >&2
  fi
}

case "${1:-}" in
  services) services ;;
  java) java_tools ;;
  kafka) "$(dirname "$0")/kafka.sh" libs ;;
  pg-bin) pg_bin ;;
  *) echo "usage: $0 services|java|kafka|pg-bin" >&2; exit 2 ;;
esac
