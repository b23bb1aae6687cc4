#!/usr/bin/env bash
# Apache Kafka as a local process: single-node KRaft (broker and controller in one JVM), from
# the jars Maven Central serves, on this machine's Java. Used by `make up`, the tests' harness
# and the benchmarks.
#   scripts/kafka.sh libs                         the broker's jars, collected once per machine; prints their directory
#   scripts/kafka.sh run DIR PORT CPORT [PROFILE] formats DIR once, then becomes the broker (exec)
#   scripts/kafka.sh ready PORT                   succeeds when the broker on PORT answers Metadata
#   scripts/kafka.sh consume PORT TOPIC COUNT     prints COUNT record values of TOPIC with Kafka's own console consumer
#   scripts/kafka.sh offsets PORT TOPIC           prints TOPIC:PARTITION:HIGH_WATERMARK per partition (Kafka's GetOffsetShell)
# PROFILE is `test` (small heap, quick start, light on a 2-core machine) or `bench`
# (production-like heap, GC and threads).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
POM="$ROOT/scripts/kafka/pom.xml"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")"
# Not WALLET_*: `wallet` reads every such variable as configuration.
TOOLS_DIR="${TOOLS_CACHE_DIR:-$HOME/.cache/wallet}"
LIBS="$TOOLS_DIR/kafka-$KAFKA_VERSION/libs"
# Any 16 bytes in URL-safe base64; the same in compose.yaml.
CLUSTER_ID=HLN4njHuV8q0TEIFslZTzw

libs() {
  if [ ! -f "$LIBS/.complete" ]; then
    "$ROOT/scripts/tools.sh" java >&2
    echo "collecting Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once per machine)" >&2
    rm -rf "$LIBS"
    mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$LIBS" >&2
    touch "$LIBS/.complete"
  fi
  echo "$LIBS"
}

jvm_options() {
  case "$1" in
    test) echo "-Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:CICompilerCount=1" ;;
    bench) echo "-Xms1g -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35" ;;
    *) echo "unknown profile $1 (test|bench)" >&2; exit 2 ;;
  esac
}

server_properties() {
  local dir=$1 port=$2 cport=$3 profile=$4
  cat <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
# rskafka's Metadata v4 asks for topics to be created; only \`wallet migrate\` creates them.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if [ "$profile" = test ]; then
    # The cleaner allocates its dedupe buffer on the heap at start (128 MiB by default); it
    # must exceed 1 MiB per cleaner thread.
    cat <<EOF
# After a crash the restarted controller holds the old broker registration until its session
# expires (9 s by default) before the broker may register again: tests kill brokers.
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=2097152
offsets.topic.num.partitions=1
num.network.threads=2
num.io.threads=2
background.threads=2
EOF
  fi
}

run() {
  local dir=$1 port=$2 cport=$3 profile=${4:-test} libs
  libs="$(libs)"
  mkdir -p "$dir"
  server_properties "$dir" "$port" "$cport" "$profile" >"$dir/server.properties"
  # shellcheck disable=SC2207
  local java=(java $(jvm_options "$profile") -Djava.awt.headless=true -XX:+ExitOnOutOfMemoryError
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka/log4j2.properties" -cp "$libs/*")
  if [ ! -f "$dir/data/meta.properties" ]; then
    "${java[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$CLUSTER_ID" \
      -c "$dir/server.properties"
  fi
  exec "${java[@]}" kafka.Kafka "$dir/server.properties"
}

# A Metadata v4 request for no topics (header: key 3, version 4, correlation id 1, client
# "ready"); the broker is ready when it answers with correlation id 1 and lists a broker.
ready() {
  local port=$1 reply
  reply="$(exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$port" &&
    printf '\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x01\x00\x05ready\x00\x00\x00\x00\x00' >&3 &&
    timeout 2 head -c 16 <&3 | od -An -v -tx1 | tr -d ' \n')" || return 1
  [[ $reply =~ ^[0-9a-f]{8}00000001[0-9a-f]{8}([0-9a-f]{8})$ ]] && [ "${BASH_REMATCH[1]}" != 00000000 ]
}

# A Kafka command-line tool: its output on stdout, its log dropped.
tool() {
  local libs
  libs="$(libs)"
  java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    "-Dlog4j2.configurationFile=$ROOT/scripts/kafka/log4j2.properties" \
    -cp "$libs/*" "$@" 2>/dev/null
}

consume() {
  tool org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "127.0.0.1:$1" \
    --topic "$2" --from-beginning --max-messages "$3" --timeout-ms 30000
}

offsets() {
  tool org.apache.kafka.tools.GetOffsetShell --bootstrap-server "127.0.0.1:$1" --topic "$2"
}

topic_config() {
  tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$1" --alter --entity-type topics \
    --entity-name "$2" --add-config "$3"
}

case "${1:-}" in
  libs) libs ;;
  run) shift; run "$@" ;;
  ready) ready "$2" ;;
  consume) consume "$2" "$3" "$4" ;;
  offsets) offsets "$2" "$3" ;;
  topic-config) topic_config "$2" "$3" "$4" ;;
  *) echo "usage: $0 libs | run DIR PORT CPORT [test|bench] | ready PORT | consume PORT TOPIC COUNT | offsets PORT TOPIC | topic-config PORT TOPIC KEY=VALUE" >&2; exit 2 ;;
esac
