#!/usr/bin/env bash
# Installs what the stack and the tests need when it is missing, and prints where it is.
#   scripts/tools.sh services  PostgreSQL and Redis server binaries, docker-compose (Debian packages)
#   scripts/tools.sh java      Java and Maven (Debian packages), which the Kafka broker needs
#   scripts/tools.sh kafka     the Apache Kafka broker's jars, collected once per machine; prints their directory
#   scripts/tools.sh pg-bin    the directory holding initdb and postgres
#   scripts/tools.sh fuzzer    schemathesis and openapi-spec-validator (pinned) in a virtualenv of its own, once per machine; prints schemathesis's executable
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

# The API fuzzer the contract tests run. Pinned, because its checks and generators change from
# release to release; kept out of the system's Python in a virtualenv that is only used once
# its install completed (the stamp), so an interrupted install is redone rather than trusted.
SCHEMATHESIS_VERSION=4.32.5
# Checks that the served OpenAPI documents are valid ones; installed beside the fuzzer, whose
# executable's directory the tests find it in.
SPEC_VALIDATOR_VERSION=0.9.0

fuzzer() {
  local venv="${TOOLS_CACHE_DIR:-$HOME/.cache/wallet}/schemathesis-${SCHEMATHESIS_VERSION}-validator-${SPEC_VALIDATOR_VERSION}"
  if [ ! -f "$venv/.installed" ]; then
    command -v python3 >/dev/null 2>&1 && python3 -c 'import ensurepip, venv' 2>/dev/null || {
      echo "installing python3 python3-venv" >&2
      as_root apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
        python3 python3-venv >&2
    }
    echo "installing schemathesis ${SCHEMATHESIS_VERSION} into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==${SCHEMATHESIS_VERSION}" "openapi-spec-validator==${SPEC_VALIDATOR_VERSION}" >&2
    touch "$venv/.installed"
  fi
  echo "$venv/bin/schemathesis"
}

case "${1:-}" in
  services) services ;;
  java) java_tools ;;
  kafka) "$(dirname "$0")/kafka.sh" libs ;;
  pg-bin) pg_bin ;;
  fuzzer) fuzzer ;;
  *) echo "usage: $0 services|java|kafka|pg-bin|fuzzer" >&2; exit 2 ;;
esac
