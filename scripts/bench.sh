#!/usr/bin/env bash
# Load runs against the local stack (`make up` + `wallet migrate` first): starts a release
# `wallet serve` and `wallet work`, runs `wallet bench`, and stops them again.
#   scripts/bench.sh smoke [ARGS]     a hot wallet and BENCH_WALLETS wallets, BENCH_DURATION s each
#   scripts/bench.sh standard [ARGS]  the four standard scenarios and the row-lock baseline, printed as one table,
#                                     after BENCH_WARMUP s (default 20) of unmeasured load
# on a topic of BENCH_PARTITIONS partitions (default: one per core).
# ARGS go to every `wallet bench` call.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
LOGS="$ROOT/.stack/bench"
PORT="${BENCH_PORT:-18080}"
MODE="${1:-smoke}"
shift || true
DURATION="${BENCH_DURATION:-10}"
WALLETS="${BENCH_WALLETS:-1000}"
mkdir -p "$LOGS"

cargo build --release --quiet
WALLET="$ROOT/target/release/wallet"

# The load runs on an operations topic of its own, sized to this machine: partitions cost
# fetches, produce requests and batch transactions each, and one worker on a small machine
# does more with one partition per core than with the default 8 (see Benchmarks in the
# README). BENCH_PARTITIONS=8 measures the default.
PARTITIONS="${BENCH_PARTITIONS:-$(nproc)}"
export WALLET_KAFKA__OPERATIONS_TOPIC="${BENCH_TOPIC:-wallet-operations-bench-$PARTITIONS}"
"$WALLET" migrate --partitions "$PARTITIONS" >"$LOGS/migrate.log" 2>&1 \
  || { echo "wallet migrate failed; see $LOGS/migrate.log" >&2; exit 1; }
echo "== operations topic $WALLET_KAFKA__OPERATIONS_TOPIC ($PARTITIONS partitions; BENCH_PARTITIONS)"

# The API asks for a token unless auth.enabled is false: a fresh one per run, made before
# the server starts so it is loaded at once, and revoked afterwards.
TOKEN_ID="$("$WALLET" token create --tenant bench --scopes read,write --name bench \
  2>&1 >"$LOGS/token" | awk '{print $2}')"
TOKEN="$(cat "$LOGS/token")"
rm -f "$LOGS/token"

"$WALLET" serve --listen "127.0.0.1:$PORT" >"$LOGS/serve.log" 2>&1 &
SERVE=$!
"$WALLET" work >"$LOGS/work.log" 2>&1 &
WORK=$!
trap 'kill $SERVE $WORK 2>/dev/null; wait $SERVE $WORK 2>/dev/null || true
      "$WALLET" token revoke "$TOKEN_ID" >/dev/null 2>&1 || true' EXIT

for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
if ! kill -0 "$SERVE" 2>/dev/null; then
  echo "wallet serve did not start; see $LOGS/serve.log" >&2
  tail -n 5 "$LOGS/serve.log" >&2
  exit 1
fi

URL="http://127.0.0.1:$PORT"
case "$MODE" in
  smoke)
    echo "== hot wallet, closed loop, ${DURATION}s"
    "$WALLET" bench --url "$URL" --token "$TOKEN" --hot --duration "$DURATION" --connections 64 "$@"
    echo "== $WALLETS wallets, 20% transfers, closed loop, ${DURATION}s"
    "$WALLET" bench --url "$URL" --token "$TOKEN" --wallets "$WALLETS" --duration "$DURATION" --connections 64 "$@"
    ;;
  standard)
    # A broker started moments ago runs its request path interpreted until the JIT has
    # compiled it: measured at over twice the CPU per operation of a warm one.
    WARMUP="${BENCH_WARMUP:-20}"
    if [ "$WARMUP" -gt 0 ]; then
      echo "== warm-up: one hot wallet for ${WARMUP}s, not measured (BENCH_WARMUP; log in $LOGS/warmup.log)"
      "$WALLET" bench --url "$URL" --token "$TOKEN" --hot --duration "$WARMUP" --connections 64 >"$LOGS/warmup.log" 2>&1 \
        || { echo "the warm-up failed; see $LOGS/warmup.log" >&2; exit 1; }
    fi
    "$WALLET" bench --url "$URL" --token "$TOKEN" --standard --duration "${BENCH_DURATION:-20}" --connections 64 \
      --baseline row-lock "$@"
    ;;
  *)
    echo "usage: $0 smoke|standard [wallet bench arguments]" >&2
    exit 2
    ;;
esac
