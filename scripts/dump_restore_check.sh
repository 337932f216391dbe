#!/usr/bin/env bash
# scripts/dump_restore_check.sh -- pg_dump / pg_restore round trip of a database
# that uses the allocation extension.
#
# Needs a running server reachable through the usual PG* variables (run it
# inside pg_virtualenv; scripts/test.sh does). It creates the databases
# alloc_dump_src and alloc_dump_dst (dropped first if they exist), so it is
# idempotent.
#
# Checks, exiting non-zero on the first mismatch:
#   * configuration (teams, reps, territories, rules, managed tables), the
#     ownership registry and history, suggestions, holdings counters, the audit
#     log and the customer rows are identical after the restore;
#   * the managed table is still managed in the restored database: its engine
#     triggers exist, the recorded column numbers match the restored table
#     (the source table had a dropped column, so they shift), a new INSERT
#     is auto-assigned by a structured rule and by a rule with an SQL
#     condition, with registry row and audit event, counters consistent, and a
#     column rename is still followed by the mapping.
set -Eeuo pipefail
export LC_ALL=C.UTF-8 LANG=C.UTF-8
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SRC=alloc_dump_src
DST=alloc_dump_dst
TMP=$(mktemp -d /tmp/alloc_dump.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

PSQL=(psql -X -q -v ON_ERROR_STOP=1)
fail () { echo "DUMP/RESTORE CHECK FAILED: $*"; exit 1; }

dropdb --if-exists "$SRC"
dropdb --if-exists "$DST"
createdb "$SRC"

echo "--- building the source database"
"${PSQL[@]}" -d "$SRC" >"$TMP/setup.out" 2>&1 -c 'CREATE EXTENSION postgis' -c 'CREATE EXTENSION allocation' \
    -f scripts/fixture/fill.sql || { cat "$TMP/setup.out"; fail "setup of the source database"; }

# what must survive: everything except internal compiled/derived columns
# (rule.condition_bin, managed_table.attnums: checked separately below)
cp scripts/fixture/snapshot.sql "$TMP/snapshot.sql"

"${PSQL[@]}" -d "$SRC" -f "$TMP/snapshot.sql" >"$TMP/src.snap" 2>&1 || { cat "$TMP/src.snap"; fail "snapshot of the source database"; }
grep -q 'c-cotton' "$TMP/src.snap" || { cat "$TMP/src.snap"; fail "source database is missing its customers"; }

echo "--- pg_dump -Fc $SRC"
pg_dump -Fc -f "$TMP/src.dump" "$SRC" || fail "pg_dump"
createdb "$DST"
echo "--- pg_restore into $DST"
pg_restore --exit-on-error -d "$DST" "$TMP/src.dump" >"$TMP/restore.out" 2>&1 \
    || { cat "$TMP/restore.out"; fail "pg_restore reported errors"; }

"${PSQL[@]}" -d "$DST" -f "$TMP/snapshot.sql" >"$TMP/dst.snap" 2>&1 || { cat "$TMP/dst.snap"; fail "snapshot of the restored database"; }
if ! diff -u "$TMP/src.snap" "$TMP/dst.snap" >"$TMP/snap.diff"; then
    cat "$TMP/snap.diff"
    fail "data differs after the restore (diff above: - source, + restored)"
fi
echo "--- configuration, registry, history, audit and customers identical after restore"

echo "--- the restored table is still managed"
"${PSQL[@]}" -d "$DST" -At -f scripts/fixture/after.sql >"$TMP/after.out" 2>&1 || { cat "$TMP/after.out"; fail "post-restore checks raised an error"; }
cat "$TMP/after.out"

dropdb "$SRC"
dropdb "$DST"
echo "dump/restore round trip OK"
