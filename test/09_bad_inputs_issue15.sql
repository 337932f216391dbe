-- pgTAP: bad calls of the functions issue 15 added (realignment, map, coverage gaps,
-- imports, location datum): NULL arguments, unknown plans, tables that are not managed.
-- Each has its SQLSTATE, and nothing stored changes.
\set ECHO none
\set QUIET 1
\pset format unaligned
\pset tuples_only true
\pset pager off
\set ON_ERROR_STOP 1

BEGIN;
CREATE EXTENSION allocation;
SET LOCAL client_min_messages = warning;

SELECT plan(33);

CREATE TABLE tap09_notmanaged (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
CREATE TABLE tap09_customer (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('tap09_customer', 'id', 'loc', 'owner');
CREATE TEMP TABLE tap09_before AS
SELECT (SELECT count(*) FROM allocation.realign_plan) AS plans, (SELECT count(*) FROM allocation.event) AS events,
       (SELECT count(*) FROM allocation.territory) AS territories,
       (SELECT location_datum FROM allocation.managed_table WHERE tbl = 'tap09_customer'::regclass) AS datum;

-- location datum
SELECT throws_ok($$SELECT allocation.set_location_datum(NULL, 'gcj02')$$, '22004', NULL, 'set_location_datum: NULL table');
SELECT throws_ok($$SELECT allocation.set_location_datum('tap09_customer', NULL)$$, '22004', NULL, 'set_location_datum: NULL datum');
SELECT throws_ok($$SELECT allocation.set_location_datum('tap09_notmanaged', 'gcj02')$$, 'LA012', NULL, 'set_location_datum: a table that is not managed');
SELECT throws_ok($$SELECT allocation.set_location_datum('tap09_customer', 'GCJ02')$$, 'LA017', NULL, 'set_location_datum: unknown datum');
SELECT throws_ok($$SELECT allocation.set_location_datum(0::regclass, 'gcj02')$$, '42P01', NULL, 'set_location_datum: a regclass that names no table');
SELECT throws_ok($$SELECT * FROM allocation.datum_convert(116.4, 39.9, 'gcj02', 'wgs-84')$$, 'LA017', NULL, 'datum_convert: unknown datum');
SELECT throws_ok($$SELECT * FROM allocation.datum_convert(39.9, 116.4, 'gcj02', 'wgs84')$$, '22003', NULL, 'datum_convert: latitude out of range (lon/lat swapped)');
SELECT is((SELECT lon FROM allocation.datum_convert(NULL, 39.9, 'gcj02', 'wgs84')), NULL, 'datum_convert: NULL in, NULL out (STRICT)');

-- realignment
SELECT throws_ok($$SELECT allocation.realign_create(NULL)$$, '22004', NULL, 'realign_create: NULL name');
SELECT throws_ok($$SELECT allocation.realign_stage_territory(NULL, 'x')$$, '22004', NULL, 'realign_stage_territory: NULL plan');
SELECT throws_ok($$SELECT allocation.realign_stage_territory(999999, 'x')$$, 'LA0R1', NULL, 'realign_stage_territory: unknown plan');
SELECT throws_ok($$SELECT allocation.realign_stage_rule(999999, NULL, '{}')$$, 'LA0R1', NULL, 'realign_stage_rule: unknown plan');
SELECT throws_ok($$SELECT allocation.realign_stage_rep(999999, 1)$$, 'LA0R1', NULL, 'realign_stage_rep: unknown plan');
SELECT throws_ok($$SELECT allocation.realign_cancel(999999)$$, 'LA0R1', NULL, 'realign_cancel: unknown plan');
SELECT throws_ok($$SELECT * FROM allocation.realign_preview(NULL)$$, '22004', NULL, 'realign_preview: NULL plan');
SELECT throws_ok($$SELECT * FROM allocation.realign_preview(999999)$$, 'LA0R1', NULL, 'realign_preview: unknown plan');
SELECT throws_ok($$SELECT * FROM allocation.realign_preview_reps(999999)$$, 'LA0R1', NULL, 'realign_preview_reps: unknown plan');
SELECT throws_ok($$SELECT * FROM allocation.realign_apply_step(999999, 'x')$$, 'LA0R1', NULL, 'realign_apply_step: unknown plan');
SELECT throws_ok($$SELECT allocation.realign_geojson(999999)$$, 'LA0R1', NULL, 'realign_geojson: unknown plan');
SELECT throws_ok($$SELECT allocation.realign_geojson(NULL)$$, '22004', NULL, 'realign_geojson: NULL plan');
SELECT throws_ok($$CALL allocation.realign_apply(999999, 'x')$$, 'LA0R6', NULL, 'realign_apply: refused inside a transaction block (it commits between batches)');
SELECT is(allocation.realign_in_block(), true, 'realign_in_block: this test runs inside a transaction block');

-- map
SELECT throws_ok($$SELECT allocation.territory_map_html(NULL)$$, '22004', NULL, 'territory_map_html: NULL title');
SELECT throws_ok($$SELECT allocation.territory_map_html('t', 999999)$$, 'LA0R1', NULL, 'territory_map_html: unknown plan');
SELECT throws_ok($$SELECT allocation.territory_map_html('t', max_customers => -1)$$, 'LA0H0', NULL, 'territory_map_html: max_customers out of range');

-- coverage gaps and imports
SELECT throws_ok($$SELECT * FROM allocation.coverage_gaps('no such code')$$, 'LA0I2', NULL, 'coverage_gaps: unknown parent');
SELECT throws_ok($$SELECT allocation.coverage_gaps_geojson('no such code')$$, 'LA0I2', NULL, 'coverage_gaps_geojson: unknown parent');
SELECT throws_ok($$SELECT allocation.import_territories(NULL::text)$$, 'LA001', NULL, 'import_territories(text): NULL');
SELECT throws_ok($$SELECT allocation.import_territories(NULL::jsonb)$$, 'LA001', NULL, 'import_territories(jsonb): NULL');
SELECT throws_ok($$SELECT allocation.import_territories('{"type": "FeatureCollection", "features": []}'::jsonb, on_invalid => 'ignore')$$,
                 'LA0I0', NULL, 'import_territories: bad on_invalid');
SELECT throws_ok($$SELECT * FROM allocation.geojson_features('not json')$$, 'LA001', NULL, 'geojson_features: not JSON');

-- nothing stored changed
SELECT is((SELECT count(*) FROM allocation.realign_plan), (SELECT plans FROM tap09_before), 'no plan was made');
SELECT is((SELECT row((SELECT count(*) FROM allocation.event), (SELECT count(*) FROM allocation.territory),
                      (SELECT location_datum FROM allocation.managed_table WHERE tbl = 'tap09_customer'::regclass))::text),
          (SELECT row(events, territories, datum)::text FROM tap09_before),
          'no event, no territory, the datum unchanged');

SELECT * FROM finish();
ROLLBACK;
