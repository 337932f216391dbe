#!/usr/bin/env bash
# scripts/pg_upgrade_check.sh -- a real pg_upgrade of a database that uses the
# extension, as a DBA runs it for a major PostgreSQL upgrade.
#
#   bash scripts/pg_upgrade_check.sh [BINDIR]
#
# BINDIR (default: pg_config --bindir) must have the extension installed
# (make install).  Two throw-away clusters in a temporary directory, run as
# the postgres user when started as root:
#   1. old cluster: initdb, the extension at the default version, filled by
#      scripts/fixture/fill.sql (rules with SQL conditions, a managed table
#      with history, claims, a fuzzy duplicate policy, sealed audit);
#   2. new cluster: initdb, then pg_upgrade (old -> new, same binaries: this
#      machine has one major version; the new cluster has another system
#      identifier, which is what the compiled-condition stamp keys on);
#   3. the upgraded database: the same snapshot as before (fixture
#      snapshot.sql), conditions recognised as compiled elsewhere and compiled
#      again from their text, the trigram index present, and the table still
#      managed: inserts assign, verify_audit() clean, a column rename followed
#      (fixture after.sql).
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

BINDIR=${1:-$(pg_config --bindir)}
TMP=$(mktemp -d /tmp/alloc_pg_upgrade.XXXXXX)
chmod 700 "$TMP"   # the clusters trust local connections: only their owner may reach the sockets
fail () { echo "PG_UPGRADE CHECK FAILED: $*"; exit 1; }

AS=()
if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$TMP"
    AS=(runuser -u postgres --)
fi
run () { (cd "$TMP" && "${AS[@]}" env LC_ALL=C.UTF-8 LANG=C.UTF-8 "$@"); }
PORT_OLD=$((20000 + RANDOM % 20000))
PORT_NEW=$((PORT_OLD + 1))
cleanup () {
    run "$BINDIR/pg_ctl" -D "$TMP/old" -m immediate stop >/dev/null 2>&1 || true
    run "$BINDIR/pg_ctl" -D "$TMP/new" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT
cp -r scripts/fixture "$TMP/fixture"
chmod -R a+rX "$TMP/fixture"
psql_old () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT_OLD" -U postgres "$@"; }
psql_new () { run "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT_NEW" -U postgres "$@"; }

echo "--- old cluster (port $PORT_OLD)"
run "$BINDIR/initdb" -D "$TMP/old" -U postgres -A trust >"$TMP/initdb_old.log" 2>&1 || { cat "$TMP/initdb_old.log"; fail "initdb old"; }
run "$BINDIR/pg_ctl" -D "$TMP/old" -o "-p $PORT_OLD -k $TMP -c listen_addresses='' -c unix_socket_permissions=0700" -l "$TMP/old.log" -w start >/dev/null \
    || { cat "$TMP/old.log"; fail "starting the old cluster"; }
psql_old -d postgres -c 'CREATE DATABASE crm'
psql_old -d crm -c 'CREATE EXTENSION postgis' -c 'CREATE EXTENSION allocation' -f "$TMP/fixture/fill.sql" >"$TMP/fill.out" 2>&1 \
    || { cat "$TMP/fill.out"; fail "filling the old cluster"; }
psql_old -d crm -f "$TMP/fixture/snapshot.sql" >"$TMP/before.snap" 2>&1 || { cat "$TMP/before.snap"; fail "snapshot before"; }
old_stamp=$(psql_old -At -d crm -c "SELECT allocation._condition_stamp()")
run "$BINDIR/pg_ctl" -D "$TMP/old" -w stop >/dev/null

echo "--- new cluster, pg_upgrade"
run "$BINDIR/initdb" -D "$TMP/new" -U postgres -A trust >"$TMP/initdb_new.log" 2>&1 || { cat "$TMP/initdb_new.log"; fail "initdb new"; }
if ! run "$BINDIR/pg_upgrade" -b "$BINDIR" -B "$BINDIR" -d "$TMP/old" -D "$TMP/new" -U postgres \
        -p "$PORT_OLD" -P "$PORT_NEW" -s "$TMP" >"$TMP/pg_upgrade.log" 2>&1; then
    cat "$TMP/pg_upgrade.log"
    find "$TMP/new" -name '*.log' -path '*pg_upgrade_output.d*' -exec tail -50 {} \; 2>/dev/null || true
    fail "pg_upgrade"
fi
grep -E '^(Performing Upgrade|Upgrade Complete)' "$TMP/pg_upgrade.log" || true
run "$BINDIR/pg_ctl" -D "$TMP/new" -o "-p $PORT_NEW -k $TMP -c listen_addresses='' -c unix_socket_permissions=0700" -l "$TMP/new.log" -w start >/dev/null \
    || { cat "$TMP/new.log"; fail "starting the upgraded cluster"; }

echo "--- the upgraded database"
psql_new -d crm -f "$TMP/fixture/snapshot.sql" >"$TMP/after.snap" 2>&1 || { cat "$TMP/after.snap"; fail "snapshot after"; }
if ! diff -u "$TMP/before.snap" "$TMP/after.snap"; then
    fail "data differs after pg_upgrade (diff above: - before, + after)"
fi
echo "    configuration, history, audit and customers identical after pg_upgrade"
new_stamp=$(psql_new -At -d crm -c "SELECT allocation._condition_stamp()")
[ "$old_stamp" != "$new_stamp" ] || fail "the upgraded cluster has the old cluster's stamp ($new_stamp)"
n=$(psql_new -At -d crm -c "SELECT count(*) FROM allocation.rule WHERE condition IS NOT NULL AND condition_stamp = '$old_stamp'")
[ "$n" -gt 0 ] || fail "no rule condition carries the old cluster's stamp: nothing to prove"
echo "    $n rule condition(s) compiled under the old cluster ($old_stamp); this one is $new_stamp"
# the first insert compiles them again from their text (after.sql checks the rule with a
# condition assigns); the ALTER TABLE in after.sql stamps them here
psql_new -d crm -At -f "$TMP/fixture/after.sql" >"$TMP/after.out" 2>&1 || { cat "$TMP/after.out"; fail "the upgraded database does not work as before"; }
cat "$TMP/after.out"
n=$(psql_new -At -d crm -c "SELECT count(*) FROM allocation.rule WHERE condition IS NOT NULL AND condition_stamp IS DISTINCT FROM '$new_stamp'")
[ "$n" = 0 ] || fail "$n rule condition(s) still carry another server's stamp after an ALTER TABLE on the upgraded cluster"
echo "    every rule condition compiled again and stamped by the upgraded cluster"
grep -i -E 'segfault|terminated by signal|PANIC' "$TMP/new.log" && fail "the upgraded server logged a crash"
echo "pg_upgrade check OK"
