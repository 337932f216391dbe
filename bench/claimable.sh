#!/usr/bin/env bash
# bench/claimable.sh: a rep's pool screen at scale (issue 11).  Builds a public pool of
# 100,000 customers (synthetic points, a CRM table with GiST on location), claim policies, a
# few hundred locks, disputes, pending suggestions, protections and cooldowns, then times
# allocation.claimable_page() (first page of 20: nearest to a point, newest first; with and
# without the reasons of the blocked ones) and allocation.claimable_count(), median of
# CLAIMABLE_RUNS runs each, with the ratio to the targets (page <= 50 ms, count <= 1 s).
#
#   flock /tmp/allocation-install.lock make install && bash bench/claimable.sh
#                                       # the install under the shared lock, the bench without it
#
# Knobs (environment):
#   CLAIMABLE_CUSTOMERS=100000   customers in the pool
#   CLAIMABLE_RUNS=9             timed runs per query (after one warm-up)
#   CLAIMABLE_SERVER=1           use the server PGHOST/PGPORT/PGUSER point at (a database
#                                allocation_claimable is created there, and dropped at the end)
#                                instead of a throwaway pg_virtualenv cluster
# See bench/README.md, section "The rep's pool screen at scale (issue 11)".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export CLAIMABLE_CUSTOMERS=${CLAIMABLE_CUSTOMERS:-100000}
export CLAIMABLE_RUNS=${CLAIMABLE_RUNS:-9}

if [ -z "${CLAIMABLE_IN_CLUSTER:-}" ] && [ -z "${CLAIMABLE_SERVER:-}" ]; then
    export CLAIMABLE_IN_CLUSTER=1
    port=
    for p in $(seq 5433 5499); do
        if [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] &&
           ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            port=$p
            break
        fi
    done
    exec pg_virtualenv -t -c "-p ${port:-5432}" -o shared_buffers=256MB -o work_mem=16MB \
        bash "${BASH_SOURCE[0]}" "$@"
fi

export PGDATABASE=allocation_claimable
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS allocation_claimable" -c "CREATE DATABASE allocation_claimable" >/dev/null
[ -n "${CLAIMABLE_SERVER:-}" ] && [ -z "${CLAIMABLE_KEEP:-}" ] && trap 'psql -X -q -d postgres -c "DROP DATABASE IF EXISTS allocation_claimable" >/dev/null' EXIT
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true

echo "== machine =="
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version'), shared_buffers=$("${PA[@]}" -c 'SHOW shared_buffers'), work_mem=$("${PA[@]}" -c 'SHOW work_mem')"
echo "allocation:  $("${PA[@]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src sql_src 2>/dev/null || echo ', with uncommitted changes to src/ or sql_src/'))"
echo
echo "== setup: $CLAIMABLE_CUSTOMERS customers into the pool =="
t0=$(date +%s.%N)
"${P[@]}" -c "SELECT set_config('bench.n', '$CLAIMABLE_CUSTOMERS', false)" -f "$BENCH_DIR/claimable_setup.sql" >/dev/null
echo "setup: $(echo "$(date +%s.%N) - $t0" | bc) s; pool: $("${PA[@]}" -c "SELECT count(*) FROM allocation.customer_state WHERE rep_id IS NULL") customers"
echo
echo "== timings (ms, server side; median of $CLAIMABLE_RUNS runs after a warm-up) =="
psql -X -v ON_ERROR_STOP=1 -v runs="$CLAIMABLE_RUNS" -f "$BENCH_DIR/claimable_run.sql"
