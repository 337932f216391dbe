--
-- 22_config_audit: configuration changes are audited like decisions.  Every
-- INSERT, UPDATE, DELETE (and TRUNCATE) of a rule, territory, rep, team,
-- claim policy, recycle policy or resource pool writes one config_change event
-- per row with the acting role and detail = {table, op, id, before, after}
-- (an UPDATE records only the columns that changed; a territory's polygon is
-- recorded as its SHA-256 and vertex count, never the polygon itself).
-- Engine-internal writes (holdings counters, round-robin cursor, the units a
-- grant takes from a pool) are not configuration and write no such event.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

CREATE ROLE regress_r22_admin;
SELECT allocation.grant_role('regress_r22_admin', 'admin');
GRANT CREATE ON SCHEMA public TO regress_r22_admin;

-- the config_change events written after a mark
CREATE VIEW r22_changes AS
SELECT e.id, e.actor, e.detail->>'table' AS tbl, e.detail->>'op' AS op, (e.detail->>'id')::bigint AS row_id,
       e.rule_id, e.detail->'before' AS before, e.detail->'after' AS after
  FROM allocation.event e WHERE e.kind = 'config_change';
GRANT SELECT ON r22_changes TO regress_r22_admin;
SELECT 0 AS mark \gset

-------------------------------------------------------------------------------
-- Teams and reps, by an admin role (the actor is the admin)
-------------------------------------------------------------------------------
SET ROLE regress_r22_admin;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'ka', 'Key accounts');
UPDATE allocation.team SET parent_id = 1, name = 'Key accounts (field)' WHERE id = 2;
INSERT INTO allocation.rep (id, code, name, team_id, capacity, created_at) VALUES
    (1, 'a', 'Rep A', 1, 10, '2024-01-01'), (2, 'b', 'Rep B', 1, 10, '2024-01-01'), (3, 'c', 'Rep C', 2, NULL, '2024-01-01');
UPDATE allocation.rep SET capacity = 12 WHERE id = 1;
UPDATE allocation.rep SET active = false, team_id = 2 WHERE id = 2;
-- a no-op update changes nothing and records nothing
UPDATE allocation.rep SET capacity = capacity;
DELETE FROM allocation.rep WHERE id = 3;
RESET ROLE;
SELECT actor, tbl, op, row_id, before, after - 'created_at' AS after FROM r22_changes WHERE id > :mark ORDER BY id;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- Territories: the polygon is recorded as a hash and a vertex count
-------------------------------------------------------------------------------
SET ROLE regress_r22_admin;
-- a bulk import is one statement: one event per territory (plus the import's own event)
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "W", "name": "West"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "E", "name": "East"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "N", "name": "North"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,10],[20,10],[10,20],[0,10]]]}}
]}'::jsonb);
RESET ROLE;
SELECT e.kind, e.detail->>'op' AS op, e.detail->'after'->>'code' AS code,
       e.detail->'after'->>'geom_vertices' AS vertices,
       e.detail->'after'->>'geom_sha256' = encode(sha256(ST_AsBinary(t.geom)), 'hex') AS hash_matches_polygon,
       e.detail->'after' ? 'geom' AS polygon_stored, e.detail::text LIKE '%coordinates%' AS geojson_stored
  FROM allocation.event e LEFT JOIN allocation.territory t ON t.id = (e.detail->>'id')::bigint
 WHERE e.id > :mark ORDER BY e.id;
SELECT max(id) AS mark FROM allocation.event \gset
SET ROLE regress_r22_admin;
UPDATE allocation.territory SET owner_rep_id = 1, priority = 5 WHERE code = 'W';
-- the geometry changes: before/after carry hash and vertex count only
UPDATE allocation.territory SET geom = ST_Multi(ST_GeomFromText('POLYGON((10 0,20 0,20 10,15 12,10 10,10 0))', 4326))
 WHERE code = 'E';
-- re-importing the same polygon under a new name: only the name and properties changed
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "N", "name": "North county"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,10],[20,10],[10,20],[0,10]]]}}]}'::jsonb);
RESET ROLE;
SELECT tbl, op, (SELECT code FROM allocation.territory WHERE id = row_id) AS code,
       ARRAY(SELECT jsonb_object_keys(after) ORDER BY 1) AS changed,
       before - 'geom_sha256' AS before, after - 'geom_sha256' AS after,
       before->>'geom_sha256' <> after->>'geom_sha256' AS hash_changed
  FROM r22_changes WHERE id > :mark ORDER BY id;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- Rules: the condition text is recorded, its compiled form is not
-------------------------------------------------------------------------------
CREATE TABLE r22_customer (id integer PRIMARY KEY, name text, tier text, volume numeric,
                           loc geometry(Point, 4326), owner bigint);
ALTER TABLE r22_customer OWNER TO regress_r22_admin;
SET ROLE regress_r22_admin;
SELECT allocation.manage('r22_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO allocation.rule (id, name, priority, target_kind, target_team_id, policy, tbl, condition)
     VALUES (1, 'big ones', 20, 'team', 1, 'round_robin', 'r22_customer', 'volume > 100');
INSERT INTO allocation.rule (id, name, priority, target_kind, target_team_id, policy)
     VALUES (2, 'owner', 10, 'team', 1, 'territory_owner');
UPDATE allocation.rule SET condition = 'volume > 500', description = 'raised' WHERE id = 1;
UPDATE allocation.rule SET enabled = false WHERE id = 2;
DELETE FROM allocation.rule WHERE id = 2;
RESET ROLE;
SELECT actor, tbl, op, row_id, rule_id,
       CASE WHEN op = 'insert' THEN jsonb_build_object('name', after->'name', 'condition', after->'condition') ELSE after END AS after,
       CASE WHEN op = 'delete' THEN jsonb_build_object('name', before->'name', 'enabled', before->'enabled') ELSE before END AS before,
       coalesce(after, before) ? 'condition_bin' AS compiled_form_stored
  FROM r22_changes WHERE id > :mark ORDER BY id;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- Engine writes are not configuration: assigning customers moves the
-- holdings counters and writes only decisions
-------------------------------------------------------------------------------
INSERT INTO r22_customer (id, name, tier, volume, loc) VALUES
    (1, 'big one', 'grower', 1000, 'SRID=4326;POINT(5 5)'),
    (2, 'small one', 'grower', 1, 'SRID=4326;POINT(5 5)');
SELECT rep_id, held FROM allocation.rep_load ORDER BY rep_id;
SELECT kind, count(*) FROM allocation.event WHERE id > :mark GROUP BY kind ORDER BY kind;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- Claim and recycle policies, resource pools
-------------------------------------------------------------------------------
SET ROLE regress_r22_admin;
INSERT INTO allocation.claim_policy (id, team_id, max_held, daily_claims, cooldown) VALUES (1, 1, 5, 3, '14 days');
UPDATE allocation.claim_policy SET daily_claims = 4 WHERE id = 1;
DELETE FROM allocation.claim_policy WHERE id = 1;
INSERT INTO allocation.recycle_policy (id, name, no_followup) VALUES (1, 'thirty days', '30 days');
UPDATE allocation.recycle_policy SET no_followup = '45 days', exempt_stages = '{won}' WHERE id = 1;
INSERT INTO allocation.resource_pool (id, code, name, kind, total, remaining, created_at)
     VALUES (1, 'seed', 'Seed samples', 'sample', 10, 10, '2024-01-01');
UPDATE allocation.resource_pool SET total = 20, remaining = 20 WHERE id = 1;
RESET ROLE;
-- a grant takes units from the pool: its own event, no config_change
SELECT (allocation.grant_resource(1, 'r22_customer', '1', 3, 'demonstration plot')).status;
SELECT remaining FROM allocation.resource_pool WHERE id = 1;
SELECT actor, tbl, op, row_id, before, after - 'created_at' AS after FROM r22_changes WHERE id > :mark ORDER BY id;
SELECT kind, count(*) FROM allocation.event WHERE id > :mark GROUP BY kind ORDER BY kind;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- Cascades are recorded (a rep deleted: its territory loses its owner);
-- TRUNCATE is recorded as one event
-------------------------------------------------------------------------------
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (4, 'd', 'Rep D', 2);
UPDATE allocation.territory SET owner_rep_id = 4 WHERE code = 'N';
DELETE FROM allocation.rep WHERE id = 4;
TRUNCATE allocation.recycle_policy;
SELECT tbl, op, row_id, before - 'created_at' AS before, after - 'created_at' AS after FROM r22_changes WHERE id > :mark ORDER BY id;
SELECT max(id) AS mark FROM allocation.event \gset

-------------------------------------------------------------------------------
-- pg_restore reloads rows whose changes are already in the restored log: a
-- superuser with check_function_bodies off (what every dump script sets)
-- records nothing; an admin cannot use that to hide a change
-------------------------------------------------------------------------------
SET check_function_bodies = off;
INSERT INTO allocation.team (id, code, name) VALUES (10, 'restored', 'Restored team');
-- the admin logged in as itself
SET SESSION AUTHORIZATION regress_r22_admin;
SET check_function_bodies = off;
INSERT INTO allocation.team (id, code, name) VALUES (11, 'sneaky', 'Sneaky team');
RESET SESSION AUTHORIZATION;
RESET check_function_bodies;
SELECT actor, tbl, op, row_id FROM r22_changes WHERE id > :mark ORDER BY id;

-- configuration events are sealed like every other event
SELECT allocation.seal_audit() > 0 AS sealed;
SELECT * FROM allocation.verify_audit();

DROP TABLE r22_customer;
DROP VIEW r22_changes;
DROP EXTENSION allocation CASCADE;
REVOKE CREATE ON SCHEMA public FROM regress_r22_admin;
DROP OWNED BY regress_r22_admin;
DROP ROLE regress_r22_admin;
