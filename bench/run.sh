#!/usr/bin/env bash
# bench/run.sh: one command that builds and installs the extension, starts a throwaway
# cluster (pg_virtualenv), generates (or restores the cached) data, and measures the engine
# against a plain table and against the PL/pgSQL reference (bench/reference.sql).
#
#   bash bench/run.sh
#
# Knobs (environment):
#   BENCH_CUSTOMERS=100000   customers (>= 100,000 for the reported numbers)
#   BENCH_CELLS=1000         Voronoi cells (territories = cells + overlays + enclaves + 16 regions)
#   BENCH_SEED=42            generator seed
#   BENCH_REPEAT=3           repetitions of a timed step (median reported) ...
#   BENCH_CHEAP_MS=30000     ... but a step whose first run took longer than this runs once
#   BENCH_COPY_ROWS=$BENCH_CUSTOMERS   rows for the COPY comparison
#   BENCH_PGBENCH_SECONDS=10 duration of each pgbench run
#   BENCH_FRESH=1            regenerate even if bench/.cache has the data
#   BENCH_PROFILE=1          also perf-profile a managed INSERT ... SELECT (needs perf)
# See bench/README.md for what is measured and the numbers.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export BENCH_CUSTOMERS=${BENCH_CUSTOMERS:-100000}
export BENCH_CELLS=${BENCH_CELLS:-1000}
export BENCH_SEED=${BENCH_SEED:-42}
export BENCH_REPEAT=${BENCH_REPEAT:-3}
export BENCH_CHEAP_MS=${BENCH_CHEAP_MS:-30000}
export BENCH_COPY_ROWS=${BENCH_COPY_ROWS:-$BENCH_CUSTOMERS}
export BENCH_PGBENCH_SECONDS=${BENCH_PGBENCH_SECONDS:-10}
export BENCH_FRESH=${BENCH_FRESH:-}
export BENCH_PROFILE=${BENCH_PROFILE:-}

if [ -z "${BENCH_IN_CLUSTER:-}" ]; then
    export BENCH_T0=$(date +%s)
    echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
    ok=
    for attempt in 1 2 3 4 5; do
        if (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-bench-build.log; then
            ok=1
            break
        fi
        echo "build failed (attempt $attempt, see /tmp/allocation-bench-build.log); retrying in 30 s"
        sleep 30
    done
    [ -n "$ok" ] || { cat /tmp/allocation-bench-build.log; exit 1; }
    export BENCH_IN_CLUSTER=1
    exec pg_virtualenv -t \
        -o shared_buffers=1GB -o max_wal_size=8GB -o checkpoint_timeout=30min \
        -o work_mem=64MB -o maintenance_work_mem=512MB -o max_connections=40 \
        bash "${BASH_SOURCE[0]}" "$@"
fi

###############################################################################
# Inside the throwaway cluster (PGHOST/PGPORT/PGUSER set by pg_virtualenv)
###############################################################################
export PGDATABASE=allocation_bench
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
COLS='id, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc'
WORK=$(mktemp -d /tmp/allocation-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
N=$BENCH_CUSTOMERS

psql -X -q -d postgres -c "CREATE DATABASE allocation_bench" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true

echo
echo "== machine =="
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version')"
echo "postgis:     $("${PA[@]}" -c 'SELECT postgis_lib_version()') (GEOS $("${PA[@]}" -c 'SELECT postgis_geos_version()'))"
echo "allocation:  $("${PA[@]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ', with uncommitted changes'))"
echo "settings:    shared_buffers=1GB, fsync=off (pg_virtualenv), synchronous_commit=on, max_wal_size=8GB"
echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at start; other work on the machine skews every number)"

###############################################################################
echo
echo "== data =="
GEN_HASH=$(grep -v '^ *--' "$BENCH_DIR/generate.sql" | md5sum | cut -c1-8)   # comments do not invalidate
CACHE="$BENCH_DIR/.cache/data-c${BENCH_CELLS}-n${N}-s${BENCH_SEED}-${GEN_HASH}.dump"
t=$(date +%s.%N)
if [ -z "$BENCH_FRESH" ] && [ -f "$CACHE" ]; then
    pg_restore -d "$PGDATABASE" --no-owner "$CACHE"
    echo "restored cached data: ${CACHE#$ROOT/} ($(awk -v t="$t" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - t}') s)"
else
    "${P[@]}" -v n_cells="$BENCH_CELLS" -v n_customers="$N" -v seed="$BENCH_SEED" \
        -f "$BENCH_DIR/generate.sql" >/dev/null
    echo "generated in $(awk -v t="$t" -v n="$(date +%s.%N)" 'BEGIN {printf "%.1f", n - t}') s"
    mkdir -p "$BENCH_DIR/.cache"
    rm -f "$BENCH_DIR/.cache/data-c${BENCH_CELLS}-n${N}-s${BENCH_SEED}-"*.dump
    pg_dump -Fc -n bench -f "$CACHE" && echo "cached as ${CACHE#$ROOT/}"
fi
"${P[@]}" -c "SELECT kind, count(*) AS territories, sum(ST_NPoints(geom)) AS vertices,
                      round(avg(ST_NPoints(geom))) AS avg_vertices, max(ST_NPoints(geom)) AS max_vertices,
                      count(*) FILTER (WHERE ST_NPoints(geom) > 20000) AS over_20k
                 FROM bench.g_territory GROUP BY ROLLUP (kind) ORDER BY kind"
"${P[@]}" -c "SELECT kind, count(*) AS customers FROM bench.src_customer GROUP BY ROLLUP (kind) ORDER BY kind"
"${P[@]}" -f "$BENCH_DIR/setup.sql" >/dev/null
"${P[@]}" -f "$BENCH_DIR/reference.sql" >/dev/null
"${P[@]}" -c "VACUUM ANALYZE"

###############################################################################
# Timed steps.  Each run is its own psql session: reset the target (untimed), warm it
# up (untimed: index, config, plans, buffers), then time the statement with
# clock_timestamp() around it (autocommit, so the commit is included).
###############################################################################
reset_sql() {   # target -> SQL that empties it and its engine/reference state
    case $1 in
        plain) echo "TRUNCATE bench.customer_plain;" ;;
        # the engine closes the registry and recounts loads; customer_m and customer_d
        # share the reps' capacities, so both are emptied
        managed|dup) echo "TRUNCATE bench.customer_m; TRUNCATE bench.customer_d;" ;;
        ref) echo "TRUNCATE bench.customer_ref; SELECT ref.reset();" ;;
        floor) echo "TRUNCATE bench.customer_plain; UPDATE bench.floor_a SET valid_to = now() WHERE valid_to IS NULL;" ;;
    esac
}
vacuum_sql() {
    case $1 in
        plain) echo "VACUUM ANALYZE bench.customer_plain;" ;;
        managed|dup) echo "VACUUM ANALYZE bench.customer_m; VACUUM ANALYZE bench.customer_d; VACUUM ANALYZE allocation.rep_load; VACUUM ANALYZE allocation.assignment; VACUUM ANALYZE allocation.event; VACUUM ANALYZE allocation.identity; VACUUM ANALYZE allocation.identity_key;" ;;
        ref) echo "VACUUM ANALYZE bench.customer_ref; VACUUM ANALYZE ref.rep_load; VACUUM ANALYZE ref.assignment; VACUUM ANALYZE ref.event;" ;;
        floor) echo "VACUUM ANALYZE bench.customer_plain; VACUUM ANALYZE bench.floor_a; VACUUM ANALYZE bench.floor_e;" ;;
    esac
}
table_of() {
    case $1 in plain|floor) echo bench.customer_plain ;; managed) echo bench.customer_m ;; ref) echo bench.customer_ref ;; dup) echo bench.customer_d ;; esac
}
warmup_sql() {   # untimed: source rows in buffers; backend caches (territory index,
                 # configuration, trigger function and plans) built by 200 rows rolled back
    echo "SELECT count(*) FROM bench.src_customer \\g /dev/null"
    echo "BEGIN; INSERT INTO $(table_of "$1") ($COLS) SELECT id + 800000000, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq <= 200 ORDER BY seq; ROLLBACK;"
}

# run_timed STEP RUN TARGET "STATEMENT" ROWS -> prints ms
run_timed() {
    local step=$1 run=$2 target=$3 stmt=$4 rows=$5
    "${P[@]}" >/dev/null <<EOF
SET client_min_messages = warning;
$(reset_sql "$target")
$(vacuum_sql "$target")
CHECKPOINT;
$(warmup_sql "$target")
SELECT clock_timestamp() AS t0 \gset
$stmt
INSERT INTO bench.result (step, run, ms, rows)
SELECT '$step', $run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, $rows;
EOF
    "${PA[@]}" -c "SELECT round(ms::numeric, 1) FROM bench.result WHERE step = '$step' AND run = $run"
}

# repeat_step STEP TARGET "STATEMENT" ROWS: BENCH_REPEAT runs, or 1 if the first is expensive
declare -A FIRST_MS
step_wanted() {   # STEP RUN -> 0 if this run should happen
    local step=$1 run=$2
    [ "$run" -eq 1 ] && return 0
    [ "$run" -le "$BENCH_REPEAT" ] || return 1
    awk -v a="${FIRST_MS[$step]}" -v b="$BENCH_CHEAP_MS" 'BEGIN {exit !(a < b)}'
}
do_step() {
    local step=$1 run=$2 target=$3 stmt=$4 rows=$5 ms
    step_wanted "$step" "$run" || return 0
    ms=$(run_timed "$step" "$run" "$target" "$stmt" "$rows")
    [ "$run" -eq 1 ] && FIRST_MS[$step]=$ms
    printf '  %-16s run %d: %10.1f ms  (%.1f us/row)\n' "$step" "$run" "$ms" "$(awk -v m="$ms" -v n="$rows" 'BEGIN {print m * 1000 / n}')"
}

INSERT_STMT() {   # table
    echo "INSERT INTO $1 ($COLS) SELECT $COLS FROM bench.src_customer ORDER BY seq;"
}

echo
echo "== burn-in (untimed): one INSERT ... SELECT of $N customers into plain, dup and managed =="
# A fresh cluster pays for first touches (shared buffers the kernel must zero, relation
# extension) that a running server does not; one full round absorbs them for every target.
for target in plain dup managed; do
    run_timed "burnin_$target" 1 "$target" "$(INSERT_STMT "$(table_of "$target")")" "$N" >/dev/null
done
echo "  done"

echo
echo "== INSERT ... SELECT of $N customers (ORDER BY seq), interleaved rounds =="
echo "   (dup = managed with duplicate detection; it runs before managed in each round, so"
echo "    customer_m keeps the last round's decisions for the agreement check)"
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step insert_plain "$run" plain "$(INSERT_STMT bench.customer_plain)" "$N"
    do_step insert_dup "$run" dup "$(INSERT_STMT bench.customer_d)" "$N"
    do_step insert_managed "$run" managed "$(INSERT_STMT bench.customer_m)" "$N"
    do_step insert_ref "$run" ref "$(INSERT_STMT bench.customer_ref)" "$N"
done

###############################################################################
echo
echo "== the write floor: the customer, registry and audit rows of those decisions written by plain SQL =="
# What the engine cannot avoid writing: the same customer rows, plus the registry and
# audit rows the managed run just wrote, inserted by three plain statements into copies
# of allocation.assignment and allocation.event (same columns, indexes and checks; no
# foreign keys, no triggers) in one transaction.  No decision is taken.
"${P[@]}" >/dev/null <<SQL
DROP TABLE IF EXISTS bench.floor_a, bench.floor_e, bench.floor_src_a, bench.floor_src_e;
CREATE TABLE bench.floor_a (LIKE allocation.assignment INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench.floor_e (LIKE allocation.event INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench.floor_src_a AS
SELECT a.* FROM allocation.assignment a JOIN bench.src_customer s ON s.id::text = a.key
 WHERE a.valid_to IS NULL AND a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass)
 ORDER BY s.seq;
CREATE TABLE bench.floor_src_e AS
SELECT e.* FROM allocation.event e JOIN bench.src_customer s ON s.id::text = e.key
 WHERE e.id > (SELECT max(id) FROM allocation.event WHERE kind = 'truncate')
   AND e.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass)
 ORDER BY s.seq;
SQL
echo "  registry rows: $("${PA[@]}" -c "SELECT count(*) FROM bench.floor_src_a"), audit rows: $("${PA[@]}" -c "SELECT count(*) FROM bench.floor_src_e")"
FLOOR_STMT="BEGIN;
$(INSERT_STMT bench.customer_plain)
INSERT INTO bench.floor_a SELECT nextval('allocation.assignment_id_seq'), managed_id, key, rep_id, team_id, territory_id, rule_id, source, pinned, reason, tier, crop, business_type, stage, stage_since, now(), NULL, NULL FROM bench.floor_src_a;
INSERT INTO bench.floor_e SELECT nextval('allocation.event_id_seq'), now(), actor, kind, managed_id, table_name, key, from_rep, to_rep, rule_id, reason, detail FROM bench.floor_src_e;
COMMIT;"
run_timed burnin_floor 1 floor "$FLOOR_STMT" "$N" >/dev/null
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step insert_floor "$run" floor "$FLOOR_STMT" "$N"
done

###############################################################################
echo
"${P[@]}" -f "$BENCH_DIR/agreement.sql" 2>&1 | grep -v 'NOTICE'
EXT_MD5=$("${PA[@]}" -c "SELECT md5(string_agg(key || ',' || coalesce(ext_territory::text, '-') || ',' || coalesce(ext_rep::text, '-'), ';' ORDER BY key)) FROM bench.agree WHERE in_ext")

registry_md5() {   # md5 over (key, territory, owner) of customer_m's open registry rows
    "${PA[@]}" -c "SELECT md5(string_agg(a.key || ',' || coalesce(a.territory_id::text, '-') || ',' || coalesce(a.rep_id::text, '-'), ';' ORDER BY a.key::bigint))
                     FROM allocation.assignment a
                    WHERE a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass AND active)
                      AND a.valid_to IS NULL"
}

###############################################################################
echo
echo "== COPY of $BENCH_COPY_ROWS customers (server-side file, same rows and order) =="
COPYFILE="$("${PA[@]}" -c "SHOW data_directory")/bench_customers.copy"
"${P[@]}" -c "COPY (SELECT $COLS FROM bench.src_customer WHERE seq <= $BENCH_COPY_ROWS ORDER BY seq) TO '$COPYFILE'"
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step copy_plain "$run" plain "COPY bench.customer_plain ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
    do_step copy_managed "$run" managed "COPY bench.customer_m ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
done
if [ "$BENCH_COPY_ROWS" -eq "$N" ]; then
    COPY_MD5=$(registry_md5)
    if [ "$COPY_MD5" = "$EXT_MD5" ]; then
        echo "  COPY decided exactly like INSERT ... SELECT (md5 $COPY_MD5)"
    else
        echo "  COPY decided DIFFERENTLY from INSERT ... SELECT: md5 $COPY_MD5 vs $EXT_MD5"
    fi
fi

###############################################################################
echo
echo "== the indexed fallback: allocation.territory_cache_max = 0 (no polygons in memory) =="
# the same INSERT ... SELECT into customer_m, territories found by the GiST-indexed
# ST_Covers query instead of the memory index; decisions must be identical
do_step insert_indexed 1 managed "SET allocation.territory_cache_max = 0;
$(INSERT_STMT bench.customer_m)" "$N"
IDX_MD5=$(registry_md5)
if [ "$IDX_MD5" = "$EXT_MD5" ]; then
    echo "  the indexed fallback decided exactly like the memory index (md5 $IDX_MD5)"
else
    echo "  the indexed fallback decided DIFFERENTLY: md5 $IDX_MD5 vs $EXT_MD5"
fi

###############################################################################
echo
echo "== territory index of one backend (allocation.cache_stats()) =="
for run in 1 2 3; do
    "${P[@]}" >/dev/null <<EOF
SELECT clock_timestamp() AS t0 \gset
SELECT allocation.cache_stats() AS stats \gset
INSERT INTO bench.result (step, run, ms) SELECT 'index_build', $run, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000;
EOF
done
STATS=$("${PA[@]}" -c "SELECT allocation.cache_stats()")
echo "  $STATS"
"${PA[@]}" -F ' ' -c "SELECT 'build on first use (fresh connection, median of 3):', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1), 'ms' FROM bench.result WHERE step = 'index_build'" | sed 's/^/  /'

echo
echo "== first INSERT after connecting (cold) vs the next ones (warm), single rows, emptied tables =="
for target in plain managed ref; do
    "${P[@]}" >/dev/null <<EOF
$(reset_sql "$target")
$(vacuum_sql "$target")
EOF
done
for target in plain managed ref; do
    tbl=$(table_of "$target")
    for run in 1 2 3; do
        out=$("${P[@]}" <<EOF
\timing on
SELECT 1 \g /dev/null
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = $((run * 10 + 1));
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = $((run * 10 + 2));
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = $((run * 10 + 3));
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = $((run * 10 + 4));
EOF
)
        times=($(echo "$out" | awk '/^Time:/ {print $2}'))
        "${P[@]}" -c "INSERT INTO bench.result (step, run, ms) VALUES ('cold_$target', $run, ${times[1]}), ('warm_$target', $run, ${times[4]})"
    done
done
"${P[@]}" -c "SELECT replace(step, '_', ' ') AS single_row_insert, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2) AS median_ms,
                     round(min(ms)::numeric, 2) AS min_ms, round(max(ms)::numeric, 2) AS max_ms
                FROM bench.result WHERE step ~ '^(cold|warm)_' GROUP BY step
               ORDER BY split_part(step, '_', 2) DESC, step" | sed 's/^/  /'

###############################################################################
echo
echo "== pgbench: one random customer per transaction, ${BENCH_PGBENCH_SECONDS} s per run, -M prepared =="
for target in plain managed ref; do
    tbl=$(table_of "$target")
    cat > "$WORK/insert_$target.sql" <<EOF
\set s random(1, $N)
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = :s;
EOF
done
printf '  %-8s %7s %10s %12s %12s %12s %12s %12s\n' target clients tps 'steady tps*' 'lat avg ms' 'p50 ms*' 'p95 ms*' 'first ms*'
for clients in 1 8; do
    for target in plain managed ref; do
        "${P[@]}" >/dev/null <<EOF
$(reset_sql "$target")
$(vacuum_sql "$target")
CHECKPOINT;
EOF
        jobs=$(( clients < $(nproc) ? clients : $(nproc) ))
        rm -f "$WORK"/pgb_log*
        out=$(cd "$WORK" && pgbench -n -M prepared -T "$BENCH_PGBENCH_SECONDS" -c "$clients" -j "$jobs" \
                  -f "$WORK/insert_$target.sql" -l --log-prefix=pgb_log 2>&1) || { echo "$out"; exit 1; }
        tps=$(echo "$out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}')
        lat=$(echo "$out" | awk -F'= ' '/^latency average/ {split($2, a, " "); print a[1]}')
        # per-transaction log lines: client_id transaction_no time_us ...
        # (* = each client's first transaction excluded; 'first' = their mean)
        cat "$WORK"/pgb_log* > "$WORK/all.log"
        first=$(awk '$2 == 1 {s += $3; n++} END {printf "%.2f", n ? s / n / 1000 : 0}' "$WORK/all.log")
        # steady tps: transactions completed after every client finished its first one
        steady=$(awk '{t = $5 + $6 / 1e6; if ($2 == 1 && t > t0) t0 = t; all[NR] = t; if (t > t1) t1 = t}
                      END {for (i in all) if (all[i] > t0) n++; printf "%.1f", (t1 > t0) ? n / (t1 - t0) : 0}' "$WORK/all.log")
        read -r p50 p95 < <(awk '$2 != 1 {print $3}' "$WORK/all.log" | sort -n |
                            awk '{a[NR] = $1} END {printf "%.3f %.3f\n", a[int(NR * 0.5) + 1] / 1000, a[int(NR * 0.95) + 1] / 1000}')
        "${P[@]}" -c "INSERT INTO bench.result (step, run, ms, rows) VALUES
                        ('pgbench_${target}_c${clients}_lat', 1, $lat, NULL), ('pgbench_${target}_c${clients}_tps', 1, $tps, NULL),
                        ('pgbench_${target}_c${clients}_p50', 1, $p50, NULL), ('pgbench_${target}_c${clients}_p95', 1, $p95, NULL),
                        ('pgbench_${target}_c${clients}_steady', 1, $steady, NULL)"
        printf '  %-8s %7d %10.1f %12.1f %12.3f %12.3f %12.3f %12.2f\n' "$target" "$clients" "$tps" "$steady" "$lat" "$p50" "$p95" "$first"
    done
done
echo "  (* from pgbench's per-transaction log; p50/p95 exclude each client's first transaction, which"
echo "     pays for the backend's caches (territory index build for managed); 'first' is their mean;"
echo "     steady tps counts only transactions completed after every client's first one)"

###############################################################################
echo
echo "== where a managed INSERT spends its time (track_functions = all, untimed runs) =="
wait_other_backends() {   # until every other client backend of this database has exited
    for _ in $(seq 1 100); do
        [ "$("${PA[@]}" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                             AND backend_type = 'client backend' AND pid <> pg_backend_pid()")" = 0 ] && return 0
        sleep 0.1
    done
}
# breakdown LABEL TARGET "SQL" ROWS STATEMENTS: run SQL after a warm-up with function timing on;
# the backend's function statistics are flushed when it exits, then read by the next session
breakdown() {
    local label=$1 target=$2 sql=$3 rows=$4 stmts=$5
    "${P[@]}" >/dev/null <<EOF
$(reset_sql "$target")
$(vacuum_sql "$target")
EOF
    wait_other_backends
    "${P[@]}" >/dev/null <<EOF
SET track_functions = 'all';
$(warmup_sql "$target")
-- flush the warm-up's function statistics now (at the next idle point), then reset
SELECT pg_stat_force_next_flush();
SELECT 1;
SELECT pg_stat_reset();
SELECT clock_timestamp() AS t0 \gset
$sql
INSERT INTO bench.result (step, run, ms, rows)
SELECT 'bd_${label}_total', 1, extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000, $rows;
EOF
    wait_other_backends   # the measured backend flushes its statistics when it exits
    "${P[@]}" -c "INSERT INTO bench.result (step, run, ms, rows)
                  SELECT 'bd_${label}_' || funcname, 1, total_time, calls FROM pg_stat_user_functions
                   WHERE schemaname = 'allocation' AND funcname IN ('_row_trigger', '_stmt_trigger', '_record_batch')"
    "${PA[@]}" -F '|' -c "
        SELECT '$label', $rows, $stmts,
               round((max(ms) FILTER (WHERE step = 'bd_${label}_total') / $stmts)::numeric, 3),
               round((coalesce(max(ms) FILTER (WHERE step = 'bd_${label}__row_trigger'), 0) / $rows * 1000)::numeric, 1),
               round((coalesce(max(ms) FILTER (WHERE step = 'bd_${label}__stmt_trigger'), 0) / $stmts)::numeric, 3),
               round((coalesce(max(ms) FILTER (WHERE step = 'bd_${label}__record_batch'), 0) / $stmts)::numeric, 3),
               round((100 * (coalesce(max(ms) FILTER (WHERE step = 'bd_${label}__row_trigger'), 0)
                             + coalesce(max(ms) FILTER (WHERE step = 'bd_${label}__stmt_trigger'), 0))
                      / max(ms) FILTER (WHERE step = 'bd_${label}_total'))::numeric, 0)
          FROM bench.result WHERE step LIKE 'bd_${label}_%'" |
        awk -F'|' '{printf "  %-15s %7d rows %6d stmts %12.3f %12.1f %14.3f %14.3f %9s%%\n", $1, $2, $3, $4, $5, $6, $7, $8}'
}
SINGLE_GEXEC="SELECT format('INSERT INTO %s ($COLS) SELECT nextval(''bench.single_id''), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = %s', '%TABLE%', g) FROM generate_series(1, 1000) g \\gexec"
printf '  %-15s %12s %12s %12s %12s %14s %14s %10s\n' '' '' '' 'ms/stmt' 'row trig' 'stmt trig' '_record_batch' 'triggers'
printf '  %-15s %12s %12s %12s %12s %14s %14s %10s\n' '' '' '' '' 'us/row' 'ms/stmt' 'ms/stmt' 'share'
breakdown plain_single plain "${SINGLE_GEXEC//%TABLE%/bench.customer_plain}" 1000 1000
breakdown managed_single managed "${SINGLE_GEXEC//%TABLE%/bench.customer_m}" 1000 1000
BULK=$(( N < 20000 ? N : 20000 ))
breakdown managed_bulk managed "$(INSERT_STMT bench.customer_m | sed "s/ORDER BY seq/WHERE seq <= $BULK ORDER BY seq/")" "$BULK" 1
echo "  (row trig = BEFORE + AFTER row trigger (the decision, reservations); stmt trig = the two"
echo "   statement triggers, the AFTER one writing the batch: directly for a statement that only"
echo "   inserted customers, through allocation._record_batch otherwise)"

###############################################################################
if [ -n "$BENCH_PROFILE" ]; then
    echo
    echo "== perf profile of a managed INSERT ... SELECT of $BULK customers =="
    bash "$BENCH_DIR/profile.sh" "$BULK" || echo "  (profiling failed)"
fi

###############################################################################
med() {   # step -> median ms
    "${PA[@]}" -c "SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) FROM bench.result WHERE step = '$1'"
}
nrun() {
    "${PA[@]}" -c "SELECT count(*) FROM bench.result WHERE step = '$1'"
}
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'
}
IP=$(med insert_plain); IM=$(med insert_managed); IR=$(med insert_ref); ID=$(med insert_dup)
IF=$(med insert_floor); IX=$(med insert_indexed)
CP=$(med copy_plain); CM=$(med copy_managed)
DIS=$("${PA[@]}" -c "SELECT count(*) FROM bench.agree WHERE ext_territory IS DISTINCT FROM ref_territory OR ext_rep IS DISTINCT FROM ref_rep OR NOT in_ext OR NOT in_ref")
NAG=$("${PA[@]}" -c "SELECT count(*) FROM bench.agree")
REF_MD5=$("${PA[@]}" -c "SELECT md5(string_agg(key || ',' || coalesce(ref_territory::text, '-') || ',' || coalesce(ref_rep::text, '-'), ';' ORDER BY key)) FROM bench.agree WHERE in_ref")

echo
echo "== summary =="
echo "customers: $N; territories: $("${PA[@]}" -c "SELECT count(*) FROM allocation.territory"); vertices: $("${PA[@]}" -c "SELECT sum(ST_NPoints(geom)) FROM allocation.territory")"
printf 'INSERT ... SELECT  plain:     %10.1f ms (median of %s)\n' "$IP" "$(nrun insert_plain)"
printf 'INSERT ... SELECT  managed:   %10.1f ms (median of %s)\n' "$IM" "$(nrun insert_managed)"
printf 'INSERT ... SELECT  reference: %10.1f ms (median of %s)\n' "$IR" "$(nrun insert_ref)"
printf 'INSERT ... SELECT  managed + duplicate detection: %10.1f ms (median of %s)\n' "$ID" "$(nrun insert_dup)"
printf 'INSERT ... SELECT  managed, indexed fallback:     %10.1f ms (1 run)\n' "$IX"
printf 'write floor (customer + registry + audit rows by plain SQL): %10.1f ms (median of %s)\n' "$IF" "$(nrun insert_floor)"
printf 'COPY               plain:     %10.1f ms (median of %s, %s rows)\n' "$CP" "$(nrun copy_plain)" "$BENCH_COPY_ROWS"
printf 'COPY               managed:   %10.1f ms (median of %s, %s rows)\n' "$CM" "$(nrun copy_managed)" "$BENCH_COPY_ROWS"
echo "managed/plain INSERT ratio: $(ratio "$IM" "$IP")"
echo "reference/managed ratio: $(ratio "$IR" "$IM")"
echo "managed with duplicate detection/plain INSERT ratio: $(ratio "$ID" "$IP")"
echo "write floor/plain ratio: $(ratio "$IF" "$IP"); managed/write floor ratio: $(ratio "$IM" "$IF")"
echo "indexed fallback/managed ratio: $(ratio "$IX" "$IM") (decisions identical: $([ "$IDX_MD5" = "$EXT_MD5" ] && echo yes || echo NO))"
echo "managed/plain COPY ratio: $(ratio "$CM" "$CP")"
for c in 1 8; do
    echo "pgbench single-row INSERT, $c client(s): p50 latency managed/plain $(ratio "$(med pgbench_managed_c${c}_p50)" "$(med pgbench_plain_c${c}_p50)"), reference/managed $(ratio "$(med pgbench_ref_c${c}_p50)" "$(med pgbench_managed_c${c}_p50)") (steady tps plain $(printf %.0f "$(med pgbench_plain_c${c}_steady)"), managed $(printf %.0f "$(med pgbench_managed_c${c}_steady)"), reference $(printf %.0f "$(med pgbench_ref_c${c}_steady)"))"
done
echo "territory index per backend: $(echo "$STATS" | sed 's/[{}"]//g'); build $(printf %.1f "$(med index_build)") ms"
echo "single-row INSERT managed: cold (first after connecting) $(printf %.1f "$(med cold_managed)") ms, warm $(printf %.2f "$(med warm_managed)") ms (plain: cold $(printf %.1f "$(med cold_plain)") ms, warm $(printf %.2f "$(med warm_plain)") ms)"
echo "agreement: $DIS disagreements of $NAG"
echo "md5(key, territory, owner) extension: $EXT_MD5"
echo "md5(key, territory, owner) reference: $REF_MD5"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "total wall time: $(( $(date +%s) - BENCH_T0 )) s"
