#!/usr/bin/env bash
# Side-by-side comparison of certus builds or settings: each variant gets a fresh 3-node
# cluster per round, the variants alternate (A, B, A, B, ...) so that the machine's noise
# spreads over all of them, and every variant runs the same sysbench cells. Appends a dated
# section to docs/benchmarks.md with mean TPS, p50 and ignored-error rates, and each variant's
# TPS as a ratio of the first variant's.
#
# Usage: bench/ab.sh [-r rounds=3] [-s seconds=8] [-t title] LABEL=BIN[,VAR=VALUE...] ...
#   e.g. bench/ab.sh -t "Runtime threads" two=target/release/certus \
#          one=target/release/certus,CERTUS_WORKER_THREADS=1
# Env:   CELLS="workload threads target,..." (targets: certus_n1, certus_3 = spread over 3),
#        CERTUS_COMMIT (named in the report), BENCH_PORT_BASE, BENCH_NO_DOC=1.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
ROUNDS=3
SECS=8
TITLE="certus variants side by side"
while getopts "r:s:t:" o; do
  case $o in
    r) ROUNDS=$OPTARG ;;
    s) SECS=$OPTARG ;;
    t) TITLE=$OPTARG ;;
    *) echo "usage: $0 [-r rounds] [-s secs] [-t title] LABEL=BIN[,VAR=VALUE...] ..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || { echo "$0: give at least two variants (LABEL=BIN[,VAR=VALUE...])" >&2; exit 2; }
VARIANTS=("$@")
CELLS=${CELLS:-"oltp_update_index 1 certus_n1,oltp_update_index 16 certus_n1,oltp_write_only 16 certus_3,oltp_point_select 16 certus_n1"}
OUT=$(mktemp -d /tmp/certus-ab.XXXXXX)
: >"$OUT/results.tsv"
START=$(date -u '+%Y-%m-%d %H:%M')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# One round of every cell against one variant, on its own fresh cluster.
run_variant() { # label spec round
  local label=$1 spec=$2 round=$3
  local bin=${spec%%,*} envs=() cell res
  [ "$bin" != "$spec" ] && IFS=, read -ra envs <<<"${spec#*,}"
  [ -x "$bin" ] || { echo "bench: $bin is not an executable" >&2; return 1; }
  (
    set -euo pipefail
    for e in "${envs[@]}"; do export "${e?}"; done
    CERTUS_BIN=$(realpath "$bin")
    WORK=$(mktemp -d /tmp/certus-abw.XXXXXX)
    # shellcheck source=bench/lib.sh
    source "$REPO/bench/lib.sh"
    begin_run certus
    SB_COMMON=(--db-driver=mysql --mysql-user=$SB_USER --mysql-password=$SB_PASS --mysql-db=sbtest
      --tables=4 --table-size=10000 --auto_inc=off --rand-type=special --percentile=50
      --mysql-ignore-errors=1213,1205 --db-ps-mode=disable)
    start_certus
    prepare_target certus_n1
    IFS=, read -ra cells <<<"$CELLS"
    for cell in "${cells[@]}"; do
      # shellcheck disable=SC2086
      set -- $cell
      # shellcheck disable=SC2046
      res=$(timeout -k 5 $((SECS + 60)) sysbench "$1" "${SB_COMMON[@]}" $(conn_args "$3") \
        --threads="$2" --time="$SECS" --report-interval=0 run 2>&1) || true
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$label" "$round" "$1" "$2" "$3" \
        "$(echo "$res" | grep -m1 'transactions:' | awk '{print $3}' | tr -d '(')" \
        "$(echo "$res" | grep -m1 'percentile:' | awk '{print $3}')" \
        "$(echo "$res" | grep -m1 'ignored errors:' | awk '{print $4}' | tr -d '(')" \
        >>"$OUT/results.tsv"
      log "$label r$round $1 t$2 $3: $(tail -1 "$OUT/results.tsv" | cut -f6) tps"
    done
    stop_all
  )
}

for r in $(seq 1 "$ROUNDS"); do
  for v in "${VARIANTS[@]}"; do
    run_variant "${v%%=*}" "${v#*=}" "$r"
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

report=$(python3 - "$OUT/results.tsv" "${VARIANTS[@]}" <<'EOF'
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
labels = [v.split("=", 1)[0] for v in sys.argv[2:]]
cells = []
for r in rows:
    c = (r[2], r[3], r[4])
    if c not in cells:
        cells.append(c)
def num(x):
    try:
        return float(x)
    except ValueError:
        return None
print("| workload | thr | target | " + " | ".join(f"{l}: TPS (rounds), p50 ms, 1213/s" for l in labels)
      + " | " + " | ".join(f"{l} / {labels[0]}" for l in labels[1:]) + " |")
print("|---|---:|---|" + "---|" * len(labels) + "---:|" * (len(labels) - 1))
for c in cells:
    means, parts = [], []
    for l in labels:
        rs = [r for r in rows if r[0] == l and (r[2], r[3], r[4]) == c]
        tps = [num(r[5]) for r in rs if num(r[5]) is not None]
        p50 = [num(r[6]) for r in rs if num(r[6]) is not None]
        err = [num(r[7]) for r in rs if num(r[7]) is not None]
        m = statistics.mean(tps) if tps else None
        means.append(m)
        parts.append("{:.0f} ({}), {}, {}".format(
            m or 0, " / ".join(f"{t:.0f}" for t in tps),
            f"{statistics.mean(p50):.2f}" if p50 else "-",
            f"{statistics.mean(err):.1f}" if err else "-"))
    ratios = [f"**{m / means[0]:.2f}**" if m and means[0] else "-" for m in means[1:]]
    print(f"| {c[0]} | {c[1]} | {c[2]} | " + " | ".join(parts) + " | " + " | ".join(ratios) + " |")
EOF
)

section="## $TITLE ($START UTC, \`bench/ab.sh\`)

Command: \`CELLS=\"$CELLS\" bench/ab.sh -r $ROUNDS -s $SECS $*\`
(certus ${CERTUS_COMMIT:-see the variants}; sysbench 1.0.20, 4 tables x 10000 rows,
\`--rand-type=special --auto_inc=off --db-ps-mode=disable\`, ignoring 1213/1205; a fresh 3-node
cluster per variant and round, variants alternating; 2 cores, shared). Load average
$LOAD_START at start, $LOAD_END at end.

$report
"
echo "$section"
if [ "${BENCH_NO_DOC:-0}" != 1 ]; then
  printf '\n%s' "$section" >>"$REPO/docs/benchmarks.md"
  echo "bench: appended to docs/benchmarks.md" >&2
fi
echo "bench: raw results in $OUT/results.tsv" >&2
