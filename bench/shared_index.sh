#!/usr/bin/env bash
# bench/shared_index.sh: the territory index with and without shared_preload_libraries.
#
#   bash bench/shared_index.sh
#
# Builds the extension and installs it into a private directory (make install DESTDIR=...,
# loaded through Debian's extension_destdir setting: other installs into the system
# directories during the run cannot swap the library), then runs the same
# measurements in two throw-away clusters (pg_virtualenv) on the cached bench data
# (bench/.cache/*.dump, made by bench/run.sh; see there):
#   backend   allocation loaded per backend: every backend builds its own index
#   shared    shared_preload_libraries = 'allocation': one index per cluster
# and reports, per mode:
#   - the index: territories, vertices, its size, the first build's time;
#   - a NEW connection's first managed single-row INSERT (median and max of BENCH_NEW),
#     and that backend's memory for the index (pg_backend_memory_contexts);
#   - BENCH_CONC new connections started together, each doing its first managed INSERT:
#     latency median/max, the index's memory summed over the backends, their PSS
#     (/proc/<pid>/smaps_rollup), and the shared builds made (shared mode);
#   - the same right after a territory change (a new version: every backend needs it).
# Knobs: BENCH_CUSTOMERS, BENCH_CELLS, BENCH_SEED (which cached dump), BENCH_NEW=20,
# BENCH_CONC=20.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export BENCH_CUSTOMERS=${BENCH_CUSTOMERS:-100000}
export BENCH_CELLS=${BENCH_CELLS:-1000}
export BENCH_SEED=${BENCH_SEED:-42}
export BENCH_NEW=${BENCH_NEW:-20}
export BENCH_CONC=${BENCH_CONC:-20}
PG_BINDIR=/usr/lib/postgresql/15/bin
export PATH="$PG_BINDIR:$PATH"

if [ -z "${BENCH_MODE:-}" ]; then
    GEN_HASH=$(grep -v '^ *--' "$BENCH_DIR/generate.sql" | md5sum | cut -c1-8)
    export CACHE="$BENCH_DIR/.cache/data-c${BENCH_CELLS}-n${BENCH_CUSTOMERS}-s${BENCH_SEED}-${GEN_HASH}.dump"
    [ -f "$CACHE" ] || { echo "no cached data $CACHE: run bench/run.sh once (it generates and caches it)"; exit 1; }
    echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), git $(cd "$ROOT" && git rev-parse --short HEAD)) =="
    export INST=/tmp/allocation-shared-bench-inst
    rm -rf "$INST"
    (cd "$ROOT" && make -s PG_CONFIG="$PG_BINDIR/pg_config" >/tmp/allocation-shared-bench-build.log 2>&1 &&
        make -s install DESTDIR="$INST" PG_CONFIG="$PG_BINDIR/pg_config" >>/tmp/allocation-shared-bench-build.log 2>&1) \
        || { cat /tmp/allocation-shared-bench-build.log; exit 1; }
    chmod -R a+rX "$INST"
    echo "machine: $(nproc) cpu ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "data:    ${CACHE#$ROOT/}"
    for mode in backend shared; do
        opts=(-o shared_buffers=512MB -o max_connections=60 -o "extension_destdir=$INST")
        # the full path of the private copy, the one CREATE EXTENSION loads through extension_destdir
        [ "$mode" = shared ] && opts+=(-o "shared_preload_libraries=$INST$($PG_BINDIR/pg_config --pkglibdir)/allocation")
        echo
        echo "== mode: $mode =="
        BENCH_MODE=$mode pg_virtualenv -t -v 15 "${opts[@]}" bash "${BASH_SOURCE[0]}"
    done
    rm -rf "$INST"
    exit 0
fi

###############################################################################
# inside a throw-away cluster
###############################################################################
export PGDATABASE=allocation_bench
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
COLS='name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc'
WORK=$(mktemp -d /tmp/allocation-shared-bench.XXXXXX)
chmod 777 "$WORK"
trap 'rm -rf "$WORK"' EXIT
for _ in $(seq 1 30); do pg_isready -q && break; sleep 1; done
echo "shared_preload_libraries = '$("${PA[@]}" -d postgres -c 'SHOW shared_preload_libraries')'"
psql -X -q -d postgres -c "CREATE DATABASE allocation_bench" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true
pg_restore -d "$PGDATABASE" --no-owner "$CACHE"
"${P[@]}" -f "$BENCH_DIR/setup.sql" >/dev/null
"${P[@]}" -c "VACUUM ANALYZE" >/dev/null
# the library this run uses must be the one built here
"${PA[@]}" -c "SELECT allocation.cache_stats()->>'index_mode' IS NOT NULL" | grep -q t ||
    { echo "the loaded allocation library is not this build (no index_mode in cache_stats())"; exit 1; }
"${PA[@]}" -c "SELECT pg_backend_pid(), allocation.cache_stats() IS NOT NULL" >/dev/null
"${P[@]}" -c "CREATE TABLE bench.first_insert (experiment text, pid int, ms float8, index_bytes bigint, backend_bytes bigint, stats jsonb)"

# one new connection: its first managed INSERT (one row: src_customer seq = :seq, rolled back),
# timed inside the session
FIRST_SQL="SELECT clock_timestamp() AS t0 \\gset
BEGIN;
INSERT INTO bench.customer_m (id, $COLS) SELECT nextval('bench.single_id'), $COLS FROM bench.src_customer WHERE seq = :seq;
SELECT extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000 AS ms \\gset
ROLLBACK;
INSERT INTO bench.first_insert
SELECT :'experiment', pg_backend_pid(), :ms,
       (SELECT coalesce(sum(total_bytes), 0) FROM pg_backend_memory_contexts WHERE name LIKE 'allocation territory%'),
       (SELECT sum(total_bytes) FROM pg_backend_memory_contexts),
       allocation.cache_stats();"

report() {   # experiment
    "${PA[@]}" -F ' ' <<EOF
SELECT format('  %-22s n=%s  first INSERT median %s ms, max %s ms;  index memory per backend median %s kB (sum %s MB);  backend total median %s MB',
              '$1', count(*),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1), round(max(ms)::numeric, 1),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY index_bytes)::numeric / 1024, 0),
              round(sum(index_bytes)::numeric / 1048576, 1),
              round(percentile_cont(0.5) WITHIN GROUP (ORDER BY backend_bytes)::numeric / 1048576, 1))
  FROM bench.first_insert WHERE experiment = '$1';
SELECT format('    %s backends: index_mode %s, index memory %s kB, first INSERT median %s ms', count(*), stats->>'index_mode',
              round(index_bytes::numeric / 1024, 0), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 1))
  FROM bench.first_insert WHERE experiment = '$1' GROUP BY stats->>'index_mode', round(index_bytes::numeric / 1024, 0);
EOF
}

builds_made() { "${PA[@]}" -c "SELECT (allocation.cache_stats()->>'shared_builds_made')::int"; }

# the index itself: first build in this cluster
echo "-- the index (first build in this cluster)"
echo "$FIRST_SQL" | "${P[@]}" -v experiment=first -v seq=1 >/dev/null
"${PA[@]}" -F ' ' <<'EOF' | sed 's/^/  /'
SELECT format('territories %s, vertices %s, index_mode %s (%s), index %s MB (%s bytes/vertex), build %s ms, first INSERT %s ms',
              stats->>'territories', stats->>'vertices', stats->>'index_mode', stats->>'reason',
              round((stats->>'bytes')::numeric / 1048576, 1), stats->>'bytes_per_vertex', stats->>'build_ms', round(ms::numeric, 1))
  FROM bench.first_insert WHERE experiment = 'first';
EOF
if [ "$BENCH_MODE" = shared ]; then
    "${PA[@]}" -c "SELECT '  pg_shmem_allocations: ' || string_agg(name || ' ' || size || ' bytes', ', ') FROM pg_shmem_allocations WHERE name = 'allocation'"
    "${PA[@]}" -c "SELECT '  shared builds live ' || (s->>'shared_builds') || ', ' || round((s->>'shared_total_bytes')::numeric / 1048576, 1) || ' MB of dynamic shared memory' FROM allocation.cache_stats() s"
fi

# new connections one after another
echo "-- $BENCH_NEW new connections one after another, each: connect, first managed INSERT"
for i in $(seq 1 "$BENCH_NEW"); do
    echo "$FIRST_SQL" | "${P[@]}" -v experiment=sequential -v seq="$i" >/dev/null
done
report sequential

# BENCH_CONC new connections at once; they stay connected while their PSS is read
concurrent() {   # experiment, shared builds made before (read before any territory change)
    local before=$2 after i
    rm -f "$WORK"/go "$WORK"/done.*
    for i in $(seq 1 "$BENCH_CONC"); do
        (
            while [ ! -e "$WORK/go" ]; do sleep 0.01; done
            { echo "$FIRST_SQL"; echo "\\! touch $WORK/done.$i"; echo "SELECT pg_sleep(4);"; } |
                PGAPPNAME=shared-bench "${P[@]}" -v experiment="$1" -v seq="$i" >/dev/null
        ) &
    done
    sleep 0.5
    touch "$WORK/go"
    for _ in $(seq 1 600); do
        [ "$(ls "$WORK"/done.* 2>/dev/null | wc -l)" -ge "$BENCH_CONC" ] && break
        sleep 0.1
    done
    sleep 0.5
    local pss=0 p
    for p in $("${PA[@]}" -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'shared-bench'"); do
        p=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
        pss=$((pss + ${p:-0}))
    done
    wait
    after=$(builds_made)
    report "$1"
    echo "  PSS of the $BENCH_CONC backends (while connected): $((pss / 1024)) MB;  shared builds made meanwhile: $((after - before))"
}
echo "-- $BENCH_CONC new connections at once, index already built"
concurrent concurrent_warm "$(builds_made)"
echo "-- a territory change (a new version), then $BENCH_CONC new connections at once"
made=$(builds_made)
"${P[@]}" -c "UPDATE allocation.territory SET name = name || ' ' WHERE id = (SELECT min(id) FROM allocation.territory)"
concurrent concurrent_after_change "$made"
if [ "$BENCH_MODE" = shared ]; then
    "${PA[@]}" -c "SELECT '  after the runs: shared builds live ' || (s->>'shared_builds') || ', ' || round((s->>'shared_total_bytes')::numeric / 1048576, 1) || ' MB' FROM allocation.cache_stats() s"
fi
