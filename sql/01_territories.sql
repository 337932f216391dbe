--
-- 01_territories: import_territories(), territory_at(), territory_overlap,
-- territory hierarchy
--
-- Every failing call is followed by "\echo sqlstate :SQLSTATE" so the
-- expected output pins the SQLSTATE, and by a look at the territory table
-- proving that a rejected file changed nothing (import is all-or-nothing).
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

-- what is stored, in one line (code:name:parent:area), to prove "untouched"
CREATE VIEW terr_state AS
SELECT count(*) AS n,
       string_agg(format('%s:%s:%s:%s', t.code, t.name, coalesce(p.code, '-'), ST_Area(t.geom)), ' ' ORDER BY t.code) AS territories
  FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id;

-------------------------------------------------------------------------------
-- happy path: Polygon and MultiPolygon, names, properties kept
-------------------------------------------------------------------------------
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A", "dealer_count": 12},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B", "name": "County B"},
   "geometry": {"type": "MultiPolygon", "coordinates": [[[[10,0],[20,0],[20,10],[10,10],[10,0]]]]}},
  {"type": "Feature", "properties": {"code": "C"},
   "geometry": {"type": "Polygon", "coordinates": [[[5,5],[15,5],[15,15],[5,15],[5,5]]]}}
]}'::jsonb);
SELECT id, code, name, parent_id, ST_AsText(geom) AS geom, ST_SRID(geom) AS srid, properties
  FROM allocation.territory ORDER BY id;
SELECT kind, reason, detail FROM allocation.event ORDER BY id;

-- upsert by code: A gets a new name and shape, keeps its id; D is new
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "County A (2024 border)"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "D", "name": "County D"},
   "geometry": {"type": "Polygon", "coordinates": [[[30,0],[40,0],[40,10],[30,10],[30,0]]]}}
]}'::jsonb);
SELECT id, code, name, properties FROM allocation.territory ORDER BY id;

-- other property names for code and name (e.g. an administrative division code)
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"adcode": "410100", "NAME": "Zhengzhou"},
   "geometry": {"type": "Polygon", "coordinates": [[[60,0],[61,0],[61,1],[60,1],[60,0]]]}}
]}'::jsonb, code_property => 'adcode', name_property => 'NAME');
SELECT code, name FROM allocation.territory WHERE code = '410100';

-- an explicit WGS 84 CRS is accepted
SELECT allocation.import_territories('{"type": "FeatureCollection",
  "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
  "features": [{"type": "Feature", "properties": {"code": "E", "name": "County E"},
   "geometry": {"type": "Polygon", "coordinates": [[[62,0],[63,0],[63,1],[62,1],[62,0]]]}}]}'::jsonb);
-- an empty collection loads nothing
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": []}'::jsonb);

-------------------------------------------------------------------------------
-- invalid but repairable polygon: repaired with a NOTICE, recorded in the event
-------------------------------------------------------------------------------
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "BOW", "name": "Bow tie"},
   "geometry": {"type": "Polygon", "coordinates": [[[70,0],[80,10],[80,0],[70,10],[70,0]]]}}
]}'::jsonb);
SELECT code, ST_IsValid(geom) AS valid, GeometryType(geom) AS type, ST_NumGeometries(geom) AS parts, ST_Area(geom) AS area
  FROM allocation.territory WHERE code = 'BOW';
SELECT detail FROM allocation.event WHERE kind = 'territory_import' ORDER BY id DESC LIMIT 1;

-------------------------------------------------------------------------------
-- bad input: a specific SQLSTATE, and nothing stored changes. Each bad file
-- also carries a valid upsert of A (new name) and a new territory X before the
-- bad feature: neither may survive.
-------------------------------------------------------------------------------
SELECT * FROM terr_state;
SELECT count(*) AS import_events FROM allocation.event WHERE kind = 'territory_import';

-- LA001: not a FeatureCollection
SELECT allocation.import_territories('{"type": "Feature", "properties": {"code": "A"}, "geometry": null}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('[1, 2]'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories(NULL);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection"}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA001: an element of features that is not a Feature
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  42]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA001: malformed geometry (coordinates not nested deep enough)
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[0,0],[1,0],[1,1],[0,0]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA002: feature without code / with an empty code
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"name": "nameless"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "  "},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA003: feature without geometry, null geometry, empty geometry
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X"}, "geometry": null}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X"}, "geometry": {"type": "Polygon", "coordinates": []}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA004: not a polygon
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"}, "geometry": {"type": "Point", "coordinates": [1, 1]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "LineString", "coordinates": [[0,0],[1,1]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA0I1: a CRS PostGIS does not know, on the collection or on a geometry, or
-- not named at all (known ones are transformed: sql/33_imports)
SELECT allocation.import_territories('{"type": "FeatureCollection",
  "crs": {"type": "name", "properties": {"name": "EPSG:999999"}},
  "features": [{"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection",
  "crs": {"type": "link", "properties": {"href": "http://example.com/crs/42"}},
  "features": [{"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::123456789"}},
                "coordinates": [[[0,0],[1000,0],[1000,1000],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA005: projected coordinates in a file that names no CRS (so WGS 84)
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[[12900000,4800000],[12910000,4800000],[12910000,4810000],[12900000,4800000]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA006: unknown parent code
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X", "province": "NOPE"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}'::jsonb,
  parent_property => 'province');
\echo sqlstate :SQLSTATE
-- LA007: the same code twice in one file
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[[2,0],[3,0],[3,1],[2,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
-- LA008: invalid polygon that ST_MakeValid cannot turn into a polygon
-- (all vertices on one line; a ring of two points)
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "A", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,1],[2,2],[0,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0]]]}}]}'::jsonb);
\echo sqlstate :SQLSTATE

-- nothing changed, and no import event was written for the rejected files
SELECT * FROM terr_state;
SELECT count(*) AS import_events FROM allocation.event WHERE kind = 'territory_import';

-------------------------------------------------------------------------------
-- territory_at(): ST_Covers, then priority, then lowest id
--   A [0,10]x[0,10] and B [10,20]x[0,10] share the border x = 10;
--   C [5,15]x[5,15] overlaps both.
-------------------------------------------------------------------------------
CREATE FUNCTION terr_code(bigint) RETURNS text LANGUAGE sql AS
$$ SELECT coalesce((SELECT code FROM allocation.territory WHERE id = $1), '(none)') $$;
SELECT p.label, terr_code(allocation.territory_at(p.pt)) AS territory
  FROM (VALUES (1, 'interior of A', 'SRID=4326;POINT(2 2)'::geometry),
               (2, 'interior of B', 'SRID=4326;POINT(18 2)'),
               (3, 'outer border of A', 'SRID=4326;POINT(0 5)'),
               (4, 'corner of A', 'SRID=4326;POINT(0 0)'),
               (5, 'shared border A|B', 'SRID=4326;POINT(10 2)'),
               (6, 'overlap A and C', 'SRID=4326;POINT(7 7)'),
               (7, 'overlap B and C', 'SRID=4326;POINT(12 7)'),
               (8, 'A, B and C meet', 'SRID=4326;POINT(10 7)'),
               (9, 'only C', 'SRID=4326;POINT(12 12)'),
               (10, 'outside everything', 'SRID=4326;POINT(50 50)'),
               (11, 'in A, given in EPSG:3857', ST_Transform('SRID=4326;POINT(2 2)'::geometry, 3857)),
               (12, 'NULL point', NULL)) AS p(ord, label, pt)
 ORDER BY p.ord;
-- C now outranks A and B where they overlap
UPDATE allocation.territory SET priority = 5 WHERE code = 'C';
SELECT p.label, terr_code(allocation.territory_at(p.pt)) AS territory
  FROM (VALUES (1, 'interior of A', 'SRID=4326;POINT(2 2)'::geometry),
               (2, 'shared border A|B', 'SRID=4326;POINT(10 2)'),
               (3, 'overlap A and C', 'SRID=4326;POINT(7 7)'),
               (4, 'overlap B and C', 'SRID=4326;POINT(12 7)'),
               (5, 'border of C inside A', 'SRID=4326;POINT(5 7)')) AS p(ord, label, pt)
 ORDER BY p.ord;
-- B outranks C: at the shared border B now beats A as well
UPDATE allocation.territory SET priority = 9 WHERE code = 'B';
SELECT p.label, terr_code(allocation.territory_at(p.pt)) AS territory
  FROM (VALUES (1, 'shared border A|B', 'SRID=4326;POINT(10 2)'::geometry),
               (2, 'overlap A and C', 'SRID=4326;POINT(7 7)'),
               (3, 'overlap B and C', 'SRID=4326;POINT(12 7)'),
               (4, 'A, B and C meet', 'SRID=4326;POINT(10 7)')) AS p(ord, label, pt)
 ORDER BY p.ord;

-------------------------------------------------------------------------------
-- territory_overlap: pairs whose interiors overlap (touching is not overlap),
-- with the winner
-------------------------------------------------------------------------------
SELECT code_a, code_b, round(overlap_km2::numeric / 1000) AS overlap_1000km2, wins
  FROM allocation.territory_overlap ORDER BY code_a, code_b;
UPDATE allocation.territory SET priority = 0 WHERE code IN ('B', 'C');
SELECT code_a, code_b, wins FROM allocation.territory_overlap ORDER BY code_a, code_b;

-------------------------------------------------------------------------------
-- hierarchy: parent_property, parents in any order in the file, existing
-- parents, re-import keeps the tree; children do not count as overlaps
-------------------------------------------------------------------------------
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "H-T1", "name": "Town 1", "up": "H-C1"},
   "geometry": {"type": "Polygon", "coordinates": [[[100,0],[102,0],[102,2],[100,2],[100,0]]]}},
  {"type": "Feature", "properties": {"code": "H-C1", "name": "County 1", "up": "H-P"},
   "geometry": {"type": "Polygon", "coordinates": [[[100,0],[105,0],[105,5],[100,5],[100,0]]]}},
  {"type": "Feature", "properties": {"code": "H-P", "name": "Province", "up": ""},
   "geometry": {"type": "Polygon", "coordinates": [[[100,0],[110,0],[110,10],[100,10],[100,0]]]}},
  {"type": "Feature", "properties": {"code": "H-C2", "name": "County 2", "up": "H-P"},
   "geometry": {"type": "Polygon", "coordinates": [[[105,0],[110,0],[110,5],[105,5],[105,0]]]}}
]}'::jsonb, parent_property => 'up');
-- a later file may name a parent that is already stored
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "H-T2", "name": "Town 2", "up": "H-C2"},
   "geometry": {"type": "Polygon", "coordinates": [[[105,0],[107,0],[107,2],[105,2],[105,0]]]}}
]}'::jsonb, parent_property => 'up');
-- re-importing without parent_property leaves the tree alone
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "H-T1", "name": "Town 1 (renamed)"},
   "geometry": {"type": "Polygon", "coordinates": [[[100,0],[102,0],[102,2],[100,2],[100,0]]]}}
]}'::jsonb);
WITH RECURSIVE tree AS (
    SELECT id, code, name, parent_id, code::text AS path, 0 AS depth
      FROM allocation.territory WHERE parent_id IS NULL AND code LIKE 'H-%'
    UNION ALL
    SELECT t.id, t.code, t.name, t.parent_id, tree.path || ' > ' || t.code, tree.depth + 1
      FROM allocation.territory t JOIN tree ON t.parent_id = tree.id)
SELECT path, name, depth FROM tree ORDER BY path;
SELECT code_a, code_b FROM allocation.territory_overlap WHERE code_a LIKE 'H-%' OR code_b LIKE 'H-%';

-- LA009: a hierarchy cycle, by UPDATE or by a file
UPDATE allocation.territory SET parent_id = (SELECT id FROM allocation.territory WHERE code = 'H-T1')
 WHERE code = 'H-P';
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "H-P", "name": "Province", "up": "H-C1"},
   "geometry": {"type": "Polygon", "coordinates": [[[100,0],[110,0],[110,10],[100,10],[100,0]]]}}
]}'::jsonb, parent_property => 'up');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "H-X", "name": "X", "up": "H-Y"},
   "geometry": {"type": "Polygon", "coordinates": [[[120,0],[121,0],[121,1],[120,1],[120,0]]]}},
  {"type": "Feature", "properties": {"code": "H-Y", "name": "Y", "up": "H-X"},
   "geometry": {"type": "Polygon", "coordinates": [[[120,0],[121,0],[121,1],[120,1],[120,0]]]}}
]}'::jsonb, parent_property => 'up');
\echo sqlstate :SQLSTATE
-- a territory cannot be its own parent
UPDATE allocation.territory SET parent_id = id WHERE code = 'H-C2';
\echo sqlstate :SQLSTATE
SELECT t.code, p.code AS parent FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id
 WHERE t.code LIKE 'H-%' ORDER BY t.code;

-- team hierarchy cycles are refused the same way
INSERT INTO allocation.team (code, name) VALUES ('t-top', 'Top'), ('t-mid', 'Middle');
UPDATE allocation.team SET parent_id = (SELECT id FROM allocation.team WHERE code = 't-top') WHERE code = 't-mid';
UPDATE allocation.team SET parent_id = (SELECT id FROM allocation.team WHERE code = 't-mid') WHERE code = 't-top';
\echo sqlstate :SQLSTATE

-- LA001: a coordinate that is not a number must not be read as 0 (last, and in
-- a transaction that is rolled back, so a wrong result cannot leak into the rest)
BEGIN;
DO $$
BEGIN
    PERFORM allocation.import_territories('{"type": "FeatureCollection", "features": [
      {"type": "Feature", "properties": {"code": "X"},
       "geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],["x",1],[0,0]]]}}]}'::jsonb);
    RAISE NOTICE 'imported a polygon with a non-numeric coordinate';
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'sqlstate %', SQLSTATE;
END
$$;
ROLLBACK;

DROP FUNCTION terr_code(bigint);
DROP VIEW terr_state;
DROP EXTENSION allocation CASCADE;
