#!/usr/bin/env bash
# bench/claims.sh: claims under concurrency (issue #3).  pgbench hammers a small hot set of
# customers with claim/release attempts from 8 clients, a watcher samples the invariants while it
# runs, and afterwards every invariant is checked: one active owner per customer, nobody over
# capacity or over the claim policy's max_held, no rep-day over the daily limit, no claim inside a
# cooldown, counters = registry = audit log = outcomes.  Prints "violations: 0" and exits 0 when
# all hold; otherwise prints the count and exits 1.
#
#   bash bench/claims.sh            # builds and installs, then runs in a throwaway cluster
#
# Knobs (environment):
#   CLAIMS_CLIENTS=8 CLAIMS_JOBS=2       pgbench -c / -j
#   CLAIMS_TX=12500                      phase 1: transactions (= attempts) per client (-t); >= 100,000 in all
#   CLAIMS_TX2=1000                      phase 2 (with two-operation transactions): per client; 0 = skip
#   CLAIMS_CUSTOMERS=50 CLAIMS_REPS=20   the hot set (reps: odd ids team A, even ids team B)
#   CLAIMS_CAPACITY=3                    rep.capacity of every rep
#   CLAIMS_DAILY_A=400                   claim_policy daily_claims of team A (reached during the run)
#   CLAIMS_DAILY=2000                    claim_policy daily_claims of everybody else (global row)
#   CLAIMS_MAX_HELD_B=2                  claim_policy max_held of team B (below its capacity)
#   CLAIMS_COOLDOWN_B='500 milliseconds' claim_policy cooldown of team B
#   CLAIMS_WATCH_INTERVAL=0.5            seconds between the watcher's snapshots
#   CLAIMS_MIN_ATTEMPTS=100000           fewer recorded attempts than this fails the run
#   CLAIMS_PROGRESS=15                   pgbench -P: throughput every N seconds
#   CLAIMS_NO_INSTALL=1                  skip make && make install
#   CLAIMS_PORT=                         port of the throwaway cluster (default: the first free from 5433)
# See bench/README.md, section "Claims under concurrency (issue #3)".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export CLAIMS_CLIENTS=${CLAIMS_CLIENTS:-8}
export CLAIMS_JOBS=${CLAIMS_JOBS:-2}
export CLAIMS_TX=${CLAIMS_TX:-12500}
export CLAIMS_TX2=${CLAIMS_TX2:-1000}
export CLAIMS_CUSTOMERS=${CLAIMS_CUSTOMERS:-50}
export CLAIMS_REPS=${CLAIMS_REPS:-20}
export CLAIMS_CAPACITY=${CLAIMS_CAPACITY:-3}
export CLAIMS_DAILY_A=${CLAIMS_DAILY_A:-400}
export CLAIMS_DAILY=${CLAIMS_DAILY:-2000}
export CLAIMS_MAX_HELD_B=${CLAIMS_MAX_HELD_B:-2}
export CLAIMS_COOLDOWN_B=${CLAIMS_COOLDOWN_B:-500 milliseconds}
export CLAIMS_WATCH_INTERVAL=${CLAIMS_WATCH_INTERVAL:-0.5}
export CLAIMS_MIN_ATTEMPTS=${CLAIMS_MIN_ATTEMPTS:-100000}
export CLAIMS_PROGRESS=${CLAIMS_PROGRESS:-15}

if [ -z "${CLAIMS_IN_CLUSTER:-}" ]; then
    if [ -z "${CLAIMS_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        if ! (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-claims-build.log; then
            cat /tmp/allocation-claims-build.log
            exit 1
        fi
    fi
    export CLAIMS_IN_CLUSTER=1
    export CLAIMS_T0=$(date +%s)      # after the build
    # a port no other (virtual) cluster uses: pg_virtualenv would take 5432 even when another
    # pg_virtualenv already runs there
    port=${CLAIMS_PORT:-}
    if [ -z "$port" ]; then
        for p in $(seq 5433 5499); do
            if [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] &&
               ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                port=$p
                break
            fi
        done
    fi
    # pg_virtualenv: a temporary cluster (run as root it still runs the server as postgres)
    exec pg_virtualenv -t -c "-p ${port:-5432}" -o shared_buffers=256MB -o max_connections=40 \
        bash "${BASH_SOURCE[0]}" "$@"
fi

###############################################################################
# Inside the throwaway cluster (PGHOST/PGPORT/PGUSER set by pg_virtualenv)
###############################################################################
export PGDATABASE=allocation_claims
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
WORK=$(mktemp -d /tmp/allocation-claims.XXXXXX)
WATCHER=
cleanup() {
    [ -n "$WATCHER" ] && kill "$WATCHER" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

psql -X -q -d postgres -c "CREATE DATABASE allocation_claims" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true

TOTAL=$((CLAIMS_CLIENTS * CLAIMS_TX))
RC1= RC2= WALL1= WALL2= TPS1= TPS2=
echo
echo "== machine =="
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version')"
echo "allocation:  $("${PA[@]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src sql_src 2>/dev/null || echo ', with uncommitted changes to src/ or sql_src/'))"
echo "settings:    shared_buffers=256MB, fsync=off (pg_virtualenv), synchronous_commit=on, deadlock_timeout=$("${PA[@]}" -c 'SHOW deadlock_timeout'), default_transaction_isolation=$("${PA[@]}" -c 'SHOW default_transaction_isolation'),"
echo "             claim day: allocation.claim_timezone=$("${PA[@]}" -c "SELECT coalesce(nullif(current_setting('allocation.claim_timezone', true), ''), 'Asia/Shanghai (the default)')"), today $("${PA[@]}" -c 'SELECT allocation.claim_today()')"
echo "load avg:    $(cut -d' ' -f1-3 /proc/loadavg) (at start)"

echo
echo "== hot set =="
"${P[@]}" -v n_customers="$CLAIMS_CUSTOMERS" -v n_reps="$CLAIMS_REPS" -v capacity="$CLAIMS_CAPACITY" \
    -v daily_a="$CLAIMS_DAILY_A" -v daily_all="$CLAIMS_DAILY" -v max_held_b="$CLAIMS_MAX_HELD_B" \
    -v cooldown_b="$CLAIMS_COOLDOWN_B" -f "$BENCH_DIR/claims_setup.sql" >/dev/null
echo "customers:   $CLAIMS_CUSTOMERS (all in the public pool at the start)"
echo "reps:        $CLAIMS_REPS, capacity $CLAIMS_CAPACITY each ($((CLAIMS_REPS * CLAIMS_CAPACITY)) slots)"
"${P[@]}" -c "SELECT coalesce(t.code, '(everybody)') AS policy_team, p.max_held, p.daily_claims, p.cooldown
                FROM allocation.claim_policy p LEFT JOIN allocation.team t ON t.id = p.team_id ORDER BY p.team_id NULLS FIRST"
echo "phase 1:     $CLAIMS_CLIENTS clients x $CLAIMS_TX transactions = $TOTAL attempts, one operation per transaction,"
echo "             random (op, rep, customer): 25% claim(tbl, key, rep) by the manager, 20% claim(tbl, key)"
echo "             as the rep's role, 20% release by the manager, 20% release as the rep's role"
if [ "$CLAIMS_TX2" -gt 0 ]; then
    echo "phase 2:     $CLAIMS_CLIENTS clients x $CLAIMS_TX2 transactions, the same mix plus two-operation transactions:"
    echo "             7% move (the manager releases the customer and claims it for the rep), 4% swap"
    echo "             (the rep releases one of its customers and claims the random one) and 4% pair (the"
    echo "             manager claims the customer for the rep and the next customer for the team's next rep)"
fi
echo "             each attempt catches its refusal (and any error) and records the outcome"

# run_phase PHASE TX OP_MAX: pgbench with the watcher sampling the invariants, then the checks
run_phase() {
    local phase=$1 tx=$2 op_max=$3 rc t0 t1
    echo
    echo "== phase $phase: pgbench -c $CLAIMS_CLIENTS -j $CLAIMS_JOBS -t $tx (watcher snapshot every ${CLAIMS_WATCH_INTERVAL} s) =="
    rm -f "$WORK/stop"
    (
        while [ ! -e "$WORK/stop" ]; do
            psql -X -q -c "INSERT INTO claims.sample (phase, multi_owner, owner_mismatch, over_capacity, over_max_held,
                                                      counter_mismatch, held_total)
                           SELECT $phase, * FROM claims.invariants" >/dev/null 2>>"$WORK/watcher.err" || true
            sleep "$CLAIMS_WATCH_INTERVAL"
        done
    ) &
    WATCHER=$!
    t0=$(date +%s.%N)
    set +e
    pgbench -n -M prepared -c "$CLAIMS_CLIENTS" -j "$CLAIMS_JOBS" -t "$tx" -P "$CLAIMS_PROGRESS" \
        -D n_reps="$CLAIMS_REPS" -D n_customers="$CLAIMS_CUSTOMERS" -D op_max="$op_max" -D phase="$phase" \
        -f "$BENCH_DIR/claims_pgbench.sql" > "$WORK/pgbench$phase.out" 2>&1
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
    "${P[@]}" -v phase="$phase" -f "$BENCH_DIR/claims_check.sql"
    echo "  invariants checked in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"
}

run_phase 1 "$CLAIMS_TX" 85
if [ "$CLAIMS_TX2" -gt 0 ]; then run_phase 2 "$CLAIMS_TX2" 100; fi

###############################################################################
"${P[@]}" -f "$BENCH_DIR/claims_report.sql"

echo
echo "== the checks can fail: limits tightened in a rolled-back transaction (every n must be > 0) =="
"${P[@]}" -v phase=0 <<EOF
BEGIN;
UPDATE allocation.rep SET capacity = 1;
UPDATE allocation.claim_policy SET max_held = 1, daily_claims = 1, cooldown = interval '1 day';
\i $BENCH_DIR/claims_check.sql
\pset footer off
SELECT ord AS "#", what AS invariant, n FROM claims.violation WHERE phase = 0 AND ord IN (3, 4, 5, 6, 8) ORDER BY ord;
\pset tuples_only on
\pset format unaligned
\o $WORK/selftest
SELECT count(*) FROM claims.violation WHERE phase = 0 AND ord IN (3, 4, 5, 6, 8) AND n > 0;
\o
ROLLBACK;
EOF
SELFTEST=$(cat "$WORK/selftest")

q() { "${PA[@]}" -c "$1"; }
EXPECTED="'ok', 'noop', 'LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03'"
ATTEMPTS1=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 1")
OK_CLAIMS1=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 1 AND outcome = 'ok' AND op ~ '^claim'")
OK_RELEASES1=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 1 AND outcome = 'ok' AND op ~ '^release'")
LA082_1=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 1 AND outcome = 'LA082'")
UNEXPECTED1=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 1 AND outcome NOT IN ($EXPECTED)")
UNEXPECTED2=$(q "SELECT count(*) FROM claims.outcome WHERE phase = 2 AND outcome NOT IN ($EXPECTED)")
DEADLOCKS=$(q "SELECT count(*) FROM claims.outcome WHERE outcome = '40P01'")
VIOLATIONS=$(q "SELECT coalesce(sum(n), 0) FROM claims.violation")

echo
echo "== summary =="
echo "phase 1:     $ATTEMPTS1 attempts in $WALL1 s: $TPS1 tps (pgbench, 1 attempt per transaction);"
echo "             $OK_CLAIMS1 claims and $OK_RELEASES1 releases succeeded; $LA082_1 claims refused by the daily limit (LA082)"
if [ "$CLAIMS_TX2" -gt 0 ]; then
    echo "phase 2:     $(q "SELECT count(*) FROM claims.outcome WHERE phase = 2") attempts in $WALL2 s: $TPS2 tps (with move and swap)"
fi
echo "unexpected errors (not LA080 LA022 LA082 LA083 LA086 55P03): phase 1: $UNEXPECTED1, phase 2: ${UNEXPECTED2}; of them deadlocks (40P01): $DEADLOCKS"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg); wall time without the build $(( $(date +%s) - CLAIMS_T0 )) s"
FAIL=0
if [ "$ATTEMPTS1" -lt "$CLAIMS_MIN_ATTEMPTS" ]; then
    echo "FAIL: phase 1 recorded $ATTEMPTS1 attempts (< $CLAIMS_MIN_ATTEMPTS)"
    FAIL=1
fi
for ph in 1 2; do
    rc=RC$ph
    if [ -n "${!rc:-}" ] && [ "${!rc}" -ne 0 ]; then
        echo "FAIL: pgbench of phase $ph exited with ${!rc}"
        FAIL=1
    fi
done
if [ "$LA082_1" -eq 0 ]; then
    echo "FAIL: the daily limit was never reached in phase 1 (raise CLAIMS_TX or lower CLAIMS_DAILY_A)"
    FAIL=1
fi
if [ "$((UNEXPECTED1 + UNEXPECTED2))" -ne 0 ]; then
    echo "FAIL: $((UNEXPECTED1 + UNEXPECTED2)) attempts failed with an unexpected error (see above)"
    FAIL=1
fi
if [ "$SELFTEST" -ne 5 ]; then
    echo "FAIL: only $SELFTEST of the 5 tightened checks found violations (the checks may be vacuous)"
    FAIL=1
fi
echo "violations: $VIOLATIONS"
[ "$VIOLATIONS" -eq 0 ] || FAIL=1
exit $FAIL
