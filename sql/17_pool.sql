--
-- 17_pool: the public pool (公海): recycle policies by tier and territory,
-- follow-ups, a mapped last_contact column, stage progress, warnings K days
-- ahead, exemptions (locked, won, registration protection), idempotent
-- recycle(), the cooldown after a recycle, and the views.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';
SET IntervalStyle = 'postgres';
CREATE FUNCTION r17_mask(t text) RETURNS text LANGUAGE sql IMMUTABLE
RETURN regexp_replace(t, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');

DO $$ BEGIN CREATE ROLE regress_pool_a; CREATE ROLE regress_pool_b; END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, login) VALUES (1, 'a', 'Rep A', 1, 'regress_pool_a'), (2, 'b', 'Rep B', 1, 'regress_pool_b');
SELECT allocation.grant_role('regress_pool_a', 'rep'), allocation.grant_role('regress_pool_b', 'rep');
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "P", "name": "Province"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[20,0],[20,10],[0,10],[0,0]]]}},
  {"type": "Feature", "properties": {"code": "C", "name": "Cotton county", "parent": "P"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}
]}'::jsonb, parent_property => 'parent');
UPDATE allocation.territory SET priority = 1 WHERE code = 'C';

CREATE TABLE r17_customer (id integer PRIMARY KEY, name text, tier text, stage text, contacted timestamptz,
                           loc geometry(Point, 4326), owner bigint);
GRANT SELECT, INSERT ON r17_customer TO regress_pool_a, regress_pool_b;
SELECT allocation.manage('r17_customer', 'id', 'loc', 'owner',
                         '{"tier": "tier", "stage": "stage", "last_contact": "contacted"}');
INSERT INTO r17_customer (id, name, tier, stage, loc, owner) VALUES
    (1, 'cotton county, tier B',  'B', 'lead',    ST_SetSRID(ST_MakePoint(5, 5), 4326), 1),
    (2, 'province, tier B',       'B', 'lead',    ST_SetSRID(ST_MakePoint(15, 5), 4326), 1),
    (3, 'province, tier A',       'A', 'lead',    ST_SetSRID(ST_MakePoint(15, 6), 4326), 1),
    (4, 'won deal',               'B', 'won',     ST_SetSRID(ST_MakePoint(15, 7), 4326), 1),
    (5, 'locked',                 'B', 'lead',    ST_SetSRID(ST_MakePoint(15, 8), 4326), 1),
    (6, 'followed up',            'B', 'lead',    ST_SetSRID(ST_MakePoint(15, 9), 4326), 2),
    (7, 'contact column',         'B', 'lead',    ST_SetSRID(ST_MakePoint(16, 5), 4326), 2),
    (8, 'stage moved',            'B', 'lead',    ST_SetSRID(ST_MakePoint(16, 6), 4326), 2),
    (9, 'in the pool',            'B', 'lead',    ST_SetSRID(ST_MakePoint(16, 7), 4326), NULL);

-- policies: the default (30 days without a follow-up, 90 without progress), tier A is
-- given 60 days, and cotton county (a descendant of the province) only 10 days
INSERT INTO allocation.recycle_policy (name, no_followup, no_progress, warn_before, exempt_stages) VALUES
    ('default', '30 days', '90 days', '5 days', '{won}');
INSERT INTO allocation.recycle_policy (name, tier, no_followup, warn_before) VALUES ('tier A', 'A', '60 days', '7 days');
INSERT INTO allocation.recycle_policy (name, territory_id, no_followup, warn_before)
     VALUES ('cotton county', (SELECT id FROM allocation.territory WHERE code = 'C'), '10 days', '2 days');
-- bad policies
INSERT INTO allocation.recycle_policy (name) VALUES ('no clock');
INSERT INTO allocation.recycle_policy (name, no_followup) VALUES ('negative', '-1 day');
INSERT INTO allocation.recycle_policy (name, no_followup, warn_before) VALUES ('bad warning', '1 day', '-1 day');

SELECT allocation.lock_customer('r17_customer', '5', 'key account under negotiation');
-- follow-ups: a rep logs its own (the rep id cannot be forged); unknown customers and kinds are refused
SET ROLE regress_pool_b;
SELECT allocation.log_followup('r17_customer', '6', 'visit', 'interested in the new fungicide') > 0 AS logged;
-- a follow-up dated ahead would postpone recycling in advance
\set VERBOSITY terse
SELECT allocation.log_followup('r17_customer', '6', 'visit', at => now() + interval '20 days');
\echo :SQLSTATE
\set VERBOSITY default
-- follow-ups are recorded through log_followup() only (no direct INSERT, no forged rep)
INSERT INTO allocation.followup (managed_id, key, rep_id, kind, recorded_by) VALUES (1, '6', 1, 'call', 'someone');
SELECT allocation.log_followup('r17_customer', '999', 'visit');
\echo :SQLSTATE
\set VERBOSITY terse
SELECT allocation.log_followup('r17_customer', '6', 'lunch');
\echo :SQLSTATE
\set VERBOSITY default
RESET ROLE;
-- (the test simulates a visit on day 20: a superuser may date a follow-up ahead)
INSERT INTO allocation.followup (managed_id, key, rep_id, kind, outcome, at)
VALUES ((SELECT allocation._managed('r17_customer')).id, '6', 2, 'visit', 'simulated: day 20', now() + interval '20 days');
SELECT key, r.code AS rep, kind, outcome, progress, recorded_by FROM allocation.followup f LEFT JOIN allocation.rep r ON r.id = f.rep_id ORDER BY f.id;
-- the mapped last_contact column counts as a follow-up; a stage change as progress
UPDATE r17_customer SET contacted = now() + interval '25 days' WHERE id = 7;
UPDATE r17_customer SET stage = 'trial' WHERE id = 8;

-- only a superuser may run recycle() as of a later date (to simulate, as this test does)
DO $$ BEGIN CREATE ROLE regress_pool_mgr; END $$;
SELECT allocation.grant_role('regress_pool_mgr', 'manager');
SET ROLE regress_pool_mgr;
\set VERBOSITY terse
SELECT * FROM allocation.recycle(now() + interval '40 days');
\echo :SQLSTATE
\set VERBOSITY default
SELECT count(*) AS nothing_due_today FROM allocation.recycle();
RESET ROLE;
-- day 5: nothing is due yet; nothing to warn
SELECT * FROM allocation.recycle(now() + interval '5 days');
-- day 9: cotton county's customer 1 is warned (due on day 10)
SELECT table_name, key, r.code AS rep, action, r17_mask(reason) AS reason FROM allocation.recycle(now() + interval '9 days') x
  LEFT JOIN allocation.rep r ON r.id = x.rep_id;
-- the same run again warns nobody twice
SELECT count(*) AS second_run FROM allocation.recycle(now() + interval '9 days');
-- day 31: 1 and 2 (default) are recycled; 3 (tier A) not yet; 4 won, 5 locked; 6 and 7 followed up; 8 progressed
-- (but its follow-up clock still runs: 30 days without a follow-up); 9 is in the pool
SELECT key, r.code AS rep, action, r17_mask(reason) AS reason FROM allocation.recycle(now() + interval '31 days') x
  LEFT JOIN allocation.rep r ON r.id = x.rep_id ORDER BY action, key;
SELECT count(*) AS second_run FROM allocation.recycle(now() + interval '31 days');
SELECT id, owner FROM r17_customer ORDER BY id;
-- the recycle is in the history and the audit log, and the former owner's cooldown counts it
SELECT key, closed_reason FROM allocation.assignment WHERE key IN ('1', '2') AND valid_to IS NOT NULL ORDER BY key, id;
SELECT kind, key, r17_mask(reason) AS reason, detail ? 'due_at' AS has_due_at FROM allocation.event WHERE kind IN ('recycle', 'recycle_warning') ORDER BY id;
INSERT INTO allocation.claim_policy (cooldown) VALUES ('14 days');
\set VERBOSITY terse
SELECT allocation.claim('r17_customer', '1', 1);
\echo :SQLSTATE
\set VERBOSITY default
SELECT allocation.claim('r17_customer', '1', 2);

-- upcoming recycles (the warning list) as of a later day: a view over now(), so look through the function
SELECT s.key, r.code AS rep, p.name AS policy, s.due_at - s.warn_at AS warned_ahead, s.exempt
  FROM allocation.upcoming_recycles(now() + interval '58 days') s
  JOIN allocation.rep r ON r.id = s.rep_id JOIN allocation.recycle_policy p ON p.id = s.policy_id
 WHERE s.warn_at <= now() + interval '58 days' OR s.exempt IS NOT NULL ORDER BY s.key;
SELECT count(*) AS warned_now FROM allocation.upcoming_recycle;

-- registration protection: a rep registering a customer is exempt while protected
UPDATE allocation.claim_policy SET protection = '45 days';
SET ROLE regress_pool_a;
INSERT INTO r17_customer (id, name, tier, stage, loc, owner) VALUES (20, 'registered by a', 'B', 'lead', ST_SetSRID(ST_MakePoint(17, 5), 4326), 1);
RESET ROLE;
SELECT count(*) AS recycled_while_protected FROM allocation.recycle(now() + interval '40 days') WHERE key = '20' AND action = 'recycled';
SELECT key, action FROM allocation.recycle(now() + interval '46 days') WHERE key = '20';

SELECT * FROM allocation.check_consistency();
DROP TABLE r17_customer;
DROP FUNCTION r17_mask(text);
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_pool_a, regress_pool_b, regress_pool_mgr;
DROP ROLE regress_pool_a, regress_pool_b, regress_pool_mgr;
