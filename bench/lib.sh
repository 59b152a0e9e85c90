# Shared by bench/run.sh and bench/commit_path.sh: starts and stops the systems under
# comparison (a standalone MariaDB, a 3-node MariaDB Galera cluster, 3-node and one-node certus
# clusters), all on loopback, all data under $WORK, and runs one sysbench cell. Sourced, never
# executed. It only ever signals PIDs it started itself (recorded in $WORK/pids), and re-checks
# each one's command line first.
#
# Callers set: WORK (scratch dir), CERTUS_BIN, and may override BENCH_PORT_BASE.

# Below the kernel's ephemeral range (32768-60999 here): a port in it can be taken by any
# outgoing connection, and one was ("cannot listen for peers on 127.0.0.1:34354").
PORT_BASE=${BENCH_PORT_BASE:-21300}
SA_PORT=$((PORT_BASE + 0))
g_port() { echo $((PORT_BASE + $1)); }        # Galera node i: MySQL port
g_gcomm() { echo $((PORT_BASE + 10 + $1)); }  # gcomm (group communication)
g_ist() { echo $((PORT_BASE + 20 + $1)); }    # IST receiver
g_sst() { echo $((PORT_BASE + 30 + $1)); }    # rsync SST receiver
c_port() { echo $((PORT_BASE + 40 + $1)); }   # certus node i: client port
c_peer() { echo $((PORT_BASE + 50 + $1)); }   # certus node i: peer (Raft) port
c_http() { echo $((PORT_BASE + 60 + $1)); }   # certus node i: HTTP (clustercheck, /metrics)

SB_USER=sb
SB_PASS=sbpass
CLUSTER_SECRET=bench-secret-0123456789abcdef

# The same InnoDB sizing for every system. certus writes its own my.cnf (with
# innodb_flush_log_at_trx_commit=2 and sync_binlog=0, durability coming from its fsynced Raft
# log); these lines are appended to it with --backend-option and win over its defaults.
INNODB_OPTS=(
  innodb_buffer_pool_size=512M
  innodb_log_file_size=256M
  innodb_flush_method=O_DIRECT
  innodb_autoinc_lock_mode=2
  performance_schema=OFF
  max_connections=1000
  max_prepared_stmt_count=100000
  # A private tmpdir: with the shared /tmp, mariadb-install-db failed here now and then
  # ("Error on delete of '/tmp/#sql-temptable-...'"): something else on the box removes
  # such files.
  tmpdir="$WORK/tmp"
)

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

make_tmpdir() { mkdir -p "$WORK/tmp" && chmod 1777 "$WORK/tmp"; }

check_tools() {
  local missing=()
  command -v sysbench >/dev/null || missing+=(sysbench)
  command -v rsync >/dev/null || missing+=(rsync)
  [ -e /usr/lib/galera/libgalera_smm.so ] || missing+=(galera-4)
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb-install-db >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    die "missing: ${missing[*]}. Install with: apt-get install sysbench galera-4 rsync mariadb-server python3"
  fi
  [ -x "$CERTUS_BIN" ] || die "certus binary not found at $CERTUS_BIN"
}

MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

# The commit the measured certus was built from: the repo's HEAD (plus "-dirty" when src/
# has uncommitted changes) when this script built it; CERTUS_COMMIT when CERTUS_BIN is given.
certus_commit() {
  if [ -n "${CERTUS_COMMIT:-}" ]; then
    echo "$CERTUS_COMMIT"
  elif [ "${CERTUS_BUILT:-0}" = 1 ]; then
    local c
    c=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- src Cargo.toml Cargo.lock || c+="-dirty"
    echo "$c"
  else
    echo "unknown (CERTUS_BIN=$CERTUS_BIN; set CERTUS_COMMIT)"
  fi
}

# ---- process bookkeeping ------------------------------------------------------------------

# Records a PID we started, with a marker its command line must contain when we signal it.
remember_pid() { echo "$1 $2" >>"$WORK/pids"; }

pid_is_ours() { # pid marker
  [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "$2"
}

# SIGTERM every recorded PID (newest first), wait up to 60 s for all, then SIGKILL stragglers.
# certus stops its own mariadbd on SIGTERM; a mariadbd left behind by a killed certus node is
# found through its pid file and killed only if its command line points into $WORK.
stop_all() {
  [ -f "$WORK/pids" ] || return 0
  local pid marker
  tac "$WORK/pids" | while read -r pid marker; do
    pid_is_ours "$pid" "$marker" && kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 120); do
    local alive=0
    while read -r pid marker; do pid_is_ours "$pid" "$marker" && alive=1; done <"$WORK/pids"
    [ $alive = 0 ] && break
    sleep 0.5
  done
  while read -r pid marker; do
    if pid_is_ours "$pid" "$marker"; then
      log "PID $pid did not stop after SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done <"$WORK/pids"
  local pf
  for pf in "$WORK"/certus/n*/mariadb/*.pid; do
    [ -f "$pf" ] || continue
    pid=$(cat "$pf" 2>/dev/null || true)
    if [ -n "$pid" ] && pid_is_ours "$pid" "$WORK/certus"; then
      log "orphaned certus backend $pid; SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  : >"$WORK/pids"
}

# Waits (bounded) until the query $SQL_PROBE prints the expected value; gives up at once if
# the process $WAIT_PID (when set) has exited.
# On exit: stops every process this run started; on success removes the named data dirs under
# $WORK (unless BENCH_KEEP=1); on failure keeps everything and says where.
# Readies $WORK for a run (its bookkeeping files) after checking the tools; on exit every
# system named (data-dir names, as for stop_all_on_exit) is stopped.
begin_run() { # data-dir names...
  check_tools
  mkdir -p "$WORK/raw" "$WORK/logs"
  : >"$WORK/pids"
  : >"$WORK/manifest.tsv"
  stop_all_on_exit "$@"
}

stop_all_on_exit() { # data-dir names...
  BENCH_DATA_DIRS=("$@")
  trap _bench_exit EXIT
  trap 'exit 130' INT TERM
}
_bench_exit() {
  local rc=$? d
  trap - EXIT INT TERM
  stop_all
  if [ $rc = 0 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
    for d in "${BENCH_DATA_DIRS[@]}"; do rm -rf "${WORK:?}/$d"; done
  fi
  [ $rc = 0 ] || echo "bench: failed; raw output and logs are in $WORK" >&2
  exit $rc
}

wait_sql() { # seconds expected description mariadb-args...
  local secs=$1 want=$2 what=$3; shift 3
  local got=""
  for _ in $(seq 1 $((secs * 2))); do
    got=$(mariadb "$@" -N -B -e "$SQL_PROBE" 2>/dev/null | tail -1 || true)
    [ "$got" = "$want" ] && return 0
    if [ -n "${WAIT_PID:-}" ] && ! kill -0 "$WAIT_PID" 2>/dev/null; then
      die "$what: process $WAIT_PID exited"
    fi
    sleep 0.5
  done
  die "$what: waited ${secs}s, last answer '${got}' (wanted '${want}')"
}

# ---- standalone and Galera (plain mariadbd) ---------------------------------------------------

# As root, mariadbd must run as some user; it is mysql (not root) because the rsync SST
# daemon, started as root without a uid setting, drops to nobody and could not write a
# root-owned datadir. The directories are handed to mysql accordingly.
mysqld_user() { [ "$(id -u)" = 0 ] && echo mysql || id -un; }
own_dir() { # dir
  if [ "$(id -u)" = 0 ]; then
    chmod 755 "$WORK"
    chown -R mysql:mysql "$1"
  fi
}

write_mysqld_cnf() { # dir port
  local dir=$1 port=$2 o
  make_tmpdir
  mkdir -p "$dir/data"
  {
    echo "[mysqld]"
    echo "datadir=$dir/data"
    echo "socket=$dir/mysqld.sock"
    echo "port=$port"
    echo "pid-file=$dir/mysqld.pid"
    echo "log-error=$dir/error.log"
    echo "bind-address=127.0.0.1"
    echo "skip-name-resolve"
    echo "user=$(mysqld_user)"
    echo "default_storage_engine=InnoDB"
    echo "binlog_format=ROW"
    echo "skip-log-bin"
    echo "innodb_flush_log_at_trx_commit=1"
    for o in "${INNODB_OPTS[@]}"; do echo "$o"; done
  } >"$dir/my.cnf"
  own_dir "$dir"
}

install_db() { # dir
  mariadb-install-db --defaults-file="$1/my.cnf" --user="$(mysqld_user)" --auth-root-authentication-method=socket \
    >"$1/install.log" 2>&1 || { cat "$1/install.log" >&2; die "mariadb-install-db failed in $1"; }
}

start_mysqld() { # dir [extra args]
  local dir=$1; shift
  "$MARIADBD" --defaults-file="$dir/my.cnf" "$@" >>"$dir/stdout.log" 2>&1 &
  LAST_PID=$!
  remember_pid $LAST_PID "$dir/my.cnf"
}

start_standalone() {
  local dir=$WORK/standalone
  write_mysqld_cnf "$dir" "$SA_PORT"
  install_db "$dir"
  start_mysqld "$dir"
  SQL_PROBE="SELECT 1" WAIT_PID=$LAST_PID wait_sql 60 1 "standalone did not start (see $dir/error.log)" -S "$dir/mysqld.sock" -uroot
  mariadb -S "$dir/mysqld.sock" -uroot -e "CREATE USER '$SB_USER'@'%' IDENTIFIED BY '$SB_PASS';
    GRANT ALL ON *.* TO '$SB_USER'@'%'; CREATE DATABASE sbtest;"
}

start_galera() {
  local i dir members=""
  for i in 1 2 3; do members+="${members:+,}127.0.0.1:$(g_gcomm $i)"; done
  for i in 1 2 3; do
    dir=$WORK/galera/n$i
    write_mysqld_cnf "$dir" "$(g_port $i)"
    cat >>"$dir/my.cnf" <<EOF
wsrep_on=ON
wsrep_provider=/usr/lib/galera/libgalera_smm.so
wsrep_cluster_name=bench_g3
wsrep_cluster_address=gcomm://$members
wsrep_node_name=n$i
wsrep_node_address=127.0.0.1:$(g_gcomm $i)
wsrep_node_incoming_address=127.0.0.1:$(g_port $i)
wsrep_provider_options="base_port=$(g_gcomm $i);gmcast.listen_addr=tcp://127.0.0.1:$(g_gcomm $i);ist.recv_addr=127.0.0.1:$(g_ist $i);gcache.size=256M"
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:$(g_sst $i)
wsrep_slave_threads=2
EOF
  done
  # n1 bootstraps from an installed datadir; n2 and n3 start empty and receive an rsync SST.
  install_db "$WORK/galera/n1"
  start_mysqld "$WORK/galera/n1" --wsrep-new-cluster
  SQL_PROBE="SHOW STATUS LIKE 'wsrep_local_state_comment'" WAIT_PID=$LAST_PID \
    wait_sql 90 $'wsrep_local_state_comment\tSynced' "galera n1 did not bootstrap" -S "$WORK/galera/n1/mysqld.sock" -uroot
  for i in 2 3; do
    start_mysqld "$WORK/galera/n$i"
    SQL_PROBE="SHOW STATUS LIKE 'wsrep_local_state_comment'" WAIT_PID=$LAST_PID \
      wait_sql 180 $'wsrep_local_state_comment\tSynced' "galera n$i did not join (see $WORK/galera/n$i/error.log)" \
      -S "$WORK/galera/n$i/mysqld.sock" -uroot
  done
  SQL_PROBE="SHOW STATUS LIKE 'wsrep_cluster_size'" \
    wait_sql 30 $'wsrep_cluster_size\t3' "galera cluster size" -S "$WORK/galera/n1/mysqld.sock" -uroot
  # Replicated to n2 and n3 (DDL under TOI).
  mariadb -S "$WORK/galera/n1/mysqld.sock" -uroot -e "CREATE USER '$SB_USER'@'%' IDENTIFIED BY '$SB_PASS';
    GRANT ALL ON *.* TO '$SB_USER'@'%'; CREATE DATABASE sbtest;"
}

# innodb_flush_log_at_trx_commit is dynamic: one Galera cluster serves both durability modes.
GALERA_FLUSH=1
set_galera_flush() { # 1|2
  [ "$GALERA_FLUSH" = "$1" ] && return 0
  local i
  for i in 1 2 3; do
    mariadb -S "$WORK/galera/n$i/mysqld.sock" -uroot -e "SET GLOBAL innodb_flush_log_at_trx_commit=$1"
  done
  GALERA_FLUSH=$1
}
STANDALONE_FLUSH=1
set_standalone_flush() { # 1|2
  [ "$STANDALONE_FLUSH" = "$1" ] && return 0
  mariadb -S "$WORK/standalone/mysqld.sock" -uroot -e "SET GLOBAL innodb_flush_log_at_trx_commit=$1"
  STANDALONE_FLUSH=$1
}

# ---- certus -------------------------------------------------------------------------------------

wait_serving() { # pid log what: until the node logs "node is serving" (120 s), or dies
  local _
  for _ in $(seq 1 240); do
    grep -qs "node is serving" "$2" && return 0
    kill -0 "$1" 2>/dev/null || break
    sleep 0.5
  done
  grep -qs "node is serving" "$2" ||
    { tail -20 "$2" >&2; die "$3 did not start (exited, or not serving after 120 s)"; }
}

certus_svc() { # node -> mariadb args for the node's backend, as its service account
  local d=$WORK/certus/n$1
  echo "-S $d/mariadb/mysqld.sock -u$(sed -n 's/^user=//p' "$d/service.cnf") -p$(sed -n 's/^password=//p' "$d/service.cnf")"
}

start_certus() {
  local i o members=() opts=()
  for i in 1 2 3; do members+=(--member "$i=127.0.0.1:$(c_peer $i)"); done
  for o in "${INNODB_OPTS[@]}"; do opts+=(--backend-option "$o"); done
  mkdir -p "$WORK/certus"
  make_tmpdir
  # One node at a time: each one's mariadb-install-db runs alone. Three concurrent installs
  # failed twice here ("Unknown table 'mysql.tmp_user_sys'"). A node logs "node is serving"
  # before the cluster has a quorum, so this does not wait on the other nodes.
  local pid
  for i in 1 2 3; do
    "$CERTUS_BIN" node --node-id $i --node-name n$i --data-dir "$WORK/certus/n$i" \
      --listen 127.0.0.1:$(c_port $i) --peer-listen 127.0.0.1:$(c_peer $i) "${members[@]}" \
      --http-listen 127.0.0.1:$(c_http $i) \
      --cluster-secret "$CLUSTER_SECRET" "${opts[@]}" >"$WORK/logs/certus_n$i.log" 2>&1 &
    pid=$!
    remember_pid $pid "$WORK/certus/n$i"
    wait_serving $pid "$WORK/logs/certus_n$i.log" "certus n$i"
  done
  # The node authenticates clients against its backend's own accounts, so the sysbench account
  # is created on every backend directly, as the service account.
  for i in 1 2 3; do
    # shellcheck disable=SC2046
    mariadb $(certus_svc $i) -e "CREATE USER IF NOT EXISTS '$SB_USER'@'%' IDENTIFIED BY '$SB_PASS';
      GRANT ALL ON *.* TO '$SB_USER'@'%';"
  done
  # Until the cluster is Primary the node answers 1047; the first replicated DDL is the probe.
  local ok=0
  for _ in $(seq 1 120); do
    if mariadb -h127.0.0.1 -P"$(c_port 1)" -u$SB_USER -p$SB_PASS -e "CREATE DATABASE IF NOT EXISTS sbtest" 2>"$WORK/certus/create_db.err"; then
      ok=1; break
    fi
    sleep 0.5
  done
  [ $ok = 1 ] || { cat "$WORK/certus/create_db.err" >&2; die "certus never accepted CREATE DATABASE in 60 s"; }
  for i in 1 2 3; do
    SQL_PROBE="SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name='sbtest'" \
      wait_sql 30 1 "sbtest not replicated to certus n$i" $(certus_svc $i)
  done
}

# A one-node certus cluster (node id 4, its own ports), for bench/commit_path.sh.
start_certus_single() {
  local o opts=()
  make_tmpdir
  for o in "${INNODB_OPTS[@]}"; do opts+=(--backend-option "$o"); done
  "$CERTUS_BIN" node --node-id 4 --node-name single --data-dir "$WORK/certus/n4" \
    --listen 127.0.0.1:$(c_port 4) --peer-listen 127.0.0.1:$(c_peer 4) --http-listen 127.0.0.1:$(c_http 4) "${opts[@]}" \
    >"$WORK/logs/certus_single.log" 2>&1 &
  local pid=$!
  remember_pid $pid "$WORK/certus/n4"
  wait_serving $pid "$WORK/logs/certus_single.log" "one-node certus"
  # shellcheck disable=SC2046
  mariadb $(certus_svc 4) -e "CREATE USER IF NOT EXISTS '$SB_USER'@'%' IDENTIFIED BY '$SB_PASS';
    GRANT ALL ON *.* TO '$SB_USER'@'%';"
  local ok=0
  for _ in $(seq 1 120); do
    mariadb -h127.0.0.1 -P"$(c_port 4)" -u$SB_USER -p$SB_PASS -e "CREATE DATABASE IF NOT EXISTS sbtest" 2>/dev/null && { ok=1; break; }
    sleep 0.5
  done
  [ $ok = 1 ] || die "one-node certus never accepted CREATE DATABASE in 60 s"
}

# ---- sysbench -----------------------------------------------------------------------------------

# Connection arguments of a target. Several ports: sysbench hands its connections to them
# round-robin (drv_mysql.c), so 16 threads are spread 6/5/5 and 1 thread uses the first port.
conn_args() { # target
  case $1 in
    standalone | standalone_f2) echo "--mysql-host=127.0.0.1 --mysql-port=$SA_PORT" ;;
    certus_n1) echo "--mysql-host=127.0.0.1 --mysql-port=$(c_port 1)" ;;
    certus_3) echo "--mysql-host=127.0.0.1 --mysql-port=$(c_port 1),$(c_port 2),$(c_port 3)" ;;
    galera_f1_n1 | galera_f2_n1) echo "--mysql-host=127.0.0.1 --mysql-port=$(g_port 1)" ;;
    galera_f1_3 | galera_f2_3) echo "--mysql-host=127.0.0.1 --mysql-port=$(g_port 1),$(g_port 2),$(g_port 3)" ;;
    # bench/commit_path.sh: the Raft leader, a follower, a one-node cluster (node 4), and that
    # node's backend directly through its socket.
    certus_leader) echo "--mysql-host=127.0.0.1 --mysql-port=$(c_port "$CERTUS_LEADER")" ;;
    certus_follower) echo "--mysql-host=127.0.0.1 --mysql-port=$(c_port "$CERTUS_FOLLOWER")" ;;
    certus_single) echo "--mysql-host=127.0.0.1 --mysql-port=$(c_port 4)" ;;
    certus_backend) echo "--mysql-socket=$WORK/certus/n4/mariadb/mysqld.sock" ;;
    *) die "unknown target $1" ;;
  esac
}

prepare_target() { # target
  local f=$WORK/raw/prepare_$1.txt
  # shellcheck disable=SC2046
  sysbench oltp_common "${SB_COMMON[@]}" $(conn_args "$1") prepare >"$f" 2>&1 ||
    { tail -20 "$f" >&2; die "sysbench prepare failed on $1"; }
}

galera_questions() {
  local i out=""
  for i in 1 2 3; do
    out+="${out:+/}$(mariadb -S "$WORK/galera/n$i/mysqld.sock" -uroot -N -B -e "SHOW GLOBAL STATUS LIKE 'Questions'" | cut -f2)"
  done
  echo "$out"
}

# Total sbtest rows on every node of a target, e.g. "40000/40000/40000": must stay 40000 each.
# Retried: right after a prepare a Galera node may still be applying its DDL (TOI) and abort
# the read with 1213.
count_rows() { # mariadb-args...
  local q="SELECT (SELECT COUNT(*) FROM sbtest.sbtest1)+(SELECT COUNT(*) FROM sbtest.sbtest2)+(SELECT COUNT(*) FROM sbtest.sbtest3)+(SELECT COUNT(*) FROM sbtest.sbtest4)"
  local n
  for _ in $(seq 1 20); do
    n=$(mariadb "$@" -N -B -e "$q" 2>/dev/null) && { echo "$n"; return 0; }
    sleep 0.5
  done
  echo "error"
}
row_counts() { # standalone|galera|certus
  local i out=""
  case $1 in
    standalone) count_rows -S "$WORK/standalone/mysqld.sock" -uroot ;;
    galera) for i in 1 2 3; do out+="${out:+/}$(count_rows -S "$WORK/galera/n$i/mysqld.sock" -uroot)"; done; echo "$out" ;;
    # shellcheck disable=SC2046
    certus) for i in 1 2 3; do out+="${out:+/}$(count_rows $(certus_svc $i))"; done; echo "$out" ;;
  esac
}

# CPU time (user+system, in clock ticks) used so far by a target's server processes, as
# "proxy/server": certus processes / their mariadbd backends; 0 / mariadbd for the others.
# The per-transaction difference shows where a system spends the 2 shared cores.
cpu_ticks() { # pids...
  local pid total=0
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}')))
  done
  echo $total
}
pid_of_cnf() { # pid file
  cat "$1" 2>/dev/null || true
}
system_cpu() { # target
  local i certus=() backends=()
  case $1 in
    standalone*) echo "0/$(cpu_ticks "$(pid_of_cnf "$WORK/standalone/mysqld.pid")")" ;;
    galera*)
      for i in 1 2 3; do backends+=("$(pid_of_cnf "$WORK/galera/n$i/mysqld.pid")"); done
      echo "0/$(cpu_ticks "${backends[@]}")" ;;
    certus_single | certus_backend)
      echo "$(cpu_ticks "$(awk -v m="$WORK/certus/n4" '$2 == m {print $1}' "$WORK/pids")")/$(cpu_ticks "$(pid_of_cnf "$WORK/certus/n4/mariadb/mysqld.pid")")" ;;
    certus*)
      for i in 1 2 3; do
        certus+=("$(awk -v m="$WORK/certus/n$i" '$2 == m {print $1}' "$WORK/pids")")
        backends+=("$(pid_of_cnf "$WORK/certus/n$i/mariadb/mysqld.pid")")
      done
      echo "$(cpu_ticks "${certus[@]}")/$(cpu_ticks "${backends[@]}")" ;;
  esac
}

# The certus nodes a target's clients talk to (whose per-stage latency histograms count).
origin_nodes() { # target
  case $1 in
    certus_n1) echo 1 ;;
    certus_3) echo 1 2 3 ;;
    certus_leader) echo "$CERTUS_LEADER" ;;
    certus_follower) echo "$CERTUS_FOLLOWER" ;;
    certus_single) echo 4 ;;
    *) ;;
  esac
}

# Concatenates the /metrics of a target's origin nodes into a file (nothing for other systems).
scrape_metrics() { # target file
  local i
  : >"$2"
  for i in $(origin_nodes "$1"); do
    curl -s --max-time 2 "http://127.0.0.1:$(c_http "$i")/metrics" >>"$2" || true
  done
}

# One measurement. Appends a line to $WORK/manifest.tsv; the raw output keeps the command line
# on its first line. A failed cell is recorded, not fatal: the report marks it.
run_cell() { # section workload threads target round [extra sysbench args...]
  local section=$1 workload=$2 threads=$3 target=$4 round=$5; shift 5
  local extra=("$@") tag=""
  [ ${#extra[@]} -gt 0 ] && tag="_$(echo "${extra[*]}" | tr -d -- '-=' | tr ' ' '_')"
  local f="$WORK/raw/${section}_$(basename "$workload" .lua)${tag}_t${threads}_${target}_r${round}.txt"
  case $target in
    galera_f1_*) set_galera_flush 1 ;;
    galera_f2_*) set_galera_flush 2 ;;
    standalone) set_standalone_flush 1 ;;
    standalone_f2) set_standalone_flush 2 ;;
  esac
  local q0="" q1="" load c0 c1
  [[ $target == galera_* ]] && q0=$(galera_questions)
  scrape_metrics "$target" "${f%.txt}.before.prom"
  c0=$(system_cpu "$target")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local cmd=(sysbench "$workload" "${SB_COMMON[@]}" $(conn_args "$target") "${extra[@]}"
    --threads="$threads" --time="$SECS" --report-interval=0 --histogram=on run)
  echo "# ${cmd[*]}" >"$f"
  local rc=0
  timeout -k 5 $((SECS + 60)) "${cmd[@]}" >>"$f" 2>&1 || rc=$?
  echo "# exit=$rc" >>"$f"
  c1=$(system_cpu "$target")
  scrape_metrics "$target" "${f%.txt}.after.prom"
  if [[ $target == galera_* ]]; then
    q1=$(galera_questions)
    q0=$(paste -d' ' <(echo "$q0" | tr / '\n') <(echo "$q1" | tr / '\n') | awk '{printf "%s%d", (NR > 1 ? "/" : ""), $2 - $1}')
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$section" "$(basename "$workload" .lua)" "$threads" "$target" \
    "$round" "${extra[*]:-}" "$load" "${q0:--}" "$f" \
    "$(paste -d' ' <(echo "$c0" | tr / '\n') <(echo "$c1" | tr / '\n') | awk '{printf "%s%d", (NR > 1 ? "/" : ""), $2 - $1}')" \
    >>"$WORK/manifest.tsv"
  [ $rc = 0 ] || log "cell failed (exit $rc): $f"
  log "$section $(basename "$workload" .lua) ${extra[*]:-} t$threads $target r$round: $(grep -m1 'transactions:' "$f" | awk '{print $3}' | tr -d '(') tps"
}
