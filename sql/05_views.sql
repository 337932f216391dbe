--
-- 05_views: the BI views (current_owner, rep_portfolio, pool,
-- pending_suggestion) and territory_geojson()
--
\set SHOW_CONTEXT never
CREATE EXTENSION allocation;

-- the columns of each view are part of the contract
SELECT c.relname AS view, string_agg(a.attname, ', ' ORDER BY a.attnum) AS columns
  FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0
 WHERE c.relnamespace = 'allocation'::regnamespace AND c.relkind = 'v'
 GROUP BY c.relname ORDER BY c.relname;

-------------------------------------------------------------------------------
-- an organisation: two teams, four reps (one at capacity 1, one inactive)
-------------------------------------------------------------------------------
INSERT INTO allocation.team (code, name) VALUES ('ka', 'Key accounts'), ('local', 'Local sales');
INSERT INTO allocation.rep (code, name, team_id, capacity, crops) VALUES
    ('ka1', 'Key Account One', 1, NULL, '{}'),
    ('lo1', 'Local One', 2, 1, '{rice}'),
    ('lo2', 'Local Two', 2, 4, '{wheat}'),
    ('lo3', 'Local Three', 2, 10, '{}');
UPDATE allocation.rep SET active = false WHERE code = 'lo3';
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "P", "name": "Province"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[20,0],[20,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "A", "name": "County A", "parent": "P"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "B", "name": "County B", "parent": "P"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "Z", "name": "Unsold zone"},
   "geometry": {"type": "Polygon", "coordinates": [[[40,0],[41,0],[41,1],[40,1],[40,0]]]}}
]}'::jsonb, parent_property => 'parent');
-- the counties outrank the province they lie in
UPDATE allocation.territory SET priority = 1 WHERE code IN ('A', 'B');
UPDATE allocation.territory SET owner_rep_id = 2, crop_zones = '{rice}' WHERE code = 'A';
UPDATE allocation.territory SET owner_rep_id = 3, crop_zones = '{wheat,corn}', exclusive = true WHERE code = 'B';
UPDATE allocation.territory SET owner_team_id = 2 WHERE code = 'P';

CREATE TABLE v_customer (
    id     int PRIMARY KEY,
    name   text,
    tier   text,
    crop   text,
    btype  text,
    loc    geometry(Point, 4326),
    owner  bigint
);
SELECT allocation.manage('v_customer', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "business_type": "btype", "name": "name"}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy, tiers)
    VALUES ('key distributors', 100, 'team', 1, 'least_loaded', '{key_distributor}');
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_rep_id, crops)
    VALUES ('cotton review', 60, 'suggest', 'rep', 1, '{cotton}');
INSERT INTO allocation.rule (name, priority, mode, target_kind, target_rep_id, crops)
    VALUES ('corn review', 55, 'suggest', 'rep', 3, '{corn}');
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
    VALUES ('territory owner', 10, 'team', 2, 'territory_owner');

INSERT INTO v_customer (id, name, tier, crop, btype, loc) VALUES
    (1, 'Dealer North',   'key_distributor', 'rice',   'dealer',   'SRID=4326;POINT(5 5)'),
    (2, 'Shop A1',        'retailer',        'rice',   'shop',     'SRID=4326;POINT(2 2)'),
    (3, 'Shop A2',        'retailer',        'rice',   'shop',     'SRID=4326;POINT(3 3)'),
    (4, 'Farm B1',        'grower',          'wheat',  'farm',     'SRID=4326;POINT(15 5)'),
    (5, 'Farm B2',        'grower',          NULL,     'farm',     'SRID=4326;POINT(16 5)'),
    (6, 'Cotton Co-op',   'grower',          'cotton', 'coop',     'SRID=4326;POINT(8 2)'),
    (7, 'Corn Farm',      'grower',          'corn',   'farm',     'SRID=4326;POINT(14 4)'),
    (8, 'Far Away Shop',  'retailer',        'rice',   'shop',     'SRID=4326;POINT(40.5 0.5)'),
    (9, 'No Address',     'retailer',        NULL,     NULL,       NULL),
    (10, 'Key Dealer 2',  'key_distributor', 'wheat',  'dealer',   'SRID=4326;POINT(18 8)');

-------------------------------------------------------------------------------
-- current_owner: one row per customer, owner NULL = pool
-------------------------------------------------------------------------------
SELECT table_name, key, rep_code, rep_name, team_name, territory_code, territory_name,
       rule_name, source, pinned, reason, tier, crop, business_type
  FROM allocation.current_owner ORDER BY key::int;
SELECT count(*) AS rows, count(since) AS with_since, count(DISTINCT tbl) AS tables FROM allocation.current_owner;
-- it agrees with the customer table itself
SELECT c.id, c.owner, o.rep_id, c.owner IS NOT DISTINCT FROM o.rep_id AS agrees
  FROM v_customer c JOIN allocation.current_owner o ON o.key = c.id::text ORDER BY c.id;

-------------------------------------------------------------------------------
-- rep_portfolio: holdings against capacity, by tier and by crop
-------------------------------------------------------------------------------
SELECT rep_code, team_name, active, held, capacity, free, utilization_pct, by_tier, by_crop
  FROM allocation.rep_portfolio ORDER BY rep_code;

-------------------------------------------------------------------------------
-- pool: customers nobody holds, with the reason
-------------------------------------------------------------------------------
SELECT table_name, key, territory_code, reason, tier, crop, business_type
  FROM allocation.pool ORDER BY key::int;

-------------------------------------------------------------------------------
-- pending_suggestion: the manager's queue
-------------------------------------------------------------------------------
SELECT table_name, key, rep_code, rep_name, rule_name, territory_id IS NOT NULL AS has_territory, reason
  FROM allocation.pending_suggestion ORDER BY key::int;
SELECT count(created_at) AS with_created_at FROM allocation.pending_suggestion;

-- deciding empties the queue and moves the customers
SELECT allocation.accept_suggestion((SELECT id FROM allocation.pending_suggestion WHERE key = '6'));
SELECT allocation.reject_suggestion((SELECT id FROM allocation.pending_suggestion WHERE key = '7'), 'corn belongs to the B owner anyway');
SELECT count(*) AS pending FROM allocation.pending_suggestion;
SELECT key, rep_code, rule_name, source FROM allocation.current_owner WHERE key IN ('6', '7') ORDER BY key::int;
SELECT key, reason FROM allocation.pool ORDER BY key::int;

-- manual decisions (refused ones change nothing), a new tier, a move and a
-- delete are reflected everywhere
SELECT allocation.assign('v_customer', '9', 4, 'walk-in customer, handled by Local Three');
\echo sqlstate :SQLSTATE
SELECT allocation.assign('v_customer', '9', 2, 'walk-in customer, handled by Local One');
\echo sqlstate :SQLSTATE
SELECT allocation.assign('v_customer', '9', 1, 'walk-in customer, handled by Key Account One');
-- Farm B1 becomes a distributor: same owner, but the portfolio counts the new tier
UPDATE v_customer SET tier = 'distributor' WHERE id = 4;
-- Far Away Shop moves from zone Z into county A (owner at capacity): still in
-- the pool, now under A and with A's reason
UPDATE v_customer SET loc = 'SRID=4326;POINT(4 4)' WHERE id = 8;
DELETE FROM v_customer WHERE id = 3;
SELECT key, rep_code, territory_code, rule_name, source, pinned, reason FROM allocation.current_owner ORDER BY key::int;
SELECT rep_code, held, capacity, free, utilization_pct, by_tier, by_crop FROM allocation.rep_portfolio ORDER BY rep_code;
SELECT key, territory_code, reason FROM allocation.pool ORDER BY key::int;
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- territory_geojson(): a FeatureCollection, one feature per territory with
-- its owner, holdings and pool counts
-------------------------------------------------------------------------------
SELECT g ->> 'type' AS type, jsonb_array_length(g -> 'features') AS features,
       (SELECT count(*) FROM allocation.territory) AS territories
  FROM allocation.territory_geojson() AS g;
SELECT f ->> 'type' AS type, f -> 'geometry' ->> 'type' AS geometry,
       jsonb_array_length(f -> 'geometry' -> 'coordinates') AS polygons,
       f -> 'properties' AS properties
  FROM jsonb_array_elements(allocation.territory_geojson() -> 'features') WITH ORDINALITY AS x(f, ord)
 ORDER BY ord;
-- geometry is real GeoJSON: it reads back as the stored polygon
SELECT t.code, ST_Equals(ST_SetSRID(ST_GeomFromGeoJSON(f -> 'geometry'), 4326), t.geom) AS same_geometry
  FROM jsonb_array_elements(allocation.territory_geojson() -> 'features') AS x(f)
  JOIN allocation.territory t ON t.id = (f -> 'properties' ->> 'id')::bigint
 ORDER BY t.code;
-- keys of the properties object
SELECT DISTINCT jsonb_object_keys(f -> 'properties') AS property
  FROM jsonb_array_elements(allocation.territory_geojson() -> 'features') AS x(f)
 ORDER BY 1;

-- no territories: an empty FeatureCollection, not NULL
BEGIN;
DELETE FROM allocation.rule;
DELETE FROM allocation.territory WHERE parent_id IS NOT NULL;
DELETE FROM allocation.territory;
SELECT allocation.territory_geojson();
ROLLBACK;

DROP TABLE v_customer;
DROP EXTENSION allocation CASCADE;
