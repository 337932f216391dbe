--
-- 36_imports: territory imports that survive real GIS data (issue 15):
-- on_invalid => 'skip' and import_report(), any EPSG CRS PostGIS knows,
-- the text path (geojson_features), coverage_gaps().
--
-- Every failing call is followed by "\echo sqlstate :SQLSTATE" and a look at
-- what is stored, proving a refused call changed nothing.
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

CREATE VIEW terr_state AS
SELECT count(*) AS n,
       string_agg(format('%s:%s:%s', t.code, coalesce(p.code, '-'), round(ST_Area(t.geom)::numeric, 4)), ' ' ORDER BY t.code) AS territories
  FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id;
CREATE VIEW terr_events AS
SELECT count(*) AS config_events FROM allocation.event WHERE kind = 'config_change' AND detail->>'table' = 'territory';

-- the fixture: Tianjin's 2019 district outlines as the GIS team hands them over
-- (simplified shapes): 蓟州区 has an empty geometry, 宝坻区 a ring with every
-- vertex on one parallel (unrepairable), 武清区 a bow tie (repairable), 标注点 is a label point
\set tianjin `cat sql/data/tianjin_2019.geojson`

-------------------------------------------------------------------------------
-- on_invalid => 'error' (the default): all or nothing
-------------------------------------------------------------------------------
SELECT allocation.import_territories(:'tianjin', code_property => 'adcode', parent_property => 'parent');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories(:'tianjin', code_property => 'adcode', parent_property => 'parent', on_invalid => 'error');
\echo sqlstate :SQLSTATE
SELECT * FROM terr_state;
SELECT * FROM terr_events;
SELECT * FROM allocation.import_report();

-------------------------------------------------------------------------------
-- on_invalid => 'skip': the rest is imported in the same transaction, the
-- skipped and repaired features are reported
-------------------------------------------------------------------------------
SELECT allocation.import_territories(:'tianjin', code_property => 'adcode', parent_property => 'parent', on_invalid => 'skip');
SELECT * FROM allocation.import_report();
SELECT t.code, t.name, p.code AS parent, ST_IsValid(t.geom) AS valid, GeometryType(t.geom) AS type
  FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id ORDER BY t.code;
-- one config_change event per territory stored, none for the skipped ones
SELECT * FROM terr_events;

-- the jsonb form is the same import (an upsert: nothing new, same report)
SELECT allocation.import_territories(:'tianjin'::jsonb, code_property => 'adcode', parent_property => 'parent', on_invalid => 'skip');
SELECT feature, code, action, sqlstate FROM allocation.import_report();
SELECT * FROM terr_state;

-- bad codes with skip: no code, the same code twice (every copy is left out: which
-- is right is unknown), an unknown parent, and the child of a skipped parent
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "D1", "up": "120000"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],[117.1,39.3],[117.1,39.4],[117.0,39.4],[117.0,39.3]]]}},
  {"type": "Feature", "properties": {"name": "no code"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],[117.1,39.3],[117.1,39.4],[117.0,39.3]]]}},
  {"type": "Feature", "properties": {"code": "DUP"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],[117.1,39.3],[117.1,39.4],[117.0,39.3]]]}},
  {"type": "Feature", "properties": {"code": "DUP"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.2,39.3],[117.3,39.3],[117.3,39.4],[117.2,39.3]]]}},
  {"type": "Feature", "properties": {"code": "ORPHAN", "up": "999999"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],[117.1,39.3],[117.1,39.4],[117.0,39.3]]]}},
  {"type": "Feature", "properties": {"code": "GRANDCHILD", "up": "ORPHAN"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],[117.1,39.3],[117.1,39.4],[117.0,39.3]]]}},
  42,
  {"type": "Feature", "properties": {"code": "NAN"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.0,39.3],["x",39.3],[117.1,39.4],[117.0,39.3]]]}}
]}', parent_property => 'up', on_invalid => 'skip');
SELECT * FROM allocation.import_report();
SELECT code FROM allocation.territory WHERE code IN ('D1', 'DUP', 'ORPHAN', 'GRANDCHILD', 'NAN') ORDER BY code;

-- the report belongs to the session's last import and is rolled back with it
BEGIN;
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "GONE"}, "geometry": null}]}', on_invalid => 'skip');
SELECT feature, code, action, sqlstate FROM allocation.import_report();
ROLLBACK;
SELECT feature, code, action, sqlstate FROM allocation.import_report();
-- an import with nothing to report empties it
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": []}');
SELECT count(*) AS report_rows FROM allocation.import_report();

-------------------------------------------------------------------------------
-- coordinate systems: a GDAL/QGIS export in Web Mercator (EPSG:3857, file
-- sql/data/hexi_3857.geojson, made from the two polygons below) and in CGCS2000
-- (EPSG:4490) are transformed to EPSG:4326, and the transform is reported
-------------------------------------------------------------------------------
\set hexi `cat sql/data/hexi_3857.geojson`
SELECT allocation.import_territories(:'hexi');
SELECT * FROM allocation.import_report();
-- round trip: within 1e-7 degrees (about 1 cm; the file keeps centimetres)
SELECT t.code, ST_SRID(t.geom) AS srid,
       ST_HausdorffDistance(t.geom, k.g) < 1e-7 AS same_polygon,
       round(ST_XMin(t.geom)::numeric, 6) AS xmin, round(ST_YMax(t.geom)::numeric, 6) AS ymax
  FROM allocation.territory t
  JOIN (VALUES ('120103', 'SRID=4326;POLYGON((117.18 39.05,117.26 39.04,117.29 39.10,117.22 39.13,117.17 39.10,117.18 39.05))'::geometry),
               ('120104', 'SRID=4326;POLYGON((117.10 39.10,117.17 39.10,117.22 39.13,117.18 39.17,117.11 39.16,117.10 39.10))')) k(code, g)
    ON k.code = t.code ORDER BY t.code;

-- CGCS2000, named as GDAL writes it; and one geometry naming its own CRS (3857) in a 4490 file
SELECT allocation.import_territories('{"type": "FeatureCollection",
  "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},
  "features": [
  {"type": "Feature", "properties": {"code": "CG1"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.40,39.30],[117.50,39.30],[117.50,39.40],[117.40,39.40],[117.40,39.30]]]}},
  {"type": "Feature", "properties": {"code": "CG2"},
   "geometry": {"type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:3857"}},
                "coordinates": [[[13068000,4770000],[13069000,4770000],[13069000,4771000],[13068000,4770000]]]}}]}');
SELECT * FROM allocation.import_report();
SELECT code, ST_SRID(geom) AS srid, ST_AsText(geom, 6) AS geom
  FROM allocation.territory WHERE code IN ('CG1', 'CG2') ORDER BY code;

-------------------------------------------------------------------------------
-- geojson_features(): the streaming split behind the text path
-------------------------------------------------------------------------------
SELECT * FROM allocation.geojson_features('{"type": "FeatureCollection", "name": "x", "features": [{"type": "Feature"}, 42, null]}');
SELECT * FROM allocation.geojson_features('[1, 2]');
SELECT * FROM allocation.geojson_features(NULL);
SELECT * FROM allocation.geojson_features('{"type": "FeatureCollection", "features": [');
\echo sqlstate :SQLSTATE

-------------------------------------------------------------------------------
-- bad input: a specific SQLSTATE, nothing stored changes
-------------------------------------------------------------------------------
SELECT * FROM terr_state;
SELECT * FROM terr_events;
-- LA0I0: on_invalid not error/skip (NULL, another word, another case)
SELECT allocation.import_territories(:'tianjin', code_property => 'adcode', on_invalid => NULL);
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories(:'tianjin'::jsonb, code_property => 'adcode', on_invalid => 'ignore');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories(:'tianjin', code_property => 'adcode', on_invalid => 'SKIP');
\echo sqlstate :SQLSTATE
-- LA001: NULL, text that is not JSON, JSON that is not a FeatureCollection (skip does not skip these)
SELECT allocation.import_territories(NULL::text, on_invalid => 'skip');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [}', on_invalid => 'skip');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "Feature", "geometry": null}', on_invalid => 'skip');
\echo sqlstate :SQLSTATE
-- LA0I1: an unknown CRS on the collection is never skipped
SELECT allocation.import_territories(replace(:'tianjin', 'urn:ogc:def:crs:OGC:1.3:CRS84', 'EPSG:4491000'),
                                     code_property => 'adcode', on_invalid => 'skip');
\echo sqlstate :SQLSTATE
-- 22004: NULL property names
SELECT allocation.import_territories(:'tianjin', code_property => NULL, on_invalid => 'skip');
\echo sqlstate :SQLSTATE
-- LA0I1 on one geometry, LA005 after a transform, with error: the whole file is refused
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "120101", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.1,39.0],[117.3,39.0],[117.3,39.2],[117.1,39.0]]]}},
  {"type": "Feature", "properties": {"code": "BAD"},
   "geometry": {"type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:0"}},
                "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}');
\echo sqlstate :SQLSTATE
SELECT allocation.import_territories('{"type": "FeatureCollection",
  "crs": {"type": "name", "properties": {"name": "EPSG:4490"}}, "features": [
  {"type": "Feature", "properties": {"code": "120101", "name": "renamed"},
   "geometry": {"type": "Polygon", "coordinates": [[[117.1,39.0],[117.3,39.0],[117.3,39.2],[117.1,39.0]]]}},
  {"type": "Feature", "properties": {"code": "BAD"},
   "geometry": {"type": "Polygon", "coordinates": [[[13068000,4770000],[13069000,4770000],[13069000,4771000],[13068000,4770000]]]}}]}');
\echo sqlstate :SQLSTATE
SELECT * FROM terr_state;
SELECT * FROM terr_events;

-------------------------------------------------------------------------------
-- coverage_gaps(): where nobody sells (边缘市场无人管)
--   天津市 120000 has children 和平区, 河东区, 滨海新区, 武清区 (and the others above
--   without parent); 和平区 is owned by rep wang, 滨海新区 by team north;
--   河东区 and 武清区 belong to nobody.
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('north', 'North 华北');
INSERT INTO allocation.rep (code, name, team_id, capacity) VALUES ('wang', 'Wang', 1, 100);
UPDATE allocation.territory SET owner_rep_id = (SELECT id FROM allocation.rep WHERE code = 'wang') WHERE code = '120101';
UPDATE allocation.territory SET owner_team_id = (SELECT id FROM allocation.team WHERE code = 'north') WHERE code = '120116';
CREATE TABLE dealer (id text PRIMARY KEY, loc geometry(Point, 4326), owner_id bigint);
SELECT allocation.manage('dealer', 'id', 'loc', 'owner_id');
INSERT INTO dealer (id, loc) VALUES
  ('in-heping',   'SRID=4326;POINT(117.2 39.1)'),     -- owned county
  ('in-hedong-1', 'SRID=4326;POINT(117.4 39.1)'),     -- nobody's county
  ('in-hedong-2', 'SRID=4326;POINT(117.45 39.15)'),
  ('in-gap-1',    'SRID=4326;POINT(117.0 40.0)'),     -- in 天津市, in no district (蓟州区 was skipped)
  ('in-gap-2',    'SRID=4326;POINT(116.75 38.6)'),
  ('outside',     'SRID=4326;POINT(100 30)');
-- a second customer table in another SRID
CREATE TABLE grower (gid integer PRIMARY KEY, pos geometry(Point, 3857), owner_id bigint);
SELECT allocation.manage('grower', 'gid', 'pos', 'owner_id');
INSERT INTO grower VALUES (7, ST_Transform('SRID=4326;POINT(117.0 40.1)'::geometry, 3857), NULL);

SELECT kind, parent, code, name, round(area_km2::numeric) AS area_km2, customers, keys
  FROM allocation.coverage_gaps('120000');
-- everywhere: the same plus the stand-alone territories nobody owns
SELECT kind, parent, code, customers, keys FROM allocation.coverage_gaps();
-- a leaf whose ancestor has an owner is not a gap; a territory without children has no uncovered area
UPDATE allocation.territory SET parent_id = (SELECT id FROM allocation.territory WHERE code = '120116') WHERE code = 'D1';
SELECT kind, parent, code FROM allocation.coverage_gaps('120116');
SELECT kind, parent, code FROM allocation.coverage_gaps('120102');
-- as GeoJSON
SELECT jsonb_path_query(allocation.coverage_gaps_geojson('120000'), '$.features[*].properties') AS properties;
SELECT jsonb_array_length(allocation.coverage_gaps_geojson('nothing-here' || '') -> 'features');
\echo sqlstate :SQLSTATE
SELECT allocation.coverage_gaps_geojson('120102') AS geojson;
-- LA0I2: unknown parent code, nothing changed
SELECT * FROM allocation.coverage_gaps('999999');
\echo sqlstate :SQLSTATE
SELECT * FROM terr_state;

-------------------------------------------------------------------------------
-- privileges: analysts and managers read gaps, with their own rights on the
-- customer tables; reps do not; only admins import
-------------------------------------------------------------------------------
CREATE ROLE regress_imp_analyst;
CREATE ROLE regress_imp_rep;
CREATE ROLE regress_imp_admin;
SELECT allocation.grant_role('regress_imp_analyst', 'analyst');
SELECT allocation.grant_role('regress_imp_rep', 'rep');
SELECT allocation.grant_role('regress_imp_admin', 'admin');
GRANT SELECT ON dealer TO regress_imp_analyst;   -- not grower
SET ROLE regress_imp_analyst;
SELECT kind, code, customers, keys FROM allocation.coverage_gaps('120000');
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": []}');
\echo sqlstate :SQLSTATE
RESET ROLE;
SET ROLE regress_imp_rep;
SELECT * FROM allocation.coverage_gaps();
\echo sqlstate :SQLSTATE
SELECT allocation.coverage_gaps_geojson();
\echo sqlstate :SQLSTATE
RESET ROLE;
SET ROLE regress_imp_admin;
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "ADM"}, "geometry": null}]}', on_invalid => 'skip');
SELECT feature, code, action, sqlstate FROM allocation.import_report();
RESET ROLE;

DROP TABLE grower, dealer;
DROP VIEW terr_events;
DROP VIEW terr_state;
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_imp_analyst, regress_imp_rep, regress_imp_admin;
DROP ROLE regress_imp_analyst, regress_imp_rep, regress_imp_admin;
