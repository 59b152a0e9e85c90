#!/usr/bin/env bash
# IST rate: how many write sets per second a restarted node replays from the Raft log into its
# backend (DESIGN §12, issue 6 target >= 5000/s).
#
# A 3-node certus cluster on loopback; node 3 is stopped cleanly; N single-row autocommit
# UPDATEs (N write sets) go through node 1 from 8 parallel clients; node 3 is started again and
# its backend's certus.state.applied_seqno is polled until it reaches node 1's. The rate is the
# seqnos replayed divided by the time from the first seqno replayed to the last (the node's own
# start-up, backend start included, is reported separately). Appends a dated section to
# docs/benchmarks.md unless BENCH_NO_DOC=1.
#
# Usage: bench/ist_rate.sh [write-sets=20000]
# Env:   CERTUS_BIN (default: build the release binary), CERTUS_COMMIT, BENCH_PORT_BASE.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
N=${1:-20000}
CLIENTS=8
if [ -z "${CERTUS_BIN:-}" ]; then
  nice -n 10 cargo build --release -q -p certus
  CERTUS_BIN=$REPO/target/release/certus
  CERTUS_BUILT=1
fi
WORK=$(mktemp -d /tmp/certus-ist.XXXXXX)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
for t in mariadb mariadb-install-db python3; do
  command -v $t >/dev/null || die "missing $t (apt-get install mariadb-server mariadb-client python3)"
done
[ -x "$CERTUS_BIN" ] || die "certus binary not found at $CERTUS_BIN"
mkdir -p "$WORK/logs"
: >"$WORK/pids"
stop_all_on_exit certus

now() { python3 -c 'import time; print(f"{time.time():.3f}")'; }
applied_on() { # node -> the backend's applied seqno
  # shellcheck disable=SC2046
  mariadb $(certus_svc "$1") -N -e "SELECT applied_seqno FROM certus.state WHERE id = 1" 2>/dev/null || echo -1
}
node_pid() { awk -v m="$WORK/certus/n$1" '$2 == m { print $1 }' "$WORK/pids" | tail -1; }

log "starting a 3-node certus cluster in $WORK"
start_certus
C1=(-h127.0.0.1 -P"$(c_port 1)" -u$SB_USER -p$SB_PASS)
mariadb "${C1[@]}" -e "CREATE DATABASE ist; CREATE TABLE ist.t (id INT PRIMARY KEY, n BIGINT NOT NULL);
  INSERT INTO ist.t SELECT seq, 0 FROM ist.seq_1_to_1000"
for _ in $(seq 1 100); do [ "$(applied_on 3)" = "$(applied_on 1)" ] && break; sleep 0.2; done

log "stopping node 3"
pid3=$(node_pid 3)
kill -TERM "$pid3"
for _ in $(seq 1 600); do kill -0 "$pid3" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid3" 2>/dev/null && die "node 3 did not stop"
start_seqno=$(applied_on 1)

log "writing $N write sets through node 1 ($CLIENTS clients)"
per=$((N / CLIENTS))
for c in $(seq 1 $CLIENTS); do
  for i in $(seq 1 $per); do
    echo "UPDATE ist.t SET n = n + 1 WHERE id = $(( (c * 7919 + i) % 1000 + 1 ));"
  done >"$WORK/client$c.sql"
done
t0=$(now)
clients=()
for c in $(seq 1 $CLIENTS); do
  mariadb "${C1[@]}" <"$WORK/client$c.sql" &
  clients+=($!)
done
# Only the clients: a bare `wait` would also wait for the certus nodes.
for p in "${clients[@]}"; do wait "$p" || die "a client failed"; done
t1=$(now)
target=$(applied_on 1)
written=$((target - start_seqno))
log "node 1 at seqno $target ($written write sets in $(python3 -c "print(f'{$t1 - $t0:.1f}')") s)"

log "starting node 3 again; timing its replay"
i=3
members=()
for j in 1 2 3; do members+=(--member "$j=127.0.0.1:$(c_peer $j)"); done
opts=()
for o in "${INNODB_OPTS[@]}"; do opts+=(--backend-option "$o"); done
ts=$(now)
"$CERTUS_BIN" node --node-id $i --node-name n$i --data-dir "$WORK/certus/n$i" \
  --listen 127.0.0.1:$(c_port $i) --peer-listen 127.0.0.1:$(c_peer $i) "${members[@]}" \
  --http-listen 127.0.0.1:$(c_http $i) --cluster-secret "$CLUSTER_SECRET" "${opts[@]}" >"$WORK/logs/certus_n$i.restart.log" 2>&1 &
remember_pid $! "$WORK/certus/n$i"
base=$(applied_on 3)
while [ "$base" = -1 ]; do sleep 0.05; base=$(applied_on 3); done
first=""
last=$base
deadline=$(( $(date +%s) + 600 ))
while :; do
  a=$(applied_on 3)
  if [ "$a" != -1 ] && [ "$a" -gt "$base" ] && [ -z "$first" ]; then first=$(now); first_seqno=$a; fi
  if [ "$a" != -1 ] && [ "$a" -ge "$target" ]; then last=$(now); break; fi
  [ "$(date +%s)" -lt $deadline ] || die "node 3 did not catch up in 600 s (at $a of $target)"
  sleep 0.05
done
replayed=$((target - first_seqno))
rate=$(python3 -c "print(f'{$replayed / max($last - $first, 1e-3):.0f}')")
startup=$(python3 -c "print(f'{$first - $ts:.1f}')")
window=$(python3 -c "print(f'{$last - $first:.2f}')")
log "node 3 replayed $replayed write sets in $window s: $rate write sets/s (start-up before the first: $startup s)"
sums=""
for j in 1 2 3; do
  # shellcheck disable=SC2046
  sums+="$(mariadb $(certus_svc $j) -N -e 'CHECKSUM TABLE ist.t' | awk '{print $2}') "
done
log "checksums: $sums"
[ "$(echo "$sums" | tr ' ' '\n' | sort -u | grep -c .)" = 1 ] || die "backends differ: $sums"

if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
  {
    echo
    echo "## IST replay rate ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Command: \`bench/ist_rate.sh $N\` (certus $(certus_commit), $(mariadb --version | awk '{print $5}' | tr -d ,); 2 cores, shared; load average at end $(cut -d' ' -f1-3 /proc/loadavg))."
    echo
    echo "A 3-node cluster; node 3 stopped cleanly; $written single-row autocommit UPDATEs (one write set each) through node 1 from $CLIENTS clients; node 3 restarted and its backend's applied seqno polled every 50 ms."
    echo
    echo "| write sets replayed | replay window | rate | goal | met? | node start-up before the first replayed write set |"
    echo "|---:|---:|---:|---:|---|---:|"
    met=no; [ "$rate" -ge 5000 ] && met=yes
    echo "| $replayed | $window s | **$rate write sets/s** | >= 5000/s | $met | $startup s |"
    echo
    echo "Backends identical afterwards (CHECKSUM TABLE ist.t: $sums)."
  } >>"$REPO/docs/benchmarks.md"
fi
