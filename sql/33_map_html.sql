--
-- 33_map_html: territory_map_html() -- one self-contained HTML page: its
-- structure (no network, the CSP's script hash), the escaping of user data,
-- what each role's page holds (a rep: its own customers, no outcomes; a
-- manager: everything), the size limits and every bad input with its SQLSTATE.
-- (The realignment plan toggle: 34_map_plan.sql.  The page in a browser:
-- scripts/map_check.sh.)
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_m33_wang;
    CREATE ROLE regress_m33_li;
    CREATE ROLE regress_m33_mgr;
    CREATE ROLE regress_m33_analyst;
    CREATE ROLE regress_m33_nobody;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'wang', 'Wang Wei', 1, 100, 'regress_m33_wang'),
    (2, 'li', 'Li Na', 1, 100, 'regress_m33_li');
SELECT allocation.grant_role('regress_m33_wang', 'rep'), allocation.grant_role('regress_m33_li', 'rep'),
       allocation.grant_role('regress_m33_mgr', 'manager'), allocation.grant_role('regress_m33_analyst', 'analyst');
-- (grant_role() grants them too; explicit here so the test reads on its own)
GRANT EXECUTE ON FUNCTION allocation.territory_map_html(text, bigint, integer, integer, double precision),
      allocation.map_layers() TO regress_m33_wang, regress_m33_li, regress_m33_mgr, regress_m33_analyst;

-- a province, two counties (one named like an attack), a vacant team-owned one
INSERT INTO allocation.territory (id, code, name, geom, priority) VALUES
    (1, 'P', 'Province', ST_Multi(ST_MakeEnvelope(110, 25, 113, 28, 4326)), 0);
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id, owner_team_id, parent_id, priority) VALUES
    (2, 'A', '县 A', ST_Multi(ST_MakeEnvelope(110, 25, 111.5, 26.5, 4326)), 1, NULL, 1, 1),
    (3, 'B', 'B</script><img src=x onerror=alert(1)> & "co" ''x''', ST_Multi(ST_MakeEnvelope(111.5, 25, 113, 26.5, 4326)), 2, NULL, 1, 1),
    (4, 'C', 'County C', ST_Multi(ST_MakeEnvelope(110, 26.5, 113, 28, 4326)), NULL, 1, 1, 1);
INSERT INTO allocation.rule (name, target_kind, target_team_id, policy) VALUES ('county owner', 'team', 1, 'territory_owner');
CREATE TABLE m33_customer (id integer PRIMARY KEY, name text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('m33_customer', 'id', 'loc', 'owner', '{"name": "name"}');
INSERT INTO m33_customer (id, name, loc) VALUES
    (1, 'dealer 1 in A', ST_Point(110.5, 25.5, 4326)), (2, 'dealer 2 in A', ST_Point(111.0, 26.0, 4326)),
    (3, 'dealer 3 in A', ST_Point(111.2, 25.2, 4326)),
    (4, '</script><script>alert(2)</script>', ST_Point(112.0, 25.5, 4326)), (5, 'dealer 5 in B', ST_Point(112.5, 26.0, 4326)),
    (6, 'grower in C (team: pool)', ST_Point(111.0, 27.0, 4326)), (7, 'no address yet', NULL);
SELECT id, owner FROM m33_customer ORDER BY id;
SELECT allocation.log_followup('m33_customer', '2', 'visit') > 0 AS f2,
       allocation.log_followup('m33_customer', '3', 'call') > 0 AS f3;
SELECT allocation.record_deal('m33_customer', '3', 800.00, ref => 'SO-3') > 0 AS d3;
SELECT allocation.enable_rep_security('m33_customer');
GRANT SELECT ON m33_customer TO regress_m33_wang, regress_m33_li, regress_m33_mgr;

-- the JSON data block of a page, and facts about the page
CREATE FUNCTION m33_data(page text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT (regexp_match(page, '<script type="application/json" id="map-data">([^\n]*)</script>'))[1]::jsonb
$$;
CREATE FUNCTION m33_summary(page text) RETURNS TABLE (territories integer, customers jsonb, outcomes boolean, viewer_rep text,
                                                     layers jsonb)
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_array_length(d -> 'territories' -> 'features'),
           (SELECT jsonb_agg(jsonb_build_array(c ->> 1, c ->> 6) ORDER BY (c ->> 1)::int) FROM jsonb_array_elements(d -> 'customers') c),
           (d ->> 'outcomes')::boolean, d ->> 'viewer_rep', d -> 'layers'
      FROM m33_data(page) d
$$;
GRANT EXECUTE ON FUNCTION m33_data(text), m33_summary(text) TO PUBLIC;
CREATE FUNCTION m33_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION m33_try(text) TO PUBLIC;

-------------------------------------------------------------------------------
-- Structure: one document, two scripts (JSON data, the renderer), no network
-------------------------------------------------------------------------------
SELECT allocation.territory_map_html() AS page \gset
SELECT left(:'page', 15) AS starts, right(:'page', 8) AS ends,
       (SELECT count(*) FROM regexp_matches(:'page', '<script', 'g')) AS scripts,
       (SELECT count(*) FROM regexp_matches(:'page', '</script>', 'g')) AS script_ends,
       (SELECT array_agg(DISTINCT m[1]) FROM regexp_matches(:'page', '(https?://[^"'' )]*)', 'g') m) AS urls,
       :'page' ~ '<meta http-equiv="Content-Security-Policy" content="default-src ''none'';' AS csp,
       regexp_replace(:'page', '<script type="application/json" id="map-data">[^\n]*</script>', '') ~ '\ysrc=' AS src_attributes,
       octet_length(:'page') BETWEEN 15000 AND 65536 AS size_ok;
-- the CSP names the renderer by its SHA-256: no other inline script (or handler) would run
SELECT (regexp_match(:'page', 'script-src ''sha256-([^'']+)'''))[1]
     = encode(sha256(convert_to((regexp_match(:'page', '<script>(.*)</script>'))[1], 'UTF8')), 'base64') AS csp_hash_matches;
-- the page's DOM markers map_check.sh reads
SELECT :'page' ~ 'data-rendered' AS rendered_marker, :'page' ~ 'data-status="loading"' AS status_marker,
       :'page' ~ 'window.onerror' AS error_marker;
SELECT * FROM m33_summary(:'page');
SELECT jsonb_build_object('code', f -> 'properties' ->> 'code', 'owner', f -> 'properties' ->> 'owner_rep',
                          'team', f -> 'properties' ->> 'owner_team', 'holdings', f -> 'properties' -> 'holdings',
                          'pool', f -> 'properties' -> 'pool', 'geometry', f -> 'geometry' ->> 'type') AS territory
  FROM jsonb_array_elements(m33_data(:'page') -> 'territories' -> 'features') f ORDER BY 1;
SELECT m33_data(:'page') -> 'reps' AS reps, m33_data(:'page') ->> 'title' AS title,
       m33_data(:'page') ->> 'viewer' AS viewer, m33_data(:'page') -> 'plan' AS plan;

-------------------------------------------------------------------------------
-- Escaping: names and the title stay data
-------------------------------------------------------------------------------
SELECT allocation.territory_map_html('Q3 <script>alert("t")</script> & co''s map') AS page \gset
SELECT position('<img' IN :'page') AS img, position('alert(1)' IN :'page') > 0 AS name_present,
       position('</script><img' IN :'page') AS raw_name, position('</script><script>alert(2)' IN :'page') AS raw_customer,
       position('\u003c/script\u003e\u003cimg' IN :'page') > 0 AS escaped_name;
SELECT (regexp_matches(:'page', '<title>[^<]*</title>|<h1>[^<]*</h1>', 'g'))[1] AS title_elements;
-- the JSON round-trips the raw strings
SELECT m33_data(:'page') ->> 'title' AS title,
       (SELECT f -> 'properties' ->> 'name' FROM jsonb_array_elements(m33_data(:'page') -> 'territories' -> 'features') f
         WHERE f -> 'properties' ->> 'code' = 'B') AS territory_b,
       (SELECT c ->> 2 FROM jsonb_array_elements(m33_data(:'page') -> 'customers') c WHERE c ->> 1 = '4') AS customer_4;

-------------------------------------------------------------------------------
-- Privileges: each role's page holds what that role may read
-------------------------------------------------------------------------------
-- a rep: its own customers (row-level security), the holder status (no outcomes)
SET ROLE regress_m33_wang;
SELECT * FROM m33_summary(allocation.territory_map_html());
SET ROLE regress_m33_li;
SELECT * FROM m33_summary(allocation.territory_map_html());
-- a manager: every customer, with its latest outcome
SET ROLE regress_m33_mgr;
SELECT * FROM m33_summary(allocation.territory_map_html());
-- an analyst without SELECT on the customer table: territories only, and the page says why
SET ROLE regress_m33_analyst;
SELECT * FROM m33_summary(allocation.territory_map_html());
-- a role that is given nothing
SET ROLE regress_m33_nobody;
SELECT * FROM m33_try($$SELECT allocation.territory_map_html()$$);
RESET ROLE;

-- (a county outline of 16,000 vertices, ~0.4 MB of GeoJSON, for the size limit below)
INSERT INTO allocation.territory (id, code, name, geom, parent_id, priority)
VALUES (5, 'R', 'Round county', ST_Multi(ST_Buffer(ST_Point(114.5, 26.5, 4326), 0.8, 4000)), NULL, 1);

-------------------------------------------------------------------------------
-- Bad inputs: one SQLSTATE each, nothing written
-------------------------------------------------------------------------------
SELECT count(*) AS events_before FROM allocation.event \gset
SELECT * FROM m33_try($$SELECT allocation.territory_map_html(NULL)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_customers => NULL)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_bytes => NULL)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', simplify => NULL)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html(repeat('x', 201))$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_customers => -1)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_customers => 1000001)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_bytes => 1000)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', simplify => -0.1)$$);
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', simplify => 'NaN')$$);
-- too many customers: 6 have a location
SELECT * FROM m33_try($$SELECT allocation.territory_map_html('t', max_customers => 5)$$);
SELECT (SELECT jsonb_array_length(m33_data(allocation.territory_map_html('t', max_customers => 6)) -> 'customers')) AS six,
       (SELECT jsonb_array_length(m33_data(allocation.territory_map_html('t', max_customers => 0)) -> 'customers')) AS none_drawn,
       (SELECT m33_data(allocation.territory_map_html('t', max_customers => 0)) -> 'layers') AS layers;
-- too large: the round county's outline; simplify brings it under
-- (the exact size changes with the renderer: masked)
SELECT code, regexp_replace(message, 'would be \d+ bytes', 'would be <n> bytes') AS message, detail, hint
  FROM m33_try($$SELECT allocation.territory_map_html('t', max_bytes => 200000)$$);
SELECT octet_length(allocation.territory_map_html('t', max_bytes => 200000, simplify => 0.01)) < 200000 AS simplified_fits,
       (SELECT jsonb_array_length(f -> 'geometry' -> 'coordinates' -> 0 -> 0)
          FROM jsonb_array_elements(m33_data(allocation.territory_map_html('t', simplify => 0.01)) -> 'territories' -> 'features') f
         WHERE f -> 'properties' ->> 'code' = 'R') < 200 AS few_vertices,
       (SELECT f -> 'properties' ->> 'name'
          FROM jsonb_array_elements(m33_data(allocation.territory_map_html('t', simplify => 0.01)) -> 'territories' -> 'features') f
         WHERE f -> 'properties' ->> 'code' = 'B') = (SELECT name FROM allocation.territory WHERE code = 'B') AS properties_kept;
SELECT count(*) - :events_before AS events_written FROM allocation.event;

DROP TABLE m33_customer CASCADE;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION m33_try(text);
DROP FUNCTION m33_summary(text);
DROP FUNCTION m33_data(text);
DROP OWNED BY regress_m33_wang, regress_m33_li, regress_m33_mgr, regress_m33_analyst, regress_m33_nobody;
DROP ROLE regress_m33_wang, regress_m33_li, regress_m33_mgr, regress_m33_analyst, regress_m33_nobody;
