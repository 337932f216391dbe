--
-- 34_map_plan: territory_map_html(plan_id => ...) -- the realignment plan's
-- before/after toggle.  The page embeds what allocation.realign_geojson(plan_id)
-- returns; without that function, a plan id is refused (LA0H3).  The plan
-- function is a stand-in here, a hand-made FeatureCollection of the contract in
-- NOTES-map.md (moved customers: Point + kind/table/key/name/from_rep/to_rep/
-- reason; changed territories: kind/code/name/from_rep/to_rep, geometry = the
-- shape after, NULL when unchanged).  When the realignment ships its own
-- realign_geojson(), this file is rewritten on a real plan.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'wang', 'Wang Wei', 1), (2, 'zhao', 'Zhao Lei', 1);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'A', 'County A', ST_Multi(ST_MakeEnvelope(110, 25, 111, 26, 4326)), 1),
    (2, 'B', 'County B', ST_Multi(ST_MakeEnvelope(111, 25, 112, 26, 4326)), 2);
CREATE FUNCTION m34_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $f$;
CREATE FUNCTION m34_data(page text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT (regexp_match(page, '<script type="application/json" id="map-data">([^\n]*)</script>'))[1]::jsonb
$$;

-- no realignment in this database: a plan id is refused, without it the page is made
SELECT * FROM m34_try($$SELECT allocation.territory_map_html('t', plan_id => 1)$$);
SELECT m34_data(allocation.territory_map_html('t')) -> 'plan' AS plan;

-- the stand-in: plan 1 moves two customers and county A (wang -> zhao), its new shape
-- grown east; plan 2 is malformed; any other id is unknown (NULL)
CREATE FUNCTION allocation.realign_geojson(plan_id bigint) RETURNS jsonb LANGUAGE sql AS $$
    SELECT CASE plan_id
        WHEN 1 THEN '{"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [110.5, 25.5]},
             "properties": {"kind": "customer", "table": "public.customer", "key": "17", "name": "</script><img src=x onerror=alert(3)>",
                            "from_rep": "wang", "to_rep": "zhao", "reason": "county A goes to zhao"}},
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [110.2, 25.8]},
             "properties": {"kind": "customer", "table": "public.customer", "key": "18", "name": "pool dealer",
                            "from_rep": null, "to_rep": "zhao", "reason": "county A goes to zhao"}},
            {"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [[[[110, 25], [111.2, 25], [111.2, 26], [110, 26], [110, 25]]]]},
             "properties": {"kind": "territory", "code": "A", "name": "County A", "from_rep": "wang", "to_rep": "zhao"}}]}'::jsonb
        WHEN 2 THEN '{"type": "Feature"}'::jsonb
    END
$$;
SELECT m34_data(allocation.territory_map_html('Plan 1', plan_id => 1)) -> 'plan_id' AS plan_id,
       jsonb_array_length(m34_data(allocation.territory_map_html('Plan 1', plan_id => 1)) -> 'plan' -> 'features') AS plan_features;
SELECT f -> 'properties' ->> 'kind' AS kind, f -> 'properties' ->> 'key' AS key, f -> 'properties' ->> 'code' AS code,
       f -> 'properties' ->> 'from_rep' AS from_rep, f -> 'properties' ->> 'to_rep' AS to_rep, f -> 'geometry' ->> 'type' AS geometry
  FROM jsonb_array_elements(m34_data(allocation.territory_map_html('Plan 1', plan_id => 1)) -> 'plan' -> 'features') f;
-- the plan's strings are escaped like every other string of the page
SELECT position('<img' IN allocation.territory_map_html('Plan 1', plan_id => 1)) AS img,
       position('\u003c/script\u003e\u003cimg src=x onerror=alert(3)' IN allocation.territory_map_html('Plan 1', plan_id => 1)) > 0 AS escaped;
-- the toggle's code is in the page (map_check.sh clicks it, through #after, in Chromium)
SELECT allocation.territory_map_html('Plan 1', plan_id => 1) ~ 'After the plan' AS toggle,
       allocation.territory_map_html('t') ~ 'if \(D.plan\)' AS toggle_only_with_a_plan;

-- an unknown plan, a malformed answer, an id the plan function's type refuses
SELECT * FROM m34_try($$SELECT allocation.territory_map_html('t', plan_id => 99)$$);
SELECT * FROM m34_try($$SELECT allocation.territory_map_html('t', plan_id => 2)$$);
DROP FUNCTION allocation.realign_geojson(bigint);
CREATE FUNCTION allocation.realign_geojson(plan_id integer) RETURNS jsonb LANGUAGE sql AS $$
    SELECT '{"type": "FeatureCollection", "features": []}'::jsonb
$$;
SELECT jsonb_array_length(m34_data(allocation.territory_map_html('t', plan_id => 7)) -> 'plan' -> 'features') AS integer_plan_id;
SELECT * FROM m34_try($$SELECT allocation.territory_map_html('t', plan_id => 9999999999)$$);
DROP FUNCTION allocation.realign_geojson(integer);

DROP EXTENSION allocation CASCADE;
DROP FUNCTION m34_try(text);
DROP FUNCTION m34_data(text);
