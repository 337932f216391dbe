--
-- 03_ddl: DDL on managed tables must not break the engine
--   renames are followed (mapping, rule conditions, table name), drops of
--   columns the engine needs are refused (LA018), DROP TABLE detaches
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

INSERT INTO allocation.team (code, name) VALUES ('local', 'Local sales'), ('ka', 'Key accounts');
INSERT INTO allocation.rep (code, name, team_id) VALUES
    ('r1', 'Rep One', 1), ('r2', 'Rep Two', 2);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'A';

CREATE TABLE d_customer (
    id      bigint PRIMARY KEY,
    name    text,
    tier    text,
    crop    text,
    volume  numeric,
    remark  text,
    loc     geometry(Point, 4326),
    owner   bigint
);
SELECT allocation.manage('d_customer', 'id', 'loc', 'owner', '{"tier": "tier", "crop": "crop"}');
-- key accounts: tier; big growers: an SQL condition over volume; else territory owner
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tiers)
    VALUES ('key accounts', 100, 'rep', 2, '{key}');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
    VALUES ('big growers', 50, 'rep', 2, 'd_customer', 'volume > 1000');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('territory owner', 10, 'team', 1, 'territory_owner');

INSERT INTO d_customer (id, name, tier, volume, loc) VALUES
    (1, 'key dealer', 'key', 1, NULL),
    (2, 'big grower', 'grower', 5000, NULL),
    (3, 'retailer in A', 'retailer', 1, 'SRID=4326;POINT(5 5)');
SELECT id, owner FROM d_customer ORDER BY id;

-- a column the engine does not use can be added, renamed and dropped
ALTER TABLE d_customer ADD COLUMN phone text;
ALTER TABLE d_customer RENAME COLUMN remark TO remarks;
ALTER TABLE d_customer DROP COLUMN remarks;

-------------------------------------------------------------------------------
-- renaming mapped columns: the mapping follows, inserts are still assigned
-------------------------------------------------------------------------------
ALTER TABLE d_customer RENAME COLUMN tier TO customer_tier;
ALTER TABLE d_customer RENAME COLUMN loc TO location;
ALTER TABLE d_customer RENAME COLUMN owner TO owner_rep;
ALTER TABLE d_customer RENAME COLUMN id TO customer_id;
SELECT key_column, location_column, owner_column, attributes FROM allocation.managed_table;
INSERT INTO d_customer (customer_id, name, customer_tier, volume, location) VALUES
    (4, 'key dealer 2', 'key', 1, NULL),
    (5, 'retailer in A 2', 'retailer', 1, 'SRID=4326;POINT(6 6)'),
    (6, 'retailer outside', 'retailer', 1, 'SRID=4326;POINT(60 60)');
SELECT customer_id, owner_rep FROM d_customer ORDER BY customer_id;
-- re-evaluation reads the renamed columns too
UPDATE d_customer SET location = 'SRID=4326;POINT(7 7)' WHERE customer_id = 6;
SELECT customer_id, owner_rep FROM d_customer WHERE customer_id = 6;

-- renaming a column used by a rule condition: the condition text follows
ALTER TABLE d_customer RENAME COLUMN volume TO annual_volume;
SELECT name, condition FROM allocation.rule WHERE name = 'big growers';
INSERT INTO d_customer (customer_id, name, customer_tier, annual_volume) VALUES (7, 'big grower 2', 'grower', 9000);
SELECT customer_id, owner_rep FROM d_customer WHERE customer_id = 7;

-- renaming the table: rules and registration follow it, and so does the
-- recorded table name (used by the views and new audit events)
ALTER TABLE d_customer RENAME TO d_client;
SELECT tbl, table_name, active FROM allocation.managed_table;
SELECT name, tbl FROM allocation.rule WHERE tbl IS NOT NULL;
INSERT INTO d_client (customer_id, name, customer_tier, annual_volume, location) VALUES
    (8, 'after table rename', 'retailer', 1, 'SRID=4326;POINT(8 8)'),
    (9, 'big after table rename', 'grower', 7000, NULL);
SELECT customer_id, owner_rep FROM d_client WHERE customer_id >= 8 ORDER BY customer_id;
SELECT table_name, key, kind FROM allocation.event WHERE key IN ('8', '9') ORDER BY id;
SELECT table_name, key, rep_code FROM allocation.current_owner ORDER BY key::int;

-------------------------------------------------------------------------------
-- dropping columns the engine needs: LA018, and the column is still there
-------------------------------------------------------------------------------
ALTER TABLE d_client DROP COLUMN customer_tier;
\echo sqlstate :SQLSTATE
ALTER TABLE d_client DROP COLUMN location;
\echo sqlstate :SQLSTATE
ALTER TABLE d_client DROP COLUMN owner_rep;
\echo sqlstate :SQLSTATE
ALTER TABLE d_client DROP COLUMN crop;
\echo sqlstate :SQLSTATE
-- used by the condition of rule "big growers"
ALTER TABLE d_client DROP COLUMN annual_volume;
\echo sqlstate :SQLSTATE
-- CASCADE does not get around it
ALTER TABLE d_client DROP COLUMN annual_volume CASCADE;
\echo sqlstate :SQLSTATE
SELECT attname FROM pg_attribute WHERE attrelid = 'd_client'::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum;
-- once the rule no longer reads it, the column can go
UPDATE allocation.rule SET condition = 'name IS NOT NULL AND customer_tier = ''grower''' WHERE name = 'big growers';
ALTER TABLE d_client DROP COLUMN annual_volume;
INSERT INTO d_client (customer_id, name, customer_tier) VALUES (10, 'grower without volume', 'grower');
SELECT customer_id, owner_rep FROM d_client WHERE customer_id = 10;

-------------------------------------------------------------------------------
-- DROP TABLE of a managed table: registry closed, registration inactive,
-- its rules removed (with a rule_dropped event); other tables keep working
-------------------------------------------------------------------------------
CREATE TABLE d_other (id int PRIMARY KEY, tier text, qty int, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('d_other', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
    VALUES ('other big', 60, 'rep', 1, 'd_other', 'qty > 10');
SELECT count(*) FILTER (WHERE valid_to IS NULL) AS open_before FROM allocation.assignment WHERE managed_id = 1;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;

DROP TABLE d_client;

SELECT id, tbl, active, table_name FROM allocation.managed_table ORDER BY id;
SELECT count(*) FILTER (WHERE valid_to IS NULL) AS open_after,
       count(*) FILTER (WHERE closed_reason = 'table_dropped') AS closed_by_drop,
       count(*) AS history_rows
  FROM allocation.assignment WHERE managed_id = 1;
SELECT name, tbl FROM allocation.rule ORDER BY id;
SELECT kind, table_name, rule_id, reason, detail ->> 'name' AS rule_name
  FROM allocation.event WHERE kind IN ('rule_dropped', 'table_dropped') ORDER BY id;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT * FROM allocation.check_consistency();
-- the history of the dropped table is still there
SELECT count(*) AS events FROM allocation.event WHERE managed_id = 1;

-- the other table keeps working: structured rules and its own condition rule
INSERT INTO d_other (id, tier, qty, loc) VALUES
    (1, 'key', 1, NULL),
    (2, 'retailer', 50, NULL),
    (3, 'retailer', 1, 'SRID=4326;POINT(1 1)'),
    (4, 'retailer', 1, NULL);
SELECT id, owner FROM d_other ORDER BY id;
SELECT table_name, key, rep_code, rule_name, source FROM allocation.current_owner ORDER BY table_name, key;

-- a table with the old name is a new table: not managed
CREATE TABLE d_client (customer_id int PRIMARY KEY, owner_rep bigint);
INSERT INTO d_client VALUES (1, NULL);
SELECT count(*) AS registry_rows FROM allocation.assignment a JOIN allocation.managed_table m ON m.id = a.managed_id
 WHERE m.tbl = 'd_client'::regclass;

DROP TABLE d_client;
DROP TABLE d_other;
DROP EXTENSION allocation CASCADE;
