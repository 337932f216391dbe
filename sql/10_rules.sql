--
-- 10_rules: rule validation (the SQL condition is checked when the rule is
-- saved) and rule matching (structured filters, territory scope, evaluation
-- order, conditions, cache invalidation).
--
CREATE EXTENSION allocation;
\pset null '(null)'
-- CONTEXT lines name line numbers inside the extension's functions: not part of the contract
\set SHOW_CONTEXT never

-- org: one rep per rule, so the owner shows which rule decided
INSERT INTO allocation.team (code, name) VALUES ('t10', 'Rules team');
INSERT INTO allocation.rep (code, name, team_id) VALUES
    ('tier_rep',  'Tier rule rep', 1),           -- 1
    ('btype_rep', 'Business type rule rep', 1),  -- 2
    ('crop_rep',  'Crop rule rep', 1),           -- 3
    ('tags_rep',  'Tags rule rep', 1),           -- 4
    ('terr_rep',  'Territory rule rep', 1),      -- 5
    ('cond_rep',  'Condition rule rep', 1),      -- 6
    ('spare_rep', 'Spare rep', 1);               -- 7

-- territories: P > C1 > G, P > C2, and X (no parent) overlapping G with a higher priority
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "P",  "name": "Province"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[30,0],[30,30],[0,30],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "C1", "name": "County 1", "parent": "P"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "G",  "name": "Township G", "parent": "C1"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[5,0],[5,5],[0,5],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "C2", "name": "County 2", "parent": "P"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "X",  "name": "Crop zone X"},
   "geometry": {"type": "Polygon", "coordinates": [[[3,3],[8,3],[8,8],[3,8],[3,3]]]}}
]}'::jsonb, 'code', 'name', 'parent');
UPDATE allocation.territory SET priority = 10 WHERE code = 'X';
SELECT t.id, t.code, p.code AS parent, t.priority FROM allocation.territory t
  LEFT JOIN allocation.territory p ON p.id = t.parent_id ORDER BY t.id;

CREATE TABLE r10_customer (
    id      integer PRIMARY KEY,
    name    text,
    tier    text,
    crop    text,
    btype   text,
    tags    text[],
    volume  numeric,
    region  text,
    loc     geometry(Point, 4326),
    owner   bigint
);
CREATE TABLE r10_other (
    id      integer PRIMARY KEY,
    volume  numeric,
    owner   bigint
);
SELECT allocation.manage('r10_customer', 'id', 'loc', 'owner',
                         '{"tier": "tier", "crop": "crop", "business_type": "btype", "tags": "tags"}');

-- what a customer got, and through which rule
CREATE VIEW r10_result AS
SELECT c.id, c.name, r.code AS owner, a.source, ru.name AS rule, a.reason
  FROM r10_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  LEFT JOIN allocation.assignment a ON a.key = c.id::text AND a.valid_to IS NULL
       AND a.managed_id = (SELECT id FROM allocation.managed_table WHERE tbl = 'r10_customer'::regclass)
  LEFT JOIN allocation.rule ru ON ru.id = a.rule_id;

-------------------------------------------------------------------------------
-- Structured filters, one rule per filter (all at priority 0: id order)
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, target_kind, target_rep_id, tiers) VALUES ('by_tier', 'rep', 1, '{key_distributor,county_dealer}');
INSERT INTO allocation.rule (name, target_kind, target_rep_id, business_types) VALUES ('by_btype', 'rep', 2, '{cooperative}');
INSERT INTO allocation.rule (name, target_kind, target_rep_id, crops) VALUES ('by_crop', 'rep', 3, '{rice}');
INSERT INTO allocation.rule (name, target_kind, target_rep_id, tags) VALUES ('by_tags', 'rep', 4, '{vip,export}');
INSERT INTO allocation.rule (name, target_kind, target_rep_id, territory_id)
     VALUES ('by_terr', 'rep', 5, (SELECT id FROM allocation.territory WHERE code = 'C1'));
INSERT INTO allocation.rule (name, target_kind, target_rep_id, tbl, condition)
     VALUES ('by_cond', 'rep', 6, 'r10_customer', 'volume > 1000');
SELECT id, name, priority, enabled, tbl, tiers, business_types, crops, tags, territory_id, condition,
       condition_bin IS NOT NULL AS compiled
  FROM allocation.rule ORDER BY id;

INSERT INTO r10_customer (id, name, tier, crop, btype, tags, volume, loc) VALUES
    (1,  'tier match',            'county_dealer', NULL,    NULL,          NULL,               NULL, NULL),
    (2,  'tier miss',             'retailer',      NULL,    NULL,          NULL,               NULL, NULL),
    (3,  'btype match',           NULL,            NULL,    'cooperative', NULL,               NULL, NULL),
    (4,  'crop match',            NULL,            'rice',  NULL,          NULL,               NULL, NULL),
    (5,  'crop miss',             NULL,            'wheat', NULL,          NULL,               NULL, NULL),
    (6,  'tags overlap',          NULL,            NULL,    NULL,          '{local,export}',   NULL, NULL),
    (7,  'tags disjoint',         NULL,            NULL,    NULL,          '{local,organic}',  NULL, NULL),
    (8,  'tags empty',            NULL,            NULL,    NULL,          '{}',               NULL, NULL),
    (9,  'in C1 itself',          NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(7 1)'),
    (10, 'in G, child of C1',     NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(1 1)'),
    (11, 'in X (winner) and G',   NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(4 4)'),
    (12, 'in X and C1 only',      NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(7 7)'),
    (13, 'in C2, sibling of C1',  NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(15 5)'),
    (14, 'in P only',             NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(25 25)'),
    (15, 'outside everything',    NULL,            NULL,    NULL,          NULL,               NULL, 'SRID=4326;POINT(50 50)'),
    (16, 'condition true',        NULL,            NULL,    NULL,          NULL,               5000, NULL),
    (17, 'condition false',       NULL,            NULL,    NULL,          NULL,               10,   NULL),
    (18, 'condition null',        NULL,            NULL,    NULL,          NULL,               NULL, NULL),
    (19, 'tier and crop: tier first (lower id)', 'key_distributor', 'rice', NULL, NULL,  NULL, NULL);
SELECT * FROM r10_result ORDER BY id;

-------------------------------------------------------------------------------
-- Several filters on one rule: all must match
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tiers, crops, territory_id)
     VALUES ('combined', 50, 'rep', 7, '{retailer}', '{corn}', (SELECT id FROM allocation.territory WHERE code = 'P'));
INSERT INTO r10_customer (id, name, tier, crop, loc) VALUES
    (20, 'combined: all match',        'retailer', 'corn',  'SRID=4326;POINT(15 5)'),
    (21, 'combined: crop differs',     'retailer', 'wheat', 'SRID=4326;POINT(15 5)'),
    (22, 'combined: outside P',        'retailer', 'corn',  'SRID=4326;POINT(50 50)'),
    (23, 'combined: no location',      'retailer', 'corn',  NULL);
SELECT * FROM r10_result WHERE id >= 20 ORDER BY id;

-------------------------------------------------------------------------------
-- Evaluation order: priority DESC, then id ASC
-------------------------------------------------------------------------------
-- a later rule (higher id) with a higher priority wins over by_tier
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tiers) VALUES ('tier_urgent', 100, 'rep', 7, '{county_dealer}');
-- same priority as by_tier (0) but a higher id: by_tier keeps winning
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tiers) VALUES ('tier_same_prio', 0, 'rep', 7, '{key_distributor}');
-- a negative priority rule is considered last
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('catch_all', -100, 'rep', 7);
INSERT INTO r10_customer (id, name, tier) VALUES
    (30, 'county_dealer: urgent rule wins', 'county_dealer'),
    (31, 'key_distributor: by_tier wins (same priority, lower id)', 'key_distributor'),
    (32, 'nothing else matches: catch_all', 'grower');
SELECT * FROM r10_result WHERE id >= 30 ORDER BY id;

-------------------------------------------------------------------------------
-- Disabled rules and rules restricted to another table are ignored
-------------------------------------------------------------------------------
UPDATE allocation.rule SET enabled = false WHERE name IN ('tier_urgent', 'catch_all');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('other_table', 1000, 'rep', 7, 'r10_other', 'volume > 0');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl)
     VALUES ('other_table_no_condition', 1000, 'rep', 7, 'r10_other');
INSERT INTO r10_customer (id, name, tier, volume) VALUES
    (40, 'county_dealer: tier_urgent disabled -> by_tier', 'county_dealer', 5),
    (41, 'grower: catch_all disabled -> pool', 'grower', 5);
SELECT * FROM r10_result WHERE id >= 40 ORDER BY id;

-------------------------------------------------------------------------------
-- Conditions: NULL result is no match, stable functions are allowed
-------------------------------------------------------------------------------
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('by_region_setting', 200, 'rep', 7, 'r10_customer',
             'region = current_setting(''r10.region'', true)');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('by_name_and_time', 150, 'rep', 6, 'r10_customer',
             'lower(name) LIKE ''vip%'' AND now() > ''2000-01-01''::timestamptz');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('whole_row_and_qualified', 140, 'rep', 5, 'r10_customer',
             'to_jsonb(r10_customer) ->> ''region'' = ''east'' AND r10_customer.name IS NOT NULL');
SELECT name, condition, condition_bin IS NOT NULL AS compiled FROM allocation.rule
 WHERE name IN ('by_region_setting', 'by_name_and_time', 'whole_row_and_qualified') ORDER BY id;
-- r10.region is not set: current_setting(..., true) is NULL, the condition is NULL: no match
INSERT INTO r10_customer (id, name, region) VALUES (50, 'north, setting unset', 'north');
SET r10.region = 'north';
INSERT INTO r10_customer (id, name, region) VALUES (51, 'north, setting north', 'north');
INSERT INTO r10_customer (id, name, region) VALUES (52, 'south, setting north', 'south');
RESET r10.region;
INSERT INTO r10_customer (id, name, region) VALUES (53, 'VIP Farm', NULL);
-- whole-row and table-qualified references
INSERT INTO r10_customer (id, name, region) VALUES (54, 'east, named', 'east');
INSERT INTO r10_customer (id, name, region) VALUES (55, NULL, 'east');
-- a stable SQL function that reads another table (resolved like at save time)
CREATE TABLE r10_vip (name text);
INSERT INTO r10_vip VALUES ('Golden Harvest Co-op');
CREATE FUNCTION r10_is_vip(text) RETURNS boolean STABLE LANGUAGE sql
    AS $$ SELECT EXISTS (SELECT 1 FROM r10_vip WHERE name = $1) $$;
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('vip_list', 130, 'rep', 4, 'r10_customer', 'r10_is_vip(name)');
-- the system column tableoid is the managed table
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id, tbl, condition)
     VALUES ('tableoid_check', 120, 'rep', 3, 'r10_customer', 'tableoid = ''r10_customer''::regclass AND region = ''west''');
INSERT INTO r10_customer (id, name, region) VALUES (56, 'Golden Harvest Co-op', NULL);
INSERT INTO r10_customer (id, name, region) VALUES (57, 'not on the list', NULL);
INSERT INTO r10_customer (id, name, region) VALUES (58, 'west', 'west');
SELECT * FROM r10_result WHERE id >= 50 ORDER BY id;

-------------------------------------------------------------------------------
-- Changing a rule takes effect for the next INSERT in the same session
-------------------------------------------------------------------------------
INSERT INTO r10_customer (id, name, volume) VALUES (60, 'volume 500 before change', 500);
UPDATE allocation.rule SET condition = 'volume > 100' WHERE name = 'by_cond';
INSERT INTO r10_customer (id, name, volume) VALUES (61, 'volume 500 after lowering the threshold', 500);
UPDATE allocation.rule SET enabled = false WHERE name = 'by_cond';
INSERT INTO r10_customer (id, name, volume) VALUES (62, 'volume 500 after disabling', 500);
UPDATE allocation.rule SET enabled = true, target_rep_id = 3 WHERE name = 'by_cond';
INSERT INTO r10_customer (id, name, volume) VALUES (63, 'volume 500 after re-enabling with another rep', 500);
-- inside a transaction: the change is visible to the next statement
BEGIN;
UPDATE allocation.rule SET priority = 500, target_rep_id = 2 WHERE name = 'by_cond';
INSERT INTO r10_customer (id, name, tier, volume) VALUES (64, 'county_dealer 500, by_cond now first', 'county_dealer', 500);
SELECT * FROM r10_result WHERE id = 64;
ROLLBACK;
-- after the rollback the old rule is back
INSERT INTO r10_customer (id, name, tier, volume) VALUES (64, 'county_dealer 500, after rollback', 'county_dealer', 500);
-- a deleted rule is gone at once
DELETE FROM allocation.rule WHERE name = 'by_cond';
INSERT INTO r10_customer (id, name, volume) VALUES (65, 'volume 500 after deleting by_cond', 500);
SELECT * FROM r10_result WHERE id >= 60 ORDER BY id;

-------------------------------------------------------------------------------
-- Condition validation: every rejected rule leaves allocation.rule unchanged
-------------------------------------------------------------------------------
CREATE SEQUENCE r10_seq;
CREATE VIEW r10_rules AS
SELECT count(*) AS rules, md5(string_agg(format('%s|%s|%s|%s|%s', id, name, enabled, priority, condition), ';' ORDER BY id)) AS fingerprint
  FROM allocation.rule;
SELECT * FROM r10_rules \gset before_
SELECT :before_rules AS rules_before;

-- syntax error (42601)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_syntax', 'pool', 'r10_customer', 'volume >');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_paren', 'pool', 'r10_customer', '(volume > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_comment', 'pool', 'r10_customer', 'true /* unterminated');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;

-- unknown column (42703), unknown table reference (42P01)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_column', 'pool', 'r10_customer', 'nosuch > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_other_table_column', 'pool', 'r10_other', 'tier = ''x''');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_relation', 'pool', 'r10_customer', 'pg_class.relname = ''x''');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;

-- not boolean (LA031)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_numeric', 'pool', 'r10_customer', 'volume');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_text', 'pool', 'r10_customer', 'name || ''x''');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_null', 'pool', 'r10_customer', 'NULL');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;

-- volatile (LA032)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_random', 'pool', 'r10_customer', 'random() > 0.5');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_nextval', 'pool', 'r10_customer', 'volume > nextval(''r10_seq'')');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_clock', 'pool', 'r10_customer', 'clock_timestamp() > now()');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;

-- subquery, aggregate, window, set-returning (LA033)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_subquery', 'pool', 'r10_customer', '(SELECT true)');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_exists', 'pool', 'r10_customer', 'EXISTS (SELECT 1 FROM pg_class)');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_in_subquery', 'pool', 'r10_customer', 'id IN (SELECT 1)');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_aggregate', 'pool', 'r10_customer', 'count(*) > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_sum', 'pool', 'r10_customer', 'sum(volume) > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_window', 'pool', 'r10_customer', 'row_number() OVER () = 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_srf', 'pool', 'r10_customer', 'generate_series(1, 2) > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_unnest', 'pool', 'r10_customer', 'unnest(tags) = ''vip''');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;

-- not one expression / injection attempts (LA030)
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_two_statements', 'pool', 'r10_customer', 'true; drop table r10_customer');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
-- (only the SQLSTATE is printed for this one: its wording is free; it is a plain syntax
-- error, 42601, because the condition is parsed as "SELECT <condition>")
\set VERBOSITY sqlstate
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_paren_escape', 'pool', 'r10_customer', 'true) FROM pg_class WHERE (true');
\set VERBOSITY default
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_from', 'pool', 'r10_customer', 'true FROM pg_class');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_union', 'pool', 'r10_customer', 'true UNION SELECT false');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_where', 'pool', 'r10_customer', 'true WHERE false');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_alias', 'pool', 'r10_customer', 'true AS x');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_two_columns', 'pool', 'r10_customer', 'true, false');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_into', 'pool', 'r10_customer', 'true INTO r10_stolen');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_limit', 'pool', 'r10_customer', 'true LIMIT 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_empty', 'pool', 'r10_customer', '');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
INSERT INTO allocation.rule (name, target_kind, tbl, condition) VALUES ('bad_blank', 'pool', 'r10_customer', E'  \t\n ');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
-- a condition needs its table
INSERT INTO allocation.rule (name, target_kind, condition) VALUES ('bad_no_tbl', 'pool', 'volume > 1');
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
-- the table was not dropped and nothing was created by the attempts
SELECT to_regclass('r10_customer') IS NOT NULL AS customer_still_there, to_regclass('r10_stolen') IS NULL AS nothing_created;

-- UPDATE of an existing rule goes through the same validation
UPDATE allocation.rule SET condition = 'random() > 0.5' WHERE name = 'by_region_setting';
\echo :SQLSTATE
UPDATE allocation.rule SET condition = 'volume' WHERE name = 'by_region_setting';
\echo :SQLSTATE
UPDATE allocation.rule SET tbl = NULL WHERE name = 'by_region_setting';
\echo :SQLSTATE
UPDATE allocation.rule SET tbl = 'r10_other' WHERE name = 'by_region_setting';
\echo :SQLSTATE
SELECT rules, fingerprint = :'before_fingerprint' AS unchanged FROM r10_rules;
SELECT name, tbl, condition FROM allocation.rule WHERE name = 'by_region_setting';

-- the compiled form cannot be supplied by hand: it is always derived from condition
INSERT INTO allocation.rule (name, target_kind, target_rep_id, condition_bin)
     VALUES ('forged_bin', 'rep', 7, '{CONST :consttype 16 :consttypmod -1 :constcollid 0 :constlen 1 :constbyval true :constisnull false :location -1 :constvalue 1 [ 1 0 0 0 0 0 0 0 ]}');
SELECT name, condition, condition_bin IS NULL AS no_compiled_form FROM allocation.rule WHERE name = 'forged_bin';
UPDATE allocation.rule SET condition_bin = 'garbage' WHERE name = 'by_region_setting';
SELECT name, condition_bin = 'garbage' AS forged FROM allocation.rule WHERE name = 'by_region_setting';
DELETE FROM allocation.rule WHERE name = 'forged_bin';

-- after all of this the engine still works and is consistent
INSERT INTO r10_customer (id, name, tier) VALUES (70, 'after the rejected rules', 'county_dealer');
SELECT * FROM r10_result WHERE id = 70;
SELECT * FROM allocation.check_consistency();

DROP VIEW r10_result, r10_rules;
DROP TABLE r10_customer, r10_other, r10_vip;
DROP FUNCTION r10_is_vip(text);
DROP SEQUENCE r10_seq;
DROP EXTENSION allocation CASCADE;
