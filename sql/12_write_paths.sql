--
-- 12_write_paths: every way a row reaches a managed table, manual owners and
-- their errors, re-evaluation on UPDATE, DELETE/TRUNCATE, location edge cases,
-- transactions and savepoints.
--
CREATE EXTENSION allocation;
\pset null '(null)'
-- CONTEXT lines name line numbers inside the extension's functions: not part of the contract
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, active) VALUES
    (1, 'a', 'Rep A (owner of A)', 1, 4,    true),
    (2, 'b', 'Rep B (owner of B)', 1, 10,   true),
    (3, 'c', 'Rep C (inactive)',   1, 10,   false),
    (4, 'd', 'Rep D (capacity 1)', 1, 1,    true),
    (5, 'e', 'Rep E (key accounts, unlimited)', 1, NULL, true);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B", "name": "County B"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'A';
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'B';
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tiers) VALUES ('key_tier', 20, 'rep', 5, '{key}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('terr', 10, 'team', 1, 'territory_owner');

CREATE TABLE r12_customer (
    id     integer PRIMARY KEY,
    name   text,
    tier   text,
    loc    geometry(Point, 4326),
    owner  bigint
);
SELECT allocation.manage('r12_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');

CREATE VIEW r12_state AS
SELECT c.id, c.name, r.code AS owner, a.source, a.pinned, a.reason
  FROM r12_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  LEFT JOIN allocation.assignment a ON a.key = c.id::text AND a.valid_to IS NULL
       AND a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'r12_customer'::regclass);
CREATE VIEW r12_load AS
SELECT r.code, r.capacity, l.held FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id;
CREATE VIEW r12_events AS
SELECT e.id, e.kind, e.table_name, e.key, fr.code AS from_rep, tr.code AS to_rep, ru.name AS rule, e.reason
  FROM allocation.event e
  LEFT JOIN allocation.rep fr ON fr.id = e.from_rep
  LEFT JOIN allocation.rep tr ON tr.id = e.to_rep
  LEFT JOIN allocation.rule ru ON ru.id = e.rule_id;
CREATE VIEW r12_history AS
SELECT a.id, m.table_name, a.key, r.code AS rep, a.source, a.pinned, a.valid_to IS NULL AS current, a.closed_reason
  FROM allocation.assignment a
  JOIN allocation.managed_table m ON m.id = a.managed_id
  LEFT JOIN allocation.rep r ON r.id = a.rep_id;
-- one value that changes when anything in the table, the registry, the audit log or the counters changes
CREATE VIEW r12_fingerprint AS
SELECT (SELECT count(*) FROM r12_customer) AS customers,
       (SELECT count(*) FROM allocation.assignment) AS registry_rows,
       (SELECT count(*) FROM allocation.event) AS events,
       md5((SELECT string_agg(format('%s|%s|%s|%s', id, name, tier, owner), ';' ORDER BY id) FROM r12_customer)
           || (SELECT string_agg(format('%s|%s|%s', id, rep_id, valid_to IS NULL), ';' ORDER BY id) FROM allocation.assignment)
           || (SELECT string_agg(format('%s|%s', rep_id, held), ';' ORDER BY rep_id) FROM allocation.rep_load)) AS hash;

-------------------------------------------------------------------------------
-- Single-row INSERT, multi-row INSERT, INSERT ... SELECT, COPY
-------------------------------------------------------------------------------
INSERT INTO r12_customer (id, name, loc) VALUES (1, 'single row in A', 'SRID=4326;POINT(5 5)');
INSERT INTO r12_customer (id, name, tier, loc) VALUES
    (2, 'multi row in B', NULL, 'SRID=4326;POINT(15 5)'),
    (3, 'multi row outside', NULL, 'SRID=4326;POINT(25 5)'),
    (4, 'multi row, key tier, no location', 'key', NULL);
INSERT INTO r12_customer (id, name, loc)
SELECT g, 'insert select in B', 'SRID=4326;POINT(15 5)'::geometry FROM generate_series(5, 6) g;
COPY r12_customer (id, name, tier, loc) FROM STDIN;
7	copy in A	\N	SRID=4326;POINT(5 5)
8	copy key tier, no location	key	\N
\.
SELECT * FROM r12_state ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM r12_events WHERE kind <> 'manage' ORDER BY id;

-------------------------------------------------------------------------------
-- INSERT ... ON CONFLICT DO NOTHING: skipped rows hold no slot
-------------------------------------------------------------------------------
INSERT INTO r12_customer (id, name, loc) VALUES (1, 'duplicate of 1 in A', 'SRID=4326;POINT(5 5)')
    ON CONFLICT DO NOTHING;
-- a holds 1 and 7; with capacity 3 it has one free slot, which the skipped
-- duplicate of 7 must not take away from the new row 9
UPDATE allocation.rep SET capacity = 3 WHERE code = 'a';
INSERT INTO r12_customer (id, name, loc) VALUES
    (7, 'duplicate of 7 in A', 'SRID=4326;POINT(5 5)'),
    (9, 'new in A', 'SRID=4326;POINT(5 5)'),
    (2, 'duplicate of 2 in B', 'SRID=4326;POINT(15 5)')
    ON CONFLICT (id) DO NOTHING;
UPDATE allocation.rep SET capacity = 4 WHERE code = 'a';
SELECT * FROM r12_state ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM allocation.check_consistency();
-- (9 leaves and 19 comes in its place, so that the rest does not depend on this case)
DELETE FROM r12_customer WHERE id = 9;
INSERT INTO r12_customer (id, name, loc) VALUES (19, 'new in A, single row', 'SRID=4326;POINT(5 5)');
SELECT * FROM r12_state WHERE id IN (9, 19) ORDER BY id;

-------------------------------------------------------------------------------
-- INSERT ... ON CONFLICT DO UPDATE
-------------------------------------------------------------------------------
-- a holds 1, 7, 19 (3 of 4). Only the name changes: the owner stays
INSERT INTO r12_customer (id, name, loc) VALUES (5, 'upsert: new name only', 'SRID=4326;POINT(15 5)')
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name;
-- the location of 2 moves from B to A: re-evaluated, a takes its last slot
-- (the slot the INSERT attempt looked at must not count against it)
INSERT INTO r12_customer (id, name, loc) VALUES (2, 'upsert: moved to A', 'SRID=4326;POINT(5 5)')
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, loc = EXCLUDED.loc;
SELECT * FROM r12_state WHERE id IN (2, 5) ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM r12_events WHERE key IN ('2', '5') ORDER BY id;
SELECT * FROM allocation.check_consistency();
-- (2 leaves again, so that the rest does not depend on this case)
DELETE FROM r12_customer WHERE id = 2;
SELECT * FROM r12_load ORDER BY code;

-------------------------------------------------------------------------------
-- Owner given on INSERT: a pinned manual assignment, validated
-------------------------------------------------------------------------------
INSERT INTO r12_customer (id, name, loc, owner) VALUES (10, 'manual b, located in A', 'SRID=4326;POINT(5 5)', 2);
INSERT INTO r12_customer (id, name, owner) VALUES (11, 'manual d (takes its only slot)', 4);
SELECT * FROM r12_state WHERE id IN (10, 11) ORDER BY id;
SELECT * FROM r12_fingerprint \gset fp_
-- unknown rep
INSERT INTO r12_customer (id, name, owner) VALUES (12, 'manual: unknown rep', 99);
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
-- inactive rep
INSERT INTO r12_customer (id, name, owner) VALUES (12, 'manual: inactive rep', 3);
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
-- rep at capacity
INSERT INTO r12_customer (id, name, owner) VALUES (12, 'manual: d is full', 4);
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
-- a multi-row statement whose second row fails leaves nothing of the first
INSERT INTO r12_customer (id, name, owner) VALUES (12, 'manual e, fine', 5), (13, 'manual: unknown rep', 99);
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
SELECT * FROM r12_state WHERE id >= 10 ORDER BY id;
SELECT * FROM r12_load ORDER BY code;

-------------------------------------------------------------------------------
-- UPDATE of the owner: reassignment and release, both pinned
-------------------------------------------------------------------------------
UPDATE r12_customer SET owner = 5 WHERE id = 10;
UPDATE r12_customer SET owner = NULL WHERE id = 1;
SELECT * FROM r12_state WHERE id IN (1, 10) ORDER BY id;
SELECT * FROM r12_events WHERE key IN ('1', '10') ORDER BY id;
SELECT * FROM r12_fingerprint \gset fp_
UPDATE r12_customer SET owner = 3 WHERE id = 10;
\echo :SQLSTATE
UPDATE r12_customer SET owner = 4 WHERE id = 10;
\echo :SQLSTATE
UPDATE r12_customer SET owner = 99 WHERE id = 10;
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
-- setting the same owner again is no change at all
UPDATE r12_customer SET owner = 5 WHERE id = 10;
UPDATE r12_customer SET name = 'manual, renamed' WHERE id = 10;
SELECT customers, registry_rows, events FROM r12_fingerprint;
SELECT * FROM r12_load ORDER BY code;

-------------------------------------------------------------------------------
-- UPDATE of location / tier: re-evaluated unless pinned
-------------------------------------------------------------------------------
-- 5 (rule, in B) moves to A: a takes it
UPDATE r12_customer SET loc = 'SRID=4326;POINT(6 6)' WHERE id = 5;
-- 6 (rule, in B) becomes a key account: e takes it
UPDATE r12_customer SET tier = 'key' WHERE id = 6;
-- 10 (pinned manual, e) moves to B: stays with e
UPDATE r12_customer SET loc = 'SRID=4326;POINT(15 5)' WHERE id = 10;
-- 1 (pinned release to the pool) moves: stays in the pool
UPDATE r12_customer SET loc = 'SRID=4326;POINT(16 6)' WHERE id = 1;
SELECT * FROM r12_state WHERE id IN (1, 5, 6, 10) ORDER BY id;
SELECT * FROM r12_events WHERE key IN ('1', '5', '6', '10') AND kind = 'reevaluate' ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
-- a holds 5, 7, 19; with capacity 3 it is full: moving 7 inside A keeps it with a
UPDATE allocation.rep SET capacity = 3 WHERE code = 'a';
UPDATE r12_customer SET loc = 'SRID=4326;POINT(4 4)' WHERE id = 7;
SELECT * FROM r12_state WHERE id = 7;
SELECT * FROM r12_load WHERE code = 'a';
UPDATE allocation.rep SET capacity = 4 WHERE code = 'a';
-- 'always': even pinned rows are re-evaluated
SELECT allocation.set_reevaluate('r12_customer', 'always');
UPDATE r12_customer SET loc = 'SRID=4326;POINT(15 6)' WHERE id = 10;
SELECT * FROM r12_state WHERE id = 10;
-- 'never': nothing is re-evaluated
SELECT allocation.set_reevaluate('r12_customer', 'never');
UPDATE r12_customer SET tier = NULL WHERE id = 6;
SELECT * FROM r12_state WHERE id = 6;
SELECT allocation.set_reevaluate('r12_customer', 'unless_pinned');
SELECT allocation.set_reevaluate('r12_customer', 'sometimes');
\echo :SQLSTATE
SELECT reevaluate FROM allocation.managed_table WHERE tbl = 'r12_customer'::regclass;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- The key cannot change
-------------------------------------------------------------------------------
SELECT * FROM r12_fingerprint \gset fp_
UPDATE r12_customer SET id = 100 WHERE id = 3;
\echo :SQLSTATE
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;

-------------------------------------------------------------------------------
-- DELETE closes the ownership and frees the slot
-------------------------------------------------------------------------------
DELETE FROM r12_customer WHERE id IN (19, 3);
SELECT * FROM r12_history WHERE key IN ('3', '19') ORDER BY id;
SELECT * FROM r12_events WHERE kind = 'delete' AND key IN ('3', '19') ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- Locations: NULL, other SRIDs, SRID 0, unknown SRID, not a point, NULL key
-------------------------------------------------------------------------------
CREATE TABLE r12_geo (
    id     integer UNIQUE,
    tier   text,
    loc    geometry,
    owner  integer
);
SELECT allocation.manage('r12_geo', 'id', 'loc', 'owner', '{"tier": "tier"}');
-- NULL location: location-free rules still apply, territory rules cannot
INSERT INTO r12_geo (id, tier, loc) VALUES (1, 'key', NULL), (2, NULL, NULL);
-- a point in EPSG:3857 is transformed (it lies in B)
INSERT INTO r12_geo (id, loc) VALUES (3, ST_Transform('SRID=4326;POINT(15 5)'::geometry, 3857));
-- a 3D point in 4326 (in A)
INSERT INTO r12_geo (id, loc) VALUES (4, 'SRID=4326;POINT Z (5 5 120)');
-- an empty point is no location
INSERT INTO r12_geo (id, tier, loc) VALUES (5, 'key', 'SRID=4326;POINT EMPTY');
SELECT g.id, g.tier, GeometryType(g.loc) AS geometry, ST_SRID(g.loc) AS srid, ST_IsEmpty(g.loc) AS empty,
       r.code AS owner, a.territory_id, a.reason
  FROM r12_geo g LEFT JOIN allocation.rep r ON r.id = g.owner
  LEFT JOIN allocation.assignment a ON a.key = g.id::text AND a.valid_to IS NULL
       AND a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'r12_geo'::regclass)
 ORDER BY g.id;
SELECT * FROM r12_fingerprint \gset fp_
SELECT count(*) AS geo_rows FROM r12_geo;
INSERT INTO r12_geo (id, loc) VALUES (6, 'POINT(5 5)');
\echo :SQLSTATE
INSERT INTO r12_geo (id, loc) VALUES (6, 'SRID=999999;POINT(5 5)');
\echo :SQLSTATE
INSERT INTO r12_geo (id, loc) VALUES (6, 'SRID=4326;LINESTRING(5 5, 6 6)');
\echo :SQLSTATE
INSERT INTO r12_geo (id, loc) VALUES (6, 'SRID=4326;MULTIPOINT((5 5))');
\echo :SQLSTATE
INSERT INTO r12_geo (id, loc) VALUES (6, 'SRID=4326;POLYGON((1 1, 2 1, 2 2, 1 1))');
\echo :SQLSTATE
INSERT INTO r12_geo (id, loc) VALUES (NULL, 'SRID=4326;POINT(5 5)');
\echo :SQLSTATE
-- an UPDATE to a bad location is refused the same way
UPDATE r12_geo SET loc = 'POINT(5 5)' WHERE id = 3;
\echo :SQLSTATE
UPDATE r12_geo SET loc = 'SRID=4326;LINESTRING(5 5, 6 6)' WHERE id = 3;
\echo :SQLSTATE
SELECT count(*) AS geo_rows FROM r12_geo;
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;

-------------------------------------------------------------------------------
-- Transactions: a rollback leaves nothing behind, savepoints are respected
-------------------------------------------------------------------------------
SELECT * FROM r12_fingerprint \gset fp_
BEGIN;
INSERT INTO r12_customer (id, name, loc) VALUES (20, 'rolled back insert', 'SRID=4326;POINT(15 5)');
UPDATE r12_customer SET owner = 2 WHERE id = 8;
DELETE FROM r12_customer WHERE id = 4;
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;
ROLLBACK;
SELECT customers, registry_rows, events, hash = :'fp_hash' AS unchanged FROM r12_fingerprint;

BEGIN;
INSERT INTO r12_customer (id, name, loc) VALUES (21, 'kept: before the savepoint', 'SRID=4326;POINT(15 5)');
SAVEPOINT s1;
INSERT INTO r12_customer (id, name, loc) VALUES (22, 'rolled back to s1', 'SRID=4326;POINT(15 5)');
UPDATE r12_customer SET owner = NULL WHERE id = 21;
ROLLBACK TO SAVEPOINT s1;
INSERT INTO r12_customer (id, name, loc) VALUES (23, 'kept: after the rollback to s1', 'SRID=4326;POINT(15 5)');
SAVEPOINT s2;
-- an error in the middle of a statement, then back to the savepoint
INSERT INTO r12_customer (id, name, loc, owner) VALUES (24, 'lost with s2', 'SRID=4326;POINT(15 5)', NULL), (25, 'error', NULL, 99);
ROLLBACK TO SAVEPOINT s2;
INSERT INTO r12_customer (id, name, loc) VALUES (26, 'kept: after the rollback to s2', 'SRID=4326;POINT(15 5)'), (27, 'kept too', 'SRID=4326;POINT(15 6)');
COMMIT;
SELECT * FROM r12_state WHERE id >= 20 ORDER BY id;
SELECT * FROM r12_history WHERE key::int >= 20 ORDER BY id;
SELECT * FROM r12_events WHERE key::int >= 20 AND table_name = 'public.r12_customer' ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- TRUNCATE closes every ownership of the table
-------------------------------------------------------------------------------
TRUNCATE r12_customer;
SELECT count(*) AS open_rows FROM allocation.assignment a JOIN allocation.managed_table m ON m.id = a.managed_id
 WHERE m.tbl = 'r12_customer'::regclass AND a.valid_to IS NULL;
SELECT closed_reason, count(*) FROM r12_history WHERE table_name = 'public.r12_customer' GROUP BY 1 ORDER BY 1;
SELECT kind, table_name, key, reason FROM allocation.event WHERE kind = 'truncate' ORDER BY id;
SELECT * FROM r12_load ORDER BY code;
-- the table is usable afterwards
INSERT INTO r12_customer (id, name, loc) VALUES (1, 'after truncate', 'SRID=4326;POINT(5 5)');
SELECT * FROM r12_state ORDER BY id;
SELECT * FROM allocation.check_consistency();

DROP VIEW r12_state, r12_load, r12_events, r12_history, r12_fingerprint;
DROP TABLE r12_customer, r12_geo;
DROP EXTENSION allocation CASCADE;
