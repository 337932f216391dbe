--
-- 26_transfers: request_transfer(), approve/reject/cancel_transfer(),
-- expire_transfers(), the transfer policy, pending_transfer per role, every
-- bad input with its SQLSTATE, and that a refused step changes nothing.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_t26_a;
    CREATE ROLE regress_t26_b;
    CREATE ROLE regress_t26_c;
    CREATE ROLE regress_t26_mgr;
    CREATE ROLE regress_t26_nobody;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 100, 'regress_t26_a'),
    (2, 'b', 'Rep B', 1, 100, 'regress_t26_b'),
    (3, 'c', 'Rep C', 1, 100, 'regress_t26_c');
INSERT INTO allocation.rep (id, code, name, team_id, active) VALUES (4, 'gone', 'Rep who left', 1, false);
SELECT allocation.grant_role('regress_t26_a', 'rep'), allocation.grant_role('regress_t26_b', 'rep'),
       allocation.grant_role('regress_t26_c', 'rep'), allocation.grant_role('regress_t26_mgr', 'manager');
CREATE TABLE t26_customer (id integer PRIMARY KEY, name text, tier text, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('t26_customer', 'id', 'loc', 'owner', '{"tier": "tier"}');
INSERT INTO t26_customer (id, name, tier, owner) SELECT g, 'dealer ' || g, 'A', 1 FROM generate_series(1, 12) g;
INSERT INTO t26_customer (id, name, tier) VALUES (99, 'in the pool', 'A');

CREATE FUNCTION t26_try(sql text) RETURNS TABLE (code text, message text, detail text, hint text)
LANGUAGE plpgsql AS $f$
BEGIN
    EXECUTE sql;
    code := '00000';
    RETURN NEXT;
EXCEPTION WHEN others THEN
    GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, message = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    detail := regexp_replace(detail, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
    message := regexp_replace(message, '\w{3} \w{3} \d+ [0-9:.]+ \d{4} \w+', '<time>', 'g');
    RETURN NEXT;
END $f$;
GRANT EXECUTE ON FUNCTION t26_try(text) TO PUBLIC;
CREATE VIEW t26_state AS
SELECT c.id, r.code AS owner FROM t26_customer c LEFT JOIN allocation.rep r ON r.id = c.owner;
GRANT SELECT ON t26_state, t26_customer TO PUBLIC;
CREATE VIEW t26_transfers AS
SELECT t.id, t.key, f.code AS from_rep, r.code AS to_rep, t.approval, t.status, t.requested_by, t.decided_by, t.decision_note
  FROM allocation.transfer t JOIN allocation.rep f ON f.id = t.from_rep JOIN allocation.rep r ON r.id = t.to_rep;

-------------------------------------------------------------------------------
-- No policy: a manager approves.  The holder hands over; the receiver cannot decide.
-------------------------------------------------------------------------------
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '1', 2, 'B covers the east county now') AS t1 \gset
SELECT id, key, from_rep_code, to_rep_code, approval, approver, requested_by FROM allocation.pending_transfer;
SET ROLE regress_t26_c;
SELECT count(*) AS c_sees FROM allocation.pending_transfer;
SET ROLE regress_t26_b;
SELECT count(*) AS b_sees FROM allocation.pending_transfer;
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t1));
SET ROLE regress_t26_mgr;
SELECT allocation.approve_transfer(:t1, 'agreed in the weekly meeting');
RESET ROLE;
SELECT * FROM t26_state WHERE id = 1;
SELECT * FROM t26_transfers WHERE id = :t1;
SELECT kind, key, actor, from_rep, to_rep, reason, source, pinned FROM allocation.event
 WHERE key = '1' AND kind LIKE 'transfer%' ORDER BY id;

-------------------------------------------------------------------------------
-- Policy "receiver": the receiving rep approves; "holder": the holder decides
-------------------------------------------------------------------------------
INSERT INTO allocation.transfer_policy (team_id, tier, approval) VALUES (NULL, NULL, 'receiver');
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '2', 2, 'handover before leave') AS t2 \gset
SET ROLE regress_t26_b;
SELECT approver FROM allocation.pending_transfer WHERE key = '2';
SELECT allocation.approve_transfer(:t2);
SELECT * FROM t26_state WHERE id = 2;
-- the receiver asking for it: never its own approver, the holder decides (whatever the policy)
SELECT allocation.request_transfer('t26_customer', '3', 2, 'I visit this dealer weekly') AS t3 \gset
SELECT approval, approver FROM allocation.pending_transfer WHERE key = '3';
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t3));
SET ROLE regress_t26_a;
SELECT allocation.approve_transfer(:t3, 'fine, take it');
RESET ROLE;
SELECT * FROM t26_state WHERE id = 3;
UPDATE allocation.transfer_policy SET approval = 'holder';
SET ROLE regress_t26_c;
SELECT allocation.request_transfer('t26_customer', '4', 3, 'the dealer asked for me') AS t4 \gset
SELECT approver FROM allocation.pending_transfer WHERE key = '4';
SET ROLE regress_t26_a;
SELECT * FROM t26_try(format('SELECT allocation.reject_transfer(%s, ''  '')', :t4));
SELECT allocation.reject_transfer(:t4, 'I signed their annual program last week');
RESET ROLE;
SELECT * FROM t26_state WHERE id = 4;
SELECT status, decided_by, decision_note FROM t26_transfers WHERE id = :t4;
-- under "manager", the holder of a customer another rep asked for may still say no
UPDATE allocation.transfer_policy SET approval = 'manager';
SET ROLE regress_t26_c;
SELECT allocation.request_transfer('t26_customer', '4', 3, 'asking again') AS t4b \gset
SET ROLE regress_t26_b;
SELECT 'not the holder' AS "case", * FROM t26_try(format('SELECT allocation.reject_transfer(%s, ''no'')', :t4b));
SET ROLE regress_t26_a;
SELECT allocation.reject_transfer(:t4b, 'still mine');
RESET ROLE;
-- policy "none": done at request
UPDATE allocation.transfer_policy SET approval = 'none';
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '5', 3, 'territory swap') AS t5 \gset
RESET ROLE;
SELECT * FROM t26_state WHERE id = 5;
UPDATE allocation.transfer_policy SET approval = 'manager';

-------------------------------------------------------------------------------
-- Cancel: the requester or a manager
-------------------------------------------------------------------------------
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '6', 2, 'maybe') AS t6 \gset
SET ROLE regress_t26_b;
SELECT * FROM t26_try(format('SELECT allocation.cancel_transfer(%s)', :t6));
SET ROLE regress_t26_a;
SELECT allocation.cancel_transfer(:t6);
SELECT * FROM t26_try(format('SELECT allocation.cancel_transfer(%s)', :t6));
RESET ROLE;

-------------------------------------------------------------------------------
-- Bad inputs: each its SQLSTATE, nothing stored changes
-------------------------------------------------------------------------------
CREATE TABLE t26_before AS
SELECT (SELECT count(*) FROM allocation.transfer) AS transfers, (SELECT count(*) FROM allocation.event) AS events,
       (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM t26_customer) AS owners;
SET ROLE regress_t26_a;
SELECT * FROM t26_try($$SELECT allocation.request_transfer(NULL, '7', 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', NULL, 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', NULL, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 2, NULL)$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 2, ' ')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 42, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 4, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('pg_class', '7', 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('no_such_table', '7', 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 1, 'x')$$);
-- a rep asking to move a customer it does not hold to a third rep: refused before anything about it is said
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '99', 2, 'x')$$);
SET ROLE regress_t26_mgr;
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '777', 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', 'not a number', 2, 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '99', 2, 'x')$$);
SET ROLE regress_t26_c;
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 2, 'not mine, not for me')$$);
-- a role with no part learns nothing about the customer: the same refusal for a key that does not exist
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '777', 2, 'x')$$);
SET ROLE regress_t26_nobody;
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 2, 'x')$$);
SET ROLE regress_t26_mgr;
SELECT * FROM t26_try($$SELECT allocation.approve_transfer(NULL)$$);
SELECT * FROM t26_try($$SELECT allocation.approve_transfer(12345)$$);
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t1));
SELECT * FROM t26_try(format('SELECT allocation.reject_transfer(%s, ''too late'')', :t1));
SELECT * FROM t26_try($$SELECT allocation.expire_transfers(NULL)$$);
RESET ROLE;
SELECT (SELECT count(*) FROM allocation.transfer) = b.transfers AS no_transfer_stored,
       (SELECT count(*) FROM allocation.event) = b.events AS no_event_stored,
       (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM t26_customer) = b.owners AS owners_unchanged
  FROM t26_before b;
DROP TABLE t26_before;

-------------------------------------------------------------------------------
-- One pending transfer per customer; an approval checks everything again
-------------------------------------------------------------------------------
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '7', 2, 'first') AS t7 \gset
SELECT * FROM t26_try($$SELECT allocation.request_transfer('t26_customer', '7', 3, 'second')$$);
SELECT allocation.request_transfer('t26_customer', '8', 2, 'the holder will change') AS t8 \gset
SELECT allocation.request_transfer('t26_customer', '9', 2, 'will be locked') AS t9 \gset
SELECT allocation.request_transfer('t26_customer', '10', 2, 'B is full') AS t10 \gset
SELECT allocation.request_transfer('t26_customer', '11', 2, 'over the daily limit') AS t11 \gset
RESET ROLE;
SELECT allocation.assign('t26_customer', '8', 3, 'manager moved it meanwhile');
SET ROLE regress_t26_mgr;
SELECT allocation.lock_customer('t26_customer', '9', 'audit in progress');
RESET ROLE;
UPDATE allocation.rep SET capacity = (SELECT count(*) FROM t26_customer WHERE owner = 2) WHERE id = 2;
SET ROLE regress_t26_mgr;
SELECT 'holder changed' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t8));
SELECT 'locked' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t9));
SELECT 'receiver full' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t10));
RESET ROLE;
UPDATE allocation.rep SET capacity = 100 WHERE id = 2;
INSERT INTO allocation.claim_policy (daily_claims) VALUES (0);
SET ROLE regress_t26_mgr;
SELECT 'daily limit' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t11));
RESET ROLE;
UPDATE allocation.transfer_policy SET checks = false;
SET ROLE regress_t26_mgr;
-- the policy's checks are fixed at request time: this request still counts the limit
SELECT 'daily limit' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t11));
RESET ROLE;
DELETE FROM allocation.claim_policy;
SELECT key, status FROM t26_transfers WHERE id IN (:t7, :t8, :t9, :t10, :t11) ORDER BY id;
SELECT * FROM t26_state WHERE id IN (7, 8, 9, 10, 11) ORDER BY id;
-- unlocked and with room again: the same requests go through
SET ROLE regress_t26_mgr;
SELECT allocation.unlock_customer('t26_customer', '9', 'audit done');
SELECT allocation.approve_transfer(:t9), allocation.approve_transfer(:t10), allocation.reject_transfer(:t8, 'moot');
RESET ROLE;
SELECT * FROM t26_state WHERE id IN (8, 9, 10) ORDER BY id;

-------------------------------------------------------------------------------
-- A request whose customer changed hands, or whose time ran out, makes way
-------------------------------------------------------------------------------
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '12', 2, 'before the release') AS t12 \gset
SELECT allocation.release('t26_customer', '12', 'dealer closed for the winter');
RESET ROLE;
SELECT allocation.assign('t26_customer', '12', 1, 'reopened: back to A');
SET ROLE regress_t26_mgr;
-- A holds it again, but in a new holding period: the old request is moot
SELECT 'same holder, new period' AS "case", * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t12));
RESET ROLE;
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', '12', 3, 'after the reopening') AS t12b \gset
RESET ROLE;
SELECT key, status, decision_note FROM t26_transfers WHERE id IN (:t12, :t12b) ORDER BY id;
UPDATE allocation.transfer SET expires_at = now() - interval '1 second' WHERE id = :t12b;
SET ROLE regress_t26_mgr;
SELECT 'expired' AS "case", code, message FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t12b));
RESET ROLE;

-------------------------------------------------------------------------------
-- Expiry
-------------------------------------------------------------------------------
SET ROLE regress_t26_mgr;
SELECT allocation.expire_transfers(now() + interval '1 day') AS due_within_a_day;
SELECT allocation.expire_transfers(now() + interval '8 days') AS expired;
RESET ROLE;
SELECT key, status FROM t26_transfers WHERE id IN (:t7, :t8, :t9, :t10, :t11) ORDER BY id;
SELECT count(*) AS expiry_events FROM allocation.event WHERE kind = 'transfer_expired';
SELECT count(*) AS pending_left FROM allocation.pending_transfer;
SELECT count(*) AS problems FROM allocation.check_consistency();

-------------------------------------------------------------------------------
-- A leaving rep: every customer moved in one call, a dry run first
-------------------------------------------------------------------------------
INSERT INTO t26_customer (id, name, tier, owner) SELECT g, 'c''s dealer ' || g, 'A', 3 FROM generate_series(20, 25) g;
SET ROLE regress_t26_mgr;
SELECT allocation.lock_customer('t26_customer', '23', 'contract review');
RESET ROLE;
CREATE TABLE t26_before AS
SELECT (SELECT count(*) FROM allocation.transfer) AS transfers, (SELECT count(*) FROM allocation.event) AS events,
       (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM t26_customer) AS owners;
SET ROLE regress_t26_mgr;
SELECT key, to_rep_code, outcome, code FROM allocation.transfer_all(3, ARRAY[1, 2], 'rep c leaves');
RESET ROLE;
SELECT (SELECT count(*) FROM allocation.transfer) = b.transfers AS dry_run_stored_no_transfer,
       (SELECT count(*) FROM allocation.event) = b.events AS dry_run_stored_no_event,
       (SELECT string_agg(id || ':' || coalesce(owner::text, '-'), ',' ORDER BY id) FROM t26_customer) = b.owners AS dry_run_moved_nothing
  FROM t26_before b;
DROP TABLE t26_before;
SET ROLE regress_t26_mgr;
SELECT key, to_rep_code, outcome, code, message FROM allocation.transfer_all(3, ARRAY[1, 2], 'rep c leaves', dry_run => false)
 ORDER BY key;
RESET ROLE;
SELECT owner, count(*) FROM t26_state WHERE id BETWEEN 20 AND 25 GROUP BY owner ORDER BY owner;
-- with no list the rules choose; this test has no rules, so every customer stays
SET ROLE regress_t26_mgr;
SELECT key, outcome, message FROM allocation.transfer_all(3, NULL, 'rep c leaves');
SELECT * FROM t26_try($$SELECT allocation.transfer_all(NULL, ARRAY[1], 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, ARRAY[1], ' ')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(42, ARRAY[1], 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, ARRAY[3, 1], 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, ARRAY[4], 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, '{}', 'x')$$);
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, ARRAY[1, NULL], 'x')$$);
SET ROLE regress_t26_a;
SELECT * FROM t26_try($$SELECT allocation.transfer_all(3, ARRAY[1], 'x')$$);
RESET ROLE;

-------------------------------------------------------------------------------
-- Policy "team_managers": across teams, the managers of both teams approve,
-- each for its side; the transfer is carried out with the second approval
-------------------------------------------------------------------------------
DO $$
BEGIN
    CREATE ROLE regress_t26_tm_field;
    CREATE ROLE regress_t26_tm_east;
END $$;
SELECT allocation.grant_role('regress_t26_tm_field', 'manager'), allocation.grant_role('regress_t26_tm_east', 'manager');
INSERT INTO allocation.team (id, code, name, manager_login) VALUES (2, 'east', 'East county sales', 'regress_t26_tm_east');
INSERT INTO allocation.team (id, code, name, parent_id) VALUES (3, 'east_sub', 'East townships', 2);
INSERT INTO allocation.rep (id, code, name, team_id, capacity) VALUES (5, 'e', 'Rep E (east townships)', 3, 100);
UPDATE allocation.team SET manager_login = 'regress_t26_tm_field' WHERE id = 1;
DELETE FROM allocation.transfer_policy;
INSERT INTO allocation.transfer_policy (team_id, approval) VALUES (NULL, 'team_managers');
SELECT id AS tm_cust FROM t26_state WHERE owner = 'a' ORDER BY id LIMIT 1 \gset
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', :'tm_cust', 5, 'the dealer opened a shop in the east townships') AS t9 \gset
SELECT approver FROM allocation.pending_transfer WHERE id = :t9;
-- the holder, a manager of neither team, and the receiving side's manager twice
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t9));
SET ROLE regress_t26_mgr;
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t9));
SET ROLE regress_t26_tm_east;
SELECT allocation.approve_transfer(:t9, 'east agrees');
SELECT approver FROM allocation.pending_transfer WHERE id = :t9;
SELECT * FROM t26_try(format('SELECT allocation.approve_transfer(%s)', :t9));
RESET ROLE;
SELECT * FROM t26_state WHERE id = :tm_cust;
-- the holder's team manager approves: carried out
SET ROLE regress_t26_tm_field;
SELECT allocation.approve_transfer(:t9, 'field agrees');
RESET ROLE;
SELECT r.code AS owner_now FROM t26_customer c JOIN allocation.rep r ON r.id = c.owner WHERE c.id = :tm_cust;
SELECT status, from_side_approved_by, to_side_approved_by, decided_by FROM allocation.transfer WHERE id = :t9;
SELECT kind, actor, reason FROM allocation.event WHERE detail->>'transfer' = :'t9' OR (kind = 'transfer' AND key = :'tm_cust')
 ORDER BY id;
-- a team manager of both sides (here: the same role for both teams) approves at request
UPDATE allocation.team SET manager_login = 'regress_t26_tm_field' WHERE id = 2;
SELECT id AS tm_cust2 FROM t26_state WHERE owner = 'a' ORDER BY id LIMIT 1 \gset
SET ROLE regress_t26_tm_field;
SELECT allocation.request_transfer('t26_customer', :'tm_cust2', 5, 'the field manager moves it himself') AS t10 \gset
RESET ROLE;
SELECT status, from_side_approved_by, to_side_approved_by FROM allocation.transfer WHERE id = :t10;
-- either side's manager may reject
UPDATE allocation.team SET manager_login = 'regress_t26_tm_east' WHERE id = 2;
SELECT id AS tm_cust3 FROM t26_state WHERE owner = 'a' ORDER BY id LIMIT 1 \gset
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', :'tm_cust3', 5, 'another one east') AS t11 \gset
SET ROLE regress_t26_tm_east;
SELECT allocation.reject_transfer(:t11, 'east has no room this season');
RESET ROLE;
SELECT status, decided_by, decision_note FROM allocation.transfer WHERE id = :t11;
-- a team without a manager up its hierarchy: any manager approves for that side
UPDATE allocation.team SET manager_login = NULL WHERE id = 2;
SET ROLE regress_t26_a;
SELECT allocation.request_transfer('t26_customer', :'tm_cust3', 5, 'east again') AS t12 \gset
SELECT approver FROM allocation.pending_transfer WHERE id = :t12;
SET ROLE regress_t26_mgr;
SELECT allocation.approve_transfer(:t12);
RESET ROLE;
SELECT status, from_side_approved_by, to_side_approved_by FROM allocation.transfer WHERE id = :t12;

DROP TABLE t26_customer CASCADE;
DROP EXTENSION allocation CASCADE;
DROP FUNCTION t26_try(text);
DROP OWNED BY regress_t26_a, regress_t26_b, regress_t26_c, regress_t26_mgr, regress_t26_nobody, regress_t26_tm_field, regress_t26_tm_east;
DROP ROLE regress_t26_a, regress_t26_b, regress_t26_c, regress_t26_mgr, regress_t26_nobody, regress_t26_tm_field, regress_t26_tm_east;
