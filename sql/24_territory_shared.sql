--
-- 24_territory_shared: the territory index in both modes.  Without
-- shared_preload_libraries every backend builds its own (index_mode
-- 'backend', expected/24_territory_shared.out); with allocation preloaded the
-- polygons are built once per territory version in dynamic shared memory and
-- every backend attaches to them ('shared', expected/24_territory_shared_1.out).
-- In both modes: a new connection decides like the first one with the same
-- version; a committed territory change gives a new version that every
-- backend uses from its next statement; a transaction's own uncommitted
-- change is used by that transaction only (a private index in shared mode)
-- and never by another backend; an invalidation without a change keeps the
-- version; a bound below the index's size falls back to the indexed path
-- with the same decisions.
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES
    (1, 'r1', 'Rep 1', 1), (2, 'r2', 'Rep 2', 1), (3, 'r3', 'Rep 3', 1);
-- A = [0,10]x[0,10] (r1), B = [10,20]x[0,10] (r2), C a many-vertex circle
-- around (30,5) (r3), so that the index has some size
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'A', 'A', ST_Multi(ST_MakeEnvelope(0, 0, 10, 10, 4326)), 1),
    (2, 'B', 'B', ST_Multi(ST_MakeEnvelope(10, 0, 20, 10, 4326)), 2),
    (3, 'C', 'C', ST_Multi(ST_Buffer(ST_SetSRID(ST_MakePoint(30, 5), 4326), 4, 256)), 3);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
VALUES ('territory-owner', 10, 'team', 1, 'territory_owner');
CREATE TABLE customer (id serial PRIMARY KEY, probe text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('customer', 'id', 'loc', 'owner');
-- probes: inside A, on the A/B border (A wins: lower id), inside B, inside C,
-- on no territory
CREATE TABLE spot (probe text PRIMARY KEY, loc geometry(Point, 4326));
INSERT INTO spot VALUES ('a', 'SRID=4326;POINT(2 5)'), ('border', 'SRID=4326;POINT(10 5)'),
    ('b', 'SRID=4326;POINT(12 5)'), ('c', 'SRID=4326;POINT(31 6)'), ('none', 'SRID=4326;POINT(50 50)');
-- the last decision per probe, with the reference (ST_Covers, latest territories)
CREATE VIEW decided AS
SELECT DISTINCT ON (c.probe) c.probe, r.code AS rep,
       (SELECT t.code FROM allocation.territory t WHERE ST_Covers(t.geom, c.loc)
         ORDER BY t.priority DESC, t.id LIMIT 1) AS st_covers
  FROM customer c LEFT JOIN allocation.rep r ON r.id = c.owner
 ORDER BY c.probe, c.id DESC;
CREATE TABLE seen (step text, stats jsonb);

-------------------------------------------------------------------------------
-- first backend: builds the index (shared mode: publishes it)
-------------------------------------------------------------------------------
INSERT INTO customer (probe, loc) SELECT probe, loc FROM spot;
INSERT INTO seen SELECT 'first', allocation.cache_stats();
SELECT s->>'mode' AS mode, s->>'index_mode' AS index_mode, s->>'reason' AS reason,
       s->>'preloaded' AS preloaded, (s->>'territories')::int AS territories,
       (s->>'vertices')::int > 250 AS has_vertices,
       (s->>'shared_bytes')::bigint > 0 AS has_shared_bytes, (s->>'shared_builds')::int AS shared_builds,
       (s->>'attached_backends')::int AS attached_backends
  FROM (SELECT stats AS s FROM seen WHERE step = 'first') x;
SELECT * FROM decided ORDER BY probe;

-------------------------------------------------------------------------------
-- a new connection: same version, same decisions (shared mode: attaches, builds nothing)
-------------------------------------------------------------------------------
\c
\set SHOW_CONTEXT never
TRUNCATE customer;
INSERT INTO customer (probe, loc) SELECT probe, loc FROM spot;
INSERT INTO seen SELECT 'second', allocation.cache_stats();
SELECT n.stats->>'index_mode' AS index_mode,
       n.stats->>'version' = f.stats->>'version' AS same_version,
       (n.stats->>'shared_builds_made')::int - (f.stats->>'shared_builds_made')::int AS builds_since_first,
       (n.stats->>'shared_bytes') = (f.stats->>'shared_bytes') AS same_shared_bytes
  FROM seen n, seen f WHERE n.step = 'second' AND f.step = 'first';
SELECT * FROM decided ORDER BY probe;

-------------------------------------------------------------------------------
-- an invalidation without a change (ANALYZE): same version
-------------------------------------------------------------------------------
ANALYZE allocation.territory;
INSERT INTO customer (probe, loc) VALUES ('a', 'SRID=4326;POINT(2 5)');
SELECT allocation.cache_stats()->>'version' = (SELECT stats->>'version' FROM seen WHERE step = 'second') AS same_version;

-------------------------------------------------------------------------------
-- this transaction's own change: used by its own decisions only
-------------------------------------------------------------------------------
BEGIN;
UPDATE allocation.territory SET owner_rep_id = 3 WHERE code = 'B';
INSERT INTO customer (probe, loc) VALUES ('b', 'SRID=4326;POINT(12 5)');
SELECT s->>'index_mode' AS index_mode, s->>'reason' AS reason,
       s->>'version' <> (SELECT stats->>'version' FROM seen WHERE step = 'second') AS new_version,
       (s->>'shared_builds')::int AS shared_builds
  FROM allocation.cache_stats() s;
SELECT * FROM decided WHERE probe = 'b';
ROLLBACK;
-- rolled back: the next statement is back on the committed version (and the shared index)
INSERT INTO customer (probe, loc) VALUES ('b', 'SRID=4326;POINT(12 5)');
SELECT s->>'index_mode' AS index_mode,
       s->>'version' = (SELECT stats->>'version' FROM seen WHERE step = 'second') AS same_version,
       (s->>'shared_builds')::int AS shared_builds
  FROM allocation.cache_stats() s;
SELECT * FROM decided WHERE probe = 'b';

-------------------------------------------------------------------------------
-- a committed change: a new version, used from the next statement on; the
-- old shared build is freed (no backend uses it)
-------------------------------------------------------------------------------
UPDATE allocation.territory SET geom = ST_Multi(ST_MakeEnvelope(0, 0, 15, 10, 4326)) WHERE code = 'A';
TRUNCATE customer;
INSERT INTO customer (probe, loc) SELECT probe, loc FROM spot;
INSERT INTO seen SELECT 'changed', allocation.cache_stats();
SELECT c.stats->>'index_mode' AS index_mode,
       c.stats->>'version' <> s.stats->>'version' AS new_version,
       (c.stats->>'shared_builds')::int AS shared_builds
  FROM seen c, seen s WHERE c.step = 'changed' AND s.step = 'second';
SELECT * FROM decided ORDER BY probe;
-- and a new connection sees the same new version
\c
\set SHOW_CONTEXT never
INSERT INTO customer (probe, loc) VALUES ('b', 'SRID=4326;POINT(12 5)');
SELECT allocation.cache_stats()->>'version' = (SELECT stats->>'version' FROM seen WHERE step = 'changed') AS same_version;
SELECT * FROM decided WHERE probe = 'b';

-------------------------------------------------------------------------------
-- a bound below the index's size: the indexed path, same decisions
-------------------------------------------------------------------------------
SET allocation.territory_cache_max = '2kB';
TRUNCATE customer;
INSERT INTO customer (probe, loc) SELECT probe, loc FROM spot;
SELECT s->>'mode' AS mode, s->>'index_mode' AS index_mode, s->>'reason' AS reason, s->>'over_limit' AS over_limit
  FROM allocation.cache_stats() s;
SELECT * FROM decided ORDER BY probe;
SET allocation.territory_cache_max = 0;
INSERT INTO customer (probe, loc) VALUES ('b', 'SRID=4326;POINT(12 5)');
SELECT s->>'index_mode' AS index_mode, s->>'reason' AS reason, s->>'over_limit' AS over_limit
  FROM allocation.cache_stats() s;
RESET allocation.territory_cache_max;
INSERT INTO customer (probe, loc) VALUES ('b', 'SRID=4326;POINT(12 5)');
SELECT s->>'index_mode' AS index_mode,
       s->>'version' = (SELECT stats->>'version' FROM seen WHERE step = 'changed') AS same_version
  FROM allocation.cache_stats() s;

DROP VIEW decided;
DROP TABLE customer, spot, seen;
DROP EXTENSION allocation CASCADE;
