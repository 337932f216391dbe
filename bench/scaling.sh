#!/usr/bin/env bash
# bench/scaling.sh: the scaling curve (issue 15) -- cost per inserted row, managed vs plain,
# memory per backend and shared memory, as customers and territories grow.
#
#   bash bench/scaling.sh [BINDIR]
#
# BINDIR (default: pg_config --bindir, or $PG_BINDIR) must have the extension installed
# (make install) and PostGIS.  One throw-away cluster in a temporary directory (sockets
# only, fsync=off, shared_buffers=1GB, allocation.territory_cache_max=2GB so that every
# point keeps the in-memory index), run as the postgres user when started as root.
# Data: bench/generate.sql (the run.sh generator: Voronoi counties with 800-1,800 vertices,
# 1.5% with 22,000-30,000, overlays, enclaves, lakes), cached in bench/.cache exactly as
# bench/run.sh caches it (the 1,000-cell dump is shared with run.sh), rules and tables by
# bench/setup.sql.  Every rep's capacity is lifted (NULL), so the same decision path runs
# at every size (with the bench capacities, 1M customers would mostly go to the pool).
#
# Axis 1, customers (1,000 cells = 1,083 territories, 2.7 M vertices):
#   10k and 100k customers: one INSERT ... SELECT into an empty table, plain and managed;
#   1M customers: the 100k generated customers x 10 (ids and seq offset by 100,000 per
#   copy, same locations), inserted in 10 statements of 100k into the growing table, so the
#   last statement runs against 900k customers, their registry and event log.
# Axis 2, territories (100k customers): SCALE_CELLS cells (default 1000 3000 10000; about
#   +8% territories for overlays, enclaves and regions).
# Per point: us per row managed and plain (each statement after an untimed, rolled-back
#   warm-up of 200 rows in the same session; the 10k, 100k and territory points run
#   twice into emptied tables and keep the faster run, the 1M chunks once), the ratio, the slope of managed us/row
#   against the rows already in the table (least squares over the 10 chunks) and against
#   the territory count.
# Memory, without shared_preload_libraries: a new backend after its first managed
#   INSERT: the territory index context (pg_backend_memory_contexts 'allocation
#   territory%'), the backend's total context memory, cache_stats() bytes and build time.
# Memory, with shared_preload_libraries = 'allocation' (the same cluster restarted): the
#   shared copy's size (cache_stats() shared_bytes) per territory count, the fixed shared
#   memory (pg_shmem_allocations 'allocation'), a new backend's own memory after its first
#   managed INSERT, and that INSERT's latency (attach, no build).
# Knobs: SCALE_CELLS ("1000 3000 10000"), SCALE_CUSTOMERS (100000), SCALE_COPIES (10).
#   Every point keeps the generator's vertex counts (800-1,800 per county, 1.5% with
#   22,000-30,000), also at 10,000 cells.
# Output: a table per axis and the numbers bench/README.md quotes.  The first run generates
# the 3,000- and 10,000-cell data (6 and 22 min on a busy 2-core machine; the 10,000-cell
# customers' border points are the slow part) and caches it; later runs restore the dumps.
set -euo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
BINDIR=${1:-${PG_BINDIR:-$(pg_config --bindir)}}
SCALE_CELLS=${SCALE_CELLS:-1000 3000 10000}
N=${SCALE_CUSTOMERS:-100000}
COPIES=${SCALE_COPIES:-10}
SEED=42
T0=$(date +%s)
TMP=$(mktemp -d /tmp/alloc_scaling.XXXXXX)
chmod 700 "$TMP"
AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
run () { (cd "$TMP" && "${AS[@]}" env LC_ALL=C.UTF-8 LANG=C.UTF-8 "$@"); }
PORT=$((20000 + RANDOM % 20000))
cleanup () {
    run "$BINDIR/pg_ctl" -D "$TMP/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
PSQL () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres "$@"; }
PA () { PSQL -At "$@"; }
section () { echo; echo "== $* [t+$(( $(date +%s) - T0 )) s] =="; }
start () {   # $1 = shared_preload_libraries
    run "$BINDIR/pg_ctl" -D "$TMP/data" -w -t 300 -l "$TMP/server.log" \
        -o "-p $PORT -k $TMP -c listen_addresses='' -c shared_preload_libraries='$1'" start >/dev/null \
        || { tail -30 "$TMP/server.log"; exit 1; }
}
COLS='name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc'

section "cluster"
run "$BINDIR/initdb" -D "$TMP/data" -U postgres -A trust -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log"; exit 1; }
cat >>"$TMP/data/postgresql.conf" <<EOF
fsync = off
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
work_mem = 64MB
maintenance_work_mem = 512MB
allocation.territory_cache_max = '2GB'
EOF
start ''
echo "machine: $(nproc) cpu ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "postgresql $(PA -d postgres -c 'SHOW server_version'), git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
PSQL -d postgres -c "CREATE TABLE scaling (axis text, cells int, territories int, vertices bigint, customers_before bigint,
                                           rows bigint, target text, ms float8)" >/dev/null

# one database per cell count: data (cached dump or generated), setup.sql, capacities lifted
GEN_HASH=$(grep -v '^ *--' "$BENCH_DIR/generate.sql" | md5sum | cut -c1-8)
load_db () {   # cells
    local db=sc_$1 cache="$BENCH_DIR/.cache/data-c$1-n$N-s$SEED-$GEN_HASH.dump" t
    PSQL -d postgres -c "CREATE DATABASE $db" >/dev/null
    PSQL -d "$db" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true
    t=$(date +%s)
    if [ -f "$cache" ]; then
        run "$BINDIR/pg_restore" -h "$TMP" -p "$PORT" -U postgres -d "$db" --no-owner "$cache"
        echo "  $db: restored ${cache#$ROOT/} ($(( $(date +%s) - t )) s)"
    else
        PSQL -d "$db" -v n_cells="$1" -v n_customers="$N" -v seed="$SEED" -f "$BENCH_DIR/generate.sql" >/dev/null
        mkdir -p "$BENCH_DIR/.cache"
        run "$BINDIR/pg_dump" -h "$TMP" -p "$PORT" -U postgres -Fc -n bench -d "$db" -f "$TMP/dump" &&
            cp "$TMP/dump" "$cache" && echo "  $db: generated in $(( $(date +%s) - t )) s, cached as ${cache#$ROOT/}"
    fi
    PSQL -d "$db" -f "$BENCH_DIR/setup.sql" >/dev/null
    PSQL -d "$db" -c "UPDATE allocation.rep SET capacity = NULL" -c "VACUUM ANALYZE" >/dev/null
    PA -d "$db" -c "SELECT '  ' || count(*) || ' territories, ' || sum(ST_NPoints(geom)) || ' vertices (max ' || max(ST_NPoints(geom)) || ')' FROM allocation.territory"
}

# timed INSERT ... SELECT in its own session, after a rolled-back warm-up of 200 rows
# timed DB CELLS AXIS TARGET SOURCE WHERE ROWS
timed () {
    local db=$1 cells=$2 axis=$3 target=$4 src=$5 where=$6 rows=$7
    PSQL -d "$db" <<EOF >/dev/null
BEGIN;
INSERT INTO bench.$target (id, $COLS) SELECT id + 2000000000, $COLS FROM $src WHERE seq <= 200;
ROLLBACK;
SELECT count(*) AS before FROM bench.$target \gset
SELECT clock_timestamp() AS t0 \gset
INSERT INTO bench.$target (id, $COLS) SELECT id, $COLS FROM $src WHERE $where ORDER BY seq;
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 AS ms \gset
\c postgres
INSERT INTO scaling SELECT '$axis', $cells, NULL, NULL, :before, $rows, '$target', :ms;
EOF
}
pair () {   # both targets, plain first: DB CELLS AXIS SOURCE WHERE ROWS
    timed "$1" "$2" "$3" customer_plain "$4" "$5" "$6"
    timed "$1" "$2" "$3" customer_m "$4" "$5" "$6"
}
empty () { PSQL -d "$1" -c "TRUNCATE bench.customer_plain; TRUNCATE bench.customer_m" -c "VACUUM bench.customer_plain, bench.customer_m" -c CHECKPOINT >/dev/null; }

# a new backend's memory after its first managed INSERT (rolled back): MODE DB CELLS
memory () {
    PSQL -d "$2" <<EOF >/dev/null
SELECT clock_timestamp() AS t0 \gset
BEGIN;
INSERT INTO bench.customer_m (id, $COLS) SELECT id + 2100000000, $COLS FROM bench.src_customer WHERE seq = 1;
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 AS ms \gset
ROLLBACK;
SELECT (SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE name LIKE 'allocation territory%') AS idx,
       (SELECT sum(total_bytes) FROM pg_backend_memory_contexts) AS total,
       allocation.cache_stats() AS cs \gset
\c postgres
INSERT INTO memory SELECT '$1', $3, :ms, :idx, :total, :'cs'::jsonb,
       (SELECT sum(size) FROM pg_shmem_allocations WHERE name LIKE 'allocation%');
EOF
}
PSQL -d postgres -c "CREATE TABLE memory (mode text, cells int, first_ms float8, index_ctx bigint, backend_total bigint, cs jsonb, shmem_fixed bigint)" >/dev/null

###############################################################################
section "data"
for c in $SCALE_CELLS; do load_db "$c"; done

###############################################################################
C1=${SCALE_CELLS%% *}   # axis 1 runs on the first cell count (1,000: run.sh's data)
section "axis 1: customers ($C1 cells)"
DB=sc_$C1
PSQL -d "$DB" >/dev/null <<EOF
CREATE TABLE bench.src_big AS
SELECT k::bigint * 100000000 + s.id AS id, k * $N + s.seq AS seq, s.name, s.tier, s.business_type, s.crop, s.tags,
       s.annual_volume, s.is_cooperative, s.phone, s.loc
  FROM bench.src_customer s, generate_series(0, $COPIES - 1) k ORDER BY k, s.seq;
CREATE INDEX ON bench.src_big (seq);
VACUUM ANALYZE bench.src_big;
EOF
for n in $((N / 10)) $N; do
    for _ in 1 2; do
        empty "$DB"
        pair "$DB" "$C1" customers bench.src_customer "seq <= $n" "$n"
    done
    echo "  $n customers into empty tables (twice): done"
done
empty "$DB"
for k in $(seq 0 $((COPIES - 1))); do
    pair "$DB" "$C1" growth bench.src_big "seq > $((k * N)) AND seq <= $(((k + 1) * N))" "$N"
done
echo "  $((COPIES * N)) customers in $COPIES statements of $N: done"
PA -d "$DB" -c "SELECT '  events in the log: ' || count(*) FROM allocation.event"

###############################################################################
section "axis 2: territories ($N customers)"
for c in $SCALE_CELLS; do
    for _ in 1 2; do
        empty "sc_$c"
        pair "sc_$c" "$c" territories bench.src_customer "true" "$N"
    done
    echo "  $c cells (twice): done"
done

###############################################################################
section "memory without shared_preload_libraries (one new backend per point)"
for c in $SCALE_CELLS; do memory backend "sc_$c" "$c"; done
section "memory with shared_preload_libraries = 'allocation' (restart)"
run "$BINDIR/pg_ctl" -D "$TMP/data" -w -m fast stop >/dev/null
start allocation
for c in $SCALE_CELLS; do
    memory shared_first "sc_$c" "$c"    # builds the shared copy
    memory shared "sc_$c" "$c"          # a new backend: attaches
done

###############################################################################
section "results"
PSQL -d postgres <<'EOF'
\pset footer off
\echo '-- territories and the index (cache_stats() of a new backend, not preloaded)'
SELECT cells, (cs->>'territories')::int AS territories, (cs->>'vertices')::bigint AS vertices,
       cs->>'mode' AS mode, round((cs->>'bytes')::numeric / 1048576, 1) AS index_mb,
       cs->>'bytes_per_vertex' AS bytes_per_vertex, round((cs->>'build_ms')::numeric) AS build_ms,
       round(first_ms::numeric) AS first_insert_ms
  FROM memory WHERE mode = 'backend' ORDER BY cells;
UPDATE scaling s SET territories = (m.cs->>'territories')::int, vertices = (m.cs->>'vertices')::bigint
  FROM memory m WHERE m.mode = 'backend' AND m.cells = s.cells;

\echo '-- cost per inserted row: INSERT ... SELECT, us per row'
WITH p AS (
    SELECT axis, cells, territories, customers_before, rows,
           min(ms) FILTER (WHERE target = 'customer_plain') * 1000 / rows AS plain_us,
           min(ms) FILTER (WHERE target = 'customer_m') * 1000 / rows AS managed_us
      FROM scaling GROUP BY 1, 2, 3, 4, 5)
SELECT axis, territories, customers_before AS rows_before, rows,
       round(plain_us::numeric, 2) AS plain_us, round(managed_us::numeric, 2) AS managed_us,
       round((managed_us - plain_us)::numeric, 2) AS added_us, round((managed_us / plain_us)::numeric, 2) AS ratio
  FROM p ORDER BY CASE axis WHEN 'customers' THEN 1 WHEN 'growth' THEN 2 ELSE 3 END, territories, customers_before, rows;

\echo '-- slopes (least squares)'
WITH p AS (
    SELECT axis, territories, customers_before,
           min(ms) FILTER (WHERE target = 'customer_plain') * 1000 / rows AS plain_us,
           min(ms) FILTER (WHERE target = 'customer_m') * 1000 / rows AS managed_us
      FROM scaling GROUP BY axis, territories, customers_before, rows)
SELECT 'managed us/row per million rows already in the table (1M growth)' AS slope,
       round((regr_slope(managed_us, customers_before) * 1e6)::numeric, 3) AS managed,
       round((regr_slope(plain_us, customers_before) * 1e6)::numeric, 3) AS plain,
       round((regr_slope(managed_us - plain_us, customers_before) * 1e6)::numeric, 3) AS added,
       round(avg(managed_us - plain_us)::numeric, 2) AS mean_added_us,
       round(regr_r2(managed_us, customers_before)::numeric, 2) AS r2,
       round((avg(managed_us) FILTER (WHERE customers_before < (SELECT max(customers_before) FROM p) / 2))::numeric, 2)
           || ' -> ' || round((avg(managed_us) FILTER (WHERE customers_before >= (SELECT max(customers_before) FROM p) / 2))::numeric, 2)
           AS managed_first_half_to_second_half
  FROM p WHERE axis = 'growth'
UNION ALL
SELECT 'managed us/row per 1,000 territories (100k customers)',
       round((regr_slope(managed_us, territories) * 1e3)::numeric, 3),
       round((regr_slope(plain_us, territories) * 1e3)::numeric, 3),
       round((regr_slope(managed_us - plain_us, territories) * 1e3)::numeric, 3),
       round(avg(managed_us - plain_us)::numeric, 2),
       round(regr_r2(managed_us, territories)::numeric, 2),
       string_agg(round(managed_us::numeric, 1)::text, ' -> ' ORDER BY territories)
  FROM p WHERE axis = 'territories';

\echo '-- memory per backend and shared memory per territory count'
SELECT m.cells, (b.cs->>'territories')::int AS territories, round((b.cs->>'vertices')::numeric / 1e6, 2) AS m_vertices,
       round(b.index_ctx::numeric / 1048576, 1) AS backend_mode_index_mb,
       round(b.backend_total::numeric / 1048576, 1) AS backend_mode_backend_mb,
       round((f.cs->>'shared_bytes')::numeric / 1048576, 1) AS shared_copy_mb,
       round(m.backend_total::numeric / 1048576, 1) AS shared_mode_backend_mb,
       round(f.first_ms::numeric) AS first_insert_building_ms, round(m.first_ms::numeric) AS first_insert_attaching_ms,
       round(m.shmem_fixed::numeric / 1024) AS fixed_shmem_kb, m.cs->>'index_mode' AS index_mode
  FROM memory m JOIN memory f ON f.cells = m.cells AND f.mode = 'shared_first'
                JOIN memory b ON b.cells = m.cells AND b.mode = 'backend'
 WHERE m.mode = 'shared' ORDER BY m.cells;
EOF
echo
echo "whole run: $(( $(date +%s) - T0 )) s; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
