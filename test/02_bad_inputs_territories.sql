-- pgTAP: every bad input of allocation.import_territories() raises its own
-- SQLSTATE and leaves the stored territories (and the audit log) untouched;
-- repairable polygons are repaired; hierarchy cycles are refused (LA009).
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;
SET LOCAL client_min_messages = warning;   -- repaired-polygon NOTICEs are expected

SELECT plan(133);

-------------------------------------------------------------------------------
-- Fixtures
-------------------------------------------------------------------------------
-- A FeatureCollection from features given as jsonb values.
CREATE FUNCTION pg_temp.fc(VARIADIC features jsonb[]) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT jsonb_build_object('type', 'FeatureCollection', 'features', to_jsonb(features)) $$;
-- A feature with a code and a geometry (GeoJSON text).
CREATE FUNCTION pg_temp.feat(code text, geom text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT jsonb_build_object('type', 'Feature', 'properties', jsonb_build_object('code', code, 'name', 'Territory ' || code),
                             'geometry', geom::jsonb) $$;
-- A square polygon [x0,x0+s] x [y0,y0+s] as GeoJSON text.
CREATE FUNCTION pg_temp.sq(x0 float8, y0 float8, s float8) RETURNS text LANGUAGE sql IMMUTABLE AS
$$ SELECT format('{"type":"Polygon","coordinates":[[[%s,%s],[%s,%s],[%s,%s],[%s,%s],[%s,%s]]]}',
                 x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s, x0, y0) $$;
-- A valid change to existing territory A, put first in every bad file: an
-- import that applied part of a file would show up in the checksum.
CREATE FUNCTION pg_temp.good_a() RETURNS jsonb LANGUAGE sql IMMUTABLE AS
$$ SELECT pg_temp.feat('A', pg_temp.sq(100, 50, 3)) || '{"properties":{"code":"A","name":"Moved A"}}' $$;
-- SQLSTATE raised by a statement (NULL if none).
CREATE FUNCTION pg_temp.sqlstate_of(sql text) RETURNS text LANGUAGE plpgsql AS
$$ BEGIN EXECUTE sql; RETURN NULL; EXCEPTION WHEN others THEN RETURN SQLSTATE; END $$;

-- Everything an import may change: territories (all columns that matter) and
-- import events.  pg_temp.untouched() returns that state and, when a bad input
-- was wrongly accepted, puts the territories back from the snapshot (and
-- discounts the extra audit rows) so one engine bug does not fail every
-- later test.
CREATE TEMP TABLE meta (base text, ev_offset bigint NOT NULL DEFAULT 0);
INSERT INTO meta VALUES (NULL, 0);
CREATE TEMP VIEW terr_state AS
SELECT (SELECT count(*) FROM allocation.territory) || ':' ||
       (SELECT md5(coalesce(string_agg(t.code || '|' || t.name || '|' || coalesce(p.code, '-') || '|' ||
                                       coalesce(ST_AsText(t.geom), '-') || '|' || t.properties::text || '|' ||
                                       t.priority || '|' || t.exclusive, ',' ORDER BY t.code), ''))
          FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id) || ':' ||
       ((SELECT count(*) FROM allocation.event WHERE kind = 'config_change' AND detail->>'table' = 'territory') - (SELECT ev_offset FROM meta)) AS s;
CREATE TEMP TABLE snap AS SELECT t.*, NULL::text AS parent_code FROM allocation.territory t WHERE false;
CREATE FUNCTION pg_temp.take_snapshot() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM snap;
    INSERT INTO snap SELECT t.*, p.code FROM allocation.territory t LEFT JOIN allocation.territory p ON p.id = t.parent_id;
    UPDATE meta SET base = (SELECT s FROM terr_state);
    RETURN (SELECT base FROM meta);
END $$;
CREATE FUNCTION pg_temp.untouched() RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    st text := (SELECT s FROM terr_state);
BEGIN
    IF st IS DISTINCT FROM (SELECT base FROM meta) THEN
        UPDATE allocation.territory SET parent_id = NULL WHERE parent_id IS NOT NULL;
        DELETE FROM allocation.territory WHERE code NOT IN (SELECT code FROM snap);
        UPDATE allocation.territory t SET name = s.name, geom = s.geom, properties = s.properties,
               priority = s.priority, exclusive = s.exclusive
          FROM snap s WHERE s.code = t.code;
        UPDATE allocation.territory t SET parent_id = p.id
          FROM snap s JOIN allocation.territory p ON p.code = s.parent_code WHERE s.code = t.code;
        UPDATE meta SET ev_offset = (SELECT count(*) FROM allocation.event WHERE kind = 'config_change' AND detail->>'table' = 'territory')
                                    - split_part(base, ':', 3)::bigint;
    END IF;
    RETURN st;
END $$;

SELECT is(allocation.import_territories(pg_temp.fc(
            pg_temp.feat('A', pg_temp.sq(0, 0, 10)),
            pg_temp.feat('B', pg_temp.sq(10, 0, 10)),
            pg_temp.feat('A1', pg_temp.sq(0, 0, 5)) || '{"properties":{"code":"A1","name":"Territory A1","parent":"A"}}',
            pg_temp.feat('A11', pg_temp.sq(0, 0, 2)) || '{"properties":{"code":"A11","name":"Territory A11","parent":"A1"}}'),
          'code', 'name', 'parent'),
          4, 'fixture: four territories imported (A, B, A1 under A, A11 under A1)');
UPDATE allocation.territory SET priority = 5, exclusive = true WHERE code = 'B';

CREATE TABLE public.tap02_customer (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('public.tap02_customer', 'id', 'loc', 'owner') AS managed \gset

SELECT count(*)::text AS base_n FROM allocation.territory \gset
SELECT pg_temp.take_snapshot() AS base \gset
SELECT is(:'base_n'::int, 4, 'baseline: 4 territories');

-------------------------------------------------------------------------------
-- LA001: not a FeatureCollection
-------------------------------------------------------------------------------
SELECT ok(pg_temp.sqlstate_of('SELECT allocation.import_territories(NULL)') IN ('LA001', '22004'),
          'NULL collection: LA001 or 22004');
SELECT is(pg_temp.untouched(), :'base', 'NULL collection: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('[1, 2]')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'JSON array: LA001');
SELECT is(pg_temp.untouched(), :'base', 'JSON array: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('"FeatureCollection"')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'JSON string: LA001');
SELECT is(pg_temp.untouched(), :'base', 'JSON string: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.feat('Z', pg_temp.sq(0, 0, 1)))$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'a single Feature instead of a collection: LA001');
SELECT is(pg_temp.untouched(), :'base', 'single Feature: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'a bare geometry: LA001');
SELECT is(pg_temp.untouched(), :'base', 'bare geometry: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"featurecollection","features":[]}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'type with the wrong case: LA001');
SELECT is(pg_temp.untouched(), :'base', 'wrong-case type: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"features":[]}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'no type member: LA001');
SELECT is(pg_temp.untouched(), :'base', 'no type: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"FeatureCollection"}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'features missing: LA001');
SELECT is(pg_temp.untouched(), :'base', 'features missing: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"FeatureCollection","features":{}}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'features is an object: LA001');
SELECT is(pg_temp.untouched(), :'base', 'features object: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"FeatureCollection","features":null}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'features is JSON null: LA001');
SELECT is(pg_temp.untouched(), :'base', 'features null: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories('{"type":"FeatureCollection","features":"A,B"}')$$, 'LA001',
                 'input is not a GeoJSON FeatureCollection', 'features is a string: LA001');
SELECT is(pg_temp.untouched(), :'base', 'features string: territories untouched');

-------------------------------------------------------------------------------
-- LA001: an element is not a Feature
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), '42'))$$, 'LA001',
                 'feature 2 is not a GeoJSON Feature', 'feature is a number: LA001');
SELECT is(pg_temp.untouched(), :'base', 'feature number: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), 'null'))$$, 'LA001',
                 'feature 2 is not a GeoJSON Feature', 'feature is JSON null: LA001');
SELECT is(pg_temp.untouched(), :'base', 'feature null: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.sq(0, 0, 1)::jsonb))$$, 'LA001',
                 'feature 2 is not a GeoJSON Feature', 'feature is a bare Polygon: LA001');
SELECT is(pg_temp.untouched(), :'base', 'feature bare polygon: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     '{"properties":{"code":"Z"},"geometry":{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}}'))$$, 'LA001',
                 'feature 2 is not a GeoJSON Feature', 'feature without "type": LA001');
SELECT is(pg_temp.untouched(), :'base', 'feature without type: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), '[{"type":"Feature"}]'))$$, 'LA001',
                 'feature 2 is not a GeoJSON Feature', 'feature is an array: LA001');
SELECT is(pg_temp.untouched(), :'base', 'feature array: territories untouched');

-------------------------------------------------------------------------------
-- LA002: no code
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     jsonb_set(pg_temp.feat('Z', pg_temp.sq(0, 0, 1)), '{properties}', '{"name":"no code"}')))$$, 'LA002',
                 'feature 2 has no territory code', 'missing code: LA002');
SELECT is(pg_temp.untouched(), :'base', 'missing code: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('', pg_temp.sq(0, 0, 1))))$$, 'LA002',
                 'feature 2 has no territory code', 'empty code: LA002');
SELECT is(pg_temp.untouched(), :'base', 'empty code: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('   ', pg_temp.sq(0, 0, 1))))$$, 'LA002',
                 'feature 2 has no territory code', 'blank code: LA002');
SELECT is(pg_temp.untouched(), :'base', 'blank code: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     jsonb_set(pg_temp.feat('Z', pg_temp.sq(0, 0, 1)), '{properties,code}', 'null')))$$, 'LA002',
                 'feature 2 has no territory code', 'code is JSON null: LA002');
SELECT is(pg_temp.untouched(), :'base', 'null code: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', pg_temp.sq(0, 0, 1)) - 'properties'))$$, 'LA002',
                 'feature 2 has no territory code', 'no properties at all: LA002');
SELECT is(pg_temp.untouched(), :'base', 'no properties: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('Z', pg_temp.sq(0, 0, 1))), 'gid')$$, 'LA002',
                 'feature 1 has no territory code', 'code_property names a property the features lack: LA002');
SELECT is(pg_temp.untouched(), :'base', 'absent code_property: territories untouched');

-- a NULL code_property is a NULL required argument (ENGINE-NOTES: 22004), not a feature without code
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a()), NULL)$$, '22004',
                 NULL, 'NULL code_property: 22004');
SELECT is(pg_temp.untouched(), :'base', 'NULL code_property: territories untouched');

-------------------------------------------------------------------------------
-- LA003: no or empty geometry
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', pg_temp.sq(0, 0, 1)) - 'geometry'))$$, 'LA003',
                 'feature 2 (Z) has no geometry', 'missing geometry: LA003');
SELECT is(pg_temp.untouched(), :'base', 'missing geometry: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('Z', 'null')))$$, 'LA003',
                 'feature 2 (Z) has no geometry', 'null geometry: LA003');
SELECT is(pg_temp.untouched(), :'base', 'null geometry: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[]}')))$$, 'LA003',
                 'feature 2 (Z) has an empty geometry', 'empty Polygon: LA003');
SELECT is(pg_temp.untouched(), :'base', 'empty Polygon: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"MultiPolygon","coordinates":[]}')))$$, 'LA003',
                 'feature 2 (Z) has an empty geometry', 'empty MultiPolygon: LA003');
SELECT is(pg_temp.untouched(), :'base', 'empty MultiPolygon: territories untouched');

-------------------------------------------------------------------------------
-- LA004: not a (Multi)Polygon
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Point","coordinates":[1,1]}')))$$, 'LA004',
                 'feature 2 (Z) has a Point geometry, not a polygon', 'Point: LA004');
SELECT is(pg_temp.untouched(), :'base', 'Point: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"LineString","coordinates":[[0,0],[1,1]]}')))$$, 'LA004',
                 'feature 2 (Z) has a LineString geometry, not a polygon', 'LineString: LA004');
SELECT is(pg_temp.untouched(), :'base', 'LineString: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"MultiPoint","coordinates":[[0,0],[1,1]]}')))$$, 'LA004',
                 'feature 2 (Z) has a MultiPoint geometry, not a polygon', 'MultiPoint: LA004');
SELECT is(pg_temp.untouched(), :'base', 'MultiPoint: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"GeometryCollection","geometries":[{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}]}')))$$,
                 'LA004', 'feature 2 (Z) has a GeometryCollection geometry, not a polygon', 'GeometryCollection: LA004');
SELECT is(pg_temp.untouched(), :'base', 'GeometryCollection: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}')))$$, 'LA004',
                 NULL, 'geometry without a type: LA004');
SELECT is(pg_temp.untouched(), :'base', 'untyped geometry: territories untouched');

-------------------------------------------------------------------------------
-- CRS: a known EPSG CRS is transformed to 4326 (1.1); an unknown one is LA0I1
-------------------------------------------------------------------------------
SAVEPOINT crs;
SELECT is(allocation.import_territories(pg_temp.fc(pg_temp.good_a())
              || '{"crs":{"type":"name","properties":{"name":"EPSG:3857"}}}'), 1,
          'collection CRS EPSG:3857: transformed and imported');
ROLLBACK TO SAVEPOINT crs;
SELECT is(pg_temp.untouched(), :'base', 'collection CRS 3857 (rolled back): territories untouched');

SELECT is(allocation.import_territories(pg_temp.fc(pg_temp.good_a())
              || '{"crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:EPSG::4490"}}}'), 1,
          'collection CRS urn EPSG::4490 (CGCS2000): transformed and imported');
ROLLBACK TO SAVEPOINT crs;
SELECT is(pg_temp.untouched(), :'base', 'collection CRS 4490 (rolled back): territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a())
                     || '{"crs":{"type":"name","properties":{"name":"EPSG:43260"}}}')$$, 'LA0I1',
                 'coordinate reference system "EPSG:43260" is unknown', 'collection CRS EPSG:43260 (unknown to PostGIS): LA0I1');
SELECT is(pg_temp.untouched(), :'base', 'collection CRS 43260: territories untouched');

SELECT is(allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
              pg_temp.feat('Z', '{"type":"Polygon","crs":{"type":"name","properties":{"name":"EPSG:3857"}},"coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}'))),
          2, 'geometry in SRID 3857: transformed and imported');
ROLLBACK TO SAVEPOINT crs;
SELECT is(pg_temp.untouched(), :'base', 'geometry SRID 3857 (rolled back): territories untouched');

-- projected coordinates (metres) with no crs member cannot be longitude/latitude
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', pg_temp.sq(500000, 3000000, 10000))))$$, 'LA005',
                 NULL, 'coordinates outside longitude/latitude range (projected, no crs): LA005');
SELECT is(pg_temp.untouched(), :'base', 'out-of-range coordinates: territories untouched');

-------------------------------------------------------------------------------
-- LA006: unknown parent; LA007: duplicate code
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', pg_temp.sq(0, 0, 1)) || '{"properties":{"code":"Z","parent":"NOPE"}}'),
                     'code', 'name', 'parent')$$, 'LA006',
                 'territory Z names unknown parent NOPE', 'unknown parent code: LA006');
SELECT is(pg_temp.untouched(), :'base', 'unknown parent: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', pg_temp.sq(0, 0, 1)), pg_temp.feat('Y', pg_temp.sq(0, 0, 1)),
                     pg_temp.feat('Z', pg_temp.sq(2, 2, 1))))$$, 'LA007',
                 'territory code Z appears more than once in the file', 'duplicate code in one file: LA007');
SELECT is(pg_temp.untouched(), :'base', 'duplicate code: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('A', pg_temp.sq(0, 0, 10))))$$, 'LA007',
                 'territory code A appears more than once in the file', 'duplicate of an existing code in one file: LA007');
SELECT is(pg_temp.untouched(), :'base', 'duplicate existing code: territories untouched');

-------------------------------------------------------------------------------
-- LA001: malformed coordinates
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[[[0,0],[1]]]}')))$$, 'LA001',
                 'feature 2 (Z) has a malformed geometry', 'position with one ordinate: LA001');
SELECT is(pg_temp.untouched(), :'base', 'one ordinate: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":"0 0, 1 0, 1 1, 0 0"}')))$$, 'LA001',
                 'feature 2 (Z) has a malformed geometry', 'coordinates is a string: LA001');
SELECT is(pg_temp.untouched(), :'base', 'string coordinates: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon"}')))$$, 'LA001',
                 'feature 2 (Z) has a malformed geometry', 'coordinates missing: LA001');
SELECT is(pg_temp.untouched(), :'base', 'missing coordinates: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[[0,0],[1,0],[1,1],[0,0]]}')))$$, 'LA001',
                 'feature 2 (Z) has a malformed geometry', 'Polygon coordinates not nested deep enough: LA001');
SELECT is(pg_temp.untouched(), :'base', 'shallow coordinates: territories untouched');

-- non-numeric ordinates must not be read as 0 (that silently changes the shape)
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[[[0,0],[10,0],["x",10],[0,10],[0,0]]]}')))$$, 'LA001',
                 NULL, 'non-numeric ordinate "x": LA001');
SELECT is(pg_temp.untouched(), :'base', 'non-numeric ordinate: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[[[0,0],[10,0],[null,10],[0,10],[0,0]]]}')))$$, 'LA001',
                 NULL, 'null ordinate: LA001');
SELECT is(pg_temp.untouched(), :'base', 'null ordinate: territories untouched');

-------------------------------------------------------------------------------
-- LA008: invalid polygon that cannot be repaired
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"Polygon","coordinates":[[[0,0],[1,0],[2,0],[0,0]]]}')))$$, 'LA008',
                 'feature 2 (Z) has an invalid polygon that cannot be repaired', 'zero-area (collinear) ring: LA008');
SELECT is(pg_temp.untouched(), :'base', 'collinear ring: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('Z', '{"type":"MultiPolygon","coordinates":[[[[3,3],[4,3],[5,3],[3,3]]],[[[7,7],[7,8],[7,9],[7,7]]]]}')))$$,
                 'LA008', 'feature 2 (Z) has an invalid polygon that cannot be repaired', 'MultiPolygon of zero-area rings: LA008');
SELECT is(pg_temp.untouched(), :'base', 'zero-area MultiPolygon: territories untouched');

-------------------------------------------------------------------------------
-- The error is reported for the first bad feature, whatever comes after
-------------------------------------------------------------------------------
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(), pg_temp.feat('B', pg_temp.sq(50, 50, 1)),
                     pg_temp.feat('Z', '{"type":"Point","coordinates":[1,1]}'), '17'))$$, 'LA004',
                 'feature 3 (Z) has a Point geometry, not a polygon', 'third feature bad after two good ones: LA004 names feature 3');
SELECT is(pg_temp.untouched(), :'base', 'bad third feature: territories untouched (A and B not changed)');

-------------------------------------------------------------------------------
-- LA009: hierarchy cycles (territory)
-------------------------------------------------------------------------------
SELECT throws_ok($$UPDATE allocation.territory SET parent_id = (SELECT id FROM allocation.territory WHERE code = 'A11')
                    WHERE code = 'A'$$, 'LA009', 'territory hierarchy would contain a cycle',
                 'territory A under its grandchild A11: LA009');
SELECT is(pg_temp.untouched(), :'base', 'territory cycle by UPDATE: territories untouched');

SELECT throws_ok($$UPDATE allocation.territory SET parent_id = id WHERE code = 'B'$$, 'LA009',
                 'territory hierarchy would contain a cycle', 'territory B as its own parent: LA009');
SELECT is(pg_temp.untouched(), :'base', 'self-parent territory: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a() || '{"properties":{"code":"A","parent":"A1"}}'),
                     'code', 'name', 'parent')$$, 'LA009', 'territory hierarchy would contain a cycle',
                 'import puts A under its own child A1: LA009');
SELECT is(pg_temp.untouched(), :'base', 'import cycle through stored territories: territories untouched');

SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a(),
                     pg_temp.feat('X', pg_temp.sq(30, 30, 1)) || '{"properties":{"code":"X","parent":"Y"}}',
                     pg_temp.feat('Y', pg_temp.sq(30, 30, 2)) || '{"properties":{"code":"Y","parent":"X"}}'),
                     'code', 'name', 'parent')$$, 'LA009', 'territory hierarchy would contain a cycle',
                 'import of X under Y and Y under X: LA009');
SELECT is(pg_temp.untouched(), :'base', 'import cycle inside the file: territories untouched');

-------------------------------------------------------------------------------
-- LA009: hierarchy cycles (team)
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('t1', 'Top');
INSERT INTO allocation.team (code, name, parent_id) SELECT 't2', 'Middle', id FROM allocation.team WHERE code = 't1';
INSERT INTO allocation.team (code, name, parent_id) SELECT 't3', 'Bottom', id FROM allocation.team WHERE code = 't2';
CREATE TEMP VIEW team_state AS
SELECT md5(string_agg(t.code || '>' || coalesce(p.code, '-'), ',' ORDER BY t.code)) AS s
  FROM allocation.team t LEFT JOIN allocation.team p ON p.id = t.parent_id;
SELECT s AS team_base FROM team_state \gset

SELECT throws_ok($$UPDATE allocation.team SET parent_id = (SELECT id FROM allocation.team WHERE code = 't3')
                    WHERE code = 't1'$$, 'LA009', 'team hierarchy would contain a cycle', 'team t1 under its grandchild t3: LA009');
SELECT is(s, :'team_base', 'team cycle: teams untouched') FROM team_state;
SELECT throws_ok($$UPDATE allocation.team SET parent_id = id WHERE code = 't2'$$, 'LA009',
                 'team hierarchy would contain a cycle', 'team t2 as its own parent: LA009');
SELECT is(s, :'team_base', 'self-parent team: teams untouched') FROM team_state;

-------------------------------------------------------------------------------
-- Repairable and legitimate inputs are accepted
-------------------------------------------------------------------------------
SELECT is(allocation.import_territories(pg_temp.fc(
            pg_temp.feat('BOW', '{"type":"Polygon","coordinates":[[[40,0],[42,2],[42,0],[40,2],[40,0]]]}'))),
          1, 'bow-tie polygon (self-intersecting) is imported');
SELECT ok(ST_IsValid(geom), 'bow-tie is stored valid') FROM allocation.territory WHERE code = 'BOW';
SELECT is(GeometryType(geom), 'MULTIPOLYGON', 'bow-tie is stored as a MultiPolygon') FROM allocation.territory WHERE code = 'BOW';
SELECT is(ST_NumGeometries(geom), 2, 'bow-tie is stored as its two triangles') FROM allocation.territory WHERE code = 'BOW';
SELECT is(round(ST_Area(geom)::numeric, 6), 2.000000, 'bow-tie keeps the area of both triangles') FROM allocation.territory WHERE code = 'BOW';
SELECT is(ST_SRID(geom), 4326, 'bow-tie is stored in SRID 4326') FROM allocation.territory WHERE code = 'BOW';
SELECT is(allocation.territory_at(ST_SetSRID(ST_MakePoint(40.5, 1), 4326)), (SELECT id FROM allocation.territory WHERE code = 'BOW'),
          'a point inside the left triangle of the bow-tie is in BOW');
SELECT is(allocation.territory_at(ST_SetSRID(ST_MakePoint(41, 1.8), 4326)), NULL::bigint,
          'a point in the notch of the bow-tie is outside BOW');

SELECT lives_ok($$SELECT allocation.import_territories(pg_temp.fc(
            pg_temp.feat('Z3', '{"type":"Polygon","coordinates":[[[60,0,12.5],[61,0,12.5],[61,1,12.5],[60,1,12.5],[60,0,12.5]]]}')))$$,
          'polygon with altitude (RFC 7946 allows a third ordinate) is imported');
SELECT is((SELECT ST_NDims(geom) FROM allocation.territory WHERE code = 'Z3'), 2::smallint, 'altitude is dropped: stored 2D');

SELECT is(allocation.import_territories(pg_temp.fc(pg_temp.feat('C84', pg_temp.sq(70, 0, 1)))
            || '{"crs":{"type":"name","properties":{"name":"urn:ogc:def:crs:OGC:1.3:CRS84"}}}'),
          1, 'collection CRS urn:ogc:def:crs:OGC:1.3:CRS84 is accepted');
SELECT is(allocation.import_territories(pg_temp.fc(pg_temp.feat('E4326', pg_temp.sq(72, 0, 1)))
            || '{"crs":{"type":"name","properties":{"name":"EPSG:4326"}}}'),
          1, 'collection CRS EPSG:4326 is accepted');
SELECT is(allocation.import_territories(pg_temp.fc(
            pg_temp.feat('CH', pg_temp.sq(74, 0, 1)) || '{"properties":{"code":"CH","parent":"PA"}}',
            pg_temp.feat('PA', pg_temp.sq(74, 0, 2))), 'code', 'name', 'parent'),
          2, 'a child may come before its parent in the file');
SELECT is((SELECT p.code FROM allocation.territory c JOIN allocation.territory p ON p.id = c.parent_id WHERE c.code = 'CH'),
          'PA', 'CH got parent PA');

-------------------------------------------------------------------------------
-- The in-memory territory index survives failed imports
-------------------------------------------------------------------------------
SELECT is(allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(7 7)"}'::jsonb)#>>'{territories,0,code}',
          'A', 'before: a point at (7 7) is in A (index built)');
SELECT throws_ok($$SELECT allocation.import_territories(pg_temp.fc(pg_temp.good_a() || '{"properties":{"code":"A","parent":"A1"}}'),
                     'code', 'name', 'parent')$$, 'LA009', NULL,
                 'an import that moves A and then fails on a cycle');
SELECT is(allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(7 7)"}'::jsonb)#>>'{territories,0,code}',
          'A', 'after the failed import the index still puts (7 7) in A');
SELECT throws_ok($q$DO $do$ BEGIN
                      PERFORM allocation.import_territories(pg_temp.fc(pg_temp.good_a()));
                      PERFORM allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(7 7)"}'::jsonb);
                      RAISE EXCEPTION 'abort after use' USING ERRCODE = 'P0001';
                    END $do$$q$, 'P0001', 'abort after use',
                 'an import that succeeds, is used by explain(), then is rolled back');
SELECT is(allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(7 7)"}'::jsonb)#>>'{territories,0,code}',
          'A', 'after the rollback the index again puts (7 7) in A');
SELECT is(allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(101 51)"}'::jsonb)->'territories',
          '[]'::jsonb, 'after the rollback (101 51), where the rolled-back A was, is in no territory');
SELECT is(allocation.explain('public.tap02_customer', '{"loc":"SRID=4326;POINT(15 5)"}'::jsonb)#>>'{territories,0,code}',
          'B', 'a point in B is in B');

SELECT * FROM finish();
ROLLBACK;
