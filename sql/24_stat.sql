--
-- 24_stat: the engine's counters for the DBA (allocation.stat,
-- allocation.stat_index, allocation.stat_reset()).  With the library in
-- shared_preload_libraries every counter moves by exactly what the statements
-- did; without it (expected/24_stat_1.out) the views are empty / say
-- collecting = false and nothing raises.  Privileges are the same in both.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES
    (1, 'a', 'Rep A', 1, 100), (2, 'b', 'Rep B', 1, 100), (3, 'c', 'Rep C', 1, 1);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (10, 'west', 'West', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
    (20, 'east', 'East', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2);
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_rep_id, mode) VALUES
    ('review', 30, '{review}', 'rep', 2, 'suggest');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES
    ('owner', 10, 'team', 1, 'territory_owner');

CREATE TABLE dealer (
    id    text PRIMARY KEY,
    tier  text,
    tel   text,
    loc   geometry(Point, 4326),
    note  text,
    owner bigint
);
SELECT allocation.manage('dealer', 'id', 'loc', 'owner', '{"tier": "tier", "phone": "tel"}');
SELECT allocation.set_duplicate_policy('dealer', exact => 'dispute', fuzzy => 'off');

-- the counters of dealer, NULL-free (0 rows without preloading)
CREATE VIEW dealer_stat AS
SELECT calls, statements, rows_direct, rows_sql, assigned, manual, pooled, suggested, disputed,
       unchanged, deleted, refused
  FROM allocation.stat WHERE tbl = 'dealer'::regclass;

SELECT allocation.stat_reset();
SELECT collecting, index_builds, fallback_lookups, max_rows, stats_reset IS NOT NULL AS reset_known
  FROM allocation.stat_index;
SELECT * FROM dealer_stat;

-------------------------------------------------------------------------------
-- direct path: a plain INSERT of 4 new customers: 3 by the territory rule
-- (one rep each), 1 without location to the pool
-------------------------------------------------------------------------------
INSERT INTO dealer (id, tel, loc) VALUES
    ('d1', '138-0000-0001', 'SRID=4326;POINT(5 5)'),
    ('d2', '138-0000-0002', 'SRID=4326;POINT(15 5)'),
    ('d3', '138-0000-0003', 'SRID=4326;POINT(6 6)'),
    ('d4', '138-0000-0004', NULL);
SELECT * FROM dealer_stat;
SELECT decide_time > 0 AS decide_timed, record_time > 0 AS record_timed, stats_reset <= now() AS reset_before
  FROM allocation.stat WHERE tbl = 'dealer'::regclass;
-- the statement's territory index: one build, in memory, both territories
SELECT index_builds, last_territories, last_mode, last_bytes > 0 AS sized, last_build_time >= 0 AS timed
  FROM allocation.stat_index;

-------------------------------------------------------------------------------
-- SQL path: a suggestion goes through allocation._record_batch; so does an
-- owner given on INSERT in the same statement (manual)
-------------------------------------------------------------------------------
INSERT INTO dealer (id, tier, tel, loc, owner) VALUES
    ('s1', 'review', '139-0000-0001', 'SRID=4326;POINT(5 5)', NULL),
    ('m1', NULL,     '139-0000-0002', 'SRID=4326;POINT(5 5)', 3);
SELECT * FROM dealer_stat;

-- ON CONFLICT DO NOTHING: the row is examined (a call) but not stored (no outcome)
INSERT INTO dealer (id, tel) VALUES ('d1', '140-0000-0001') ON CONFLICT DO NOTHING;
SELECT * FROM dealer_stat;

-------------------------------------------------------------------------------
-- updates: re-evaluation moves d1 east (assigned, SQL path); a changed note is
-- examined, nothing to record; a new tier re-examined, owner kept (unchanged)
-------------------------------------------------------------------------------
UPDATE dealer SET loc = 'SRID=4326;POINT(15 6)' WHERE id = 'd1';
UPDATE dealer SET note = 'called' WHERE id = 'd2';
UPDATE dealer SET tier = 'gold' WHERE id = 'd3';
SELECT * FROM dealer_stat;
SELECT key, to_rep FROM allocation.event WHERE key = 'd1' ORDER BY id;

-------------------------------------------------------------------------------
-- a refusal: rep c is full (LA022); nothing stored, counted as refused
-------------------------------------------------------------------------------
INSERT INTO dealer (id, tel, loc, owner) VALUES ('x1', '141-0000-0001', 'SRID=4326;POINT(5 5)', 3);
SELECT count(*) AS x1_stored FROM dealer WHERE id = 'x1';
SELECT * FROM dealer_stat;

-- a possible duplicate (same phone as d2) is kept without an owner: disputed
INSERT INTO dealer (id, tel, loc) VALUES ('p1', '138-0000-0002', 'SRID=4326;POINT(15 5)');
SELECT id, owner FROM dealer WHERE id = 'p1';
-- a delete
DELETE FROM dealer WHERE id = 'd4';
SELECT * FROM dealer_stat;

-------------------------------------------------------------------------------
-- counters are not transactional (as in pg_stat_statements): a rolled-back
-- statement's recorded rows stay counted
-------------------------------------------------------------------------------
BEGIN;
INSERT INTO dealer (id, tel, loc) VALUES ('r1', '142-0000-0001', 'SRID=4326;POINT(5 5)');
ROLLBACK;
SELECT calls, statements, rows_direct, assigned FROM dealer_stat;

-- allocation.stat_track = off (a superuser's): nothing is counted meanwhile
SET allocation.stat_track = off;
INSERT INTO dealer (id, tel, loc) VALUES ('o1', '142-0000-0002', 'SRID=4326;POINT(5 5)');
RESET allocation.stat_track;
SELECT calls, statements, rows_direct, assigned FROM dealer_stat;

-------------------------------------------------------------------------------
-- the indexed fallback: with allocation.territory_cache_max = 0 every located
-- decision asks the GiST index (the index is rebuilt without polygons)
-------------------------------------------------------------------------------
SET allocation.territory_cache_max = 0;
INSERT INTO dealer (id, tel, loc) VALUES
    ('f1', '143-0000-0001', 'SRID=4326;POINT(5 5)'), ('f2', '143-0000-0002', 'SRID=4326;POINT(15 5)'), ('f3', '143-0000-0003', NULL);
RESET allocation.territory_cache_max;
SELECT index_builds, last_mode, fallback_lookups FROM allocation.stat_index;
SELECT owner FROM dealer WHERE id IN ('f1', 'f2', 'f3') ORDER BY id;

-------------------------------------------------------------------------------
-- reset: one table, then everything; bad input
-------------------------------------------------------------------------------
SELECT allocation.stat_reset('dealer');
SELECT * FROM dealer_stat;
SELECT stats_reset > now() - interval '1 minute' AS just_reset FROM allocation.stat WHERE tbl = 'dealer'::regclass;
INSERT INTO dealer (id, tel, loc) VALUES ('n1', '144-0000-0001', 'SRID=4326;POINT(5 5)');
SELECT calls, assigned FROM dealer_stat;
SELECT allocation.stat_reset(NULL);
SELECT * FROM dealer_stat;
SELECT index_builds, fallback_lookups FROM allocation.stat_index;
SELECT allocation.stat_reset('pg_class');
\echo sqlstate :SQLSTATE
SELECT allocation.stat_reset(4000000000::oid::regclass);
\echo sqlstate :SQLSTATE

-------------------------------------------------------------------------------
-- privileges: analysts read, admins reset, reps neither; internals for nobody
-------------------------------------------------------------------------------
CREATE ROLE regress_stat_analyst;
CREATE ROLE regress_stat_rep;
CREATE ROLE regress_stat_admin;
SELECT allocation.grant_role('regress_stat_analyst', 'analyst'), allocation.grant_role('regress_stat_rep', 'rep'),
       allocation.grant_role('regress_stat_admin', 'admin');
INSERT INTO dealer (id, tel, loc) VALUES ('n2', '144-0000-0002', 'SRID=4326;POINT(15 5)');
SET ROLE regress_stat_analyst;
SELECT tbl, calls, assigned FROM allocation.stat ORDER BY tbl::text;
SELECT collecting FROM allocation.stat_index;
SELECT allocation.stat_reset();
\echo sqlstate :SQLSTATE
SELECT count(*) FROM allocation._stat();
\echo sqlstate :SQLSTATE
RESET ROLE;
SET ROLE regress_stat_rep;
SELECT count(*) FROM allocation.stat;
\echo sqlstate :SQLSTATE
SELECT allocation.stat_reset('dealer');
\echo sqlstate :SQLSTATE
RESET ROLE;
SELECT calls, assigned FROM dealer_stat;
SET ROLE regress_stat_admin;
SELECT allocation.stat_reset('dealer');
RESET ROLE;
SELECT calls, assigned FROM dealer_stat;

DROP EXTENSION allocation CASCADE;
DROP TABLE dealer;
DROP OWNED BY regress_stat_analyst, regress_stat_rep, regress_stat_admin;
DROP ROLE regress_stat_analyst, regress_stat_rep, regress_stat_admin;
