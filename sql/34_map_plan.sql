--
-- 34_map_plan: territory_map_html(plan_id => ...) -- a realignment plan's
-- before/after toggle on the map.  The page embeds the moves of
-- allocation.realign_geojson(plan_id) (customers that would stay are not drawn);
-- the plan's own errors (unknown plan, a caller who may not see plans) pass
-- through.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$ BEGIN CREATE ROLE regress_m34_rep; END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, login) VALUES
    (1, 'wang', 'Wang Wei', 1, 'regress_m34_rep'), (2, 'zhao', 'Zhao Lei', 1, NULL);
SELECT allocation.grant_role('regress_m34_rep', 'rep');
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'A', 'County A', ST_Multi(ST_MakeEnvelope(110, 25, 111, 26, 4326)), 1),
    (2, 'B', 'County B', ST_Multi(ST_MakeEnvelope(111, 25, 112, 26, 4326)), 2);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy)
     VALUES ('the territory owner', 10, 'team', 1, 'territory_owner');
CREATE TABLE m34_customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('m34_customer', 'id', 'loc', 'owner', '{"name": "name"}');
INSERT INTO m34_customer (id, name, loc) VALUES
    (17, '</script><img src=x onerror=alert(3)>', ST_Point(110.5, 25.5, 4326)),
    (18, 'second dealer', ST_Point(110.2, 25.8, 4326)),
    (19, 'pinned dealer', ST_Point(110.8, 25.2, 4326)),
    (20, 'east dealer', ST_Point(111.5, 25.5, 4326));
-- 19 is pinned to wang by hand: it stays
SELECT allocation.assign('m34_customer', '19', 1, 'key account');
CREATE FUNCTION m34_data(page text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT (regexp_match(page, '<script type="application/json" id="map-data">([^\n]*)</script>'))[1]::jsonb
$$;

-- the plan: county A goes to zhao, its shape grown east
SELECT allocation.realign_create('A to zhao', 'wang moves to the key accounts') AS plan \gset
SELECT allocation.realign_stage_territory(:plan, 'A', geom => ST_Multi(ST_MakeEnvelope(110, 25, 111.2, 26, 4326)), owner_rep => 2);
SELECT m34_data(allocation.territory_map_html('Plan', plan_id => :plan)) -> 'plan_id' = to_jsonb(:plan) AS plan_id,
       jsonb_array_length(m34_data(allocation.territory_map_html('Plan', plan_id => :plan)) -> 'plan' -> 'features') AS plan_features;
-- two customers move, the pinned one is left out, the territory carries both shapes and owners
SELECT f -> 'properties' ->> 'kind' AS kind, f -> 'properties' ->> 'key' AS key, f -> 'properties' ->> 'code' AS code,
       coalesce(f -> 'properties' ->> 'before_rep', f -> 'properties' ->> 'before_owner_rep') AS before,
       coalesce(f -> 'properties' ->> 'after_rep', f -> 'properties' ->> 'after_owner_rep') AS after,
       f -> 'geometry' ->> 'type' AS geometry, f -> 'properties' ? 'before_geometry' AS before_shape
  FROM jsonb_array_elements(m34_data(allocation.territory_map_html('Plan', plan_id => :plan)) -> 'plan' -> 'features') f
 ORDER BY kind, key;
-- the plan's strings are escaped like every other string of the page
SELECT position('<img' IN allocation.territory_map_html('Plan', plan_id => :plan)) AS img;
-- the toggle's code is in the page (map_check.sh opens it with #after in Chromium)
SELECT allocation.territory_map_html('Plan', plan_id => :plan) ~ 'After the plan' AS toggle,
       allocation.territory_map_html('t') ~ 'if \(D.plan\)' AS toggle_only_with_a_plan,
       m34_data(allocation.territory_map_html('t')) -> 'plan' AS no_plan;
-- the map changed nothing: the plan is still a draft, nobody moved
SELECT (SELECT status FROM allocation.realign_plan WHERE id = :plan) AS status,
       (SELECT string_agg(id || '=' || owner, ' ' ORDER BY id) FROM m34_customer) AS owners;

-- an unknown plan, and a rep (who may not see plans) asking for one: the plan's own errors
\set VERBOSITY default
SELECT allocation.territory_map_html('t', plan_id => 99);
SET ROLE regress_m34_rep;
SELECT allocation.territory_map_html('t', plan_id => :plan);
RESET ROLE;
\set VERBOSITY terse

DROP TABLE m34_customer;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION m34_data(text);
DROP OWNED BY regress_m34_rep;
DROP ROLE regress_m34_rep;
