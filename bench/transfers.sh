#!/usr/bin/env bash
# bench/transfers.sh: transfers and ownership disputes under concurrency (issue 13).  8 pgbench
# clients hammer a hot set of customers with transfer requests (by the holder's own login),
# approvals (by a manager), releases, a manager's claims, and ownership disputes opened, settled
# (for either side) and dismissed by a manager, one operation per transaction, all at once.
# Afterwards every invariant is counted:
#   - check_consistency() is clean (owner columns = registry = counters);
#   - no rep over capacity;
#   - at most one pending transfer per customer;
#   - one ownership event of kind 'transfer' per approved transfer, none without one, and one per
#     dispute settled for its claimant;
#   - at most one open ownership dispute per customer;
#   - no ownership event of a customer while its dispute was open, but the settlement's own;
#   - no customer with two overlapping holding periods in the history;
#   - no deadlock (40P01) among the outcomes.
# Prints "violations: 0" and exits 0 when all hold; exits 1 otherwise.
#
#   bash bench/transfers.sh            # builds and installs, then runs in a throwaway cluster
#
# Knobs: TR_CLIENTS=8 TR_JOBS=2 TR_TX=2500 (per client) TR_CUSTOMERS=40 TR_REPS=10
#        TR_CAPACITY=6 TR_NO_INSTALL=1
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export TR_CLIENTS=${TR_CLIENTS:-8} TR_JOBS=${TR_JOBS:-2} TR_TX=${TR_TX:-2500}
export TR_CUSTOMERS=${TR_CUSTOMERS:-40} TR_REPS=${TR_REPS:-10} TR_CAPACITY=${TR_CAPACITY:-6}

if [ -z "${TR_IN_CLUSTER:-}" ]; then
    if [ -z "${TR_NO_INSTALL:-}" ]; then
        echo "== build and install ($(date -u '+%Y-%m-%d %H:%M:%S UTC')) =="
        (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) > /tmp/allocation-transfers-build.log \
            || { cat /tmp/allocation-transfers-build.log; exit 1; }
    fi
    export TR_IN_CLUSTER=1
    exec pg_virtualenv -t -o max_connections=40 bash "${BASH_SOURCE[0]}" "$@"
fi

###############################################################################
# Inside the throwaway cluster
###############################################################################
P=(psql -X -q -v ON_ERROR_STOP=1 -d postgres)
W=$(mktemp -d /tmp/allocation-transfers.XXXXXX)
trap 'rm -rf "$W"' EXIT
echo "== $TR_CLIENTS clients x $TR_TX operations on $TR_CUSTOMERS customers of $TR_REPS reps (capacity $TR_CAPACITY) =="
"${P[@]}" >/dev/null <<SQL
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS postgis;
CREATE EXTENSION allocation;
DO \$\$ BEGIN
    FOR i IN 1..$TR_REPS LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tr_rep_' || i) THEN
            EXECUTE format('CREATE ROLE %I', 'tr_rep_' || i);
        END IF;
        PERFORM allocation.grant_role(('tr_rep_' || i)::regrole, 'rep');
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tr_mgr') THEN CREATE ROLE tr_mgr; END IF;
    PERFORM allocation.grant_role('tr_mgr', 'manager');
END \$\$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 't', 'Team');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login)
SELECT i, 'r' || i, 'Rep ' || i, 1, $TR_CAPACITY, 'tr_rep_' || i FROM generate_series(1, $TR_REPS) i;
CREATE TABLE tr_customer (id int PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('tr_customer', 'id', 'loc', 'owner');
INSERT INTO tr_customer SELECT g, 'dealer ' || g, NULL, 1 + (g % $TR_REPS) FROM generate_series(1, $TR_CUSTOMERS) g;
-- one operation; errors are outcomes (refusals), counted by SQLSTATE
CREATE TABLE tr_outcome (kind text, code text, n bigint, PRIMARY KEY (kind, code));
CREATE FUNCTION tr_attempt(op int, rep int, cust int) RETURNS void LANGUAGE plpgsql AS \$f\$
DECLARE
    v_op text;
    v_code text := '00000';
    v_holder bigint;
    v_id bigint;
BEGIN
    SELECT owner INTO v_holder FROM tr_customer WHERE id = cust;
    BEGIN
        IF op <= 40 THEN
            v_op := 'request';
            IF v_holder IS NULL THEN
                v_code := 'pool';
            ELSE
                EXECUTE format('SET LOCAL ROLE %I', 'tr_rep_' || v_holder);
                PERFORM allocation.request_transfer('tr_customer', cust::text, rep, 'bench');
            END IF;
        ELSIF op <= 80 THEN
            v_op := 'approve';
            SELECT t.id INTO v_id FROM allocation.transfer t
             WHERE t.key = cust::text AND t.status = 'pending' ORDER BY t.id LIMIT 1;
            IF v_id IS NULL THEN
                v_code := 'none pending';
            ELSE
                SET LOCAL ROLE tr_mgr;
                PERFORM allocation.approve_transfer(v_id);
            END IF;
        ELSIF op >= 81 AND op <= 86 THEN
            v_op := 'open dispute';
            SET LOCAL ROLE tr_mgr;
            PERFORM allocation.open_dispute('tr_customer', cust::text, rep, 'bench');
        ELSIF op >= 87 AND op <= 89 THEN
            v_op := 'settle dispute';
            SELECT d.id INTO v_id FROM allocation.ownership_dispute d
             WHERE d.key = cust::text AND d.status = 'open' ORDER BY d.id LIMIT 1;
            IF v_id IS NULL THEN
                v_code := 'none open';
            ELSE
                SET LOCAL ROLE tr_mgr;
                PERFORM allocation.settle_dispute(v_id, (SELECT CASE WHEN rep % 2 = 0 THEN d.holder_rep ELSE d.claimant_rep END
                                                           FROM allocation.ownership_dispute d WHERE d.id = v_id), 'bench');
            END IF;
        ELSIF op = 90 THEN
            v_op := 'dismiss dispute';
            SELECT d.id INTO v_id FROM allocation.ownership_dispute d
             WHERE d.key = cust::text AND d.status = 'open' ORDER BY d.id LIMIT 1;
            IF v_id IS NULL THEN
                v_code := 'none open';
            ELSE
                SET LOCAL ROLE tr_mgr;
                PERFORM allocation.dismiss_ownership_dispute(v_id, 'bench');
            END IF;
        ELSIF op <= 95 THEN
            v_op := 'release';
            IF v_holder IS NULL THEN
                v_code := 'pool';
            ELSE
                EXECUTE format('SET LOCAL ROLE %I', 'tr_rep_' || v_holder);
                PERFORM allocation.release('tr_customer', cust::text, 'bench');
            END IF;
        ELSE
            v_op := 'claim';
            SET LOCAL ROLE tr_mgr;
            PERFORM allocation.claim('tr_customer', cust::text, rep);
        END IF;
    EXCEPTION WHEN OTHERS THEN
        v_code := SQLSTATE;
    END;
    RESET ROLE;
    INSERT INTO tr_outcome AS o VALUES (v_op, v_code, 1) ON CONFLICT (kind, code) DO UPDATE SET n = o.n + 1;
END \$f\$;
SQL
cat >"$W/op.sql" <<EOF
\set op random(1, 100)
\set rep random(1, $TR_REPS)
\set cust random(1, $TR_CUSTOMERS)
SELECT tr_attempt(:op, :rep, :cust);
EOF
t0=$(date +%s)
pgbench -n -c "$TR_CLIENTS" -j "$TR_JOBS" -t "$TR_TX" -f "$W/op.sql" postgres >"$W/pgbench.out" 2>&1 \
    || { cat "$W/pgbench.out"; exit 1; }
echo "  $(grep -E '^(number of transactions actually processed|tps)' "$W/pgbench.out" | tr '\n' ' ') ($(( $(date +%s) - t0 )) s)"
"${P[@]}" -c "SELECT kind, code, n FROM tr_outcome ORDER BY kind, n DESC" | sed 's/^/  /'
read -r v1 v2 v3 v4 v5 v7 v8 < <("${P[@]}" -At -F ' ' -c "
    WITH periods AS (   -- each dispute's span in the log: its opening event to its closing one (or now)
        SELECT d.id, d.key, o.id AS opened, coalesce(c.id, (SELECT max(id) + 1 FROM allocation.event)) AS closed
          FROM allocation.ownership_dispute d
          JOIN allocation.event o ON o.kind = 'ownership_dispute_opened' AND (o.detail ->> 'ownership_dispute')::bigint = d.id
          LEFT JOIN allocation.event c ON c.kind IN ('ownership_dispute_settled', 'ownership_dispute_dismissed')
                                      AND (c.detail ->> 'ownership_dispute')::bigint = d.id)
    SELECT (SELECT count(*) FROM allocation.check_consistency()),
           (SELECT count(*) FROM allocation.rep r WHERE (SELECT count(*) FROM tr_customer c WHERE c.owner = r.id) > r.capacity),
           (SELECT count(*) FROM (SELECT key FROM allocation.transfer WHERE status = 'pending' GROUP BY key HAVING count(*) > 1) x),
           abs((SELECT count(*) FROM allocation.transfer WHERE status = 'approved')
               + (SELECT count(*) FROM allocation.ownership_dispute WHERE status = 'settled' AND winner_rep = claimant_rep)
               - (SELECT count(*) FROM allocation.event WHERE kind = 'transfer')),
           (SELECT count(*) FROM (SELECT key FROM allocation.ownership_dispute WHERE status = 'open' GROUP BY key HAVING count(*) > 1) x),
           (SELECT count(*) FROM periods p JOIN allocation.event e
                 ON e.key = p.key AND e.period IS NOT NULL AND e.id > p.opened AND e.id < p.closed),
           (SELECT count(*) FROM allocation.assignment a JOIN allocation.assignment b
                ON a.managed_id = b.managed_id AND a.key = b.key AND a.id < b.id AND a.rep_id IS NOT NULL AND b.rep_id IS NOT NULL
               AND tstzrange(a.valid_from, a.valid_to) && tstzrange(b.valid_from, b.valid_to))")
echo "  check_consistency() problems: $v1"
echo "  reps over capacity: $v2"
echo "  customers with more than one pending transfer: $v3"
echo "  approved transfers without exactly one 'transfer' event (difference): $v4"
echo "  overlapping holding periods: $v5"
echo "  customers with more than one open ownership dispute: $v7"
echo "  ownership events of a customer while its dispute was open: $v8"
"${P[@]}" -At -F ' ' -c "SELECT 'ownership disputes: ' || count(*) || ' opened, ' || count(*) FILTER (WHERE status = 'settled')
                                || ' settled (' || count(*) FILTER (WHERE winner_rep = claimant_rep) || ' for the claimant), '
                                || count(*) FILTER (WHERE status = 'dismissed') || ' dismissed'
                           FROM allocation.ownership_dispute" | sed 's/^/  /'
approved=$("${P[@]}" -At -c "SELECT count(*) FROM allocation.transfer WHERE status = 'approved'")
echo "  approved transfers: $approved"
v6=$("${P[@]}" -At -c "SELECT coalesce(sum(n), 0) FROM tr_outcome WHERE code = '40P01'")
echo "  deadlocks: $v6"
violations=$((v1 + v2 + v3 + v4 + v5 + v6 + v7 + v8))
echo "violations: $violations"
[ "$violations" -eq 0 ] && [ "$approved" -gt 0 ]
