--
-- 40_hardening_15: security and datum fixes found reviewing issue 15.
-- 1. A manager may not give a rule a condition through a realignment plan on a
--    table it does not own (the condition would run as the table's owner).
-- 2. The partition event triggers (SECURITY DEFINER) never run a cast a user
--    wrote, and never close customers because of a table that merely carries
--    a trigger named like the engine's.
--
\set SHOW_CONTEXT never
DO $$
BEGIN
    CREATE ROLE regress_rv15_owner;
    CREATE ROLE regress_rv15_mgr;
    CREATE ROLE regress_rv15_att;
END $$;
CREATE EXTENSION allocation;
SELECT allocation.grant_role('regress_rv15_mgr', 'manager');
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'a', 'A', 1), (2, 'b', 'B', 1);
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('all to a', 0, 'rep', 1);

-- 1. staged rule conditions
CREATE TABLE rv15_cust (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
ALTER TABLE rv15_cust OWNER TO regress_rv15_owner;
SELECT allocation.manage('rv15_cust', 'id', 'loc', 'owner');
INSERT INTO rv15_cust VALUES (1, 'x', NULL, NULL);
CREATE SCHEMA rv15_mgr AUTHORIZATION regress_rv15_mgr;
SET ROLE regress_rv15_mgr;
CREATE FUNCTION rv15_mgr.peek(integer) RETURNS boolean LANGUAGE plpgsql STABLE AS $f$
BEGIN RAISE NOTICE 'manager code runs as %', current_user; RETURN true; END $f$;
GRANT USAGE ON SCHEMA rv15_mgr TO PUBLIC;
SELECT allocation.realign_create('escalate') AS p \gset
SELECT count(*) AS staged_before FROM allocation.realign_rule;
-- a new rule with a condition: refused (42501)
SELECT allocation.realign_stage_rule(:p, NULL, '{"name": "evil", "priority": 5, "tbl": "public.rv15_cust", "condition": "rv15_mgr.peek(id)", "target_kind": "rep", "target_rep_id": 2}');
-- a rule without a condition: still the manager's to stage
SELECT allocation.realign_stage_rule(:p, NULL, '{"name": "to b", "priority": 5, "tbl": "public.rv15_cust", "target_kind": "rep", "target_rep_id": 2}');
SELECT count(*) AS staged_after FROM allocation.realign_rule;
-- the preview runs no manager code
SELECT key, outcome, to_rep_code FROM allocation.realign_preview(:p);
RESET ROLE;
-- an existing rule with a condition (saved by the table's owner): changing it is the owner's too
SELECT allocation.grant_role('regress_rv15_owner', 'admin');
SET ROLE regress_rv15_owner;
INSERT INTO allocation.rule (name, priority, tbl, condition, target_kind, target_rep_id)
VALUES ('big ones', 1, 'rv15_cust', 'id > 0', 'rep', 1) RETURNING id AS cond_rule \gset
RESET ROLE;
SET ROLE regress_rv15_mgr;
SELECT allocation.realign_stage_rule(:p, :cond_rule, '{"condition": "rv15_mgr.peek(id)"}');
SELECT allocation.realign_stage_rule(:p, :cond_rule, '{"condition_search_path": "rv15_mgr, public"}');
SELECT count(*) AS staged_still FROM allocation.realign_rule;
-- what the condition means unchanged: a manager's to stage (disable it, change its priority)
SELECT allocation.realign_stage_rule(:p, :cond_rule, '{"enabled": false}');
SELECT allocation.realign_stage_rule(:p, :cond_rule, '{"condition": "id > 0", "priority": 2}');
RESET ROLE;
-- a change that only comes together with another staged one: a plan where the owner staged a
-- new condition for a rule without one; the manager's search path for it is refused
INSERT INTO allocation.rule (name, priority, tbl, target_kind, target_rep_id) VALUES ('plain', 1, 'rv15_cust', 'rep', 1)
RETURNING id AS plain_rule \gset
SELECT allocation.realign_create('two steps') AS p3 \gset
SET ROLE regress_rv15_owner;
SELECT allocation.realign_stage_rule(:p3, :plain_rule, '{"condition": "id > 0"}');
RESET ROLE;
SET ROLE regress_rv15_mgr;
SELECT allocation.realign_stage_rule(:p3, :plain_rule, '{"condition_search_path": "rv15_mgr, public"}');
SELECT allocation.realign_stage_rule(:p3, :plain_rule, '{"priority": 4}');
RESET ROLE;
-- the table's owner may (an admin may do what a manager does)
SET ROLE regress_rv15_owner;
SELECT allocation.realign_stage_rule(:p, :cond_rule, '{"priority": 3}');
RESET ROLE;

-- 2. partition event triggers
CREATE SCHEMA rv15_att AUTHORIZATION regress_rv15_att;
CREATE TABLE rv15_part (id integer NOT NULL, prov text NOT NULL, loc geometry(Point, 4326), owner bigint,
                        PRIMARY KEY (id, prov)) PARTITION BY LIST (prov);
CREATE TABLE rv15_part_hb PARTITION OF rv15_part FOR VALUES IN ('hb');
CREATE TABLE rv15_part_sd PARTITION OF rv15_part FOR VALUES IN ('sd');
SELECT allocation.manage('rv15_part', 'id', 'loc', 'owner');
INSERT INTO rv15_part VALUES (1, 'hb', NULL, NULL), (2, 'hb', NULL, NULL), (3, 'sd', NULL, NULL);
-- a role unrelated to the engine: a table of its own with the engine's trigger name, keys
-- of an enum type whose cast to text is its own function
SET ROLE regress_rv15_att;
CREATE TYPE rv15_att.k AS ENUM ('1', '2', '3');
CREATE FUNCTION rv15_att.k_text(rv15_att.k) RETURNS text LANGUAGE plpgsql VOLATILE AS $f$
BEGIN
    RAISE NOTICE 'the cast runs as %', current_user;
    RETURN $1::name::text;
END $f$;
CREATE CAST (rv15_att.k AS text) WITH FUNCTION rv15_att.k_text(rv15_att.k);
CREATE TABLE rv15_att.bait (id rv15_att.k);
INSERT INTO rv15_att.bait VALUES ('1'), ('3');
CREATE FUNCTION rv15_att.noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END';
CREATE TRIGGER zz_allocation_stmt_before BEFORE INSERT ON rv15_att.bait FOR EACH STATEMENT EXECUTE FUNCTION rv15_att.noop();
RESET ROLE;
SELECT id, owner FROM rv15_part ORDER BY id;
-- the DBA adds a partition: no cast of the role runs, none of the customers 1 and 3 is closed
CREATE TABLE rv15_part_js PARTITION OF rv15_part FOR VALUES IN ('js');
SELECT id, owner FROM rv15_part ORDER BY id;
SELECT count(*) AS closing_events FROM allocation.event WHERE kind IN ('partition_detached', 'partition_dropped');
-- a real detach still closes the partition's customers (and only them)
ALTER TABLE rv15_part DETACH PARTITION rv15_part_hb;
SELECT key, kind FROM allocation.event WHERE kind = 'partition_detached' ORDER BY key;
-- the key column turned to a type with a user-written cast: refused (LA016, as at manage());
-- the detach and the drop that follow read built-in keys
ALTER TABLE rv15_part ALTER COLUMN id TYPE rv15_att.k USING id::text::rv15_att.k;
ALTER TABLE rv15_part DETACH PARTITION rv15_part_sd;
DROP TABLE rv15_part_js;
SELECT key, kind FROM allocation.event WHERE kind = 'partition_detached' ORDER BY key;
SELECT allocation.check_consistency();

-- 3. coverage_gaps() finds a GCJ-02 customer where the engine does (in WGS 84): a dealer 300 m
-- west of a county border, captured on Amap (GCJ-02), is stored east of the border, in the gap
INSERT INTO allocation.territory (id, code, name, geom) VALUES (101, 'rv15_prov', 'Province', ST_Multi(ST_MakeEnvelope(120, 30, 122, 31, 4326)));
INSERT INTO allocation.territory (id, code, name, geom, parent_id, owner_rep_id, priority)
VALUES (102, 'rv15_west', 'West county', ST_Multi(ST_MakeEnvelope(120, 30, 121, 31, 4326)), 101, 2, 1);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('territory', 20, 'team', 1, 'territory_owner');
CREATE TABLE rv15_gcj (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('rv15_gcj', 'id', 'loc', 'owner');
SELECT allocation.set_location_datum('rv15_gcj', 'gcj02');
INSERT INTO rv15_gcj SELECT 1, ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326), NULL
  FROM allocation.datum_convert(120.997, 30.5, 'wgs84', 'gcj02') d;
INSERT INTO rv15_gcj VALUES (2, ST_SetSRID(ST_MakePoint(121.5, 30.5), 4326), NULL);   -- really in the gap
SELECT g.id, ST_X(g.loc) > 121 AS stored_east_of_border, g.owner,
       (SELECT t.code FROM allocation.territory t
         WHERE t.id = (allocation.explain('rv15_gcj', g.id::text)::jsonb #>> '{result,territory_id}')::bigint) AS territory
  FROM rv15_gcj g ORDER BY g.id;
SELECT kind, parent, code, customers, keys FROM allocation.coverage_gaps('rv15_prov');
-- the map draws it there too (west of the border), and a plan's GeoJSON places it there
SELECT c ->> 1 AS key, (c ->> 3)::numeric < 121 AS drawn_west_of_border, round((c ->> 3)::numeric, 3) AS lon
  FROM (SELECT substring(allocation.territory_map_html('rv15') FROM '<script type="application/json" id="map-data">(.*?)</script>')::jsonb AS d) x,
       jsonb_array_elements(x.d -> 'customers') c
 WHERE c ->> 1 IN ('1', '2') AND x.d -> 'layers' -> (c ->> 0)::int ->> 'table' = 'public.rv15_gcj'
 ORDER BY 1;
SELECT allocation.unmanage('rv15_part');   -- (not needed below)
SELECT allocation.realign_create('west county to rep a', claim_grace => interval '0') AS p2 \gset
SELECT allocation.realign_stage_territory(:p2, 'rv15_west', owner_rep => 1);
SELECT f -> 'properties' ->> 'key' AS key, (f #>> '{geometry,coordinates,0}')::numeric < 121 AS west_of_border,
       f -> 'properties' ->> 'before_rep' AS before_rep, f -> 'properties' ->> 'after_rep' AS after_rep
  FROM jsonb_array_elements(allocation.realign_geojson(:p2) -> 'features') f
 WHERE f -> 'properties' ->> 'table' = 'public.rv15_gcj';

-- the key and attribute columns stay of built-in types after manage(): changing one to a type
-- of the table owner's (whose cast would run as whoever reads the keys) is refused
CREATE TYPE rv15_code AS ENUM ('1', '2', '3');
ALTER TABLE rv15_gcj ALTER COLUMN id TYPE rv15_code USING id::text::rv15_code;
SELECT format_type(a.atttypid, NULL) AS key_type FROM pg_attribute a WHERE a.attrelid = 'rv15_gcj'::regclass AND a.attname = 'id';

DROP EXTENSION allocation CASCADE;
DROP TYPE rv15_code;
DROP TABLE rv15_cust, rv15_part, rv15_part_hb, rv15_part_sd, rv15_gcj;
DROP SCHEMA rv15_mgr CASCADE;
DROP SCHEMA rv15_att CASCADE;
DROP OWNED BY regress_rv15_owner, regress_rv15_mgr, regress_rv15_att;
DROP ROLE regress_rv15_owner, regress_rv15_mgr, regress_rv15_att;
