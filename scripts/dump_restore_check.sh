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
"${PSQL[@]}" -d "$SRC" >"$TMP/setup.out" 2>&1 <<'SQL' || { cat "$TMP/setup.out"; fail "setup of the source database"; }
CREATE EXTENSION postgis;
CREATE EXTENSION allocation;

INSERT INTO allocation.team (code, name) VALUES ('ka', 'Key accounts'), ('local', 'Local sales');
INSERT INTO allocation.team (code, name, parent_id) VALUES ('local_n', 'Local north', 2);
INSERT INTO allocation.rep (code, name, team_id, capacity, crops) VALUES
    ('r1', 'Rep One', 1, 5, '{rice}'),
    ('r2', 'Rep Two', 2, 10, '{wheat}'),
    ('r3', 'Rep Three', 3, 10, '{rice,cotton}'),
    ('r4', 'Rep Four', 2, NULL, '{}');
UPDATE allocation.rep SET active = false WHERE code = 'r4';

SELECT allocation.import_territories('{"type":"FeatureCollection","features":[
 {"type":"Feature","properties":{"code":"A","name":"County A","region":"R"},
  "geometry":{"type":"Polygon","coordinates":[[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
 {"type":"Feature","properties":{"code":"B","name":"County B","region":"R"},
  "geometry":{"type":"Polygon","coordinates":[[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
 {"type":"Feature","properties":{"code":"R","name":"Region R"},
  "geometry":{"type":"Polygon","coordinates":[[[0,0],[20,0],[20,10],[0,10],[0,0]]]}}
]}'::jsonb, parent_property => 'region');
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'A';
UPDATE allocation.territory SET owner_rep_id = 3, crop_zones = '{rice}' WHERE code = 'B';
-- the parent row is rewritten after its children
UPDATE allocation.territory SET owner_team_id = 2, priority = -1 WHERE code = 'R';

CREATE SCHEMA crm;
CREATE TABLE crm.customer (
    id      bigserial PRIMARY KEY,
    legacy  text,
    name    text NOT NULL,
    tier    text,
    crop    text,
    volume  numeric,
    tags    text[],
    loc     geometry(Point, 4326),
    phone   text,
    owner   bigint
);
-- a dropped column: the restored table has different column numbers
ALTER TABLE crm.customer DROP COLUMN legacy;
INSERT INTO crm.customer (name, tier, crop, volume, loc, owner) VALUES
    ('pre-existing owned', 'retailer', 'rice', 1, 'SRID=4326;POINT(5 5)', 2),
    ('pre-existing free', 'retailer', 'rice', 1, NULL, NULL);
SELECT allocation.manage('crm.customer', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "tags": "tags", "name": "name", "phone": "phone"}');

INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tiers)
    VALUES ('key accounts', 100, 'team', 1, 'least_loaded', '{key_distributor}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tbl, condition)
    VALUES ('big growers', 50, 'team', 2, 'least_loaded', 'crm.customer', 'volume > 1000 AND crop IS NOT NULL');
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_rep_id, crops)
    VALUES ('cotton review', 40, 'suggest', 'rep', 3, '{cotton}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('territory owner', 10, 'team', 2, 'territory_owner');
-- a condition calling PostGIS: pg_restore runs with an empty search_path
INSERT INTO allocation.rule (name, priority, target_kind, tbl, condition)
    VALUES ('far east', 5, 'pool', 'crm.customer', 'ST_X(loc) > 100');

INSERT INTO crm.customer (name, tier, crop, volume, tags, loc) VALUES
    ('c-ka', 'key_distributor', 'rice', 5, '{vip}', 'SRID=4326;POINT(5 5)'),
    ('c-a', 'retailer', 'rice', 5, NULL, 'SRID=4326;POINT(3 3)'),
    ('c-b', 'retailer', 'rice', 5, NULL, 'SRID=4326;POINT(15 5)'),
    ('c-big', 'grower', 'wheat', 5000, NULL, 'SRID=4326;POINT(50 50)'),
    ('c-cotton', 'grower', 'cotton', 5, NULL, 'SRID=4326;POINT(55 55)'),
    ('c-out', 'retailer', 'rice', 5, NULL, 'SRID=4326;POINT(60 60)'),
    ('c-gone', 'retailer', 'rice', 5, NULL, 'SRID=4326;POINT(4 4)');
-- history: a manual reassignment, a re-evaluation, a delete
SELECT allocation.assign('crm.customer', (SELECT id::text FROM crm.customer WHERE name = 'c-a'), 3, 'dealer asked for r3');
UPDATE crm.customer SET loc = 'SRID=4326;POINT(15 5)' WHERE name = 'c-b';
DELETE FROM crm.customer WHERE name = 'c-gone';
-- claims, duplicates and the pool (issue #3)
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown, protection)
    VALUES (NULL, NULL, NULL, 10, '7 days', '30 days'), (2, 'retailer', 4, NULL, NULL, NULL);
INSERT INTO allocation.recycle_policy (name, no_followup, warn_before, exempt_stages) VALUES ('default', '30 days', '3 days', '{won}');
UPDATE crm.customer SET phone = '138-0013-8000' WHERE name = 'c-ka';
SELECT allocation.set_duplicate_policy('crm.customer', 'dispute');
INSERT INTO crm.customer (name, tier, crop, volume, phone) VALUES ('c-dup', 'retailer', 'rice', 5, '+86 13800138000');
SELECT allocation.claim('crm.customer', (SELECT id::text FROM crm.customer WHERE name = 'pre-existing free'), 2);
SELECT allocation.release('crm.customer', (SELECT id::text FROM crm.customer WHERE name = 'c-b'), 'moved away');
SELECT allocation.lock_customer('crm.customer', (SELECT id::text FROM crm.customer WHERE name = 'c-out'), 'HQ');
SELECT allocation.log_followup('crm.customer', (SELECT id::text FROM crm.customer WHERE name = 'c-ka'), 'visit', 'ok');
SELECT allocation.set_duplicate_policy('crm.customer', 'block');
-- the audit log is sealed; one more configuration change stays unsealed
SELECT allocation.seal_audit();
UPDATE allocation.rep SET capacity = 6 WHERE code = 'r1';
SQL

# what must survive: everything except internal compiled/derived columns
# (rule.condition_bin, managed_table.attnums: checked separately below)
cat >"$TMP/snapshot.sql" <<'SQL'
\pset footer off
\echo == team
SELECT id, code, name, parent_id, created_at FROM allocation.team ORDER BY id;
\echo == rep
SELECT id, code, name, team_id, capacity, crops, active, login, created_at FROM allocation.rep ORDER BY id;
\echo == rep_load
SELECT * FROM allocation.rep_load ORDER BY rep_id;
\echo == rr_cursor
SELECT * FROM allocation.rr_cursor ORDER BY team_id;
\echo == territory
SELECT id, code, name, parent_id, md5(ST_AsEWKB(geom)::text) AS geom, crop_zones, owner_rep_id, owner_team_id,
       exclusive, priority, properties, updated_at
  FROM allocation.territory ORDER BY id;
\echo == managed_table
SELECT id, tbl::text, active, key_column, location_column, owner_column, attributes, reevaluate,
       managed_since, table_name
  FROM allocation.managed_table ORDER BY id;
\echo == rule
SELECT id, name, priority, enabled, mode, tbl::text, territory_id, crops, tiers, business_types, tags,
       condition, condition_search_path, target_kind, target_rep_id, target_team_id, policy, description,
       created_at, updated_at
  FROM allocation.rule ORDER BY id;
\echo == assignment
SELECT * FROM allocation.assignment ORDER BY id;
\echo == suggestion
SELECT * FROM allocation.suggestion ORDER BY id;
\echo == audit_seal
SELECT * FROM allocation.audit_seal ORDER BY id;
SELECT * FROM allocation.audit_head();
SELECT * FROM allocation.verify_audit();
\echo == event
SELECT * FROM allocation.event ORDER BY id;
\echo == claims, duplicates, pool
SELECT * FROM allocation.claim_policy ORDER BY id;
SELECT * FROM allocation.recycle_policy ORDER BY id;
SELECT * FROM allocation.claim_day ORDER BY rep_id, day;
SELECT * FROM allocation.customer_lock ORDER BY managed_id, key;
SELECT * FROM allocation.protection ORDER BY managed_id, key;
SELECT * FROM allocation.followup ORDER BY id;
SELECT * FROM allocation.identity ORDER BY managed_id, key;
SELECT * FROM allocation.identity_key ORDER BY managed_id, kind, value;
SELECT * FROM allocation.duplicate ORDER BY id;
SELECT duplicate_exact, duplicate_fuzzy, name_similarity, duplicate_within_m FROM allocation.managed_table ORDER BY id;
\echo == customer
SELECT id, name, tier, crop, volume, tags, ST_AsEWKT(loc) AS loc, phone, owner FROM crm.customer ORDER BY id;
\echo == current_owner
SELECT table_name, key, rep_code, territory_code, rule_name, source, pinned FROM allocation.current_owner ORDER BY table_name, key;
SQL

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
"${PSQL[@]}" -d "$DST" -At >"$TMP/after.out" 2>&1 <<'SQL' || { cat "$TMP/after.out"; fail "post-restore checks raised an error"; }
DO $$
DECLARE
    n integer;
    v_owner bigint;
    v_expected bigint;
    l text;
    a smallint;
    m allocation.managed_table;
    bad text[] := '{}';
BEGIN
    SELECT count(*) INTO n FROM pg_trigger
     WHERE tgrelid = 'crm.customer'::regclass AND tgname LIKE 'zz_allocation_%' AND NOT tgisinternal;
    IF n <> 4 THEN
        bad := bad || format('expected 4 engine triggers on crm.customer after restore, found %s', n);
    END IF;

    -- the restored log verifies as intact (the seals and their head came along)
    SELECT count(*) INTO n FROM allocation.verify_audit();
    IF n <> 0 THEN
        bad := bad || format('verify_audit() reports %s problems right after the restore', n);
    END IF;
    IF allocation.seal_audit() <> 1 THEN
        bad := bad || 'seal_audit() after the restore did not seal exactly the one config event left unsealed in the source'::text;
    END IF;
    SELECT count(*) INTO n FROM allocation.verify_audit();
    IF n <> 0 THEN
        bad := bad || format('verify_audit() reports %s problems after sealing in the restored database', n);
    END IF;

    SELECT * INTO m FROM allocation.managed_table WHERE tbl = 'crm.customer'::regclass AND active;
    IF m.id IS NULL THEN
        RAISE EXCEPTION 'crm.customer is not an active managed table after restore';
    END IF;
    -- recorded column numbers must be those of the restored table (the source
    -- table had a dropped column, so the numbers shift)
    FOR l, a IN SELECT key, (value #>> '{}')::smallint FROM jsonb_each(m.attnums) ORDER BY key LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_attribute
                        WHERE attrelid = m.tbl AND attnum = a AND NOT attisdropped
                          AND attname = (CASE l WHEN 'key' THEN m.key_column WHEN 'location' THEN m.location_column
                                                WHEN 'owner' THEN m.owner_column ELSE (m.attributes ->> l)::name END)) THEN
            bad := bad || format('managed_table.attnums says %s is column number %s, but in the restored table that is %s',
                l, a, coalesce((SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = m.tbl AND attnum = a
                                  AND NOT attisdropped), 'no column'));
        END IF;
    END LOOP;

    -- the duplicate policy works right after the restore
    BEGIN
        INSERT INTO crm.customer (name, tier, phone) VALUES ('dup-after-restore', 'retailer', '0086 138 0013 8000');
        bad := bad || 'a duplicate phone was accepted after the restore (policy block)'::text;
    EXCEPTION WHEN SQLSTATE 'LA070' THEN
        NULL;
    END;

    -- structured rule + territory owner: point in county B -> B's owner r3
    INSERT INTO crm.customer (name, tier, crop, volume, loc)
    VALUES ('new-b', 'retailer', 'rice', 5, 'SRID=4326;POINT(12 2)') RETURNING owner INTO v_owner;
    SELECT id INTO v_expected FROM allocation.rep WHERE code = 'r3';
    IF v_owner IS DISTINCT FROM v_expected THEN
        bad := bad || format('new customer in county B got owner %s, expected %s (r3, territory owner)', v_owner, v_expected);
    END IF;

    -- rule with an SQL condition over columns behind the dropped one
    INSERT INTO crm.customer (name, tier, crop, volume, loc)
    VALUES ('new-big', 'grower', 'wheat', 9000, 'SRID=4326;POINT(70 70)') RETURNING owner INTO v_owner;
    IF v_owner IS NULL OR NOT EXISTS (SELECT 1 FROM allocation.rep WHERE id = v_owner AND team_id = 2) THEN
        bad := bad || format('new big grower got owner %s, expected a rep of team local (rule "big growers")', v_owner);
    ELSIF NOT EXISTS (SELECT 1 FROM allocation.assignment a JOIN allocation.rule r ON r.id = a.rule_id
                    WHERE a.key = (SELECT id::text FROM crm.customer WHERE name = 'new-big')
                      AND a.valid_to IS NULL AND a.rep_id = v_owner AND r.name = 'big growers') THEN
        bad := bad || 'no open registry row by rule "big growers" for the new big grower'::text;
    END IF;

    -- outside every territory, no rule matches -> pool
    INSERT INTO crm.customer (name, tier, crop, volume, loc)
    VALUES ('new-pool', 'retailer', 'rice', 5, 'SRID=4326;POINT(80 80)') RETURNING owner INTO v_owner;
    IF v_owner IS NOT NULL THEN
        bad := bad || format('customer outside every territory got owner %s, expected the pool', v_owner);
    END IF;

    SELECT count(*) INTO n FROM allocation.event e
     WHERE e.key IN (SELECT id::text FROM crm.customer WHERE name IN ('new-b', 'new-big', 'new-pool'))
       AND e.kind IN ('assign', 'pool');
    IF n <> 3 THEN
        bad := bad || format('expected 3 audit events (assign/pool) for the new customers, found %s', n);
    END IF;
    SELECT count(*) INTO n FROM allocation.check_consistency();
    IF n <> 0 THEN
        bad := bad || format('check_consistency() reports %s problems after restore and inserts', n);
    END IF;

    IF array_length(bad, 1) > 0 THEN
        RAISE EXCEPTION E'post-restore checks failed:\n  %', array_to_string(bad, E'\n  ');
    END IF;
END
$$;
-- a rename after the restore must still be followed to the right column
ALTER TABLE crm.customer RENAME COLUMN crop TO main_crop;
DO $$
DECLARE
    v text;
BEGIN
    SELECT attributes ->> 'crop' INTO v FROM allocation.managed_table WHERE tbl = 'crm.customer'::regclass;
    IF v IS DISTINCT FROM 'main_crop' THEN
        RAISE EXCEPTION 'after RENAME COLUMN crop TO main_crop in the restored database, the crop attribute maps to %', v;
    END IF;
END
$$;
SELECT 'post-restore inserts: ' || string_agg(format('%s -> %s', c.name, coalesce(r.code, 'pool')), ', ' ORDER BY c.id)
  FROM crm.customer c LEFT JOIN allocation.rep r ON r.id = c.owner WHERE c.name LIKE 'new-%';
SQL
cat "$TMP/after.out"

dropdb "$SRC"
dropdb "$DST"
echo "dump/restore round trip OK"
