#!/usr/bin/env bash
# Client-edge overhead: sysbench oltp_point_select through a certus node vs directly against the
# node's own backend (unix socket, and TCP), in one run, alternating A/B/A/B so machine noise
# hits both sides alike. Appends a dated section to docs/benchmarks.md.
#
# Usage: bench/point_select.sh [seconds-per-run=20] [rounds=3] [threads=16]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
ROUNDS=${2:-3}
THREADS=${3:-16}
WORK=$(mktemp -d /tmp/certus-bench.XXXXXX)
NODE_PORT=${NODE_PORT:-3391}
BACKEND_PORT=${BACKEND_PORT:-3392}
command -v sysbench >/dev/null || { echo "sysbench is not installed (apt-get install sysbench)"; exit 1; }

cargo build --release -q
BIN=target/release/certus
NODE_PID=
cleanup() {
  if [ -n "$NODE_PID" ]; then kill "$NODE_PID" 2>/dev/null || true; wait "$NODE_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" node --data-dir "$WORK/n1" --listen 127.0.0.1:$NODE_PORT --backend-port $BACKEND_PORT \
  --backend-option innodb_buffer_pool_size=512M >"$WORK/node.log" 2>&1 &
NODE_PID=$!
for _ in $(seq 1 120); do
  grep -q "node is serving" "$WORK/node.log" && break
  sleep 0.5
done
grep -q "node is serving" "$WORK/node.log" || { echo "node did not start:"; cat "$WORK/node.log"; exit 1; }
SOCK="$WORK/n1/mariadb/mysqld.sock"
SVC_PW=$(sed -n 's/^password=//p' "$WORK/n1/service.cnf")
mariadb -S "$SOCK" -ucertus_svc -p"$SVC_PW" -e "CREATE USER IF NOT EXISTS 'sbtest'@'%' IDENTIFIED BY 'sbtest'; GRANT ALL ON *.* TO 'sbtest'@'%'; CREATE DATABASE IF NOT EXISTS sbtest;"

COMMON=(--db-driver=mysql --mysql-user=sbtest --mysql-password=sbtest --mysql-db=sbtest --tables=4 --table-size=10000)
sysbench oltp_point_select "${COMMON[@]}" --mysql-socket="$SOCK" prepare >/dev/null

run() { # name, connection args...
  local name=$1; shift
  sysbench oltp_point_select "${COMMON[@]}" "$@" --threads="$THREADS" --time="$SECS" --report-interval=0 run \
    | awk -v n="$name" '/transactions:/ {gsub("\\(","",$3); tps=$3} /95th percentile:/ {p95=$3} /avg:/ && !avg {avg=$2} END {printf "%s %s %s %s\n", n, tps, avg, p95}'
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
for r in $(seq 1 "$ROUNDS"); do
  run node --mysql-host=127.0.0.1 --mysql-port=$NODE_PORT >>"$RESULTS"
  run direct_socket --mysql-socket="$SOCK" >>"$RESULTS"
  run direct_tcp --mysql-host=127.0.0.1 --mysql-port=$BACKEND_PORT >>"$RESULTS"
done
cat "$RESULTS"

summary=$(awk '
  { tps[$1]+=$2; lat[$1]+=$3; p95[$1]+=$4; n[$1]++ }
  END {
    for (k in tps) { t[k]=tps[k]/n[k]; l[k]=lat[k]/n[k]; p[k]=p95[k]/n[k] }
    printf "| through the node | %.0f | %.3f | %.3f |\n", t["node"], l["node"], p["node"]
    printf "| direct, unix socket | %.0f | %.3f | %.3f |\n", t["direct_socket"], l["direct_socket"], p["direct_socket"]
    printf "| direct, TCP | %.0f | %.3f | %.3f |\n", t["direct_tcp"], l["direct_tcp"], p["direct_tcp"]
    printf "\nRatios (TPS): node/direct socket = **%.2f**, node/direct TCP = **%.2f**\n", t["node"]/t["direct_socket"], t["node"]/t["direct_tcp"]
  }' "$RESULTS")
echo "$summary"

{
  echo
  echo "## oltp_point_select: node vs its own backend ($(date -u +%Y-%m-%d\ %H:%M) UTC)"
  echo
  echo "Command: \`bench/point_select.sh $SECS $ROUNDS $THREADS\` (sysbench $(sysbench --version | awk '{print $2}'), $THREADS threads,"
  echo "4 tables x 10000 rows, $ROUNDS rounds of ${SECS} s per system, alternating node / direct socket / direct TCP;"
  echo "mariadbd with innodb_buffer_pool_size=512M and the node's generated my.cnf; $(nproc) cores)."
  echo
  echo "| system | TPS (mean) | avg latency ms | p95 latency ms |"
  echo "|---|---|---|---|"
  echo "$summary"
  echo
  echo "Raw runs (name, TPS, avg ms, p95 ms):"
  echo
  echo '```'
  cat "$RESULTS"
  echo '```'
} >>docs/benchmarks.md
echo "appended to docs/benchmarks.md"
