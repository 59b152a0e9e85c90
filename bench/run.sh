#!/usr/bin/env bash
# certus vs a standalone MariaDB vs MariaDB Galera (galera-4), side by side, in one run on one
# machine. Starts all three systems on loopback (data under a scratch dir), prepares the same
# sysbench tables on each, then measures:
#   1. oltp_point_select / read_write / write_only / update_index at 1 and 16 threads, through
#      one node and spread over three, Galera with innodb_flush_log_at_trx_commit=1 and =2;
#   2. 1-client commit latency (autocommit single-row UPDATE: p50, p95);
#   3. scaling: 1/4/16/64 threads x transactions of 1/10/100 rows (bench/lua/txn_rows.lua).
# Within every cell the systems run one after another, round after round (A/B/C/A/B/C), so
# that machine noise lands on all of them. Appends a dated section to docs/benchmarks.md.
#
# Usage: bench/run.sh [quick|full|smoke]   quick: about 12 minutes; full: about 2 hours;
#        smoke: a few minutes, only checks that the harness works.
# Env:   CERTUS_BIN (default: cargo build --release, target/release/certus),
#        BENCH_PORT_BASE (default 21300; uses BASE..BASE+54),
#        CERTUS_COMMIT (the commit CERTUS_BIN was built from, for the report), BENCH_KEEP=1 keeps the data dirs,
#        BENCH_NO_DOC=1 skips docs/benchmarks.md (the section is still printed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODE=${1:-quick}

case $MODE in
  quick)
    MAIN_SECS=5 MAIN_ROUNDS=2
    LAT_SECS=5 LAT_ROUNDS=3
    SCALE_SECS=4 SCALE_ROUNDS=1
    SCALE_TARGETS=(standalone certus_3 galera_f1_3)
    ;;
  smoke) # checks the harness end to end in a few minutes; its figures mean nothing
    MAIN_SECS=2 MAIN_ROUNDS=1
    LAT_SECS=2 LAT_ROUNDS=1
    SCALE_SECS=2 SCALE_ROUNDS=1
    SCALE_TARGETS=(standalone certus_3 galera_f1_3)
    ;;
  full)
    MAIN_SECS=30 MAIN_ROUNDS=3
    LAT_SECS=20 LAT_ROUNDS=3
    SCALE_SECS=20 SCALE_ROUNDS=2
    SCALE_TARGETS=(standalone certus_n1 certus_3 galera_f1_3 galera_f2_3)
    ;;
  *) echo "usage: bench/run.sh [quick|full|smoke]" >&2; exit 2 ;;
esac
WORKLOADS=(oltp_point_select oltp_read_write oltp_write_only oltp_update_index)
MAIN_T1=(standalone certus_n1 galera_f1_n1 galera_f2_n1)
# With one thread a port list uses only its first port, so "spread" cells exist only at 16.
MAIN_T16=(standalone certus_n1 certus_3 galera_f1_n1 galera_f1_3 galera_f2_n1 galera_f2_3)
LAT_TARGETS=(standalone standalone_f2 certus_n1 galera_f1_n1 galera_f2_n1)
SCALE_THREADS=(1 4 16 64)
SCALE_ROWS=(1 10 100)

if [ -z "${CERTUS_BIN:-}" ]; then
  cargo build --release -q -p certus
  CERTUS_BIN=$REPO/target/release/certus
  CERTUS_BUILT=1
fi
WORK=$(mktemp -d /tmp/certus-bench.XXXXXX)
# shellcheck source=bench/lib.sh
source "$REPO/bench/lib.sh"
# The data dirs are large; after a failure they stay, with every log, for diagnosis.
begin_run standalone galera certus

# --db-ps-mode=disable (sysbench then sends text queries) for every system, as every report so
# far was measured; BENCH_PS_MODE=auto measures the binary protocol instead (prepared BEGIN and
# COMMIT included, which certus runs like text since replication::
# prepared_transaction_control_works_like_text).
SB_COMMON=(--db-driver=mysql --mysql-user=$SB_USER --mysql-password=$SB_PASS --mysql-db=sbtest
  --tables=4 --table-size=10000 --auto_inc=off --rand-type=special --percentile=95
  --mysql-ignore-errors=1213,1205 --db-ps-mode="${BENCH_PS_MODE:-disable}")

dd_sync_ms() { # ms per 4 KiB O_DSYNC write in $WORK: the disk's fsync cost right now
  local s e
  s=$(date +%s%N)
  dd if=/dev/zero of="$WORK/dd.test" bs=4k count=200 oflag=dsync 2>/dev/null
  e=$(date +%s%N)
  rm -f "$WORK/dd.test"
  awk -v n=$((e - s)) 'BEGIN { printf "%.2f", n / 200 / 1e6 }'
}

{
  echo "mode=$MODE"
  echo "ps_mode=${BENCH_PS_MODE:-disable}"
  echo "start=$(date -u '+%Y-%m-%d %H:%M') UTC"
  echo "load_start=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "dd_start=$(dd_sync_ms)"
  echo "nproc=$(nproc)"
  echo "commit=$(certus_commit)"
  echo "mariadbd=$("$MARIADBD" --version | sed 's/^.*Ver //')"
  echo "galera=$(dpkg-query -W -f='${Version}' galera-4 2>/dev/null || echo unknown)"
  echo "sysbench=$(sysbench --version | awk '{print $2}')"
  echo "secs=main ${MAIN_SECS}s x ${MAIN_ROUNDS} rounds, latency ${LAT_SECS}s x ${LAT_ROUNDS}, scaling ${SCALE_SECS}s x ${SCALE_ROUNDS}"
  echo "sb_common=${SB_COMMON[*]}"
} >"$WORK/meta.txt"

log "work dir $WORK; starting standalone MariaDB"
start_standalone
log "starting 3-node Galera (n1 bootstrap, n2/n3 rsync SST)"
start_galera
log "starting 3-node certus"
start_certus
cp "$WORK/standalone/my.cnf" "$WORK/raw/standalone.my.cnf"
cp "$WORK/galera/n1/my.cnf" "$WORK/raw/galera_n1.my.cnf"
cp "$WORK/certus/n1/mariadb/my.cnf" "$WORK/raw/certus_n1_backend.my.cnf" 2>/dev/null || true
echo "certus_cmd=$(tr '\0' ' ' <"/proc/$(awk '/certus\/n1/ {print $1; exit}' "$WORK/pids")/cmdline" | sed "s/$CLUSTER_SECRET/<secret>/")" >>"$WORK/meta.txt"

log "sysbench prepare (4 x 10000 rows) on each system"
prepare_target standalone
prepare_target galera_f1_n1
prepare_target certus_n1
for sys in standalone galera certus; do echo "rows_before_$sys=$(row_counts $sys)" >>"$WORK/meta.txt"; done

SECS=$MAIN_SECS
for w in "${WORKLOADS[@]}"; do
  for t in 1 16; do
    if [ $t = 1 ]; then targets=("${MAIN_T1[@]}"); else targets=("${MAIN_T16[@]}"); fi
    for r in $(seq 1 "$MAIN_ROUNDS"); do
      for sys in "${targets[@]}"; do run_cell main "$w" "$t" "$sys" "$r"; done
    done
  done
done

SECS=$LAT_SECS
for r in $(seq 1 "$LAT_ROUNDS"); do
  for sys in "${LAT_TARGETS[@]}"; do run_cell latency oltp_update_index 1 "$sys" "$r"; done
done

SECS=$SCALE_SECS
for rows in "${SCALE_ROWS[@]}"; do
  for t in "${SCALE_THREADS[@]}"; do
    for r in $(seq 1 "$SCALE_ROUNDS"); do
      for sys in "${SCALE_TARGETS[@]}"; do run_cell scale "$REPO/bench/lua/txn_rows.lua" "$t" "$sys" "$r" --rows="$rows"; done
    done
  done
done

for sys in standalone galera certus; do echo "rows_after_$sys=$(row_counts $sys)" >>"$WORK/meta.txt"; done
{
  echo "end=$(date -u '+%Y-%m-%d %H:%M') UTC"
  echo "load_end=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "dd_end=$(dd_sync_ms)"
} >>"$WORK/meta.txt"
stop_all

python3 "$REPO/bench/report.py" "$WORK" >"$WORK/section.md"
cat "$WORK/section.md"
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
  cat "$WORK/section.md" >>"$REPO/docs/benchmarks.md"
  log "appended to docs/benchmarks.md; raw output in $WORK/raw"
fi
