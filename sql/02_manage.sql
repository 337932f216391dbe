--
-- 02_manage: manage() validation, attaching a table that already has rows,
-- unmanage(), managing again
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

INSERT INTO allocation.team (code, name) VALUES ('local', 'Local sales');
INSERT INTO allocation.rep (code, name, team_id, capacity) VALUES
    ('r1', 'Rep One', 1, 10), ('r2', 'Rep Two', 1, 10);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'A';
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('territory owner', 10, 'team', 1, 'territory_owner');

-- a customer table as a CRM would have it, already filled: two rows with an
-- owner (a rep id), two without
CREATE TABLE m_customer (
    id          integer PRIMARY KEY,
    code        text UNIQUE,
    name        text NOT NULL,
    tier        text,
    crop        text,
    kind        text,
    labels      text[],
    note        varchar(20)[],
    loc         geometry(Point, 4326),
    area        geometry(Polygon, 4326),
    anyloc      geometry,
    gloc        geography(Point, 4326),
    owner       bigint,
    owner_int   integer,
    owner_text  text,
    owner_num   numeric
);
INSERT INTO m_customer (id, code, name, tier, crop, loc, owner) VALUES
    (1, 'c1', 'owned by r1', 'retailer', 'rice', 'SRID=4326;POINT(5 5)', 1),
    (2, 'c2', 'owned by r2', 'dealer', 'wheat', 'SRID=4326;POINT(6 6)', 2),
    (3, 'c3', 'no owner, in A', 'retailer', NULL, 'SRID=4326;POINT(7 7)', NULL),
    (4, 'c4', 'no owner, nowhere', NULL, NULL, NULL, NULL);

-------------------------------------------------------------------------------
-- validation: every error leaves the table unmanaged and without triggers
-------------------------------------------------------------------------------
-- 22004: required arguments
SELECT allocation.manage(NULL, 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', NULL, 'loc', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', NULL);
\echo sqlstate :SQLSTATE

-- LA010: not an ordinary table
CREATE VIEW m_customer_v AS SELECT * FROM m_customer;
SELECT allocation.manage('m_customer_v', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
CREATE MATERIALIZED VIEW m_customer_mv AS SELECT * FROM m_customer;
SELECT allocation.manage('m_customer_mv', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
-- (partitioned tables are managed since 1.1, see 34_partitioned: the key must lead a unique index)
CREATE TABLE m_part (id int, region int, loc geometry(Point, 4326), owner bigint, PRIMARY KEY (region, id)) PARTITION BY RANGE (region);
SELECT allocation.manage('m_part', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('allocation.rep', 'id', NULL, 'team_id');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('allocation.assignment', 'id', NULL, 'rep_id');
\echo sqlstate :SQLSTATE

-- 42703: a mapped column that does not exist (the hint lists the columns)
SELECT allocation.manage('m_customer', 'nope', 'loc', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'location', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner_id');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"tier": "customer_tier"}');
\echo sqlstate :SQLSTATE

-- LA013: key column not unique by itself
SELECT allocation.manage('m_customer', 'name', 'loc', 'owner');
\echo sqlstate :SQLSTATE
CREATE TABLE m_multi (a int, b int, loc geometry(Point, 4326), owner bigint, UNIQUE (a, b));
SELECT allocation.manage('m_multi', 'a', 'loc', 'owner');
\echo sqlstate :SQLSTATE
CREATE TABLE m_partial (id int, loc geometry(Point, 4326), owner bigint);
CREATE UNIQUE INDEX ON m_partial (id) WHERE id > 0;
SELECT allocation.manage('m_partial', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE

-- LA014: location must be a PostGIS point column
SELECT allocation.manage('m_customer', 'id', 'name', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'area', 'owner');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'gloc', 'owner');
\echo sqlstate :SQLSTATE

-- LA015: owner column must hold a rep id (integer or bigint)
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner_text');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner_num');
\echo sqlstate :SQLSTATE

-- LA016: attributes object
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '["tier"]');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', NULL);
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"colour": "crop"}');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"tier": 5}');
\echo sqlstate :SQLSTATE
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"tags": "name"}');
\echo sqlstate :SQLSTATE

-- nothing was registered, no trigger installed
SELECT count(*) AS managed FROM allocation.managed_table;
SELECT count(*) AS registry_rows FROM allocation.assignment;
SELECT tgrelid::regclass, tgname FROM pg_trigger WHERE tgname LIKE 'zz_allocation%' ORDER BY 1, 2;

-- LA020: existing owners that are not reps
UPDATE m_customer SET owner = 99 WHERE id = 4;
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
UPDATE m_customer SET owner = NULL WHERE id = 4;
SELECT count(*) AS managed FROM allocation.managed_table;

-------------------------------------------------------------------------------
-- accepted variants (checked, then undone)
-------------------------------------------------------------------------------
BEGIN;
-- integer owner column, untyped geometry location, unique (non-pk) text key,
-- tags as varchar[], no location at all on the second table
SELECT allocation.manage('m_customer', 'code', 'anyloc', 'owner_int', '{"tags": "note", "business_type": "kind"}');
CREATE TABLE m_noloc (id bigint PRIMARY KEY, owner bigint);
SELECT allocation.manage('m_noloc', 'id', NULL, 'owner');
SELECT tbl, key_column, location_column, owner_column, attributes FROM allocation.managed_table ORDER BY id;
ROLLBACK;

-------------------------------------------------------------------------------
-- attaching a table that already has rows: owned rows become pinned manual
-- assignments, the others go to the pool; holdings are counted
-------------------------------------------------------------------------------
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "tags": "labels", "name": "name"}');
SELECT tbl, active, key_column, location_column, owner_column, attributes, reevaluate, table_name
  FROM allocation.managed_table;
SELECT key, rep_id, source, pinned, reason, tier, crop, valid_to IS NULL AS open
  FROM allocation.assignment ORDER BY key::int;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT kind, table_name, key, reason, detail FROM allocation.event WHERE kind = 'manage';
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'm_customer'::regclass AND NOT tgisinternal ORDER BY tgname;
-- the existing rows themselves are not modified
SELECT id, owner FROM m_customer ORDER BY id;
SELECT * FROM allocation.check_consistency();

-- new rows are assigned by the rules
INSERT INTO m_customer (id, code, name, loc) VALUES (5, 'c5', 'new in A', 'SRID=4326;POINT(1 1)');
INSERT INTO m_customer (id, code, name, loc) VALUES (6, 'c6', 'new outside', 'SRID=4326;POINT(50 50)');
SELECT id, owner FROM m_customer WHERE id >= 5 ORDER BY id;
SELECT key, rep_id, source, reason FROM allocation.assignment WHERE key::int >= 5 ORDER BY key::int;

-- LA011: managed twice
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE

-------------------------------------------------------------------------------
-- unmanage(): triggers removed, registry closed, history kept
-------------------------------------------------------------------------------
SELECT allocation.unmanage('m_customer');
SELECT tbl, active, table_name FROM allocation.managed_table;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'm_customer'::regclass AND NOT tgisinternal;
SELECT count(*) FILTER (WHERE valid_to IS NULL) AS open,
       count(*) FILTER (WHERE valid_to IS NOT NULL AND closed_reason = 'unmanaged') AS closed_unmanaged,
       count(*) AS total
  FROM allocation.assignment;
SELECT count(*) AS current_owner_rows FROM allocation.current_owner;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT kind, table_name, reason FROM allocation.event WHERE kind = 'unmanaged';
-- history is still queryable: who owned customer 1 just before
SELECT allocation.owner_at('m_customer', '1', (SELECT max(valid_to) FROM allocation.assignment) - interval '1 microsecond') AS owner_of_1;
-- inserts and updates are plain SQL again
INSERT INTO m_customer (id, code, name, loc) VALUES (7, 'c7', 'after unmanage, in A', 'SRID=4326;POINT(2 2)');
UPDATE m_customer SET owner = 77 WHERE id = 6;
SELECT id, owner FROM m_customer WHERE id >= 6 ORDER BY id;
SELECT count(*) AS registry_rows_for_7 FROM allocation.assignment WHERE key = '7';

-- LA012: not managed any more
SELECT allocation.unmanage('m_customer');
\echo sqlstate :SQLSTATE
SELECT allocation.set_reevaluate('m_customer', 'always');
\echo sqlstate :SQLSTATE
SELECT allocation.assign('m_customer', '1', 1, 'manual');
\echo sqlstate :SQLSTATE
SELECT allocation.unmanage('m_part');
\echo sqlstate :SQLSTATE

-------------------------------------------------------------------------------
-- managing again: the same registration comes back, current rows re-enter
-- the registry (owner 77 is not a rep: refused until cleaned up)
-------------------------------------------------------------------------------
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
\echo sqlstate :SQLSTATE
UPDATE m_customer SET owner = NULL WHERE id = 6;
SELECT allocation.manage('m_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
SELECT id, tbl, active, attributes FROM allocation.managed_table;
SELECT key, rep_id, source, pinned FROM allocation.assignment WHERE valid_to IS NULL ORDER BY key::int;
SELECT key, count(*) AS versions FROM allocation.assignment GROUP BY key ORDER BY key::int;
INSERT INTO m_customer (id, code, name, loc) VALUES (8, 'c8', 'managed again, in A', 'SRID=4326;POINT(3 3)');
SELECT id, owner FROM m_customer WHERE id = 8;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT * FROM allocation.check_consistency();
SELECT kind, count(*) FROM allocation.event GROUP BY kind ORDER BY kind;

-- set_reevaluate validates its mode
SELECT allocation.set_reevaluate('m_customer', 'sometimes');
\echo sqlstate :SQLSTATE
SELECT allocation.set_reevaluate('m_customer', 'never');
SELECT reevaluate FROM allocation.managed_table;

DROP TABLE m_multi, m_partial, m_part;
DROP MATERIALIZED VIEW m_customer_mv;
DROP VIEW m_customer_v;
DROP TABLE m_customer;
DROP EXTENSION allocation CASCADE;
