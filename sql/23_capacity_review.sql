--
-- 21_capacity_review: what capacity, suggestions, claims, follow-ups and
-- releases promise (issue 10, "correctness surprises"):
--   1. a pending suggestion reserves a slot of the rep it names: never more
--      suggestions than room, every accept succeeds, reject/supersede give
--      the slot back; explain(), rep_portfolio and claims show held vs reserved;
--   2. capacity exceeded by a person (manage() of existing owners, a lowered
--      capacity) is accepted with a WARNING (LA025) and visible;
--   3. a customer awaiting review cannot be claimed (LA089);
--   4. only the holder (or a manager) logs follow-ups (LA08A);
--   5. a released or recycled customer is not pinned: rules apply again on
--      re-evaluation, except to the former owner during its cooldown.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never
SET TimeZone = 'UTC';

DO $$
BEGIN
    CREATE ROLE regress_r21_a;
    CREATE ROLE regress_r21_b;
    CREATE ROLE regress_r21_d;
    CREATE ROLE regress_r21_mgr;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'east', 'East');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 5,   'regress_r21_a'),
    (2, 'b', 'Rep B', 1, 100, 'regress_r21_b'),
    (3, 'c', 'Rep C', 1, 2,   NULL),
    (4, 'd', 'Rep D', 2, 10,  'regress_r21_d'),
    (5, 'e', 'Rep E', 2, 10,  NULL);
SELECT allocation.grant_role('regress_r21_a', 'rep'), allocation.grant_role('regress_r21_b', 'rep'),
       allocation.grant_role('regress_r21_d', 'rep'), allocation.grant_role('regress_r21_mgr', 'manager');

CREATE TABLE r21_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
GRANT SELECT, INSERT ON r21_customer TO regress_r21_a, regress_r21_b, regress_r21_d;
GRANT SELECT, UPDATE ON r21_customer TO regress_r21_mgr;
SELECT allocation.manage('r21_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');

-- runs a statement; returns its SQLSTATE, message, detail and hint
CREATE FUNCTION r21_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := regexp_replace(detail, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION r21_try(text) TO PUBLIC;
CREATE VIEW r21_portfolio AS
SELECT rep_code, held, reserved, capacity, free, over_capacity FROM allocation.rep_portfolio ORDER BY rep_id;
-- changes whenever the table, the registry, the queue, the audit log or the counters change
CREATE VIEW r21_fingerprint AS
SELECT (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM r21_customer) AS owners,
       (SELECT count(*) FROM allocation.assignment) AS registry_rows,
       (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM allocation.suggestion) AS suggestions,
       (SELECT count(*) FROM allocation.event) AS events,
       (SELECT count(*) FROM allocation.followup) AS followups,
       (SELECT string_agg(rep_id || '=' || held || '+' || reserved, ',' ORDER BY rep_id) FROM allocation.rep_load) AS loads;

-------------------------------------------------------------------------------
-- 1. A pending suggestion reserves a slot
-------------------------------------------------------------------------------
-- rep a (capacity 5) holds two customers; tier S customers are suggested to it for review
INSERT INTO r21_customer (id, name, tier, owner) VALUES (1, 'held by a', 'K', 1), (2, 'held by a too', 'K', 1);
INSERT INTO allocation.rule (name, priority, mode, tiers, target_kind, target_rep_id)
VALUES ('seed dealers to a, for review', 50, 'suggest', '{S}', 'rep', 1);
-- sixteen tier S dealers in one statement: room for three suggestions, the rest go to the pool
INSERT INTO r21_customer (id, name, tier) SELECT g, 'seed dealer ' || g, 'S' FROM generate_series(101, 116) g;
SELECT count(*) FILTER (WHERE s.id IS NOT NULL) AS suggested, count(*) FILTER (WHERE s.id IS NULL) AS not_suggested
  FROM r21_customer c LEFT JOIN allocation.suggestion s ON s.key = c.id::text AND s.status = 'pending'
 WHERE c.id BETWEEN 101 AND 116;
SELECT key, reason FROM allocation.pool WHERE NOT awaiting_review AND key::int BETWEEN 101 AND 116 ORDER BY key::int LIMIT 2;
-- and another statement suggests nothing more
INSERT INTO r21_customer (id, name, tier) VALUES (117, 'seed dealer 117', 'S');
SELECT count(*) AS pending FROM allocation.pending_suggestion;
-- what a user sees: held vs reserved
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
SELECT c->>'rep' AS rep, c->'held' AS held, c->'reserved' AS reserved, c->'capacity' AS capacity,
       c->'available' AS available, c->>'why' AS why
  FROM jsonb_array_elements(allocation.explain('r21_customer', '{"tier": "S"}'::jsonb)->'rules'->0->'candidates') c;
-- the reserved slots count for every other way in: an explicit owner, a manual assignment, a claim
SELECT * FROM r21_fingerprint \gset before_
SELECT * FROM r21_try($$INSERT INTO r21_customer (id, name, tier, owner) VALUES (3, 'explicit owner a', 'K', 1)$$);
SELECT * FROM r21_try($$SELECT allocation.assign('r21_customer', '116', 1, 'manager wants a')$$);
SELECT * FROM r21_try($$SELECT allocation.claim('r21_customer', '116', 1)$$);
SELECT jsonb_path_query(allocation.explain_claim('r21_customer', '116', 1), '$.checks[*] ? (@.check == "capacity")') AS capacity_check;
SELECT * FROM r21_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_kept, :before_registry_rows = :after_registry_rows AS registry_kept,
       :'before_suggestions' = :'after_suggestions' AS queue_kept, :before_events = :after_events AS events_kept,
       :'before_loads' = :'after_loads' AS counters_kept;
-- every pending suggestion can be accepted
SET ROLE regress_r21_mgr;
SELECT count(*) AS accepted FROM (
    SELECT allocation.accept_suggestion(s.id) FROM allocation.pending_suggestion s ORDER BY s.id) x;
RESET ROLE;
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
SELECT count(*) AS held_by_a FROM r21_customer WHERE owner = 1;
-- a rejection and a superseding decision give the slot back
UPDATE allocation.rep SET capacity = 7 WHERE code = 'a';
INSERT INTO r21_customer (id, name, tier) VALUES (120, 'seed dealer 120', 'S'), (121, 'seed dealer 121', 'S');
SELECT key, rep_code FROM allocation.pending_suggestion ORDER BY key::int;
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
SET ROLE regress_r21_mgr;
SELECT allocation.reject_suggestion((SELECT id FROM allocation.pending_suggestion WHERE key = '120'), 'not a seed dealer');
RESET ROLE;
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
SET ROLE regress_r21_mgr;
SELECT allocation.assign('r21_customer', '121', 2, 'b knows this dealer');
RESET ROLE;
SELECT * FROM r21_portfolio WHERE rep_code IN ('a', 'b');
-- the slots are free again: two more suggestions fill a up
INSERT INTO r21_customer (id, name, tier) VALUES (122, 'seed dealer 122', 'S'), (123, 'seed dealer 123', 'S');
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
-- re-evaluating a customer whose suggestion is pending takes over its own slot (a is full, counting it)
UPDATE r21_customer SET loc = ST_SetSRID(ST_MakePoint(1, 1), 4326) WHERE id = 122;
SELECT key, rep_code FROM allocation.pending_suggestion ORDER BY key::int;
SELECT key, status FROM allocation.suggestion WHERE key = '122' ORDER BY id;
SELECT * FROM r21_portfolio WHERE rep_code = 'a';
SELECT * FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- 2. Capacity exceeded by a person: accepted with a WARNING, visible
-------------------------------------------------------------------------------
-- an existing table whose rows already belong to rep c (capacity 2): five of them
CREATE TABLE r21_legacy (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
INSERT INTO r21_legacy SELECT g, NULL, 3 FROM generate_series(1, 5) g;
SELECT allocation.manage('r21_legacy', 'id', 'loc', 'owner');
SELECT * FROM r21_portfolio WHERE rep_code = 'c';
-- a lowered capacity: b holds one customer (121)
INSERT INTO r21_customer (id, name, tier, owner) VALUES (4, 'held by b', 'K', 2);
UPDATE allocation.rep SET capacity = 1 WHERE code = 'b';
SELECT * FROM r21_portfolio WHERE rep_code = 'b';
SELECT problem, r.code, expected, actual FROM allocation.check_consistency() x JOIN allocation.rep r ON r.id = x.rep_id ORDER BY r.code;
-- nothing new for them until they are under capacity
SELECT * FROM r21_try($$SELECT allocation.claim('r21_customer', '115', 3)$$);
SELECT * FROM r21_try($$INSERT INTO r21_legacy VALUES (6, NULL, 3)$$);
-- raising a capacity warns nobody
UPDATE allocation.rep SET capacity = 100 WHERE code = 'b';
UPDATE allocation.rep SET capacity = 10 WHERE code = 'c';
SELECT count(*) AS over_capacity FROM allocation.rep_portfolio WHERE over_capacity;

-------------------------------------------------------------------------------
-- 3. A customer awaiting review cannot be claimed
-------------------------------------------------------------------------------
SELECT key, rep_code FROM allocation.pending_suggestion ORDER BY key::int;
SELECT * FROM r21_fingerprint \gset before_
SET ROLE regress_r21_b;
SELECT * FROM r21_try($$SELECT allocation.claim('r21_customer', '122')$$);
SELECT c.value->>'check' AS "check", c.value->'ok' AS ok, c.value->>'sqlstate' AS sqlstate, c.value->>'message' AS message
  FROM jsonb_array_elements(allocation.explain_claim('r21_customer', '122')->'checks') c
 WHERE c.value->>'check' IN ('in_pool', 'disputed', 'awaiting_review', 'protected');
SELECT claimable, sqlstate FROM allocation.claimable_now WHERE key = '122';
RESET ROLE;
-- the manager's form refuses too: a manager decides the suggestion instead
SET ROLE regress_r21_mgr;
SELECT code, message FROM r21_try($$SELECT allocation.claim('r21_customer', '122', 2)$$);
RESET ROLE;
SELECT * FROM r21_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_kept, :'before_suggestions' = :'after_suggestions' AS suggestion_still_pending,
       :before_events = :after_events AS events_kept, :'before_loads' = :'after_loads' AS counters_kept;
-- after a rejection it can be claimed
SET ROLE regress_r21_mgr;
SELECT allocation.reject_suggestion((SELECT id FROM allocation.pending_suggestion WHERE key = '122'), 'open it to everyone');
RESET ROLE;
SET ROLE regress_r21_b;
SELECT allocation.claim('r21_customer', '122');
RESET ROLE;
SELECT id, owner FROM r21_customer WHERE id = 122;

-------------------------------------------------------------------------------
-- 4. Only the holder (or a manager) logs follow-ups
-------------------------------------------------------------------------------
INSERT INTO allocation.recycle_policy (name, tbl, tier, no_followup) VALUES ('K dealers', 'r21_customer', 'K', '30 days');
SELECT * FROM r21_fingerprint \gset before_
SELECT last_followup AS a_clock FROM allocation.upcoming_recycles(now()) WHERE key = '1' \gset
SET ROLE regress_r21_b;
-- another rep's customer (1 is a's), and a pool customer (115)
SELECT * FROM r21_try($$SELECT allocation.log_followup('r21_customer', '1', 'visit', 'dropped by')$$);
SELECT * FROM r21_try($$SELECT allocation.log_followup('r21_customer', '115', 'call')$$);
-- (a direct INSERT is no way around it: only log_followup() writes follow-ups)
SELECT * FROM r21_try($$INSERT INTO allocation.followup (managed_id, key, kind, recorded_by) VALUES (1, '1', 'visit', 'me')$$);
RESET ROLE;
SELECT * FROM r21_fingerprint \gset after_
SELECT :before_followups = :after_followups AS no_followup_stored, :before_events = :after_events AS events_kept,
       (SELECT last_followup FROM allocation.upcoming_recycles(now()) WHERE key = '1') = :'a_clock' AS a_clock_kept;
-- the holder and a manager can
SET ROLE regress_r21_a;
SELECT allocation.log_followup('r21_customer', '1', 'visit', 'own customer') > 0 AS logged_by_holder;
RESET ROLE;
SET ROLE regress_r21_mgr;
SELECT allocation.log_followup('r21_customer', '1', 'call', 'manager called') > 0 AS logged_by_manager;
RESET ROLE;
SELECT f.key, r.code AS rep, f.kind, f.outcome, f.recorded_by FROM allocation.followup f
  LEFT JOIN allocation.rep r ON r.id = f.rep_id ORDER BY f.id;

-------------------------------------------------------------------------------
-- 5. Released and recycled customers are not pinned; the former owner cools down
-------------------------------------------------------------------------------
INSERT INTO allocation.claim_policy (cooldown) VALUES ('7 days');
-- tier R goes to team east, least loaded first: d (holds none) before e (holds one)
INSERT INTO allocation.rule (name, priority, tiers, target_kind, target_team_id, policy)
VALUES ('R dealers to east', 40, '{R}', 'team', 2, 'least_loaded');
INSERT INTO r21_customer (id, name, tier, owner) VALUES (5, 'held by e', 'K', 5);
INSERT INTO r21_customer (id, name, tier) VALUES (50, 'released later', 'X'), (51, 'recycled later', 'Y');
SELECT allocation.claim('r21_customer', '50', 4), allocation.claim('r21_customer', '51', 4);
SET ROLE regress_r21_d;
SELECT allocation.release('r21_customer', '50', 'not my crop');
RESET ROLE;
INSERT INTO allocation.recycle_policy (name, tbl, tier, no_followup) VALUES ('Y dealers', 'r21_customer', 'Y', '1 day');
SELECT key, action FROM allocation.recycle(now() + interval '2 days') WHERE key IN ('50', '51');
SELECT key, rep_id, source, pinned FROM allocation.current_owner WHERE key IN ('50', '51') ORDER BY key;
-- a later change of tier re-runs the rules: rep d (least loaded) is in its cooldown, so e
SELECT c->>'rep' AS rep, c->'available' AS available, c->>'why' AS why
  FROM jsonb_array_elements((SELECT r->'candidates' FROM jsonb_array_elements(
           allocation.explain('r21_customer', '{"id": 50, "tier": "R"}'::jsonb)->'rules') r WHERE r->>'rule' = 'R dealers to east')) c;
UPDATE r21_customer SET tier = 'R' WHERE id IN (50, 51);
SELECT c.id, r.code AS owner, a.source, a.pinned FROM r21_customer c LEFT JOIN allocation.rep r ON r.id = c.owner
  JOIN allocation.current_owner a ON a.tbl = 'r21_customer'::regclass AND a.key = c.id::text
 WHERE c.id IN (50, 51) ORDER BY c.id;
SELECT jsonb_path_exists(allocation.explain('r21_customer', '50'),
                         '$.rules[*] ? (@.rule == "R dealers to east").candidates[*] ? (@.rep == "d" && @.available == false)')
       AS d_barred_in_explain;
-- without a cooldown the rules may give it back to its former owner
UPDATE allocation.claim_policy SET cooldown = NULL;
SELECT allocation.release('r21_customer', '50', 'back to the pool');
UPDATE r21_customer SET loc = ST_SetSRID(ST_MakePoint(2, 2), 4326) WHERE id = 50;
SELECT c.id, r.code AS owner FROM r21_customer c LEFT JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 50;
-- a person clearing the owner still pins the customer in the pool
SELECT allocation.assign('r21_customer', '51', NULL, 'kept in the pool for the key-account team');
UPDATE r21_customer SET loc = ST_SetSRID(ST_MakePoint(3, 3), 4326) WHERE id = 51;
SELECT key, rep_id, source, pinned FROM allocation.current_owner WHERE key = '51';

SELECT * FROM allocation.check_consistency();
DROP TABLE r21_customer, r21_legacy CASCADE;
DROP FUNCTION r21_try(text);
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_r21_a, regress_r21_b, regress_r21_d, regress_r21_mgr;
DROP ROLE regress_r21_a, regress_r21_b, regress_r21_d, regress_r21_mgr;
