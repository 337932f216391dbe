#!/usr/bin/env bash
# bench/history.sh: the ownership history under concurrent reassignments (issue 11).
# 8 pgbench clients reassign a hot set of 20 customers among 10 reps -- allocation.assign()
# by a manager, a plain UPDATE of the owner column, release to the pool -- and afterwards
# the history is checked: a customer has at most one owner at every instant (no two
# ownership periods of one customer overlap), a customer's ownership times never go back
# (event id order = time order per customer), the current period agrees with the owner
# column of every row, and the holdings counters agree with the history.  Prints
# "violations: 0" and exits 0 when all hold.
#
#   bash bench/history.sh
#
# Knobs: HISTORY_CLIENTS=8 HISTORY_TX=2000 (per client) HISTORY_CUSTOMERS=20 HISTORY_REPS=10
#        HISTORY_NO_INSTALL=1 (skip make install)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
export BENCH_DIR ROOT
export HISTORY_CLIENTS=${HISTORY_CLIENTS:-8}
export HISTORY_TX=${HISTORY_TX:-2000}
export HISTORY_CUSTOMERS=${HISTORY_CUSTOMERS:-20}
export HISTORY_REPS=${HISTORY_REPS:-10}

if [ -z "${HISTORY_IN_CLUSTER:-}" ]; then
    if [ -z "${HISTORY_NO_INSTALL:-}" ]; then
        (cd "$ROOT" && make -s 2>&1 && make -s install 2>&1) >/tmp/allocation-history-build.log ||
            { cat /tmp/allocation-history-build.log; exit 1; }
    fi
    export HISTORY_IN_CLUSTER=1
    exec pg_virtualenv -t -o shared_buffers=256MB -o max_connections=40 bash "${BASH_SOURCE[0]}" "$@"
fi

export PGDATABASE=allocation_history
P=(psql -X -q -v ON_ERROR_STOP=1)
PA=(psql -X -q -At -v ON_ERROR_STOP=1)
WORK=$(mktemp -d /tmp/allocation-history.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

psql -X -q -d postgres -c "DROP DATABASE IF EXISTS allocation_history" -c "CREATE DATABASE allocation_history"
"${P[@]}" <<SQL
SET client_min_messages = warning;
CREATE EXTENSION allocation CASCADE;
INSERT INTO allocation.team (code, name) VALUES ('t', 'team');
INSERT INTO allocation.rep (code, name, team_id)
SELECT 'r' || i, 'rep ' || i, 1 FROM generate_series(1, $HISTORY_REPS) i;
CREATE SCHEMA h;
CREATE TABLE h.customer (id int PRIMARY KEY, name text NOT NULL, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('h.customer', 'id', 'loc', 'owner');
INSERT INTO allocation.rule (name, target_kind, target_team_id, policy)
VALUES ('everyone', 'team', 1, 'round_robin');
INSERT INTO h.customer (id, name) SELECT i, 'customer ' || i FROM generate_series(1, $HISTORY_CUSTOMERS) i;
SQL

# three kinds of reassignment, weighted 5:4:1
cat >"$WORK/assign.sql" <<SQL
\set cust random(1, $HISTORY_CUSTOMERS)
\set rep random(1, $HISTORY_REPS)
SELECT allocation.assign('h.customer', :cust::text, :rep, 'bench reassignment');
SQL
cat >"$WORK/update.sql" <<SQL
\set cust random(1, $HISTORY_CUSTOMERS)
\set rep random(1, $HISTORY_REPS)
UPDATE h.customer SET owner = :rep WHERE id = :cust;
SQL
cat >"$WORK/release.sql" <<SQL
\set cust random(1, $HISTORY_CUSTOMERS)
SELECT allocation.assign('h.customer', :cust::text, NULL, 'bench release');
SQL
echo "== $HISTORY_CLIENTS clients x $HISTORY_TX reassignments of $HISTORY_CUSTOMERS customers among $HISTORY_REPS reps =="
pgbench -n -c "$HISTORY_CLIENTS" -j 2 -t "$HISTORY_TX" -f "$WORK/assign.sql@5" -f "$WORK/update.sql@4" \
    -f "$WORK/release.sql@1" >"$WORK/pgbench.log" 2>&1 || { cat "$WORK/pgbench.log"; exit 1; }
grep -E "^(number of (transactions actually|failed)|tps)" "$WORK/pgbench.log"

"${P[@]}" <<'SQL'
\echo == checks ==
CREATE TEMP TABLE v AS
SELECT 'overlapping ownership periods (pairs)' AS check,
       (SELECT count(*) FROM allocation.assignment a JOIN allocation.assignment b
            ON a.managed_id = b.managed_id AND a.key = b.key AND a.id < b.id
         WHERE a.valid_from < coalesce(b.valid_to, 'infinity') AND b.valid_from < coalesce(a.valid_to, 'infinity')) AS n
UNION ALL
SELECT 'ownership times going back (event pairs)',
       (SELECT count(*) FROM (SELECT e.at < lag(e.at) OVER w AS back
                                FROM allocation.event e WHERE e.period IS NOT NULL
                              WINDOW w AS (PARTITION BY e.managed_id, e.key ORDER BY e.id)) x WHERE x.back)
UNION ALL
SELECT 'current period differs from the owner column',
       (SELECT count(*) FROM h.customer c
          LEFT JOIN allocation.assignment a ON a.key = c.id::text AND a.valid_to IS NULL
         WHERE a.id IS NULL OR a.rep_id IS DISTINCT FROM c.owner)
UNION ALL
SELECT 'customers with more than one current period',
       (SELECT count(*) FROM (SELECT key FROM allocation.assignment WHERE valid_to IS NULL GROUP BY key HAVING count(*) > 1) x)
UNION ALL
SELECT 'holdings counters differ from the history',
       (SELECT count(*) FROM allocation.rep_load l
          LEFT JOIN (SELECT rep_id, count(*) AS n FROM allocation.assignment WHERE valid_to IS NULL GROUP BY rep_id) c
            ON c.rep_id = l.rep_id
         WHERE l.held <> coalesce(c.n, 0));
SELECT * FROM v;
SELECT count(*) AS ownership_events FROM allocation.event WHERE period IS NOT NULL \gset
\echo ownership events recorded: :ownership_events
SELECT sum(n) AS violations FROM v \gset
\echo violations: :violations
SQL
v=$("${PA[@]}" -c "SELECT count(*) FROM allocation.event WHERE period IS NOT NULL")
[ "$v" -ge $((HISTORY_CLIENTS * HISTORY_TX / 2)) ] || { echo "too few ownership events recorded ($v)"; exit 1; }
exit 0
