#!/usr/bin/env bash
# scripts/upgrade_check.sh -- every released version upgrades to the default one.
#
# Needs a running server reachable through the usual PG* variables, with the
# extension installed (make install: the library, the default version's script,
# the frozen scripts of released versions and the upgrade scripts).  Run it
# inside pg_virtualenv; scripts/test.sh does.  Idempotent (drops its databases
# first).  For each released version V (allocation--V.sql kept in the
# repository) older than the default version D:
#
#  (a) schema: CREATE EXTENSION allocation VERSION 'V' then ALTER EXTENSION
#      allocation UPDATE gives the same objects as CREATE EXTENSION allocation
#      (version D): pg_dump --binary-upgrade --schema-only of both databases
#      (the only pg_dump mode that writes an extension's member objects) are
#      equal once OIDs and transaction ids are taken out, and the extension's
#      configuration tables (pg_extension.extconfig, extcondition) agree;
#  (b) data: a database filled under V with the library of D (the state while
#      an upgrade is pending: scripts/fixture/fill.sql -- territories, rules
#      with SQL conditions, a managed table with history, claims, a duplicate
#      policy, the pool, sealed audit -- plus grants and resource requests)
#      reads the same before and after the UPDATE (scripts/fixture/snapshot.sql);
#  (c) the table is still managed and inserts assign as before
#      (scripts/fixture/after.sql);
#  (d) verify_audit() is clean (after.sql);
#  (e) every compiled rule condition carries this server's stamp after the
#      UPDATE (the upgrade compiles them again);
# and first, that the released scripts are byte for byte the ones released
# (scripts/released.sha256: a new release adds its line, none is ever changed).
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
TMP=$(mktemp -d /tmp/alloc_upgrade.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
fail () { echo "UPGRADE CHECK FAILED: $*"; exit 1; }

# released scripts are frozen: byte for byte what was released
sha256sum --quiet -c scripts/released.sha256 \
    || fail "a released script (scripts/released.sha256) was edited: released versions are frozen; put the change in sql_src/ and the upgrade script"
echo "released scripts unchanged: $(awk '{print $2}' scripts/released.sha256 | tr '\n' ' ')"

DEFAULT=$(sed -n "s/^default_version *= *'\(.*\)'/\1/p" allocation.control)
[ -n "$DEFAULT" ] || fail "no default_version in allocation.control"
OLD=$(ls allocation--*.sql | sed -n 's/^allocation--\([0-9.]*\)\.sql$/\1/p' | { grep -vx "$DEFAULT" || true; } | sort -V)
[ -n "$OLD" ] || fail "no frozen released version (allocation--V.sql) besides the default $DEFAULT"
echo "default version $DEFAULT; released versions checked: $(echo $OLD)"

# pg_dump of the whole database, as a text independent of OIDs and xids
normalized_dump () {
    pg_dump --binary-upgrade --schema-only -d "$1" 2>"$TMP/pg_dump.err" |
        grep -v -E '^(\\(un)?restrict |SELECT pg_catalog\.binary_upgrade_set_next_|SET relfrozenxid|-- )' |
        sed -E "s/^WHERE oid = '[0-9]+';$/WHERE oid = '(toast table)';/" |
        sed -E "s/(binary_upgrade_create_empty_extension\('[a-z_]+', '[a-z_]+', (true|false), '[^']*', )'\{[0-9,]*\}'/\1'{config OIDs}'/" |
        sed -E "s/(binary_upgrade_create_empty_extension\('allocation', .*'\{config OIDs\}', )'\{[^}]*\}'/\1'{their conditions}'/"
}
extconfig () {
    "${PSQL[@]}" -At -d "$1" -c "SELECT c::regclass::text || ' ' || coalesce(x.extcondition[i], '')
                                   FROM pg_extension x, generate_subscripts(x.extconfig, 1) i, LATERAL (SELECT x.extconfig[i] AS c) s
                                  WHERE x.extname = 'allocation' ORDER BY 1"
}

dropdb --if-exists alloc_up_fresh
createdb alloc_up_fresh
"${PSQL[@]}" -d alloc_up_fresh -c 'CREATE EXTENSION postgis' -c 'CREATE EXTENSION allocation'
normalized_dump alloc_up_fresh >"$TMP/fresh.sql" || { cat "$TMP/pg_dump.err"; fail "pg_dump of the fresh database"; }
extconfig alloc_up_fresh >"$TMP/fresh.extconfig"
grep -q "binary_upgrade_create_empty_extension('allocation', 'allocation', false, '$DEFAULT'" "$TMP/fresh.sql" \
    || fail "the fresh database does not have allocation $DEFAULT"

for V in $OLD; do
    echo "=== $V -> $DEFAULT: schema"
    dropdb --if-exists alloc_up_empty
    createdb alloc_up_empty
    "${PSQL[@]}" -d alloc_up_empty -c 'CREATE EXTENSION postgis' -c "CREATE EXTENSION allocation VERSION '$V'" \
                 -c 'ALTER EXTENSION allocation UPDATE'
    normalized_dump alloc_up_empty >"$TMP/upgraded.sql" || { cat "$TMP/pg_dump.err"; fail "pg_dump of the upgraded database"; }
    extconfig alloc_up_empty >"$TMP/upgraded.extconfig"
    if ! diff -u "$TMP/fresh.sql" "$TMP/upgraded.sql" >"$TMP/schema.diff"; then
        head -200 "$TMP/schema.diff"
        fail "$V + upgrade differs from a fresh $DEFAULT (diff above: - fresh, + upgraded)"
    fi
    diff -u "$TMP/fresh.extconfig" "$TMP/upgraded.extconfig" \
        || fail "$V + upgrade registers other configuration tables for pg_dump than a fresh $DEFAULT"
    echo "    pg_dump --binary-upgrade --schema-only: identical ($(wc -l <"$TMP/fresh.sql") lines), configuration tables identical"
    dropdb alloc_up_empty

    echo "=== $V -> $DEFAULT: a filled database"
    dropdb --if-exists alloc_up_filled
    createdb alloc_up_filled
    "${PSQL[@]}" -d alloc_up_filled -c 'CREATE EXTENSION postgis' -c "CREATE EXTENSION allocation VERSION '$V'" \
                 -f scripts/fixture/fill.sql >"$TMP/fill.out" 2>&1 \
        || { cat "$TMP/fill.out"; fail "filling a $V database (with the $DEFAULT library) failed"; }
    "${PSQL[@]}" -d alloc_up_filled >"$TMP/extra.out" 2>&1 <<'SQL' || { cat "$TMP/extra.out"; fail "grants and resources under $V"; }
DROP ROLE IF EXISTS alloc_up_manager;
CREATE ROLE alloc_up_manager;
SELECT allocation.grant_role('alloc_up_manager', 'manager');
INSERT INTO allocation.resource_pool (code, name, kind, total, remaining) VALUES ('seed-x', 'New seed X rights', 'product_right', 5, 5);
SELECT status FROM allocation.request_resource(
    (SELECT id FROM allocation.resource_pool WHERE code = 'seed-x'), 'crm.customer',
    (SELECT id::text FROM crm.customer WHERE name = 'c-ka'), 2, 'trial plot');
-- as fill.sql ends: sealed, then one configuration change left unsealed (after.sql counts it)
SELECT allocation.seal_audit();
UPDATE allocation.rep SET capacity = 7 WHERE code = 'r1';
SQL
    cat scripts/fixture/snapshot.sql - >"$TMP/snapshot.sql" <<'SQL'
\echo == resources and grants
SELECT id, code, total, remaining FROM allocation.resource_pool ORDER BY id;
SELECT id, pool_id, key, qty, status, note FROM allocation.resource_request ORDER BY id;
SELECT r.rolname, m.rolname AS member_of FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.member
  JOIN pg_roles m ON m.oid = a.roleid WHERE r.rolname = 'alloc_up_manager' ORDER BY 2;
SELECT has_function_privilege('alloc_up_manager', 'allocation.assign(regclass, text, bigint, text)', 'EXECUTE') AS manager_may_assign;
SQL
    "${PSQL[@]}" -d alloc_up_filled -f "$TMP/snapshot.sql" >"$TMP/before.snap" 2>&1 \
        || { cat "$TMP/before.snap"; fail "snapshot under $V"; }
    grep -q 'c-cotton' "$TMP/before.snap" || { cat "$TMP/before.snap"; fail "the $V database is missing its customers"; }
    grep -q 'seed-x' "$TMP/before.snap" || { cat "$TMP/before.snap"; fail "the $V database is missing its resource pool"; }

    "${PSQL[@]}" -d alloc_up_filled -c 'ALTER EXTENSION allocation UPDATE' \
                 -c "DROP ROLE IF EXISTS alloc_up_reference" -c "CREATE ROLE alloc_up_reference" \
                 -c "SELECT allocation.grant_role('alloc_up_reference', 'manager')" >"$TMP/update.out" 2>&1 \
        || { cat "$TMP/update.out"; fail "ALTER EXTENSION allocation UPDATE from $V"; }
    [ "$("${PSQL[@]}" -At -d alloc_up_filled -c "SELECT extversion FROM pg_extension WHERE extname = 'allocation'")" = "$DEFAULT" ] \
        || fail "after ALTER EXTENSION UPDATE the filled database is not at $DEFAULT"
    "${PSQL[@]}" -d alloc_up_filled -f "$TMP/snapshot.sql" >"$TMP/after.snap" 2>&1 \
        || { cat "$TMP/after.snap"; fail "snapshot after the upgrade"; }
    if ! diff -u "$TMP/before.snap" "$TMP/after.snap" >"$TMP/data.diff"; then
        cat "$TMP/data.diff"
        fail "data differs after upgrading from $V (diff above: - before, + after)"
    fi
    echo "    configuration, history, audit, customers, resources and grants identical after the upgrade"
    if "${PSQL[@]}" -At -d alloc_up_filled -c "SELECT 1 FROM pg_attribute WHERE attrelid = 'allocation.rule'::regclass
                                                  AND attname = 'condition_stamp' AND NOT attisdropped" | grep -q 1; then
        n=$("${PSQL[@]}" -At -d alloc_up_filled -c "SELECT count(*) FROM allocation.rule WHERE condition IS NOT NULL
                         AND condition_stamp IS DISTINCT FROM (current_setting('server_version_num')::int / 10000)::text
                                                              || '/' || (SELECT system_identifier FROM pg_control_system())")
        [ "$n" = 0 ] || fail "$n rule condition(s) not compiled again under this server's stamp by the upgrade"
        echo "    every rule condition compiled again and stamped by this server"
    fi
    # a role granted under the old version has what grant_role() gives its kind now, once
    # granted again after the update (README: the update names the roles)
    "${PSQL[@]}" -q -d alloc_up_filled -c "SELECT allocation.grant_role('alloc_up_manager', 'manager')" >/dev/null
    missing=$("${PSQL[@]}" -At -d alloc_up_filled -c "SELECT string_agg(p.oid::regprocedure::text, ', ')
                 FROM pg_proc p WHERE p.pronamespace = 'allocation'::regnamespace AND p.proname !~ '^_'
                  AND has_function_privilege('alloc_up_reference', p.oid, 'EXECUTE')
                  AND NOT has_function_privilege('alloc_up_manager', p.oid, 'EXECUTE')")
    [ -z "$missing" ] || fail "after the upgrade the manager granted under $V lacks: $missing"
    echo "    the manager granted under $V has every function a manager granted now has"
    "${PSQL[@]}" -d alloc_up_filled -At -f scripts/fixture/after.sql >"$TMP/after.out" 2>&1 \
        || { cat "$TMP/after.out"; fail "the upgraded database does not work as before"; }
    cat "$TMP/after.out"
    dropdb alloc_up_filled
    "${PSQL[@]}" -d postgres -c 'DROP ROLE alloc_up_manager' -c 'DROP ROLE alloc_up_reference'
done
dropdb alloc_up_fresh
echo "upgrade check OK"
