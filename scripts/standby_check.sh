#!/usr/bin/env bash
# scripts/standby_check.sh -- BI on a hot standby: a primary and a streaming
# replica (two throw-away local clusters), the demo CRM loaded on the primary,
# and on the replica every read a BI tool or a manager's screen makes, the
# territory index built there too, and every write refused with PostgreSQL's
# own read-only error.
#
#   bash scripts/standby_check.sh [BINDIR]
#
# BINDIR (default: pg_config --bindir, or $PG_BINDIR) must have the extension
# installed (make install) and PostGIS.  Clusters live in a temporary directory,
# run as the postgres user when started as root, on random ports, sockets only.
#   1. primary with shared_preload_libraries = 'allocation'; database crm with
#      the demo (demo/0*.sql: ~100 county polygons, ~10,000 customers, claims,
#      transfers, a dealer network, a virtual team, a dispute, a season of the
#      loop with scorecards and alerts, a sealed audit log); a BI role
#      (grant_role analyst);
#   2. pg_basebackup -R -X stream: a streaming replica, also preloaded;
#   3. on the replica (scripts/fixture/standby_reads.sql): every view of schema
#      allocation, explain(tbl, key), explain(tbl, row), owner_at(),
#      territory_at(), territory_geojson(), scorecard(), the claim screens, the
#      evidence and audit functions, ... as the superuser and (preloaded) as
#      the BI role; each answer's md5 must equal the primary's;
#   4. cache_stats() on the replica: index_mode 'shared', built in the
#      replica's own shared memory;
#   5. a territory and customers added on the primary after the replica
#      started: once replayed, the replica's territory index follows (new
#      winner for the point, a new shared build), in a new session and in a
#      session that built its index before the change;
#   6. on the replica (scripts/fixture/standby_writes.sql): INSERT/UPDATE/DELETE
#      of the managed table, claim(), release(), assign(), transfers, deals,
#      configuration changes, imports, the scheduler's functions: each must
#      fail with SQLSTATE 25006; the replica is still up and its log has no
#      crash, no PANIC;
#   7. both servers restarted WITHOUT shared_preload_libraries: steps 3
#      (superuser), 4 (index_mode 'backend'), 5 and 6 again.
# About 2 minutes on a quiet 2-core machine (the demo load is ~40 s of it).
# Prints PASS or FAIL (with the logs) and exits non-zero on failure.
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BINDIR=${1:-${PG_BINDIR:-$(pg_config --bindir)}}
TMP=$(mktemp -d /tmp/alloc_standby.XXXXXX)
chmod 700 "$TMP"   # the clusters trust local connections: only their owner may reach the sockets
fail () {
    for s in primary replica; do
        echo "--- $s server log (last 40 lines)"; tail -40 "$TMP/$s.log" 2>/dev/null || true
    done
    echo "STANDBY CHECK FAILED: $*"
    exit 1
}
trap 'fail "command failed at line $LINENO: $BASH_COMMAND"' ERR

AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
run () { (cd "$TMP" && "${AS[@]}" env LC_ALL=C.UTF-8 LANG=C.UTF-8 "$@"); }
PORT=$((20000 + RANDOM % 20000))
PORT2=$((PORT + 1))
cleanup () {
    trap - ERR
    run "$BINDIR/pg_ctl" -D "$TMP/replica" -m immediate stop >/dev/null 2>&1 || true
    run "$BINDIR/pg_ctl" -D "$TMP/primary" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/fixture" "$TMP/out"
cp "$ROOT"/scripts/fixture/standby_reads.sql "$ROOT"/scripts/fixture/standby_writes.sql "$TMP/fixture/"
cp -r "$ROOT/demo" "$TMP/demo"
[ "$(id -u)" -eq 0 ] && chown -R postgres: "$TMP"

# psql on the primary (P) or the replica (R), database crm
P () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d crm "$@"; }
R () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT2" -U postgres -d crm "$@"; }

start () {   # $1 = primary|replica, $2 = port, $3 = shared_preload_libraries
    run "$BINDIR/pg_ctl" -D "$TMP/$1" -w -t 120 -l "$TMP/$1.log" \
        -o "-p $2 -k $TMP -c listen_addresses='' -c unix_socket_permissions=0700 -c shared_preload_libraries='$3'" \
        start >/dev/null || fail "starting the $1"
}
stop () { run "$BINDIR/pg_ctl" -D "$TMP/$1" -w -m fast stop >/dev/null || fail "stopping the $1"; }

wait_replay () {   # until the replica has replayed everything the primary wrote
    local lsn ok
    lsn=$(P -At -c 'SELECT pg_current_wal_flush_lsn()')
    for _ in $(seq 1 120); do
        ok=$(R -At -c "SELECT pg_last_wal_replay_lsn() >= '$lsn'::pg_lsn") || true
        [ "$ok" = t ] && return 0
        sleep 0.5
    done
    fail "the replica did not replay up to $lsn within 60 s"
}

# reads: runs the read checks on a server ($1 = P|R, $2 = label, $3 = role or empty)
reads () {
    local out="$TMP/reads.$2.out" args=()
    [ -n "$3" ] && args=(-v role="$3")
    if ! "$1" "${args[@]}" -f "$TMP/fixture/standby_reads.sql" >"$out" 2>&1; then
        grep -E 'FAIL|ERROR' "$out" || cat "$out"
        fail "read checks on $2"
    fi
    grep -c '| ok |' "$out" | sed "s/^/    $2: /; s/$/ read checks ok/"
}
same_answers () {   # md5 of every server-independent check equal on primary and replica
    local a="$TMP/reads.$1.out" b="$TMP/reads.$2.out"
    if ! diff <(grep -o 'check | .*' "$a" | grep -v per-server) <(grep -o 'check | .*' "$b" | grep -v per-server); then
        fail "the replica ($2) answers differently from the primary ($1)"
    fi
    echo "    $2 answers exactly as $1 ($(grep -o 'check | .*' "$b" | grep -vc per-server) checks compared by md5)"
}
writes () {   # $1 = label
    local out="$TMP/writes.$1.out"
    if ! R -f "$TMP/fixture/standby_writes.sql" >"$out" 2>&1; then
        sed 's/^.*NOTICE:  //' "$out"
        fail "write attempts on the replica ($1)"
    fi
    grep -o 'write | .*' "$out" | sed 's/^write | /    refused: /' | cut -c1-150
    alive "$1"
}
alive () {
    R -At -c 'SELECT 1' >/dev/null || fail "the replica does not answer after the write attempts ($1)"
    [ "$(R -At -c 'SELECT pg_is_in_recovery()')" = t ] || fail "the replica left recovery"
    if grep -E 'PANIC|terminated by signal|server process .* was terminated|TRAP:' "$TMP/replica.log" "$TMP/primary.log"; then
        fail "a server process crashed ($1)"
    fi
    # every refused write is caught by the fixture's exception handler (not logged): an
    # ERROR or FATAL in the replica's log comes from somewhere else (a background worker, ...)
    # (a restart's "terminating walreceiver process due to administrator command" is no error)
    if grep -E '(ERROR|FATAL):' "$TMP/replica.log" | grep -v 'due to administrator command'; then
        fail "the replica's log has errors ($1)"
    fi
    echo "    replica still up, in recovery, no crash and no error in its log"
}
index_mode () {   # $1 = expected index_mode on the replica
    local mode
    mode=$(R -At -c "SELECT allocation.territory_at(ST_PointOnSurface(geom)) IS NOT NULL FROM allocation.territory WHERE geom IS NOT NULL ORDER BY id LIMIT 1" \
                 -c "SELECT concat_ws(' ', s->>'index_mode', s->>'mode', s->>'territories', s->>'vertices', s->>'shared_builds_made') FROM allocation.cache_stats() s")
    echo "    replica cache_stats(): located=$(echo "$mode" | head -1) index_mode/mode/territories/vertices/shared_builds_made = $(echo "$mode" | tail -1)"
    [ "$(echo "$mode" | head -1)" = t ] || fail "territory_at() on the replica found no territory"
    [ "$(echo "$mode" | tail -1 | cut -d' ' -f1)" = "$1" ] || fail "the replica's territory index is not in mode $1"
}

echo "--- primary with shared_preload_libraries = 'allocation' (port $PORT)"
run "$BINDIR/initdb" -D "$TMP/primary" -U postgres -A trust >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log"; fail "initdb"; }
cat >>"$TMP/primary/postgresql.conf" <<EOF
wal_level = replica
max_wal_senders = 4
hot_standby = on
fsync = off
log_min_messages = warning
EOF
start primary "$PORT" allocation
run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d postgres -c 'CREATE DATABASE crm' \
    || fail "creating database crm"

echo "--- the demo CRM on the primary (demo/0*.sql)"
for f in 01_crm 02_province 03_org_rules 04_customers 05_report 06_map 07_claims_pool 07b_transfers 07c_network 07d_virtual_team 07e_dispute 07f_loop 08_audit; do
    P -v outdir="$TMP/out" -f "$TMP/demo/$f.sql" >"$TMP/demo.$f.out" 2>&1 || { tail -30 "$TMP/demo.$f.out"; fail "demo/$f.sql on the primary"; }
done
P >/dev/null <<'SQL' || fail "the BI role"
CREATE ROLE standby_bi LOGIN;
SELECT allocation.grant_role('standby_bi', 'analyst');
GRANT USAGE ON SCHEMA crm TO standby_bi;
GRANT SELECT ON ALL TABLES IN SCHEMA crm TO standby_bi;
SQL
P -At -c "SELECT count(*) || ' customers, ' || (SELECT count(*) FROM allocation.territory) || ' territories, ' || (SELECT count(*) FROM allocation.event) || ' events' FROM crm.customer" | sed 's/^/    /'

echo "--- streaming replica: pg_basebackup -R -X stream (port $PORT2)"
run "$BINDIR/pg_basebackup" -h "$TMP" -p "$PORT" -U postgres -D "$TMP/replica" -R -X stream -c fast >"$TMP/basebackup.log" 2>&1 \
    || { cat "$TMP/basebackup.log"; fail "pg_basebackup"; }
start replica "$PORT2" allocation
[ "$(R -At -c 'SELECT pg_is_in_recovery()')" = t ] || fail "the replica is not in recovery"
wait_replay
echo "    replica streaming: $(P -At -c "SELECT state || ', sync_state ' || sync_state FROM pg_stat_replication")"

for mode in shared backend; do
    if [ "$mode" = backend ]; then
        echo "--- both servers restarted WITHOUT shared_preload_libraries"
        stop replica; stop primary
        start primary "$PORT" ''
        start replica "$PORT2" ''
        wait_replay
    fi
    echo "--- [$mode] reads on the replica (every view, explain, owner_at, territory_geojson, scorecard, ...)"
    reads P "primary.$mode" ''
    reads R "replica.$mode" ''
    same_answers "primary.$mode" "replica.$mode"
    if [ "$mode" = shared ]; then   # the BI role once: its reads do not depend on the mode
        reads P "primary.$mode.bi" standby_bi
        reads R "replica.$mode.bi" standby_bi
        same_answers "primary.$mode.bi" "replica.$mode.bi"
    fi
    echo "--- [$mode] the territory index on the replica"
    index_mode "$mode"

    echo "--- [$mode] a territory and customers added on the primary; the replica follows once replayed"
    # a replica session that built its index before the change must see it too
    # (the invalidation replayed from the WAL), not only a new session
    rm -f "$TMP/session.in"; mkfifo "$TMP/session.in"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$TMP/session.in"
    R -At <"$TMP/session.in" >"$TMP/session.$mode.out" 2>&1 &
    SESSION=$!
    exec 7>"$TMP/session.in"
    echo "SELECT 'before', allocation.territory_at(location) FROM crm.customer WHERE location IS NOT NULL ORDER BY id LIMIT 1;" >&7
    for _ in $(seq 1 100); do grep -q '^before|' "$TMP/session.$mode.out" 2>/dev/null && break; sleep 0.2; done
    P >/dev/null <<SQL || fail "changes on the primary"
SET client_min_messages = warning;   -- the duplicate detector's notices about the three new dealers
INSERT INTO allocation.territory (code, name, geom, priority, owner_rep_id)
SELECT 'standby-$mode', 'hot spot $mode', ST_Multi(ST_Buffer(location, 0.001)),
       (SELECT max(priority) + 1 FROM allocation.territory), (SELECT min(id) FROM allocation.rep WHERE active)
  FROM crm.customer WHERE location IS NOT NULL ORDER BY id LIMIT 1;
INSERT INTO crm.customer (name, tier, crop, location)
SELECT 'standby dealer ' || g || ' $mode', 'retailer', 'rice', ST_Translate(c.location, g * 0.0001, 0)
  FROM crm.customer c, generate_series(1, 3) g
 WHERE c.id = (SELECT min(id) FROM crm.customer WHERE location IS NOT NULL);
SQL
    wait_replay
    new_id=$(R -At -c "SELECT id FROM allocation.territory WHERE code = 'standby-$mode'")
    got=$(R -At -c "SELECT allocation.territory_at(location) FROM crm.customer WHERE location IS NOT NULL ORDER BY id LIMIT 1")
    [ "$got" = "$new_id" ] || fail "a new replica session does not see the territory added on the primary (territory_at $got, new territory $new_id)"
    echo "SELECT 'after', allocation.territory_at(location) FROM crm.customer WHERE location IS NOT NULL ORDER BY id LIMIT 1;" >&7
    exec 7>&-
    wait "$SESSION" || true
    grep -q "^after|$new_id\$" "$TMP/session.$mode.out" \
        || { cat "$TMP/session.$mode.out"; fail "a replica session opened before the change still answers from the old territory index"; }
    echo "    the replica session opened before the change: territory_at $(grep '^before|' "$TMP/session.$mode.out" | cut -d'|' -f2) -> $(grep '^after|' "$TMP/session.$mode.out" | cut -d'|' -f2) (the new territory)"
    echo "    territory_at() on the replica names the new territory; its customers replayed: $(R -At -c "SELECT count(*) FROM crm.customer WHERE name LIKE 'standby dealer % $mode'") of 3"
    if [ "$mode" = shared ]; then   # everything again after the change, once
        reads P "primary.$mode.after" ''
        reads R "replica.$mode.after" ''
        same_answers "primary.$mode.after" "replica.$mode.after"
    fi
    index_mode "$mode"

    echo "--- [$mode] writes on the replica: each must fail with SQLSTATE 25006"
    writes "$mode"
done
echo "PASS: on a streaming replica (preloaded and not) every view and read function answers like the primary, the territory index is built there and follows the primary's changes, and every write fails with 25006"
