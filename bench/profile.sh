#!/usr/bin/env bash
# bench/profile.sh ROWS: perf profile (self time by symbol) of one managed INSERT ... SELECT
# of the first ROWS customers into an emptied bench.customer_m.  Runs inside the cluster
# bench/run.sh creates (BENCH_PROFILE=1), or against any database holding the bench data:
#   PGDATABASE=... bash bench/profile.sh 20000
set -eu
ROWS=${1:-20000}
COLS='id, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc'
W=$(mktemp -d /tmp/allocation-profile.XXXXXX)
trap 'rm -rf "$W"' EXIT
psql -X -q -v ON_ERROR_STOP=1 >/dev/null <<SQL
TRUNCATE bench.customer_m;
VACUUM ANALYZE allocation.rep_load;
VACUUM ANALYZE allocation.customer_state;
SQL
psql -X -q -v ON_ERROR_STOP=1 > "$W/psql.out" 2>&1 <<SQL &
BEGIN; INSERT INTO bench.customer_m ($COLS) SELECT id + 800000000, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq <= 200 ORDER BY seq; ROLLBACK;
\o $W/pid
SELECT pg_backend_pid();
\o
SELECT pg_sleep(2);
\timing on
INSERT INTO bench.customer_m ($COLS) SELECT $COLS FROM bench.src_customer WHERE seq <= $ROWS ORDER BY seq;
SQL
PSQL=$!
for i in $(seq 1 50); do [ -s "$W/pid" ] && break; sleep 0.2; done
PID=$(awk 'NF && $1 ~ /^[0-9]+$/ {print $1}' "$W/pid")
perf record -q -F 499 -g -p "$PID" -o "$W/perf.data" 2>/dev/null &
PERF=$!
wait "$PSQL"
kill -INT "$PERF" 2>/dev/null || true
wait "$PERF" 2>/dev/null || true
grep -E '^Time' "$W/psql.out" | sed "s/^/  managed INSERT of $ROWS rows: /"
echo "  top symbols by self time (the postgres binary has no debug info: callers are not resolved):"
perf report -i "$W/perf.data" --no-children --stdio --sort dso,symbol -g none 2>/dev/null |
    grep -E '^ +[0-9]' | head -30 | sed -E 's/ +- +- *$//; s/^/  /'
echo "  inclusive (children included) for the engine's steps and what they call:"
perf report -i "$W/perf.data" --children --stdio --sort symbol -g none 2>/dev/null |
    grep -E '^ +[0-9]' |
    grep -E ' (allocation_row_trigger|allocation_stmt_trigger|flush_frame|writer_flush|heap_multi_insert|ExecInsertIndexTuples|btinsert|hashinsert|brininsert|assign_read_customer|tindex_lookup|assign_decide|key_exists|dup_check|nextval_internal|event_detail|SPI_execute_plan|ExecBRInsertTriggers|ExecARInsertTriggers|AfterTriggerEndQuery|heap_insert|ExecConstraints)( |$)' |
    awk '{printf "  %8s  %s\n", $1, $4}'
echo "  by shared object:"
perf report -i "$W/perf.data" --no-children --stdio --sort dso -g none 2>/dev/null |
    grep -E '^ +[0-9]' | head -8 | sed 's/^/  /'
