-- bench/generate.sql: reproducible benchmark data for the allocation engine.
--
--   psql -v n_cells=1000 -v n_customers=100000 -v seed=42 -f bench/generate.sql
--
-- Produces, in schema bench (no allocation objects are touched here):
--   bench.g_team, bench.g_rep        the sales organisation (explicit ids)
--   bench.g_territory                territories with final ids (a seeded shuffle, so the
--                                    "lowest id wins a tie" rule is exercised both ways)
--   bench.g_edge                     the shared borders the cells are built from
--   bench.src_customer               the customers, seq = insert order (random spatial order)
--
-- Territories: Voronoi cells of n_cells seeded points over a 16 x 12 degree region.  The
-- Voronoi edges are densified and jittered ONCE and the cells are polygonized from them, so
-- neighbours share their border vertex for vertex (like real county borders).  Per cell a
-- target vertex count (800-1,800, and 22,000-30,000 for ~1.5% "detailed" cells) sets the
-- edge step; an edge takes the finer step of its two cells.  On top: lakes (holes), enclaves
-- (a territory filling a hole of its parent, sharing the hole ring), a few two-part
-- MultiPolygon cells, and ~n_cells/16 overlay territories (star-shaped, 1,500-4,000 vertices,
-- two with 30,000 (+15,000 in a second part), ~17% two-part) with priorities -1..5 that overlap
-- the cells.  16 region
-- territories without geometry form the top of the hierarchy (owners for territory_owner).
--
-- Customers: uniform points (some outside the region), points exactly on shared borders
-- (border vertices, Voronoi nodes where three cells meet, and segment midpoints), on hole /
-- enclave rings, on overlay borders, inside overlays, inside lakes, far outside, and without
-- location.  Attributes: tier, crop, business type, tags, annual volume, cooperative flag.
--
-- All randomness comes from bench.rnd(i, stream) = hashint8extended(i, seed-derived stream):
-- reproducible for a given seed independent of plan shapes or parallelism (setseed() is also
-- called for good measure, but no result depends on random()).
\set ON_ERROR_STOP 1
\if :{?n_cells}
\else
\set n_cells 1000
\endif
\if :{?n_customers}
\else
\set n_customers 100000
\endif
\if :{?seed}
\else
\set seed 42
\endif

SET client_min_messages = warning;
SET max_parallel_workers_per_gather = 0;
SELECT setseed(0.42);

DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE EXTENSION IF NOT EXISTS postgis;

CREATE TABLE bench.params AS
SELECT :n_cells::int AS n_cells, :n_customers::int AS n_customers, :seed::bigint AS seed,
       100.0::float8 AS x0, 116.0::float8 AS x1, 22.0::float8 AS y0, 34.0::float8 AS y1;

-- uniform [0,1) from (i, stream); the seed is baked in so the function inlines
SELECT format($f$CREATE FUNCTION bench.rnd(i bigint, stream int) RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS 'SELECT ((hashint8extended(i, %s::bigint * 1000 + stream) >> 11) & 9007199254740991)::float8 / 9007199254740992.0'$f$,
              :seed::bigint) \gexec

\echo generate: organisation
-------------------------------------------------------------------------------
-- Organisation: 8 teams, 135 reps (ids fixed so territory owners can refer to them)
-------------------------------------------------------------------------------
CREATE TABLE bench.g_team (id bigint PRIMARY KEY, code text, name text, parent_id bigint);
INSERT INTO bench.g_team VALUES
 (1, 'ka', 'Key accounts', NULL),
 (2, 'field', 'Field sales', NULL),
 (3, 'field-n', 'Field sales north', 2),
 (4, 'field-s', 'Field sales south', 2),
 (5, 'field-e', 'Field sales east', 2),
 (6, 'field-w', 'Field sales west', 2),
 (7, 'rice', 'Rice specialists', NULL),
 (8, 'growers', 'Large growers desk', NULL);

CREATE TABLE bench.g_rep (id bigint PRIMARY KEY, code text, name text, team_id bigint, capacity int, active boolean);
-- key account reps: scarce (8 x 250 slots for ~4,000 key distributors)
INSERT INTO bench.g_rep SELECT i, 'ka' || i, 'Key account rep ' || i, 1, 250, true FROM generate_series(1, 8) i;
-- 120 field reps, 30 per sub-team; capacity 200..800, 5% unlimited, 4% inactive
INSERT INTO bench.g_rep
SELECT i, 'f' || i, 'Field rep ' || i, 3 + (i - 9) / 30,
       CASE WHEN bench.rnd(i, 1) < 0.05 THEN NULL ELSE 200 + floor(600 * bench.rnd(i, 2))::int END,
       bench.rnd(i, 3) >= 0.04
  FROM generate_series(9, 128) i;
INSERT INTO bench.g_rep SELECT i, 'rice' || i, 'Rice specialist ' || i, 7, 500, true FROM generate_series(129, 134) i;
INSERT INTO bench.g_rep VALUES (135, 'big1', 'Large growers desk', 8, 3000, true);

\echo generate: seeds and Voronoi edges
-------------------------------------------------------------------------------
-- Cells: Voronoi diagram of seeded points, clipped to the region
-------------------------------------------------------------------------------
CREATE TABLE bench.g_seed AS
SELECT i AS cell, ST_SetSRID(ST_MakePoint(p.x0 + (p.x1 - p.x0) * bench.rnd(i, 10),
                                          p.y0 + (p.y1 - p.y0) * bench.rnd(i, 11)), 4326) AS pt
  FROM bench.params p, generate_series(1, p.n_cells) i;
CREATE INDEX ON bench.g_seed USING gist (pt);

-- noded linework: Voronoi edges inside the region + the region boundary, merged between nodes
CREATE TABLE bench.g_edge0 AS
WITH env AS (SELECT ST_MakeEnvelope(x0, y0, x1, y1, 4326) AS g FROM bench.params),
     v AS (SELECT ST_VoronoiLines(ST_Collect(pt ORDER BY cell), 0, (SELECT ST_Expand(g, 1) FROM env)) AS g
             FROM bench.g_seed),
     lines AS (SELECT ST_LineMerge(ST_Union(ST_Intersection(v.g, env.g), ST_Boundary(env.g))) AS g FROM v, env)
SELECT d.path[1] AS edge, d.geom
  FROM lines, ST_Dump(lines.g) d;

-- the cells on either side of each edge: the two seeds nearest to its midpoint
-- (equidistant for a Voronoi edge; a region-boundary edge has one)
CREATE TABLE bench.g_edge_cell AS
SELECT e.edge, n.cell
  FROM bench.g_edge0 e
 CROSS JOIN LATERAL (SELECT s.cell, s.pt <-> ST_LineInterpolatePoint(e.geom, 0.5) AS d,
                            row_number() OVER (ORDER BY s.pt <-> ST_LineInterpolatePoint(e.geom, 0.5)) AS rk
                       FROM bench.g_seed s
                      ORDER BY s.pt <-> ST_LineInterpolatePoint(e.geom, 0.5) LIMIT 2) n
 WHERE n.rk = 1
    OR n.d - (SELECT min(s.pt <-> ST_LineInterpolatePoint(e.geom, 0.5)) FROM bench.g_seed s) < 1e-9;

-- target vertex count per cell -> step; ~1.5% detailed cells get 22,000-30,000
CREATE TABLE bench.g_cell_step AS
SELECT c.cell,
       sum(ST_Length(e.geom)) AS perimeter,
       CASE WHEN bench.rnd(c.cell, 20) < 0.015 THEN 22000 + floor(8000 * bench.rnd(c.cell, 21))
            ELSE 800 + floor(1000 * bench.rnd(c.cell, 22)) END AS target
  FROM bench.g_edge_cell c JOIN bench.g_edge0 e USING (edge)
 GROUP BY c.cell;

\echo generate: densified, jittered borders
-------------------------------------------------------------------------------
-- Borders: each edge densified with the finer step of its two cells; interior
-- (straight Voronoi) edges jittered perpendicular to their chord with an
-- amplitude that tapers to zero at the nodes, so an edge stays a graph over
-- its chord (never self-intersects) and neighbouring edges do not cross.
-- The end points are the exact node coordinates.
-------------------------------------------------------------------------------
CREATE TABLE bench.g_edge_spec AS
SELECT e.edge, e.geom, ST_Length(e.geom) AS len,
       min(s.perimeter / s.target) AS step,
       count(*) = 2 AND ST_NPoints(e.geom) = 2 AS interior
  FROM bench.g_edge0 e JOIN bench.g_edge_cell c USING (edge) JOIN bench.g_cell_step s USING (cell)
 GROUP BY e.edge, e.geom;

CREATE TABLE bench.g_edge_pt AS
SELECT c.edge, j,
       CASE WHEN j = 0 THEN c.ax WHEN j = c.k THEN c.bx
            ELSE c.ax + (c.bx - c.ax) * t - (c.by - c.ay) / c.len * off END AS x,
       CASE WHEN j = 0 THEN c.ay WHEN j = c.k THEN c.by
            ELSE c.ay + (c.by - c.ay) * t + (c.bx - c.ax) / c.len * off END AS y
  FROM (SELECT edge, len, ST_X(ST_StartPoint(geom)) ax, ST_Y(ST_StartPoint(geom)) ay,
               ST_X(ST_EndPoint(geom)) bx, ST_Y(ST_EndPoint(geom)) by,
               greatest(2, ceil(len / step))::int AS k,
               1 + 2 * bench.rnd(edge, 30) AS f1, bench.rnd(edge, 31) AS p1,
               8 + 20 * bench.rnd(edge, 32) AS f2, bench.rnd(edge, 33) AS p2
          FROM bench.g_edge_spec WHERE interior) c
 CROSS JOIN LATERAL generate_series(0, c.k) j
 CROSS JOIN LATERAL (SELECT j::float8 / c.k AS t) tt
 CROSS JOIN LATERAL (SELECT least(0.004, 0.04 * c.len * least(tt.t, 1 - tt.t))
                            * (0.6 * sin(2 * pi() * (c.f1 * tt.t + c.p1))
                               + 0.3 * sin(2 * pi() * (c.f2 * tt.t + c.p2))
                               + 0.1 * (2 * bench.rnd(c.edge::bigint * 1000000 + j, 34) - 1)) AS off) o;

CREATE TABLE bench.g_edge AS
SELECT p.edge, true AS interior, ST_SetSRID(ST_MakeLine(ST_MakePoint(p.x, p.y) ORDER BY p.j), 4326) AS geom
  FROM bench.g_edge_pt p GROUP BY p.edge
UNION ALL
SELECT edge, false, ST_Segmentize(geom, step) FROM bench.g_edge_spec WHERE NOT interior;
DROP TABLE bench.g_edge_pt;
CREATE INDEX ON bench.g_edge USING gist (geom);

-- safety net: edges that cross another edge (only possible at sharp Voronoi
-- angles) are replaced by their straight densified chord
DO $$
DECLARE
    n int;
    rounds int := 0;
BEGIN
    LOOP
        WITH bad AS (
            SELECT a.edge FROM bench.g_edge a JOIN bench.g_edge b
                ON a.edge < b.edge AND a.geom && b.geom AND a.interior
             WHERE ST_Intersects(a.geom, b.geom) AND NOT ST_Touches(a.geom, b.geom)
            UNION
            SELECT b.edge FROM bench.g_edge a JOIN bench.g_edge b
                ON a.edge < b.edge AND a.geom && b.geom AND b.interior
             WHERE ST_Intersects(a.geom, b.geom) AND NOT ST_Touches(a.geom, b.geom))
        UPDATE bench.g_edge e SET geom = ST_Segmentize(e0.geom, ST_Length(e0.geom) / (ST_NPoints(e.geom) - 1)),
                                  interior = false
          FROM bench.g_edge0 e0, bad
         WHERE e.edge = bad.edge AND e0.edge = e.edge;
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0 OR rounds > 5;
        RAISE WARNING 'generate: % crossing edges straightened', n;
        rounds := rounds + 1;
    END LOOP;
END
$$;

\echo generate: cells from the shared borders
CREATE TABLE bench.g_face AS
SELECT d.path[1] AS face, d.geom
  FROM (SELECT ST_Polygonize(geom ORDER BY edge) AS g FROM bench.g_edge) p, ST_Dump(p.g) d;
CREATE INDEX ON bench.g_face USING gist (geom);

CREATE TABLE bench.g_cell AS
SELECT s.cell, f.geom, s.pt
  FROM bench.g_seed s JOIN bench.g_face f ON ST_Contains(f.geom, s.pt);

DO $$
DECLARE
    nf int := (SELECT count(*) FROM bench.g_face);
    nc int := (SELECT count(*) FROM bench.g_cell);
    nd int := (SELECT count(DISTINCT cell) FROM bench.g_cell);
    n int := (SELECT n_cells FROM bench.params);
    ninv int := (SELECT count(*) FROM bench.g_cell WHERE NOT ST_IsValid(geom));
BEGIN
    IF nf <> n OR nc <> n OR nd <> n OR ninv > 0 THEN
        RAISE EXCEPTION 'generate: polygonize gave % faces, % matched, % distinct cells, % invalid (expected %)',
            nf, nc, nd, ninv, n;
    END IF;
END
$$;

\echo generate: lakes, enclaves, two-part cells, overlays
-------------------------------------------------------------------------------
-- Lakes and enclaves: a star-shaped ring around the seed becomes a hole of the
-- cell; an enclave territory is that same ring as a polygon (shared border).
-------------------------------------------------------------------------------
-- the closing point must equal the first exactly: build the ring from m points and close it
CREATE FUNCTION bench.star(cx float8, cy float8, r float8, m int, key bigint, stream int)
RETURNS geometry LANGUAGE sql IMMUTABLE AS
$$
    SELECT ST_AddPoint(l, ST_StartPoint(l))
      FROM (SELECT ST_MakeLine(ST_SetSRID(ST_MakePoint(cx + rr * cos(th), cy + rr * sin(th)), 4326) ORDER BY j) AS l
              FROM generate_series(0, m - 1) j
             CROSS JOIN LATERAL (SELECT 2 * pi() * j / m AS th) a
             CROSS JOIN LATERAL (SELECT r * (1 + 0.12 * sin((3 + floor(4 * bench.rnd(key, stream + 3))) * th
                                                             + bench.rnd(key, stream) * 6.283185307179586)
                                               + 0.04 * sin((17 + floor(20 * bench.rnd(key, stream + 4))) * th
                                                             + bench.rnd(key, stream + 1) * 6.283185307179586)
                                               + 0.01 * (2 * bench.rnd(key * 100000 + j, stream + 2) - 1)) AS rr) b) q
$$;

CREATE TABLE bench.g_hole AS
SELECT c.cell, CASE WHEN r < 0.012 THEN 'lake' ELSE 'enclave' END AS kind,
       bench.star(ST_X(c.pt), ST_Y(c.pt), 0.3 * ST_Distance(c.pt, ST_ExteriorRing(c.geom)),
                  600 + floor(900 * bench.rnd(c.cell, 41))::int, c.cell, 42) AS ring
  FROM (SELECT cell, geom, pt, bench.rnd(cell, 40) AS r FROM bench.g_cell) c
 WHERE c.r < 0.024;
UPDATE bench.g_cell c SET geom = ST_MakePolygon(ST_ExteriorRing(c.geom), ARRAY[h.ring])
  FROM bench.g_hole h WHERE h.cell = c.cell;

-- two-part cells: a cell absorbs a far-away cell (MultiPolygon territory)
CREATE TABLE bench.g_pair AS
WITH cand AS (
    SELECT a.cell AS a, b.cell AS b,
           row_number() OVER (ORDER BY bench.rnd(a.cell, 50)) AS rk
      FROM bench.g_cell a
      JOIN LATERAL (SELECT b.cell FROM bench.g_seed b
                     ORDER BY b.pt <-> ST_Translate(a.pt, 3, 2) LIMIT 1) b ON true
     WHERE bench.rnd(a.cell, 51) < 0.03
       AND a.cell NOT IN (SELECT cell FROM bench.g_hole)),
good AS (
    SELECT DISTINCT ON (c.b) c.a, c.b, c.rk FROM cand c
      JOIN bench.g_cell ca ON ca.cell = c.a JOIN bench.g_cell cb ON cb.cell = c.b
     WHERE c.b NOT IN (SELECT cell FROM bench.g_hole)
       AND c.a NOT IN (SELECT b FROM cand) AND c.b NOT IN (SELECT a FROM cand)
       AND NOT ST_Intersects(ca.geom, cb.geom)
     ORDER BY c.b, c.rk)
SELECT a, b FROM good ORDER BY rk LIMIT 6;

-------------------------------------------------------------------------------
-- Overlays: star-shaped territories over the cells, some two-part
-------------------------------------------------------------------------------
CREATE TABLE bench.g_overlay AS
SELECT o, ST_Multi(CASE WHEN two THEN ST_Collect(g1, g2) ELSE g1 END) AS geom, two, cx, cy, r
  FROM (SELECT o, two, cx, cy, r,
               ST_MakePolygon(bench.star(cx, cy, r, m, o, 60)) AS g1,
               CASE WHEN two THEN ST_MakePolygon(bench.star(cx + 1.3 * 1.5 * r * cos(a), cy + 1.3 * 1.5 * r * sin(a),
                                                            0.5 * r, m / 2, o, 70)) END AS g2
          FROM (SELECT o, p.x0 - 1 + (p.x1 - p.x0 + 2) * bench.rnd(o, 61) AS cx,
                       p.y0 - 1 + (p.y1 - p.y0 + 2) * bench.rnd(o, 62) AS cy,
                       0.15 + 0.6 * bench.rnd(o, 63) AS r,
                       CASE WHEN o <= 2 THEN 30000 ELSE 1500 + floor(2500 * bench.rnd(o, 64))::int END AS m,
                       bench.rnd(o, 65) < 0.17 AS two,
                       2 * pi() * bench.rnd(o, 66) AS a
                  FROM bench.params p, generate_series(1, greatest(4, p.n_cells / 16)) o) s) t;

\echo generate: territory table
-------------------------------------------------------------------------------
-- All territories with owners, priorities and shuffled ids
-------------------------------------------------------------------------------
CREATE TABLE bench.g_territory0 (
    gkey text PRIMARY KEY, kind text, parent_gkey text, geom geometry(MultiPolygon, 4326),
    priority int, owner_rep_id bigint, owner_team_id bigint, exclusive boolean, cx float8, cy float8);

-- 16 regions (4 x 4) without geometry
INSERT INTO bench.g_territory0
SELECT 'R' || rx || ry, 'region', NULL, NULL, 0,
       CASE WHEN bench.rnd(rx * 10 + ry, 80) < 0.75 THEN 9 + floor(120 * bench.rnd(rx * 10 + ry, 81)) END,
       NULL, false, NULL, NULL
  FROM generate_series(0, 3) rx, generate_series(0, 3) ry;

INSERT INTO bench.g_territory0
SELECT 'C' || c.cell, 'cell',
       'R' || least(3, floor((ST_X(c.pt) - p.x0) / ((p.x1 - p.x0) / 4)))::int
           || least(3, floor((ST_Y(c.pt) - p.y0) / ((p.y1 - p.y0) / 4)))::int,
       ST_Multi(CASE WHEN pr.b IS NULL THEN c.geom ELSE ST_Collect(c.geom, b.geom) END),
       CASE WHEN u.p < 0.85 THEN 0 WHEN u.p < 0.95 THEN 1 ELSE 2 END,
       CASE WHEN u.o < 0.77 THEN 9 + floor(120 * u.r) WHEN u.o < 0.80 THEN 1 + floor(8 * u.r) END,
       CASE WHEN u.o >= 0.80 AND u.o < 0.88 THEN 3 + floor(4 * u.r) END,
       u.o < 0.88 AND u.x < 0.04,
       ST_X(c.pt), ST_Y(c.pt)
  FROM bench.params p, bench.g_cell c
  LEFT JOIN bench.g_pair pr ON pr.a = c.cell
  LEFT JOIN bench.g_cell b ON b.cell = pr.b
 CROSS JOIN LATERAL (SELECT bench.rnd(c.cell, 82) AS p, bench.rnd(c.cell, 83) AS o,
                            bench.rnd(c.cell, 84) AS r, bench.rnd(c.cell, 85) AS x) u
 WHERE c.cell NOT IN (SELECT b FROM bench.g_pair);

INSERT INTO bench.g_territory0
SELECT 'E' || h.cell, 'enclave', 'C' || h.cell, ST_Multi(ST_MakePolygon(h.ring)),
       0, CASE WHEN bench.rnd(h.cell, 86) < 0.5 THEN 9 + floor(120 * bench.rnd(h.cell, 87)) END,
       NULL, false, NULL, NULL
  FROM bench.g_hole h WHERE h.kind = 'enclave';

INSERT INTO bench.g_territory0
SELECT 'O' || o.o, 'overlay',
       CASE WHEN bench.rnd(o.o, 90) < 0.5 AND o.cx BETWEEN p.x0 AND p.x1 - 1e-9 AND o.cy BETWEEN p.y0 AND p.y1 - 1e-9
            THEN 'R' || floor((o.cx - p.x0) / ((p.x1 - p.x0) / 4))::int || floor((o.cy - p.y0) / ((p.y1 - p.y0) / 4))::int END,
       o.geom,
       (ARRAY[-1, 0, 1, 3, 5])[1 + floor(5 * bench.rnd(o.o, 91))::int],
       CASE WHEN u.o < 0.70 THEN 9 + floor(120 * u.r) END,
       CASE WHEN u.o >= 0.70 AND u.o < 0.80 THEN 3 + floor(4 * u.r) END,
       u.o < 0.80 AND u.x < 0.15,
       o.cx, o.cy
  FROM bench.params p, bench.g_overlay o
 CROSS JOIN LATERAL (SELECT bench.rnd(o.o, 92) AS o, bench.rnd(o.o, 93) AS r, bench.rnd(o.o, 94) AS x) u;

CREATE TABLE bench.g_territory AS
SELECT row_number() OVER (ORDER BY bench.rnd(hashtext(t.gkey), 99), t.gkey) AS id, t.*
  FROM bench.g_territory0 t;
ALTER TABLE bench.g_territory ADD PRIMARY KEY (id), ADD COLUMN parent_id bigint;
UPDATE bench.g_territory t SET parent_id = p.id FROM bench.g_territory p WHERE p.gkey = t.parent_gkey;
CREATE INDEX ON bench.g_territory USING gist (geom);

DO $$
DECLARE
    ninv int := (SELECT count(*) FROM bench.g_territory WHERE geom IS NOT NULL AND NOT ST_IsValid(geom));
BEGIN
    IF ninv > 0 THEN
        RAISE EXCEPTION 'generate: % invalid territories', ninv;
    END IF;
END
$$;

\echo generate: customers
-------------------------------------------------------------------------------
-- Customers
-------------------------------------------------------------------------------
CREATE TABLE bench.g_iedge AS
SELECT row_number() OVER (ORDER BY edge) AS n, edge, geom, ST_NPoints(geom) AS np
  FROM bench.g_edge WHERE interior;
-- rings: kind 'hole' (lake and enclave borders) and 'overlay' (overlay borders), numbered per kind
CREATE TABLE bench.g_ring AS
SELECT kind, row_number() OVER (PARTITION BY kind ORDER BY gkey, part) AS n, geom, ST_NPoints(geom) AS np
  FROM (SELECT 'hole' AS kind, 'H' || cell AS gkey, 1 AS part, ring AS geom FROM bench.g_hole
        UNION ALL
        SELECT 'overlay', gkey, (d).path[1], ST_ExteriorRing((d).geom)
          FROM (SELECT gkey, ST_Dump(geom) AS d FROM bench.g_territory WHERE kind = 'overlay') o) r;
CREATE TABLE bench.g_lake AS
SELECT row_number() OVER (ORDER BY h.cell) AS n, c.pt, ST_Distance(c.pt, h.ring) AS d
  FROM bench.g_hole h JOIN bench.g_cell c USING (cell) WHERE h.kind = 'lake';
ALTER TABLE bench.g_iedge ADD PRIMARY KEY (n);
ALTER TABLE bench.g_ring ADD PRIMARY KEY (kind, n);
ALTER TABLE bench.g_lake ADD PRIMARY KEY (n);
ALTER TABLE bench.g_overlay ADD PRIMARY KEY (o);
ANALYZE bench.g_iedge, bench.g_ring, bench.g_lake, bench.g_overlay;
CREATE TABLE bench.g_count AS
SELECT (SELECT count(*) FROM bench.g_iedge) AS iedges,
       (SELECT count(*) FROM bench.g_ring WHERE kind = 'hole') AS holes,
       (SELECT count(*) FROM bench.g_ring WHERE kind = 'overlay') AS orings,
       (SELECT count(*) FROM bench.g_overlay) AS overlays,
       (SELECT count(*) FROM bench.g_lake) AS lakes;

CREATE TABLE bench.g_cust AS
SELECT i, CASE
         WHEN u < 0.68 OR u >= 0.97 THEN 'uniform'
         WHEN u < 0.76 THEN 'border_vertex'
         WHEN u < 0.82 THEN 'border_midpoint'
         WHEN u < 0.83 THEN 'border_node'
         WHEN u < 0.85 THEN 'hole_border'
         WHEN u < 0.92 THEN 'in_overlay'
         WHEN u < 0.93 THEN 'overlay_border'
         WHEN u < 0.95 THEN 'in_lake'
         WHEN u < 0.96 THEN 'far_outside'
         ELSE 'no_location' END AS kind,
       bench.rnd(i, 103) AS r1, bench.rnd(i, 104) AS r2, bench.rnd(i, 105) AS r3
  FROM bench.params p, generate_series(1, p.n_customers) i
 CROSS JOIN LATERAL (SELECT bench.rnd(i, 100) AS u) x;

-- a random vertex of a random shared border (includes the nodes, ~2 per edge)
CREATE FUNCTION bench.edge_vertex(r1 float8, r2 float8) RETURNS geometry LANGUAGE sql STABLE AS
$$ SELECT ST_PointN(e.geom, 1 + floor(e.np * r2)::int) FROM bench.g_iedge e
    WHERE e.n = 1 + floor((SELECT iedges FROM bench.g_count) * r1) $$;
-- a Voronoi node (an edge end point): three cells meet
CREATE FUNCTION bench.edge_node(r1 float8, r2 float8) RETURNS geometry LANGUAGE sql STABLE AS
$$ SELECT CASE WHEN r2 < 0.5 THEN ST_StartPoint(e.geom) ELSE ST_EndPoint(e.geom) END FROM bench.g_iedge e
    WHERE e.n = 1 + floor((SELECT iedges FROM bench.g_count) * r1) $$;
-- the midpoint of a random segment of a line (computed in double precision: on the
-- segment up to rounding, so it may land a hair inside either neighbour)
CREATE FUNCTION bench.midpoint(g geometry, r float8) RETURNS geometry LANGUAGE sql IMMUTABLE AS
$$ SELECT ST_SetSRID(ST_MakePoint((ST_X(a) + ST_X(b)) / 2, (ST_Y(a) + ST_Y(b)) / 2), 4326)
     FROM (SELECT ST_PointN(g, j) a, ST_PointN(g, j + 1) b
             FROM (SELECT 1 + floor((ST_NPoints(g) - 1) * r)::int AS j) jj) ab $$;

CREATE TABLE bench.g_cust_loc AS
SELECT c.i, c.kind,
       CASE c.kind
         WHEN 'uniform' THEN ST_SetSRID(ST_MakePoint(p.x0 - 0.5 + (p.x1 - p.x0 + 1) * c.r1,
                                                     p.y0 - 0.5 + (p.y1 - p.y0 + 1) * c.r2), 4326)
         WHEN 'border_vertex' THEN bench.edge_vertex(c.r1, c.r2)
         WHEN 'border_node' THEN bench.edge_node(c.r1, c.r2)
         WHEN 'border_midpoint' THEN (SELECT bench.midpoint(e.geom, c.r2) FROM bench.g_iedge e
                                       WHERE e.n = 1 + floor(n.iedges * c.r1))
         WHEN 'hole_border' THEN (SELECT CASE WHEN c.r3 < 0.5 THEN ST_PointN(r.geom, 1 + floor((r.np - 1) * c.r2)::int)
                                              ELSE bench.midpoint(r.geom, c.r2) END
                                    FROM bench.g_ring r WHERE r.kind = 'hole' AND r.n = 1 + floor(n.holes * c.r1))
         WHEN 'overlay_border' THEN (SELECT ST_PointN(r.geom, 1 + floor((r.np - 1) * c.r2)::int)
                                       FROM bench.g_ring r WHERE r.kind = 'overlay' AND r.n = 1 + floor(n.orings * c.r1))
         WHEN 'in_overlay' THEN (SELECT ST_SetSRID(ST_MakePoint(o.cx + 0.8 * o.r * sqrt(c.r2) * cos(2 * pi() * c.r3),
                                                                o.cy + 0.8 * o.r * sqrt(c.r2) * sin(2 * pi() * c.r3)), 4326)
                                   FROM bench.g_overlay o WHERE o.o = 1 + floor(n.overlays * c.r1))
         WHEN 'in_lake' THEN (SELECT ST_SetSRID(ST_MakePoint(ST_X(l.pt) + 0.7 * l.d * sqrt(c.r2) * cos(2 * pi() * c.r3),
                                                             ST_Y(l.pt) + 0.7 * l.d * sqrt(c.r2) * sin(2 * pi() * c.r3)), 4326)
                                FROM bench.g_lake l WHERE l.n = 1 + floor(n.lakes * c.r1))
         WHEN 'far_outside' THEN ST_SetSRID(ST_MakePoint(80 + 10 * c.r1, 10 * c.r2), 4326)
       END AS loc
  FROM bench.params p, bench.g_count n, bench.g_cust c;

CREATE TABLE bench.src_customer AS
SELECT row_number() OVER (ORDER BY bench.rnd(c.i, 200), c.i)::int AS seq,
       10000000 + c.i AS id,
       'Customer ' || c.i AS name,
       a.tier,
       CASE WHEN a.tier IN ('key_distributor', 'distributor') THEN 'dealer'
            WHEN a.tier = 'retailer' THEN CASE WHEN a.b < 0.9 THEN 'retailer' ELSE 'dealer' END
            ELSE CASE WHEN a.b < 0.8 THEN 'grower' ELSE 'coop' END END AS business_type,
       CASE WHEN a.cr < 0.30 THEN 'rice' WHEN a.cr < 0.55 THEN 'wheat' WHEN a.cr < 0.80 THEN 'corn'
            WHEN a.cr < 0.92 THEN 'vegetables' ELSE 'fruit' END AS crop,
       CASE WHEN a.tg < 0.02 THEN ARRAY['dispute'] WHEN a.tg < 0.03 THEN ARRAY['blacklisted', 'vip']
            WHEN a.tg < 0.20 THEN ARRAY['vip'] WHEN a.tg < 0.30 THEN ARRAY['new', 'fair-2026'] END AS tags,
       round(exp(ln(1000) + ln(1000) * a.v)::numeric, 2) AS annual_volume,
       (a.tier = 'grower' AND a.b >= 0.8) OR a.co < 0.10 AS is_cooperative,
       '138' || lpad((floor(1e8 * a.ph))::bigint::text, 8, '0') AS phone,
       l.loc,
       c.kind
  FROM bench.g_cust c
  JOIN bench.g_cust_loc l USING (i)
 CROSS JOIN LATERAL (SELECT CASE WHEN t < 0.04 THEN 'key_distributor' WHEN t < 0.20 THEN 'distributor'
                                 WHEN t < 0.62 THEN 'retailer' ELSE 'grower' END AS tier, b, cr, tg, v, co, ph
                       FROM (SELECT bench.rnd(c.i, 110) AS t, bench.rnd(c.i, 111) AS b, bench.rnd(c.i, 112) AS cr,
                                    bench.rnd(c.i, 113) AS tg, bench.rnd(c.i, 114) AS v, bench.rnd(c.i, 115) AS co,
                                    bench.rnd(c.i, 116) AS ph) r) a;
ALTER TABLE bench.src_customer ADD PRIMARY KEY (seq);
CREATE UNIQUE INDEX ON bench.src_customer (id);
ANALYZE bench.src_customer;

-- keep only what the benchmark needs (and what bench/run.sh caches)
DROP TABLE bench.g_cust, bench.g_cust_loc, bench.g_face, bench.g_edge0, bench.g_edge_cell, bench.g_edge_spec,
           bench.g_cell_step, bench.g_iedge, bench.g_ring, bench.g_lake, bench.g_count, bench.g_seed,
           bench.g_hole, bench.g_pair, bench.g_overlay, bench.g_cell, bench.g_edge, bench.g_territory0;
DROP FUNCTION bench.edge_vertex(float8, float8), bench.edge_node(float8, float8), bench.midpoint(geometry, float8),
              bench.star(float8, float8, float8, int, bigint, int);
ALTER TABLE bench.g_territory DROP COLUMN parent_gkey;
VACUUM ANALYZE bench.g_territory, bench.src_customer;

\echo generate: summary
SELECT kind, count(*) AS territories, sum(ST_NPoints(geom)) AS vertices,
       round(avg(ST_NPoints(geom))) AS avg_vertices, max(ST_NPoints(geom)) AS max_vertices,
       count(*) FILTER (WHERE ST_NPoints(geom) > 20000) AS over_20k,
       count(*) FILTER (WHERE ST_NumGeometries(geom) > 1) AS multipart,
       count(*) FILTER (WHERE ST_NumInteriorRings(ST_GeometryN(geom, 1)) > 0) AS with_hole
  FROM bench.g_territory GROUP BY ROLLUP (kind) ORDER BY kind;
SELECT kind, count(*) AS customers FROM bench.src_customer GROUP BY ROLLUP (kind) ORDER BY kind;
