--
-- 29_network: dealer networks (立体客户网络).  A parent attribute maps each
-- customer's parent customer; rule policy follow_parent gives a new retailer
-- to its distributor's owner (within the rule's team), falling through to the
-- next rule when the parent is in the pool, missing or held outside the team;
-- customer_network() and network_summary()/dealer_network read the trees.
--
CREATE EXTENSION allocation;
\pset null '(null)'
\set SHOW_CONTEXT never

DO $$
BEGIN
    CREATE ROLE regress_n29_a;
    CREATE ROLE regress_n29_b;
    CREATE ROLE regress_n29_bi;
END $$;
INSERT INTO allocation.team (id, code, name) VALUES (1, 'field', 'Field sales'), (2, 'ka', 'Key accounts');
INSERT INTO allocation.rep (id, code, name, team_id, capacity, login) VALUES
    (1, 'a', 'Rep A', 1, 100, 'regress_n29_a'),
    (2, 'b', 'Rep B', 1, 100, 'regress_n29_b'),
    (3, 'k', 'Key account rep', 2, 100, NULL),
    (4, 'full', 'Rep at capacity', 1, 0, NULL);
SELECT allocation.grant_role('regress_n29_a', 'rep'), allocation.grant_role('regress_n29_b', 'rep'),
       allocation.grant_role('regress_n29_bi', 'analyst');
CREATE TABLE n29_customer (id integer PRIMARY KEY, name text, kind text, parent_id integer,
                           loc geometry(Point, 4326), owner bigint);
CREATE INDEX ON n29_customer (parent_id);
GRANT SELECT ON n29_customer TO regress_n29_a, regress_n29_b, regress_n29_bi;

-- bad mappings: the parent column must exist and have the key's type
CREATE TABLE n29_bad (id integer PRIMARY KEY, parent_code text, loc geometry(Point, 4326), owner bigint);
\set VERBOSITY default
SELECT allocation.manage('n29_bad', 'id', 'loc', 'owner', '{"parent": "parent_code"}');
SELECT allocation.manage('n29_bad', 'id', 'loc', 'owner', '{"parent": "no_such_column"}');
SELECT allocation.manage('n29_bad', 'id', 'loc', 'owner', '{"parent": 7}');
SELECT count(*) AS bad_not_managed FROM allocation.managed_table WHERE tbl = 'n29_bad'::regclass;
\set VERBOSITY terse

SELECT allocation.manage('n29_customer', 'id', 'loc', 'owner',
                         '{"parent": "parent_id", "name": "name", "business_type": "kind"}');
-- retailers follow their distributor; distributors go round robin in the field team;
-- what follow_parent cannot place falls through to the key-account rep
INSERT INTO allocation.rule (name, priority, business_types, target_kind, target_team_id, policy) VALUES
    ('retailers follow their distributor', 30, '{retailer,grower}', 'team', 1, 'follow_parent'),
    ('distributors round robin', 20, '{distributor}', 'team', 1, 'round_robin');
INSERT INTO allocation.rule (name, priority, target_kind, target_rep_id) VALUES ('everything else', 0, 'rep', 3);
-- a policy that is not one is refused by the table
INSERT INTO allocation.rule (name, target_kind, target_team_id, policy) VALUES ('bad', 'team', 1, 'follow_the_money');

-- two distributors, then their retailers, growers below a retailer, all in one statement
-- each (the retailers of D2 arrive in the same INSERT as D2 itself)
INSERT INTO n29_customer (id, name, kind) VALUES (10, 'County distributor D1', 'distributor');
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES
    (11, 'Township retailer R1', 'retailer', 10),
    (12, 'Township retailer R2', 'retailer', 10),
    (111, 'Grower G1', 'grower', 11);
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES
    (20, 'County distributor D2', 'distributor', NULL),
    (21, 'Township retailer R3', 'retailer', 20);
SELECT c.id, c.name, r.code AS owner, a.reason FROM n29_customer c
  LEFT JOIN allocation.rep r ON r.id = c.owner
  LEFT JOIN allocation.current_owner a ON a.tbl = 'n29_customer'::regclass AND a.key = c.id::text
 ORDER BY c.id;

-- fall-through: the parent is in the pool, missing, the customer itself, or held outside the team
SELECT allocation.assign('n29_customer', '20', NULL, 'D2 back to the pool');
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES
    (22, 'Retailer under a pool distributor', 'retailer', 20),
    (30, 'Retailer of an unknown distributor', 'retailer', 999),
    (31, 'Retailer that names itself', 'retailer', 31);
INSERT INTO n29_customer (id, name, kind) VALUES (40, 'Key account distributor', 'key');
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES (41, 'Retailer of a key account', 'retailer', 40);
SELECT c.id, r.code AS owner FROM n29_customer c LEFT JOIN allocation.rep r ON r.id = c.owner
 WHERE c.id IN (22, 30, 31, 40, 41) ORDER BY c.id;
-- explain says why follow_parent did not place them
SELECT x->>'rule' AS rule, x->>'outcome' AS outcome, x->>'why' AS why
  FROM jsonb_array_elements((allocation.explain('n29_customer', '22'))->'rules') x WHERE x->>'rule' LIKE 'retailers%';
SELECT x->>'why' AS why FROM jsonb_array_elements((allocation.explain('n29_customer', '30'))->'rules') x WHERE x->>'rule' LIKE 'retailers%';
SELECT x->>'why' AS why FROM jsonb_array_elements((allocation.explain('n29_customer', '31'))->'rules') x WHERE x->>'rule' LIKE 'retailers%';
SELECT x->>'why' AS why FROM jsonb_array_elements((allocation.explain('n29_customer', '41'))->'rules') x WHERE x->>'rule' LIKE 'retailers%';
-- a hypothetical row: explain(tbl, jsonb) follows the parent too
SELECT allocation.explain('n29_customer', '{"id": 50, "kind": "retailer", "parent_id": 10}'::jsonb)->'result'->>'rep' AS would_go_to;

-- the distributor's owner at capacity: the retailer falls through
UPDATE allocation.rep SET capacity = (SELECT count(*) FROM n29_customer WHERE owner = 1) WHERE id = 1;
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES (13, 'Retailer R4 (A is full)', 'retailer', 10);
SELECT c.id, r.code AS owner FROM n29_customer c LEFT JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 13;
UPDATE allocation.rep SET capacity = 100 WHERE id = 1;

-- re-parenting a retailer re-evaluates it (the parent is an input of the rules)
UPDATE n29_customer SET parent_id = 10 WHERE id = 30;
SELECT c.id, r.code AS owner FROM n29_customer c LEFT JOIN allocation.rep r ON r.id = c.owner WHERE c.id = 30;

-- the tree, from any member, with owners
SELECT customer_key, parent_key, depth, path, name, rep_code, is_asked FROM allocation.customer_network('n29_customer', '111');
SELECT customer_key, depth, rep_code FROM allocation.customer_network('n29_customer', '20');
-- per top-level distributor (BI), with the revenue of the network's deals
SELECT allocation.record_deal('n29_customer', '111', 1200.00, ref => 'SO-1') > 0 AS deal_of_a_grower,
       allocation.record_deal('n29_customer', '10', 800.50, ref => 'SO-2') > 0 AS deal_of_the_distributor,
       allocation.record_deal('n29_customer', '21', 99.99, ref => 'SO-3') > 0 AS deal_in_another_network;
SELECT table_name, root_key, root_name, rep_code, customers, levels, retailers_other_owner, revenue FROM allocation.dealer_network;
SET ROLE regress_n29_bi;
SELECT root_key, customers, revenue FROM allocation.network_summary('n29_customer');
-- a rep does not read deals: the revenue is NULL for it
SET ROLE regress_n29_a;
SELECT root_key, customers, revenue FROM allocation.network_summary('n29_customer');
-- a mapped table the caller may not read is left out of the whole-picture view, not an error
RESET ROLE;
CREATE TABLE n29_hidden (id integer PRIMARY KEY, parent_id integer, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('n29_hidden', 'id', 'loc', 'owner', '{"parent": "parent_id"}');
INSERT INTO n29_hidden (id, parent_id) VALUES (1, NULL), (2, 1);
SET ROLE regress_n29_a;
SELECT table_name, root_key, customers FROM allocation.dealer_network ORDER BY 1, 2;
RESET ROLE;
SELECT table_name, root_key, customers FROM allocation.dealer_network ORDER BY 1, 2;
SELECT allocation.unmanage('n29_hidden');
DROP TABLE n29_hidden;
-- a rep reads with its own rights: under row-level security only its part of the tree
RESET ROLE;
SELECT allocation.enable_rep_security('n29_customer');
SET ROLE regress_n29_b;
-- B holds retailer 21; its distributor 20 is in the pool, which B does not see: 21 is B's top
SELECT customer_key, depth, rep_code FROM allocation.customer_network('n29_customer', '21');
\set VERBOSITY default
SELECT customer_key FROM allocation.customer_network('n29_customer', '10');
\set VERBOSITY terse
RESET ROLE;

-- a cycle ends the walk instead of looping
UPDATE n29_customer SET parent_id = 111 WHERE id = 10;
SELECT customer_key, depth FROM allocation.customer_network('n29_customer', '11');
UPDATE n29_customer SET parent_id = NULL WHERE id = 10;

-- bad inputs
\set VERBOSITY default
SELECT * FROM allocation.customer_network(NULL, '1');
SELECT * FROM allocation.customer_network('n29_customer', NULL);
SELECT * FROM allocation.customer_network('n29_bad', '1');
SELECT * FROM allocation.customer_network(0, '1');
SELECT * FROM allocation.customer_network('n29_customer', '404');
SELECT * FROM allocation.network_summary('n29_bad');
CREATE TABLE n29_flat (id integer PRIMARY KEY, loc geometry(Point, 4326), owner bigint);
SELECT allocation.manage('n29_flat', 'id', 'loc', 'owner');
SELECT * FROM allocation.customer_network('n29_flat', '1');
-- the parent column changing type later is caught when the table is next used
ALTER TABLE n29_customer ALTER COLUMN parent_id TYPE bigint;
INSERT INTO n29_customer (id, name, kind, parent_id) VALUES (60, 'after the type change', 'retailer', 10);
ALTER TABLE n29_customer ALTER COLUMN parent_id TYPE integer;
\set VERBOSITY terse
SELECT count(*) AS rows_kept FROM n29_customer;

DROP TABLE n29_customer, n29_bad, n29_flat;
DROP EXTENSION allocation CASCADE;
DROP OWNED BY regress_n29_a, regress_n29_b, regress_n29_bi;
DROP ROLE regress_n29_a, regress_n29_b, regress_n29_bi;
