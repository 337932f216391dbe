#!/usr/bin/env bash
# bench/run.sh: one command that builds and installs the extension (into a private copy of
# the server's installation), starts a throwaway cluster of it, generates (or restores the
# cached) data, and measures the engine
# against a plain table, against the lean PL/pgSQL reference (bench/reference_lean.sql) and
# against the full one (bench/reference.sql), and ends with the targets of issue 11.
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
#   BENCH_PRELOAD=1          start the cluster with shared_preload_libraries = 'allocation'
#   BENCH_PRIVATE=1          install into a private copy of the server's installation and run
#                            a throwaway cluster of it (default): nothing is installed into the
#                            machine's shared directories, and nobody else's `make install`
#                            can replace the library during the run.  BENCH_PRIVATE= installs
#                            into the system directories and uses pg_virtualenv, as before.
#   BENCH_INSTALL_LOCK=/tmp/allocation-install.lock   with BENCH_PRIVATE=, the build and
#                            `make install` run under flock on this file when it exists (the
#                            machine's shared install lock); empty = no lock.  Do not run this
#                            script itself under that lock: it would wait for itself.
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
export BENCH_PRELOAD=${BENCH_PRELOAD:-}
export BENCH_PRIVATE=${BENCH_PRIVATE-1}
BENCH_INSTALL_LOCK=${BENCH_INSTALL_LOCK-/tmp/allocation-install.lock}

SERVER_OPTS=(shared_buffers=1GB max_wal_size=8GB checkpoint_timeout=30min work_mem=64MB
             maintenance_work_mem=512MB max_connections=40)
[ -n "$BENCH_PRELOAD" ] && SERVER_OPTS+=(shared_preload_libraries=allocation)

if [ -z "${BENCH_IN_CLUSTER:-}" ]; then
    export BENCH_T0=$(date +%s)
    echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
    PRIV=
    if [ -n "$BENCH_PRIVATE" ]; then
        # A private copy of the server's installation (about 100 MB): this tree's build is
        # installed there, so another `make install` into the machine's shared directories
        # during the run cannot swap the library under the benchmark.  The server finds its
        # lib/ and share/ relative to its binary.
        PRIV=$(mktemp -d /tmp/allocation-bench-pg.XXXXXX)
        BINDIR=$(pg_config --bindir); SHAREDIR=$(pg_config --sharedir)
        mkdir -p "$PRIV$(dirname "$BINDIR")" "$PRIV$(dirname "$SHAREDIR")"
        cp -a "$(dirname "$BINDIR")/." "$PRIV$(dirname "$BINDIR")/"
        cp -a "$SHAREDIR" "$PRIV$(dirname "$SHAREDIR")/"
        export BENCH_SO="$PRIV$(pg_config --pkglibdir)/allocation.so"
        install_cmd='cd "$ROOT" && make -s 2>&1 && make -s install DESTDIR="$PRIV" 2>&1'
    else
        export BENCH_SO="$(pg_config --pkglibdir)/allocation.so"
        install_cmd='cd "$ROOT" && make -s 2>&1 && make -s install 2>&1'
    fi
    export PRIV
    ok=
    for attempt in 1 2 3 4 5; do
        lock=()
        [ -z "$PRIV" ] && [ -n "$BENCH_INSTALL_LOCK" ] && [ -e "$BENCH_INSTALL_LOCK" ] && lock=(flock "$BENCH_INSTALL_LOCK")
        if "${lock[@]}" bash -c "$install_cmd" > /tmp/allocation-bench-build.log; then
            ok=1
            break
        fi
        echo "build failed (attempt $attempt, see /tmp/allocation-bench-build.log); retrying in 30 s"
        sleep 30
    done
    [ -n "$ok" ] || { cat /tmp/allocation-bench-build.log; exit 1; }
    # the library this run installed (checked at every section: with BENCH_PRIVATE= the
    # machine's install is shared, and a backend started after someone else's
    # `make install` loads their build)
    export BENCH_SO_MD5=$(md5sum "$BENCH_SO" | cut -c1-32)
    export BENCH_IN_CLUSTER=1
    if [ -z "$PRIV" ]; then
        opts=()
        for o in "${SERVER_OPTS[@]}"; do opts+=(-o "$o"); done
        exec pg_virtualenv -t "${opts[@]}" bash "${BASH_SOURCE[0]}" "$@"
    fi
    # a throwaway cluster of the private installation, reached only through its own socket
    # directory (no TCP), as pg_virtualenv would set it up: fsync=off, owned by postgres
    as_pg=()
    [ "$(id -u)" = 0 ] && { chown -R postgres: "$PRIV"; as_pg=(runuser -u postgres --); }
    PGBIN="$PRIV$BINDIR"
    "${as_pg[@]}" "$PGBIN/initdb" -D "$PRIV/data" -U postgres -A trust -E UTF8 --no-sync >"$PRIV/initdb.log" 2>&1 ||
        { cat "$PRIV/initdb.log"; exit 1; }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$PRIV'"
        echo "port = 5432"
        echo "fsync = off"
        for o in "${SERVER_OPTS[@]}"; do echo "${o%%=*} = '${o#*=}'"; done
    } >> "$PRIV/data/postgresql.conf"
    cleanup() {
        "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PRIV/data" -m immediate -w stop >/dev/null 2>&1 || true
        rm -rf "$PRIV"
    }
    trap cleanup EXIT
    "${as_pg[@]}" "$PGBIN/pg_ctl" -D "$PRIV/data" -l "$PRIV/server.log" -w start >/dev/null ||
        { cat "$PRIV/server.log"; exit 1; }
    export PGHOST=$PRIV PGPORT=5432 PGUSER=postgres
    rc=0
    bash "${BASH_SOURCE[0]}" "$@" || rc=$?
    exit $rc
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
SO_CHANGED=
section() {   # TITLE: a section header with the time since the start; warns once if the library changed
    echo
    echo "== $* [t+$(( $(date +%s) - BENCH_T0 )) s] =="
    if [ -z "$SO_CHANGED" ] && [ "$(md5sum "$BENCH_SO" | cut -c1-32)" != "$BENCH_SO_MD5" ]; then
        SO_CHANGED="before '$*' (file time $(date -u -r "$BENCH_SO" '+%H:%M:%S UTC'))"
        echo "!! $BENCH_SO was replaced by another make install $SO_CHANGED:"
        echo "!! every backend started from now on runs another build; the numbers below are not this tree's"
    fi
}

psql -X -q -d postgres -c "CREATE DATABASE allocation_bench" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true

section "machine"
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "memory:      $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version')"
echo "postgis:     $("${PA[@]}" -c 'SELECT postgis_lib_version()') (GEOS $("${PA[@]}" -c 'SELECT postgis_geos_version()'))"
echo "allocation:  $("${PA[@]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet 2>/dev/null || echo ', with uncommitted changes'))"
echo "cluster:     $([ -n "${PRIV:-}" ] && echo "throwaway, of a private copy of the installation ($PRIV)" || echo "pg_virtualenv, the machine's installation")"
echo "settings:    shared_buffers=1GB, fsync=off, synchronous_commit=on, max_wal_size=8GB, shared_preload_libraries='$("${PA[@]}" -c 'SHOW shared_preload_libraries')', lc_collate=$("${PA[@]}" -c 'SHOW lc_collate')"
echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at start; other work on the machine skews every number)"

###############################################################################
section "data"
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
# the lean reference cuts 2.7 M vertices into pieces (about 30-50 s): in the background,
# during the untimed burn-in below
( t0=$(date +%s.%N); rc=0; "${P[@]}" -f "$BENCH_DIR/reference_lean.sql" > "$WORK/lean.log" 2>&1 || rc=$?
  echo "$t0 $(date +%s.%N) $rc" > "$WORK/lean.done" ) &
LEAN_PID=$!

###############################################################################
# Timed steps.  Each run is its own psql session: reset the target (untimed), warm it
# up (untimed: index, config, plans, buffers), then time the statement with
# clock_timestamp() around it (autocommit, so the commit is included).
###############################################################################
reset_sql() {   # target -> SQL that empties it and its engine/reference state
    case $1 in
        plain) echo "TRUNCATE bench.customer_plain;" ;;
        plain_ix) echo "TRUNCATE bench.customer_plain_ix;" ;;
        # the engine closes the registry and recounts loads; the managed tables share
        # the reps' capacities, so all are emptied
        managed|dup|managed_ix) echo "TRUNCATE bench.customer_m; TRUNCATE bench.customer_d; TRUNCATE bench.customer_mi;" ;;
        ref) echo "TRUNCATE bench.customer_ref; SELECT ref.reset();" ;;
        lean) echo "TRUNCATE bench.customer_lean; SELECT lean.reset();" ;;
        floor) echo "TRUNCATE bench.customer_plain; TRUNCATE bench.floor_a;" ;;
    esac
}
vacuum_sql() {
    case $1 in
        plain) echo "VACUUM ANALYZE bench.customer_plain;" ;;
        plain_ix) echo "VACUUM ANALYZE bench.customer_plain_ix;" ;;
        lean) echo "VACUUM ANALYZE bench.customer_lean; VACUUM ANALYZE lean.event;" ;;
        managed|dup|managed_ix) echo "VACUUM ANALYZE bench.customer_m; VACUUM ANALYZE bench.customer_d; VACUUM ANALYZE bench.customer_mi; VACUUM ANALYZE allocation.rep_load; VACUUM ANALYZE allocation.customer_state; VACUUM ANALYZE allocation.event; VACUUM ANALYZE allocation.identity; VACUUM ANALYZE allocation.identity_key;" ;;
        ref) echo "VACUUM ANALYZE bench.customer_ref; VACUUM ANALYZE ref.rep_load; VACUUM ANALYZE ref.assignment; VACUUM ANALYZE ref.event;" ;;
        floor) echo "VACUUM ANALYZE bench.customer_plain; VACUUM ANALYZE bench.floor_a; VACUUM ANALYZE bench.floor_e;" ;;
    esac
}
table_of() {
    case $1 in
        plain|floor) echo bench.customer_plain ;; plain_ix) echo bench.customer_plain_ix ;;
        managed) echo bench.customer_m ;; managed_ix) echo bench.customer_mi ;; dup) echo bench.customer_d ;;
        ref) echo bench.customer_ref ;; lean) echo bench.customer_lean ;;
    esac
}
warmup_sql() {   # untimed: source rows in buffers; backend caches (territory index,
                 # configuration, trigger function and plans) built by 200 rows rolled back
    echo "SELECT count(*) FROM bench.src_customer \\g /dev/null"
    echo "BEGIN; INSERT INTO $(table_of "$1") ($COLS) SELECT id + 800000000, name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq <= 200 ORDER BY seq; ROLLBACK;"
}

# run_timed STEP RUN TARGET "STATEMENT" ROWS ["AFTER"] -> prints ms (AFTER: untimed SQL run after it)
run_timed() {
    local step=$1 run=$2 target=$3 stmt=$4 rows=$5 after=${6:-}
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
$after
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
    local step=$1 run=$2 target=$3 stmt=$4 rows=$5 after=${6:-} ms
    step_wanted "$step" "$run" || return 0
    ms=$(run_timed "$step" "$run" "$target" "$stmt" "$rows" "$after")
    [ "$run" -eq 1 ] && FIRST_MS[$step]=$ms
    printf '  %-16s run %d: %10.1f ms  (%.1f us/row)\n' "$step" "$run" "$ms" "$(awk -v m="$ms" -v n="$rows" 'BEGIN {print m * 1000 / n}')"
}

INSERT_STMT() {   # table
    echo "INSERT INTO $1 ($COLS) SELECT $COLS FROM bench.src_customer ORDER BY seq;"
}

section "burn-in (untimed): one INSERT ... SELECT of $N customers into plain, dup, managed (and the indexed tables)"
# A fresh cluster pays for first touches (shared buffers the kernel must zero, relation
# extension) that a running server does not; one full round absorbs them for every target.
for target in plain plain_ix dup managed_ix managed; do
    run_timed "burnin_$target" 1 "$target" "$(INSERT_STMT "$(table_of "$target")")" "$N" >/dev/null
done
echo "  done"
wait "$LEAN_PID" || true
read -r lt0 lt1 lrc < "$WORK/lean.done"
[ "$lrc" = 0 ] || { cat "$WORK/lean.log"; exit 1; }
echo "  lean reference loaded (in the background): $("${PA[@]}" -c "SELECT count(*) || ' territory pieces of at most 128 vertices, ' || sum(ST_NPoints(geom)) || ' vertices' FROM lean.territory_part") ($(awk -v t="$lt0" -v n="$lt1" 'BEGIN {printf "%.1f", n - t}') s to cut and index)"

section "INSERT ... SELECT of $N customers (ORDER BY seq), interleaved rounds"
echo "   (_ix = the table with GiST(loc) + btree(owner) + btree(name); dup = managed with duplicate"
echo "    detection; lean = bench/reference_lean.sql; ref = bench/reference.sql. The managed"
echo "    variants run before managed in each round, so customer_m keeps the last round's decisions"
echo "    for the agreement check)"
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step insert_plain "$run" plain "$(INSERT_STMT bench.customer_plain)" "$N"
    do_step insert_plain_ix "$run" plain_ix "$(INSERT_STMT bench.customer_plain_ix)" "$N"
    do_step insert_dup "$run" dup "$(INSERT_STMT bench.customer_d)" "$N"
    # (the next step empties customer_mi: its owners are kept for a comparison with customer_m)
    do_step insert_managed_ix "$run" managed_ix "$(INSERT_STMT bench.customer_mi)" "$N" \
        "DROP TABLE IF EXISTS bench.mi_owner; CREATE TABLE bench.mi_owner AS SELECT id, owner FROM bench.customer_mi;"
    do_step insert_managed "$run" managed "$(INSERT_STMT bench.customer_m)" "$N"
    do_step insert_lean "$run" lean "$(INSERT_STMT bench.customer_lean)" "$N"
    do_step insert_ref "$run" ref "$(INSERT_STMT bench.customer_ref)" "$N"
done
# the lean reference's decisions of its last round, kept for bench/agreement_lean.sql
"${P[@]}" -c "SET client_min_messages = warning" -c "DROP TABLE IF EXISTS bench.lean_decision;
              CREATE TABLE bench.lean_decision AS
              SELECT c.id AS key, e.territory_id, c.owner, e.rep_id AS logged_owner
                FROM bench.customer_lean c LEFT JOIN lean.event e ON e.key = c.id::text"

###############################################################################
section "the write floor: the customer rows, state exceptions and ownership events of those decisions written by plain SQL"
# What the engine cannot avoid writing: the same customer rows, plus the state rows (pool
# and other exceptions) and ownership events the managed run just wrote, inserted by three
# plain statements into copies of allocation.customer_state and allocation.event (same
# columns, indexes and checks; no foreign keys, no triggers) in one transaction.  No
# decision is taken.
"${P[@]}" >/dev/null <<SQL
SET client_min_messages = warning;
DROP TABLE IF EXISTS bench.floor_a, bench.floor_e, bench.floor_src_a, bench.floor_src_e;
CREATE TABLE bench.floor_a (LIKE allocation.customer_state INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench.floor_e (LIKE allocation.event INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
CREATE TABLE bench.floor_src_a AS
SELECT a.* FROM allocation.customer_state a JOIN bench.src_customer s ON s.id::text = a.key
 WHERE a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass)
 ORDER BY s.seq;
CREATE TABLE bench.floor_src_e AS
SELECT e.* FROM allocation.event e JOIN bench.src_customer s ON s.id::text = e.key
 WHERE e.id > (SELECT max(id) FROM allocation.event WHERE kind = 'truncate')
   AND e.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'bench.customer_m'::regclass)
 ORDER BY s.seq;
SQL
echo "  state rows: $("${PA[@]}" -c "SELECT count(*) FROM bench.floor_src_a"), event rows: $("${PA[@]}" -c "SELECT count(*) FROM bench.floor_src_e")"
FLOOR_STMT="BEGIN;
$(INSERT_STMT bench.customer_plain)
INSERT INTO bench.floor_a SELECT managed_id, key, rep_id, team_id, territory_id, rule_id, source, pinned, reason, tier, crop, business_type, stage, stage_since, now() FROM bench.floor_src_a;
INSERT INTO bench.floor_e (id, at, actor, kind, managed_id, table_name, key, from_rep, to_rep, rule_id, reason, detail, team_id, territory_id, source, pinned, period, tier, crop, business_type, stage) SELECT nextval('allocation.event_id_seq'), clock_timestamp(), actor, kind, managed_id, table_name, key, from_rep, to_rep, rule_id, reason, detail, team_id, territory_id, source, pinned, period, tier, crop, business_type, stage FROM bench.floor_src_e;
COMMIT;"
run_timed burnin_floor 1 floor "$FLOOR_STMT" "$N" >/dev/null
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step insert_floor "$run" floor "$FLOOR_STMT" "$N"
done

###############################################################################
echo
"${P[@]}" -f "$BENCH_DIR/agreement.sql" 2>&1 | grep -v 'NOTICE'
EXT_MD5=$("${PA[@]}" -c "SELECT md5(string_agg(key || ',' || coalesce(ext_territory::text, '-') || ',' || coalesce(ext_rep::text, '-'), ';' ORDER BY key)) FROM bench.agree WHERE in_ext")

owner_md5() {   # TABLE -> md5 over (key, owner) of the table's rows: its owner column, not the engine's records
    "${PA[@]}" -c "SELECT md5(string_agg(id || ',' || coalesce(owner::text, '-'), ';' ORDER BY id)) FROM $1"
}
OWN_MD5=$(owner_md5 bench.customer_m)
OWN_MD5_IX=$(owner_md5 bench.mi_owner)   # the last managed_ix round: same rows and rules
echo "  md5(key, owner) of customer_m: $OWN_MD5; of customer_mi (CRM indexes): $OWN_MD5_IX ($([ "$OWN_MD5" = "$OWN_MD5_IX" ] && echo same || echo DIFFERENT))"

###############################################################################
section "COPY of $BENCH_COPY_ROWS customers (server-side file, same rows and order), PK only and with the CRM indexes"
COPYFILE="$("${PA[@]}" -c "SHOW data_directory")/bench_customers.copy"
"${P[@]}" -c "COPY (SELECT $COLS FROM bench.src_customer WHERE seq <= $BENCH_COPY_ROWS ORDER BY seq) TO '$COPYFILE'"
for run in $(seq 1 "$BENCH_REPEAT"); do
    do_step copy_plain "$run" plain "COPY bench.customer_plain ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
    do_step copy_plain_ix "$run" plain_ix "COPY bench.customer_plain_ix ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
    do_step copy_managed_ix "$run" managed_ix "COPY bench.customer_mi ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
    do_step copy_managed "$run" managed "COPY bench.customer_m ($COLS) FROM '$COPYFILE';" "$BENCH_COPY_ROWS"
done
COPY_SAME=n/a
if [ "$BENCH_COPY_ROWS" -eq "$N" ]; then
    COPY_MD5=$(owner_md5 bench.customer_m)
    if [ "$COPY_MD5" = "$OWN_MD5" ]; then
        COPY_SAME=yes
        echo "  COPY decided exactly like INSERT ... SELECT (md5(key, owner) $COPY_MD5)"
    else
        COPY_SAME=NO
        echo "  COPY decided DIFFERENTLY from INSERT ... SELECT: md5(key, owner) $COPY_MD5 vs $OWN_MD5"
    fi
fi

###############################################################################
section "the indexed fallback: allocation.territory_cache_max = 0 (no polygons in memory)"
# the same INSERT ... SELECT into customer_m, territories found by the GiST-indexed
# ST_Covers query instead of the memory index; decisions must be identical
do_step insert_indexed 1 managed "SET allocation.territory_cache_max = 0;
$(INSERT_STMT bench.customer_m)" "$N"
IDX_MD5=$(owner_md5 bench.customer_m)
if [ "$IDX_MD5" = "$OWN_MD5" ]; then
    echo "  the indexed fallback decided exactly like the memory index (md5(key, owner) $IDX_MD5)"
else
    echo "  the indexed fallback decided DIFFERENTLY: md5(key, owner) $IDX_MD5 vs $OWN_MD5"
fi

###############################################################################
section "territory index of one backend (allocation.cache_stats())"
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

section "first INSERT after connecting (cold) vs the next ones (warm), single rows, emptied tables"
for target in plain managed lean ref; do
    "${P[@]}" >/dev/null <<EOF
$(reset_sql "$target")
$(vacuum_sql "$target")
EOF
done
for target in plain managed lean ref; do
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
section "pgbench: one random customer per transaction, ${BENCH_PGBENCH_SECONDS} s per run, -M prepared"
PGB_TARGETS="plain managed lean"
for target in $PGB_TARGETS; do
    tbl=$(table_of "$target")
    cat > "$WORK/insert_$target.sql" <<EOF
\set s random(1, $N)
INSERT INTO $tbl ($COLS) SELECT nextval('bench.single_id'), name, tier, business_type, crop, tags, annual_volume, is_cooperative, phone, loc FROM bench.src_customer WHERE seq = :s;
EOF
done
printf '  %-8s %7s %10s %12s %12s %12s %12s %12s\n' target clients tps 'steady tps*' 'lat avg ms' 'p50 ms*' 'p95 ms*' 'first ms*'
for clients in 1 8; do
    for target in $PGB_TARGETS; do
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
section "where a managed INSERT spends its time (track_functions = all, untimed runs)"
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
    section "perf profile of a managed INSERT ... SELECT of $BULK customers"
    bash "$BENCH_DIR/profile.sh" "$BULK" || echo "  (profiling failed)"
fi

###############################################################################
section "the engine deciding what the lean reference decides: one territory_owner rule, no capacity"
# Last step: it changes the configuration (and puts it back afterwards).  Every rule is
# disabled but one, 'owner-only' (territory_owner within team field), and the capacities are
# lifted; the same INSERT ... SELECT into customer_m is timed once, and its owner column is
# compared with the lean reference's decisions (bench/agreement_lean.sql).
"${P[@]}" >/dev/null <<SQL
SET client_min_messages = warning;
$(reset_sql managed)
CREATE TABLE bench.saved_rule AS SELECT id, enabled FROM allocation.rule;
CREATE TABLE bench.saved_capacity AS SELECT id, capacity FROM allocation.rep;
UPDATE allocation.rule SET enabled = false WHERE enabled;
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
VALUES ('owner-only', 50, 'team', 2, 'territory_owner');
UPDATE allocation.rep SET capacity = NULL WHERE capacity IS NOT NULL;
SQL
do_step insert_owner_only 1 managed "$(INSERT_STMT bench.customer_m)" "$N"
"${P[@]}" -f "$BENCH_DIR/agreement_lean.sql" 2>&1 | grep -v 'NOTICE'
"${P[@]}" >/dev/null <<SQL
SET client_min_messages = warning;
$(reset_sql managed)
DELETE FROM allocation.rule WHERE name = 'owner-only';
UPDATE allocation.rule r SET enabled = s.enabled FROM bench.saved_rule s WHERE s.id = r.id AND r.enabled IS DISTINCT FROM s.enabled;
UPDATE allocation.rep r SET capacity = s.capacity FROM bench.saved_capacity s WHERE s.id = r.id AND r.capacity IS DISTINCT FROM s.capacity;
DROP TABLE bench.saved_rule, bench.saved_capacity;
SQL

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
IPI=$(med insert_plain_ix); IMI=$(med insert_managed_ix); IL=$(med insert_lean); IO=$(med insert_owner_only)
IF=$(med insert_floor); IX=$(med insert_indexed)
CP=$(med copy_plain); CM=$(med copy_managed); CPI=$(med copy_plain_ix); CMI=$(med copy_managed_ix)
DIS=$("${PA[@]}" -c "SELECT count(*) FROM bench.agree WHERE ext_territory IS DISTINCT FROM ref_territory OR ext_rep IS DISTINCT FROM ref_rep OR NOT in_ext OR NOT in_ref")
NAG=$("${PA[@]}" -c "SELECT count(*) FROM bench.agree")
REF_MD5=$("${PA[@]}" -c "SELECT md5(string_agg(key || ',' || coalesce(ref_territory::text, '-') || ',' || coalesce(ref_rep::text, '-'), ';' ORDER BY key)) FROM bench.agree WHERE in_ref")
read -r LDIS LCMP LTDIS < <("${PA[@]}" -F ' ' -c "
    SELECT count(*) FILTER (WHERE (class IN ('no_territory', 'owner_rep') AND lean_owner IS DISTINCT FROM ext_owner) OR NOT in_lean OR NOT in_ext),
           count(*) FILTER (WHERE class IN ('no_territory', 'owner_rep')),
           count(*) FILTER (WHERE lean_territory IS DISTINCT FROM ref_territory)
      FROM bench.agree_lean")
ms_of() { printf '%10.1f ms (median of %s)' "$1" "$(nrun "$2")"; }

section "summary"
echo "customers: $N; territories: $("${PA[@]}" -c "SELECT count(*) FROM allocation.territory"); vertices: $("${PA[@]}" -c "SELECT sum(ST_NPoints(geom)) FROM allocation.territory")"
echo "INSERT ... SELECT  plain:                       $(ms_of "$IP" insert_plain)"
echo "INSERT ... SELECT  managed:                     $(ms_of "$IM" insert_managed)"
echo "INSERT ... SELECT  plain, CRM indexes:          $(ms_of "$IPI" insert_plain_ix)"
echo "INSERT ... SELECT  managed, CRM indexes:        $(ms_of "$IMI" insert_managed_ix)"
echo "INSERT ... SELECT  lean reference:              $(ms_of "$IL" insert_lean)"
echo "INSERT ... SELECT  full reference:              $(ms_of "$IR" insert_ref)"
echo "INSERT ... SELECT  managed, owner-only rule:    $(ms_of "$IO" insert_owner_only)"
echo "INSERT ... SELECT  managed + duplicate detection: $(ms_of "$ID" insert_dup)"
echo "INSERT ... SELECT  managed, indexed fallback:   $(ms_of "$IX" insert_indexed)"
echo "write floor (customer + registry + audit rows by plain SQL): $(ms_of "$IF" insert_floor)"
echo "COPY               plain:                       $(ms_of "$CP" copy_plain), $BENCH_COPY_ROWS rows"
echo "COPY               managed:                     $(ms_of "$CM" copy_managed)"
echo "COPY               plain, CRM indexes:          $(ms_of "$CPI" copy_plain_ix)"
echo "COPY               managed, CRM indexes:        $(ms_of "$CMI" copy_managed_ix)"
echo "managed/plain INSERT ratio: $(ratio "$IM" "$IP"); with CRM indexes: $(ratio "$IMI" "$IPI")"
echo "managed/plain COPY ratio: $(ratio "$CM" "$CP"); with CRM indexes: $(ratio "$CMI" "$CPI")"
echo "lean reference/managed ratio: $(ratio "$IL" "$IM"); lean reference/managed with the owner-only rule: $(ratio "$IL" "$IO")"
echo "full reference/managed ratio: $(ratio "$IR" "$IM")"
echo "managed with duplicate detection/plain INSERT ratio: $(ratio "$ID" "$IP")"
echo "write floor/plain ratio: $(ratio "$IF" "$IP"); managed/write floor ratio: $(ratio "$IM" "$IF")"
echo "indexed fallback/managed ratio: $(ratio "$IX" "$IM") (decisions identical: $([ "$IDX_MD5" = "$OWN_MD5" ] && echo yes || echo NO))"
echo "COPY decided like INSERT ... SELECT: $COPY_SAME; CRM-indexed table decided like customer_m: $([ "$OWN_MD5" = "$OWN_MD5_IX" ] && echo yes || echo NO)"
for c in 1 8; do
    echo "pgbench single-row INSERT, $c client(s): p50 latency managed/plain $(ratio "$(med pgbench_managed_c${c}_p50)" "$(med pgbench_plain_c${c}_p50)"), lean/managed $(ratio "$(med pgbench_lean_c${c}_p50)" "$(med pgbench_managed_c${c}_p50)") (p50 plain $(med pgbench_plain_c${c}_p50) ms, managed $(med pgbench_managed_c${c}_p50) ms, lean $(med pgbench_lean_c${c}_p50) ms; steady tps plain $(printf %.0f "$(med pgbench_plain_c${c}_steady)"), managed $(printf %.0f "$(med pgbench_managed_c${c}_steady)"), lean $(printf %.0f "$(med pgbench_lean_c${c}_steady)"))"
done
echo "territory index per backend: $(echo "$STATS" | sed 's/[{}"]//g'); build $(printf %.1f "$(med index_build)") ms"
echo "single-row INSERT managed: cold (first after connecting) $(printf %.1f "$(med cold_managed)") ms, warm $(printf %.2f "$(med warm_managed)") ms (plain: cold $(printf %.1f "$(med cold_plain)") ms, warm $(printf %.2f "$(med warm_plain)") ms; lean: cold $(printf %.1f "$(med cold_lean)") ms, warm $(printf %.2f "$(med warm_lean)") ms)"
echo "agreement with the full reference: $DIS disagreements of $NAG"
echo "md5(key, territory, owner) extension: $EXT_MD5"
echo "md5(key, territory, owner) reference: $REF_MD5"
echo "agreement with the lean reference (owner-only rule set): $LDIS disagreements of $LCMP compared; lean winner territory vs the full reference's: $LTDIS differ"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -n "$SO_CHANGED" ] && echo "!! allocation.so was replaced by another make install $SO_CHANGED: the numbers after that point are of another build"
TOTAL_S=$(( $(date +%s) - BENCH_T0 ))
echo "total wall time: $TOTAL_S s"

###############################################################################
# The targets of issue 11, every ratio from this one run
###############################################################################
# target NAME MEASURED OP LIMIT UNIT
target() {
    awk -v n="$1" -v m="$2" -v op="$3" -v l="$4" -v u="$5" 'BEGIN {
        ok = (op == "<=") ? (m <= l) : (op == ">=") ? (m >= l) : (m == l);
        printf "  %-64s %10s%-2s %4s %-8s %s\n", n, m, u, op, l u, ok ? "PASS" : "FAIL" }'
}
section "issue 11 targets (bash bench/run.sh, $(nproc) cores, $N customers, git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
printf '  %-64s %12s %4s %-8s %s\n' target measured '' limit result
target "managed/plain INSERT ... SELECT, primary key only" "$(ratio "$IM" "$IP")" '<=' 3 x
target "managed/plain COPY, primary key only" "$(ratio "$CM" "$CP")" '<=' 3 x
target "managed/plain INSERT ... SELECT, GiST+btree(owner)+btree(name)" "$(ratio "$IMI" "$IPI")" '<=' 2 x
target "managed/plain COPY, GiST+btree(owner)+btree(name)" "$(ratio "$CMI" "$CPI")" '<=' 2 x
target "lean PL/pgSQL reference/managed, per row (INSERT ... SELECT)" "$(ratio "$IL" "$IM")" '>=' 5 x
target "pgbench single-row INSERT p50 managed/plain, 1 client" "$(ratio "$(med pgbench_managed_c1_p50)" "$(med pgbench_plain_c1_p50)")" '<=' 1.5 x
target "pgbench single-row INSERT p50 managed/plain, 8 clients" "$(ratio "$(med pgbench_managed_c8_p50)" "$(med pgbench_plain_c8_p50)")" '<=' 1.5 x
target "disagreements with the full reference (of $NAG)" "$DIS" '==' 0 ''
target "disagreements with the lean reference (of $LCMP compared)" "$LDIS" '==' 0 ''
target "first managed INSERT of a new connection, ms (median of 3)" "$(printf %.1f "$(med cold_managed)")" '<=' 50 ''
target "whole bench/run.sh, s" "$TOTAL_S" '<=' 720 ''
echo "  (for information, no target: full reference/managed $(ratio "$IR" "$IM")x; lean/managed with the"
echo "   owner-only rule set $(ratio "$IL" "$IO")x; the lean trigger's winner territory differs from the"
echo "   whole polygons' (ST_Covers) for $LTDIS customers: points on a ring that ST_Subdivide's cuts moved;"
echo "   the territory-index memory targets need BENCH_PRELOAD=1 and pg_shmem_allocations, not measured here)"
[ -n "$SO_CHANGED" ] && echo "  !! NOT this tree's numbers from the step before which allocation.so was replaced: $SO_CHANGED"
exit 0
