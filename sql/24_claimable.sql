--
-- 24_claimable: the rep's pool screen, set-based (claimable_now, claimable(),
-- claimable_page(), claimable_count()).  A fixture where every claim check
-- fails for some customer and some rep; the screen must give, for EVERY pool
-- customer and rep, the same first failing check (SQLSTATE and words) as
-- explain_claim(), which runs the checks one customer at a time.  Then the
-- page: newest first and nearest first, LIMIT/skip, include_blocked.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_cl_a;
    CREATE ROLE regress_cl_nobody;
END $$;
INSERT INTO allocation.team (id, code, name, parent_id) VALUES
    (1, 'field', 'Field sales', NULL), (2, 'ka', 'Key accounts', NULL), (3, 'south', 'South', NULL), (4, 'north', 'North', NULL);
UPDATE allocation.team SET parent_id = 1 WHERE id = 2;
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login, active) VALUES
    (1, 'a', 'Rep A', 1, 100,  'regress_cl_a', true),   -- blocked by the customer checks only
    (2, 'b', 'Rep B', 1, 2,    NULL, true),             -- at capacity
    (3, 'c', 'Rep C', 2, NULL, NULL, true),             -- key accounts, a sub-team of field
    (4, 'd', 'Rep D', 1, 10,   NULL, false),            -- inactive
    (5, 'e', 'Rep E', 3, 100,  NULL, true),             -- holds its tier A max_held
    (6, 'f', 'Rep F', 4, 100,  NULL, true);             -- reaches its daily limit
SELECT allocation.grant_role('regress_cl_a', 'rep'), allocation.grant_role('regress_cl_nobody', 'rep');
-- exclusive territories: X of rep b, Y of team field (c is in it through key accounts), Z of team south
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "X", "name": "X"}, "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "Y", "name": "Y"}, "geometry": {"type": "Polygon", "coordinates": [[[20,0],[30,0],[30,10],[20,10],[20,0]]]}},
  {"type": "Feature", "properties": {"code": "Z", "name": "Z"}, "geometry": {"type": "Polygon", "coordinates": [[[40,0],[50,0],[50,10],[40,10],[40,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET exclusive = true, owner_rep_id = 2 WHERE code = 'X';
UPDATE allocation.territory SET exclusive = true, owner_team_id = 1 WHERE code = 'Y';
UPDATE allocation.territory SET exclusive = true, owner_team_id = 3 WHERE code = 'Z';
-- claim policies: a cooldown for everyone (none for tier A), tier A max_held 1 in team south,
-- one claim a day in team north
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown) VALUES
    (NULL, NULL, NULL, NULL, '1 day'), (NULL, 'A', NULL, NULL, '0'), (3, 'A', 1, NULL, NULL), (4, NULL, NULL, 1, NULL);

CREATE TABLE r24_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
CREATE INDEX ON r24_customer USING gist (loc);
SELECT allocation.manage('r24_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
-- no rules: every customer lands in the pool; 60 customers on a line through X, Y, Z and outside
INSERT INTO r24_customer (id, name, tier, loc)
SELECT g, 'dealer ' || g, CASE WHEN g % 3 = 0 THEN 'A' ELSE 'B' END, ST_SetSRID(ST_MakePoint(g - 0.5, 5), 4326)
  FROM generate_series(1, 60) g;

-- holdings: b holds 2 (its capacity), e one tier A customer; f claims one (its daily limit)
SELECT allocation.assign('r24_customer', '55', 2, 'fixture'), allocation.assign('r24_customer', '56', 2, 'fixture'),
       allocation.assign('r24_customer', '57', 5, 'fixture');
SELECT allocation.claim('r24_customer', '58', 6);
-- cooldowns: a gives back 31 (tier B: 1 day) and 33 (tier A: no cooldown); e gives back 32
SELECT allocation.claim('r24_customer', '31', 1), allocation.claim('r24_customer', '33', 1), allocation.claim('r24_customer', '32', 5);
SELECT allocation.release('r24_customer', '31', 'fixture'), allocation.release('r24_customer', '33', 'fixture'),
       allocation.release('r24_customer', '32', 'fixture');
-- locked, disputed, awaiting review, protected (for b; and 45 for a itself)
SELECT allocation.lock_customer('r24_customer', '41', 'head office'), allocation.lock_customer('r24_customer', '42', 'head office');
INSERT INTO allocation.duplicate (managed_id, key, other_key, match, value, action, opened_by) VALUES
    (1, '42', '1', 'phone', '1', 'dispute', 'fixture'),   -- locked first
    (1, '43', '2', 'phone', '2', 'dispute', 'fixture'), (1, '43', '3', 'phone', '3', 'dispute', 'fixture'),
    (1, '44', '4', 'phone', '4', 'warn', 'fixture');     -- a warning blocks nothing
INSERT INTO allocation.suggestion (managed_id, key, rep_id, reason) VALUES (1, '43', 3, 'disputed first'), (1, '46', 3, NULL);
INSERT INTO allocation.protection (managed_id, key, rep_id, until) VALUES
    (1, '47', 2, now() + interval '10 days'), (1, '45', 1, now() + interval '10 days'),
    (1, '48', 2, now() - interval '1 day');              -- expired
SELECT count(*) AS pool_customers FROM allocation.assignment WHERE valid_to IS NULL AND rep_id IS NULL;

-------------------------------------------------------------------------------
-- 1. every pool customer, every rep (and no rep, a rep that does not exist):
--    the set-based screen and explain_claim() agree on the first failing check
-------------------------------------------------------------------------------
CREATE FUNCTION r24_mask(t text) RETURNS text LANGUAGE sql IMMUTABLE
RETURN regexp_replace(regexp_replace(t, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g'), 'Locked by \S+ at', 'Locked by <role> at');
CREATE TEMP TABLE r24_reps (rep bigint);
INSERT INTO r24_reps VALUES (1), (2), (3), (4), (5), (6), (999), (NULL);
CREATE TEMP TABLE r24_oracle AS
SELECT r.rep, a.key, x.claimable, f.check, f.sqlstate, f.why_not
  FROM r24_reps r
 CROSS JOIN allocation.assignment a
 CROSS JOIN LATERAL (SELECT allocation.explain_claim('r24_customer', a.key, r.rep) AS j) e
 CROSS JOIN LATERAL (SELECT (e.j->>'claimable')::boolean AS claimable) x
  LEFT JOIN LATERAL (SELECT c->>'check' AS check, c->>'sqlstate' AS sqlstate, (c->>'message') || coalesce(': ' || (c->>'detail'), '') AS why_not
                       FROM jsonb_array_elements(e.j->'checks') WITH ORDINALITY AS u(c, o)
                      WHERE (c->>'ok')::boolean = false ORDER BY o LIMIT 1) f ON true
 WHERE a.valid_to IS NULL AND a.rep_id IS NULL;
-- the view/function claimable(rep): every row, every column that explains
SELECT count(*) AS compared, count(*) FILTER (WHERE NOT o.claimable) AS blocked,
       count(DISTINCT o.sqlstate) AS distinct_sqlstates,
       count(*) FILTER (WHERE s.key IS NULL OR s.claimable IS DISTINCT FROM o.claimable
                          OR s.sqlstate IS DISTINCT FROM o.sqlstate OR s.why_not IS DISTINCT FROM o.why_not) AS mismatches
  FROM r24_oracle o
  LEFT JOIN LATERAL (SELECT * FROM allocation.claimable(o.rep) c WHERE c.key = o.key) s ON true;
-- every check fails somewhere: the fixture is not vacuous
SELECT o.check, o.sqlstate, count(*) AS customers_x_reps, r24_mask(min(o.why_not)) AS example
  FROM r24_oracle o WHERE NOT o.claimable GROUP BY 1, 2 ORDER BY 2, 1;
-- claimable_page (newest and nearest, all rows, blocked included) and claimable_count agree too
SELECT count(*) AS compared,
       count(*) FILTER (WHERE p.key IS NULL OR p.claimable IS DISTINCT FROM o.claimable
                          OR p.sqlstate IS DISTINCT FROM o.sqlstate OR p.why_not IS DISTINCT FROM o.why_not) AS newest_mismatches,
       count(*) FILTER (WHERE n.key IS NULL OR n.claimable IS DISTINCT FROM o.claimable
                          OR n.sqlstate IS DISTINCT FROM o.sqlstate OR n.why_not IS DISTINCT FROM o.why_not) AS nearest_mismatches
  FROM r24_oracle o
  LEFT JOIN LATERAL (SELECT * FROM allocation.claimable_page('r24_customer', NULL, 1000, 0, true, o.rep) c WHERE c.key = o.key) p ON true
  LEFT JOIN LATERAL (SELECT * FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(0, 0), 4326), 1000, 0, true, o.rep) c
                      WHERE c.key = o.key) n ON true;
SELECT r.rep, (SELECT count(*) FROM r24_oracle o WHERE o.rep IS NOT DISTINCT FROM r.rep AND o.claimable) AS explain_claim_says,
       allocation.claimable_count('r24_customer', r.rep) AS claimable_count,
       (SELECT count(*) FROM allocation.claimable_page('r24_customer', NULL, 1000, 0, false, r.rep)) AS newest_page_rows,
       (SELECT count(*) FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(0, 0), 4326), 1000, 0, false, r.rep)) AS nearest_page_rows
  FROM r24_reps r ORDER BY r.rep NULLS LAST;

-- an exclusive territory of a team the rep is not in (Z: south) refuses the claim, and
-- explain_claim() says so (it used to report "ok": null and claimable)
SELECT allocation.explain_claim('r24_customer', '49', 1)->'claimable' AS claimable,
       allocation.explain_claim('r24_customer', '49', 1)->'checks'->7 AS exclusive_check;
SELECT allocation.claim('r24_customer', '49', 1);
\echo sqlstate :SQLSTATE
SELECT owner FROM r24_customer WHERE id = 49;

-------------------------------------------------------------------------------
-- 2. the page: nearest first, newest first, skip, include_blocked
-------------------------------------------------------------------------------
-- rep a near (30, 5): 30 is in Y (field: a may), 31 in its cooldown, 29 and 28 claimable
SELECT key, round(distance::numeric, 2) AS distance, claimable, failed_check, sqlstate
  FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(30.2, 5), 4326), 5, 0, true, 1);
SELECT key, round(distance::numeric, 2) AS distance FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(30.2, 5), 4326), 5, 0, false, 1);
SELECT key FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(30.2, 5), 4326), 3, 3, false, 1);
-- rep e near (45, 5) in Z (its team's): tier A customers are over its max_held
SELECT key, tier, claimable, sqlstate FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(45, 5), 4326), 4, 0, true, 5);
-- a point in another SRID is transformed to the column's (web mercator of (30.2, 5))
SELECT key FROM allocation.claimable_page('r24_customer', ST_Transform(ST_SetSRID(ST_MakePoint(30.2, 5), 4326), 3857), 3, 0, false, 1);
-- newest first: the customers released last came back to the pool last
SELECT key, claimable, sqlstate FROM allocation.claimable_page('r24_customer', NULL, 4, 0, true, 1);
SELECT key FROM allocation.claimable_page('r24_customer', page_size => 3, rep => 1);
-- a rep's own call (its login): the same as naming it
SET ROLE regress_cl_a;
SELECT key FROM allocation.claimable_page('r24_customer', ST_SetSRID(ST_MakePoint(30.2, 5), 4326), 3);
SELECT allocation.claimable_count('r24_customer');
SELECT count(*) FILTER (WHERE claimable) AS claimable, count(*) AS pool FROM allocation.claimable_now;
RESET ROLE;
-- a role that is no rep's login may call it: nothing is claimable (LA081)
SET ROLE regress_cl_nobody;
SELECT claimable, failed_check, sqlstate, why_not FROM allocation.claimable_page('r24_customer', NULL, 1, 0, true);
SELECT allocation.claimable_count('r24_customer');
RESET ROLE;

-------------------------------------------------------------------------------
-- 3. bad input
-------------------------------------------------------------------------------
SELECT * FROM allocation.claimable_page(NULL);
\echo sqlstate :SQLSTATE
SELECT * FROM allocation.claimable_page('r24_customer', NULL, 0);
\echo sqlstate :SQLSTATE
SELECT * FROM allocation.claimable_page('r24_customer', NULL, 20, -1);
\echo sqlstate :SQLSTATE
SELECT * FROM allocation.claimable_page('pg_class');
\echo sqlstate :SQLSTATE
SELECT allocation.claimable_count(NULL);
\echo sqlstate :SQLSTATE
CREATE TABLE r24_noloc (id integer PRIMARY KEY, owner bigint);
SELECT allocation.manage('r24_noloc', 'id', NULL, 'owner');
INSERT INTO r24_noloc VALUES (1), (2);
SELECT * FROM allocation.claimable_page('r24_noloc', ST_SetSRID(ST_MakePoint(0, 0), 4326));
\echo sqlstate :SQLSTATE
SELECT key, claimable FROM allocation.claimable_page('r24_noloc', rep => 1);


DROP TABLE r24_customer, r24_noloc;
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_cl_a, regress_cl_nobody;
DROP ROLE regress_cl_a, regress_cl_nobody;
