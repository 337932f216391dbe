-- demo/07b_transfers.sql -- 客户转移: a handover a manager approves, a pull the holder turns
-- down, and the dry run of moving a leaving rep's customers.
\set ON_ERROR_STOP 1
\pset null '-'

\echo
\echo '== Transfers between reps (客户转移) =='
-- in the team with the most room, the rep with the fewest customers (3 at least) and its two
-- colleagues with the most room
-- get database logins for this scene
CREATE TEMP VIEW demo_room AS
SELECT r.id, r.code, r.team_id, coalesce(r.capacity - l.held - l.reserved, 1000000) AS free,
       (SELECT count(*) FROM crm.customer c WHERE c.owner_id = r.id) AS held
  FROM allocation.rep r JOIN allocation.rep_load l ON l.rep_id = r.id WHERE r.active;
SELECT a.id AS rep_a, a.code AS code_a FROM demo_room a
 WHERE a.held >= 3 AND (SELECT count(*) FROM demo_room b WHERE b.team_id = a.team_id AND b.id <> a.id) >= 2
 ORDER BY (SELECT sum(least(b.free, 1000)) FROM demo_room b WHERE b.team_id = a.team_id AND b.id <> a.id) DESC,
          a.held, a.id LIMIT 1 \gset
SELECT b.id AS rep_b, b.code AS code_b FROM demo_room b
 WHERE b.id <> :rep_a AND b.team_id = (SELECT x.team_id FROM allocation.rep x WHERE x.id = :rep_a)
 ORDER BY b.free DESC, b.id LIMIT 1 \gset
SELECT c.id AS rep_c FROM demo_room c
 WHERE c.id NOT IN (:rep_a, :rep_b) AND c.team_id = (SELECT x.team_id FROM allocation.rep x WHERE x.id = :rep_a)
 ORDER BY c.free DESC, c.id LIMIT 1 \gset
DROP VIEW demo_room;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_rep_a') THEN CREATE ROLE demo_rep_a; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_rep_b') THEN CREATE ROLE demo_rep_b; END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'demo_manager') THEN CREATE ROLE demo_manager; END IF;
END $$;
UPDATE allocation.rep SET login = 'demo_rep_a' WHERE id = :rep_a;
UPDATE allocation.rep SET login = 'demo_rep_b' WHERE id = :rep_b;
SELECT allocation.grant_role('demo_rep_a', 'rep'), allocation.grant_role('demo_rep_b', 'rep'),
       allocation.grant_role('demo_manager', 'manager');
GRANT EXECUTE ON FUNCTION demo.try(text) TO demo_rep_a, demo_rep_b, demo_manager;
GRANT USAGE ON SCHEMA demo, crm TO demo_rep_a, demo_rep_b, demo_manager;   -- as the CRM app's users have
SELECT c.id AS cust FROM crm.customer c WHERE c.owner_id = :rep_a ORDER BY c.id LIMIT 1 \gset
SELECT c.id AS cust2 FROM crm.customer c WHERE c.owner_id = :rep_a ORDER BY c.id OFFSET 1 LIMIT 1 \gset

\echo '-- rep' :code_a 'hands dealer' :cust 'over to' :code_b '(no transfer policy: a manager approves)'
SET ROLE demo_rep_a;
SELECT allocation.request_transfer('crm.customer', :'cust', :rep_b, '轮岗: B takes over the east townships') AS transfer_id \gset
SELECT id, key, from_rep_code, to_rep_code, approver, reason FROM allocation.pending_transfer;
SET ROLE demo_manager;
SELECT demo.try(format('SELECT allocation.approve_transfer(%s, %L)', :transfer_id, 'agreed in the Monday meeting')) AS approval;
RESET ROLE;
SELECT c.id, r.code AS owner_now FROM crm.customer c JOIN allocation.rep r ON r.id = c.owner_id WHERE c.id = :cust;

\echo '-- rep' :code_b 'asks for dealer' :cust2 'of' :code_a ': a manager approves, but the holder may turn it down (and does)'
SET ROLE demo_rep_b;
SELECT allocation.request_transfer('crm.customer', :'cust2', :rep_b, 'the dealer asked for me') AS pull_id \gset
SET ROLE demo_rep_a;
SELECT id, approval, approver FROM allocation.pending_transfer WHERE id = :pull_id;
SELECT allocation.reject_transfer(:pull_id, 'I signed their annual program last week');
RESET ROLE;
SELECT kind, key, actor, reason FROM allocation.event WHERE kind LIKE 'transfer%' ORDER BY id;

\echo '-- rep' :code_a 'leaves: a dry run of moving all its customers to' :code_b 'and one more colleague'
SET ROLE demo_manager;
SELECT outcome, to_rep_code, coalesce(code, '') AS sqlstate, count(*) AS customers
  FROM allocation.transfer_all(:rep_a, ARRAY[:rep_b, :rep_c]::bigint[], 'rep leaves the company')
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;
RESET ROLE;
