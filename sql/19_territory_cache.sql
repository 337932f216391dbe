--
-- 19_territory_cache: allocation.territory_cache_max bounds the per-backend
-- territory index; above the bound (or at 0) a backend finds territories with
-- a GiST-indexed ST_Covers query instead.  Both paths must give the same
-- territory, owner and rule for every point: borders, shared vertices, holes,
-- overlaps of different priority, two-part territories, outside, no location.
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES
    (1, 'r1', 'Rep 1', 1), (2, 'r2', 'Rep 2', 1), (3, 'r3', 'Rep 3', 1), (4, 'r4', 'Rep 4', 1), (5, 'r5', 'Rep 5', 1);
-- A and B share the border x = 10 (vertex for vertex); A has a lake [2,4]x[2,4];
-- O overlaps both with a higher priority; E is a two-part territory far away;
-- P overlaps A with the same priority and a higher id (A wins the tie).
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id, priority) VALUES
    (10, 'A', 'A', ST_Multi(ST_MakePolygon(ST_MakeLine(ARRAY[ST_MakePoint(0,0), ST_MakePoint(10,0), ST_MakePoint(10,5), ST_MakePoint(10,10), ST_MakePoint(0,10), ST_MakePoint(0,0)]),
                                           ARRAY[ST_MakeLine(ARRAY[ST_MakePoint(2,2), ST_MakePoint(2,4), ST_MakePoint(4,4), ST_MakePoint(4,2), ST_MakePoint(2,2)])])), 1, 0),
    (20, 'B', 'B', ST_Multi(ST_MakePolygon(ST_MakeLine(ARRAY[ST_MakePoint(10,0), ST_MakePoint(20,0), ST_MakePoint(20,10), ST_MakePoint(10,10), ST_MakePoint(10,5), ST_MakePoint(10,0)]))), 2, 0),
    (30, 'O', 'O', ST_Multi(ST_MakeEnvelope(8, 8, 12, 12)), 3, 5),
    (40, 'E', 'E', ST_Collect(ST_MakeEnvelope(50, 50, 51, 51), ST_MakeEnvelope(53, 50, 54, 51)), 4, 0),
    (50, 'P', 'P', ST_Multi(ST_MakeEnvelope(6, 0, 8, 2)), 5, 0);
UPDATE allocation.territory SET geom = ST_SetSRID(geom, 4326);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
VALUES ('territory-owner', 10, 'team', 1, 'territory_owner');

CREATE TABLE customer (id text PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('customer', 'id', 'loc', 'owner');

CREATE TABLE probe (id text PRIMARY KEY, loc geometry(Point, 4326));
INSERT INTO probe VALUES
    ('inside-a',        ST_SetSRID(ST_MakePoint(1, 8), 4326)),
    ('inside-b',        ST_SetSRID(ST_MakePoint(15, 3), 4326)),
    ('shared-vertex',   ST_SetSRID(ST_MakePoint(10, 5), 4326)),   -- on A and B: same priority, A's id is lower
    ('shared-edge',     ST_SetSRID(ST_MakePoint(10, 2.5), 4326)),
    ('corner-a',        ST_SetSRID(ST_MakePoint(0, 0), 4326)),
    ('in-lake',         ST_SetSRID(ST_MakePoint(3, 3), 4326)),    -- in no territory
    ('lake-shore',      ST_SetSRID(ST_MakePoint(2, 3), 4326)),    -- on the hole's ring: covered by A
    ('overlap-o',       ST_SetSRID(ST_MakePoint(9, 9), 4326)),    -- A and O: O's priority wins
    ('o-border',        ST_SetSRID(ST_MakePoint(12, 12), 4326)),  -- O's corner, outside A and B
    ('tie-p',           ST_SetSRID(ST_MakePoint(7, 1), 4326)),    -- A and P, same priority: A (lower id)
    ('second-part-e',   ST_SetSRID(ST_MakePoint(53.5, 50.5), 4326)),
    ('between-parts-e', ST_SetSRID(ST_MakePoint(52, 50.5), 4326)),
    ('outside',         ST_SetSRID(ST_MakePoint(-5, -5), 4326)),
    ('no-location',     NULL);

-- the reference: ST_Covers itself
CREATE VIEW expected AS
SELECT p.id, (SELECT t.code FROM allocation.territory t WHERE ST_Covers(t.geom, p.loc)
               ORDER BY t.priority DESC, t.id LIMIT 1) AS territory
  FROM probe p;

CREATE VIEW decided AS
SELECT a.key AS id, t.code AS territory, r.code AS rep, a.source
  FROM allocation.assignment a
  LEFT JOIN allocation.territory t ON t.id = a.territory_id
  LEFT JOIN allocation.rep r ON r.id = a.rep_id
 WHERE a.valid_to IS NULL;

-------------------------------------------------------------------------------
-- default bound: the polygons are in memory
-------------------------------------------------------------------------------
SHOW allocation.territory_cache_max;
INSERT INTO customer (id, loc) SELECT id, loc FROM probe;
SELECT c->>'mode' AS mode, (c->>'territories')::int AS territories, (c->>'vertices')::int AS vertices,
       (c->>'bytes')::bigint > 0 AS has_bytes, c->>'over_limit' AS over_limit, (c->>'limit_bytes')::bigint AS limit_bytes
  FROM allocation.cache_stats() c;
CREATE TABLE in_memory AS SELECT * FROM decided;
SELECT d.id, d.territory, d.rep, d.source, e.territory IS NOT DISTINCT FROM d.territory AS as_st_covers
  FROM in_memory d JOIN expected e USING (id) ORDER BY d.id;

-------------------------------------------------------------------------------
-- bound 0: no polygons in memory, the indexed path decides the same
-------------------------------------------------------------------------------
TRUNCATE customer;
SET allocation.territory_cache_max = 0;
INSERT INTO customer (id, loc) SELECT id, loc FROM probe;
SELECT c->>'mode' AS mode, (c->>'territories')::int AS territories, (c->>'vertices')::int AS vertices,
       c->>'over_limit' AS over_limit, (c->>'limit_bytes')::bigint AS limit_bytes
  FROM allocation.cache_stats() c;
SELECT count(*) AS probes,
       count(*) FILTER (WHERE (m.territory, m.rep, m.source) IS DISTINCT FROM (d.territory, d.rep, d.source)) AS differ
  FROM in_memory m FULL JOIN decided d USING (id);

-------------------------------------------------------------------------------
-- a bound the polygons do not fit: the build gives up, the indexed path decides
-------------------------------------------------------------------------------
TRUNCATE customer;
SET allocation.territory_cache_max = '1kB';
INSERT INTO customer (id, loc) SELECT id, loc FROM probe;
SELECT c->>'mode' AS mode, c->>'over_limit' AS over_limit, (c->>'limit_bytes')::bigint AS limit_bytes
  FROM allocation.cache_stats() c;
SELECT count(*) AS probes,
       count(*) FILTER (WHERE (m.territory, m.rep, m.source) IS DISTINCT FROM (d.territory, d.rep, d.source)) AS differ
  FROM in_memory m FULL JOIN decided d USING (id);

-- explain() takes the same path
SELECT allocation.explain('customer', 'overlap-o')->'territories' AS territories;

-- a territory change is seen by the indexed path at once: B moves away
UPDATE allocation.territory SET geom = ST_SetSRID(ST_Multi(ST_MakeEnvelope(100, 0, 110, 10)), 4326) WHERE code = 'B';
INSERT INTO customer (id, loc) VALUES ('after-move', ST_SetSRID(ST_MakePoint(15, 3), 4326));
SELECT id, territory, rep, source FROM decided WHERE id = 'after-move';

-- back to memory: the new shape is loaded
RESET allocation.territory_cache_max;
INSERT INTO customer (id, loc) VALUES ('after-move-2', ST_SetSRID(ST_MakePoint(105, 3), 4326));
SELECT id, territory, rep, source FROM decided WHERE id = 'after-move-2';
SELECT c->>'mode' AS mode, c->>'over_limit' AS over_limit FROM allocation.cache_stats() c;

-------------------------------------------------------------------------------
-- bad settings
-------------------------------------------------------------------------------
SET allocation.territory_cache_max = -1;
\echo sqlstate :SQLSTATE
SET allocation.territory_cache_max = 'lots';
\echo sqlstate :SQLSTATE
SHOW allocation.territory_cache_max;
-- only a superuser sets it (a session cannot make every decision slow for others'
-- tables, nor lift a DBA's bound)
CREATE ROLE cache_user;
SET ROLE cache_user;
SET allocation.territory_cache_max = '1GB';
\echo sqlstate :SQLSTATE
RESET ROLE;
DROP ROLE cache_user;

DROP TABLE customer;
DROP EXTENSION allocation CASCADE;
