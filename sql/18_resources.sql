--
-- 18_resources: pooled scarce resources (issue #4, first part): pools with a season,
-- eligibility and caps, requests granted / pending / waitlisted, approval, rejection,
-- release (the waitlist is served in order), expiry, expert slots that cannot overlap,
-- every bad input with its SQLSTATE, and that a refused request changes nothing.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

CREATE FUNCTION r18_try(sql text) RETURNS TABLE (code text, message text, detail text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    RETURN NEXT;
END $f$;

INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id) VALUES (1, 'a', 'Rep A', 1), (2, 'b', 'Rep B', 1), (9, 'expert', 'Dr. Expert', 1);
CREATE TABLE r18_customer (id int PRIMARY KEY, tier text, crop text, stage text, output numeric, tags text[], loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('r18_customer', 'id', 'loc', 'owner', '{"tier": "tier", "crop": "crop", "stage": "stage", "expected_output": "output", "tags": "tags"}');
INSERT INTO r18_customer (id, tier, crop, stage, owner) VALUES
    (1, 'retailer', 'rice', 'promotion', 1), (2, 'retailer', 'rice', 'promotion', 1),
    (3, 'retailer', 'rice', 'promotion', 2), (4, 'grower', 'cotton', 'lead', 2), (8, 'retailer', 'rice', 'promotion', 2);

INSERT INTO allocation.resource_pool (code, name, kind, unit, total, remaining, tiers, stages, per_customer_cap, per_rep_cap, valid_to)
VALUES ('samples', 'New fungicide samples', 'sample', 'box', 5, 5, '{retailer}', '{promotion}', 2, 3, now() + interval '90 days');
INSERT INTO allocation.resource_pool (code, name, kind, unit, total, remaining, approval_required, allow_override, tiers)
VALUES ('rights', 'New-product sales right', 'product_right', 'right', 1, 1, true, true, '{retailer}');
INSERT INTO allocation.resource_pool (code, name, kind, unit, total, remaining)
VALUES ('visits', 'Expert field visits', 'expert_visit', 'visit', 10, 10);
-- a pool can never hold more or less than its total
SELECT code, message FROM r18_try($$INSERT INTO allocation.resource_pool (code, name, kind, total, remaining) VALUES ('bad', 'x', 'gift', 1, 2)$$);
SELECT code, message FROM r18_try($$INSERT INTO allocation.resource_pool (code, name, kind, total, remaining) VALUES ('bad', 'x', 'lottery', 1, 1)$$);

CREATE VIEW r18_state AS
SELECT (SELECT string_agg(code || '=' || remaining, ',' ORDER BY id) FROM allocation.resource_pool) AS remaining,
       (SELECT count(*) FROM allocation.resource_request) AS requests,
       (SELECT coalesce(string_agg(key || ':' || used, ',' ORDER BY key), '') FROM allocation.resource_customer_use) AS customer_use,
       (SELECT coalesce(string_agg(rep_id || ':' || used, ',' ORDER BY rep_id), '') FROM allocation.resource_rep_use) AS rep_use,
       (SELECT count(*) FROM allocation.event WHERE kind LIKE 'resource%') AS events;

-- matching: every pool, ranked, eligible or not and why
SELECT code, eligible, failed FROM allocation.match_resources('r18_customer', '4');
SELECT code, eligible, failed FROM allocation.match_resources('r18_customer', '1');

-- bad inputs: nothing changes
SELECT * FROM r18_state \gset before_
SELECT * FROM r18_try($$SELECT allocation.request_resource(999, 'r18_customer', '1', 1)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 0)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 1.5)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', NULL)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '999', 1)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'pg_class', '1', 1)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '4', 1)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 3)$$);
SELECT * FROM r18_try($$SELECT allocation.request_resource(3, 'r18_customer', '1', 1)$$);
SELECT * FROM r18_state \gset after_
SELECT :'before_remaining' = :'after_remaining' AS pools_kept, :before_requests = :after_requests AS requests_kept,
       :'before_customer_use' = :'after_customer_use' AS caps_kept, :before_events = :after_events AS events_kept;

-- a rep requests for its own customers only
DO $$ BEGIN CREATE ROLE regress_res_b; END $$;
UPDATE allocation.rep SET login = 'regress_res_b' WHERE id = 2;
SELECT allocation.grant_role('regress_res_b', 'rep');
SET ROLE regress_res_b;
SELECT code, message FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 1)$$);
RESET ROLE;
UPDATE allocation.rep SET login = NULL WHERE id = 2;

-- grants: caps per customer (2) and per rep (3)
SELECT key, qty, status FROM allocation.request_resource(1, 'r18_customer', '1', 2);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 1)$$);   -- customer cap
SELECT key, qty, status FROM allocation.request_resource(1, 'r18_customer', '2', 1);
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '2', 1)$$);   -- rep a's cap
SELECT key, qty, status FROM allocation.request_resource(1, 'r18_customer', '3', 2);
-- nothing left: waitlisted, in order -- but never a request its caps could not allow
SELECT * FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '2', 1)$$);
SELECT key, qty, status FROM allocation.request_resource(1, 'r18_customer', '8', 1);
SELECT request_id, pool, qty, key, position FROM allocation.resource_waitlist;
SELECT code, total, remaining, granted, pending, waitlisted, by_rep, by_tier FROM allocation.resource_utilization ORDER BY pool_id;
-- a release gives the units back and serves the waitlist (customer 8 gets its box)
SELECT status FROM allocation.release_grant((SELECT min(id) FROM allocation.resource_request WHERE key = '1'), 'dealer closed for the season');
SELECT request_id, pool, qty, key, status, reason FROM allocation.grant_ledger WHERE pool = 'samples' ORDER BY request_id;
SELECT * FROM r18_try($$SELECT allocation.release_grant((SELECT min(id) FROM allocation.resource_request WHERE key = '1'), 'again')$$);

-- approval: the sales right needs a manager; an ineligible grower only with an override
SELECT key, status FROM allocation.request_resource(2, 'r18_customer', '2', 1);
SELECT status FROM allocation.approve_request((SELECT id FROM allocation.resource_request WHERE pool_id = 2 AND key = '2'));
SELECT * FROM r18_try($$SELECT allocation.approve_request((SELECT id FROM allocation.resource_request WHERE pool_id = 2 AND key = '2'))$$);
SELECT key, status FROM allocation.request_resource(2, 'r18_customer', '3', 1);
SELECT status, reason FROM allocation.reject_request((SELECT id FROM allocation.resource_request WHERE pool_id = 2 AND key = '3'), 'one right per county');

-- a manager's grant: no approval step; an ineligible customer only when the pool allows overrides
UPDATE allocation.resource_pool SET total = 2, remaining = 1 WHERE code = 'rights';
SELECT key, status, note FROM allocation.grant_resource(2, 'r18_customer', '4', 1, 'demonstration farm');
SELECT * FROM r18_try($$SELECT allocation.grant_resource(1, 'r18_customer', '4', 1, 'not allowed here')$$);
SELECT * FROM r18_try($$SELECT allocation.grant_resource(2, 'r18_customer', '4', 1, '')$$);
SELECT detail->'override' AS overridden FROM allocation.event WHERE kind = 'resource_requested' AND key = '4';

-- a minimum record: follow-ups of the last year (a deal counts three times)
INSERT INTO allocation.resource_pool (code, name, kind, total, remaining, min_history_score) VALUES ('loyal', 'Loyalty gift', 'gift', 10, 10, 3);
SELECT code, eligible, failed FROM allocation.match_resources('r18_customer', '8') WHERE code = 'loyal';
INSERT INTO allocation.followup (managed_id, key, kind) VALUES ((SELECT allocation._managed('r18_customer')).id, '8', 'deal');
SELECT code, eligible, checks->-2 AS history FROM allocation.match_resources('r18_customer', '8') WHERE code = 'loyal';
SELECT key, status FROM allocation.request_resource((SELECT id FROM allocation.resource_pool WHERE code = 'loyal'), 'r18_customer', '8', 1);
-- a minimum expected output (the mapped column)
INSERT INTO allocation.resource_pool (code, name, kind, total, remaining, min_expected_output) VALUES ('big', 'Big buyer rebate', 'gift', 10, 10, 500);
UPDATE r18_customer SET output = 800 WHERE id = 3;
SELECT key, eligible, failed FROM (SELECT '3' AS key, * FROM allocation.match_resources('r18_customer', '3')
                                   UNION ALL SELECT '8', * FROM allocation.match_resources('r18_customer', '8')) x WHERE code = 'big' ORDER BY key;
-- tags (the mapped tags column)
INSERT INTO allocation.resource_pool (code, name, kind, total, remaining, tags) VALUES ('coop', 'Cooperative bonus', 'gift', 10, 10, '{cooperative}');
UPDATE r18_customer SET tags = '{cooperative,vip}' WHERE id = 8;
SELECT key, eligible, failed FROM (SELECT '3' AS key, * FROM allocation.match_resources('r18_customer', '3')
                                   UNION ALL SELECT '8', * FROM allocation.match_resources('r18_customer', '8')) x WHERE code = 'coop' ORDER BY key;
SELECT code, by_tier, by_territory FROM allocation.resource_utilization WHERE code = 'loyal';
-- did the resources pay off? grants against what the customers did afterwards
SELECT pool, key, status, followups_since, deals_since, converted FROM allocation.grant_outcome WHERE key = '8' ORDER BY request_id;

-- expert visits: one expert cannot be booked twice for overlapping times
SELECT status FROM allocation.request_resource(3, 'r18_customer', '1', 1, 'rice blast',
       slot => tstzrange('2026-12-01 09:00+08', '2026-12-01 12:00+08'), expert => 9);
SELECT * FROM r18_try($$SELECT allocation.request_resource(3, 'r18_customer', '3', 1, 'overlap',
       slot => tstzrange('2026-12-01 11:00+08', '2026-12-01 13:00+08'), expert => 9)$$);
SELECT status FROM allocation.request_resource(3, 'r18_customer', '3', 1, 'afterwards',
       slot => tstzrange('2026-12-01 12:00+08', '2026-12-01 14:00+08'), expert => 9);
SELECT * FROM r18_try($$SELECT allocation.request_resource(3, 'r18_customer', '2', 1)$$);
SELECT remaining FROM allocation.resource_pool WHERE code = 'visits';

-- expiry: the season ends, the units come back once
UPDATE allocation.resource_pool SET valid_to = now() + interval '1 second', valid_from = NULL WHERE code = 'samples';
SELECT allocation.expire_grants(now() + interval '1 day') AS expired, allocation.expire_grants(now() + interval '1 day') AS expired_again;
SELECT count(*) AS still_granted FROM allocation.resource_request WHERE pool_id = 1 AND status = 'granted';
SELECT code, remaining, granted FROM allocation.resource_utilization WHERE code = 'samples';
-- a pool whose season ended takes no requests, and the refusal changes nothing
UPDATE allocation.resource_pool SET valid_to = now() - interval '1 minute' WHERE code = 'samples';
SELECT * FROM r18_state \gset before_
SELECT code, message FROM r18_try($$SELECT allocation.request_resource(1, 'r18_customer', '1', 1)$$);
SELECT * FROM r18_state \gset after_
SELECT :'before_remaining' = :'after_remaining' AS pools_kept, :before_requests = :after_requests AS requests_kept;
SELECT kind, count(*) FROM allocation.event WHERE kind LIKE 'resource%' GROUP BY 1 ORDER BY 1;

-- auto-grant: entering the promotion stage grants a sample kit in the same transaction (C trigger's
-- batch writer); an ineligible grower gets nothing; flapping stages do not grant twice; when the
-- pool runs dry the next customer is waitlisted
INSERT INTO allocation.resource_pool (code, name, kind, unit, total, remaining, tiers, auto_stage, auto_qty)
VALUES ('kits', 'Promotion sample kits', 'sample', 'kit', 2, 2, '{retailer}', 'promotion', 1);
INSERT INTO r18_customer (id, tier, crop, stage, owner) VALUES (5, 'retailer', 'rice', 'lead', 1), (6, 'retailer', 'rice', 'lead', 2),
                                                              (7, 'retailer', 'rice', 'lead', 2);
BEGIN;
UPDATE r18_customer SET stage = 'promotion' WHERE id IN (4, 5);
SELECT key, status, note FROM allocation.grant_ledger WHERE pool = 'kits' ORDER BY request_id;   -- already there, same transaction
COMMIT;
UPDATE r18_customer SET stage = 'lead' WHERE id = 5;
UPDATE r18_customer SET stage = 'promotion' WHERE id = 5;
UPDATE r18_customer SET stage = 'promotion' WHERE id = 6;
UPDATE r18_customer SET stage = 'promotion' WHERE id = 7;
SELECT key, status, note FROM allocation.grant_ledger WHERE pool = 'kits' ORDER BY request_id;
SELECT code, total, remaining FROM allocation.resource_pool WHERE code = 'kits';

DROP TABLE r18_customer CASCADE;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION r18_try(text);
DROP OWNED BY regress_res_b;
DROP ROLE regress_res_b;
