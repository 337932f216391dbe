-- Hardening: DDL type changes, condition ownership, broken conditions,
-- DML in WITH, ON CONFLICT with explicit owners, suggest on re-evaluation
CREATE EXTENSION allocation;
SET client_min_messages = warning;
DROP ROLE IF EXISTS regress_h_admin;
RESET client_min_messages;
CREATE ROLE regress_h_admin;
INSERT INTO allocation.team (code, name) VALUES ('t', 'Team');
INSERT INTO allocation.rep (code, name, team_id, capacity) VALUES ('a', 'A', 1, 1), ('b', 'B', 1, NULL);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A"}, "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B"}, "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}}]}');
UPDATE allocation.territory SET owner_rep_id = CASE code WHEN 'A' THEN 1 ELSE 2 END;
CREATE TABLE h_customer (id int PRIMARY KEY, tier text, volume numeric, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('h_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
     VALUES ('terr', 10, 'team', 1, 'territory_owner');

-- the type of the owner, location or tags column cannot change (LA018); nothing changes
ALTER TABLE h_customer ALTER COLUMN owner TYPE text;
\echo sqlstate :SQLSTATE
ALTER TABLE h_customer ALTER COLUMN loc TYPE bytea USING NULL;
\echo sqlstate :SQLSTATE
SELECT format_type(atttypid, atttypmod) FROM pg_attribute
 WHERE attrelid = 'h_customer'::regclass AND attname IN ('owner', 'loc') ORDER BY attname;
-- other columns may change
ALTER TABLE h_customer ALTER COLUMN tier TYPE varchar(40);
CREATE VIEW h_state AS
SELECT c.id, c.owner, a.rep_id AS registry_rep, a.source, a.pinned
  FROM h_customer c
  FULL JOIN (SELECT * FROM allocation.assignment WHERE valid_to IS NULL) a ON a.key = c.id::text
 ORDER BY coalesce(c.id, a.key::int);

-- a condition may only be given by the table's owner (42501); the rule table is unchanged
GRANT USAGE ON SCHEMA allocation TO regress_h_admin;
GRANT INSERT, SELECT ON allocation.rule TO regress_h_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA allocation TO regress_h_admin;
SET ROLE regress_h_admin;
INSERT INTO allocation.rule (name, priority, target_kind, tbl, condition)
     VALUES ('sneaky', 99, 'pool', 'h_customer', 'volume > 0');
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT name FROM allocation.rule ORDER BY id;

-- a condition whose function is dropped: that rule is skipped with a WARNING, the rest works
CREATE FUNCTION h_is_big(numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT $1 > 1000';
INSERT INTO allocation.rule (name, priority, target_kind, tbl, condition)
     VALUES ('big', 50, 'pool', 'h_customer', 'h_is_big(volume)');
INSERT INTO h_customer (id, volume, loc) VALUES (1, 5000, 'SRID=4326;POINT(15 5)');
DROP FUNCTION h_is_big(numeric);
UPDATE allocation.team SET name = 'Team';   -- any configuration change rebuilds the caches
\set VERBOSITY terse
INSERT INTO h_customer (id, volume, loc) VALUES (2, 5000, 'SRID=4326;POINT(16 5)');
\set VERBOSITY default
SELECT * FROM h_state;
DELETE FROM allocation.rule WHERE name = 'big';

-- DML on a managed table inside WITH: one batch for the whole query
WITH ins AS (INSERT INTO h_customer (id, loc) VALUES (3, 'SRID=4326;POINT(17 5)') RETURNING id)
UPDATE h_customer SET owner = 2 WHERE id = 1;
SELECT * FROM h_state;
SELECT * FROM allocation.check_consistency();

-- ON CONFLICT with an explicit owner: a re-import of an existing row runs no capacity check
INSERT INTO h_customer (id, loc, owner) VALUES (4, 'SRID=4326;POINT(5 5)', 1);
INSERT INTO h_customer (id, loc, owner) VALUES (4, 'SRID=4326;POINT(5 5)', 1) ON CONFLICT (id) DO NOTHING;
INSERT INTO h_customer (id, loc, owner) VALUES (4, 'SRID=4326;POINT(5 6)', 1)
    ON CONFLICT (id) DO UPDATE SET loc = EXCLUDED.loc;
SELECT * FROM h_state WHERE id = 4;
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;

-- re-evaluation landing on a suggest rule keeps the owner and queues a suggestion
UPDATE allocation.rep SET capacity = NULL WHERE code = 'a';
INSERT INTO allocation.rule (name, priority, mode, tiers, target_kind, target_rep_id)
     VALUES ('review dealers', 60, 'suggest', '{dealer}', 'rep', 1);
UPDATE h_customer SET tier = 'dealer' WHERE id = 3;
SELECT * FROM h_state WHERE id = 3;
SELECT key, rep_id, status FROM allocation.suggestion ORDER BY id;
SELECT kind, key, from_rep, to_rep FROM allocation.event WHERE key = '3' ORDER BY id;

-- assign() to the current owner confirms it: pinned, source manual, event 'pin'
SELECT allocation.assign('h_customer', '3', 2, 'confirmed after the dispute meeting');
SELECT * FROM h_state WHERE id = 3;
SELECT kind, from_rep, to_rep, reason FROM allocation.event WHERE key = '3' ORDER BY id;
SELECT key, rep_id, status, decision_reason FROM allocation.suggestion ORDER BY id;   -- superseded
SELECT * FROM allocation.check_consistency();

-- a recount inside a transaction (TRUNCATE, manage) is seen by the next slot taken
UPDATE allocation.rep SET capacity = 1 WHERE code = 'b';
CREATE TABLE h_other (id int PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
BEGIN;
TRUNCATE h_customer;
INSERT INTO h_customer (id, loc, owner) VALUES (10, 'SRID=4326;POINT(15 5)', 2);
TRUNCATE h_customer;
INSERT INTO h_customer (id, loc, owner) VALUES (11, 'SRID=4326;POINT(15 5)', 2);   -- the slot is free again
INSERT INTO h_other VALUES (1, 'SRID=4326;POINT(15 5)', 2);
SELECT allocation.manage('h_other', 'id', 'loc', 'owner');                        -- b now holds 2 (> 1)
INSERT INTO h_customer (id, loc, owner) VALUES (12, 'SRID=4326;POINT(15 5)', 2);   -- refused: at capacity
\echo sqlstate :SQLSTATE
ROLLBACK;
UPDATE allocation.rep SET capacity = NULL WHERE code = 'b';
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT * FROM allocation.check_consistency();

-- partitions cannot be managed (LA010)
CREATE TABLE h_part (id int, loc geometry(Point, 4326), owner bigint) PARTITION BY RANGE (id);
CREATE TABLE h_part_1 PARTITION OF h_part FOR VALUES FROM (0) TO (100);
ALTER TABLE h_part_1 ADD PRIMARY KEY (id);
SELECT allocation.manage('h_part_1', 'id', 'loc', 'owner');
\echo sqlstate :SQLSTATE
SELECT count(*) AS managed FROM allocation.managed_table WHERE tbl = 'h_part_1'::regclass;

SELECT * FROM allocation.check_consistency();
DROP TABLE h_part;
DROP TABLE h_other;
DROP VIEW h_state;
DROP TABLE h_customer;
DROP EXTENSION allocation CASCADE;
REVOKE ALL ON SCHEMA allocation FROM regress_h_admin;
DROP SCHEMA allocation;
DROP ROLE regress_h_admin;
