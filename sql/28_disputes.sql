--
-- 28_disputes: ownership disputes (冲突仲裁): open_dispute(), the freeze of every
-- owner-changing path, dispute_evidence(), settle_dispute(),
-- dismiss_ownership_dispute(), dispute_policy() + auto_settle_disputes(), and
-- explain_event() replaying a decision against the configuration then.  Every
-- bad input with its SQLSTATE, and that a refused step changes nothing.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_t28_a;
    CREATE ROLE regress_t28_b;
    CREATE ROLE regress_t28_c;
    CREATE ROLE regress_t28_mgr;
    CREATE ROLE regress_t28_an;
    CREATE ROLE regress_t28_nobody;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'east', 'East desk');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 100, 'regress_t28_a'),
    (2, 'b', 'Rep B', 1, 100, 'regress_t28_b'),
    (3, 'c', 'Rep C', 2, 100, 'regress_t28_c');
INSERT INTO allocation.rep (id, code, name, team_id, active) VALUES (4, 'gone', 'Rep who left', 1, false);
SELECT allocation.grant_role('regress_t28_a', 'rep'), allocation.grant_role('regress_t28_b', 'rep'),
       allocation.grant_role('regress_t28_c', 'rep'), allocation.grant_role('regress_t28_mgr', 'manager'),
       allocation.grant_role('regress_t28_an', 'analyst');
-- (grant_role() grants these too; explicit here so the test reads on its own)
GRANT EXECUTE ON FUNCTION allocation.open_dispute(regclass, text, bigint, text),
                          allocation.dispute_evidence(bigint),
                          allocation.dismiss_ownership_dispute(bigint, text)
   TO regress_t28_a, regress_t28_b, regress_t28_c, regress_t28_mgr;
GRANT EXECUTE ON FUNCTION allocation.settle_dispute(bigint, bigint, text), allocation.auto_settle_disputes(timestamptz)
   TO regress_t28_mgr;
GRANT EXECUTE ON FUNCTION allocation.explain_event(bigint), allocation.dispute_evidence(bigint) TO regress_t28_an, regress_t28_mgr;
GRANT EXECUTE ON FUNCTION allocation.explain_event(bigint) TO regress_t28_a;

-- two counties; East belongs to rep b (a crop zone: rice), West to rep a
SELECT allocation.import_territories('{"type": "FeatureCollection", "features": [
  {"type": "Feature", "properties": {"code": "EAST", "name": "East county"},
   "geometry": {"type": "Polygon", "coordinates": [[[10,0],[20,0],[20,10],[10,10],[10,0]]]}},
  {"type": "Feature", "properties": {"code": "WEST", "name": "West county"},
   "geometry": {"type": "Polygon", "coordinates": [[[0,0],[10,0],[10,10],[0,10],[0,0]]]}}
]}'::jsonb);
UPDATE allocation.territory SET owner_rep_id = 2, crop_zones = '{rice}' WHERE code = 'EAST';
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'WEST';
SELECT id AS east FROM allocation.territory WHERE code = 'EAST' \gset
SELECT id AS west FROM allocation.territory WHERE code = 'WEST' \gset
-- the rules: big growers (tier B) to rep c; a condition rule; tier A in the East to rep a
INSERT INTO allocation.rule (id, name, priority, tiers, target_kind, target_rep_id) VALUES
    (1, 'growers-to-c', 30, '{B}', 'rep', 3);
CREATE TABLE t28_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('t28_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO allocation.rule (id, name, priority, tbl, condition, target_kind, target_rep_id) VALUES
    (2, 'named-vip', 20, 't28_customer', $$name LIKE 'VIP%'$$, 'rep', 3);
INSERT INTO allocation.rule (id, name, priority, tiers, territory_id, crop_zones, target_kind, target_rep_id) VALUES
    (3, 'east-dealers-to-a', 10, '{A}', :east, '{rice}', 'rep', 1);
GRANT SELECT, INSERT ON t28_customer TO regress_t28_a, regress_t28_b, regress_t28_c;
GRANT SELECT, UPDATE ON t28_customer TO regress_t28_mgr;
-- registration protection (报备): a rep inserting a customer as its login registers it
INSERT INTO allocation.claim_policy (protection) VALUES (interval '30 days');

-- rep b registers dealers 1..4 in the East: the rule gives them to rep a
SET ROLE regress_t28_b;
INSERT INTO t28_customer (id, name, tier, loc)
SELECT g, 'dealer ' || g, 'A', ST_SetSRID(ST_MakePoint(15, g), 4326) FROM generate_series(1, 4) g;
RESET ROLE;
-- dealers 5, 6 are inserted by the CRM import (no rep), 99 stays in the pool (no rule matches it)
INSERT INTO t28_customer (id, name, tier, loc) VALUES (5, 'dealer 5', 'A', ST_SetSRID(ST_MakePoint(15, 5), 4326)),
                                                      (6, 'dealer 6', 'A', ST_SetSRID(ST_MakePoint(15, 6), 4326)),
                                                      (99, 'pool', 'C', ST_SetSRID(ST_MakePoint(5, 5), 4326));
SELECT id AS assigned_event FROM allocation.event WHERE key = '1' AND period = 'open' ORDER BY id LIMIT 1 \gset

CREATE FUNCTION t28_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
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
GRANT EXECUTE ON FUNCTION t28_try(text) TO PUBLIC;
-- times in the evidence's explanations vary from run to run
CREATE FUNCTION t28_mask(j jsonb) RETURNS text LANGUAGE sql AS
$f$ SELECT regexp_replace(jsonb_pretty(j), '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g') $f$;
CREATE VIEW t28_state AS
SELECT c.id, r.code AS owner FROM t28_customer c LEFT JOIN allocation.rep r ON r.id = c.owner;
GRANT SELECT ON t28_state TO PUBLIC;
-- what a refusal must leave unchanged: owners, disputes, events, transfers, counters
CREATE VIEW t28_fingerprint AS
SELECT (SELECT string_agg(id || '=' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM t28_customer) AS owners,
       (SELECT count(*) FROM allocation.ownership_dispute) AS disputes,
       (SELECT string_agg(id || ':' || status, ',' ORDER BY id) FROM allocation.ownership_dispute) AS statuses,
       (SELECT count(*) FROM allocation.event) AS events,
       (SELECT count(*) FROM allocation.transfer) AS transfers,
       (SELECT string_agg(rep_id || ':' || held, ',' ORDER BY rep_id) FROM allocation.rep_load) AS held;
GRANT SELECT ON t28_fingerprint TO PUBLIC;

SELECT * FROM t28_state ORDER BY id;
SELECT key, rep_id FROM allocation.protection ORDER BY key;
-- follow-ups (as recorded by the CRM's import, dated): b visited dealer 1 first, a later; a deal of a
INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, outcome) VALUES
    (1, '1', 2, now() - interval '20 days', 'visit', 'met the owner'),
    (1, '1', 1, now() - interval '10 days', 'call', 'price list sent'),
    (1, '1', 1, now() - interval '5 days', 'deal', 'spring order 2 t'),
    (1, '2', 1, now() - interval '20 days', 'visit', 'a was there first');
-- and a recorded deal of dealer 1 while a holds it (credited 100 % to a)
SELECT allocation.record_deal('t28_customer', '1', 20000.00, ref => 'SO-T28-1') > 0 AS deal_recorded;

-------------------------------------------------------------------------------
-- Opening: a rep for itself, a manager for a rep
-------------------------------------------------------------------------------
-- a pending transfer of dealer 1 (a hands over to c) made before the dispute
SET ROLE regress_t28_a;
SELECT allocation.request_transfer('t28_customer', '1', 3, 'c covers the rice belt') AS pending_transfer \gset
SET ROLE regress_t28_b;
SELECT allocation.open_dispute('t28_customer', '1', 2, 'I registered this dealer and visited it first') AS d1 \gset
RESET ROLE;
SELECT id = :d1 AS is_d1, key, holder_rep, claimant_rep, claim, status, opened_by, winner_rep, decided_by
  FROM allocation.ownership_dispute;
SELECT kind, key, actor, from_rep, to_rep, reason, detail - 'ownership_dispute' AS detail
  FROM allocation.event WHERE kind LIKE 'ownership_dispute%' ORDER BY id;
-- a manager on rep c's behalf (the key in the column's own text form: ' 02' is customer 2)
SET ROLE regress_t28_mgr;
SELECT allocation.open_dispute('t28_customer', ' 02', 3, 'c''s team covers this dealer') AS d2 \gset
RESET ROLE;
SELECT key FROM allocation.ownership_dispute WHERE id = :d2;

-- every bad input: its SQLSTATE, nothing stored changed
SELECT * FROM t28_fingerprint \gset before_
SET ROLE regress_t28_c;
SELECT 'null table' AS "case", * FROM t28_try($$SELECT allocation.open_dispute(NULL, '3', 3, 'x')$$)
UNION ALL SELECT 'null key', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', NULL, 3, 'x')$$)
UNION ALL SELECT 'null rep', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', NULL, 'x')$$)
UNION ALL SELECT 'null claim', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 3, NULL)$$)
UNION ALL SELECT 'blank claim', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 3, '  ')$$)
UNION ALL SELECT 'unmanaged table', * FROM t28_try($$SELECT allocation.open_dispute('t28_state', '3', 3, 'x')$$)
UNION ALL SELECT 'for another rep', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 2, 'x')$$)
-- a rep contests only a customer it has a recorded link with; an unknown key says the same
UNION ALL SELECT 'no link (rep)', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '1', 3, 'me too')$$)
UNION ALL SELECT 'unknown key (rep)', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '404', 3, 'x')$$);
-- a manager opens for a rep without a link; the customer must exist, be held and not disputed
SET ROLE regress_t28_mgr;
SELECT 'unknown key' AS "case", * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '404', 3, 'x')$$)
UNION ALL SELECT 'bad key', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', 'x1', 3, 'x')$$)
UNION ALL SELECT 'pool customer', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '99', 3, 'x')$$)
UNION ALL SELECT 'already open', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '1', 3, 'me too')$$);
SET ROLE regress_t28_a;
SELECT 'claimant is holder' AS "case", * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 1, 'x')$$);
SET ROLE regress_t28_mgr;
SELECT 'unknown rep' AS "case", * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 404, 'x')$$)
UNION ALL SELECT 'inactive rep', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 4, 'x')$$);
SET ROLE regress_t28_nobody;
SELECT 'no rights' AS "case", code FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 3, 'x')$$);
RESET ROLE;
SELECT * FROM t28_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_same, :before_disputes = :after_disputes AS disputes_same,
       :before_events = :after_events AS events_same, :'before_held' = :'after_held' AS held_same;

-------------------------------------------------------------------------------
-- The freeze: every path that would move dealer 1 is refused with LA0D0
-------------------------------------------------------------------------------
SELECT * FROM t28_fingerprint \gset before_
SET ROLE regress_t28_a;
SELECT 'release by the holder' AS "case", * FROM t28_try($$SELECT allocation.release('t28_customer', '1', 'not worth it')$$)
UNION ALL SELECT 'transfer request', code, message, NULL, NULL FROM t28_try($$SELECT allocation.request_transfer('t28_customer', '1', 2, 'give up')$$);
SET ROLE regress_t28_c;
SELECT 'claim' AS "case", code, message FROM t28_try($$SELECT allocation.claim('t28_customer', '1')$$);
SET ROLE regress_t28_mgr;
SELECT 'approve earlier transfer' AS "case", code, message FROM t28_try(format('SELECT allocation.approve_transfer(%s)', :pending_transfer))
UNION ALL SELECT 'manager assign', code, message FROM t28_try($$SELECT allocation.assign('t28_customer', '1', 3, 'manager decides')$$)
UNION ALL SELECT 'manager assign to pool', code, message FROM t28_try($$SELECT allocation.assign('t28_customer', '1', NULL, 'to the pool')$$)
UNION ALL SELECT 'manager claim for a rep', code, message FROM t28_try($$SELECT allocation.claim('t28_customer', '1', 3)$$)
UNION ALL SELECT 'manager release', code, message FROM t28_try($$SELECT allocation.release('t28_customer', '1', 'cleanup')$$);
RESET ROLE;
-- the application (the table's owner) writing the owner column directly: refused by the trigger
SELECT 'direct owner UPDATE' AS "case", * FROM t28_try($$UPDATE t28_customer SET owner = 3 WHERE id = 1$$)
UNION ALL SELECT 'direct owner cleared', code, message, NULL, NULL FROM t28_try($$UPDATE t28_customer SET owner = NULL WHERE id = 1$$);
SELECT * FROM t28_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_same, :'before_statuses' = :'after_statuses' AS disputes_same,
       :before_events = :after_events AS events_same, :'before_held' = :'after_held' AS held_same,
       :before_transfers = :after_transfers AS transfers_same;
SELECT status FROM allocation.transfer WHERE id = :pending_transfer;
-- a rule re-evaluation that would move it (tier B goes to rep c), also in mode 'always': it stays
SELECT allocation.set_reevaluate('t28_customer', 'always');
UPDATE t28_customer SET tier = 'B' WHERE id IN (1, 3);
SELECT * FROM t28_state WHERE id IN (1, 3) ORDER BY id;
SELECT key, kind, from_rep, to_rep FROM allocation.event WHERE key IN ('1', '3') AND kind = 'reevaluate' ORDER BY id;
UPDATE t28_customer SET tier = 'A' WHERE id = 3;
SELECT allocation.set_reevaluate('t28_customer', 'unless_pinned');
-- recycling skips a disputed customer (reported as exempt, like a locked one)
INSERT INTO allocation.recycle_policy (name, tbl, no_followup) VALUES ('t28 60 days', 't28_customer', interval '60 days');
SELECT key, rep_id, exempt FROM allocation.upcoming_recycles(now() + interval '90 days') WHERE key IN ('1', '2', '3') ORDER BY key;
BEGIN;
SELECT key, action FROM allocation.recycle(now() + interval '90 days') WHERE key IN ('1', '2', '3') ORDER BY key;
SELECT * FROM t28_state WHERE id IN (1, 2, 3) ORDER BY id;
ROLLBACK;
DELETE FROM allocation.recycle_policy;

-------------------------------------------------------------------------------
-- Evidence (from the log only)
-------------------------------------------------------------------------------
SET ROLE regress_t28_mgr;
SELECT allocation.dispute_evidence(:d1) AS ev \gset
RESET ROLE;
SELECT t28_mask(jsonb_build_object(
    'dispute', (:'ev'::jsonb -> 'dispute') - 'opened_at',
    'current', (:'ev'::jsonb -> 'current') - 'since',
    'registered_by', :'ev'::jsonb -> 'registration' -> 'registered_by',
    'registered_by_rep', :'ev'::jsonb -> 'registration' -> 'registered_by_rep',
    'first_events', (SELECT jsonb_agg(x - 'at' - 'event_id') FROM jsonb_array_elements(:'ev'::jsonb -> 'registration' -> 'first_events') x),
    'protection', (:'ev'::jsonb -> 'registration' -> 'protection') - 'since' - 'until',
    'history', (SELECT jsonb_agg(jsonb_build_object('kind', x ->> 'kind', 'to_rep', x -> 'to_rep', 'rule_id', x -> 'rule_id'))
                  FROM jsonb_array_elements(:'ev'::jsonb -> 'ownership_history') x),
    'followups', jsonb_build_object(
        'holder', (SELECT jsonb_agg(x ->> 'kind') FROM jsonb_array_elements(:'ev'::jsonb -> 'followups' -> 'holder') x),
        'claimant', (SELECT jsonb_agg(x ->> 'kind') FROM jsonb_array_elements(:'ev'::jsonb -> 'followups' -> 'claimant') x),
        'others', :'ev'::jsonb -> 'followups' -> 'others'),
    'deals', jsonb_build_object('source', :'ev'::jsonb -> 'deals' -> 'source',
        'holder', (SELECT jsonb_agg(x - 'deal' - 'at') FROM jsonb_array_elements(:'ev'::jsonb -> 'deals' -> 'holder') x),
        'claimant', :'ev'::jsonb -> 'deals' -> 'claimant', 'total', :'ev'::jsonb -> 'deals' -> 'total'),
    'decision', (:'ev'::jsonb -> 'decision') - 'at' - 'event_id',
    'explain_today', jsonb_build_object('result', :'ev'::jsonb -> 'explain_today' -> 'result' -> 'rep_id'),
    'presets', :'ev'::jsonb -> 'presets')) AS evidence;
-- dispute 2 (a holds it, c contests): East is b's, b registered it, a followed it up first
SET ROLE regress_t28_an;
SELECT t28_mask(allocation.dispute_evidence(:d2) -> 'presets') AS d2_presets;
-- the sides may read their own dispute's evidence, redacted: the other side's follow-ups and
-- deals as dates and kinds only, no explain() of today, no current attributes; another rep may not
SET ROLE regress_t28_a;
SELECT allocation.dispute_evidence(:d1) -> 'dispute' ->> 'key' AS holder_reads;
SET ROLE regress_t28_b;
SELECT allocation.dispute_evidence(:d1) AS ev_b \gset
SELECT :'ev_b'::jsonb ? 'explain_today' AS claimant_sees_explain, :'ev_b'::jsonb ? 'current' AS claimant_sees_current,
       (SELECT jsonb_agg(x - 'at' ORDER BY x ->> 'kind') FROM jsonb_array_elements(:'ev_b'::jsonb -> 'followups' -> 'holder') x) AS holder_followups_as_b_sees_them,
       (SELECT jsonb_agg(x - 'at') FROM jsonb_array_elements(:'ev_b'::jsonb -> 'deals' -> 'holder') x) AS holder_deals_as_b_sees_them,
       (SELECT jsonb_agg(x ->> 'outcome') FROM jsonb_array_elements(:'ev_b'::jsonb -> 'followups' -> 'claimant') x) AS own_followups,
       :'ev_b'::jsonb ->> 'redacted' AS redacted;
-- a follow-up logged after the opening with an earlier date does not change the first_followup verdict
RESET ROLE;
SELECT allocation.dispute_evidence(:d1) -> 'presets' -> 'verdicts' -> 'first_followup' ->> 'side' AS first_followup_before;
INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, outcome) VALUES (1, '1', 1, now() - interval '300 days', 'visit', 'backdated');
SELECT allocation.dispute_evidence(:d1) -> 'presets' -> 'verdicts' -> 'first_followup' ->> 'side' AS first_followup_after,
       (SELECT x ->> 'before_dispute' FROM jsonb_array_elements(allocation.dispute_evidence(:d1) -> 'followups' -> 'holder') x
         WHERE x ->> 'outcome' = 'backdated') AS backdated_counts_as_before;
DELETE FROM allocation.followup WHERE outcome = 'backdated';
SET ROLE regress_t28_c;
SELECT 'not a side' AS "case", * FROM t28_try(format('SELECT allocation.dispute_evidence(%s)', :d1))
UNION ALL SELECT 'null id', * FROM t28_try('SELECT allocation.dispute_evidence(NULL)');
SET ROLE regress_t28_mgr;
SELECT 'unknown id' AS "case", * FROM t28_try('SELECT allocation.dispute_evidence(404)');
SET ROLE regress_t28_nobody;
SELECT 'no rights' AS "case", code FROM t28_try(format('SELECT allocation.dispute_evidence(%s)', :d1));
RESET ROLE;

-------------------------------------------------------------------------------
-- Settling
-------------------------------------------------------------------------------
SELECT * FROM t28_fingerprint \gset before_
SET ROLE regress_t28_b;
SELECT 'a rep settles' AS "case", code, message FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, ''mine'')', :d1));
RESET ROLE;
-- (even with EXECUTE granted, the implementation refuses a rep)
GRANT EXECUTE ON FUNCTION allocation.settle_dispute(bigint, bigint, text) TO regress_t28_b;
SET ROLE regress_t28_b;
SELECT 'a rep settles (granted)' AS "case", * FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, ''mine'')', :d1));
RESET ROLE;
REVOKE EXECUTE ON FUNCTION allocation.settle_dispute(bigint, bigint, text) FROM regress_t28_b;
SET ROLE regress_t28_mgr;
SELECT 'null id' AS "case", * FROM t28_try('SELECT allocation.settle_dispute(NULL, 2, ''x'')')
UNION ALL SELECT 'null winner', * FROM t28_try(format('SELECT allocation.settle_dispute(%s, NULL, ''x'')', :d1))
UNION ALL SELECT 'null reason', * FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, NULL)', :d1))
UNION ALL SELECT 'unknown id', * FROM t28_try('SELECT allocation.settle_dispute(404, 2, ''x'')')
UNION ALL SELECT 'not a side', * FROM t28_try(format('SELECT allocation.settle_dispute(%s, 3, ''x'')', :d1));
SET ROLE regress_t28_nobody;
SELECT 'no rights' AS "case", code FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, ''x'')', :d1));
RESET ROLE;
-- the winner at capacity: the settlement is refused as a whole
UPDATE allocation.rep SET capacity = 0 WHERE id = 2;
SET ROLE regress_t28_mgr;
SELECT 'winner at capacity' AS "case", code, message FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, ''b registered it'')', :d1));
RESET ROLE;
UPDATE allocation.rep SET capacity = 100 WHERE id = 2;
SELECT * FROM t28_fingerprint \gset after_
SELECT :'before_owners' = :'after_owners' AS owners_same, :'before_statuses' = :'after_statuses' AS disputes_same,
       :before_events + 2 = :after_events AS only_the_capacity_config_events, :'before_held' = :'after_held' AS held_same;

-- the claimant wins: dealer 1 moves to b as by a transfer; the event keeps the evidence
SET ROLE regress_t28_mgr;
SELECT allocation.settle_dispute(:d1, 2, 'b registered it and visited first');
RESET ROLE;
SELECT * FROM t28_state WHERE id = 1;
SELECT status, winner_rep, automatic, decided_by, decision_reason FROM allocation.ownership_dispute WHERE id = :d1;
SELECT kind, actor, from_rep, to_rep, source, reason, detail ->> 'winner_side' AS side, detail ? 'evidence' AS has_evidence,
       detail -> 'evidence' -> 'dispute' ->> 'status' AS evidence_status
  FROM allocation.event WHERE key = '1' AND id > :before_events ORDER BY id;
SELECT * FROM allocation.check_consistency();
-- settled twice: LA0D2
SET ROLE regress_t28_mgr;
SELECT 'settled twice' AS "case", * FROM t28_try(format('SELECT allocation.settle_dispute(%s, 2, ''again'')', :d1))
UNION ALL SELECT 'dismiss a settled one', * FROM t28_try(format('SELECT allocation.dismiss_ownership_dispute(%s, ''late'')', :d1));
-- the earlier transfer (holder a) is moot now; the freeze is over: b can release it
SELECT 'approve moot transfer' AS "case", code FROM t28_try(format('SELECT allocation.approve_transfer(%s)', :pending_transfer));
SET ROLE regress_t28_b;
SELECT allocation.open_dispute('t28_customer', '3', 2, 'dealer 3 as well') AS d3 \gset
SET ROLE regress_t28_mgr;
-- the holder wins: nothing moves
SELECT allocation.settle_dispute(:d3, 1, 'a serves it well');
RESET ROLE;
SELECT * FROM t28_state WHERE id = 3;
SELECT kind, from_rep, to_rep, detail ->> 'winner_side' AS side FROM allocation.event
 WHERE key = '3' AND kind IN ('ownership_dispute_settled', 'transfer') ORDER BY id;

-------------------------------------------------------------------------------
-- Dismissing: a manager, or the claimant withdrawing
-------------------------------------------------------------------------------
-- c visited dealer 4 (the CRM's import): a recorded link, so c may contest it itself
RESET ROLE;
INSERT INTO allocation.followup (managed_id, key, rep_id, at, kind, outcome) VALUES (1, '4', 3, now() - interval '2 days', 'visit', 'c was there');
SET ROLE regress_t28_c;
SELECT allocation.open_dispute('t28_customer', '4', 3, 'c wants dealer 4') AS d4 \gset
SELECT * FROM t28_fingerprint \gset before_
SET ROLE regress_t28_a;
SELECT 'the holder dismisses' AS "case", * FROM t28_try(format('SELECT allocation.dismiss_ownership_dispute(%s, ''no'')', :d4));
SET ROLE regress_t28_mgr;
SELECT 'null id' AS "case", * FROM t28_try('SELECT allocation.dismiss_ownership_dispute(NULL, ''x'')')
UNION ALL SELECT 'blank reason', * FROM t28_try(format('SELECT allocation.dismiss_ownership_dispute(%s, '' '')', :d4))
UNION ALL SELECT 'unknown id', * FROM t28_try('SELECT allocation.dismiss_ownership_dispute(404, ''x'')');
RESET ROLE;
SELECT * FROM t28_fingerprint \gset after_
SELECT :'before_statuses' = :'after_statuses' AS disputes_same, :before_events = :after_events AS events_same;
SET ROLE regress_t28_c;
SELECT allocation.dismiss_ownership_dispute(:d4, 'withdrawn: it was a misunderstanding');
RESET ROLE;
SELECT status, winner_rep, decided_by, decision_reason FROM allocation.ownership_dispute WHERE id = :d4;
SELECT kind, from_rep, to_rep, detail ->> 'withdrawn' AS withdrawn, detail ? 'evidence' AS has_evidence
  FROM allocation.event WHERE kind = 'ownership_dispute_dismissed';
SELECT * FROM t28_state WHERE id = 4;
-- after the dismissal dealer 4 moves again (the freeze is over)
SET ROLE regress_t28_mgr;
SELECT allocation.assign('t28_customer', '4', 3, 'after the dismissal');
RESET ROLE;
SELECT * FROM t28_state WHERE id = 4;

-------------------------------------------------------------------------------
-- Automatic settlement by the presets
-------------------------------------------------------------------------------
-- bad inputs of dispute_policy(): nothing stored
SELECT 'null auto_settle' AS "case", * FROM t28_try($$SELECT allocation.dispute_policy(NULL, NULL)$$)
UNION ALL SELECT 'unknown team', * FROM t28_try($$SELECT allocation.dispute_policy(404, true)$$)
UNION ALL SELECT 'unknown preset', * FROM t28_try($$SELECT allocation.dispute_policy(NULL, true, ARRAY['loudest'])$$)
UNION ALL SELECT 'null preset', * FROM t28_try($$SELECT allocation.dispute_policy(NULL, true, ARRAY[NULL])$$)
UNION ALL SELECT 'no preset', * FROM t28_try($$SELECT allocation.dispute_policy(NULL, true, '{}')$$)
UNION ALL SELECT 'auto_settle(NULL)', * FROM t28_try($$SELECT allocation.auto_settle_disputes(NULL)$$);
SELECT count(*) AS policies FROM allocation.ownership_dispute_policy;
-- dealer 5 (a holds it; registered by nobody's login): a manager opens for c (c has no link)
SET ROLE regress_t28_mgr;
SELECT allocation.open_dispute('t28_customer', '5', 3, 'c5') AS d5 \gset
RESET ROLE;
-- without a policy nothing is settled automatically
SET ROLE regress_t28_mgr;
SELECT allocation.auto_settle_disputes() AS settled_without_policy;
RESET ROLE;
-- every team: only the territory owner preset; East is b's, neither side of disputes 2 and 5:
-- nothing settled
SELECT allocation.dispute_policy(NULL, true, ARRAY['territory_owner']) IS NOT NULL AS policy_set;
SET ROLE regress_t28_mgr;
SELECT allocation.auto_settle_disputes() AS settled_territory_only;
RESET ROLE;
-- East goes to rep a: the territory owner (a, the holder) settles disputes 2 and 5
UPDATE allocation.territory SET owner_rep_id = 1 WHERE code = 'EAST';
-- dispute 5 was opened now: a run as of an earlier time does not see it
SET ROLE regress_t28_mgr;
SELECT allocation.auto_settle_disputes(now() - interval '1 hour') AS settled_earlier;
SELECT allocation.auto_settle_disputes() AS settled;
RESET ROLE;
SELECT id = :d5 AS is_d5, status, winner_rep, automatic, decision_reason FROM allocation.ownership_dispute WHERE key IN ('2', '5') ORDER BY id;
-- presets that must all agree: a verdict missing is no agreement
SELECT allocation.dispute_policy(NULL, true, ARRAY['territory_owner', 'registration', 'first_followup']) IS NOT NULL AS policy_set;
-- the policy is configuration: audited
SELECT kind, detail ->> 'table' AS tbl, detail ->> 'op' AS op FROM allocation.event
 WHERE kind = 'config_change' AND detail ->> 'table' = 'ownership_dispute_policy' ORDER BY id;
-- all three presets must agree: dispute 7 (c contests dealer 3 of a): the territory owner says a,
-- registration (b) and first follow-up (none) give no verdict: left for a manager
SET ROLE regress_t28_c;
SELECT allocation.open_dispute('t28_customer', '3', 3, 'c3') AS d7 \gset
RESET ROLE;
SELECT t28_mask(allocation.dispute_evidence(:d7) -> 'presets') AS d7_presets;
SELECT allocation.auto_settle_disputes() AS settled_disagreeing;
SELECT status FROM allocation.ownership_dispute WHERE id = :d7;
SET ROLE regress_t28_mgr;
SELECT allocation.dismiss_ownership_dispute(:d7, 'no evidence either way');
RESET ROLE;

-------------------------------------------------------------------------------
-- explain_event(): dealer 1's first decision replayed against the configuration then
-------------------------------------------------------------------------------
-- since that decision: rule 3 now sends East dealers to c with a higher priority, and the
-- East county's owner changed (b -> a above, now c); rep a's capacity changed
UPDATE allocation.rule SET target_rep_id = 3, priority = 40 WHERE id = 3;
UPDATE allocation.territory SET owner_rep_id = 3 WHERE code = 'EAST';
UPDATE allocation.rep SET capacity = 50 WHERE id = 1;
SET ROLE regress_t28_an;
SELECT allocation.explain_event(:assigned_event) AS xe \gset
RESET ROLE;
SELECT jsonb_pretty(jsonb_build_object(
    'event', (:'xe'::jsonb -> 'event') - 'at',
    'recorded', :'xe'::jsonb -> 'recorded',
    'replayed', :'xe'::jsonb -> 'replayed',
    'rule', :'xe'::jsonb -> 'rule',
    'replay', :'xe'::jsonb -> 'replay',
    'territory', jsonb_build_object('then', (:'xe'::jsonb -> 'territory' -> 'then') - 'geom_sha256' - 'properties',
                                    'now', (:'xe'::jsonb -> 'territory' -> 'now') - 'geom_sha256' - 'properties',
                                    'same_polygon', :'xe'::jsonb -> 'territory' -> 'then' -> 'geom_sha256' = :'xe'::jsonb -> 'territory' -> 'now' -> 'geom_sha256',
                                    'changed_since', :'xe'::jsonb -> 'territory' -> 'changed_since'),
    'territory_owner_then', :'xe'::jsonb -> 'territory_owner_then',
    'reps', :'xe'::jsonb -> 'reps',
    'changed_since', (SELECT jsonb_agg(jsonb_build_object('table', x -> 'table', 'id', x -> 'id', 'op', x -> 'op',
                                                          'before', x -> 'before', 'after', x -> 'after'))
                        FROM jsonb_array_elements(:'xe'::jsonb -> 'changed_since') x))) AS explained;
-- and today: explain() sends dealer 1 elsewhere
SELECT allocation.explain('t28_customer', '1') -> 'result' ->> 'rep_id' AS rule_today;
-- a rule deleted since is still replayed (its delete event's before image)
INSERT INTO allocation.rule (id, name, priority, tiers, target_kind) VALUES (9, 'tier-C-to-pool', 50, '{C}', 'pool');
SELECT id AS late_event FROM allocation.event ORDER BY id DESC LIMIT 1 \gset
UPDATE t28_customer SET name = 'pool dealer' WHERE id = 99;
SELECT id AS pool_event FROM allocation.event WHERE key = '99' ORDER BY id LIMIT 1 \gset
DELETE FROM allocation.rule WHERE id = 9;
SELECT jsonb_pretty(allocation.explain_event(:pool_event) -> 'replay') AS pool_replay;
-- an event that is not a decision: what is recorded, no replay
SELECT e -> 'event' ->> 'kind' AS kind, e -> 'rule' AS rule, e -> 'replay' -> 'steps' AS steps
  FROM (SELECT allocation.explain_event((SELECT min(id) FROM allocation.event WHERE kind = 'ownership_dispute_opened')) AS e) x;
-- bad inputs
SET ROLE regress_t28_mgr;
SELECT 'null id' AS "case", * FROM t28_try('SELECT allocation.explain_event(NULL)')
UNION ALL SELECT 'unknown id', * FROM t28_try('SELECT allocation.explain_event(-1)');
SET ROLE regress_t28_a;
SELECT 'a rep' AS "case", * FROM t28_try(format('SELECT allocation.explain_event(%s)', :assigned_event));
SET ROLE regress_t28_nobody;
SELECT 'no rights' AS "case", code FROM t28_try(format('SELECT allocation.explain_event(%s)', :assigned_event));
RESET ROLE;

-------------------------------------------------------------------------------
-- An unmanaged table ends the disputes' moves, not their record
-------------------------------------------------------------------------------
SET ROLE regress_t28_c;
SELECT allocation.open_dispute('t28_customer', '6', 3, 'c6') AS d6 \gset
RESET ROLE;
SELECT allocation.unmanage('t28_customer');
SET ROLE regress_t28_mgr;
SELECT 'settle after unmanage' AS "case", * FROM t28_try(format('SELECT allocation.settle_dispute(%s, 3, ''x'')', :d6))
UNION ALL SELECT 'open after unmanage', * FROM t28_try($$SELECT allocation.open_dispute('t28_customer', '3', 3, 'x')$$);
SELECT allocation.dismiss_ownership_dispute(:d6, 'the table is not managed any more');
RESET ROLE;
SELECT key, status FROM allocation.ownership_dispute ORDER BY id;

DROP TABLE t28_customer CASCADE;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION t28_try(text);
DROP FUNCTION t28_mask(jsonb);
DROP OWNED BY regress_t28_a, regress_t28_b, regress_t28_c, regress_t28_mgr, regress_t28_an, regress_t28_nobody;
DROP ROLE regress_t28_a, regress_t28_b, regress_t28_c, regress_t28_mgr, regress_t28_an, regress_t28_nobody;
