--
-- 27_virtual_teams: virtual teams (虚拟团队) and the revenue split (业绩分成):
-- create_virtual_team(), set_team_shares() with versioned shares and as-of
-- reads, add/remove_team_customer(), one team per customer, split_revenue()
-- to the cent, record_deal() freezing its split, revenue_credit per rep and
-- month, _team_member_of(), dissolution (idempotent), the deferred 100 % check,
-- and every bad input with its SQLSTATE changing nothing.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_v27_a;
    CREATE ROLE regress_v27_b;
    CREATE ROLE regress_v27_c;
    CREATE ROLE regress_v27_d;
    CREATE ROLE regress_v27_mgr;
    CREATE ROLE regress_v27_analyst;
    CREATE ROLE regress_v27_admin;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'ka', 'Key accounts'), (2, 'county', 'County sales'), (3, 'agro', 'Agronomy');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Key account rep', 1, 100, 'regress_v27_a'),
    (2, 'b', 'County rep', 2, 100, 'regress_v27_b'),
    (3, 'c', 'Crop specialist', 3, 100, 'regress_v27_c'),
    (4, 'd', 'Other county rep', 2, 100, 'regress_v27_d');
INSERT INTO allocation.rep (id, code, name, team_id, active) VALUES (5, 'gone', 'Rep who left', 2, false);
SELECT allocation.grant_role('regress_v27_a', 'rep'), allocation.grant_role('regress_v27_b', 'rep'),
       allocation.grant_role('regress_v27_c', 'rep'), allocation.grant_role('regress_v27_d', 'rep'),
       allocation.grant_role('regress_v27_mgr', 'manager'), allocation.grant_role('regress_v27_analyst', 'analyst'),
       allocation.grant_role('regress_v27_admin', 'admin');
-- what grant_role() grants for this feature (explicit here so the test reads on its own)
GRANT EXECUTE ON FUNCTION allocation.split_revenue(regclass, text, numeric, timestamptz),
      allocation.team_shares_at(bigint, timestamptz)
   TO regress_v27_a, regress_v27_b, regress_v27_c, regress_v27_d, regress_v27_mgr, regress_v27_analyst, regress_v27_admin;
GRANT SELECT ON allocation.revenue_credit TO regress_v27_a, regress_v27_b, regress_v27_c, regress_v27_d;
GRANT EXECUTE ON FUNCTION allocation.record_deal(regclass, text, numeric, timestamptz, text)
   TO regress_v27_a, regress_v27_b, regress_v27_c, regress_v27_d, regress_v27_mgr, regress_v27_admin;
GRANT EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]),
      allocation.set_team_shares(bigint, jsonb), allocation.add_team_customer(bigint, regclass, text),
      allocation.remove_team_customer(bigint, regclass, text), allocation.dissolve_virtual_team(bigint, text),
      allocation.dissolve_virtual_teams(timestamptz)
   TO regress_v27_mgr, regress_v27_admin;

CREATE TABLE v27_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('v27_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO v27_customer (id, name, tier, owner) VALUES
    (1, 'provincial distributor', 'A', 1), (2, 'its county branch', 'A', 2), (3, 'a county dealer', 'B', 2),
    (4, 'a township retailer', 'C', 4), (5, 'a large grower', 'A', 4), (6, 'another grower', 'B', 4);
INSERT INTO v27_customer (id, name, tier) VALUES (99, 'in the pool', 'C');
CREATE TABLE v27_not_managed (id integer PRIMARY KEY);

CREATE FUNCTION v27_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := regexp_replace(detail, '\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?[+-]\d\d', '<time>', 'g');
    detail := regexp_replace(detail, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
    detail := regexp_replace(detail, 'virtual team \d+ ', 'virtual team <id> ', 'g');
    detail := regexp_replace(detail, 'Deal \d+ ', 'Deal <id> ', 'g');
    hint := regexp_replace(hint, 'team_id = \d+', 'team_id = <id>', 'g');
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION v27_try(text) TO PUBLIC;
-- what is stored, to prove a refused step changes nothing
CREATE VIEW v27_stored AS
SELECT (SELECT count(*) FROM allocation.virtual_team) AS teams,
       (SELECT count(*) FROM allocation.virtual_team_member) AS member_versions,
       (SELECT count(*) FROM allocation.virtual_team_member WHERE valid_to IS NULL) AS current_versions,
       (SELECT count(*) FROM allocation.virtual_team_customer) AS links,
       (SELECT count(*) FROM allocation.virtual_team_customer WHERE valid_to IS NULL) AS open_links,
       (SELECT count(*) FROM allocation.virtual_team WHERE dissolved_at IS NOT NULL) AS dissolved,
       (SELECT count(*) FROM allocation.deal) AS deals,
       (SELECT count(*) FROM allocation.deal_split) AS split_lines,
       (SELECT count(*) FROM allocation.event) AS events;
CREATE VIEW v27_members AS
SELECT t.name AS team, r.code AS rep, m.role, m.share, m.valid_to IS NULL AS current
  FROM allocation.virtual_team_member m JOIN allocation.virtual_team t ON t.id = m.team_id
  JOIN allocation.rep r ON r.id = m.rep_id;
CREATE VIEW v27_links AS
SELECT t.name AS team, l.tbl, l.key, l.valid_to IS NULL AS open, l.added_by, l.removed_by
  FROM allocation.virtual_team_customer l JOIN allocation.virtual_team t ON t.id = l.team_id;

-------------------------------------------------------------------------------
-- A manager forms a team around the provincial distributor and its branch
-------------------------------------------------------------------------------
SELECT clock_timestamp() AS before_team \gset
SET ROLE regress_v27_mgr;
SELECT allocation.create_virtual_team('Provincial distributor 2027', 'annual program of the provincial distributor',
           tstzrange(now(), now() + interval '1 year'),
           '[{"rep_id": 1, "share": 50, "role": "key account"},
             {"rep_id": 2, "share": 30, "role": "county rep"},
             {"rep_id": 3, "share": 20, "role": "crop specialist"}]',
           'v27_customer', ARRAY['1', '2']) AS team1 \gset
RESET ROLE;
SELECT name, purpose, upper(valid) - lower(valid) AS length, created_by, dissolved_at FROM allocation.virtual_team;
SELECT * FROM v27_members ORDER BY rep;
SELECT * FROM v27_links ORDER BY key;
SELECT kind, actor, table_name, key, reason, detail - 'members' - 'valid' = jsonb_build_object('virtual_team', :team1) ||
       CASE WHEN kind = 'virtual_team_created' THEN '{"name": "Provincial distributor 2027"}'::jsonb ELSE '{}' END AS detail_ok
  FROM allocation.event WHERE kind LIKE 'virtual_team%' ORDER BY id;

-------------------------------------------------------------------------------
-- split_revenue(): the members by their shares; the holder without a team; nobody in the pool
-------------------------------------------------------------------------------
SET ROLE regress_v27_d;
SELECT * FROM allocation.split_revenue('v27_customer', '1', 1000.00);
SELECT * FROM allocation.split_revenue('v27_customer', '3', 1234.56);
SELECT * FROM allocation.split_revenue('v27_customer', '99', 10);
-- before the team existed: its holder; before the customer was registered: nobody
SELECT * FROM allocation.split_revenue('v27_customer', '1', 1000.00, :'before_team');
SELECT * FROM allocation.split_revenue('v27_customer', '1', 1000.00, now() - interval '1 day');
RESET ROLE;

-------------------------------------------------------------------------------
-- Members see the customer: _team_member_of() (for row-level security and resource views)
-------------------------------------------------------------------------------
SELECT r.id AS rep, allocation._team_member_of(m.id, '1', r.id) AS of_1, allocation._team_member_of(m.id, '2', r.id) AS of_2,
       allocation._team_member_of(m.id, '3', r.id) AS of_3,
       allocation._team_member_of(m.id, '1', r.id, :'before_team') AS of_1_before_team
  FROM allocation.managed_table m, allocation.rep r WHERE m.tbl = 'v27_customer'::regclass ORDER BY r.id;
SELECT p.prosecdef AS security_definer, p.provolatile AS volatility, p.proconfig
  FROM pg_proc p WHERE p.oid = 'allocation._team_member_of(integer, text, bigint, timestamptz)'::regprocedure;

-------------------------------------------------------------------------------
-- Shares are versioned: a change closes the current versions; as-of reads
-------------------------------------------------------------------------------
SELECT clock_timestamp() AS before_change \gset
SET ROLE regress_v27_mgr;
SELECT allocation.set_team_shares(:team1, '[{"rep_id": 1, "share": 33.33, "role": "key account"},
                                            {"rep_id": 2, "share": 33.33, "role": "county rep"},
                                            {"rep_id": 3, "share": 33.34, "role": "crop specialist"}]');
RESET ROLE;
SELECT * FROM v27_members ORDER BY current, rep;
SELECT rep_code, role, share, valid_to IS NULL AS current FROM allocation.team_shares_at(:team1, :'before_change');
SELECT rep_code, role, share, valid_to IS NULL AS current FROM allocation.team_shares_at(:team1);
-- the closed versions end where the new ones begin
SELECT count(DISTINCT o.valid_to) AS one_boundary, bool_and(o.valid_to = n.valid_from) AS closed_where_new_open
  FROM allocation.virtual_team_member o JOIN allocation.virtual_team_member n
    ON n.team_id = o.team_id AND n.rep_id = o.rep_id AND n.valid_to IS NULL
 WHERE o.valid_to IS NOT NULL;
SELECT * FROM allocation.split_revenue('v27_customer', '1', 1000.00, :'before_change');
SELECT kind, detail -> 'members' -> 2 ->> 'share' AS third_share FROM allocation.event WHERE kind = 'virtual_team_shares_set';

-------------------------------------------------------------------------------
-- Largest remainder: the lines always sum to the amount
-------------------------------------------------------------------------------
-- 33.33 / 33.33 / 33.34
SELECT * FROM allocation.split_revenue('v27_customer', '1', 100.00);
SELECT * FROM allocation.split_revenue('v27_customer', '1', 10.00);
-- one cent among three reps: the largest remainder (c, 33.34 %) takes it
SELECT * FROM allocation.split_revenue('v27_customer', '1', 0.01);
-- two cents: c, then the tie of a and b goes to the lower rep id
SELECT * FROM allocation.split_revenue('v27_customer', '1', 0.02);
SELECT * FROM allocation.split_revenue('v27_customer', '1', 1000000000.01);
-- every amount from 0.01 to 30.00 and a few large ones: exact sums, no line off by more than a cent
SELECT count(*) AS amounts,
       count(*) FILTER (WHERE s.total <> g.amount) AS wrong_sums,
       count(*) FILTER (WHERE s.max_error >= 0.01) AS off_by_a_cent_or_more
  FROM (SELECT g / 100.0 AS amount FROM generate_series(1, 3000) g
        UNION ALL SELECT x FROM unnest(ARRAY[99999999.99, 12345.67, 0.03, 0.04, 0.05]) x) g,
       LATERAL (SELECT sum(x.amount) AS total, max(abs(x.amount - g.amount * x.share / 100)) AS max_error
                  FROM allocation.split_revenue('v27_customer', '1', g.amount) x) s;
-- equal shares and an odd cent: the lower rep id
SET ROLE regress_v27_mgr;
SELECT allocation.set_team_shares(:team1, '[{"rep_id": 2, "share": 50}, {"rep_id": 1, "share": 50}]');
RESET ROLE;
SELECT * FROM allocation.split_revenue('v27_customer', '1', 0.01);
SELECT * FROM allocation.split_revenue('v27_customer', '1', 0.03);
-- c left the team; its old versions are kept
SELECT * FROM v27_members ORDER BY current, rep, share;
SELECT allocation._team_member_of(id, '1', 3) AS c_now, allocation._team_member_of(id, '1', 3, :'before_change') AS c_before
  FROM allocation.managed_table WHERE tbl = 'v27_customer'::regclass;
SET ROLE regress_v27_mgr;
SELECT allocation.set_team_shares(:team1, '[{"rep_id": 1, "share": 50, "role": "key account"},
                                            {"rep_id": 2, "share": 30, "role": "county rep"},
                                            {"rep_id": 3, "share": 20, "role": "crop specialist"}]');
RESET ROLE;

-------------------------------------------------------------------------------
-- record_deal(): the split as of the deal's time, frozen
-------------------------------------------------------------------------------
SET ROLE regress_v27_a;
SELECT allocation.record_deal('v27_customer', '1', 1000.00, ref => 'SO-2027-0001') AS deal1 \gset
RESET ROLE;
SELECT d.key, d.amount, d.source, d.ref, t.name AS team, d.recorded_by FROM allocation.deal d
  LEFT JOIN allocation.virtual_team t ON t.id = d.team_id WHERE d.id = :deal1;
SELECT r.code, s.share, s.amount FROM allocation.deal_split s JOIN allocation.rep r ON r.id = s.rep_id
 WHERE s.deal_id = :deal1 ORDER BY r.code;
SELECT kind, actor, key, reason, detail -> 'split' AS split FROM allocation.event WHERE kind = 'deal_recorded';
-- a later share change does not rewrite it
SET ROLE regress_v27_mgr;
SELECT allocation.set_team_shares(:team1, '[{"rep_id": 1, "share": 40}, {"rep_id": 2, "share": 40}, {"rep_id": 3, "share": 20}]');
RESET ROLE;
SELECT r.code, s.share, s.amount FROM allocation.deal_split s JOIN allocation.rep r ON r.id = s.rep_id
 WHERE s.deal_id = :deal1 ORDER BY r.code;
-- and the as-of split at the deal's time is still what was frozen
SELECT (SELECT array_agg(x.amount ORDER BY x.rep_id) FROM allocation.split_revenue('v27_customer', '1', d.amount, d.at) x)
     = (SELECT array_agg(s.amount ORDER BY s.rep_id) FROM allocation.deal_split s WHERE s.deal_id = d.id) AS as_of_matches_frozen
  FROM allocation.deal d WHERE d.id = :deal1;
-- the same ref again: refused, nothing stored
SELECT * FROM v27_stored \gset before_
SET ROLE regress_v27_a;
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 1000.00, ref => 'SO-2027-0001')$$);
RESET ROLE;
SELECT deals = :before_deals AND split_lines = :before_split_lines AND events = :before_events AS nothing_stored FROM v27_stored;
-- the same ref in another source or table is another deal (a later issue reads CRM tables)
SET ROLE regress_v27_b;
SELECT allocation.record_deal('v27_customer', '2', 500.00, ref => 'SO-2027-0002') IS NOT NULL AS member_records_branch_deal;
SELECT allocation.record_deal('v27_customer', '3', 80.00, ref => 'SO-2027-0003') IS NOT NULL AS holder_records_own_deal;
RESET ROLE;
SET ROLE regress_v27_mgr;
SELECT allocation.record_deal('v27_customer', '99', 12.34, now() - interval '1 minute', 'SO-2027-0004') IS NOT NULL AS pool_deal;
RESET ROLE;
SELECT d.ref, d.key, t.name AS team, coalesce(r.code, '(nobody)') AS rep, s.share, s.amount
  FROM allocation.deal d JOIN allocation.deal_split s ON s.deal_id = d.id
  LEFT JOIN allocation.rep r ON r.id = s.rep_id LEFT JOIN allocation.virtual_team t ON t.id = d.team_id
 ORDER BY d.id, r.code;

-------------------------------------------------------------------------------
-- revenue_credit: per month, rep, team; a rep sees its own rows
-------------------------------------------------------------------------------
SET ROLE regress_v27_analyst;
SELECT month = date_trunc('month', now())::date AS this_month, rep_code, team_name, table_name, source, deals, credited
  FROM allocation.revenue_credit ORDER BY rep_code NULLS LAST, team_name NULLS LAST;
SELECT sum(credited) = (SELECT sum(amount) FROM allocation.deal) AS credit_sums_to_deals FROM allocation.revenue_credit;
SET ROLE regress_v27_b;
SELECT rep_code, team_name, deals, credited FROM allocation.revenue_credit ORDER BY team_name NULLS LAST;
SET ROLE regress_v27_c;
SELECT rep_code, team_name, deals, credited FROM allocation.revenue_credit;
RESET ROLE;

-------------------------------------------------------------------------------
-- Bad inputs: each with its SQLSTATE, and nothing stored changes
-------------------------------------------------------------------------------
SELECT * FROM v27_stored \gset before_
SET ROLE regress_v27_a;
-- not a manager
SELECT * FROM v27_try($$SELECT allocation._create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', NULL, NULL)$$);
RESET ROLE;
-- (through the gateway: a rep has no EXECUTE; give it to see the check)
GRANT EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]),
      allocation.set_team_shares(bigint, jsonb), allocation.dissolve_virtual_teams(timestamptz) TO regress_v27_a;
SET ROLE regress_v27_a;
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try(format('SELECT allocation.set_team_shares(%s, ''[{"rep_id": 1, "share": 100}]'')', :team1));
SELECT * FROM v27_try($$SELECT allocation.dissolve_virtual_teams()$$);
-- a rep that neither holds nor shares the customer records no deal of it
RESET ROLE;
SET ROLE regress_v27_d;
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.00, ref => 'D-1')$$);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION allocation.create_virtual_team(text, text, tstzrange, jsonb, regclass, text[]),
       allocation.set_team_shares(bigint, jsonb), allocation.dissolve_virtual_teams(timestamptz) FROM regress_v27_a;
-- direct writes: no role but the engine
SET ROLE regress_v27_admin;
SELECT * FROM v27_try($$INSERT INTO allocation.virtual_team (name, valid, created_by) VALUES ('x', tstzrange(now(), NULL), 'me')$$);
SELECT * FROM v27_try(format('UPDATE allocation.virtual_team_member SET share = 100 WHERE team_id = %s', :team1));
SELECT * FROM v27_try($$DELETE FROM allocation.deal_split$$);
SET ROLE regress_v27_mgr;
SELECT * FROM v27_try($$INSERT INTO allocation.deal (managed_id, key, amount, at, ref, recorded_by) VALUES (1, '1', 1, now(), 'x', 'me')$$);
SELECT * FROM v27_try($$UPDATE allocation.virtual_team_customer SET valid_to = now()$$);

-- create_virtual_team()
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team(NULL, NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team(' ', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, NULL, '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now() - interval '1 day', NULL), '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(NULL, now() + interval '1 day'), '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, 'empty', '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), NULL)$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '{"rep_id": 1, "share": 100}')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": "a", "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1.5, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100, "boss": true}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 0}, {"rep_id": 2, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": -10}, {"rep_id": 2, "share": 110}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 33.333}, {"rep_id": 2, "share": 66.667}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 50}, {"rep_id": 1, "share": 50}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 42, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 5, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 60}, {"rep_id": 2, "share": 30}]')$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', 'v27_not_managed', ARRAY['1'])$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', 'v27_customer', NULL)$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', 'v27_customer', ARRAY['4', NULL])$$);
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', 'v27_customer', ARRAY['4', '777'])$$);
-- customer 1 is in the provincial team: the whole new team is refused
SELECT * FROM v27_try($$SELECT allocation.create_virtual_team('x', NULL, tstzrange(now(), NULL), '[{"rep_id": 1, "share": 100}]', 'v27_customer', ARRAY['4', '1'])$$);

-- set_team_shares()
SELECT * FROM v27_try($$SELECT allocation.set_team_shares(NULL, '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try($$SELECT allocation.set_team_shares(12345, '[{"rep_id": 1, "share": 100}]')$$);
SELECT * FROM v27_try(format('SELECT allocation.set_team_shares(%s, NULL)', :team1));
SELECT * FROM v27_try(format('SELECT allocation.set_team_shares(%s, ''[{"rep_id": 1, "share": 99.99}]'')', :team1));
SELECT * FROM v27_try(format('SELECT allocation.set_team_shares(%s, ''[{"rep_id": 1, "share": 50}, {"rep_id": 5, "share": 50}]'')', :team1));

-- add_team_customer() / remove_team_customer()
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_customer'', NULL)', :team1));
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, NULL, ''3'')', :team1));
SELECT * FROM v27_try($$SELECT allocation.add_team_customer(NULL, 'v27_customer', '3')$$);
SELECT * FROM v27_try($$SELECT allocation.add_team_customer(12345, 'v27_customer', '3')$$);
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_not_managed'', ''3'')', :team1));
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_customer'', ''777'')', :team1));
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_customer'', ''1'')', :team1));
SELECT * FROM v27_try(format('SELECT allocation.remove_team_customer(%s, ''v27_customer'', ''3'')', :team1));
SELECT * FROM v27_try(format('SELECT allocation.remove_team_customer(%s, NULL, ''3'')', :team1));
SELECT * FROM v27_try($$SELECT allocation.remove_team_customer(12345, 'v27_customer', '1')$$);

-- dissolve_virtual_team() / dissolve_virtual_teams()
SELECT * FROM v27_try(format('SELECT allocation.dissolve_virtual_team(%s, NULL)', :team1));
SELECT * FROM v27_try(format('SELECT allocation.dissolve_virtual_team(%s, '' '')', :team1));
SELECT * FROM v27_try($$SELECT allocation.dissolve_virtual_team(12345, 'x')$$);
SELECT * FROM v27_try($$SELECT allocation.dissolve_virtual_teams(NULL)$$);

-- split_revenue() / record_deal()
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '1', NULL)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', NULL, 10)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue(NULL, '1', 10)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '1', 10, NULL)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '1', -10)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '1', 0)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '1', 10.005)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_not_managed', '1', 10)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.split_revenue('v27_customer', '777', 10)$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.00)$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.00, ref => ' ')$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.001, ref => 'D-2')$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', -10.00, ref => 'D-2')$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '777', 10.00, ref => 'D-2')$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_not_managed', '1', 10.00, ref => 'D-2')$$);
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.00, now() + interval '1 day', 'D-2')$$);
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM v27_try($$SELECT allocation.record_deal('v27_customer', '1', 10.00, ref => 'D-2')$$);
ROLLBACK;
SELECT * FROM v27_try($$SELECT * FROM allocation.team_shares_at(12345)$$);
SELECT * FROM v27_try($$SELECT * FROM allocation.team_shares_at(NULL)$$);
RESET ROLE;
SELECT s = b AS nothing_stored_changed
  FROM v27_stored s,
       (SELECT :before_teams::bigint, :before_member_versions::bigint, :before_current_versions::bigint, :before_links::bigint,
               :before_open_links::bigint, :before_dissolved::bigint, :before_deals::bigint, :before_split_lines::bigint,
               :before_events::bigint) b;

-------------------------------------------------------------------------------
-- The deferred check: an unbalanced team cannot be committed (even by the owner)
-------------------------------------------------------------------------------
\set VERBOSITY terse
BEGIN;
INSERT INTO allocation.virtual_team_member (team_id, rep_id, share, valid_from, changed_by)
VALUES (:team1, 4, 10, now(), 'by hand');
SELECT 'not checked before commit' AS deferred;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
BEGIN;
UPDATE allocation.virtual_team_member SET share = share - 1 WHERE team_id = :team1 AND rep_id = 1 AND valid_to IS NULL;
COMMIT;
\echo :LAST_ERROR_SQLSTATE
-- an old boundary unbalanced is found too
BEGIN;
UPDATE allocation.virtual_team_member SET share = 1
 WHERE id = (SELECT min(id) FROM allocation.virtual_team_member WHERE team_id = :team1);
COMMIT;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- immediate: still one statement per change, balanced at its end
BEGIN;
SET CONSTRAINTS allocation.virtual_team_member_balanced IMMEDIATE;
SELECT allocation.set_team_shares(:team1, '[{"rep_id": 1, "share": 50, "role": "key account"},
                                            {"rep_id": 2, "share": 30, "role": "county rep"},
                                            {"rep_id": 3, "share": 20, "role": "crop specialist"}]');
COMMIT;
-- balanced by hand: commits
BEGIN;
UPDATE allocation.virtual_team_member SET share = CASE rep_id WHEN 1 THEN 49 ELSE 31 END
 WHERE team_id = :team1 AND rep_id IN (1, 2) AND valid_to IS NULL;
COMMIT;
SELECT rep_code, share FROM allocation.team_shares_at(:team1);

-------------------------------------------------------------------------------
-- One team per customer; customers move between teams; removal keeps history
-------------------------------------------------------------------------------
SET ROLE regress_v27_mgr;
SELECT allocation.create_virtual_team('Grower program', NULL, tstzrange(now(), NULL),
           '[{"rep_id": 4, "share": 70, "role": "county rep"}, {"rep_id": 3, "share": 30, "role": "crop specialist"}]',
           'v27_customer', ARRAY['5', '6']) AS team2 \gset
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_customer'', ''2'')', :team2));
SELECT allocation.remove_team_customer(:team1, 'v27_customer', '2');
SELECT allocation.add_team_customer(:team2, 'v27_customer', '2');
RESET ROLE;
SELECT * FROM v27_links ORDER BY key, open;
SELECT * FROM allocation.split_revenue('v27_customer', '2', 99.99);
SELECT kind, key, actor FROM allocation.event WHERE kind LIKE 'virtual_team_customer%' ORDER BY id;

-------------------------------------------------------------------------------
-- A team that starts later: its customers' deals go to their holders until then
-------------------------------------------------------------------------------
SET ROLE regress_v27_mgr;
SELECT allocation.create_virtual_team('Next season', NULL, tstzrange(now() + interval '10 days', now() + interval '40 days'),
           '[{"rep_id": 2, "share": 60}, {"rep_id": 1, "share": 40}]', 'v27_customer', ARRAY['3']) AS team4 \gset
-- its shares change before it starts: the first versions never apply
SELECT allocation.set_team_shares(:team4, '[{"rep_id": 2, "share": 75}, {"rep_id": 1, "share": 25}]');
RESET ROLE;
SELECT * FROM allocation.split_revenue('v27_customer', '3', 100.00);
SELECT * FROM allocation.split_revenue('v27_customer', '3', 100.00, now() + interval '11 days');
SELECT rep_code, share FROM allocation.team_shares_at(:team4, now() + interval '11 days');
SELECT rep, share, current FROM v27_members WHERE team = 'Next season' ORDER BY current, rep;
SELECT count(*) FILTER (WHERE valid_to = valid_from) AS zero_length_versions FROM allocation.virtual_team_member WHERE team_id = :team4;
-- dissolved before it started: it keeps its planned period, its link never applied
SET ROLE regress_v27_mgr;
SELECT allocation.dissolve_virtual_team(:team4, 'season plan changed');
RESET ROLE;
SELECT upper(valid) - lower(valid) AS planned_length, dissolved_at IS NOT NULL AS dissolved FROM allocation.virtual_team WHERE id = :team4;
SELECT valid_to = valid_from AS zero_length_link FROM allocation.virtual_team_customer WHERE team_id = :team4;
SELECT * FROM allocation.split_revenue('v27_customer', '3', 100.00, now() + interval '11 days');

-------------------------------------------------------------------------------
-- Dissolution: at the end of the period (the scheduler), idempotent; or early by a manager
-------------------------------------------------------------------------------
SET ROLE regress_v27_mgr;
SELECT allocation.create_virtual_team('Spring campaign', 'two weeks of field days', tstzrange(now(), now() + interval '14 days'),
           '[{"rep_id": 4, "share": 100}]', 'v27_customer', ARRAY['4']) AS team3 \gset
-- not over yet
SELECT allocation.dissolve_virtual_teams();
-- three weeks later (a time ahead of the clock ends the team at the clock)
SELECT allocation.dissolve_virtual_teams(now() + interval '21 days') AS dissolved;
SELECT allocation.dissolve_virtual_teams(now() + interval '21 days') AS dissolved_again;
RESET ROLE;
SELECT name, dissolved_at IS NOT NULL AS dissolved, dissolved_by, dissolve_reason, coalesce(upper(valid) <= clock_timestamp(), false) AS ended
  FROM allocation.virtual_team ORDER BY id;
SELECT * FROM v27_links WHERE team = 'Spring campaign';
SELECT kind, reason, detail - 'ended' - 'virtual_team' AS detail FROM allocation.event WHERE kind = 'virtual_team_dissolved' ORDER BY id;
SELECT * FROM allocation.split_revenue('v27_customer', '4', 10.00);
SET ROLE regress_v27_mgr;
SELECT * FROM v27_try(format('SELECT allocation.add_team_customer(%s, ''v27_customer'', ''3'')', :team3));
SELECT * FROM v27_try(format('SELECT allocation.set_team_shares(%s, ''[{"rep_id": 1, "share": 100}]'')', :team3));
SELECT * FROM v27_try(format('SELECT allocation.dissolve_virtual_team(%s, ''again'')', :team3));
-- the customer is free for another team
SELECT allocation.add_team_customer(:team2, 'v27_customer', '4');
-- early, with a reason
SELECT allocation.dissolve_virtual_team(:team2, 'the grower program was cancelled');
-- a year later the provincial program is over too
SELECT allocation.dissolve_virtual_teams(now() + interval '1 year') AS dissolved_a_year_later;
RESET ROLE;
SELECT name, dissolved_at IS NOT NULL AS dissolved, dissolve_reason, coalesce(upper(valid) <= clock_timestamp(), false) AS ended
  FROM allocation.virtual_team ORDER BY id;
SELECT count(*) FILTER (WHERE open) AS open_links, count(*) AS links FROM v27_links WHERE team = 'Grower program';
SELECT kind, reason, detail ->> 'customers_released' AS released FROM allocation.event WHERE kind = 'virtual_team_dissolved' ORDER BY id;
SELECT * FROM allocation.split_revenue('v27_customer', '5', 10.00);
-- the history stays: the split while the team was active
SELECT * FROM allocation.split_revenue('v27_customer', '5', 10.00,
                                       (SELECT valid_from FROM allocation.virtual_team_customer WHERE key = '5'));

DROP VIEW v27_stored, v27_members, v27_links;
DROP TABLE v27_customer CASCADE;
DROP TABLE v27_not_managed;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION v27_try(text);
DROP OWNED BY regress_v27_a, regress_v27_b, regress_v27_c, regress_v27_d, regress_v27_mgr, regress_v27_analyst, regress_v27_admin;
DROP ROLE regress_v27_a, regress_v27_b, regress_v27_c, regress_v27_d, regress_v27_mgr, regress_v27_analyst, regress_v27_admin;
