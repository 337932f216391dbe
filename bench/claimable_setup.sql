-- bench/claimable_setup.sql: a public pool of :n customers (issue 11, the rep's pool screen).
-- Synthetic points spread over Hunan/Hubei; 8 reps in 2 teams; claim policies (a global
-- cooldown, a team's daily limit, a tier's max_held); 2 exclusive territories; a few
-- hundred locks, disputes, pending suggestions, protections and released customers
-- (cooldowns), so every check has something to find.
\set ON_ERROR_STOP 1
SET client_min_messages = warning;
CREATE SCHEMA bench;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'east', 'East'), (2, 'west', 'West');
INSERT INTO allocation.rep (id, code, name, team_id, capacity)
SELECT g, 'r' || g, 'Rep ' || g, 1 + g % 2, 100000 FROM generate_series(1, 8) g;
-- exclusive territories of rep 2 and of team west: a tenth of the pool each
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "EX1", "name": "exclusive 1"}, "geometry": {"type": "Polygon", "coordinates": [[[110,25],[111,25],[111,30],[110,30],[110,25]]]}},
  {"type": "Feature", "properties": {"code": "EX2", "name": "exclusive 2"}, "geometry": {"type": "Polygon", "coordinates": [[[111,25],[112,25],[112,30],[111,30],[111,25]]]}}
]}'::jsonb);
UPDATE allocation.territory SET exclusive = true, owner_rep_id = 2 WHERE code = 'EX1';
UPDATE allocation.territory SET exclusive = true, owner_team_id = 2 WHERE code = 'EX2';
INSERT INTO allocation.claim_policy (team_id, tier, max_held, daily_claims, cooldown) VALUES
    (NULL, NULL, NULL, 200, '7 days'),      -- everyone: a week's cooldown, 200 claims a day
    (NULL, 'A', 50, NULL, NULL),            -- tier A: at most 50 held
    (2, NULL, NULL, 100, NULL);             -- team west: 100 claims a day

-- a CRM table with its usual indexes
CREATE TABLE bench.customer (id bigint PRIMARY KEY, name text, tier text, location geometry(Point, 4326), owner bigint);
CREATE INDEX customer_location_idx ON bench.customer USING gist (location);
CREATE INDEX customer_owner_idx ON bench.customer (owner);
SELECT allocation.manage('bench.customer', 'id', 'location', 'owner', '{"tier": "tier"}');
-- no rules: every customer goes to the public pool (in batches: the pool fills over time)
SELECT setseed(0.11);
DO $$
DECLARE
    b integer;
    n integer := current_setting('bench.n')::integer;
BEGIN
    FOR b IN 0 .. (n - 1) / 10000 LOOP
        INSERT INTO bench.customer (id, name, tier, location)
        SELECT g, 'dealer ' || g, CASE WHEN g % 5 = 0 THEN 'A' ELSE 'B' END,
               ST_SetSRID(ST_MakePoint(108 + random() * 6, 24 + random() * 8), 4326)
          FROM generate_series(b * 10000 + 1, least((b + 1) * 10000, n)) g;
        COMMIT;
    END LOOP;
END
$$;
-- outside the exclusive territories: rep 1 holds 40 tier A customers (under its max_held) and
-- released 30 others (cooldown); rep 5 holds 50 tier A customers (its max_held)
CREATE TABLE bench.free AS
SELECT a.key::bigint AS id, a.tier, row_number() OVER (PARTITION BY a.tier ORDER BY a.key::bigint) AS n
  FROM allocation.assignment a WHERE a.valid_to IS NULL AND a.territory_id IS NULL AND a.key::bigint <= 3000;
SELECT count(*) FROM bench.free f, LATERAL (SELECT allocation.assign('bench.customer', f.id::text, 1, 'bench')) x WHERE f.tier = 'A' AND f.n <= 40;
SELECT count(*) FROM bench.free f, LATERAL (SELECT allocation.assign('bench.customer', f.id::text, 5, 'bench')) x WHERE f.tier = 'A' AND f.n > 40 AND f.n <= 90;
SELECT count(*) FROM bench.free f, LATERAL (SELECT allocation.claim('bench.customer', f.id::text, 1)) x WHERE f.tier = 'B' AND f.n <= 30;
SELECT count(*) FROM bench.free f, LATERAL (SELECT allocation.release('bench.customer', f.id::text, 'bench')) x WHERE f.tier = 'B' AND f.n <= 30;
DROP TABLE bench.free;
-- locks, disputes, pending suggestions, protections (of rep 3)
SELECT count(*) FROM generate_series(3001, 3200) g, LATERAL (SELECT allocation.lock_customer('bench.customer', g::text, 'bench')) x;
INSERT INTO allocation.duplicate (managed_id, key, other_key, match, value, action, opened_by)
SELECT 1, g::text, (g + 1)::text, 'phone', 'x', 'dispute', 'bench' FROM generate_series(4001, 4200) g;
INSERT INTO allocation.suggestion (managed_id, key, rep_id, reason)
SELECT 1, g::text, 4, 'bench' FROM generate_series(5001, 5200) g;
INSERT INTO allocation.protection (managed_id, key, rep_id, until)
SELECT 1, g::text, 3, now() + interval '30 days' FROM generate_series(6001, 7000) g;
VACUUM ANALYZE;
