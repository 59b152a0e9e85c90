#!/usr/bin/env bash
# Galera and certus side by side: the same Jepsen workloads, seed, length and process faults
# against a 3-node MariaDB Galera cluster (Debian's galera-4, started by bench/lib.sh's
# start_galera on loopback ports) and against a 3-node certus cluster (started by the runner).
#
#   jepsen/compare.sh                       # defaults below; about 2 x (TIME + 1 min)
#   SEED=7 TIME=300 jepsen/compare.sh
#
# Settings (environment): SEED (20261121), TIME (180 s of workload), WORKLOADS (all five),
# NEMESIS (kill,pause: the faults both systems can take: kill -9 of the certus process or of
# Galera's mariadbd, and SIGSTOP/SIGCONT of the same), CLIENTS (clients per workload per node,
# 1), WORK (scratch dir, a new one under /tmp), CERTUS_BIN (built here when unset),
# BENCH_PORT_BASE (24100; Galera uses BASE+1.. BASE+33).
#
# Writes $WORK/out-galera and $WORK/out-certus (results.md, results.json, run.json, EDN) and
# prints both summaries. Exit status: 0 when both runs completed (whatever their verdicts:
# Galera is expected to show anomalies), 3 when either could not be carried out.
set -euo pipefail
cd "$(dirname "$0")/.."

SEED=${SEED:-20261121}
TIME=${TIME:-180}
WORKLOADS=${WORKLOADS:-bank,list-append,counter,oslo-counter,set}
NEMESIS=${NEMESIS:-kill,pause}
CLIENTS=${CLIENTS:-1}
export BENCH_PORT_BASE=${BENCH_PORT_BASE:-24100}
WORK=${WORK:-$(mktemp -d /tmp/certus-jepsen-compare.XXXXXX)}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)

if [ -z "${CERTUS_BIN:-}" ]; then
  nice -n 10 cargo build --release -q -p certus -p certus-jepsen
  CERTUS_BIN=$PWD/target/release/certus
else
  nice -n 10 cargo build --release -q -p certus-jepsen
fi
JEPSEN_BIN=$PWD/target/release/certus-jepsen

# shellcheck source=../bench/lib.sh
source bench/lib.sh
# The runner's certus backends run with a 64 MB buffer pool and 16 MB redo logs; Galera gets
# the same sizing (lib.sh's defaults are for the benchmarks).
INNODB_OPTS=(
  innodb_buffer_pool_size=64M
  innodb_log_file_size=16M
  innodb_autoinc_lock_mode=2
  performance_schema=OFF
  max_connections=1000
  tmpdir="$WORK/tmp"
)
[ -e /usr/lib/galera/libgalera_smm.so ] || die "galera-4 is not installed (apt-get install galera-4 rsync)"
command -v rsync >/dev/null || die "rsync is missing (the Galera joiners take an rsync SST)"
# On success the data dirs go; the results ($WORK/out-*) stay.
stop_all_on_exit galera certus-cluster

common=(--seed "$SEED" --time-limit "$TIME" --workloads "$WORKLOADS" --nemesis "$NEMESIS"
  --clients-per-node "$CLIENTS")

log "Galera: starting 3 nodes under $WORK/galera"
start_galera
endpoints="127.0.0.1:$(g_port 1),127.0.0.1:$(g_port 2),127.0.0.1:$(g_port 3)"
galera_rc=0
log "Galera: certus-jepsen run ${common[*]}"
log "(bash reports each mariadbd the nemesis kills -9 as 'Killed': that is the fault, not an error)"
nice -n 10 "$JEPSEN_BIN" run --endpoints "$endpoints" --galera-dir "$WORK/galera" \
  --user "$SB_USER" --password "$SB_PASS" --out "$WORK/out-galera" "${common[@]}" \
  | tee "$WORK/logs/galera-run.txt" || galera_rc=$?
stop_all

certus_rc=0
log "certus: certus-jepsen run ${common[*]}"
nice -n 10 "$JEPSEN_BIN" run --certus-bin "$CERTUS_BIN" --dir "$WORK/certus-cluster" \
  --out "$WORK/out-certus" "${common[@]}" | tee "$WORK/logs/certus-run.txt" || certus_rc=$?

echo
echo "== $(date -u +%Y-%m-%dT%H:%MZ) seed $SEED, $TIME s, workloads $WORKLOADS, nemesis $NEMESIS"
for system in galera certus; do
  echo "-- $system (exit $([ $system = galera ] && echo $galera_rc || echo $certus_rc)):"
  sed -n '/^| workload/,/^$/p' "$WORK/out-$system/results.md" 2>/dev/null || echo "(no results)"
done
echo "Results: $WORK/out-galera/results.md and $WORK/out-certus/results.md"
# 0 valid, 1 anomalies found: both are verdicts. Anything else means a run did not happen.
for rc in $galera_rc $certus_rc; do
  [ "$rc" -le 1 ] || exit 3
done
