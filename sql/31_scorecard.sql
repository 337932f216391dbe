--
-- 31_scorecard: the allocation loop measured.  rep_measures(), scorecard() per
-- rep/team/territory, strategy_effectiveness() per rule/policy/territory/tier/crop,
-- refresh_scorecards() and scorecard_monthly, rewards by rule with
-- evaluate_performance(): a capacity bonus given for the next period and revoked by
-- the evaluation of that period, a daily claim bonus shown by explain_claim().
-- Simulated time: the period ends at t0, taken after the season's events.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_s31_a;
    CREATE ROLE regress_s31_b;
    CREATE ROLE regress_s31_mgr;
    CREATE ROLE regress_s31_an;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'other', 'Other team');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 20, 'regress_s31_a'),
    (2, 'b', 'Rep B', 1, 20, 'regress_s31_b'),
    (3, 'c', 'Rep C', 1, 20, NULL),
    (4, 'd', 'Rep D', 2, NULL, NULL);
SELECT allocation.grant_role('regress_s31_a', 'rep'), allocation.grant_role('regress_s31_b', 'rep'),
       allocation.grant_role('regress_s31_mgr', 'manager'), allocation.grant_role('regress_s31_an', 'analyst');
INSERT INTO allocation.territory (id, code, name, geom, owner_rep_id) VALUES
    (1, 'west', 'West county', ST_Multi(ST_MakeEnvelope(110, 28, 111, 29, 4326)), 1),
    (2, 'east', 'East county', ST_Multi(ST_MakeEnvelope(111, 28, 112, 29, 4326)), 2);
CREATE TABLE s31_customer (id integer PRIMARY KEY, tier text, crop text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('s31_customer', 'id', 'loc', 'owner', '{"tier": "tier", "crop": "crop"}');
INSERT INTO allocation.rule (name, priority, crops, target_kind, target_rep_id) VALUES ('rice to a', 20, '{rice}', 'rep', 1);
INSERT INTO allocation.rule (name, priority, target_kind, target_team_id, policy) VALUES ('the rest to the territory owner', 10, 'team', 1, 'territory_owner');
INSERT INTO allocation.claim_policy (team_id, tier, daily_claims) VALUES (NULL, NULL, 2);
-- key accounts are reserved: no rep may hold one through claims (max_held 0)
INSERT INTO allocation.claim_policy (team_id, tier, max_held) VALUES (NULL, 'key', 0);

-- the season: a gets 6 rice growers in the west, b 4 wheat growers in the east, c two by hand
INSERT INTO s31_customer (id, tier, crop, loc)
SELECT g, 'grower', 'rice', ST_Point(110.5, 28.5, 4326) FROM generate_series(1, 6) g;
INSERT INTO s31_customer (id, tier, crop, loc)
SELECT g, 'dealer', 'wheat', ST_Point(111.5, 28.5, 4326) FROM generate_series(7, 10) g;
INSERT INTO s31_customer (id, tier, crop, owner) VALUES (11, 'dealer', 'cotton', 3), (12, 'dealer', 'cotton', 3);
SELECT c.id, r.code AS owner FROM s31_customer c JOIN allocation.rep r ON r.id = c.owner ORDER BY c.id;
-- a visits 3 of its growers, b one dealer; c nobody
SET ROLE regress_s31_a;
SELECT count(allocation.log_followup('s31_customer', g::text, 'visit', 'samples')) AS a_visits FROM generate_series(1, 3) g;
SET ROLE regress_s31_b;
SELECT allocation.log_followup('s31_customer', '7', 'call', 'price list') > 0 AS b_call;
RESET ROLE;
-- deals: two of a's growers, one of b's dealers
SELECT allocation.record_deal('s31_customer', '1', 1000.00, ref => 'S31-1') > 0 AS d1,
       allocation.record_deal('s31_customer', '2', 500.00, ref => 'S31-2') > 0 AS d2,
       allocation.record_deal('s31_customer', '7', 300.00, ref => 'S31-3') > 0 AS d3;
-- satisfaction surveys (as an outcome table lands them)
INSERT INTO allocation.satisfaction (managed_id, key, at, score, scale, score_pct, rep_id, recorded_by) VALUES
    (1, '1', now(), 5, '1-5', 100, 1, 'survey'), (1, '2', now(), 4, '1-5', 75, 1, 'survey'),
    (1, '7', now(), 6, 'nps', 60, 2, 'survey');
-- c gives one back to the pool, b claims it
SELECT allocation.release('s31_customer', '12', 'no time');
SELECT allocation.claim('s31_customer', '12', 2);
SELECT now() AS t0 \gset

-------------------------------------------------------------------------------
-- Measures per rep, scorecards, strategy effectiveness
-------------------------------------------------------------------------------
SET ROLE regress_s31_mgr;
SELECT m.rep_id, r.code, m.held_end, m.touched_pct, m.first_contact_median < interval '1 minute' AS contacted_at_once,
       m.first_contacts, m.conversion_base, m.converted, m.conversion_pct, m.revenue, m.satisfaction_avg, m.satisfaction_n,
       m.claims, m.releases, m.recycled_away
  FROM allocation.rep_measures(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0')) m
  JOIN allocation.rep r ON r.id = m.rep_id ORDER BY m.rep_id;
SELECT level, code, held_end, touched_pct, conversion_base, converted, conversion_pct, revenue, satisfaction_avg, satisfaction_n,
       claims, releases
  FROM allocation.scorecard(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
SET ROLE regress_s31_an;
SELECT dimension, value, holdings, started, touched_pct, conversion_base, converted, conversion_pct, revenue, revenue_per_holding,
       satisfaction_avg
  FROM allocation.strategy_effectiveness(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
-- a rep reads its own row only, and not the comparison of everyone's customers
SET ROLE regress_s31_a;
SELECT rep_id, held_end, converted FROM allocation.rep_measures(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
SELECT level, code, held_end FROM allocation.scorecard(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
\set VERBOSITY default
SELECT * FROM allocation.strategy_effectiveness(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
-- bad periods
SELECT * FROM allocation.rep_measures(NULL);
SELECT * FROM allocation.scorecard('empty');
SELECT * FROM allocation.scorecard(tstzrange('2027-01-01 00:00+08', NULL));
SELECT * FROM allocation.rep_measures(tstzrange(now() - interval '1 day', now()), 0);
\set VERBOSITY terse
RESET ROLE;

-- the monthly snapshots: refreshed in one statement per month; a rep reads its own rows
SELECT allocation.refresh_scorecards(now()) > 0 AS refreshed;
SELECT allocation.refresh_scorecards(now()) = (SELECT count(*) FROM allocation.scorecard_month) AS refresh_again_same_rows;
SELECT level, code, held_end, converted FROM allocation.scorecard_monthly
 WHERE month = allocation._month_date(allocation.month_of(now())) ORDER BY level, code;
SET ROLE regress_s31_b;
SELECT level, code, held_end FROM allocation.scorecard_monthly WHERE month = (SELECT max(month) FROM allocation.scorecard_monthly);
RESET ROLE;
SELECT * FROM allocation.refresh_scorecards(NULL);

-------------------------------------------------------------------------------
-- Rewards: earned in the period, in force for the next one, revoked by its evaluation
-------------------------------------------------------------------------------
INSERT INTO allocation.reward_rule (name, measure, threshold, min_customers, team_id, effect, amount) VALUES
    ('converters', 'conversion_pct', 30, 3, 1, 'capacity_bonus', 2),
    ('earners', 'revenue', 100, 1, NULL, 'daily_claims_bonus', 5),
    ('big converters', 'conversion_pct', 90, 1, NULL, 'capacity_bonus', 10),
    ('earners get room', 'revenue', 100, 1, NULL, 'capacity_bonus', 1);
-- b has no capacity limit while the rewards are given: its capacity bonus adds nothing
UPDATE allocation.rep SET capacity = NULL WHERE id = 2;
INSERT INTO allocation.reward_rule (name, measure, threshold, effect, amount, tier) VALUES
    ('dealers for the happy', 'satisfaction_avg', 80, 'tier_access', 3, 'key');
SET ROLE regress_s31_mgr;
SELECT rep_code, rule, action, effect, amount, measure_value, lower(effective) = :'t0'::timestamptz AS from_t0
  FROM allocation.evaluate_performance(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0')) ORDER BY rep_code, rule;
-- idempotent: nothing the second time
SELECT count(*) AS second_run FROM allocation.evaluate_performance(tstzrange(:'t0'::timestamptz - interval '7 days', :'t0'));
RESET ROLE;
SELECT code, capacity FROM allocation.rep WHERE id IN (1, 2) ORDER BY id;
SELECT rep_code, rule, effect, amount FROM allocation.active_reward ORDER BY rep_code, rule;
-- the limits a reward raises, and explain_claim() says why
SELECT max_held, daily_claims FROM allocation.claim_limits(1, NULL);
SELECT max_held AS a_key_max_held, (SELECT max_held FROM allocation.claim_limits(2, 'key')) AS b_key_max_held FROM allocation.claim_limits(1, 'key');
SELECT regexp_replace(x ->> 'message', 'until .*\)', 'until <t0 + 7 days>)') AS a_daily_limit
  FROM jsonb_array_elements(allocation.explain_claim('s31_customer', '12', 1) -> 'checks') x WHERE x ->> 'check' = 'daily_limit';
SELECT regexp_replace(x ->> 'message', 'until .*\)', 'until <t0 + 7 days>)') AS a_capacity
  FROM jsonb_array_elements(allocation.explain_claim('s31_customer', '12', 1) -> 'checks') x WHERE x ->> 'check' = 'capacity';
-- explain() (the trigger's own decision trace) says why a's capacity is higher
SELECT c ->> 'rep' AS rep, c ->> 'capacity' AS capacity,
       regexp_replace(c ->> 'capacity_reward', 'until [^)]*', 'until <t0 + 7 days>') AS capacity_reward
  FROM jsonb_array_elements(allocation.explain('s31_customer', '1') -> 'rules') r,
       jsonb_array_elements(r -> 'candidates') c
 WHERE c ? 'capacity_reward';
SELECT kind, to_rep, detail ->> 'effect' AS effect, detail ->> 'amount' AS amount FROM allocation.event
 WHERE kind LIKE 'reward_%' ORDER BY id;
-- a rep sees its own rewards
SET ROLE regress_s31_b;
SELECT rep_code, rule FROM allocation.active_reward;
RESET ROLE;
-- an admin gives b a limit again meanwhile: the revocation takes back only what was added (nothing)
UPDATE allocation.rep SET capacity = 20 WHERE id = 2;
SELECT rep_code, rule, capacity_added FROM allocation.reward w JOIN allocation.active_reward v ON v.id = w.id
 WHERE w.effect = 'capacity_bonus' ORDER BY rep_code, rule;
-- the next period: its evaluation revokes them (a's capacity goes back, b's stays) and gives none (no deals in it)
SET ROLE regress_s31_mgr;
SELECT rep_code, rule, action, effect, amount
  FROM allocation.evaluate_performance(tstzrange(:'t0', :'t0'::timestamptz + interval '7 days')) ORDER BY rep_code, rule;
RESET ROLE;
SELECT code, capacity FROM allocation.rep WHERE id IN (1, 2) ORDER BY id;
SELECT count(*) AS active_rewards FROM allocation.active_reward;
SELECT count(*) AS explained_capacity_rewards
  FROM jsonb_array_elements(allocation.explain('s31_customer', '1') -> 'rules') r,
       jsonb_array_elements(r -> 'candidates') c
 WHERE c ? 'capacity_reward';
SELECT daily_claims, (SELECT max_held FROM allocation.claim_limits(1, 'key')) AS key_max_held FROM allocation.claim_limits(1, NULL);
-- bad inputs and roles
\set VERBOSITY default
SET ROLE regress_s31_a;
SELECT * FROM allocation.evaluate_performance(tstzrange(now() - interval '1 day', now()));
RESET ROLE;
SELECT * FROM allocation.evaluate_performance(NULL);
SELECT * FROM allocation.evaluate_performance('empty');
SELECT * FROM allocation.evaluate_performance(tstzrange('2027-03-01 00:00+00', '2027-03-31 00:00+00', '[]'));
INSERT INTO allocation.reward_rule (name, measure, threshold, effect, amount) VALUES ('bad', 'loudness', 1, 'capacity_bonus', 1);
INSERT INTO allocation.reward_rule (name, measure, threshold, effect, amount) VALUES ('bad', 'revenue', 1, 'tier_access', 1);
INSERT INTO allocation.reward_rule (name, measure, threshold, effect, amount) VALUES ('bad', 'revenue', 1, 'capacity_bonus', 0);
\set VERBOSITY terse

-------------------------------------------------------------------------------
-- The alert kinds that read these measures: low conversion, untouched high potential
-------------------------------------------------------------------------------
SELECT allocation.set_potential('s31_customer', 'id * 100', '{"high": 500}');
INSERT INTO allocation.alert_rule (name, kind, params) VALUES
    ('converts below 30 %', 'low_conversion', '{"below_pct": 30, "period_days": 30, "min_customers": 3}'),
    ('high potential untouched 14 days', 'untouched_high_potential', '{"days": 14, "tiers": ["high"]}');
SET ROLE regress_s31_mgr;
SELECT opened, resolved FROM allocation.evaluate_alerts(:'t0'::timestamptz + interval '20 days');
RESET ROLE;
SELECT a.kind, a.subject, r.code AS rep, a.detail ->> 'conversion_pct' AS conversion_pct, a.detail ->> 'potential_tier' AS tier
  FROM allocation.alert a LEFT JOIN allocation.rep r ON r.id = a.rep_id WHERE a.resolved_at IS NULL ORDER BY a.kind, a.subject;
-- a manager resolves b's low-conversion alert by hand: not raised again the next day while it lasts
SELECT allocation.resolve_alert((SELECT id FROM allocation.alert WHERE kind = 'low_conversion' AND resolved_at IS NULL), 'coaching agreed');
SET ROLE regress_s31_mgr;
SELECT opened FROM allocation.evaluate_alerts(:'t0'::timestamptz + interval '21 days');
RESET ROLE;
SELECT count(*) AS low_conversion_open FROM allocation.alert WHERE kind = 'low_conversion' AND resolved_at IS NULL;
-- an amount that is no number of money is refused like any bad amount
SELECT allocation.record_deal('s31_customer', '3', 'NaN', ref => 'S31-NaN');
-- the bar for "high" goes up: the customers below it clear at the next evaluation (idempotent otherwise)
SELECT allocation.set_potential('s31_customer', 'id * 100', '{"high": 1000}');
SET ROLE regress_s31_mgr;
SELECT opened, resolved FROM allocation.evaluate_alerts(:'t0'::timestamptz + interval '20 days');
RESET ROLE;
SELECT a.subject FROM allocation.alert a WHERE a.kind = 'untouched_high_potential' AND a.resolved_at IS NULL ORDER BY a.subject;
\set VERBOSITY default
INSERT INTO allocation.alert_rule (name, kind, params) VALUES ('bad', 'low_conversion', '{"below_pct": 130, "period_days": 7, "min_customers": 3}');
INSERT INTO allocation.alert_rule (name, kind, params) VALUES ('bad', 'untouched_high_potential', '{"days": 14}');
INSERT INTO allocation.alert_rule (name, kind, params) VALUES ('bad', 'untouched_high_potential', '{"days": 14, "tiers": ["high"], "table": "pg_class"}');
\set VERBOSITY terse
DELETE FROM allocation.alert_rule;

-------------------------------------------------------------------------------
-- New reps: during the ramp-up, recycling takes at most max_recycled customers away
-------------------------------------------------------------------------------
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, max_recycled) VALUES (NULL, interval '90 days', 1);
INSERT INTO allocation.recycle_policy (name, tbl, no_followup) VALUES ('s31 30 days', 's31_customer', interval '30 days');
UPDATE allocation.rep SET created_at = now() - interval '1 year' WHERE id = 3;   -- c is no new rep
SELECT r.code, count(*) FILTER (WHERE s.exempt IS NULL) AS would_go, count(*) FILTER (WHERE s.exempt LIKE 'new rep%') AS protected
  FROM allocation.upcoming_recycles(now() + interval '40 days') s JOIN allocation.rep r ON r.id = s.rep_id
 GROUP BY r.code ORDER BY r.code;
-- a customer exempt for another reason (locked) uses none of a new rep's quota: lock the one
-- of a's that would go, and another of a's goes instead
SELECT count(*) AS locked FROM (
    SELECT allocation.lock_customer('s31_customer', s.key, 'key account talks')
      FROM allocation.upcoming_recycles(now() + interval '40 days') s WHERE s.rep_id = 1 AND s.exempt IS NULL) x;
SELECT r.code, count(*) FILTER (WHERE s.exempt IS NULL) AS would_go, count(*) FILTER (WHERE s.exempt LIKE 'new rep%') AS protected,
       count(*) FILTER (WHERE s.exempt = 'locked') AS locked
  FROM allocation.upcoming_recycles(now() + interval '40 days') s JOIN allocation.rep r ON r.id = s.rep_id
 WHERE r.code = 'a' GROUP BY r.code;
SELECT r.code, count(*) AS recycled FROM allocation.recycle(now() + interval '40 days') x JOIN allocation.rep r ON r.id = x.rep_id
 WHERE x.action = 'recycled' GROUP BY r.code ORDER BY r.code;
-- the next run: the new reps' one is used up, nothing more goes
SELECT count(*) FILTER (WHERE x.action = 'recycled') AS recycled_again FROM allocation.recycle(now() + interval '41 days') x;
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, max_recycled) VALUES (NULL, interval '0', 1);

-------------------------------------------------------------------------------
-- New reps: round-robin rules give a new rep at least min_share of their fresh leads
-------------------------------------------------------------------------------
INSERT INTO allocation.team (id, code, name) VALUES (3, 'rr', 'Inside sales');
INSERT INTO allocation.rep (id, code, name, team_id, created_at) VALUES
    (5, 'e', 'Rep E', 3, now() - interval '1 year'), (6, 'f', 'Rep F', 3, now() - interval '1 year'),
    (7, 'g', 'Rep G (new)', 3, now() - interval '10 days'), (8, 'h', 'Rep H', 3, now() - interval '1 year');
CREATE TABLE s31_lead (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('s31_lead', 'id', 'loc', 'owner');
INSERT INTO allocation.rule (name, priority, tbl, target_kind, target_team_id, policy)
     VALUES ('web leads round robin', 30, 's31_lead', 'team', 3, 'round_robin');
-- no minimum share yet: plain turns, one lead each
INSERT INTO s31_lead (id) SELECT g FROM generate_series(1, 4) g;
SELECT string_agg(r.code, ' ' ORDER BY l.id) AS first_four FROM s31_lead l JOIN allocation.rep r ON r.id = l.owner;
SELECT count(*) AS shares_counted FROM allocation.rr_share;
-- the inside-sales team guarantees a new rep 40 % of the leads during 90 days
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, min_share) VALUES (3, interval '90 days', 0.4);
-- explain() says who would be served first and why, and counts nothing
SELECT r ->> 'why' AS why, r ->> 'chosen_rep_id' AS chosen
  FROM jsonb_array_elements(allocation.explain('s31_lead', '{"id": 99}'::jsonb) -> 'rules') r WHERE r ->> 'rule' = 'web leads round robin';
SELECT count(*) AS shares_counted FROM allocation.rr_share;
-- ten more leads: g gets a turn out of order whenever it would fall below 40 %; the others keep
-- their order (the cursor does not move for g's extra turns)
INSERT INTO s31_lead (id) SELECT g FROM generate_series(5, 14) g;
SELECT string_agg(r.code, ' ' ORDER BY l.id) AS next_ten FROM s31_lead l JOIN allocation.rep r ON r.id = l.owner WHERE l.id >= 5;
SELECT r.code, s.served, c.served - s.team_served_before AS team_served,
       round(s.served::numeric / (c.served - s.team_served_before), 2) AS share
  FROM allocation.rr_share s JOIN allocation.rep r ON r.id = s.rep_id JOIN allocation.rr_cursor c ON c.team_id = s.team_id;
-- once its ramp-up is over, g takes plain turns again
UPDATE allocation.rep SET created_at = now() - interval '100 days' WHERE id = 7;
INSERT INTO s31_lead (id) SELECT g FROM generate_series(15, 18) g;
SELECT string_agg(r.code, ' ' ORDER BY l.id) AS after_ramp_up FROM s31_lead l JOIN allocation.rep r ON r.id = l.owner WHERE l.id >= 15;
-- bad policies
\set VERBOSITY default
INSERT INTO allocation.new_rep_policy (team_id, ramp_up, min_share) VALUES (1, interval '30 days', 1.5);
INSERT INTO allocation.new_rep_policy (team_id, ramp_up) VALUES (1, interval '30 days');
\set VERBOSITY terse
DROP TABLE s31_lead;

DROP TABLE s31_customer;
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_s31_a, regress_s31_b, regress_s31_mgr, regress_s31_an;
DROP ROLE regress_s31_a, regress_s31_b, regress_s31_mgr, regress_s31_an;
