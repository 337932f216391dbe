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
#   CLAIMS_TX=12500                      transactions (= attempts) per client (-t); total >= 100,000
#   CLAIMS_CUSTOMERS=50 CLAIMS_REPS=20   the hot set (reps: odd ids team A, even ids team B)
#   CLAIMS_CAPACITY=3                    rep.capacity of every rep
#   CLAIMS_DAILY_A=400                   claim_policy daily_claims of team A (reached during the run)
#   CLAIMS_DAILY=2000                    claim_policy daily_claims of everybody else (global row)
#   CLAIMS_MAX_HELD_B=2                  claim_policy max_held of team B (below its capacity)
#   CLAIMS_COOLDOWN_B='500 milliseconds' claim_policy cooldown of team B
#   CLAIMS_WATCH_INTERVAL=0.5            seconds between the watcher's snapshots
#   CLAIMS_MIN_ATTEMPTS=100000           fewer recorded attempts than this fails the run
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
export CLAIMS_CUSTOMERS=${CLAIMS_CUSTOMERS:-50}
export CLAIMS_REPS=${CLAIMS_REPS:-20}
export CLAIMS_CAPACITY=${CLAIMS_CAPACITY:-3}
export CLAIMS_DAILY_A=${CLAIMS_DAILY_A:-400}
export CLAIMS_DAILY=${CLAIMS_DAILY:-2000}
export CLAIMS_MAX_HELD_B=${CLAIMS_MAX_HELD_B:-2}
export CLAIMS_COOLDOWN_B=${CLAIMS_COOLDOWN_B:-500 milliseconds}
export CLAIMS_WATCH_INTERVAL=${CLAIMS_WATCH_INTERVAL:-0.5}
export CLAIMS_MIN_ATTEMPTS=${CLAIMS_MIN_ATTEMPTS:-100000}

if [ -z "${CLAIMS_IN_CLUSTER:-}" ]; then
    export CLAIMS_T0=$(date +%s)
    if [ -z "${CLAIMS_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        if ! (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-claims-build.log; then
            cat /tmp/allocation-claims-build.log
            exit 1
        fi
    fi
    export CLAIMS_IN_CLUSTER=1
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
echo
echo "== machine =="
echo "nproc:       $(nproc)"
echo "cpu:         $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version')"
echo "allocation:  $("${PA[@]}" -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'") (git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src sql_src 2>/dev/null || echo ', with uncommitted changes to src/ or sql_src/'))"
echo "settings:    shared_buffers=256MB, fsync=off (pg_virtualenv), synchronous_commit=on, deadlock_timeout=$("${PA[@]}" -c 'SHOW deadlock_timeout'), default_transaction_isolation=$("${PA[@]}" -c 'SHOW default_transaction_isolation')"
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
echo "attempts:    $CLAIMS_CLIENTS clients x $CLAIMS_TX transactions = $TOTAL, one random (op, rep, customer) each:"
echo "             25% claim(tbl, key, rep) by the manager, 20% claim(tbl, key) as the rep's role,"
echo "             20% release by the manager, 20% release as the rep's role, 10% move (release + claim"
echo "             for the rep, one transaction), 5% swap (the rep releases one of its customers and"
echo "             claims the random one, one transaction); refusals are caught per attempt"

###############################################################################
echo
echo "== pgbench: -c $CLAIMS_CLIENTS -j $CLAIMS_JOBS -t $CLAIMS_TX (watcher snapshot every ${CLAIMS_WATCH_INTERVAL} s) =="
(
    while [ ! -e "$WORK/stop" ]; do
        psql -X -q -c "INSERT INTO claims.sample (multi_owner, owner_mismatch, over_capacity, over_max_held,
                                                  counter_mismatch, held_total)
                       SELECT * FROM claims.invariants" >/dev/null 2>>"$WORK/watcher.err" || true
        sleep "$CLAIMS_WATCH_INTERVAL"
    done
) &
WATCHER=$!
t0=$(date +%s.%N)
set +e
pgbench -n -M prepared -c "$CLAIMS_CLIENTS" -j "$CLAIMS_JOBS" -t "$CLAIMS_TX" \
    -D n_reps="$CLAIMS_REPS" -D n_customers="$CLAIMS_CUSTOMERS" \
    -f "$BENCH_DIR/claims_pgbench.sql" > "$WORK/pgbench.out" 2>&1
PGBENCH_RC=$?
set -e
t1=$(date +%s.%N)
touch "$WORK/stop"
wait "$WATCHER" || true
WATCHER=
sed 's/^/  /' "$WORK/pgbench.out" | grep -v '^  pgbench (' || true
if [ -s "$WORK/watcher.err" ]; then
    echo "  watcher errors:"; sed 's/^/    /' "$WORK/watcher.err"
fi
WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
TPS=$(awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}' "$WORK/pgbench.out")
ATTEMPTS=$("${PA[@]}" -c "SELECT count(*) FROM claims.outcome")

###############################################################################
"${P[@]}" -f "$BENCH_DIR/claims_check.sql"

VIOLATIONS=$("${PA[@]}" -c "SELECT coalesce(sum(n), 0) FROM claims.violation")
UNEXPECTED=$("${PA[@]}" -c "SELECT count(*) FROM claims.outcome
                             WHERE outcome NOT IN ('ok', 'noop', 'LA080', 'LA022', 'LA082', 'LA083', 'LA086', '55P03')")
read -r LA082 OKC OKR < <("${PA[@]}" -F ' ' -c "SELECT count(*) FILTER (WHERE outcome = 'LA082'),
                                                      count(*) FILTER (WHERE outcome = 'ok' AND op !~ '^release'),
                                                      count(*) FILTER (WHERE outcome = 'ok' AND op !~ '^claim')
                                                 FROM claims.outcome")

echo
echo "== summary =="
echo "attempts:    $ATTEMPTS recorded ($TOTAL pgbench transactions, pgbench exit code $PGBENCH_RC)"
echo "throughput:  $TPS tps = attempts/s (pgbench, without connection time); wall $WALL s"
echo "             successful claims $OKC, successful releases $OKR (a move or swap counts in both)"
echo "daily limit: $LA082 attempts refused with LA082"
echo "errors other than the expected refusals (LA080 LA022 LA082 LA083 LA086 55P03): $UNEXPECTED"
echo "load avg at end: $(cut -d' ' -f1-3 /proc/loadavg); total wall time $(( $(date +%s) - CLAIMS_T0 )) s"
FAIL=0
if [ "$ATTEMPTS" -lt "$CLAIMS_MIN_ATTEMPTS" ]; then
    echo "FAIL: only $ATTEMPTS attempts recorded (< $CLAIMS_MIN_ATTEMPTS)"
    FAIL=1
fi
if [ "$PGBENCH_RC" -ne 0 ]; then
    echo "FAIL: pgbench exited with $PGBENCH_RC"
    FAIL=1
fi
if [ "$UNEXPECTED" -ne 0 ]; then
    echo "FAIL: $UNEXPECTED attempts failed with an unexpected error (see the outcomes above)"
    FAIL=1
fi
echo "violations: $VIOLATIONS"
[ "$VIOLATIONS" -eq 0 ] || FAIL=1
exit $FAIL
