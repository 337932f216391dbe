-- demo/02_province.sql — the GIS team's hand-over: a generated province of ~100 counties.
--
-- The geometry is synthetic but shaped like the real thing: a province outline around
-- lon 109-114 E, lat 25-30 N (roughly where Hunan is), ~100 county polygons (a relaxed Voronoi
-- partition whose borders are then given natural wiggles, shared exactly by both neighbours),
-- 12 prefectures (地级市, each the union of its counties), and crop zones per county
-- (rice along the river valley and the lake plain, cotton on the lake rim, citrus orchards in
-- the south-west hills, dryland wheat in the north-west) that run across prefecture borders.
--
-- The GIS team hands over ONE GeoJSON FeatureCollection; the CRM side loads it with
-- allocation.import_territories(), the county -> prefecture hierarchy coming from the
-- "prefecture" property.  Nothing below the "hand-over" line touches geometry by hand.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

-- the DBA attaches the extension to the existing CRM database
CREATE EXTENSION allocation CASCADE;

SELECT setseed(0.4307) \gset

CREATE SCHEMA gis;
COMMENT ON SCHEMA gis IS 'demo scratch: how the GIS team made the province layer';

-------------------------------------------------------------------------------
-- 1. Province outline
-------------------------------------------------------------------------------
CREATE TABLE gis.province AS
SELECT ST_SetSRID(ST_MakePolygon(ST_MakeLine(ARRAY[
           ST_MakePoint(109.55, 29.55), ST_MakePoint(110.35, 29.70), ST_MakePoint(110.95, 30.05),
           ST_MakePoint(111.85, 29.90), ST_MakePoint(112.35, 29.50), ST_MakePoint(113.05, 29.75),
           ST_MakePoint(113.70, 29.05), ST_MakePoint(113.95, 28.30), ST_MakePoint(114.20, 27.45),
           ST_MakePoint(113.95, 26.55), ST_MakePoint(113.95, 25.85), ST_MakePoint(113.60, 25.30),
           ST_MakePoint(112.95, 24.90), ST_MakePoint(112.20, 25.10), ST_MakePoint(111.45, 24.95),
           ST_MakePoint(111.05, 25.55), ST_MakePoint(110.30, 25.85), ST_MakePoint(109.75, 26.15),
           ST_MakePoint(109.50, 26.75), ST_MakePoint(108.90, 27.20), ST_MakePoint(109.10, 27.90),
           ST_MakePoint(109.40, 28.50), ST_MakePoint(109.20, 29.10), ST_MakePoint(109.55, 29.55)])), 4326) AS geom;

-------------------------------------------------------------------------------
-- 2. County seeds: 100 random points inside, relaxed twice (Lloyd) for even-ish sizes
-------------------------------------------------------------------------------
CREATE TABLE gis.seed AS
SELECT row_number() OVER (ORDER BY c.n) AS id, c.pt AS geom
  FROM (SELECT g.n, ST_SetSRID(ST_MakePoint(108.9 + 5.3 * random() + 0 * g.n, 24.9 + 5.2 * random()), 4326) AS pt
          FROM generate_series(1, 400) AS g(n)) c, gis.province p
 WHERE ST_Contains(p.geom, c.pt)
 ORDER BY c.n
 LIMIT 100;

CREATE FUNCTION gis.voronoi_cells() RETURNS TABLE (id bigint, geom geometry)
LANGUAGE sql AS $$
    SELECT s.id, ST_Intersection(v.geom, p.geom)
      FROM (SELECT (ST_Dump(ST_VoronoiPolygons(ST_Collect(geom), 0.0,
                                               ST_Expand(ST_Envelope(ST_Collect(geom)), 2.0)))).geom FROM gis.seed) v
      JOIN gis.seed s ON ST_Contains(v.geom, s.geom)
     CROSS JOIN gis.province p
$$;

UPDATE gis.seed s SET geom = ST_Centroid(c.geom) FROM gis.voronoi_cells() c WHERE c.id = s.id;
UPDATE gis.seed s SET geom = ST_Centroid(c.geom) FROM gis.voronoi_cells() c WHERE c.id = s.id;

CREATE TABLE gis.cell AS SELECT * FROM gis.voronoi_cells();

-------------------------------------------------------------------------------
-- 3. Natural borders: every border edge (between two junctions) gets a smooth random wiggle,
--    computed once per edge so both neighbouring counties share it exactly; then polygonize.
-------------------------------------------------------------------------------
CREATE TABLE gis.edge AS
SELECT row_number() OVER (ORDER BY ST_XMin(e.geom), ST_YMin(e.geom), ST_XMax(e.geom), ST_YMax(e.geom)) AS id,
       ST_SnapToGrid(e.geom, 1e-7) AS geom
  FROM (SELECT (ST_Dump(ST_LineMerge(ST_UnaryUnion(ST_Collect(ST_Boundary(geom)))))).geom FROM gis.cell) e;

CREATE TABLE gis.wiggly_edge AS
WITH p AS (
    SELECT e.id, e.geom AS edge, ST_StartPoint(e.geom) AS a, ST_EndPoint(e.geom) AS b,
           ST_Length(e.geom) AS len, w.phi1, w.phi2, w.amp
      FROM gis.edge e
     CROSS JOIN LATERAL (SELECT 2 * pi() * random() + 0 * e.id AS phi1, 2 * pi() * random() AS phi2,
                                0.6 + 0.4 * random() AS amp) w
     ORDER BY e.id
), pts AS (
    SELECT p.id, d.path[1] AS i, count(*) OVER (PARTITION BY p.id) AS n, d.geom AS pt,
           p.a, p.b, least(0.08 * p.amp * ST_Distance(p.a, p.b), 0.045) AS amp, p.phi1, p.phi2
      FROM p CROSS JOIN LATERAL ST_DumpPoints(ST_Segmentize(p.edge, 0.025)) d
)
SELECT id,
       ST_MakeLine(ARRAY_AGG(
           CASE WHEN i = 1 OR i = n THEN pt
                ELSE ST_Translate(pt,
                        -(ST_Y(b) - ST_Y(a)) / ST_Distance(a, b) * off,
                         (ST_X(b) - ST_X(a)) / ST_Distance(a, b) * off) END ORDER BY i)) AS geom
  FROM (SELECT pts.*, amp * sin(pi() * (i - 1) / (n - 1))
                     * (sin(2 * pi() * (i - 1) / (n - 1) + phi1) + 0.6 * sin(6 * pi() * (i - 1) / (n - 1) + phi2)) / 1.6 AS off
          FROM pts) q
 GROUP BY id;

CREATE TABLE gis.county_shape AS
SELECT ST_SnapToGrid(d.geom, 1e-6) AS geom
  FROM (SELECT (ST_Dump(ST_Polygonize(geom))).geom FROM gis.wiggly_edge) d;

DO $$
DECLARE
    n int;
    bad int;
    a0 float8;
    a1 float8;
BEGIN
    SELECT count(*), count(*) FILTER (WHERE NOT ST_IsValid(geom)) INTO n, bad FROM gis.county_shape;
    SELECT ST_Area(geom) INTO a0 FROM gis.province;
    SELECT sum(ST_Area(geom)) INTO a1 FROM gis.county_shape;
    IF n <> 100 OR bad > 0 OR abs(a1 / a0 - 1) > 0.02 THEN
        RAISE EXCEPTION 'province generation went wrong: % counties, % invalid, area ratio %', n, bad, a1 / a0;
    END IF;
END $$;

-------------------------------------------------------------------------------
-- 4. Prefectures: 12 seats; every county belongs to the nearest seat
-------------------------------------------------------------------------------
CREATE TABLE gis.prefecture (code text PRIMARY KEY, name text NOT NULL, seat geometry(Point, 4326) NOT NULL);
INSERT INTO gis.prefecture VALUES
 ('4301', '湘州市', ST_SetSRID(ST_MakePoint(112.95, 28.20), 4326)),
 ('4302', '株陵市', ST_SetSRID(ST_MakePoint(113.35, 27.45), 4326)),
 ('4303', '衡岳市', ST_SetSRID(ST_MakePoint(112.60, 26.85), 4326)),
 ('4304', '邵原市', ST_SetSRID(ST_MakePoint(111.45, 27.20), 4326)),
 ('4305', '巴陵市', ST_SetSRID(ST_MakePoint(113.15, 29.25), 4326)),
 ('4306', '武陵市', ST_SetSRID(ST_MakePoint(111.65, 29.05), 4326)),
 ('4307', '澧源市', ST_SetSRID(ST_MakePoint(110.35, 29.15), 4326)),
 ('4308', '资阳市', ST_SetSRID(ST_MakePoint(112.20, 28.30), 4326)),
 ('4309', '郴江市', ST_SetSRID(ST_MakePoint(113.10, 25.70), 4326)),
 ('4310', '潇湘市', ST_SetSRID(ST_MakePoint(111.55, 26.00), 4326)),
 ('4311', '沅州市', ST_SetSRID(ST_MakePoint(109.85, 27.45), 4326)),
 ('4312', '涟源市', ST_SetSRID(ST_MakePoint(112.00, 27.65), 4326));

CREATE TABLE gis.county AS
WITH c AS (
    SELECT s.geom, ST_PointOnSurface(s.geom) AS inner_pt, ST_Centroid(s.geom) AS centroid,
           (SELECT p.code FROM gis.prefecture p ORDER BY ST_Distance(p.seat, ST_Centroid(s.geom)), p.code LIMIT 1) AS prefecture
      FROM gis.county_shape s
), numbered AS (
    SELECT c.*, row_number() OVER (PARTITION BY prefecture ORDER BY round(ST_Y(centroid)::numeric, 3) DESC,
                                                                    round(ST_X(centroid)::numeric, 3)) AS k
      FROM c
)
SELECT prefecture || lpad((20 + k)::text, 2, '0') AS code, prefecture, k, geom, centroid, NULL::text AS name,
       '{}'::text[] AS crop_zones
  FROM numbered
 ORDER BY 1;
CREATE UNIQUE INDEX ON gis.county (code);

-- unique two-character county names, e.g. 桃江县
WITH cand AS (
    SELECT g.n, demo.pick('{安,宁,江,华,平,新,永,临,桃,石,湘,沅,澧,祁,武,道,桂,汝,攸,茶,炎,醴,浏,韶,隆,洞,绥,麻,辰,溆,会,芷,靖,通,凤,泸,保,古,龙,桑,慈,津,汉,南,益,汨,望,宜,双,新,冷,东,蓝,嘉,耒,常,衡,岳,资,涟}'::text[], random() + 0 * g.n)
         || demo.pick('{阳,江,乡,陵,山,源,化,宁,水,溪,州,口,田,东,西,南,北,平,安,丰}'::text[], random()) AS name
      FROM generate_series(1, 800) AS g(n)
), uniq AS (
    SELECT name, min(n) AS first FROM cand
     WHERE name || '市' NOT IN (SELECT p.name FROM gis.prefecture p) GROUP BY name
), ordered AS (
    SELECT name || '县' AS name, row_number() OVER (ORDER BY first) AS k FROM uniq
)
UPDATE gis.county c SET name = o.name
  FROM (SELECT code, row_number() OVER (ORDER BY code) AS k FROM gis.county) x
  JOIN ordered o ON o.k = x.k
 WHERE x.code = c.code;

-- crop zones (by where the county lies), deliberately blind to prefecture borders
UPDATE gis.county SET crop_zones = ARRAY(SELECT z FROM unnest(ARRAY[
       CASE WHEN ST_Distance(centroid, ST_SetSRID(ST_GeomFromText(
                 'LINESTRING(111.25 25.15, 111.85 26.05, 112.55 26.85, 112.95 27.75, 112.90 28.45, 113.00 29.30)'), 4326)) < 0.42
              OR (ST_Y(centroid) > 28.55 AND ST_X(centroid) BETWEEN 111.3 AND 113.3) THEN 'rice' END,
       CASE WHEN ST_Y(centroid) > 28.85 AND ST_X(centroid) BETWEEN 111.4 AND 112.9 THEN 'cotton' END,
       CASE WHEN ST_Distance(centroid, ST_SetSRID(ST_GeomFromText(
                 'LINESTRING(109.45 27.95, 110.55 26.65, 111.75 25.15)'), 4326)) < 0.45 THEN 'citrus' END,
       CASE WHEN ST_X(centroid) < 110.45 AND ST_Y(centroid) > 28.2 THEN 'wheat' END]) z WHERE z IS NOT NULL);
UPDATE gis.county SET crop_zones = '{vegetable}' WHERE crop_zones = '{}';

-------------------------------------------------------------------------------
-- 5. The hand-over: one GeoJSON FeatureCollection (prefectures, counties, the rice belt)
-------------------------------------------------------------------------------
CREATE TABLE gis.handover AS
SELECT jsonb_build_object('type', 'FeatureCollection', 'name', 'province_sales_territories_2026',
                          'features', jsonb_agg(f ORDER BY ord, code)) AS fc
  FROM (
    -- counties: the sales territories proper; parent = prefecture
    SELECT 2 AS ord, c.code, jsonb_build_object('type', 'Feature',
               'properties', jsonb_build_object('code', c.code, 'name', c.name, 'level', 'county',
                                                'prefecture', c.prefecture, 'crop_zones', to_jsonb(c.crop_zones),
                                                'priority', 10),
               'geometry', ST_AsGeoJSON(c.geom, 6)::jsonb) AS f
      FROM gis.county c
    UNION ALL
    -- prefectures: union of their counties, LOWER priority (a county always wins a point)
    SELECT 1, p.code, jsonb_build_object('type', 'Feature',
               'properties', jsonb_build_object('code', p.code, 'name', p.name, 'level', 'prefecture', 'priority', 0),
               'geometry', ST_AsGeoJSON(ST_Multi(ST_Union(c.geom)), 6)::jsonb)
      FROM gis.prefecture p JOIN gis.county c ON c.prefecture = p.code
     GROUP BY p.code, p.name
    UNION ALL
    -- the rice belt: a crop zone that crosses prefecture borders, lowest priority (an overlay, never the winner)
    SELECT 3, 'BELT-RICE', jsonb_build_object('type', 'Feature',
               'properties', jsonb_build_object('code', 'BELT-RICE', 'name', '湘中水稻带 rice belt', 'level', 'crop_belt',
                                                'crop_zones', '["rice"]'::jsonb, 'priority', -10),
               'geometry', ST_AsGeoJSON(ST_Multi(ST_Union(c.geom)), 6)::jsonb)
      FROM gis.county c WHERE 'rice' = ANY (c.crop_zones)
  ) s;

-------------------------------------------------------------------------------
-- 6. Loading it (what the CRM's DBA does with the file)
-------------------------------------------------------------------------------
SELECT allocation.import_territories(fc, code_property => 'code', name_property => 'name',
                                     parent_property => 'prefecture') AS territories_imported
  FROM gis.handover;

-- import_territories() keeps the feature properties; crop zones and priority are set from them
UPDATE allocation.territory
   SET crop_zones = ARRAY(SELECT jsonb_array_elements_text(coalesce(properties->'crop_zones', '[]'))),
       priority = coalesce((properties->>'priority')::int, 0);

SELECT properties->>'level' AS level, count(*) AS territories,
       round(sum(ST_Area(geom::geography)) / 1e6) AS area_km2,
       sum(ST_NPoints(geom)) AS vertices
  FROM allocation.territory GROUP BY 1 ORDER BY min(priority) DESC;

SELECT z AS crop_zone, count(*) AS counties, count(DISTINCT t.parent_id) AS prefectures_crossed
  FROM allocation.territory t, unnest(t.crop_zones) z
 WHERE t.properties->>'level' = 'county'
 GROUP BY z ORDER BY 2 DESC;
