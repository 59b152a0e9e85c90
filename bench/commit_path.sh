#!/usr/bin/env bash
# Where does a certus commit spend its time? One client, autocommit single-row UPDATE
# (sysbench oltp_update_index, 1 thread), against, in rotation:
#   backend   the one-node cluster's own mariadbd through its socket (binlog on, flush=2)
#   single    a one-node certus cluster (capture, local Raft fsync, apply; no network)
#   leader    the Raft leader of a 3-node cluster (adds replication to a follower's fsync)
#   follower  another node of that cluster (adds forwarding to the leader and back)
# Each step's added p50 is the price of that stage; the nodes' per-stage histograms
# (/metrics) say where inside certus it goes. One last cell runs 16 clients spread over the
# 3-node cluster to show batching (write sets per Raft entry). Appends a dated section to
# docs/benchmarks.md.
#
# Usage: bench/commit_path.sh [seconds-per-run=5] [rounds=3]
# Env:   CERTUS_BIN, CERTUS_COMMIT, BENCH_PORT_BASE, BENCH_NO_DOC=1 as for bench/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
SECS=${1:-5}
ROUNDS=${2:-3}
if [ -z "${CERTUS_BIN:-}" ]; then
  cargo build --release -q -p certus
  CERTUS_BIN=$REPO/target/release/certus
  CERTUS_BUILT=1
fi
WORK=$(mktemp -d /tmp/certus-bench.XXXXXX)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
begin_run certus

SB_COMMON=(--db-driver=mysql --mysql-user=$SB_USER --mysql-password=$SB_PASS --mysql-db=sbtest
  --tables=4 --table-size=10000 --auto_inc=off --rand-type=special --percentile=95
  --mysql-ignore-errors=1213,1205 --db-ps-mode=disable)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M')

log "starting a 3-node and a one-node certus cluster"
start_certus
start_certus_single
CERTUS_LEADER=$(sed 's/\x1b\[[0-9;]*m//g' "$WORK"/logs/certus_n[123].log | grep -o 'become leader id=[0-9]*' | tail -1 | cut -d= -f2)
[ -n "$CERTUS_LEADER" ] || die "no Raft leader found in the logs"
CERTUS_FOLLOWER=$((CERTUS_LEADER % 3 + 1))
log "leader n$CERTUS_LEADER, follower used: n$CERTUS_FOLLOWER"
prepare_target certus_leader
prepare_target certus_single

TARGETS=(certus_backend certus_single certus_leader certus_follower)
for r in $(seq 1 "$ROUNDS"); do
  for t in "${TARGETS[@]}"; do run_cell commit oltp_update_index 1 "$t" "$r"; done
done
# Batching: 16 clients spread over the 3-node cluster (write sets per Raft entry, entries/s).
run_cell batching oltp_update_index 16 certus_3 1
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
stop_all

# Per-target means: TPS, p50 (from the histogram), p95, CPU ms per commit (certus + mariadbd).
summary=$(python3 "$REPO/bench/report.py" --commit-path "$WORK")
echo "$summary"
stages=$(python3 "$REPO/bench/report.py" --stages "$WORK" "$SECS")
echo "$stages"

section() {
  echo
  echo "## Where a certus commit spends its time ($START UTC)"
  echo
  echo "Command: \`bench/commit_path.sh $SECS $ROUNDS\` (certus $(certus_commit)); one client, autocommit"
  echo "single-row UPDATE (\`oltp_update_index\`, 1 thread, \`--db-ps-mode=disable\`), $ROUNDS rounds of ${SECS} s per"
  echo "target in rotation. Load average $LOAD_START at start, $LOAD_END at end; $(nproc) cores, shared."
  echo "Leader: n$CERTUS_LEADER; follower used: n$CERTUS_FOLLOWER."
  echo
  echo "| target | TPS | p50 ms | p50 added by this stage | p95 ms | CPU ms per commit (certus + mariadbd) |"
  echo "|---|---:|---:|---:|---:|---:|"
  echo "$summary"
  echo
  echo "Per-stage latency at the node the client uses, from its \`certus_commit_stage_seconds\`"
  echo "histograms (scraped from /metrics before and after each run; p50 / mean in ms, all rounds):"
  echo "capture = waiting for XA END, XA PREPARE, @@last_gtid (pipelined with the statement for autocommit writes) + binlog match; keys = certification keys;"
  echo "propose = batching + forwarding + fsynced Raft append on a quorum;"
  echo "certify = in the state machine; apply_queue = certified to applier start; apply = on the"
  echo "backend; outcome = propose returned to the origin's outcome; commit = XA END (autocommit: the statement's reply) to outcome."
  echo
  echo "$stages"
}
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
  section >>"$REPO/docs/benchmarks.md"
  log "appended to docs/benchmarks.md"
else
  section
fi
