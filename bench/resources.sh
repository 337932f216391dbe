#!/usr/bin/env bash
# bench/resources.sh: resource grants under concurrency (issue #4).  pgbench makes 100,000 grant
# attempts from 8 clients against one pool of 1,000 units with a per-customer and a per-rep cap
# (500 customers x 3 and 20 reps x 60 both exceed the pool), a watcher samples the invariants while
# it runs, and afterwards every invariant is checked: granted total = total - remaining = the units
# available (the pool runs out), no customer or rep over its cap, the use counters = the grants,
# outcomes = requests = audit log.  An optional phase 2 mixes in releases (which serve the
# waitlist).  Prints total granted, cap violations, throughput and "violations: N"; exits 0 when
# all hold, otherwise 1 (also on any unexpected error, a deadlock included).
#
#   bash bench/resources.sh         # builds and installs, then runs in a throwaway cluster
#
# Knobs (environment):
#   RESOURCES_CLIENTS=8 RESOURCES_JOBS=2    pgbench -c / -j
#   RESOURCES_TX=12500                      phase 1: transactions (= grant attempts) per client; >= 100,000 in all
#   RESOURCES_TX2=100                       phase 2 (requests and releases): per client; 0 = skip
#   RESOURCES_RELEASE_PCT=25                phase 2: share of attempts that release a random grant
#   RESOURCES_UNITS=1000                    the pool's total
#   RESOURCES_CUSTOMER_CAP=3 RESOURCES_REP_CAP=60   per_customer_cap / per_rep_cap of the pool
#   RESOURCES_CUSTOMERS=500 RESOURCES_REPS=20 RESOURCES_HOT_REPS=5
#                                           reps 1..HOT own the first half of the customers, the
#                                           other reps the second half (customers are drawn uniformly)
#   RESOURCES_WATCH_INTERVAL=0.5            seconds between the watcher's snapshots
#   RESOURCES_MIN_ATTEMPTS=100000           fewer recorded phase-1 attempts than this fails the run
#   RESOURCES_PROGRESS=15                   pgbench -P: throughput every N seconds
#   RESOURCES_NO_INSTALL=1                  skip make && make install
#   RESOURCES_PORT=                         port of the throwaway cluster (default: the first free from 5433)
# See bench/README.md, section "Resource grants under concurrency (issue #4)".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export RESOURCES_CLIENTS=${RESOURCES_CLIENTS:-8}
export RESOURCES_JOBS=${RESOURCES_JOBS:-2}
export RESOURCES_TX=${RESOURCES_TX:-12500}
export RESOURCES_TX2=${RESOURCES_TX2:-100}
export RESOURCES_RELEASE_PCT=${RESOURCES_RELEASE_PCT:-25}
export RESOURCES_UNITS=${RESOURCES_UNITS:-1000}
export RESOURCES_CUSTOMER_CAP=${RESOURCES_CUSTOMER_CAP:-3}
export RESOURCES_REP_CAP=${RESOURCES_REP_CAP:-60}
export RESOURCES_CUSTOMERS=${RESOURCES_CUSTOMERS:-500}
export RESOURCES_REPS=${RESOURCES_REPS:-20}
export RESOURCES_HOT_REPS=${RESOURCES_HOT_REPS:-5}
export RESOURCES_WATCH_INTERVAL=${RESOURCES_WATCH_INTERVAL:-0.5}
export RESOURCES_MIN_ATTEMPTS=${RESOURCES_MIN_ATTEMPTS:-100000}
export RESOURCES_PROGRESS=${RESOURCES_PROGRESS:-15}

if [ -z "${RESOURCES_IN_CLUSTER:-}" ]; then
    if [ -z "${RESOURCES_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        if ! (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-resources-build.log; then
            cat /tmp/allocation-resources-build.log
            exit 1
        fi
    fi
    export RESOURCES_IN_CLUSTER=1
    export RESOURCES_T0=$(date +%s)      # after the build
    # the git state, read here (the cluster side runs as postgres, which git may not trust)
    RESOURCES_GIT="git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')"
    if ! (cd "$ROOT" && git diff --quiet HEAD -- src sql_src 2>/dev/null); then
        RESOURCES_GIT="$RESOURCES_GIT, with uncommitted changes to src/ or sql_src/"
    fi
    export RESOURCES_GIT
    # a port no other (virtual) cluster uses: pg_virtualenv would take 5432 even when another
    # pg_virtualenv already runs there
    port=${RESOURCES_PORT:-}
    if [ -z "$port" ]; then
        for p in $(seq 5433 5499); do
            if [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] &&
               ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                port=$p
                break
            fi
        done
    fi
    # pg_virtualenv: a temporary cluster.  Run as root it would use the one global 15/regress
    # cluster (refused when another run has it), so root runs it as postgres: a private work dir.
    if [ "$(id -u)" = 0 ]; then
        exec runuser -u postgres -- pg_virtualenv -t -c "-p ${port:-5432}" -o shared_buffers=256MB -o max_connections=40 \
            bash "$BENCH_DIR/resources.sh" "$@"
    fi
    exec pg_virtualenv -t -c "-p ${port:-5432}" -o shared_buffers=256MB -o max_connections=40 \
        bash "$BENCH_DIR/resources.sh" "$@"
fi

###############################################################################
# Inside the throwaway cluster (PGHOST/PGPORT/PGUSER set by pg_virtualenv)
###############################################################################
export PGDATABASE=allocation_resources
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
WORK=$(mktemp -d /tmp/allocation-resources.XXXXXX)
WATCHER=
cleanup() {
    [ -n "$WATCHER" ] && kill "$WATCHER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

psql -X -q -d postgres -c "CREATE DATABASE allocation_resources" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true

q() { "${PA[@]}" -c "$1"; }
TOTAL=$((RESOURCES_CLIENTS * RESOURCES_TX))
RC1= RC2= WALL1= WALL2= TPS1= TPS2=
echo
echo "== machine =="
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "postgresql:  $(q 'SHOW server_version')"
echo "allocation:  $(q "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") ($RESOURCES_GIT)"
echo "settings:    shared_buffers=256MB, fsync=off (pg_virtualenv), synchronous_commit=on, deadlock_timeout=$(q 'SHOW deadlock_timeout'), default_transaction_isolation=$(q 'SHOW default_transaction_isolation')"
echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"

echo
echo "== pool, reps and customers =="
"${P[@]}" -v n_customers="$RESOURCES_CUSTOMERS" -v n_reps="$RESOURCES_REPS" -v n_hot="$RESOURCES_HOT_REPS" \
    -v units="$RESOURCES_UNITS" -v customer_cap="$RESOURCES_CUSTOMER_CAP" -v rep_cap="$RESOURCES_REP_CAP" \
    -f "$BENCH_DIR/resources_setup.sql" >/dev/null
POOL=$(q "SELECT id FROM allocation.resource_pool WHERE code = 'bench-samples'")
# every maximal state (no request of 1 unit can be granted) has every rep at its cap or all its
# customers at theirs: at least this many units granted, so the pool must run out when >= units
MAX_BY_CAPS=$(q "SELECT sum(least($RESOURCES_REP_CAP, $RESOURCES_CUSTOMER_CAP * n)) FROM (
                   SELECT count(*) AS n FROM resources.customer GROUP BY owner_id) x")
echo "pool:        'bench-samples' (id $POOL): total $RESOURCES_UNITS = remaining, integral, per_customer_cap $RESOURCES_CUSTOMER_CAP, per_rep_cap $RESOURCES_REP_CAP, no approval, no season"
echo "customers:   $RESOURCES_CUSTOMERS, each owned by a rep ($RESOURCES_CUSTOMERS x $RESOURCES_CUSTOMER_CAP = $((RESOURCES_CUSTOMERS * RESOURCES_CUSTOMER_CAP)) units by the customer cap)"
echo "reps:        $RESOURCES_REPS ($RESOURCES_REPS x $RESOURCES_REP_CAP = $((RESOURCES_REPS * RESOURCES_REP_CAP)) units by the rep cap); reps 1-$RESOURCES_HOT_REPS own the first half of the customers,"
echo "             reps $((RESOURCES_HOT_REPS + 1))-$RESOURCES_REPS the second half: $(q "SELECT string_agg(format('%s reps x %s', n_reps, n), ', ' ORDER BY n DESC) FROM (
                   SELECT n, count(*) AS n_reps FROM (SELECT count(*) AS n FROM resources.customer GROUP BY owner_id) x GROUP BY n) y") customers"
echo "             both caps together allow at least $MAX_BY_CAPS units before no 1-unit request can be granted"
echo "phase 1:     $RESOURCES_CLIENTS clients x $RESOURCES_TX transactions = $TOTAL grant attempts, one per transaction:"
echo "             request_resource(pool, tbl, random customer, qty) by the manager (the superuser session),"
echo "             qty 1 (59%), 2 (40%) or 1.5 (1%, not a whole box: LA092)"
if [ "$RESOURCES_TX2" -gt 0 ]; then
    echo "phase 2:     $RESOURCES_CLIENTS clients x $RESOURCES_TX2 transactions: $RESOURCES_RELEASE_PCT% release_grant(random current grant) (serves the waitlist),"
    echo "             the rest requests as in phase 1"
fi
echo "             each attempt catches its refusal (and any error) and records the outcome"
if [ "$MAX_BY_CAPS" -lt "$RESOURCES_UNITS" ]; then
    echo "FAIL: the caps allow only $MAX_BY_CAPS units: the pool of $RESOURCES_UNITS cannot run out"
    exit 1
fi

# run_phase PHASE TX RELEASE_PCT: pgbench with the watcher sampling the invariants, then the checks
run_phase() {
    local phase=$1 tx=$2 release_pct=$3 rc t0 t1
    echo
    echo "== phase $phase: pgbench -c $RESOURCES_CLIENTS -j $RESOURCES_JOBS -t $tx (watcher snapshot every ${RESOURCES_WATCH_INTERVAL} s) =="
    rm -f "$WORK/stop"
    (
        while [ ! -e "$WORK/stop" ]; do
            psql -X -q -c "INSERT INTO resources.sample (phase, out_of_range, granted_mismatch, over_customer_cap, over_rep_cap,
                                                         use_mismatch, granted, remaining, waitlisted)
                           SELECT $phase, * FROM resources.invariants" >/dev/null 2>>"$WORK/watcher.err" || true
            sleep "$RESOURCES_WATCH_INTERVAL"
        done
    ) &
    WATCHER=$!
    t0=$(date +%s.%N)
    set +e
    pgbench -n -M prepared -c "$RESOURCES_CLIENTS" -j "$RESOURCES_JOBS" -t "$tx" -P "$RESOURCES_PROGRESS" \
        -D pool="$POOL" -D n_customers="$RESOURCES_CUSTOMERS" -D release_pct="$release_pct" -D phase="$phase" \
        -f "$BENCH_DIR/resources_pgbench.sql" > "$WORK/pgbench$phase.out" 2>&1
    rc=$?
    set -e
    t1=$(date +%s.%N)
    touch "$WORK/stop"
    wait "$WATCHER" || true
    WATCHER=
    grep -v '^pgbench (' "$WORK/pgbench$phase.out" | sed 's/^/  /' || true
    if [ -s "$WORK/watcher.err" ]; then
        echo "  watcher errors:"; sed 's/^/    /' "$WORK/watcher.err"; rm -f "$WORK/watcher.err"
    fi
    eval "RC$phase=$rc"
    eval "WALL$phase=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')"
    eval "TPS$phase=$(awk -F'= ' '/^tps/ {split($2, a, " "); printf "%.0f", a[1]; exit}' "$WORK/pgbench$phase.out")"
    t0=$(date +%s.%N)
    "${P[@]}" -v phase="$phase" -f "$BENCH_DIR/resources_check.sql"
    echo "  invariants checked in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
    # the pool after the phase (for the summary)
    eval "GRANTED$phase=$(q "SELECT coalesce(sum(q.qty), 0) FROM allocation.resource_request q
                               WHERE q.pool_id = $POOL AND q.status = 'granted'")"
    eval "REMAINING$phase=$(q "SELECT remaining FROM allocation.resource_pool WHERE id = $POOL")"
}

run_phase 1 "$RESOURCES_TX" 0
if [ "$RESOURCES_TX2" -gt 0 ]; then run_phase 2 "$RESOURCES_TX2" "$RESOURCES_RELEASE_PCT"; fi

###############################################################################
"${P[@]}" -f "$BENCH_DIR/resources_report.sql"

echo "== one session alone (no concurrency, no lock waits): 20 calls of each, each in its own transaction, rolled back =="
for i in $(seq 20); do echo "BEGIN; SELECT 'request', resources.time_request($POOL, $RESOURCES_CUSTOMERS), 0, 0; ROLLBACK;"; done > "$WORK/timing.sql"
for i in $(seq 20); do echo "BEGIN; SELECT 'release', * FROM resources.time_release($POOL); ROLLBACK;"; done >> "$WORK/timing.sql"
"${PA[@]}" -f "$WORK/timing.sql" | awk -F'|' -v remaining="$(q "SELECT remaining FROM allocation.resource_pool WHERE id = $POOL")" '
    { n[$1]++; s[$1] += $2; if ($2 > m[$1]) m[$1] = $2; served[$1] += $3; walked[$1] += $4 }
    END {
        printf "  request_resource: avg %.2f ms, max %.2f ms (of 1 unit; remaining %s)\n", s["request"] / n["request"], m["request"], remaining
        printf "  release_grant:    avg %.2f ms, max %.2f ms; per release %.1f waitlisted requests served and %.1f walked that stay waitlisted\n",
               s["release"] / n["release"], m["release"], served["release"] / n["release"], walked["release"] / n["release"]
    }'
echo
echo "== the checks can fail: caps tightened, total, counters and the audit log corrupted in a rolled-back transaction (every n must be > 0) =="
"${P[@]}" -v phase=0 <<EOF
BEGIN;
UPDATE allocation.resource_pool SET per_customer_cap = 1, per_rep_cap = 1, total = total + 1 WHERE id = $POOL;
UPDATE allocation.resource_customer_use SET used = used + 1
 WHERE (pool_id, managed_id, key) IN (SELECT pool_id, managed_id, key FROM allocation.resource_customer_use
                                       WHERE pool_id = $POOL AND used > 0 ORDER BY key LIMIT 1);
UPDATE allocation.resource_rep_use SET used = used + 1
 WHERE (pool_id, rep_id) IN (SELECT pool_id, rep_id FROM allocation.resource_rep_use WHERE pool_id = $POOL AND used > 0 ORDER BY rep_id LIMIT 1);
INSERT INTO allocation.event (kind, managed_id, table_name, key, detail)
SELECT 'resource_granted', q.managed_id, 'resources.customer', q.key, jsonb_build_object('request_id', q.id, 'pool_id', q.pool_id, 'qty', q.qty)
  FROM allocation.resource_request q WHERE q.pool_id = $POOL AND q.status = 'granted' ORDER BY q.id LIMIT 1;
\i $BENCH_DIR/resources_check.sql
\pset footer off
SELECT ord AS "#", what AS invariant, n FROM resources.violation WHERE phase = 0 AND ord IN (2, 4, 5, 6, 7, 8) ORDER BY ord;
\pset tuples_only on
\pset format unaligned
\o $WORK/selftest
SELECT count(*) FROM resources.violation WHERE phase = 0 AND ord IN (2, 4, 5, 6, 7, 8) AND n > 0;
\o
ROLLBACK;
EOF
SELFTEST=$(cat "$WORK/selftest")

EXPECTED="'granted', 'waitlisted', 'released', 'noop', 'LA092', 'LA093', 'LA094', 'LA096'"
n() { q "SELECT count(*) FROM resources.outcome WHERE $1"; }
ATTEMPTS1=$(n "phase = 1")
GRANTS1=$(n "phase = 1 AND outcome = 'granted'")
WAITLISTED1=$(n "phase = 1 AND outcome = 'waitlisted'")
LA092_1=$(n "phase = 1 AND outcome = 'LA092'")
LA093_1=$(n "phase = 1 AND outcome = 'LA093'")
LA094_1=$(n "phase = 1 AND outcome = 'LA094'")
UNEXPECTED1=$(n "phase = 1 AND outcome NOT IN ($EXPECTED)")
UNEXPECTED2=$(n "phase = 2 AND outcome NOT IN ($EXPECTED)")
DEADLOCKS=$(n "outcome = '40P01'")
CAP_VIOLATIONS=$(q "SELECT coalesce(sum(n), 0) FROM resources.violation WHERE phase > 0 AND ord IN (4, 5)")
VIOLATIONS=$(q "SELECT coalesce(sum(n), 0) FROM resources.violation WHERE phase > 0")
WAITLIST_NOW=$(q "SELECT count(*) FROM allocation.resource_request WHERE pool_id = $POOL AND status = 'waitlisted'")

echo
echo "== summary =="
echo "phase 1:     $ATTEMPTS1 grant attempts in $WALL1 s: $TPS1 tps (pgbench, 1 attempt per transaction, $RESOURCES_CLIENTS clients)"
echo "             $GRANTS1 requests granted, $WAITLISTED1 waitlisted, refused: $LA093_1 customer cap (LA093), $LA094_1 rep cap (LA094), $LA092_1 quantity (LA092)"
echo "             total granted: $GRANTED1 of $RESOURCES_UNITS units available (remaining $REMAINING1)"
if [ "$RESOURCES_TX2" -gt 0 ]; then
    echo "phase 2:     $(n "phase = 2") attempts in $WALL2 s: $TPS2 tps; $(n "phase = 2 AND outcome = 'released'") releases, $(n "phase = 2 AND outcome = 'granted'") direct grants,"
    echo "             $(q "SELECT count(*) FROM allocation.event WHERE kind = 'resource_granted' AND reason = 'served from the waitlist'") waitlisted requests served by releases; $WAITLIST_NOW still waitlisted"
    echo "             total granted: $GRANTED2 = $RESOURCES_UNITS - remaining $REMAINING2"
    echo "             average time of a call (lock waits included): release_grant $(q "SELECT round(avg(ms), 1) FROM resources.outcome WHERE phase = 2 AND op = 'release'") ms, request_resource $(q "SELECT round(avg(ms), 1) FROM resources.outcome WHERE phase = 2 AND op = 'request'") ms (phase 1: $(q "SELECT round(avg(ms), 1) FROM resources.outcome WHERE phase = 1") ms)"
fi
echo "cap violations (customers over per_customer_cap + reps over per_rep_cap, after each phase): $CAP_VIOLATIONS"
echo "unexpected errors (not LA092 LA093 LA094 LA096): phase 1: $UNEXPECTED1, phase 2: ${UNEXPECTED2}; of them deadlocks (40P01): $DEADLOCKS"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg); wall time without the build $(( $(date +%s) - RESOURCES_T0 )) s"
FAIL=0
if [ "$ATTEMPTS1" -lt "$RESOURCES_MIN_ATTEMPTS" ]; then
    echo "FAIL: phase 1 recorded $ATTEMPTS1 attempts (< $RESOURCES_MIN_ATTEMPTS)"
    FAIL=1
fi
for ph in 1 2; do
    rc=RC$ph
    if [ -n "${!rc:-}" ] && [ "${!rc}" -ne 0 ]; then
        echo "FAIL: pgbench of phase $ph exited with ${!rc}"
        FAIL=1
    fi
done
if [ "$LA093_1" -eq 0 ] || [ "$LA094_1" -eq 0 ]; then
    echo "FAIL: a cap was never reached in phase 1 (LA093: $LA093_1, LA094: $LA094_1); lower the caps or add hot reps"
    FAIL=1
fi
if [ "$((UNEXPECTED1 + UNEXPECTED2))" -ne 0 ]; then
    echo "FAIL: $((UNEXPECTED1 + UNEXPECTED2)) attempts failed with an unexpected error (see above)"
    FAIL=1
fi
if [ "$SELFTEST" -ne 6 ]; then
    echo "FAIL: only $SELFTEST of the 6 corrupted checks found violations (the checks may be vacuous)"
    FAIL=1
fi
echo "violations: $VIOLATIONS"
[ "$VIOLATIONS" = 0 ] || FAIL=1
exit $FAIL
