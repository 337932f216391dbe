#!/usr/bin/env bash
# bench/duplicates.sh: fuzzy duplicates (撞单 by spelling) under concurrency (issue 10).
# 8 pgbench clients register 4 spellings of 150 dealers ("丰收农资店", "丰收农资商店",
# "丰收农资有限公司", "丰收农资经营部": one normalized name) at points 100-400 m apart; the
# four spellings of a dealer are handed to different clients at the same moment, and each
# transaction stays open ~20 ms after its INSERT (pg_sleep).  The fuzzy action is block
# (name_similarity 0.6, within_m 1000): every dealer must be stored exactly once.  Prints
# "dealers stored more than once: 0" and exits 0 when that holds; exits 1 otherwise.
#
#   bash bench/duplicates.sh            # builds and installs, then runs in a throwaway cluster
#   (run it under the shared lock: flock /tmp/allocation-install.lock bash bench/duplicates.sh)
#
# Knobs (environment):
#   DUP_CLIENTS=8 DUP_JOBS=2   pgbench -c / -j
#   DUP_DEALERS=150            dealers; each is registered in DUP_SPELLINGS spellings
#   DUP_SPELLINGS=4            1..4
#   DUP_SLEEP=0.02             seconds each transaction stays open after its INSERT
#   DUP_ACTION=block           the fuzzy action (warn and dispute store every row: then the
#                              count of dealers with more than one owner is what must be 0)
#   DUP_NO_INSTALL=1           skip make && make install
#   DUP_PORT=                  port of the throwaway cluster (default: the first free from 5433)
# See bench/README.md, section "Fuzzy duplicates under concurrency (issue 10)".
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export DUP_CLIENTS=${DUP_CLIENTS:-8}
export DUP_JOBS=${DUP_JOBS:-2}
export DUP_DEALERS=${DUP_DEALERS:-150}
export DUP_SPELLINGS=${DUP_SPELLINGS:-4}
export DUP_SLEEP=${DUP_SLEEP:-0.02}
export DUP_ACTION=${DUP_ACTION:-block}

if [ -z "${DUP_IN_CLUSTER:-}" ]; then
    if [ -z "${DUP_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        if ! (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-dups-build.log; then
            cat /tmp/allocation-dups-build.log
            exit 1
        fi
    fi
    export DUP_IN_CLUSTER=1
    port=${DUP_PORT:-}
    if [ -z "$port" ]; then
        for p in $(seq 5433 5499); do
            if [ ! -e "/var/run/postgresql/.s.PGSQL.$p" ] && [ ! -e "/tmp/.s.PGSQL.$p" ] &&
               ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                port=$p
                break
            fi
        done
    fi
    exec pg_virtualenv -t -c "-p ${port:-5432}" -o shared_buffers=128MB -o max_connections=40 \
        bash "${BASH_SOURCE[0]}" "$@"
fi

###############################################################################
# Inside the throwaway cluster (PGHOST/PGPORT/PGUSER set by pg_virtualenv)
###############################################################################
export PGDATABASE=allocation_dups
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
psql -X -q -d postgres -c "CREATE DATABASE allocation_dups" >/dev/null
"${P[@]}" -c "CREATE EXTENSION allocation CASCADE" 2>&1 | grep -v 'installing required extension' || true
"${P[@]}" -c "CREATE EXTENSION pg_trgm"

TASKS=$((DUP_DEALERS * DUP_SPELLINGS))
TX=$(( (TASKS + DUP_CLIENTS - 1) / DUP_CLIENTS ))
echo
echo "== machine =="
echo "nproc:       $(nproc)"
echo "postgresql:  $("${PA[@]}" -c 'SHOW server_version')"
echo "allocation:  git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && git diff --quiet HEAD -- src sql_src 2>/dev/null || echo ', with uncommitted changes to src/ or sql_src/')"
echo "isolation:   $("${PA[@]}" -c 'SHOW default_transaction_isolation')"
"${P[@]}" -v n_dealers="$DUP_DEALERS" -v n_spellings="$DUP_SPELLINGS" -v action="$DUP_ACTION" \
    -f "$BENCH_DIR/duplicates_setup.sql" >/dev/null
echo "workload:    $DUP_DEALERS dealers x $DUP_SPELLINGS spellings = $TASKS registrations by $DUP_CLIENTS clients"
echo "             ($TX transactions each), each transaction open ${DUP_SLEEP} s after its INSERT;"
echo "             fuzzy action $DUP_ACTION, name_similarity 0.6, within_m 1000"

echo
echo "== pgbench -c $DUP_CLIENTS -j $DUP_JOBS -t $TX =="
t0=$(date +%s.%N)
set +e
pgbench -n -c "$DUP_CLIENTS" -j "$DUP_JOBS" -t "$TX" -D sleep="$DUP_SLEEP" \
    -f "$BENCH_DIR/duplicates_pgbench.sql" > /tmp/allocation-dups-pgbench.out 2>&1
RC=$?
set -e
t1=$(date +%s.%N)
grep -E '^(number of (transactions|failed)|latency average|tps)' /tmp/allocation-dups-pgbench.out | sed 's/^/  /' || true
WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')

"${P[@]}" -f "$BENCH_DIR/duplicates_report.sql"
q() { "${PA[@]}" -c "$1"; }
TWICE=$(q "SELECT count(*) FROM (SELECT dealer FROM dup.customer GROUP BY dealer HAVING count(*) > 1) x")
OWNED_TWICE=$(q "SELECT count(*) FROM (SELECT dealer FROM dup.customer WHERE owner_id IS NOT NULL GROUP BY dealer HAVING count(*) > 1) x")
MISSING=$(q "SELECT count(*) FROM generate_series(1, $DUP_DEALERS) d WHERE NOT EXISTS (SELECT 1 FROM dup.customer c WHERE c.dealer = d)")
UNEXPECTED=$(q "SELECT count(*) FROM dup.outcome WHERE outcome NOT IN ('ok', 'LA071')")
ATTEMPTS=$(q "SELECT count(*) FROM dup.outcome")
echo
echo "== summary =="
echo "attempts:    $ATTEMPTS in $WALL s (pgbench exit $RC)"
echo "unexpected errors (not LA071): $UNEXPECTED; dealers never stored: $MISSING"
echo "dealers held by more than one rep: $OWNED_TWICE"
echo "dealers stored more than once: $TWICE"
FAIL=0
[ "$RC" -eq 0 ] || FAIL=1
[ "$ATTEMPTS" -eq "$TASKS" ] || { echo "FAIL: $ATTEMPTS attempts recorded, $TASKS expected"; FAIL=1; }
[ "$UNEXPECTED" -eq 0 ] || FAIL=1
[ "$MISSING" -eq 0 ] || FAIL=1
[ "$OWNED_TWICE" -eq 0 ] || FAIL=1
if [ "$DUP_ACTION" = block ] && [ "$TWICE" -ne 0 ]; then FAIL=1; fi
exit $FAIL
