--
-- 37_location_datum: customer locations captured on Chinese map SDKs (GCJ-02,
-- BD-09) are converted to WGS 84 on the write path before the territory lookup;
-- the iterative inverse is accurate to far below 1 cm over China; outside the
-- mainland box GCJ-02 is WGS 84; explain() shows both positions.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

-- published pairs (wandergis/coordtransform, hutool): WGS 84 -> GCJ-02 -> BD-09 at Tiananmen
SELECT round(lon::numeric, 9) AS lon, round(lat::numeric, 9) AS lat
  FROM allocation.datum_convert(116.404, 39.915, 'wgs84', 'gcj02');       -- 116.41024449916938, 39.91640428150164
SELECT round(lon::numeric, 9) AS lon, round(lat::numeric, 9) AS lat
  FROM allocation.datum_convert(116.404, 39.915, 'gcj02', 'bd09');        -- 116.41036949371029, 39.92133699351021
-- the inverses give the WGS 84 / GCJ-02 point back
SELECT round(lon::numeric, 9) AS lon, round(lat::numeric, 9) AS lat
  FROM allocation.datum_convert(116.41024449916938, 39.91640428150164, 'gcj02', 'wgs84');
SELECT round(lon::numeric, 9) AS lon, round(lat::numeric, 9) AS lat
  FROM allocation.datum_convert(116.41036949371029, 39.92133699351021, 'bd09', 'gcj02');
-- same datum: unchanged
SELECT lon, lat FROM allocation.datum_convert(116.404, 39.915, 'bd09', 'bd09');

-- accuracy of the iterative inverses over China (0.25-degree grid, 73-135 E, 18-54 N):
-- forward then inverse, and inverse then forward, in metres
CREATE FUNCTION r33_err(lon1 float8, lat1 float8, lon2 float8, lat2 float8) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT sqrt(((lon2 - lon1) * 111320 * cos(radians(lat1)))^2 + ((lat2 - lat1) * 110574)^2)
$$;
WITH g AS (SELECT lon, lat FROM generate_series(73.0, 135.0, 0.25) lon, generate_series(18.0, 54.0, 0.25) lat),
trips AS (
    SELECT d.datum, g.lon, g.lat, f.lon AS flon, f.lat AS flat, b.lon AS blon, b.lat AS blat,
           i.lon AS ilon, i.lat AS ilat, j.lon AS jlon, j.lat AS jlat
      FROM g CROSS JOIN (VALUES ('gcj02'), ('bd09')) d(datum),
           allocation.datum_convert(g.lon, g.lat, 'wgs84', d.datum) f,
           allocation.datum_convert(f.lon, f.lat, d.datum, 'wgs84') b,
           allocation.datum_convert(g.lon, g.lat, d.datum, 'wgs84') i,
           allocation.datum_convert(i.lon, i.lat, 'wgs84', d.datum) j)
SELECT datum, count(*) AS points,
       max(r33_err(lon, lat, blon, blat)) < 1e-6 AS forward_inverse_below_1_micrometre,
       max(r33_err(lon, lat, jlon, jlat)) < 1e-6 AS inverse_forward_below_1_micrometre,
       min(r33_err(lon, lat, flon, flat)) > 10 AND max(r33_err(lon, lat, flon, flat)) < 1500 AS offset_10_to_1500_m
  FROM trips GROUP BY datum ORDER BY datum;

-- outside the mainland box GCJ-02 is WGS 84 (Tokyo, Singapore, Irkutsk); BD-09 keeps its own offset
SELECT p.place, round(c.lon::numeric, 9) = round(p.lon::numeric, 9) AND round(c.lat::numeric, 9) = round(p.lat::numeric, 9) AS unchanged
  FROM (VALUES ('Tokyo', 139.69, 35.69), ('Singapore', 103.85, 0.29), ('Irkutsk', 104.3, 56.0)) p(place, lon, lat),
       allocation.datum_convert(p.lon, p.lat, 'gcj02', 'wgs84') c ORDER BY p.place;
SELECT round(lon::numeric, 4) <> 139.69 AS bd09_offset_applies_outside
  FROM allocation.datum_convert(139.69, 35.69, 'bd09', 'wgs84');

-- bad inputs
SELECT * FROM allocation.datum_convert(116.4, 39.9, 'GCJ02', 'wgs84');
\echo :SQLSTATE
SELECT * FROM allocation.datum_convert(116.4, 39.9, 'wgs84', 'mars');
\echo :SQLSTATE
SELECT * FROM allocation.datum_convert(39.9, 116.4, 'gcj02', 'wgs84');   -- latitude first
\echo :SQLSTATE
SELECT * FROM allocation.datum_convert('NaN', 39.9, 'gcj02', 'wgs84');
\echo :SQLSTATE
SELECT (allocation.datum_convert(NULL, 39.9, 'gcj02', 'wgs84')).lon IS NULL AS strict_null;

-- a border: county West (lon < 116.405) and county East, each with its rep
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, active) VALUES
    (1, 'west', 'Owner of West', 1, 100, true), (2, 'east', 'Owner of East', 1, 100, true);
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "W", "name": "West county"},
   "geometry": {"type": "Polygon", "coordinates": [[[116.30,39.80],[116.405,39.80],[116.405,40.00],[116.30,40.00],[116.30,39.80]]]}},
  {"type": "Feature", "properties": {"code": "E", "name": "East county"},
   "geometry": {"type": "Polygon", "coordinates": [[[116.405,39.80],[116.50,39.80],[116.50,40.00],[116.405,40.00],[116.405,39.80]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'W';
UPDATE allocation.territory SET owner_rep_id = 2 WHERE code = 'E';
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
     VALUES ('terr', 10, 'team', 1, 'territory_owner');

CREATE TABLE r33_customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
CREATE TABLE r33_noloc (id integer PRIMARY KEY, owner bigint);
SELECT allocation.manage('r33_customer', 'id', 'loc', 'owner');
SELECT allocation.manage('r33_noloc', 'id', NULL, 'owner');
SELECT location_datum FROM allocation.managed_table WHERE tbl = 'r33_customer'::regclass;

-- the dealer stands at WGS 84 (116.404, 39.915): West.  Its app records the GCJ-02 point,
-- 530 m further east: read as WGS 84, that is East -- the wrong county
INSERT INTO r33_customer VALUES (1, 'dealer, GCJ-02 read as WGS 84',
    ST_SetSRID(ST_MakePoint(116.41024449916938, 39.91640428150164), 4326), NULL);
SELECT id, (SELECT code FROM allocation.rep WHERE id = owner) AS owner FROM r33_customer ORDER BY id;

-- bad inputs to set_location_datum: each refused, nothing changed
CREATE VIEW r33_config AS
    SELECT (SELECT count(*) FROM allocation.event) AS events,
           (SELECT string_agg(table_name || '=' || location_datum, ', ' ORDER BY id) FROM allocation.managed_table) AS datums;
CREATE TABLE r33_before AS SELECT * FROM r33_config;
SELECT allocation.set_location_datum(NULL, 'gcj02');
\echo :SQLSTATE
SELECT allocation.set_location_datum('r33_customer', 'mars');
\echo :SQLSTATE
SELECT allocation.set_location_datum('r33_customer', 'GCJ02');
\echo :SQLSTATE
SELECT allocation.set_location_datum('r33_customer', NULL);
\echo :SQLSTATE
SELECT allocation.set_location_datum('r33_before', 'gcj02');
\echo :SQLSTATE
SELECT allocation.set_location_datum('r33_noloc', 'gcj02');
\echo :SQLSTATE
SELECT (SELECT row(b.*)::text FROM r33_before b) = (SELECT row(c.*)::text FROM r33_config c) AS nothing_changed;
DROP TABLE r33_before;

-- declared GCJ-02: the same point lands in West; one config_change event says so
SELECT allocation.set_location_datum('r33_customer', 'gcj02');
SELECT kind, reason, detail->'before' AS before, detail->'after' AS after, detail->'stored_locations_not_reevaluated' AS not_reevaluated
  FROM allocation.event WHERE kind = 'config_change' ORDER BY id DESC LIMIT 1;
SELECT allocation.set_location_datum('r33_customer', 'gcj02');   -- the same again: no event
SELECT count(*) AS datum_events FROM allocation.event WHERE reason = 'location datum set';
INSERT INTO r33_customer VALUES (2, 'dealer, GCJ-02 declared',
    ST_SetSRID(ST_MakePoint(116.41024449916938, 39.91640428150164), 4326), NULL);
-- stored customers keep their owner (1 stays with East until re-evaluated); the new one is West's
SELECT id, (SELECT code FROM allocation.rep WHERE id = owner) AS owner FROM r33_customer ORDER BY id;
-- what is stored is what the app sent (the engine never rewrites the location column)
SELECT id, round(ST_X(loc)::numeric, 9) AS lon, round(ST_Y(loc)::numeric, 9) AS lat FROM r33_customer ORDER BY id;
-- rewriting the same value changes nothing (no location change, no re-evaluation) ...
UPDATE r33_customer SET loc = loc WHERE id = 1;
SELECT id, (SELECT code FROM allocation.rep WHERE id = owner) AS owner FROM r33_customer WHERE id = 1;
-- ... a new fix from the app (1 m further east) re-runs the rules (re-evaluation unless pinned): 1 moves to West
UPDATE r33_customer SET loc = ST_SetSRID(ST_MakePoint(116.41025449916938, 39.91640428150164), 4326) WHERE id = 1;
SELECT id, (SELECT code FROM allocation.rep WHERE id = owner) AS owner FROM r33_customer ORDER BY id;

-- explain(tbl, key) and explain(tbl, row): both positions
SELECT round((e#>>'{customer,location,lon}')::numeric, 6) AS wgs84_lon, round((e#>>'{customer,location,lat}')::numeric, 6) AS wgs84_lat,
       e#>>'{customer,location,datum}' AS datum, e#>>'{customer,location,srid}' AS srid,
       round((e#>>'{customer,location,as_stored,lon}')::numeric, 6) AS stored_lon,
       round((e#>>'{customer,location,as_stored,lat}')::numeric, 6) AS stored_lat,
       e#>>'{customer,location,as_stored,datum}' AS stored_datum,
       e#>>'{result,rep}' AS rep, (SELECT string_agg(t->>'code', ',') FROM jsonb_array_elements(e->'territories') t) AS territories
  FROM (SELECT allocation.explain('r33_customer', '2') AS e
        UNION ALL
        SELECT allocation.explain('r33_customer', '{"id": 9, "loc": "SRID=4326;POINT(116.41024449916938 39.91640428150164)"}'::jsonb)) x;

-- Baidu: the BD-09 coordinate of the same dealer
SELECT allocation.set_location_datum('r33_customer', 'bd09');
INSERT INTO r33_customer
SELECT 3, 'dealer, BD-09 declared', ST_SetSRID(ST_MakePoint(b.lon, b.lat), 4326), NULL
  FROM allocation.datum_convert(116.404, 39.915, 'wgs84', 'bd09') b;
SELECT e#>>'{customer,location,as_stored,datum}' AS stored_datum, round((e#>>'{customer,location,lon}')::numeric, 6) AS wgs84_lon,
       e#>>'{result,rep}' AS rep
  FROM allocation.explain('r33_customer', '3') e;
-- back to WGS 84: explain shows the one position, as before
SELECT allocation.set_location_datum('r33_customer', 'wgs84');
SELECT allocation.explain('r33_customer', '1')#>'{customer,location}' ? 'as_stored' AS has_as_stored;

-- outside the box (a customer in Tokyo) a GCJ-02 location is used as it is
SELECT allocation.set_location_datum('r33_customer', 'gcj02');
SELECT e#>'{customer,location,lon}' = e#>'{customer,location,as_stored,lon}' AS same_lon,
       e#>'{customer,location,lat}' = e#>'{customer,location,as_stored,lat}' AS same_lat
  FROM allocation.explain('r33_customer', '{"id": 10, "loc": "SRID=4326;POINT(139.69 35.69)"}'::jsonb) e;

-- re-managing starts again from WGS 84 (the new mapping may name another column)
SELECT allocation.unmanage('r33_customer');
SELECT allocation.manage('r33_customer', 'id', 'loc', 'owner');
SELECT location_datum FROM allocation.managed_table WHERE tbl = 'r33_customer'::regclass;
SELECT * FROM allocation.check_consistency();

DROP VIEW r33_config;
DROP TABLE r33_customer, r33_noloc;
DROP FUNCTION r33_err(float8, float8, float8, float8);
DROP EXTENSION allocation CASCADE;
